//! `loadgen timer`: timer messages (RocketMQ 5's `TIMER_DELIVER_MS`) against one broker.
//! Sends `--count` timers all due at the same whole second (`--lead-s` ahead; with
//! `--spread-s N` spread evenly over the N whole seconds from there), measures the broker's CPU
//! (utime+stime from /proc/PID/stat) over `--idle-s` while they wait and nothing is due, then,
//! once they came due, pulls every queue and reports the delivery lateness of each copy (its
//! store timestamp minus the asked time: p50/p99/max, and the spread), what came twice or not
//! at all, and the broker's VmRSS (with the timers pending, and the peak). `--pending-only`
//! stops after the idle measurement (memory and idle CPU with millions pending, without
//! waiting for them).
//! Blocking sockets through `ringmq::client`, one thread per sender; the broker's clock and
//! ours are the same machine's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::remoting::response;

use crate::churn::sample;

/// Timers due in the same second (see the module docs).
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen timer")]
pub struct TimerArgs {
    /// The broker's address.
    #[arg(long, default_value = "127.0.0.1:10911")]
    pub addr: String,
    /// The broker's PID (CPU time and VmRSS from /proc/PID).
    #[arg(long)]
    pub pid: Option<u32>,
    #[arg(short = 't', long, default_value = "TimerBench")]
    pub topic: String,
    /// Queues of the topic the timers go to (round robin).
    #[arg(long, default_value_t = 4)]
    pub queues: i32,
    /// Timers in all.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Sender threads (one connection each).
    #[arg(long, default_value_t = 8)]
    pub senders: u64,
    /// Seconds from the start to the due time (must cover the sends and --idle-s).
    #[arg(long, default_value_t = 60)]
    pub lead_s: u64,
    /// Seconds of broker CPU measured with every timer pending and none due.
    #[arg(long, default_value_t = 10)]
    pub idle_s: u64,
    /// Body bytes.
    #[arg(short = 's', long, default_value_t = 128)]
    pub size: usize,
    /// Spread the due times evenly over this many whole seconds from the first (0: all due in
    /// the same second).
    #[arg(long, default_value_t = 0)]
    pub spread_s: u64,
    /// Stop after the idle measurement, leaving the timers pending.
    #[arg(long)]
    pub pending_only: bool,
}

/// When timer `id` of `count` is due: the first due second plus its share of the spread.
fn due_of(args: &TimerArgs, first_ms: i64, id: u64) -> u64 {
    let second = (id as u128 * args.spread_s as u128 / args.count.max(1) as u128) as i64;
    (first_ms + second * 1_000) as u64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// utime + stime of `pid` in ms.
fn cpu_ms(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let (utime, stime) = (fields.get(11), fields.get(12));
    (utime.unwrap_or(&0) + stime.unwrap_or(&0)) * 1_000 / ticks
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Runs `loadgen timer` (argv without the program name's `timer`).
pub fn main(argv: impl IntoIterator<Item = String>) -> Result<(), String> {
    let args = TimerArgs::parse_from(std::iter::once("loadgen timer".to_string()).chain(argv));
    let timeout = Duration::from_secs(10);
    let mut conn = Connection::connect(&args.addr, timeout).map_err(|e| e.to_string())?;
    // The topic and where each queue ends now (delivered copies land after it).
    let mut start_offsets = Vec::new();
    for q in 0..args.queues {
        let warm = message(&args, q, 0, u64::MAX);
        conn.send_message("loadgen-timer", &warm)
            .map_err(|e| format!("creating the topic: {e}"))?;
        let pulled = conn
            .pull("loadgen-timer", &args.topic, q, 0, 1, "*", 0)
            .map_err(|e| e.to_string())?;
        start_offsets.push(pulled.max_offset);
    }
    let due_ms = (now_ms() / 1_000 + args.lead_s as i64) * 1_000;
    println!(
        "sending {} timers due at {due_ms} ({} s ahead, spread over {} s), {} senders; broker {}",
        args.count,
        args.lead_s,
        args.spread_s.max(1),
        args.senders,
        sample(args.pid)
    );
    let peak_kib = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (Arc::clone(&peak_kib), Arc::clone(&stop), args.pid);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(sample(pid).rss_kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let sent_at = Instant::now();
    let senders: Vec<_> = (0..args.senders)
        .map(|s| {
            let args = args.clone();
            std::thread::spawn(move || -> Result<u64, String> {
                let mut conn =
                    Connection::connect(&args.addr, timeout).map_err(|e| e.to_string())?;
                let mut ok = 0;
                for id in (s..args.count).step_by(args.senders as usize) {
                    let q = (id % args.queues as u64) as i32;
                    let r = conn
                        .send_message(
                            "loadgen-timer",
                            &message(&args, q, id, due_of(&args, due_ms, id)),
                        )
                        .map_err(|e| format!("timer {id}: {e}"))?;
                    ok += u64::from(r.code == response::SUCCESS);
                }
                Ok(ok)
            })
        })
        .collect();
    let mut acked = 0;
    for s in senders {
        acked += s.join().map_err(|_| "a sender panicked")??;
    }
    let send_s = sent_at.elapsed().as_secs_f64();
    println!(
        "sent {acked} acknowledged in {send_s:.1} s ({:.0}/s); broker {}",
        acked as f64 / send_s,
        sample(args.pid)
    );
    let idle_end = now_ms() + args.idle_s as i64 * 1_000;
    if idle_end + 500 > due_ms {
        return Err(format!(
            "the sends took too long for --idle-s {} before the due time: raise --lead-s",
            args.idle_s
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = cpu_ms(args.pid);
    std::thread::sleep(Duration::from_secs(args.idle_s));
    let idle_cpu = cpu_ms(args.pid) - cpu_before;
    println!(
        "idle with {acked} timers pending: broker CPU {idle_cpu} ms over {} s; {}",
        args.idle_s,
        sample(args.pid)
    );
    if args.pending_only {
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        println!(
            "broker peak VmRSS {:.1} MiB; {acked} timers left pending",
            peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
        );
        return Ok(());
    }
    let last_due = due_of(&args, due_ms, args.count.saturating_sub(1)) as i64;
    let wait = (last_due - now_ms()).max(0) as u64;
    let cpu_due = cpu_ms(args.pid);
    std::thread::sleep(Duration::from_millis(wait + 5_000));
    let cpu_delivery = cpu_ms(args.pid) - cpu_due;
    let (lateness, counts) = collect(&mut conn, &args, &start_offsets)?;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    report(&args, acked, due_ms, lateness, counts, cpu_delivery);
    println!(
        "broker peak VmRSS {:.1} MiB; now {}",
        peak_kib.load(Ordering::Relaxed) as f64 / 1024.0,
        sample(args.pid)
    );
    Ok(())
}

fn message(args: &TimerArgs, queue: i32, id: u64, due_ms: u64) -> OutgoingMessage {
    let mut properties = Properties::default();
    if due_ms != u64::MAX {
        properties.set("TIMER_DELIVER_MS", &due_ms.to_string());
    }
    let mut body = format!("timer-{id}-").into_bytes();
    body.resize(args.size.max(body.len()), b'x');
    OutgoingMessage {
        topic: args.topic.clone(),
        queue_id: queue,
        body,
        properties,
        flag: 0,
    }
}

/// Every copy after the start offsets: (lateness ms of each, times each id came).
fn collect(
    conn: &mut Connection,
    args: &TimerArgs,
    start: &[i64],
) -> Result<(Vec<i64>, HashMap<u64, u32>), String> {
    let mut lateness = Vec::new();
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for (q, from) in start.iter().enumerate() {
        let mut offset = *from;
        loop {
            let r = conn
                .pull("loadgen-timer", &args.topic, q as i32, offset, 32, "*", 0)
                .map_err(|e| e.to_string())?;
            if r.code != response::SUCCESS {
                break;
            }
            for m in &r.messages {
                let text = String::from_utf8_lossy(&m.body[..m.body.len().min(32)]).to_string();
                let id = text.split('-').nth(1).and_then(|i| i.parse::<u64>().ok());
                let asked: Option<i64> = m
                    .properties
                    .get("TIMER_DELIVER_MS")
                    .and_then(|v| v.parse().ok());
                if let (Some(id), Some(asked)) = (id, asked) {
                    *counts.entry(id).or_default() += 1;
                    lateness.push(m.store_timestamp - asked);
                }
            }
            offset = r.next_begin_offset;
        }
    }
    lateness.sort_unstable();
    Ok((lateness, counts))
}

fn report(
    args: &TimerArgs,
    acked: u64,
    due_ms: i64,
    lateness: Vec<i64>,
    counts: HashMap<u64, u32>,
    cpu_delivery: u64,
) {
    let twice = counts.values().filter(|n| **n > 1).count();
    let missing = (0..args.count)
        .filter(|id| !counts.contains_key(id))
        .count();
    println!(
        "due {due_ms}: {} delivered ({acked} acknowledged), {missing} missing, {twice} more than once",
        lateness.len()
    );
    if let (Some(first), Some(last)) = (lateness.first(), lateness.last()) {
        println!(
            "lateness (copy's store time - asked time) ms: min {first} p50 {} p99 {} max {last}; \
             spread {} ms; broker CPU from the due time on {cpu_delivery} ms",
            percentile(&lateness, 0.5),
            percentile(&lateness, 0.99),
            last - first
        );
    }
}
