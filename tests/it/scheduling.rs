//! `shardScheduling`: a broker's shard threads run under SCHED_BATCH by default (their
//! wake-ups do not preempt the client beside them) and under the kernel's default policy with
//! `shardScheduling=normal`; the broker's other threads keep the default either way (glommio's
//! helper thread of each executor, named like it, is started before the shard sets its policy
//! and keeps the default too). Read from `/proc/PID/task/*/stat` of a `ringmq broker` child
//! process.

use crate::harness::TestNamesrv;
use crate::process::{free_port_triple, write_broker_config, BrokerProcess, Rng};

/// Linux's SCHED_OTHER and SCHED_BATCH (sched(7)).
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// (thread name, scheduling policy) of every thread of process `pid`.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let stat = match std::fs::read_to_string(task.unwrap().path().join("stat")) {
            Ok(stat) => stat,
            Err(_) => continue, // the thread ended meanwhile
        };
        // "tid (comm) state ...": the fields after the name start at field 3; the policy is
        // field 41 (proc_pid_stat(5)).
        let (head, rest) = stat
            .rsplit_once(')')
            .expect("stat has a name in parentheses");
        let name = head.split_once('(').expect("name").1.to_string();
        let policy = rest.split_whitespace().nth(41 - 3).expect("policy field");
        threads.push((name, policy.parse().expect("numeric policy")));
    }
    threads
}

fn broker_threads(extra: &str) -> Vec<(String, u32)> {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-sched-")
        .tempdir_in("/tmp")
        .unwrap();
    let namesrv = TestNamesrv::start();
    let port = free_port_triple(&mut Rng::seeded());
    let store = dir.path().join("store");
    // 2 shards on 127.0.0.1, small commitlog segments, plus `extra`.
    let extra = format!("mappedFileSizeCommitLog=67108864\n{extra}");
    let file = write_broker_config(dir.path(), "broker-sched", port, &store, &extra);
    let broker = BrokerProcess::start(&file, &namesrv.addr, dir.path().join("broker.log"));
    thread_policies(broker.pid())
}

#[test]
fn shard_threads_run_under_the_policy_configured_and_nothing_else_changes() {
    for (extra, shard_policy) in [("", SCHED_BATCH), ("shardScheduling=normal\n", SCHED_OTHER)] {
        let threads = broker_threads(extra);
        for shard in ["shard-0-", "shard-1-"] {
            assert!(
                threads
                    .iter()
                    .any(|(name, policy)| name.starts_with(shard) && *policy == shard_policy),
                "{extra:?}: no {shard}* thread with policy {shard_policy} in {threads:?}"
            );
        }
        // Nothing else is moved to SCHED_BATCH: the rest are the shards' io_uring workers
        // (which inherit their shard's policy) and threads of the default policy.
        for (name, policy) in &threads {
            assert!(
                *policy == SCHED_OTHER
                    || (*policy == shard_policy
                        && (name.starts_with("shard-") || name.starts_with("iou-wrk-"))),
                "{extra:?}: {name} runs policy {policy} in {threads:?}"
            );
        }
        // The main thread (named after the binary) keeps the default.
        assert!(
            threads
                .iter()
                .any(|(name, policy)| name == "ringmq" && *policy == SCHED_OTHER),
            "{extra:?}: {threads:?}"
        );
    }
}
