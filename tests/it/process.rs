//! Child processes of the real `ringmq` binary for the crash and replication tests: start,
//! wait for "boot success", SIGKILL / SIGTERM / SIGSTOP by the child's own PID, reaped on drop.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq::client::broker::PulledMessage;
use ringmq::client::Connection;
use ringmq::remoting::response;

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(20);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A port `p` with `p - 2` (fast port), `p` and `p + 1` (HA port) free on loopback, taken below
/// the kernel's ephemeral range when there is room, so that no client socket of the other tests
/// can take it while the broker is down between a kill and the restart.
pub fn free_port_triple(rng: &mut Rng) -> u16 {
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
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let seed = nanos | 1;
        eprintln!("broker_crash seed {seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from + 1))
    }
}

/// Writes `dir/broker.properties` for a SYNC_FLUSH master `name` on 127.0.0.1:`port` with its
/// store in `store` (2 shards, topics and groups created on first use), plus `extra` lines.
pub fn write_broker_config(
    dir: &Path,
    name: &str,
    port: u16,
    store: &Path,
    extra: &str,
) -> PathBuf {
    let path = dir.join("broker.properties");
    let text = format!(
        "brokerClusterName=DefaultCluster\n\
         brokerName={name}\n\
         brokerId=0\n\
         brokerRole=ASYNC_MASTER\n\
         flushDiskType=SYNC_FLUSH\n\
         brokerIP1=127.0.0.1\n\
         listenAddress=127.0.0.1\n\
         listenPort={port}\n\
         storePathRootDir={}\n\
         shardCount=2\n\
         autoCreateTopicEnable=true\n\
         autoCreateSubscriptionGroup=true\n\
         {extra}",
        store.display()
    );
    std::fs::write(&path, text).expect("write broker.properties");
    path
}

/// The body of test message `id`: `{tag}-{id}-`, then a filler whose length (`min` plus up to
/// `spread` bytes) and bytes derive from the id, so a stored body names its message.
pub fn test_body(tag: &str, id: u64, min: usize, spread: u64) -> Vec<u8> {
    let mut body = format!("{tag}-{id}-").into_bytes();
    let len = min + (id * 7919 % spread.max(1)) as usize;
    body.extend((0..len).map(|i| b'a' + ((id as usize + i) % 26) as u8));
    body
}

/// Every message of one queue, pulled from offset 0 until PULL_NOT_FOUND; checks on the way
/// that queue offsets are dense from 0 and that nextBeginOffset and maxOffset agree.
pub fn pull_queue(
    conn: &mut Connection,
    topic: &str,
    queue: i32,
    log: &Path,
) -> Vec<PulledMessage> {
    let mut found: Vec<PulledMessage> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "pulling queue {queue} does not end"
        );
        let offset = found.len() as i64;
        let pulled = conn
            .pull("verify_acked", topic, queue, offset, 32, "*", 0)
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
                    found.push(m);
                }
                assert_eq!(
                    pulled.next_begin_offset,
                    found.len() as i64,
                    "nextBeginOffset of queue {queue} skips offsets"
                );
            }
            response::PULL_NOT_FOUND => {
                assert_eq!(pulled.max_offset, offset, "queue {queue} max offset");
                return found;
            }
            code => panic!(
                "pull of queue {queue} at {offset} answered {code}:\n{}",
                log_tail(log)
            ),
        }
    }
}

/// Pulls every queue of `topic` from 0 and checks: offsets dense from 0, every acknowledged
/// message (`acked`: (queue, offset) → id) at its offset with its body. Returns the number of
/// messages found.
pub fn verify_acked(
    addr: &str,
    topic: &str,
    queues: i32,
    acked: &BTreeMap<(i32, i64), u64>,
    payload: impl Fn(u64) -> Vec<u8>,
    log: &Path,
) -> usize {
    let mut conn = Connection::connect(addr, Duration::from_secs(5)).expect("connect to verify");
    let mut total = 0;
    for queue in 0..queues {
        let found = pull_queue(&mut conn, topic, queue, log);
        for (&(_, queue_offset), &id) in acked.range((queue, 0)..(queue, i64::MAX)) {
            let body = &found
                .get(queue_offset as usize)
                .unwrap_or_else(|| {
                    panic!(
                        "acknowledged message {id} at queue {queue} offset {queue_offset} is \
                         lost: the queue holds only {} messages\n{}",
                        found.len(),
                        log_tail(log)
                    )
                })
                .body;
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

/// The last lines of a child's log, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    lines[from..].join("\n")
}

/// A broker a test starts, kills and restarts as a child process: its directory, properties
/// file, port and current process; each run logs to `broker.<run>.log` in its directory.
pub struct RestartableBroker {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub process: Option<BrokerProcess>,
    runs: u32,
}

impl RestartableBroker {
    /// Creates `dir` and writes `properties(port, store directory)` as its
    /// `broker.properties`, on a free port triple.
    pub fn new(
        dir: &Path,
        rng: &mut Rng,
        properties: impl FnOnce(u16, &Path) -> String,
    ) -> RestartableBroker {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port_triple(rng);
        let config = dir.join("broker.properties");
        std::fs::write(&config, properties(port, &dir.join("store"))).unwrap();
        RestartableBroker {
            dir: dir.to_path_buf(),
            config,
            port,
            process: None,
            runs: 0,
        }
    }

    /// Starts it; returns once it booted.
    pub fn start(&mut self, namesrv: &str) {
        self.runs += 1;
        let log = self.dir.join(format!("broker.{}.log", self.runs));
        self.process = Some(BrokerProcess::start(&self.config, namesrv, log));
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The running process.
    pub fn process(&mut self) -> &mut BrokerProcess {
        self.process.as_mut().expect("a running broker")
    }

    /// The end of the current run's log ("" when not running).
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| log_tail(&p.log))
            .unwrap_or_default()
    }
}

/// One `ringmq broker` child process; killed (by its own PID) and reaped when dropped, so a
/// failing test never leaves it behind.
pub struct BrokerProcess {
    child: Option<Child>,
    pub log: PathBuf,
    stdout: Option<JoinHandle<()>>,
}

impl BrokerProcess {
    /// Starts the broker and waits (bounded) for its "boot success" line.
    pub fn start(config: &Path, namesrv: &str, log: PathBuf) -> BrokerProcess {
        let args = [
            "broker".as_ref(),
            "-c".as_ref(),
            config.as_os_str(),
            "-n".as_ref(),
            namesrv.as_ref(),
        ];
        Self::spawn(&args, log)
    }

    /// Starts `ringmq ARGS…` (any server subcommand) and waits (bounded) for its "boot
    /// success" line.
    pub fn spawn(args: &[&std::ffi::OsStr], log: PathBuf) -> BrokerProcess {
        Self::spawn_in(None, args, log)
    }

    /// [`BrokerProcess::spawn`] inside network namespace `netns` (`ip netns exec`, which
    /// execs the server: the PID is the server's).
    pub fn spawn_in(netns: Option<&str>, args: &[&std::ffi::OsStr], log: PathBuf) -> BrokerProcess {
        Self::spawn_with_env(netns, args, log, &[])
    }

    /// [`BrokerProcess::spawn_in`] with these environment variables set (after the defaults).
    pub fn spawn_with_env(
        netns: Option<&str>,
        args: &[&std::ffi::OsStr],
        log: PathBuf,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> BrokerProcess {
        let stderr = File::create(&log).expect("create the broker log");
        // CHAOS_RINGMQ_BIN: another build of the server (the chaos suite's long form by hand
        // with a release build); the test's own debug build otherwise.
        let bin = std::env::var_os("CHAOS_RINGMQ_BIN");
        let bin: std::ffi::OsString = bin.unwrap_or_else(|| env!("CARGO_BIN_EXE_ringmq").into());
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            // Java's log files (ringmq::logfile) beside the run log, not in $HOME.
            .env(
                "RINGMQ_LOG_DIR",
                log.parent()
                    .unwrap_or(Path::new("/tmp"))
                    .join("rocketmqlogs"),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn ringmq");
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running broker").id()
    }

    /// SIGKILL (via `Child::kill`, by this child's own PID) and reap.
    pub fn sigkill(&mut self) {
        let child = self.child.as_mut().expect("a running broker");
        child.kill().expect("SIGKILL the broker");
        let status = child.wait().expect("reap the broker");
        assert!(!status.success(), "a SIGKILLed broker exited with {status}");
        self.child = None;
        self.join_stdout();
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
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

    /// SIGSTOP: the process stays, frozen (its sockets stay open).
    /// SIGSTOP, returning once every thread of the process is stopped: kill(2) returns before
    /// a running thread has taken the signal, and on a loaded machine a "frozen" broker could
    /// otherwise still answer for a while (a test would see it acknowledge after the freeze).
    pub fn sigstop(&mut self) {
        self.signal(libc::SIGSTOP);
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let running = std::fs::read_dir(&tasks)
                .map(|dir| {
                    dir.flatten()
                        .filter(|task| {
                            let stat = std::fs::read_to_string(task.path().join("stat"))
                                .unwrap_or_default();
                            // The state follows the ")" that ends the command name.
                            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
                            !matches!(state, Some('T') | Some('t') | None)
                        })
                        .count()
                })
                .unwrap_or(0);
            if running == 0 || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT after [`BrokerProcess::sigstop`].
    pub fn sigcont(&mut self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&mut self, signal: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on the PID of our own unreaped child (it cannot have been recycled).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}): {}", std::io::Error::last_os_error());
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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
