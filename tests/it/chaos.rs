//! The start of the chaos suite (issue 16): real `ringmq broker` processes under load from
//! sender threads (SEND_MESSAGE_V2, waiting, SYNC_FLUSH), faults injected round after round,
//! and the invariants checked at the end of each fault's run by pulling every queue from 0:
//! every acknowledged message readable at its queue offset with its body (else *lost*), no
//! message stored at two queue offsets and no queue offset twice or skipped (else
//! *duplicated*). Recovery is the time from the fault's end (the SIGKILL, the space freed) until
//! every queue acknowledges a send again.
//!
//! Faults so far: SIGKILL of the broker under SYNC_FLUSH (restarted on the same store), and
//! the disk filled by another file and freed again (a loop-mounted ext4; needs root and a loop
//! device, else that fault is skipped with the reason, or fails under `CI=true`). Not built
//! yet: slow disk, EIO on reads, SIGSTOP of a slave, partitions, bad-input attacks, nameserver
//! restarts.
//!
//! The short form runs in `cargo test` (a few rounds of each). The long form, by hand, prints
//! the table:
//!
//! ```sh
//! CHAOS_KILL_ROUNDS=100 CHAOS_DISK_ROUNDS=10 cargo test --test it chaos::long -- --ignored --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::{ClientError, Connection};
use ringmq::message::properties::{Properties, KEYS};
use ringmq::remoting::response;

use crate::disk_full::{fill, loop_fs_or_skip, write_config};
use crate::harness::TestNamesrv;
use crate::process::{
    free_port_triple, log_tail, pull_queue, test_body, write_broker_config, BrokerProcess, Rng,
};

const TOPIC: &str = "ChaosTopic";
const QUEUES: i32 = 4;
const SENDERS: u64 = 4;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A fault's end to every queue acknowledging again, at most.
const RECOVERY_MAX: Duration = Duration::from_secs(60);

/// Message `id`'s body: the id first (so a stored body names its message), then a filler.
fn payload(id: u64) -> Vec<u8> {
    test_body("chaos", id, 200, 1800)
}

fn id_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body.get(6..30.min(body.len()))?).ok()?;
    text.split('-').next()?.parse().ok()
}

fn message(id: u64) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set(KEYS, &format!("c{id}"));
    OutgoingMessage {
        topic: TOPIC.into(),
        queue_id: (id % QUEUES as u64) as i32,
        body: payload(id),
        properties,
        flag: 0,
    }
}

/// What one send got.
enum Outcome {
    /// SUCCESS at (queue, offset).
    Acked(i32, i64),
    /// Answered, not acknowledged (FLUSH_DISK_TIMEOUT, SERVICE_NOT_AVAILABLE, …).
    NotAcked,
    /// The connection failed (the broker died).
    Gone,
}

fn send(conn: &mut Connection, id: u64) -> Outcome {
    match conn.send_message("chaos_pg", &message(id)) {
        Ok(r) if r.code == response::SUCCESS => Outcome::Acked(r.queue_id, r.queue_offset),
        Ok(_) | Err(ClientError::Server { .. }) => Outcome::NotAcked,
        Err(_) => Outcome::Gone,
    }
}

/// An acknowledged send: (queue, offset, id).
type Ack = (i32, i64, u64);

/// Sender threads for round `round`: each sends until `stop` is set or its connection fails,
/// pausing a little after a refusal, and returns what was acknowledged.
fn start_senders(addr: &str, round: u64, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<Vec<Ack>>> {
    (0..SENDERS)
        .map(|s| {
            let (addr, stop) = (addr.to_string(), Arc::clone(stop));
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                let Ok(mut conn) = Connection::connect(&addr, CALL_TIMEOUT) else {
                    return acks;
                };
                for n in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = round * 10_000_000 + n * SENDERS + s;
                    match send(&mut conn, id) {
                        Outcome::Acked(q, o) => acks.push((q, o, id)),
                        Outcome::NotAcked => std::thread::sleep(Duration::from_millis(10)),
                        Outcome::Gone => break,
                    }
                }
                acks
            })
        })
        .collect()
}

/// The tally of one fault's run.
#[derive(Debug, Default)]
struct Tally {
    fault: &'static str,
    rounds: usize,
    acked: BTreeMap<(i32, i64), u64>,
    /// Acknowledged twice at one queue offset (must not happen).
    double_acks: usize,
    recovery: Vec<Duration>,
    /// Ids of the probe sends that measure recovery (apart from the senders' ids).
    next_probe_id: u64,
    lost: usize,
    duplicated: usize,
}

impl Tally {
    fn new(fault: &'static str) -> Tally {
        Tally {
            fault,
            next_probe_id: 9_000_000_000,
            ..Tally::default()
        }
    }

    fn join(&mut self, senders: Vec<JoinHandle<Vec<Ack>>>) -> usize {
        let mut count = 0;
        for sender in senders {
            for (q, o, id) in sender.join().expect("sender thread panicked") {
                count += 1;
                if self.acked.insert((q, o), id).is_some() {
                    self.double_acks += 1;
                }
            }
        }
        count
    }

    /// Pulls every queue from 0 and counts lost and duplicated messages (an offset twice or
    /// skipped fails the pull's own checks at once).
    fn audit(&mut self, addr: &str, log: &Path) {
        let mut conn = Connection::connect(addr, CALL_TIMEOUT).expect("connect to audit");
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        for queue in 0..QUEUES {
            let stored = pull_queue(&mut conn, TOPIC, queue, log);
            for m in &stored {
                if id_of(&m.body).is_some_and(|id| !seen.insert(id)) {
                    self.duplicated += 1; // one message at two offsets
                }
            }
            for (&(_, offset), &id) in self.acked.range((queue, 0)..(queue, i64::MAX)) {
                if stored.get(offset as usize).map(|m| &m.body) != Some(&payload(id)) {
                    self.lost += 1;
                }
            }
        }
    }

    fn row(&self) -> String {
        let mut r = self.recovery.clone();
        r.sort();
        let ms = |d: Option<&Duration>| d.map_or("-".into(), |d| d.as_millis().to_string());
        format!(
            "| {} | {} | {} | {} | {} | {} / {} / {} |",
            self.fault,
            self.rounds,
            self.acked.len(),
            self.lost,
            self.duplicated + self.double_acks,
            ms(r.first()),
            ms(r.get(r.len() / 2)),
            ms(r.last()),
        )
    }

    fn check(&self) {
        assert!(self.rounds > 0 && !self.acked.is_empty(), "{self:?}");
        assert_eq!(
            (self.lost, self.duplicated, self.double_acks),
            (0, 0, 0),
            "{}: lost, duplicated, acknowledged twice",
            self.fault
        );
    }
}

/// Waits until every queue acknowledges a send (bounded); returns how long that took from
/// `since`.
fn wait_recovered(addr: &str, since: Instant, tally: &mut Tally, log: &Path) -> Duration {
    let mut ready: BTreeSet<i32> = BTreeSet::new();
    let mut conn: Option<Connection> = None;
    while ready.len() < QUEUES as usize {
        assert!(
            since.elapsed() < RECOVERY_MAX,
            "{}: queues {ready:?} acknowledge {RECOVERY_MAX:?} after the fault:\n{}",
            tally.fault,
            log_tail(log)
        );
        let Some(c) = conn.as_mut() else {
            conn = Connection::connect(addr, CALL_TIMEOUT).ok();
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = tally.next_probe_id;
        tally.next_probe_id += 1;
        match send(c, id) {
            Outcome::Acked(q, o) => {
                ready.insert(q);
                if tally.acked.insert((q, o), id).is_some() {
                    tally.double_acks += 1;
                }
            }
            Outcome::NotAcked => std::thread::sleep(Duration::from_millis(10)),
            Outcome::Gone => conn = None,
        }
    }
    since.elapsed()
}

/// Rounds of SIGKILL under SYNC_FLUSH: senders run, the broker is killed at a random moment
/// and restarted on the same store.
fn sigkill_rounds(rounds: usize, rng: &mut Rng) -> Tally {
    let mut tally = Tally::new("SIGKILL under SYNC_FLUSH");
    let namesrv = TestNamesrv::start();
    let dir = tempfile::Builder::new()
        .prefix("ringmq-chaos-kill-")
        .tempdir_in("/tmp")
        .unwrap();
    let port = free_port_triple(rng);
    let config = write_broker_config(
        dir.path(),
        "broker-chaos",
        port,
        &dir.path().join("store"),
        "mappedFileSizeCommitLog=16777216\n",
    );
    let addr = format!("127.0.0.1:{port}");
    let log = |n: usize| dir.path().join(format!("broker-{n}.log"));
    let mut broker = BrokerProcess::start(&config, &namesrv.addr, log(0));
    wait_recovered(&addr, Instant::now(), &mut tally, &broker.log);
    for round in 1..=rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let senders = start_senders(&addr, round as u64, &stop);
        std::thread::sleep(rng.millis(200, 1200));
        broker.sigkill();
        let killed = Instant::now();
        stop.store(true, Ordering::Relaxed);
        tally.join(senders);
        broker = BrokerProcess::start(&config, &namesrv.addr, log(round));
        let recovery = wait_recovered(&addr, killed, &mut tally, &broker.log);
        tally.recovery.push(recovery);
        tally.rounds += 1;
    }
    tally.audit(&addr, &broker.log);
    let status = broker.sigterm();
    assert_eq!(status.code(), Some(0), "{}", log_tail(&broker.log));
    tally
}

/// Rounds of disk full and back: while senders run, another file fills the loop-mounted file
/// system until sends are refused, then goes. `None` when no loop device can be had.
fn disk_full_rounds(test: &str, rounds: usize, rng: &mut Rng) -> Option<Tally> {
    let fs = loop_fs_or_skip(test, 300)?;
    let mut tally = Tally::new("disk full and freed");
    let namesrv = TestNamesrv::start();
    let work = tempfile::Builder::new()
        .prefix("ringmq-chaos-disk-")
        .tempdir_in("/tmp")
        .unwrap();
    let port = free_port_triple(rng);
    let config = write_config(work.path(), &fs.mount.join("store"), port);
    let addr = format!("127.0.0.1:{port}");
    let mut broker = BrokerProcess::start(&config, &namesrv.addr, work.path().join("b.log"));
    let filler = fs.mount.join("filler");
    for round in 1..=rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let senders = start_senders(&addr, round as u64, &stop);
        std::thread::sleep(rng.millis(100, 500));
        fill(&filler);
        // Until a send is refused: the broker has met the full disk.
        let mut probe = Connection::connect(&addr, CALL_TIMEOUT).unwrap();
        let filled = Instant::now();
        loop {
            assert!(
                filled.elapsed() < RECOVERY_MAX,
                "round {round}: sends still acknowledged {RECOVERY_MAX:?} after the disk filled"
            );
            let id = tally.next_probe_id;
            tally.next_probe_id += 1;
            match send(&mut probe, id) {
                Outcome::Acked(q, o) => {
                    if tally.acked.insert((q, o), id).is_some() {
                        tally.double_acks += 1;
                    }
                }
                Outcome::NotAcked => break,
                Outcome::Gone => {
                    panic!("the broker died on a full disk:\n{}", log_tail(&broker.log))
                }
            }
        }
        std::thread::sleep(rng.millis(100, 1000));
        std::fs::remove_file(&filler).unwrap();
        let freed = Instant::now();
        let recovery = wait_recovered(&addr, freed, &mut tally, &broker.log);
        tally.recovery.push(recovery);
        stop.store(true, Ordering::Relaxed);
        tally.join(senders);
        tally.rounds += 1;
    }
    tally.audit(&addr, &broker.log);
    let status = broker.sigterm();
    assert_eq!(status.code(), Some(0), "{}", log_tail(&broker.log));
    drop(broker);
    drop(fs);
    Some(tally)
}

fn print_table(tallies: &[Tally]) {
    eprintln!(
        "| fault | rounds | acknowledged | lost | duplicated | recovery ms min / median / max |"
    );
    eprintln!("|---|---|---|---|---|---|");
    for t in tallies {
        eprintln!("{}", t.row());
    }
}

fn env_rounds(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn short_chaos_rounds_lose_nothing_acknowledged() {
    let mut rng = Rng::seeded();
    let mut tallies = vec![sigkill_rounds(3, &mut rng)];
    tallies.extend(disk_full_rounds(
        "chaos::short_chaos_rounds_lose_nothing_acknowledged",
        2,
        &mut rng,
    ));
    print_table(&tallies);
    for t in &tallies {
        t.check();
    }
}

#[test]
#[ignore = "the long form, by hand: CHAOS_KILL_ROUNDS / CHAOS_DISK_ROUNDS (100 / 10)"]
fn long() {
    let mut rng = Rng::seeded();
    let mut tallies = vec![sigkill_rounds(
        env_rounds("CHAOS_KILL_ROUNDS", 100),
        &mut rng,
    )];
    tallies.extend(disk_full_rounds(
        "chaos::long",
        env_rounds("CHAOS_DISK_ROUNDS", 10),
        &mut rng,
    ));
    print_table(&tallies);
    for t in &tallies {
        t.check();
    }
}
