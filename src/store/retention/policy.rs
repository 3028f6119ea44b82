//! The retention policy of STORE.md §7.1 as a pure function. [`decide`] takes the commitlog's
//! oldest segments with their last-modified times, the time, the local hour, the disk usage
//! and the configuration, and says which segments one pass deletes and whether the disk is
//! full. No I/O, no clock, no executor: the executor (`retention/mod.rs`) gathers the inputs
//! and applies the decision, so every rule is tested here without waiting hours or filling a
//! disk.
//!
//! The rules (Java `CleanCommitLogService` / `MappedFileQueue.deleteExpiredFileByTime`):
//! - a pass deletes anything only when the local hour is in `deleteWhen`, the disk is fuller
//!   than `diskMaxUsedSpaceRatio`, or a manual trigger is pending;
//! - it deletes the oldest segments first and stops at the first one it keeps (no holes),
//!   never the newest (the one being written), never one whose bytes are not all flushed,
//!   and at most `files_per_pass_max`;
//! - a segment goes when its last modification is `fileReservedTime` hours old, or at any age
//!   when usage is over the force-clean ratio (85 %) and `cleanFileForciblyEnable` is set;
//! - usage over 90 % marks the disk full (writes refused); it is cleared once usage is back
//!   at or under the force-clean ratio, and kept in between (Java's hysteresis).
//!
//! One deliberate difference from Java: a pass also runs while the disk is marked full. Java
//! only runs one then if usage is also over `diskMaxUsedSpaceRatio`, so with that set to 95 a
//! disk at 92 % would refuse writes until the next `deleteWhen` hour.

use crate::config::BrokerConfig;
use crate::store::io::DiskUsage;

/// Files one pass deletes at most (Java `DELETE_FILES_BATCH_MAX`).
pub const FILES_PER_PASS_MAX: usize = 10;
/// Usage (%) above which unexpired files are deleted too, with `cleanFileForciblyEnable`, and
/// at or below which a full disk is writable again (Java's system property
/// `rocketmq.broker.diskSpaceCleanForciblyRatio`, 0.85).
pub const CLEAN_FORCIBLY_RATIO_PERCENT: u32 = 85;
/// Usage (%) above which the disk is marked full and writes are refused (Java's system
/// property `rocketmq.broker.diskSpaceWarningLevelRatio`, 0.90).
pub const DISK_FULL_RATIO_PERCENT: u32 = 90;
const HOUR_MS: i64 = 3_600_000;

/// What retention needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `fileReservedTime`: hours a segment is kept after its last modification.
    pub file_reserved_time_hours: u32,
    /// `deleteWhen`: local hours (0..=23) at which expired segments are deleted.
    pub delete_when_hours: Vec<u8>,
    /// `diskMaxUsedSpaceRatio`: usage (%) above which expired segments go at any hour.
    pub disk_max_used_space_ratio_percent: u32,
    /// `cleanFileForciblyEnable`: above the force-clean ratio, delete regardless of age.
    pub clean_file_forcibly_enable: bool,
    /// See [`CLEAN_FORCIBLY_RATIO_PERCENT`].
    pub clean_forcibly_ratio_percent: u32,
    /// See [`DISK_FULL_RATIO_PERCENT`].
    pub disk_full_ratio_percent: u32,
    /// `cleanResourceInterval`: period of the retention pass.
    pub clean_resource_interval_ms: u64,
    /// `deleteCommitLogFilesInterval`: pause between two segments deleted in one pass.
    pub delete_commitlog_files_interval_ms: u64,
    /// See [`FILES_PER_PASS_MAX`].
    pub files_per_pass_max: usize,
}

impl RetentionConfig {
    /// The retention settings of `cfg`.
    pub fn from_broker(cfg: &BrokerConfig) -> RetentionConfig {
        RetentionConfig {
            file_reserved_time_hours: cfg.file_reserved_time_hours,
            delete_when_hours: cfg.delete_when_hours.clone(),
            disk_max_used_space_ratio_percent: cfg.disk_max_used_space_ratio_percent,
            clean_file_forcibly_enable: cfg.clean_file_forcibly_enable,
            clean_forcibly_ratio_percent: CLEAN_FORCIBLY_RATIO_PERCENT,
            disk_full_ratio_percent: DISK_FULL_RATIO_PERCENT,
            clean_resource_interval_ms: cfg.clean_resource_interval_ms,
            delete_commitlog_files_interval_ms: cfg.delete_commitlog_files_interval_ms,
            files_per_pass_max: FILES_PER_PASS_MAX,
        }
    }

    /// Why these settings cannot work, if they cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Some(h) = self.delete_when_hours.iter().find(|h| **h > 23) {
            return Some(format!("deleteWhen hour {h} is not in 0..=23"));
        }
        let ratios = [
            self.disk_max_used_space_ratio_percent,
            self.clean_forcibly_ratio_percent,
            self.disk_full_ratio_percent,
        ];
        if ratios.iter().any(|r| *r > 100) {
            return Some(format!("disk usage ratios {ratios:?} must be percentages"));
        }
        if self.clean_forcibly_ratio_percent > self.disk_full_ratio_percent {
            return Some(format!(
                "the force-clean ratio {}% is above the disk-full ratio {}%: a full disk \
                 would never become writable again",
                self.clean_forcibly_ratio_percent, self.disk_full_ratio_percent
            ));
        }
        if self.clean_resource_interval_ms == 0 || self.files_per_pass_max == 0 {
            return Some("cleanResourceInterval and files per pass must be positive".into());
        }
        None
    }
}

/// One commitlog segment as retention sees it (offsets in the shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub start: u64,
    pub end: u64,
    pub last_modified_ms: i64,
}

/// Everything one pass decides on.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    /// Segments oldest first; the last is the newest (being written) and is never deleted.
    /// Only a prefix of `files_per_pass_max` plus the newest matters.
    pub segments: &'a [SegmentInfo],
    /// Commitlog offset below which every byte is durable: a segment ending above it is kept.
    pub flushed: u64,
    pub now_ms: i64,
    /// The local hour of `now_ms` (0..=23).
    pub local_hour: u8,
    /// The fuller of the commitlog's and the store root's file systems; `None` if unknown.
    pub usage: Option<DiskUsage>,
    /// A manual trigger (admin DELETE_EXPIRED_COMMITLOG) is pending.
    pub manual: bool,
    /// The disk is currently marked full.
    pub disk_full: bool,
}

/// Why a pass deletes, in the order the rules are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Hour,
    Space,
    DiskFull,
}

/// What one pass does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Start offsets of the segments to delete, oldest first (a prefix of the input).
    pub delete: Vec<u64>,
    /// Why the pass deletes; `None` when it deletes nothing whatever the segments' ages.
    pub trigger: Option<Trigger>,
    /// Segments go regardless of age (usage over the force-clean ratio).
    pub forced: bool,
    /// Whether the disk is (still) marked full.
    pub disk_full: bool,
}

/// The decision of one retention pass.
pub fn decide(cfg: &RetentionConfig, input: &PolicyInput<'_>) -> Decision {
    check_segments(input.segments);
    assert!(input.local_hour < 24, "local hour {}", input.local_hour);
    let disk_full = disk_full_state(cfg, input.disk_full, input.usage);
    let above = |percent| input.usage.is_some_and(|u| u.above(percent));
    let trigger = if input.manual {
        Some(Trigger::Manual)
    } else if cfg.delete_when_hours.contains(&input.local_hour) {
        Some(Trigger::Hour)
    } else if above(cfg.disk_max_used_space_ratio_percent) {
        Some(Trigger::Space)
    } else if disk_full {
        Some(Trigger::DiskFull)
    } else {
        None
    };
    let forced = cfg.clean_file_forcibly_enable && above(cfg.clean_forcibly_ratio_percent);
    let delete = match trigger {
        Some(_) => select(cfg, input, forced),
        None => Vec::new(),
    };
    Decision {
        delete,
        trigger,
        forced,
        disk_full,
    }
}

/// Whether the disk is marked full after measuring `usage`: over the disk-full ratio it is;
/// at or under the force-clean ratio it is not; in between it stays as it was. An unknown
/// usage changes nothing.
pub fn disk_full_state(cfg: &RetentionConfig, was_full: bool, usage: Option<DiskUsage>) -> bool {
    match usage {
        None => was_full,
        Some(u) if u.above(cfg.disk_full_ratio_percent) => true,
        Some(u) if u.above(cfg.clean_forcibly_ratio_percent) => was_full,
        Some(_) => false,
    }
}

/// The oldest segments that may go, stopping at the first one that stays.
fn select(cfg: &RetentionConfig, input: &PolicyInput<'_>, forced: bool) -> Vec<u64> {
    let reserved_ms = i64::from(cfg.file_reserved_time_hours) * HOUR_MS;
    let Some((_newest, older)) = input.segments.split_last() else {
        return Vec::new();
    };
    older
        .iter()
        .take(cfg.files_per_pass_max)
        .take_while(|s| s.end <= input.flushed)
        .take_while(|s| forced || input.now_ms >= s.last_modified_ms.saturating_add(reserved_ms))
        .map(|s| s.start)
        .collect()
}

fn check_segments(segments: &[SegmentInfo]) {
    for s in segments {
        assert!(s.start < s.end, "empty segment {s:?}");
    }
    for pair in segments.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "segments out of order: {pair:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1000;
    const NOW: i64 = 1_000 * HOUR_MS;

    fn cfg() -> RetentionConfig {
        RetentionConfig::from_broker(&BrokerConfig::default())
    }

    /// `n` segments, segment i last modified `ages_h[i]` hours before NOW.
    fn segments(ages_h: &[i64]) -> Vec<SegmentInfo> {
        (0..ages_h.len() as u64)
            .map(|i| SegmentInfo {
                start: i * SEG,
                end: (i + 1) * SEG,
                last_modified_ms: NOW - ages_h[i as usize] * HOUR_MS,
            })
            .collect()
    }

    fn input(segments: &[SegmentInfo]) -> PolicyInput<'_> {
        PolicyInput {
            segments,
            flushed: u64::MAX,
            now_ms: NOW,
            local_hour: 4,
            usage: Some(DiskUsage::percent(10)),
            manual: false,
            disk_full: false,
        }
    }

    fn starts(indexes: std::ops::Range<u64>) -> Vec<u64> {
        indexes.map(|i| i * SEG).collect()
    }

    #[test]
    fn defaults_are_javas() {
        let c = cfg();
        assert_eq!(c.file_reserved_time_hours, 72);
        assert_eq!(c.delete_when_hours, vec![4]);
        assert_eq!(c.disk_max_used_space_ratio_percent, 75);
        assert!(c.clean_file_forcibly_enable);
        assert_eq!(
            (c.clean_forcibly_ratio_percent, c.disk_full_ratio_percent),
            (85, 90)
        );
        assert_eq!(c.files_per_pass_max, 10);
        assert_eq!(c.problem(), None);
    }

    #[test]
    fn deletes_only_in_a_delete_when_hour() {
        let segs = segments(&[100, 90, 80, 1]);
        let mut c = cfg();
        c.delete_when_hours = vec![4, 16];
        for hour in 0..24u8 {
            let d = decide(
                &c,
                &PolicyInput {
                    local_hour: hour,
                    ..input(&segs)
                },
            );
            if hour == 4 || hour == 16 {
                assert_eq!(d.delete, starts(0..3), "hour {hour}");
                assert_eq!(d.trigger, Some(Trigger::Hour));
            } else {
                assert_eq!(d.delete, Vec::<u64>::new(), "hour {hour}");
                assert_eq!(d.trigger, None);
            }
            assert!(!d.forced && !d.disk_full);
        }
    }

    #[test]
    fn keeps_segments_younger_than_the_reserved_time_and_everything_after_them() {
        let c = cfg();
        let segs = segments(&[200, 73, 72, 71, 100, 0]);
        // 72 hours old exactly has expired; 71 stops the pass even though 100 follows.
        assert_eq!(decide(&c, &input(&segs)).delete, starts(0..3));
        let segs = segments(&[71, 500, 500, 0]);
        assert!(decide(&c, &input(&segs)).delete.is_empty());
        let mut one_hour = cfg();
        one_hour.file_reserved_time_hours = 1;
        let segs = segments(&[2, 1, 0, 0]);
        assert_eq!(decide(&one_hour, &input(&segs)).delete, starts(0..2));
    }

    #[test]
    fn a_future_modification_time_is_not_expired() {
        let segs = segments(&[-5, 100]);
        assert!(decide(&cfg(), &input(&segs)).delete.is_empty());
        let mut segs = segments(&[100, 0]);
        segs[0].last_modified_ms = i64::MAX;
        assert!(decide(&cfg(), &input(&segs)).delete.is_empty());
        segs[0].last_modified_ms = i64::MIN;
        assert_eq!(decide(&cfg(), &input(&segs)).delete, vec![0]);
    }

    #[test]
    fn never_deletes_the_newest_segment() {
        let c = cfg();
        let one = segments(&[1_000]);
        let d = decide(
            &c,
            &PolicyInput {
                usage: Some(DiskUsage::percent(99)),
                ..input(&one)
            },
        );
        assert!(d.delete.is_empty() && d.forced && d.disk_full);
        let two = segments(&[1_000, 1_000]);
        assert_eq!(decide(&c, &input(&two)).delete, vec![0]);
        assert!(decide(&c, &input(&[])).delete.is_empty());
    }

    #[test]
    fn never_deletes_a_segment_with_unflushed_bytes() {
        let segs = segments(&[100, 100, 100, 100]);
        let at = |flushed| {
            decide(
                &cfg(),
                &PolicyInput {
                    flushed,
                    ..input(&segs)
                },
            )
            .delete
        };
        assert_eq!(at(2 * SEG), starts(0..2));
        assert_eq!(at(2 * SEG - 1), starts(0..1));
        assert!(at(0).is_empty());
    }

    #[test]
    fn deletes_at_most_ten_segments_per_pass() {
        let segs = segments(&[100; 25]);
        assert_eq!(decide(&cfg(), &input(&segs)).delete, starts(0..10));
        let mut three = cfg();
        three.files_per_pass_max = 3;
        assert_eq!(decide(&three, &input(&segs)).delete, starts(0..3));
        let eleven = segments(&[100; 11]);
        assert_eq!(decide(&cfg(), &input(&eleven)).delete, starts(0..10));
    }

    #[test]
    fn usage_over_the_max_ratio_deletes_expired_segments_at_any_hour() {
        let segs = segments(&[100, 80, 10, 0]);
        let mut c = cfg();
        c.delete_when_hours = vec![3];
        let at = |c: &RetentionConfig, percent| {
            let usage = Some(DiskUsage::percent(percent));
            decide(
                c,
                &PolicyInput {
                    usage,
                    ..input(&segs)
                },
            )
        };
        assert_eq!((at(&c, 75).delete, at(&c, 75).trigger), (vec![], None));
        let d = at(&c, 76);
        assert_eq!(
            (d.delete, d.trigger, d.forced),
            (starts(0..2), Some(Trigger::Space), false)
        );
        c.disk_max_used_space_ratio_percent = 95;
        assert!(at(&c, 85).delete.is_empty(), "under 95 %, outside the hour");
    }

    #[test]
    fn usage_over_85_percent_deletes_regardless_of_age_when_forcible_clean_is_on() {
        let segs = segments(&[100, 5, 1, 0, 0]);
        let mut c = cfg();
        c.delete_when_hours = vec![3];
        let at = |c: &RetentionConfig, percent| {
            let usage = Some(DiskUsage::percent(percent));
            decide(
                c,
                &PolicyInput {
                    usage,
                    ..input(&segs)
                },
            )
        };
        assert_eq!(at(&c, 85).delete, starts(0..1), "85 % is not above 85 %");
        let d = at(&c, 86);
        assert_eq!(
            (d.delete, d.forced, d.disk_full),
            (starts(0..4), true, false)
        );
        c.clean_file_forcibly_enable = false;
        let d = at(&c, 86);
        assert_eq!((d.delete, d.forced), (starts(0..1), false));
        // Forcible clean only applies to a pass that runs.
        let mut lazy = cfg();
        lazy.delete_when_hours = vec![3];
        lazy.disk_max_used_space_ratio_percent = 88;
        assert!(at(&lazy, 87).delete.is_empty());
        assert_eq!(at(&lazy, 87).trigger, None);
    }

    #[test]
    fn a_manual_trigger_deletes_expired_segments_at_any_hour() {
        let segs = segments(&[100, 80, 10, 0]);
        let mut c = cfg();
        c.delete_when_hours = vec![3];
        let d = decide(
            &c,
            &PolicyInput {
                manual: true,
                ..input(&segs)
            },
        );
        assert_eq!((d.delete, d.trigger), (starts(0..2), Some(Trigger::Manual)));
    }

    #[test]
    fn usage_over_90_percent_marks_the_disk_full_until_it_is_back_under_85() {
        let c = cfg();
        let state = |was, percent| disk_full_state(&c, was, Some(DiskUsage::percent(percent)));
        assert!(!state(false, 90), "90 % is not above 90 %");
        assert!(state(false, 91));
        assert!(state(true, 91));
        for percent in 86..=90 {
            assert!(state(true, percent), "stays full at {percent} %");
            assert!(!state(false, percent), "stays writable at {percent} %");
        }
        assert!(!state(true, 85), "writable again at 85 %");
        assert!(!state(true, 0));
        assert!(
            disk_full_state(&c, true, None),
            "unknown usage changes nothing"
        );
        assert!(!disk_full_state(&c, false, None));
    }

    #[test]
    fn a_full_disk_runs_a_forced_pass_outside_the_hour_even_under_the_max_ratio() {
        let segs = segments(&[1, 1, 0]);
        let mut c = cfg();
        c.delete_when_hours = vec![3];
        c.disk_max_used_space_ratio_percent = 95;
        let d = decide(
            &c,
            &PolicyInput {
                usage: Some(DiskUsage::percent(92)),
                ..input(&segs)
            },
        );
        assert_eq!(d.trigger, Some(Trigger::DiskFull));
        assert_eq!(
            (d.delete, d.forced, d.disk_full),
            (starts(0..2), true, true)
        );
        // Still marked full at 88 %: the pass runs and keeps force-cleaning.
        let d = decide(
            &c,
            &PolicyInput {
                usage: Some(DiskUsage::percent(88)),
                disk_full: true,
                ..input(&segs)
            },
        );
        assert_eq!((d.delete, d.disk_full), (starts(0..2), true));
    }

    #[test]
    fn unknown_usage_deletes_only_by_hour_or_trigger() {
        let segs = segments(&[100, 0]);
        let mut c = cfg();
        c.delete_when_hours = vec![3];
        let d = decide(
            &c,
            &PolicyInput {
                usage: None,
                ..input(&segs)
            },
        );
        assert_eq!((d.delete, d.trigger, d.forced), (vec![], None, false));
        let d = decide(
            &c,
            &PolicyInput {
                usage: None,
                disk_full: true,
                ..input(&segs)
            },
        );
        assert_eq!((d.delete, d.disk_full), (vec![0], true));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = cfg();
        c.delete_when_hours = vec![4, 24];
        assert!(c.problem().unwrap().contains("24"));
        let mut c = cfg();
        c.clean_forcibly_ratio_percent = 95;
        assert!(c.problem().unwrap().contains("never become writable"));
        let mut c = cfg();
        c.clean_resource_interval_ms = 0;
        assert!(c.problem().is_some());
    }

    #[test]
    #[should_panic(expected = "segments out of order")]
    fn unordered_segments_are_a_bug() {
        let mut segs = segments(&[1, 1]);
        segs.swap(0, 1);
        decide(&cfg(), &input(&segs));
    }

    #[test]
    fn usage_comparisons_are_exact() {
        let u = DiskUsage {
            used_bytes: 9,
            total_bytes: 10,
        };
        assert!(u.above(89) && !u.above(90));
        assert_eq!(u.used_percent(), 90);
        let big = DiskUsage {
            used_bytes: u64::MAX - 1,
            total_bytes: u64::MAX,
        };
        assert!(big.above(99) && !big.above(100));
        assert_eq!(big.fuller(u), big);
        assert_eq!(u.fuller(big), big);
        assert_eq!(
            DiskUsage::percent(50)
                .fuller(DiskUsage::percent(50))
                .used_percent(),
            50
        );
    }
}
