//! Broker restart under SYNC_FLUSH loses nothing acknowledged: the real `ringmq broker` binary
//! runs as a child process on a store in /tmp (a real file system: glommio drops O_DIRECT on
//! tmpfs); several client threads send with SEND_MESSAGE_V2 (WAIT left to its default, true)
//! and record every SUCCESS; the child is SIGKILLed at a random moment, restarted on the same
//! store, and every queue is pulled from 0: every acknowledged message must be there, with its
//! body, at its acknowledged queue offset, and queue offsets must be dense. Three SIGKILL rounds
//! on one store, then one round ended by SIGTERM (exit code 0, same guarantee).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::{Properties, KEYS, TAGS};
use ringmq::remoting::response;

use crate::harness::TestNamesrv;

const TOPIC: &str = "CrashBrokerTopic";
const QUEUES: i32 = 4;
const SENDERS: u64 = 4;
const BOOT_TIMEOUT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends answered FLUSH_DISK_TIMEOUT (stored, durability not confirmed): not acknowledgements.
static NOT_ACKNOWLEDGED: AtomicUsize = AtomicUsize::new(0);

/// A port `p` with `p - 2` (fast port), `p` and `p + 1` (HA port) free on loopback, taken below
/// the kernel's ephemeral range when there is room, so that no client socket of the other tests
/// can take it while the broker is down between a kill and the restart.
fn free_port_triple(rng: &mut Rng) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let free = |port: u16| {
        TcpListener::bind(("127.0.0.1", port - 2)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
    };
    if ephemeral_low > 12_000 {
        for _ in 0..200 {
            let port = 10_000 + (rng.next() % u64::from(ephemeral_low - 10_002)) as u16;
            if free(port) {
                return port;
            }
        }
    }
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        if (1026..u16::MAX).contains(&port) && free(port) {
            return port;
        }
    }
    panic!("no free port p with p-2, p and p+1 all free on 127.0.0.1");
}

/// A small xorshift generator (no rand dependency); the seed is printed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let seed = nanos | 1;
        eprintln!("broker_crash seed {seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from + 1))
    }
}

/// The body of message `id`: its id, then a filler whose length and bytes derive from it.
fn payload(id: u64) -> Vec<u8> {
    let mut body = format!("crash-{id}-").into_bytes();
    let len = 16 + (id * 7919 % 1500) as usize;
    body.extend((0..len).map(|i| b'a' + ((id as usize + i) % 26) as u8));
    body
}

/// The last lines of a child's log, for failure messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    lines[from..].join("\n")
}

/// One `ringmq broker` child process; killed (by its own PID) and reaped when dropped, so a
/// failing test never leaves it behind.
struct BrokerProcess {
    child: Option<Child>,
    log: PathBuf,
    stdout: Option<JoinHandle<()>>,
}

impl BrokerProcess {
    /// Starts the broker and waits (bounded) for its "boot success" line.
    fn start(config: &Path, namesrv: &str, log: PathBuf) -> BrokerProcess {
        let stderr = File::create(&log).expect("create the broker log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .arg("broker")
            .arg("-c")
            .arg(config)
            .arg("-n")
            .arg(namesrv)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn ringmq broker");
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        // Keeps draining stdout after the boot line so the child never blocks on a full pipe;
        // ends at EOF, when the child exits.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let mut process = BrokerProcess {
            child: Some(child),
            log,
            stdout: Some(reader),
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) if line.contains("boot success") => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = process.wait_exit(EXIT_TIMEOUT);
                    panic!(
                        "the broker exited ({status:?}) before booting:\n{}",
                        log_tail(&process.log)
                    );
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no \"boot success\" line within {BOOT_TIMEOUT:?}:\n{}",
                    log_tail(&process.log)
                );
            }
        }
        process
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running broker").id()
    }

    /// SIGKILL (via `Child::kill`, by this child's own PID) and reap.
    fn sigkill(&mut self) {
        let child = self.child.as_mut().expect("a running broker");
        child.kill().expect("SIGKILL the broker");
        let status = child.wait().expect("reap the broker");
        assert!(!status.success(), "a SIGKILLed broker exited with {status}");
        self.child = None;
        self.join_stdout();
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the exit status.
    fn sigterm(&mut self) -> ExitStatus {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on the PID of our own unreaped child (it cannot have been recycled).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM): {}", std::io::Error::last_os_error());
        let status = self.wait_exit(EXIT_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "the broker did not exit within {EXIT_TIMEOUT:?} of SIGTERM:\n{}",
                log_tail(&self.log)
            )
        });
        self.child = None;
        self.join_stdout();
        status
    }

    /// Waits up to `timeout` for the child to exit on its own.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn join_stdout(&mut self) {
        if let Some(reader) = self.stdout.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_stdout();
    }
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

/// Pulls every queue from 0 and checks: offsets dense from 0, every acknowledged message at its
/// offset with its body. Returns the number of messages found.
fn verify(addr: &str, acked: &BTreeMap<(i32, i64), u64>, log: &Path) -> usize {
    let mut conn =
        Connection::connect(addr, CALL_TIMEOUT).expect("connect to the restarted broker");
    let mut total = 0;
    for queue in 0..QUEUES {
        let mut found: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "pulling queue {queue} does not end"
            );
            let offset = found.len() as i64;
            let pulled = conn
                .pull("crash_verify", TOPIC, queue, offset, 32, "*", 0)
                .unwrap_or_else(|e| panic!("pull queue {queue} at {offset}: {e}"));
            match pulled.code {
                response::SUCCESS => {
                    assert!(!pulled.messages.is_empty(), "FOUND without messages");
                    for m in pulled.messages {
                        assert_eq!(
                            (m.queue_id, m.queue_offset),
                            (queue, found.len() as i64),
                            "queue offsets are not dense"
                        );
                        found.push(m.body);
                    }
                    assert_eq!(
                        pulled.next_begin_offset,
                        found.len() as i64,
                        "nextBeginOffset of queue {queue} skips offsets"
                    );
                }
                response::PULL_NOT_FOUND => {
                    assert_eq!(pulled.max_offset, offset, "queue {queue} max offset");
                    break;
                }
                code => panic!(
                    "pull of queue {queue} at {offset} answered {code}:\n{}",
                    log_tail(log)
                ),
            }
        }
        for (&(_, queue_offset), &id) in acked.range((queue, 0)..(queue, i64::MAX)) {
            let body = found.get(queue_offset as usize).unwrap_or_else(|| {
                panic!(
                    "acknowledged message {id} at queue {queue} offset {queue_offset} is lost: \
                     the queue holds only {} messages after the restart\n{}",
                    found.len(),
                    log_tail(log)
                )
            });
            assert!(
                *body == payload(id),
                "queue {queue} offset {queue_offset} holds {:?}, not acknowledged message {id}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
        total += found.len();
    }
    total
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("broker.properties");
    let text = format!(
        "brokerClusterName=DefaultCluster\n\
         brokerName=broker-crash\n\
         brokerId=0\n\
         brokerRole=ASYNC_MASTER\n\
         flushDiskType=SYNC_FLUSH\n\
         brokerIP1=127.0.0.1\n\
         listenAddress=127.0.0.1\n\
         listenPort={port}\n\
         storePathRootDir={}\n\
         mappedFileSizeCommitLog=67108864\n\
         shardCount=2\n\
         autoCreateTopicEnable=true\n\
         autoCreateSubscriptionGroup=true\n",
        dir.join("store").display()
    );
    std::fs::write(&path, text).expect("write broker.properties");
    path
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
