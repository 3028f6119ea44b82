//! `loadgen churn`: connection churn and bad input against one server address (a broker's port
//! or a nameserver), reporting the server's resident memory as it goes. Plain blocking sockets
//! and hand-built frames, no RocketMQ client: the point is what a server keeps per connection,
//! and whether bad peers slow down good ones (run `loadgen produce` beside `churn attack`).
//!
//! * `rounds`: N connections opened at once, each idle, sending one request (GET_MAX_OFFSET,
//!   answered) or one invalid frame (the server closes it), held, closed, a pause; VmRSS after
//!   each round once the server has closed its side (its descriptor count is back).
//! * `sequential`: one connection at a time, connect then close; VmRSS every `--every`.
//! * `idle`: N connections opened and held; VmRSS before, while held and after.
//! * `attack`: for `--seconds`: garbage frames, length prefixes over the limit and just under
//!   it, malformed JSON headers, oversize message bodies, silent connections, and connections
//!   that pipeline pulls and never read the answers; VmRSS each second and after.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::{Parser, Subcommand, ValueEnum};
use ringmq::protocol::send::SendRequest;
use ringmq::remoting::{request, RemotingCommand};

/// Connection churn and bad input against one server (see the module docs).
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen churn")]
pub struct ChurnArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub pattern: Pattern,
}

/// The server under test.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The server's address (a broker's listen port, or a nameserver).
    #[arg(long, default_value = "127.0.0.1:10911")]
    pub addr: SocketAddr,
    /// The server's PID, to report its VmRSS and open descriptors (/proc/PID).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Topic named in requests (GET_MAX_OFFSET, the attack's pulls).
    #[arg(short = 't', long, default_value = "BenchmarkTest")]
    pub topic: String,
}

/// What to do.
#[derive(Subcommand, Debug, Clone)]
pub enum Pattern {
    /// Rounds of connections opened at once, held, closed.
    Rounds(RoundsPlan),
    /// One connection at a time, connect then close.
    Sequential {
        /// Connections in all.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Report VmRSS every this many connections.
        #[arg(long, default_value_t = 10_000)]
        every: u64,
        /// Pause before each report, once the server has closed its side.
        #[arg(long, default_value_t = 500)]
        pause_ms: u64,
    },
    /// Connections opened and held idle.
    Idle {
        #[arg(short = 'c', long, default_value_t = 2_200)]
        connections: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 5)]
        hold_s: u64,
    },
    /// Bad input of every kind at once.
    Attack(AttackPlan),
}

/// What each connection of a round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Nothing: connect, wait, close.
    Idle,
    /// One GET_MAX_OFFSET, its answer read.
    Request,
    /// One frame with an unknown serialize type; the server closes the connection.
    Invalid,
    /// A third of each.
    Mixed,
}

/// `rounds`.
#[derive(Parser, Debug, Clone)]
pub struct RoundsPlan {
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Connections per round, all open at once.
    #[arg(short = 'c', long, default_value_t = 2_000)]
    pub connections: usize,
    #[arg(long, value_enum, default_value_t = Kind::Mixed)]
    pub kind: Kind,
    /// How long the round's connections stay open.
    #[arg(long, default_value_t = 1_000)]
    pub hold_ms: u64,
    /// Pause after the server closed its side, before VmRSS is read.
    #[arg(long, default_value_t = 3_000)]
    pub pause_ms: u64,
}

/// `attack`.
#[derive(Parser, Debug, Clone)]
pub struct AttackPlan {
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Connections opened at the start and held silent to the end.
    #[arg(long, default_value_t = 2_200)]
    pub silent: usize,
    /// Short-lived bad connections per second (garbage, length prefixes, malformed headers),
    /// spread over 4 threads.
    #[arg(long, default_value_t = 500)]
    pub bad_per_second: u64,
    /// Oversize-body sends (5 MiB, over the default 4 MiB maxMessageSize) per second.
    #[arg(long, default_value_t = 4)]
    pub oversize_per_second: u64,
    /// Connections that pipeline PULL_MESSAGE and never read the answers.
    #[arg(long, default_value_t = 4)]
    pub pullers: usize,
    /// Queues of --topic the pullers pull from (0..queues).
    #[arg(long, default_value_t = 4)]
    pub queues: i32,
    /// Runs the attack's threads at this nice value (0: as started). On a small machine shared
    /// with the server and the legitimate load, the attacker then takes the CPU the others
    /// leave, instead of a third of it; its own CPU time is reported either way.
    #[arg(long, default_value_t = 0)]
    pub nice: i32,
    /// Seconds to keep sampling the server's VmRSS after the attack (with --pid).
    #[arg(long, default_value_t = 30)]
    pub after_s: u64,
    /// The oversize sends are written in slices of at most this many bytes, one `write` each
    /// (0: the whole 5 MiB frame in one). A kernel built without full preemption (`preempt=none`,
    /// as on the development VM) runs a `write` on a loopback socket to its end, or until the
    /// send buffer is full, without giving the CPU up: one write of the whole frame copied up to
    /// the 4 MiB send buffer at once and held a real-time broker or loadgen thread waiting on
    /// that CPU for up to 2-4 ms, whatever the attacker's nice value (README "Connections and
    /// memory"). In slices the kernel can switch away at the end of each, as a remote
    /// attacker's writes would not share the broker's CPU at all; the broker sees the same bytes.
    #[arg(long, default_value_t = WRITE_SLICE_BYTES)]
    pub write_slice_bytes: usize,
}

/// The default of [`AttackPlan::write_slice_bytes`]: a copy of ~10-20 µs.
pub const WRITE_SLICE_BYTES: usize = 64 * 1024;

/// The server's memory and descriptors at one moment (zeros without a PID).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub rss_kib: u64,
    pub fds: usize,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VmRSS {:.1} MiB, {} fds", mib(self.rss_kib), self.fds)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Reads VmRSS and the open descriptor count of `pid`.
pub fn sample(pid: Option<u32>) -> Sample {
    let Some(pid) = pid else {
        return Sample::default();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Sample { rss_kib, fds }
}

/// Runs `loadgen churn` (argv without the program name's `churn`), printing as it goes.
pub fn main(argv: impl IntoIterator<Item = String>) -> Result<(), String> {
    let ChurnArgs {
        target: args,
        pattern,
    } = ChurnArgs::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    let base = sample(args.pid);
    println!("churn against {}: start {base}", args.addr);
    match &pattern {
        Pattern::Rounds(plan) => {
            run_rounds(&args, plan, |i, s| println!("round {:>3}: {s}", i + 1))?;
        }
        Pattern::Sequential {
            count,
            every,
            pause_ms,
        } => {
            let pause = Duration::from_millis(*pause_ms);
            run_sequential(&args, *count, *every, pause, |n, s| {
                println!("{n:>8} connections: {s}")
            })?;
        }
        Pattern::Idle {
            connections,
            hold_s,
        } => {
            let held = open_many(args.addr, *connections)?;
            std::thread::sleep(Duration::from_secs(*hold_s));
            let during = sample(args.pid);
            let per = (during.rss_kib.saturating_sub(base.rss_kib)) as f64 / held.len() as f64;
            println!(
                "{} idle connections held: {during} (+{:.1} MiB, {per:.1} KiB each)",
                held.len(),
                mib(during.rss_kib.saturating_sub(base.rss_kib))
            );
            drop(held);
            let after = settle(args.pid, base.fds, Duration::from_secs(*hold_s));
            println!("closed: {after}");
        }
        Pattern::Attack(plan) => run_attack(&args, plan)?,
    }
    Ok(())
}

/// The `rounds` pattern; `report` gets each round's index and the sample after it.
pub fn run_rounds(
    args: &Target,
    plan: &RoundsPlan,
    mut report: impl FnMut(usize, Sample),
) -> Result<Vec<Sample>, String> {
    let base_fds = sample(args.pid).fds;
    let mut samples = Vec::with_capacity(plan.rounds);
    for round in 0..plan.rounds {
        let mut conns = open_many(args.addr, plan.connections)?;
        let kinds: Vec<Kind> = (0..conns.len())
            .map(|i| match plan.kind {
                Kind::Mixed => [Kind::Idle, Kind::Request, Kind::Invalid][i % 3],
                k => k,
            })
            .collect();
        let get_max = encode(
            &RemotingCommand::request(request::GET_MAX_OFFSET)
                .with_ext("topic", args.topic.as_str())
                .with_ext("queueId", "0"),
        );
        for (conn, kind) in conns.iter_mut().zip(&kinds) {
            let bytes: &[u8] = match kind {
                Kind::Request => &get_max,
                Kind::Invalid => &INVALID_FRAME,
                _ => continue,
            };
            conn.write_all(bytes)
                .map_err(|e| format!("round {}: write: {e}", round + 1))?;
        }
        for (conn, kind) in conns.iter_mut().zip(&kinds) {
            match kind {
                Kind::Request => {
                    read_frame(conn).map_err(|e| format!("round {}: {e}", round + 1))?;
                }
                Kind::Invalid => read_to_close(conn),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(plan.hold_ms));
        drop(conns);
        settle(args.pid, base_fds, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(plan.pause_ms));
        let s = sample(args.pid);
        report(round, s);
        samples.push(s);
    }
    Ok(samples)
}

/// The `sequential` pattern; `report` gets the count so far and a sample every `every`.
pub fn run_sequential(
    args: &Target,
    count: u64,
    every: u64,
    pause: Duration,
    mut report: impl FnMut(u64, Sample),
) -> Result<Vec<Sample>, String> {
    let base_fds = sample(args.pid).fds;
    let mut samples = Vec::new();
    for n in 1..=count {
        let conn = connect(args.addr)?;
        drop(conn);
        if n % every.max(1) == 0 {
            settle(args.pid, base_fds, Duration::from_secs(10));
            std::thread::sleep(pause);
            let s = sample(args.pid);
            report(n, s);
            samples.push(s);
        }
    }
    Ok(samples)
}

/// Opens `n` connections at once (kept open until the returned vector is dropped).
pub fn open_many(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    (0..n).map(|_| connect(addr)).collect()
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    Ok(conn)
}

/// Waits (bounded) until the server's descriptor count is back to `base` (it has closed its
/// side of every connection), then samples it.
pub fn settle(pid: Option<u32>, base_fds: usize, limit: Duration) -> Sample {
    let deadline = Instant::now() + limit;
    loop {
        let s = sample(pid);
        if pid.is_none() || s.fds <= base_fds || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A frame with serialize type 9 (only 0 and 1 exist): the server must close the connection.
const INVALID_FRAME: [u8; 12] = [0, 0, 0, 8, 9, 0, 0, 4, b'{', b'}', b' ', b' '];

fn encode(cmd: &RemotingCommand) -> Vec<u8> {
    let mut buf = BytesMut::new();
    cmd.encode(&mut buf).expect("encode a request");
    buf.to_vec()
}

/// Reads one whole frame (prefix and all) or fails.
fn read_frame(conn: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix)
        .map_err(|e| format!("no answer: {e}"))?;
    let mut rest = vec![0u8; u32::from_be_bytes(prefix) as usize];
    conn.read_exact(&mut rest)
        .map_err(|e| format!("truncated answer: {e}"))?;
    Ok(rest)
}

/// Reads until the server closes (or an error, or the read timeout).
fn read_to_close(conn: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
}

/// The `attack` pattern.
fn run_attack(args: &Target, plan: &AttackPlan) -> Result<(), String> {
    if plan.nice != 0 {
        renice_this_thread(plan.nice)?;
    }
    // As set here or inherited (`nice -n` around the whole process), for the report.
    // SAFETY: getpriority only reads the calling thread's nice value.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) };
    let cpu_at_start = crate::stats::thread_cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(AttackCounts::default());
    let base = sample(args.pid);
    let silent = open_many(args.addr, plan.silent)?;
    println!(
        "{} silent connections open: {}",
        silent.len(),
        sample(args.pid)
    );
    let mut threads = Vec::new();
    let bad_threads = 4u64;
    for t in 0..bad_threads {
        let (stop, counts, addr) = (Arc::clone(&stop), Arc::clone(&counts), args.addr);
        let per_thread = (plan.bad_per_second / bad_threads).max(1);
        threads.push(spawn_counted(move || {
            bad_loop(addr, t, per_thread, &stop, &counts)
        }));
    }
    if plan.oversize_per_second > 0 {
        let (stop, counts, addr) = (Arc::clone(&stop), Arc::clone(&counts), args.addr);
        let (rate, topic, slice) = (
            plan.oversize_per_second,
            args.topic.clone(),
            plan.write_slice_bytes,
        );
        threads.push(spawn_counted(move || {
            oversize_loop(addr, &topic, rate, slice, &stop, &counts)
        }));
    }
    for p in 0..plan.pullers {
        let (stop, counts, addr) = (Arc::clone(&stop), Arc::clone(&counts), args.addr);
        let (topic, queue) = (args.topic.clone(), p as i32 % plan.queues.max(1));
        threads.push(spawn_counted(move || {
            puller(addr, &topic, queue, &stop, &counts)
        }));
    }
    let start = Instant::now();
    let mut peak = base.rss_kib;
    while start.elapsed() < Duration::from_secs(plan.seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let s = sample(args.pid);
        peak = peak.max(s.rss_kib);
        println!(
            "attack {:>3} s: {s}; {} bad connections, {} oversize sends, {} pulls unread",
            start.elapsed().as_secs(),
            counts.bad.load(Ordering::Relaxed),
            counts.oversize.load(Ordering::Relaxed),
            counts.pulls.load(Ordering::Relaxed),
        );
    }
    stop.store(true, Ordering::Relaxed);
    drop(silent);
    let mut cpu_seconds = crate::stats::thread_cpu_seconds() - cpu_at_start;
    for t in threads {
        cpu_seconds += t.join().unwrap_or(0.0);
    }
    let ended = Instant::now();
    println!(
        "attack over: {} bad connections, {} oversize sends, {} pulls never read; \
         peak VmRSS {:.1} MiB (start {:.1} MiB); the attacker used {cpu_seconds:.2} s of CPU \
         (nice {})",
        counts.bad.load(Ordering::Relaxed),
        counts.oversize.load(Ordering::Relaxed),
        counts.pulls.load(Ordering::Relaxed),
        mib(peak),
        mib(base.rss_kib),
        nice,
    );
    if args.pid.is_some() {
        for _ in 0..plan.after_s {
            std::thread::sleep(Duration::from_secs(1));
            println!(
                "after {:>2} s: {}",
                ended.elapsed().as_secs(),
                sample(args.pid)
            );
        }
    }
    Ok(())
}

/// Spawns an attack thread that hands back the CPU time it used (user + system).
fn spawn_counted(work: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let start = crate::stats::thread_cpu_seconds();
        work();
        crate::stats::thread_cpu_seconds() - start
    })
}

/// Sets the calling thread's nice value (threads it starts afterwards inherit it). Linux keeps
/// a nice value per thread: PRIO_PROCESS with 0 names the calling thread only.
fn renice_this_thread(nice: i32) -> Result<(), String> {
    // SAFETY: setpriority only changes the scheduling priority of the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) };
    if rc != 0 {
        return Err(format!(
            "cannot set nice {nice}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[derive(Default)]
struct AttackCounts {
    bad: AtomicU64,
    oversize: AtomicU64,
    pulls: AtomicU64,
}

/// Opens `per_second` connections a second until `stop` is set, handing each (and its number,
/// from 1) to `each`.
fn paced_connections(
    addr: SocketAddr,
    per_second: u64,
    stop: &AtomicBool,
    mut each: impl FnMut(TcpStream, u64),
) {
    let start = Instant::now();
    let mut done = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(done as f64 / per_second.max(1) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        done += 1;
        if let Ok(conn) = connect(addr) {
            each(conn, done);
        }
    }
}

/// Short-lived bad connections, cycling through the kinds of bad input.
fn bad_loop(addr: SocketAddr, seed: u64, per_second: u64, stop: &AtomicBool, c: &AttackCounts) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let malformed = {
        let header = br#"{"code":34,"flag":0,"language":"JAVA","opaque":1,"#;
        let mut f = Vec::new();
        f.extend_from_slice(&((4 + header.len()) as u32).to_be_bytes());
        f.extend_from_slice(&(header.len() as u32).to_be_bytes());
        f.extend_from_slice(header);
        f
    };
    paced_connections(addr, per_second, stop, |mut conn, done| {
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let bytes: Vec<u8> = match done % 4 {
            // Random bytes.
            0 => (0..256)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect(),
            // A length prefix far over the frame limit.
            1 => vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 8],
            // Just under the limit, then a little of it and a close.
            2 => {
                let mut f = (16 * 1024 * 1024 - 1u32).to_be_bytes().to_vec();
                f.extend_from_slice(&8u32.to_be_bytes());
                f.resize(16 * 1024, b'x');
                f
            }
            // A JSON header cut short.
            _ => malformed.clone(),
        };
        let _ = conn.write_all(&bytes);
        if done % 4 != 2 {
            read_to_close(&mut conn);
        }
        let _ = conn.shutdown(Shutdown::Both);
        c.bad.fetch_add(1, Ordering::Relaxed);
    });
}

/// The body of the attack's oversize sends: over the default 4 MiB maxMessageSize.
pub const OVERSIZE_BODY_BYTES: usize = 5 * 1024 * 1024;

/// A SEND_MESSAGE_V2 to `topic` queue 0 with a body of `body_bytes` (the attack's oversize send).
pub fn oversize_send(topic: &str, body_bytes: usize) -> RemotingCommand {
    let header = SendRequest {
        producer_group: "churn_attack".into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 0,
        sys_flag: 0,
        born_timestamp: 0,
        flag: 0,
        properties: String::new(),
        reconsume_times: 0,
        unit_mode: false,
        max_reconsume_times: None,
        batch: false,
    };
    header
        .to_command(request::SEND_MESSAGE_V2)
        .with_body(vec![b'o'; body_bytes])
}

/// Sends with a body over maxMessageSize (answered MESSAGE_ILLEGAL), one connection each,
/// each frame written in writes of at most `slice` bytes (0: one write).
fn oversize_loop(
    addr: SocketAddr,
    topic: &str,
    per_second: u64,
    slice: usize,
    stop: &AtomicBool,
    c: &AttackCounts,
) {
    let frame = encode(&oversize_send(topic, OVERSIZE_BODY_BYTES));
    let slice = if slice == 0 { frame.len() } else { slice };
    paced_connections(addr, per_second, stop, |mut conn, _| {
        if frame.chunks(slice).all(|part| conn.write_all(part).is_ok()) {
            let _ = read_frame(&mut conn);
        }
        c.oversize.fetch_add(1, Ordering::Relaxed);
    });
}

/// A PULL_MESSAGE of up to 32 messages from offset 0 of `topic`'s `queue`, subscription in
/// the request, answered at once (no long poll).
pub fn pull_frame(topic: &str, queue: i32, opaque: i32) -> Vec<u8> {
    let mut cmd = RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", "churn_attack")
        .with_ext("topic", topic)
        .with_ext("queueId", queue.to_string())
        .with_ext("queueOffset", "0")
        .with_ext("maxMsgNums", "32")
        .with_ext("sysFlag", "4")
        .with_ext("commitOffset", "0")
        .with_ext("suspendTimeoutMillis", "0")
        .with_ext("subscription", "*")
        .with_ext("subVersion", "0")
        .with_ext("expressionType", "TAG");
    cmd.opaque = opaque;
    encode(&cmd)
}

/// Pipelines PULL_MESSAGE from offset 0 on one connection and never reads the answers; the
/// writes block once the server stops reading us (its back-pressure).
fn puller(addr: SocketAddr, topic: &str, queue: i32, stop: &AtomicBool, c: &AttackCounts) {
    let Ok(mut conn) = connect(addr) else {
        return;
    };
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let mut opaque = 0i32;
    let mut blocked = false;
    while !stop.load(Ordering::Relaxed) {
        if blocked {
            // The server stopped reading us (a frame may be cut short by the timeout, so
            // nothing more is written); hold the connection until the end.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        opaque += 1;
        match conn.write_all(&pull_frame(topic, queue, opaque)) {
            Ok(()) => {
                c.pulls.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked = true;
            }
            Err(_) => return,
        }
    }
}
