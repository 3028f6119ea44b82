//! `ringmq-sim`: long runs of the deterministic master/slave simulator
//! (`ringmq::testing::sim_ha`; README, "Simulator"). Built with `--features sim` only.
//!
//! ```text
//! ringmq-sim --seeds 1000 --steps 100000        seeds 0..1000, stops at the first failure
//! ringmq-sim --from 5000 --seeds 100            seeds 5000..5100
//! ringmq-sim --replay 42 --steps 100000         one seed, every event printed
//! ```

use std::time::Instant;

use clap::Parser;
use ringmq::testing::sim_ha::{run_seed, sweep, SimStats};

#[derive(Parser)]
#[command(about = "Deterministic simulator of a ringmq master and slave")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Steps per seed.
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    /// Replays this one seed, printing every event.
    #[arg(long)]
    replay: Option<u64>,
    /// Goes on after a failing seed (prints every failing seed).
    #[arg(long)]
    keep_going: bool,
}

fn main() {
    let args = Args::parse();
    if let Some(seed) = args.replay {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .ring_depth(64)
            .make()
            .expect("cannot start a glommio executor");
        let result = ex.run(run_seed(seed, args.steps, true));
        match result {
            Ok(stats) => println!("seed {seed}: ok {}", line(&stats)),
            Err(f) => {
                println!("{f}");
                std::process::exit(1);
            }
        }
        return;
    }
    let started = Instant::now();
    let mut total = SimStats::default();
    let mut failed = Vec::new();
    let results = sweep(
        args.from..args.from + args.seeds,
        args.steps,
        !args.keep_going,
        |seed, result| match result {
            Ok(stats) => {
                add(&mut total, stats);
                if args.seeds <= 20 {
                    println!("seed {seed}: ok {}", line(stats));
                }
            }
            Err(f) => {
                println!("{f}");
                failed.push(seed);
            }
        },
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds, {} steps in {secs:.1} s: {:.0} steps/s; {}",
        results.len(),
        total.steps,
        total.steps as f64 / secs,
        line(&total)
    );
    if !failed.is_empty() {
        println!("FAILED seeds: {failed:?}");
        std::process::exit(1);
    }
}

fn add(total: &mut SimStats, s: &SimStats) {
    total.steps += s.steps;
    total.sim_ms += s.sim_ms;
    total.puts += s.puts;
    total.acked_flush += s.acked_flush;
    total.acked_master += s.acked_master;
    total.master_crashes += s.master_crashes;
    total.slave_crashes += s.slave_crashes;
    total.sessions += s.sessions;
    total.truncations += s.truncations;
    total.wipes += s.wipes;
    total.pulls += s.pulls;
    total.compared_bytes += s.compared_bytes;
}

fn line(s: &SimStats) -> String {
    format!(
        "sim time {:.0} s, {} puts ({} acked SYNC_FLUSH, {} SYNC_MASTER), crashes {} master / \
         {} slave, {} sessions, {} truncations, {} wipes, {} pulls, {} KiB of logs compared, digest {:016x}",
        s.sim_ms as f64 / 1000.0,
        s.puts,
        s.acked_flush,
        s.acked_master,
        s.master_crashes,
        s.slave_crashes,
        s.sessions,
        s.truncations,
        s.wipes,
        s.pulls,
        s.compared_bytes >> 10,
        s.digest
    )
}
