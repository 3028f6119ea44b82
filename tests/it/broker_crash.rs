//! Broker restart under SYNC_FLUSH loses nothing acknowledged: the real `ringmq broker` binary
//! runs as a child process on a store in /tmp (a real file system: glommio drops O_DIRECT on
//! tmpfs); several client threads send with SEND_MESSAGE_V2 (WAIT left to its default, true)
//! and record every SUCCESS; the child is SIGKILLed at a random moment, restarted on the same
//! store, and every queue is pulled from 0: every acknowledged message must be there, with its
//! body, at its acknowledged queue offset, and queue offsets must be dense. Three SIGKILL rounds
//! on one store, then one round ended by SIGTERM (exit code 0, same guarantee).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::{Properties, KEYS, TAGS};
use ringmq::remoting::response;

use crate::harness::TestNamesrv;
use crate::process::{
    free_port_triple, log_tail, test_body, verify_acked, write_broker_config, BrokerProcess, Rng,
};

const TOPIC: &str = "CrashBrokerTopic";
const QUEUES: i32 = 4;
const SENDERS: u64 = 4;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends answered FLUSH_DISK_TIMEOUT (stored, durability not confirmed): not acknowledgements.
static NOT_ACKNOWLEDGED: AtomicUsize = AtomicUsize::new(0);

/// The body of message `id`: its id, then a filler whose length and bytes derive from it.
fn payload(id: u64) -> Vec<u8> {
    test_body("crash", id, 16, 1500)
}

/// An acknowledged send.
#[derive(Debug, Clone, Copy)]
struct Ack {
    queue_id: i32,
    queue_offset: i64,
    id: u64,
}

fn message(id: u64) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set(TAGS, &format!("t{}", id % 3));
    properties.set(KEYS, &format!("k{id}"));
    OutgoingMessage {
        topic: TOPIC.into(),
        queue_id: (id % QUEUES as u64) as i32,
        body: payload(id),
        properties,
        flag: 0,
    }
}

/// Sends `id` and returns its ack if the broker answered SUCCESS (a FLUSH_DISK_TIMEOUT is not
/// an acknowledgement of durability, so it is not counted).
fn send(conn: &mut Connection, id: u64) -> Result<Option<Ack>, String> {
    let msg = message(id);
    let sent = conn
        .send_message("crash_pg", &msg)
        .map_err(|e| e.to_string())?;
    if sent.code != response::SUCCESS {
        NOT_ACKNOWLEDGED.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    assert_eq!(
        sent.queue_id, msg.queue_id,
        "message {id} acknowledged on another queue"
    );
    Ok(Some(Ack {
        queue_id: sent.queue_id,
        queue_offset: sent.queue_offset,
        id,
    }))
}

/// Sender threads: each sends until its connection fails (the broker died) or `stop` is set,
/// and returns what was acknowledged.
fn start_senders(addr: &str, round: u64, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<Vec<Ack>>> {
    (0..SENDERS)
        .map(|s| {
            let addr = addr.to_string();
            let stop = Arc::clone(stop);
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
                        Ok(Some(ack)) => acks.push(ack),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
                acks
            })
        })
        .collect()
}

fn join_senders(senders: Vec<JoinHandle<Vec<Ack>>>, into: &mut BTreeMap<(i32, i64), u64>) -> usize {
    let mut count = 0;
    for sender in senders {
        for ack in sender.join().expect("sender thread panicked") {
            count += 1;
            if let Some(previous) = into.insert((ack.queue_id, ack.queue_offset), ack.id) {
                panic!(
                    "queue {} offset {} acknowledged twice: message {previous} and message {}",
                    ack.queue_id, ack.queue_offset, ack.id
                );
            }
        }
    }
    count
}

fn verify(addr: &str, acked: &BTreeMap<(i32, i64), u64>, log: &Path) -> usize {
    verify_acked(addr, TOPIC, QUEUES, acked, payload, log)
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let store = dir.join("store");
    write_broker_config(
        dir,
        "broker-crash",
        port,
        &store,
        "mappedFileSizeCommitLog=67108864\n",
    )
}

#[test]
fn broker_restart_under_sync_flush_with_sigkill_loses_nothing_acknowledged() {
    let started = Instant::now();
    let namesrv = TestNamesrv::start();
    let dir = tempfile::Builder::new()
        .prefix("ringmq-broker-crash-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut rng = Rng::seeded();
    let port = free_port_triple(&mut rng);
    let config = write_config(dir.path(), port);
    let addr = format!("127.0.0.1:{port}");
    let mut starts = 0;
    let start = |starts: &mut u32| {
        *starts += 1;
        let log = dir.path().join(format!("broker-{starts}.log"));
        BrokerProcess::start(&config, &namesrv.addr, log)
    };
    let mut broker = start(&mut starts);
    let mut acked: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    // Create the topic before the senders race for it; its creation is acknowledged too.
    {
        let mut conn = Connection::connect(&addr, CALL_TIMEOUT).unwrap();
        let ack = send(&mut conn, 0)
            .unwrap()
            .expect("first send acknowledged");
        acked.insert((ack.queue_id, ack.queue_offset), ack.id);
    }
    for round in 1..=3u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let senders = start_senders(&addr, round, &stop);
        std::thread::sleep(rng.millis(300, 1500));
        broker.sigkill();
        stop.store(true, Ordering::Relaxed);
        let count = join_senders(senders, &mut acked);
        assert!(
            count > 0,
            "round {round}: nothing was acknowledged before the kill"
        );
        broker = start(&mut starts);
        let found = verify(&addr, &acked, &broker.log);
        eprintln!(
            "round {round} (SIGKILL): {count} acknowledged, {} in total, {found} stored",
            acked.len()
        );
    }
    // A graceful stop while sending: exit code 0 and the same guarantee.
    let stop = Arc::new(AtomicBool::new(false));
    let senders = start_senders(&addr, 4, &stop);
    std::thread::sleep(rng.millis(300, 1500));
    let status = broker.sigterm();
    stop.store(true, Ordering::Relaxed);
    let count = join_senders(senders, &mut acked);
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exit status {status}:\n{}",
        log_tail(&broker.log)
    );
    assert!(count > 0, "SIGTERM round: nothing was acknowledged");
    broker = start(&mut starts);
    let found = verify(&addr, &acked, &broker.log);
    eprintln!(
        "round 4 (SIGTERM): {count} acknowledged, {} in total, {found} stored, {} answered \
         FLUSH_DISK_TIMEOUT; {:?}",
        acked.len(),
        NOT_ACKNOWLEDGED.load(Ordering::Relaxed),
        started.elapsed()
    );
    let status = broker.sigterm();
    assert_eq!(status.code(), Some(0), "final SIGTERM exit status {status}");
}
