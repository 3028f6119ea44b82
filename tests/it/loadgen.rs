//! loadgen's scenarios against an in-process broker, each for about two seconds: the counts of
//! the JSON report agree with what was consumed (sent == consumed, no duplicates, nothing lost
//! under --flush-check). No timing assertions: this machine is shared.

use std::path::Path;

use ::loadgen::{Args, Report, Scenario};
use serde_json::Value;

use crate::harness::TestBroker;

/// Short, quiet runs with few requests in flight.
fn args(scenario: Scenario, broker: &TestBroker, topic: &str) -> Args {
    let mut args = Args::defaults(scenario, &broker.namesrv.addr, topic);
    args.duration_seconds = 2;
    args.warmup_seconds = 0;
    args.concurrency = 16;
    args.quiet = true;
    args
}

/// Runs `args` and returns the report as written to its JSON file.
fn run(args: Args, dir: &Path, name: &str) -> Value {
    let report: Report = ::loadgen::run(args).expect("loadgen runs");
    let path = dir.join(format!("{name}.json"));
    report.write_json(&path).expect("report written");
    let text = std::fs::read_to_string(&path).expect("report read back");
    serde_json::from_str(&text).expect("report is JSON")
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a count in {report:#}"))
}

/// What every flush-checked run must show: something was sent and every acknowledged message
/// was consumed exactly once.
fn assert_exactly_once(report: &Value) {
    let sent = count(report, "sent_messages");
    assert!(sent > 0, "nothing sent: {report:#}");
    assert_eq!(count(report, "failed_messages"), 0, "{report:#}");
    assert_eq!(count(report, "consumed_messages"), sent, "{report:#}");
    assert_eq!(count(report, "duplicates"), 0, "{report:#}");
    assert_eq!(count(report, "lost"), 0, "{report:#}");
    assert_eq!(count(report, "unacknowledged_delivered"), 0, "{report:#}");
    assert_eq!(count(report, "foreign_messages"), 0, "{report:#}");
    assert!(report["errors_by_code"]
        .as_object()
        .is_some_and(|m| m.is_empty()));
    for field in [
        "throughput_messages_per_second",
        "p50_latency_us",
        "p99_latency_us",
        "p999_latency_us",
        "max_latency_us",
        "loadgen_cpu_seconds",
    ] {
        assert!(report[field].is_number(), "{field} missing: {report:#}");
    }
}

#[test]
fn produce_with_flush_check_consumes_every_acknowledged_message_once() {
    let broker = TestBroker::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(Scenario::Produce, &broker, "LoadgenProduce");
    a.flush_check = true;
    a.keys = true;
    a.tags = true;
    let report = run(a, dir.path(), "produce");
    assert_exactly_once(&report);
    assert_eq!(report["scenario"], "produce");
}

#[test]
fn batch_produce_with_flush_check_over_two_executors_and_connections() {
    let broker = TestBroker::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(Scenario::Produce, &broker, "LoadgenBatch");
    a.flush_check = true;
    a.batch_messages = 8;
    a.executors = 2;
    a.connections = 2;
    let report = run(a, dir.path(), "batch");
    assert_exactly_once(&report);
    assert_eq!(count(&report, "sent_messages") % 8, 0, "{report:#}");
}

#[test]
fn e2e_open_loop_with_flush_check_delivers_every_message_once() {
    let broker = TestBroker::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(Scenario::E2e, &broker, "LoadgenE2e");
    a.flush_check = true;
    a.rate_messages_per_second = Some(2_000);
    let report = run(a, dir.path(), "e2e");
    assert_exactly_once(&report);
    assert!(report["e2e_p99_latency_us"].is_number(), "{report:#}");
}

#[test]
fn consume_reads_back_what_a_produce_run_sent() {
    let broker = TestBroker::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(Scenario::Produce, &broker, "LoadgenConsume");
    a.serialize = ::loadgen::args::Serialize::Rocketmq;
    let produced = run(a, dir.path(), "produce");
    let sent = count(&produced, "sent_messages");
    assert!(sent > 0, "{produced:#}");
    let consumed = run(
        args(Scenario::Consume, &broker, "LoadgenConsume"),
        dir.path(),
        "consume",
    );
    assert_eq!(count(&consumed, "consumed_messages"), sent, "{consumed:#}");
    assert_eq!(count(&consumed, "duplicates"), 0, "{consumed:#}");
    assert_eq!(count(&consumed, "foreign_messages"), 0, "{consumed:#}");
    assert_eq!(count(&consumed, "sent_messages"), 0, "{consumed:#}");
}

#[test]
fn consume_of_a_missing_topic_is_an_error_not_an_empty_report() {
    let broker = TestBroker::start(1);
    let a = args(Scenario::Consume, &broker, "LoadgenNoSuchTopic");
    let err = ::loadgen::run(a).expect_err("nothing to consume");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
