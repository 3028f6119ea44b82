//! loadgen: the bundled load generator (issue 5). Not built yet: it says so plainly.

use clap::Parser;

/// Load generator for RocketMQ-compatible clusters.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// Scenario: produce, consume or e2e.
    scenario: Option<String>,
}

fn main() {
    let args = Args::parse();
    eprintln!(
        "loadgen: scenario {:?} is not built yet (issue 5, the load generator); \
         only the ringmq nameserver exists so far",
        args.scenario.unwrap_or_default()
    );
    std::process::exit(2);
}
