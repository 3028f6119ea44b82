//! GET_BROKER_RUNTIME_INFO (28) and GET_BROKER_CONFIG (26) on the control shard.
//!
//! The runtime KVTable has Java's key names and value formats (every value a string): version,
//! message counters summed over every shard (now, this morning, yesterday morning), TPS over
//! 10 s / 60 s / 600 s, commitlog offsets (in-shard bytes summed over shards), disk ratios and
//! capacity, uptime. Keys for Java's thread pools and latency histograms are left out: ringmq
//! has neither. Without a sampling timer, the figures over time come from [`History`]: a sample
//! of the counters at each request, and the day marks taken by the first request of a (UTC) day.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use super::admin_shards::{encode_failure, AllShards};
use super::Failure;
use crate::broker::live_config::LiveConfig;
use crate::broker::mesh_proto::ShardCounters;
use crate::broker::services::shard_stats::ShardStats;
use crate::config::BrokerConfig;
use crate::protocol::register::DataVersion;
use crate::protocol::route::KvTable;
use crate::remoting::codes::VERSION_CURRENT_DESC;
use crate::remoting::{RemotingCommand, VERSION_CURRENT};
use crate::store::io::DiskUsage;
use crate::store::{Clock, DmaStorage, Storage, SystemClock};

const DAY_MS: i64 = 86_400_000;
/// The TPS windows, in seconds (Java's 10, 60 and 600 s).
const TPS_WINDOWS: [i64; 3] = [10, 60, 600];
/// Samples kept at most (one per runtime-info request within the longest window).
const SAMPLES_MAX: usize = 4096;

/// Broker-wide counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sample {
    at_ms: i64,
    put: u64,
    get_found: u64,
    get_miss: u64,
    get_msgs: u64,
}

impl Sample {
    fn of(at_ms: i64, c: &ShardCounters) -> Sample {
        Sample {
            at_ms,
            put: c.put_msgs,
            get_found: c.get_found,
            get_miss: c.get_miss,
            get_msgs: c.get_msgs,
        }
    }
}

/// What GET_BROKER_RUNTIME_INFO remembers between requests (on the control shard): samples of
/// the counters behind the TPS figures and the day marks.
#[derive(Debug)]
pub struct RuntimeSamples {
    history: RefCell<History>,
}

impl RuntimeSamples {
    /// The samples of a broker booted at `boot_ms`.
    pub fn new(boot_ms: i64) -> RuntimeSamples {
        RuntimeSamples {
            history: RefCell::new(History::new(boot_ms)),
        }
    }
}

/// The samples and day marks behind [`RuntimeSamples`].
#[derive(Debug)]
struct History {
    /// Oldest first; the first one is the newest sample older than the longest window (at
    /// first the boot, all zero).
    samples: VecDeque<Sample>,
    /// The UTC day of the marks.
    day: i64,
    /// (put, get) totals at the first request of today and of yesterday.
    today_morning: (u64, u64),
    yesterday_morning: (u64, u64),
}

impl History {
    /// The history of a broker booted at `boot_ms`: one all-zero sample, marks at zero.
    fn new(boot_ms: i64) -> History {
        let boot = Sample {
            at_ms: boot_ms,
            ..Sample::default()
        };
        History {
            samples: VecDeque::from([boot]),
            day: boot_ms.div_euclid(DAY_MS),
            today_morning: (0, 0),
            yesterday_morning: (0, 0),
        }
    }

    /// Rates per second of `pick` over each window of [`TPS_WINDOWS`], measured from the
    /// oldest sample inside the window (the newest one when none is), formatted as Java does.
    fn tps(&self, now: &Sample, pick: impl Fn(&Sample) -> u64) -> String {
        let rates: Vec<String> = TPS_WINDOWS
            .iter()
            .map(|window| {
                let inside = self
                    .samples
                    .iter()
                    .find(|s| now.at_ms - s.at_ms <= window * 1000);
                let base = inside.or(self.samples.back());
                let rate = base.map_or(0.0, |b| rate(pick(b), pick(now), now.at_ms - b.at_ms));
                java_double(rate)
            })
            .collect();
        rates.join(" ")
    }

    /// Keeps `now` and drops samples no window needs any more; moves the day marks when a new
    /// UTC day started.
    fn record(&mut self, now: Sample) {
        let longest = TPS_WINDOWS[TPS_WINDOWS.len() - 1] * 1000;
        while self.samples.len() >= 2 && now.at_ms - self.samples[1].at_ms >= longest {
            self.samples.pop_front();
        }
        if self.samples.len() >= SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(now);
        let day = now.at_ms.div_euclid(DAY_MS);
        if day > self.day {
            let totals = (now.put, now.get_msgs);
            self.yesterday_morning = match day == self.day + 1 {
                true => self.today_morning,
                false => totals,
            };
            self.today_morning = totals;
            self.day = day;
        }
    }
}

/// Events per second between two counts `elapsed_ms` apart.
fn rate(from: u64, to: u64, elapsed_ms: i64) -> f64 {
    if elapsed_ms <= 0 {
        return 0.0;
    }
    to.saturating_sub(from) as f64 * 1000.0 / elapsed_ms as f64
}

/// A double as Java's `String.valueOf` writes it (`0.0`, `0.26`, `12.5`).
pub fn java_double(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e7 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// `MixAll.humanReadableByteCount(bytes, false)`: `512 B`, `1.5 KiB`, `252.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNIT: f64 = 1024.0;
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let exp = ((bytes as f64).ln() / UNIT.ln()).floor().clamp(1.0, 6.0) as i32;
    let prefix = ["K", "M", "G", "T", "P", "E"][(exp - 1) as usize];
    format!("{:.1} {prefix}iB", bytes as f64 / UNIT.powi(exp))
}

/// Java's uptime text: `[ 0 days, 0 hours, 0 minutes, 24 seconds ]`.
pub fn format_runtime(elapsed_ms: i64) -> String {
    let secs = elapsed_ms.max(0) / 1000;
    let (days, hours) = (secs / 86_400, secs % 86_400 / 3600);
    let (minutes, seconds) = (secs % 3600 / 60, secs % 60);
    format!("[ {days} days, {hours} hours, {minutes} minutes, {seconds} seconds ]")
}

/// `UtilAll.getDiskPartitionSpaceUsedPercent`: the used share, rounded up to a percent.
pub fn disk_ratio(usage: &DiskUsage) -> f64 {
    if usage.total_bytes == 0 {
        return -1.0;
    }
    let used = u128::from(usage.used_bytes) * 100;
    let total = u128::from(usage.total_bytes);
    let percent = used / total + u128::from(used % total != 0);
    percent as f64 / 100.0
}

/// The space of the file system holding `path` (or its nearest existing ancestor: the
/// commitlog directory appears with the first flushed segment), if it can be read.
async fn disk_usage(path: &Path) -> Option<DiskUsage> {
    let path = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    match DmaStorage.disk_usage(path).await {
        Ok(usage) => Some(usage),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "no disk usage for runtime info");
            None
        }
    }
}

/// GET_BROKER_RUNTIME_INFO (28): a KVTable of strings; the replication entries come from
/// `ha_entries`.
pub(crate) async fn runtime_info(
    cfg: &BrokerConfig,
    samples: &RuntimeSamples,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
    ha_entries: impl AsyncFnOnce(&mut BTreeMap<String, String>),
) -> Result<RemotingCommand, Failure> {
    let counters = all.counters().await?;
    let now = Sample::of(SystemClock.now_ms(), &counters);
    let mut table = counter_entries(samples, all.here.stats, &counters, &now);
    disk_entries(cfg, &mut table).await;
    ha_entries(&mut table).await;
    let body = serde_json::to_vec(&KvTable { table }).map_err(encode_failure)?;
    Ok(cmd.success_to().with_body(body))
}

/// Version, message counters, TPS, commitlog offsets and uptime (`now` is kept in
/// `samples`; the uptime counts from `stats`'s boot).
fn counter_entries(
    samples: &RuntimeSamples,
    stats: &ShardStats,
    c: &ShardCounters,
    now: &Sample,
) -> BTreeMap<String, String> {
    let mut history = samples.history.borrow_mut();
    let put_tps = history.tps(now, |s| s.put);
    let transferred_tps = history.tps(now, |s| s.get_msgs);
    let found_tps = history.tps(now, |s| s.get_found);
    let miss_tps = history.tps(now, |s| s.get_miss);
    let total_tps = history.tps(now, |s| s.get_found + s.get_miss);
    history.record(*now);
    let boot = stats.boot_ms();
    let average = match c.put_msgs {
        0 => 0.0,
        n => c.put_bytes as f64 / n as f64,
    };
    let min = match c.commitlog_max {
        0 => "-1".to_string(),
        _ => c.commitlog_min.to_string(),
    };
    let entries = [
        ("brokerVersion", VERSION_CURRENT.to_string()),
        ("brokerVersionDesc", VERSION_CURRENT_DESC.to_string()),
        ("msgPutTotalTodayNow", c.put_msgs.to_string()),
        ("msgGetTotalTodayNow", c.get_msgs.to_string()),
        (
            "msgPutTotalTodayMorning",
            history.today_morning.0.to_string(),
        ),
        (
            "msgGetTotalTodayMorning",
            history.today_morning.1.to_string(),
        ),
        (
            "msgPutTotalYesterdayMorning",
            history.yesterday_morning.0.to_string(),
        ),
        (
            "msgGetTotalYesterdayMorning",
            history.yesterday_morning.1.to_string(),
        ),
        ("putTps", put_tps),
        ("getTransferedTps", transferred_tps),
        ("getFoundTps", found_tps),
        ("getMissTps", miss_tps),
        ("getTotalTps", total_tps),
        ("putMessageTimesTotal", c.put_msgs.to_string()),
        ("putMessageSizeTotal", c.put_bytes.to_string()),
        ("putMessageAverageSize", java_double(average)),
        (
            "earliestMessageTimeStamp",
            c.earliest_store_time.unwrap_or(-1).to_string(),
        ),
        ("commitLogMinOffset", min),
        ("commitLogMaxOffset", c.commitlog_max.to_string()),
        ("remainHowManyDataToFlush", human_bytes(c.unflushed)),
        ("bootTimestamp", boot.to_string()),
        ("runtime", format_runtime(now.at_ms - boot)),
    ];
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Disk ratios of the commitlog and consume-queue file systems and the store's capacity.
async fn disk_entries(cfg: &BrokerConfig, table: &mut BTreeMap<String, String>) {
    if let Some(usage) = disk_usage(&cfg.store_path_commitlog).await {
        let ratio = java_double(disk_ratio(&usage));
        let per_path = format!("commitLogDiskRatio_{}", cfg.store_path_commitlog.display());
        table.insert(per_path, ratio.clone());
        table.insert("commitLogDiskRatio".into(), ratio);
    }
    if let Some(usage) = disk_usage(&cfg.store_path_root_dir).await {
        let free = usage.total_bytes.saturating_sub(usage.used_bytes);
        let capacity = format!(
            "Total : {}, Free : {}.",
            human_bytes(usage.total_bytes),
            human_bytes(free)
        );
        table.insert("commitLogDirCapacity".into(), capacity);
        table.insert(
            "consumeQueueDiskRatio".into(),
            java_double(disk_ratio(&usage)),
        );
    }
}

/// GET_BROKER_CONFIG (26): every key as `key=value` lines, and (as Java's
/// `GetBrokerConfigResponseHeader`) the configuration's data version in header `version`
/// (stamped with the broker's boot time, from `stats`).
pub(crate) fn broker_config(
    live: &LiveConfig,
    stats: &ShardStats,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let version = DataVersion {
        counter: live.version(),
        timestamp: stats.boot_ms(),
    };
    let version = serde_json::to_string(&version).map_err(encode_failure)?;
    Ok(cmd
        .success_to()
        .with_ext("version", version)
        .with_body(live.snapshot().to_properties().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_like_java() {
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(0.26), "0.26");
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(12.5), "12.5");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(252 << 30), "252.0 GiB");
        assert_eq!(
            format_runtime(24_500),
            "[ 0 days, 0 hours, 0 minutes, 24 seconds ]"
        );
        assert_eq!(
            format_runtime(DAY_MS + 3_723_000),
            "[ 1 days, 1 hours, 2 minutes, 3 seconds ]"
        );
    }

    #[test]
    fn disk_ratio_rounds_up_to_a_percent() {
        let usage = |used, total| DiskUsage {
            used_bytes: used,
            total_bytes: total,
        };
        assert_eq!(disk_ratio(&usage(25, 100)), 0.25);
        assert_eq!(disk_ratio(&usage(251, 1000)), 0.26);
        assert_eq!(disk_ratio(&usage(0, 100)), 0.0);
        assert_eq!(disk_ratio(&usage(0, 0)), -1.0);
    }

    fn sample(at_ms: i64, put: u64) -> Sample {
        Sample {
            at_ms,
            put,
            ..Sample::default()
        }
    }

    #[test]
    fn tps_is_measured_over_each_window() {
        let mut h = History::new(0);
        // 20 s after boot, 200 puts: every window reaches back to the boot.
        assert_eq!(h.tps(&sample(20_000, 200), |s| s.put), "10.0 10.0 10.0");
        h.record(sample(20_000, 200));
        // 5 s later, 100 more: the 10 s window starts at the last sample, the others at boot.
        assert_eq!(h.tps(&sample(25_000, 300), |s| s.put), "20.0 12.0 12.0");
        h.record(sample(25_000, 300));
        // Long after: no sample inside the windows, the newest one is the base.
        assert_eq!(h.tps(&sample(1_025_000, 1300), |s| s.put), "1.0 1.0 1.0");
        h.record(sample(1_025_000, 1300));
        assert!(h.samples.len() <= 2, "{:?}", h.samples);
    }

    #[test]
    fn day_marks_move_on_a_new_day() {
        let mut h = History::new(10);
        h.record(sample(1000, 5));
        assert_eq!((h.today_morning, h.yesterday_morning), ((0, 0), (0, 0)));
        h.record(sample(DAY_MS + 1, 7));
        assert_eq!((h.today_morning, h.yesterday_morning), ((7, 0), (0, 0)));
        h.record(sample(2 * DAY_MS + 1, 9));
        assert_eq!((h.today_morning, h.yesterday_morning), ((9, 0), (7, 0)));
        h.record(sample(5 * DAY_MS, 11));
        assert_eq!((h.today_morning, h.yesterday_morning), ((11, 0), (11, 0)));
    }
}
