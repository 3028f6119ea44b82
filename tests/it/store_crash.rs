//! Crash safety of the store on a real disk: a child process appends under SYNC_FLUSH and
//! prints every acknowledged record; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that every acknowledged record is there, intact, at its
//! queue offset, and that the consume queues agree with the commitlog. Several rounds append
//! to the same store. The child is this test binary itself, re-executed to run the ignored
//! `crash_child` test.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq::config::FlushDiskType;
use ringmq::message::record::{RecordInput, RecordView};
use ringmq::runtime::{spawn_executor, ExecutorOptions};
use ringmq::store::{
    DmaStorage, GetStatus, MessageStore, PutStatus, Reader, StoreConfig, SystemClock,
};

const DIR_ENV: &str = "RINGMQ_STORE_CRASH_DIR";
const ROUND_ENV: &str = "RINGMQ_STORE_CRASH_ROUND";
const TOPIC: &str = "CrashTopic";
const QUEUES: i32 = 3;
const WRITERS: usize = 48;

fn config(dir: &Path) -> StoreConfig {
    let mut cfg = StoreConfig::for_dir(dir);
    cfg.segment_bytes = 1 << 20;
    cfg.max_message_bytes = 16 * 1024;
    cfg.flush_disk_type = FlushDiskType::SyncFlush;
    cfg.flush_interval_consume_queue_ms = 50;
    cfg.flush_consume_queue_thorough_interval_ms = 200;
    cfg.index_active_entries_max = 2_000;
    // The test counts every record it stored across rounds: retention must not delete any
    // when the shared /tmp disk fills up (forced cleaning above 85 % would, as Java's does).
    cfg.retention.clean_file_forcibly_enable = false;
    cfg
}

fn options(name: &str) -> ExecutorOptions {
    let mut options = ExecutorOptions::control_plane(name);
    options.io_memory_bytes = 4 << 20;
    options
}

/// The body of payload `id`: its id, then a filler whose length and bytes derive from it.
fn payload(id: u64) -> Vec<u8> {
    let mut body = format!("crash-{id}-").into_bytes();
    let len = 40 + (id * 7919 % 3000) as usize;
    body.extend((0..len).map(|i| b'a' + ((id as usize + i) % 26) as u8));
    body
}

fn encode(queue_id: i32, id: u64) -> (BytesMut, ringmq::message::record::RecordSlots) {
    let body = payload(id);
    let props = format!("UNIQ_KEY\u{1}ID{id}\u{2}TAGS\u{1}t{}", id % 5);
    let input = RecordInput {
        topic: TOPIC,
        queue_id,
        flag: 0,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: "10.1.2.3:5555".parse().unwrap(),
        store_host: "127.0.0.1:10911".parse().unwrap(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body: &body,
        properties: &props,
    };
    let mut buf = BytesMut::new();
    let slots = input.encode(&mut buf).unwrap();
    (buf, slots)
}

/// The child: appends from many tasks until killed, printing `ACK queue offset phys id END`
/// for every put acknowledged with PUT_OK.
#[test]
#[ignore = "run by store_crash::a_killed_writer_loses_no_acknowledged_record"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let join = spawn_executor(&options("crash-child"), move || async move {
        let clock = Rc::new(SystemClock);
        let store = MessageStore::open(DmaStorage, clock, config(Path::new(&dir)))
            .await
            .unwrap();
        println!("READY");
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                glommio::spawn_local(async move {
                    for n in 0u64.. {
                        let id = round * 10_000_000 + n * WRITERS as u64 + w as u64;
                        let queue = (id % QUEUES as u64) as i32;
                        let (rec, slots) = encode(queue, id);
                        let r = store.put(rec, slots, true).await.unwrap();
                        // Only a durable put is an acknowledgement (a FLUSH_DISK_TIMEOUT on a
                        // loaded machine is not one, and the test must not count it).
                        if r.status != PutStatus::PutOk {
                            continue;
                        }
                        let line = format!(
                            "ACK {queue} {} {} {id} END\n",
                            r.queue_offset, r.physical_offset
                        );
                        std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
    })
    .unwrap();
    join.join().unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    queue: i32,
    offset: i64,
    physical: i64,
    id: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 6 || parts[0] != "ACK" || parts[5] != "END" {
        return None;
    }
    Some(Ack {
        queue: parts[1].parse().ok()?,
        offset: parts[2].parse().ok()?,
        physical: parts[3].parse().ok()?,
        id: parts[4].parse().ok()?,
    })
}

/// Runs one child for a random while, kills it, returns what it acknowledged.
fn run_child(dir: &Path, round: u64, run_for: Duration) -> Vec<Ack> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store_crash::crash_child",
            "--nocapture",
            "--ignored",
        ])
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut ready = None;
    let mut acks = Vec::new();
    // Run for `run_for` after READY, and at least until something was acknowledged (a loaded
    // machine may take longer than `run_for` to complete the first fdatasync).
    while ready.is_none_or(|r: Instant| r.elapsed() < run_for) || acks.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "child never got ready"
        );
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(line) if line == "READY" => ready = Some(Instant::now()),
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("child exited early"),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    acks.extend(rx.try_iter().filter_map(|l| parse_ack(&l)));
    acks
}

/// Reopens the store and checks every acknowledged record and every queue.
fn verify(dir: PathBuf, acks: Vec<Ack>) -> usize {
    let join = spawn_executor(&options("crash-verify"), move || async move {
        let store = MessageStore::open(DmaStorage, Rc::new(SystemClock), config(&dir))
            .await
            .unwrap();
        assert!(store.was_unclean_start(), "SIGKILL leaves the abort marker");
        let mut by_queue: HashMap<i32, BTreeMap<i64, Ack>> = HashMap::new();
        for ack in &acks {
            let record = store.read_by_physical_offset(ack.physical).await.unwrap();
            let view = RecordView::parse(&record).unwrap();
            assert_eq!(
                view.body,
                &payload(ack.id)[..],
                "acknowledged record {ack:?}"
            );
            assert_eq!((view.queue_id, view.queue_offset), (ack.queue, ack.offset));
            by_queue
                .entry(ack.queue)
                .or_default()
                .insert(ack.offset, *ack);
        }
        let mut total = 0;
        for queue in 0..QUEUES {
            let mut offset = store.min_offset(TOPIC, queue);
            let max = store.max_offset(TOPIC, queue);
            let acked = by_queue.remove(&queue).unwrap_or_default();
            assert!(
                acked.keys().all(|o| *o < max),
                "queue {queue} lost acknowledged units"
            );
            while offset < max {
                let got = store
                    .get_messages(Reader::Broker, TOPIC, queue, offset, 32, 1 << 20, None)
                    .await
                    .unwrap();
                assert_eq!(got.status, GetStatus::Found);
                for m in &got.messages {
                    let view = RecordView::parse(m).unwrap();
                    assert_eq!((view.queue_id, view.queue_offset), (queue, offset));
                    if let Some(ack) = acked.get(&offset) {
                        assert_eq!(view.physical_offset, ack.physical);
                    }
                    view.check_crc().unwrap();
                    offset += 1;
                    total += 1;
                }
            }
        }
        store.close().await.unwrap();
        total
    })
    .unwrap();
    join.join().unwrap()
}

#[test]
fn a_killed_writer_loses_no_acknowledged_record() {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-crash")
        .tempdir_in("/tmp")
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let seed = std::process::id() as u64 ^ now.as_nanos() as u64;
    eprintln!("store_crash seed {seed}");
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut all = 0;
    for round in 0..4 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis(150 + (rng >> 33) % 700);
        let acks = run_child(dir.path(), round, run_for);
        assert!(
            !acks.is_empty(),
            "round {round} (seed {seed}) acknowledged nothing"
        );
        let acked = acks.len();
        let t = Instant::now();
        let stored = verify(dir.path().to_path_buf(), acks);
        eprintln!(
            "round {round}: {acked} acked, {stored} stored, verified in {:?}",
            t.elapsed()
        );
        assert!(
            stored >= all + acked,
            "round {round} seed {seed}: {stored} < {all} + {acked}"
        );
        all = stored;
    }
}
