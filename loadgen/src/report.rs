//! On the main thread: merges the executors' per-second ticks ([`Aggregator`]), prints a line a
//! second (and a progress bar when stdout is a terminal), and builds the final [`Report`] whose
//! JSON fields carry their units.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Args, Scenario};

/// `println!` that ignores a closed stdout (`loadgen … | head` must not stop the run).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use crate::stats::{Event, Interval};

/// One printed second.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Seconds since the start, this one included (1 = the first second).
    pub second: u64,
    /// True for warm-up seconds and for the drain after the measured window.
    pub unmeasured: bool,
    pub sent_per_second: u64,
    pub failed_per_second: u64,
    pub p50_latency_us: u64,
    pub p99_latency_us: u64,
    pub p999_latency_us: u64,
    pub max_latency_us: u64,
    pub consumed_per_second: u64,
    pub e2e_p50_latency_us: u64,
    pub e2e_p99_latency_us: u64,
    pub e2e_max_latency_us: u64,
}

/// Merges ticks; a second is printed once every executor still running has reported it.
pub struct Aggregator {
    /// Last second each executor reported.
    last: HashMap<usize, u64>,
    done: HashMap<usize, bool>,
    pending: BTreeMap<u64, Interval>,
    /// Seconds `warmup + 1 ..= measured_end` are measured.
    warmup_seconds: u64,
    measured_end: u64,
    /// Counts of the whole run (warm-up and drain included).
    pub total: Interval,
    /// Counts and latencies of the measured seconds.
    pub measured: Interval,
    pub rows: Vec<Row>,
    printer: Printer,
}

impl Aggregator {
    /// An aggregator for a run of `args`.
    pub fn new(args: &Args) -> Aggregator {
        Aggregator {
            last: HashMap::new(),
            done: HashMap::new(),
            pending: BTreeMap::new(),
            warmup_seconds: args.warmup_seconds,
            measured_end: args.warmup_seconds + args.duration_seconds,
            total: Interval::default(),
            measured: Interval::default(),
            rows: Vec::new(),
            printer: Printer::new(args),
        }
    }

    /// Expects events from executor `id`.
    pub fn register(&mut self, id: usize) {
        self.last.insert(id, 0);
        self.done.insert(id, false);
    }

    /// True when every executor of `ids` has said it is done.
    pub fn all_done(&self, mut ids: impl Iterator<Item = usize>) -> bool {
        ids.all(|id| self.done.get(&id).copied().unwrap_or(true))
    }

    /// Takes in one event and prints whatever seconds it completes.
    pub fn add(&mut self, event: Event) {
        match event {
            Event::Tick {
                executor,
                index,
                interval,
            } => {
                self.last.insert(executor, index);
                self.pending.entry(index).or_default().merge(&interval);
            }
            Event::Done { executor } => {
                self.done.insert(executor, true);
            }
        }
        // With nothing running (between the load and the drain), the last partial second is
        // held back: the next executors' first tick may add to it.
        let Some(complete) = self
            .last
            .iter()
            .filter(|(id, _)| !self.done[*id])
            .map(|(_, last)| *last)
            .min()
        else {
            return;
        };
        self.fold_through(complete);
    }

    /// Folds and prints every second still held, at the end of the run.
    pub fn finish(&mut self) {
        self.fold_through(u64::MAX);
    }

    fn fold_through(&mut self, complete: u64) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > complete {
                break;
            }
            let (second, interval) = entry.remove_entry();
            self.fold(second, interval);
        }
    }

    fn fold(&mut self, second: u64, interval: Interval) {
        let measured = second > self.warmup_seconds && second <= self.measured_end;
        self.total.merge(&interval);
        if measured {
            self.measured.merge(&interval);
        }
        let row = row(second, !measured, &interval);
        self.printer.line(&row, self.measured_end);
        self.rows.push(row);
    }

    /// Redraws the progress bar (terminal only).
    pub fn progress(&self, elapsed_seconds: f64) {
        self.printer.progress(elapsed_seconds, self.measured_end);
    }

    /// Clears the progress bar before the summary.
    pub fn clear_progress(&self) {
        self.printer.clear();
    }
}

fn row(second: u64, unmeasured: bool, i: &Interval) -> Row {
    let (s, e) = (&i.send_latency_us, &i.e2e_latency_us);
    Row {
        second,
        unmeasured,
        sent_per_second: i.sent,
        failed_per_second: i.failed,
        p50_latency_us: quantile(s, 0.5),
        p99_latency_us: quantile(s, 0.99),
        p999_latency_us: quantile(s, 0.999),
        max_latency_us: s.max(),
        consumed_per_second: i.consumed,
        e2e_p50_latency_us: quantile(e, 0.5),
        e2e_p99_latency_us: quantile(e, 0.99),
        e2e_max_latency_us: e.max(),
    }
}

fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    match h.is_empty() {
        true => 0,
        false => h.value_at_quantile(q),
    }
}

/// Writes the per-second lines and the progress bar.
struct Printer {
    quiet: bool,
    tty: bool,
    sends: bool,
    pulls: bool,
}

impl Printer {
    fn new(args: &Args) -> Printer {
        Printer {
            quiet: args.quiet,
            tty: std::io::stdout().is_terminal(),
            sends: args.produces(),
            pulls: args.consumes_live() || args.flush_check,
        }
    }

    fn line(&self, r: &Row, measured_end: u64) {
        if self.quiet {
            return;
        }
        let mut line = format!("[{:>4} s]", r.second);
        if self.sends {
            line += &format!(
                " sent/s {:>9} failed/s {:>6} | latency us p50 {:>7} p99 {:>7} p999 {:>7} \
                 max {:>7}",
                thousands(r.sent_per_second),
                thousands(r.failed_per_second),
                thousands(r.p50_latency_us),
                thousands(r.p99_latency_us),
                thousands(r.p999_latency_us),
                thousands(r.max_latency_us),
            );
        }
        if self.pulls {
            line += &format!(
                " | consumed/s {:>9} e2e us p50 {:>7} p99 {:>7} max {:>7}",
                thousands(r.consumed_per_second),
                thousands(r.e2e_p50_latency_us),
                thousands(r.e2e_p99_latency_us),
                thousands(r.e2e_max_latency_us),
            );
        }
        if r.unmeasured {
            line += if r.second > measured_end {
                " (drain)"
            } else {
                " (warm-up)"
            };
        }
        self.clear();
        say!("{line}");
    }

    fn progress(&self, elapsed_seconds: f64, total_seconds: u64) {
        if !self.tty || self.quiet {
            return;
        }
        const WIDTH: usize = 30;
        let total = total_seconds.max(1) as f64;
        let done = ((elapsed_seconds / total).min(1.0) * WIDTH as f64) as usize;
        let bar = format!("{}{}", "#".repeat(done), ".".repeat(WIDTH - done));
        let phase = if elapsed_seconds > total {
            " draining"
        } else {
            ""
        };
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2K[{bar}] {elapsed_seconds:.0}/{total_seconds} s{phase}"
        );
        let _ = out.flush();
    }

    fn clear(&self) {
        if self.tty && !self.quiet {
            let _ = write!(std::io::stdout(), "\r\x1b[2K");
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The run's result; serialised as the `--json` file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub topic: String,
    pub message_size_bytes: usize,
    pub batch_messages: usize,
    pub concurrency_requests: usize,
    pub connections_per_broker: usize,
    pub executors: usize,
    pub open_loop: bool,
    pub rate_target_messages_per_second: Option<u64>,
    pub warmup_seconds: u64,
    pub duration_seconds: u64,
    pub keys: bool,
    pub tags: bool,
    pub write_queues: usize,
    pub read_queues: usize,
    /// Messages acknowledged in the measured seconds, per second.
    pub throughput_messages_per_second: f64,
    /// Body bytes acknowledged in the measured seconds, per second.
    pub throughput_bytes_per_second: f64,
    /// Messages acknowledged in the measured seconds.
    pub measured_messages: u64,
    /// Messages whose send was issued inside the measured window (open loop: whose intended
    /// send time fell in it) and was acknowledged, whenever the acknowledgement arrived (the
    /// requests still in flight at the end are waited for). Unlike `measured_messages`, a
    /// backlog of acknowledgements landing just after the window (or one from the warm-up
    /// landing inside it) moves nothing: what the server did with the window's sends.
    pub window_sent_messages: u64,
    /// Messages whose send was issued inside the measured window, whatever became of them.
    pub window_issued_messages: u64,
    /// `window_sent_messages` per second of the window.
    pub window_throughput_messages_per_second: f64,
    /// Messages acknowledged with SUCCESS over the whole run (warm-up included).
    pub sent_messages: u64,
    /// Messages whose send failed over the whole run.
    pub failed_messages: u64,
    /// Failed messages by response code (decimal code → messages).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Failed messages without a response, by cause (timeout, connect, closed).
    pub client_errors: BTreeMap<String, u64>,
    /// Successful requests whose latency was measured (a batch is one request).
    pub latency_requests: u64,
    pub mean_latency_us: f64,
    pub p50_latency_us: u64,
    pub p90_latency_us: u64,
    pub p99_latency_us: u64,
    pub p999_latency_us: u64,
    pub max_latency_us: u64,
    /// Deliveries of this run's messages (all loadgen messages for consume), duplicates
    /// included, over the whole run.
    pub consumed_messages: u64,
    pub consume_throughput_messages_per_second: f64,
    pub e2e_p50_latency_us: u64,
    pub e2e_p99_latency_us: u64,
    pub e2e_p999_latency_us: u64,
    pub e2e_max_latency_us: u64,
    pub pull_errors_by_code: BTreeMap<String, u64>,
    pub pull_client_errors: BTreeMap<String, u64>,
    pub flush_checked: bool,
    /// Deliveries of a message already delivered.
    pub duplicates: u64,
    /// Acknowledged messages never delivered (`null` without --flush-check).
    pub lost: Option<u64>,
    /// Delivered messages whose send was not acknowledged (failed or timed out, yet stored).
    pub unacknowledged_delivered: Option<u64>,
    /// Delivered messages that are not this run's.
    pub foreign_messages: u64,
    /// CPU time of loadgen's own threads (getrusage per thread), user + system.
    pub loadgen_cpu_seconds: f64,
    /// `loadgen_cpu_seconds` over the wall time: cores loadgen kept busy.
    pub loadgen_cpu_cores: f64,
    pub loadgen_cpu_us_per_message: f64,
    pub wall_seconds: f64,
    pub intervals: Vec<Row>,
}

impl Report {
    /// The settings part of a report, with every measurement zero.
    pub fn for_args(args: &Args, write_queues: usize, read_queues: usize) -> Report {
        Report {
            scenario: args.scenario,
            topic: args.topic.clone(),
            message_size_bytes: args.size_bytes,
            batch_messages: args.batch_messages,
            concurrency_requests: args.concurrency,
            connections_per_broker: args.connections,
            executors: args.executors,
            open_loop: args.rate_messages_per_second.is_some(),
            rate_target_messages_per_second: args.rate_messages_per_second,
            warmup_seconds: args.warmup_seconds,
            duration_seconds: args.duration_seconds,
            keys: args.keys,
            tags: args.tags,
            write_queues,
            read_queues,
            throughput_messages_per_second: 0.0,
            throughput_bytes_per_second: 0.0,
            measured_messages: 0,
            window_sent_messages: 0,
            window_issued_messages: 0,
            window_throughput_messages_per_second: 0.0,
            sent_messages: 0,
            failed_messages: 0,
            errors_by_code: BTreeMap::new(),
            client_errors: BTreeMap::new(),
            latency_requests: 0,
            mean_latency_us: 0.0,
            p50_latency_us: 0,
            p90_latency_us: 0,
            p99_latency_us: 0,
            p999_latency_us: 0,
            max_latency_us: 0,
            consumed_messages: 0,
            consume_throughput_messages_per_second: 0.0,
            e2e_p50_latency_us: 0,
            e2e_p99_latency_us: 0,
            e2e_p999_latency_us: 0,
            e2e_max_latency_us: 0,
            pull_errors_by_code: BTreeMap::new(),
            pull_client_errors: BTreeMap::new(),
            flush_checked: args.flush_check,
            duplicates: 0,
            lost: None,
            unacknowledged_delivered: None,
            foreign_messages: 0,
            loadgen_cpu_seconds: 0.0,
            loadgen_cpu_cores: 0.0,
            loadgen_cpu_us_per_message: 0.0,
            wall_seconds: 0.0,
            intervals: Vec::new(),
        }
    }

    /// Fills in the counts and latencies of `agg`.
    pub fn add_measurements(&mut self, agg: &Aggregator) {
        let (m, t) = (&agg.measured, &agg.total);
        let seconds = self.duration_seconds as f64;
        self.measured_messages = m.sent;
        self.window_sent_messages = t.sent_issued_in_window;
        self.window_issued_messages = t.issued_in_window;
        self.window_throughput_messages_per_second = t.sent_issued_in_window as f64 / seconds;
        self.throughput_messages_per_second = m.sent as f64 / seconds;
        self.throughput_bytes_per_second =
            (m.sent as f64 * self.message_size_bytes as f64) / seconds;
        self.sent_messages = t.sent;
        self.failed_messages = t.failed;
        self.errors_by_code = by_name(&t.errors_by_code);
        self.client_errors = by_name(&t.client_errors);
        let s = &m.send_latency_us;
        self.latency_requests = s.len();
        self.mean_latency_us = if s.is_empty() { 0.0 } else { s.mean() };
        self.p50_latency_us = quantile(s, 0.5);
        self.p90_latency_us = quantile(s, 0.9);
        self.p99_latency_us = quantile(s, 0.99);
        self.p999_latency_us = quantile(s, 0.999);
        self.max_latency_us = s.max();
        self.consumed_messages = t.consumed;
        self.consume_throughput_messages_per_second = m.consumed as f64 / seconds;
        let e = &m.e2e_latency_us;
        self.e2e_p50_latency_us = quantile(e, 0.5);
        self.e2e_p99_latency_us = quantile(e, 0.99);
        self.e2e_p999_latency_us = quantile(e, 0.999);
        self.e2e_max_latency_us = e.max();
        self.pull_errors_by_code = by_name(&t.pull_errors_by_code);
        self.pull_client_errors = by_name(&t.pull_client_errors);
        self.intervals = agg.rows.clone();
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write_json(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
    }

    /// Prints the human-readable summary.
    pub fn print_summary(&self) {
        let loop_kind = match self.rate_target_messages_per_second {
            Some(rate) => format!("open loop at {} msgs/s", thousands(rate)),
            None => "closed loop".into(),
        };
        say!(
            "loadgen {:?}: {} s measured after {} s warm-up, {} B bodies, batch {}, {} in flight, \
             {} connection(s) per broker, {} executor(s), {loop_kind}",
            self.scenario,
            self.duration_seconds,
            self.warmup_seconds,
            self.message_size_bytes,
            self.batch_messages,
            self.concurrency_requests,
            self.connections_per_broker,
            self.executors
        );
        if self.scenario != Scenario::Consume {
            self.print_sends();
        }
        if self.consumed_messages > 0 || self.scenario != Scenario::Produce || self.flush_checked {
            self.print_pulls();
        }
        say!(
            "  loadgen cpu   {:.2} s ({:.2} cores, {:.2} us per message), wall {:.1} s",
            self.loadgen_cpu_seconds,
            self.loadgen_cpu_cores,
            self.loadgen_cpu_us_per_message,
            self.wall_seconds
        );
    }

    fn print_sends(&self) {
        say!(
            "  throughput    {} msgs/s ({:.1} MB/s of bodies)",
            thousands(self.throughput_messages_per_second as u64),
            self.throughput_bytes_per_second / 1e6
        );
        say!(
            "  sent          {} acknowledged, {} failed; of the {} issued in the measured \
             window, {} acknowledged ({} msgs/s)",
            thousands(self.sent_messages),
            thousands(self.failed_messages),
            thousands(self.window_issued_messages),
            thousands(self.window_sent_messages),
            thousands(self.window_throughput_messages_per_second as u64)
        );
        say!(
            "  latency us    p50 {}  p90 {}  p99 {}  p999 {}  max {}  (mean {:.0}, {} requests)",
            thousands(self.p50_latency_us),
            thousands(self.p90_latency_us),
            thousands(self.p99_latency_us),
            thousands(self.p999_latency_us),
            thousands(self.max_latency_us),
            self.mean_latency_us,
            thousands(self.latency_requests)
        );
        print_errors("send errors", &self.errors_by_code, &self.client_errors);
    }

    fn print_pulls(&self) {
        say!(
            "  consumed      {} deliveries ({} msgs/s measured), e2e us p50 {}  p99 {}  \
             p999 {}  max {}",
            thousands(self.consumed_messages),
            thousands(self.consume_throughput_messages_per_second as u64),
            thousands(self.e2e_p50_latency_us),
            thousands(self.e2e_p99_latency_us),
            thousands(self.e2e_p999_latency_us),
            thousands(self.e2e_max_latency_us)
        );
        print_errors(
            "pull errors",
            &self.pull_errors_by_code,
            &self.pull_client_errors,
        );
        if let (Some(lost), Some(unacked)) = (self.lost, self.unacknowledged_delivered) {
            say!(
                "  flush check   lost {lost}, duplicates {}, delivered but not acknowledged \
                 {unacked}, foreign {}",
                self.duplicates,
                self.foreign_messages
            );
        } else {
            say!(
                "  duplicates    {} (foreign messages {})",
                self.duplicates,
                self.foreign_messages
            );
        }
    }
}

fn by_name<K: ToString>(counts: &BTreeMap<K, u64>) -> BTreeMap<String, u64> {
    counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn print_errors(what: &str, codes: &BTreeMap<String, u64>, client: &BTreeMap<String, u64>) {
    if codes.is_empty() && client.is_empty() {
        return;
    }
    let mut parts: Vec<String> = codes
        .iter()
        .map(|(code, n)| {
            let name = code
                .parse()
                .ok()
                .and_then(ringmq::remoting::response::name)
                .unwrap_or("UNKNOWN");
            format!("{name} ({code}): {}", thousands(*n))
        })
        .collect();
    parts.extend(
        client
            .iter()
            .map(|(kind, n)| format!("client {kind}: {}", thousands(*n))),
    );
    say!("  {what:<13} {}", parts.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
