//! The `loadgen` binary: parses the command line, runs the scenario (a line a second), prints
//! the summary and writes the JSON report. Exit status 1 when the run could not be done, 3 when
//! --flush-check found lost or duplicated messages.

use std::process::ExitCode;

use clap::Parser;
use loadgen::Args;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("churn") {
        return match loadgen::churn::main(std::env::args().skip(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen churn: {e}");
                ExitCode::from(1)
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("timer") {
        return match loadgen::timer::main(std::env::args().skip(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen timer: {e}");
                ExitCode::from(1)
            }
        };
    }
    if std::env::args().nth(1).as_deref() == Some("null-broker") {
        return match loadgen::null_broker::main(std::env::args().skip(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen null-broker: {e}");
                ExitCode::from(1)
            }
        };
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
