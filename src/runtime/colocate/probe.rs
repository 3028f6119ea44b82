//! What co-location measures, read from `/proc` with one positioned read each (files opened
//! once, buffers allocated once): a shard thread's CPU time, run-queue wait and runs
//! ([`ThreadClock`], `/proc/thread-self/schedstat`), and how idle each CPU was
//! ([`CpuIdle`], `/proc/stat`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

/// A thread's schedstat counters: CPU time (ns), run-queue wait (ns), times put on a CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub ran_ns: u64,
    pub waited_ns: u64,
    pub runs: u64,
}

impl SchedStat {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: SchedStat) -> SchedStat {
        SchedStat {
            ran_ns: self.ran_ns.saturating_sub(earlier.ran_ns),
            waited_ns: self.waited_ns.saturating_sub(earlier.waited_ns),
            runs: self.runs.saturating_sub(earlier.runs),
        }
    }
}

/// The calling thread's schedstat file (open it on the thread it measures).
pub struct ThreadClock(File);

impl ThreadClock {
    /// Opens the calling thread's file; `None` on kernels without it.
    pub fn open() -> Option<Self> {
        File::open("/proc/thread-self/schedstat")
            .ok()
            .map(ThreadClock)
    }

    /// The counters so far.
    pub fn read(&self) -> Option<SchedStat> {
        let mut buf = [0u8; 128];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        parse_schedstat(std::str::from_utf8(&buf[..n]).ok()?)
    }
}

/// `"<ran ns> <waited ns> <runs>\n"`.
fn parse_schedstat(text: &str) -> Option<SchedStat> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(SchedStat {
        ran_ns: fields.next()??,
        waited_ns: fields.next()??,
        runs: fields.next()??,
    })
}

/// Weight of the newest window in the smoothed idle share (`/proc/stat` counts in 10 ms
/// ticks, coarse against a 25 ms window: the average spans about four).
const IDLE_SMOOTHING: f64 = 0.25;

/// How idle each of a set of CPUs was, smoothed over the last windows.
pub struct CpuIdle {
    file: File,
    /// Holds the `cpuN` lines (they come first in the file); reused for every read.
    buf: Vec<u8>,
    ticks_per_s: f64,
    /// Per CPU watched: its number, idle+iowait ticks at the last read, smoothed idle share
    /// (`None` until the first window).
    cpus: Vec<(usize, u64, Option<f64>)>,
    last: Instant,
}

impl CpuIdle {
    /// Watches `cpus`; `None` without a readable `/proc/stat` listing each of them.
    pub fn open(cpus: &[usize]) -> Option<Self> {
        // SAFETY: sysconf reads a constant of the system.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let max_cpu = cpus.iter().copied().max()?;
        let mut idle = CpuIdle {
            file: File::open("/proc/stat").ok()?,
            // The `cpu` line and one per CPU up to the highest watched (~60 bytes each now,
            // ten 20-digit counters at most).
            buf: vec![0; 256 * (max_cpu + 2)],
            ticks_per_s: (ticks_per_s > 0).then_some(ticks_per_s as f64)?,
            cpus: cpus.iter().map(|&c| (c, 0, None)).collect(),
            last: Instant::now(),
        };
        let ticks = idle.read_ticks()?;
        for (entry, t) in idle.cpus.iter_mut().zip(ticks) {
            entry.1 = t;
        }
        Some(idle)
    }

    /// Reads the counters and returns each watched CPU's smoothed idle share (0.0..=1.0, in
    /// the order given to [`CpuIdle::open`]); `None` when the file could not be read.
    pub fn sample(&mut self) -> Option<Vec<f64>> {
        let ticks = self.read_ticks()?;
        let now = Instant::now();
        let span_s = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut shares = Vec::with_capacity(self.cpus.len());
        for (entry, t) in self.cpus.iter_mut().zip(ticks) {
            let idle_s = t.saturating_sub(entry.1) as f64 / self.ticks_per_s;
            entry.1 = t;
            let share = (idle_s / span_s.max(1e-6)).clamp(0.0, 1.0);
            let smoothed = match entry.2 {
                Some(old) => old + IDLE_SMOOTHING * (share - old),
                None => share,
            };
            entry.2 = Some(smoothed);
            shares.push(smoothed);
        }
        Some(shares)
    }

    /// Idle+iowait ticks of each watched CPU.
    fn read_ticks(&mut self) -> Option<Vec<u64>> {
        let n = self.file.read_at(&mut self.buf, 0).ok()?;
        let text = std::str::from_utf8(&self.buf[..n]).ok()?;
        self.cpus
            .iter()
            .map(|&(cpu, _, _)| idle_ticks(text, cpu))
            .collect()
    }
}

/// Idle plus iowait ticks of `cpu` from `/proc/stat` text (`cpuN user nice system idle
/// iowait ...`).
fn idle_ticks(text: &str, cpu: usize) -> Option<u64> {
    let name = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let mut fields = line
        .split_whitespace()
        .skip(4)
        .map(|f| f.parse::<u64>().ok());
    let idle = fields.next()??;
    let iowait = fields.next().flatten().unwrap_or(0);
    Some(idle + iowait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn schedstat_counts_the_calling_threads_cpu_time() {
        let clock = ThreadClock::open().expect("schedstat");
        let before = clock.read().expect("parsed");
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let spent = clock.read().expect("parsed").since(before);
        assert!(spent.ran_ns >= 10_000_000, "{spent:?}");
        assert!(spent.runs >= 1 || spent.ran_ns > 0);
    }

    #[test]
    fn schedstat_text_parses_into_three_counters() {
        assert_eq!(
            parse_schedstat("3014464 1200 7\n"),
            Some(SchedStat {
                ran_ns: 3_014_464,
                waited_ns: 1_200,
                runs: 7
            })
        );
        assert_eq!(parse_schedstat("12 34\n"), None);
    }

    #[test]
    fn proc_stat_lines_give_idle_plus_iowait_per_cpu() {
        let text = "cpu  33968 7528 9093 34975 582 0 54 24 0 0\n\
                    cpu0 16191 3404 4121 19134 240 0 11 12 0 0\n\
                    cpu1 17776 4124 4972 15841 342 0 43 11 0 0\n\
                    cpu10 1 1 1 99 1 0 0 0 0 0\n\
                    intr 303264 0 0\n";
        assert_eq!(idle_ticks(text, 0), Some(19_374));
        assert_eq!(idle_ticks(text, 1), Some(16_183));
        assert_eq!(idle_ticks(text, 10), Some(100));
        assert_eq!(idle_ticks(text, 2), None);
    }

    #[test]
    fn idle_shares_are_read_for_this_machines_cpus() {
        let mut idle = CpuIdle::open(&[0]).expect("/proc/stat lists cpu0");
        std::thread::sleep(Duration::from_millis(30));
        let shares = idle.sample().expect("read");
        assert_eq!(shares.len(), 1);
        assert!((0.0..=1.0).contains(&shares[0]), "{shares:?}");
    }
}
