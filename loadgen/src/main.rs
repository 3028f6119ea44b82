//! The `loadgen` binary: parses the command line, runs the scenario (a line a second), prints
//! the summary and writes the JSON report. Exit status 1 when the run could not be done, 3 when
//! --flush-check found lost or duplicated messages.

use std::process::ExitCode;

use clap::Parser;
use loadgen::Args;

/// The exit status of a subcommand's run, its error printed.
fn finish<E: std::fmt::Display>(name: &str, outcome: Result<(), E>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen {name}: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let args = || std::env::args();
    match args().nth(1).as_deref() {
        Some("churn") => return finish("churn", loadgen::churn::main(args().skip(1))),
        Some("timer") => return finish("timer", loadgen::timer::main(args().skip(2))),
        Some("null-broker") => {
            return finish("null-broker", loadgen::null_broker::main(args().skip(1)))
        }
        _ => {}
    }
    let args = Args::parse();
    let json = args.json.clone();
    let report = match loadgen::run(args) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    report.print_summary();
    if let Some(path) = json {
        if let Err(e) = report.write_json(&path) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let broken =
        report.lost.is_some_and(|n| n > 0) || (report.flush_checked && report.duplicates > 0);
    match broken {
        true => ExitCode::from(3),
        false => ExitCode::SUCCESS,
    }
}
