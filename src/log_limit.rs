//! Rate-limited logging of repeated conditions: the first occurrence of a key is logged at once,
//! later ones within the interval are only counted, and the count rides on the next line that
//! is let through. A peer (or a thousand peers) that keeps failing the same way writes a line
//! per interval, not a line per attempt.
//!
//! One limiter per executor (they are `!Sync` by design: shards share nothing). The number of
//! keys is bounded; when it is full, keys quiet for a whole interval are forgotten, and if that
//! frees nothing the condition is counted under an overflow entry instead of growing the table.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What a caller should do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it now; `suppressed` occurrences of the same key were counted and not logged since
    /// the last line for that key.
    Log { suppressed: u64 },
    /// Counted; log nothing.
    Quiet,
}

#[derive(Debug)]
struct Entry {
    last_logged: Instant,
    suppressed: u64,
}

/// Counts occurrences per key and lets one line per key through each `interval`.
#[derive(Debug)]
pub struct LogLimiter<K> {
    interval: Duration,
    max_keys: usize,
    entries: RefCell<HashMap<K, Entry>>,
    overflow: RefCell<Option<Entry>>,
}

impl<K: Hash + Eq> LogLimiter<K> {
    /// A limiter that logs each key at most once per `interval` and tracks at most `max_keys`
    /// keys (at least one).
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        LogLimiter {
            interval,
            max_keys: max_keys.max(1),
            entries: RefCell::new(HashMap::new()),
            overflow: RefCell::new(None),
        }
    }

    /// Records one occurrence of `key` at the current time.
    pub fn check(&self, key: K) -> Verdict {
        self.check_at(key, Instant::now())
    }

    /// Records one occurrence of `key` at `now` (tests pass their own clock).
    pub fn check_at(&self, key: K, now: Instant) -> Verdict {
        let mut entries = self.entries.borrow_mut();
        if !entries.contains_key(&key) && entries.len() >= self.max_keys {
            let interval = self.interval;
            entries.retain(|_, e| now.saturating_duration_since(e.last_logged) < interval);
            if entries.len() >= self.max_keys {
                drop(entries);
                return admit(&mut self.overflow.borrow_mut(), now, self.interval);
            }
        }
        match entries.get_mut(&key) {
            Some(entry) => admit_entry(entry, now, self.interval),
            None => {
                entries.insert(
                    key,
                    Entry {
                        last_logged: now,
                        suppressed: 0,
                    },
                );
                Verdict::Log { suppressed: 0 }
            }
        }
    }

    /// Keys currently tracked (bounded by `max_keys`).
    pub fn tracked(&self) -> usize {
        self.entries.borrow().len()
    }
}

fn admit(slot: &mut Option<Entry>, now: Instant, interval: Duration) -> Verdict {
    match slot {
        Some(entry) => admit_entry(entry, now, interval),
        None => {
            *slot = Some(Entry {
                last_logged: now,
                suppressed: 0,
            });
            Verdict::Log { suppressed: 0 }
        }
    }
}

fn admit_entry(entry: &mut Entry, now: Instant, interval: Duration) -> Verdict {
    if now.saturating_duration_since(entry.last_logged) >= interval {
        let suppressed = std::mem::take(&mut entry.suppressed);
        entry.last_logged = now;
        Verdict::Log { suppressed }
    } else {
        entry.suppressed += 1;
        Verdict::Quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_once_and_the_count_rides_on_the_next_line() {
        let limiter = LogLimiter::new(Duration::from_secs(10), 16);
        let t0 = Instant::now();
        assert_eq!(limiter.check_at("peer", t0), Verdict::Log { suppressed: 0 });
        for i in 1..1000 {
            assert_eq!(
                limiter.check_at("peer", t0 + Duration::from_millis(i)),
                Verdict::Quiet
            );
        }
        assert_eq!(
            limiter.check_at("peer", t0 + Duration::from_secs(10)),
            Verdict::Log { suppressed: 999 }
        );
        assert_eq!(
            limiter.check_at("other", t0 + Duration::from_secs(10)),
            Verdict::Log { suppressed: 0 }
        );
    }

    #[test]
    fn keys_are_bounded_and_quiet_ones_are_forgotten() {
        let limiter = LogLimiter::new(Duration::from_secs(1), 4);
        let t0 = Instant::now();
        for k in 0..4 {
            assert!(matches!(limiter.check_at(k, t0), Verdict::Log { .. }));
        }
        // Full, nobody quiet for an interval: new keys share the overflow entry.
        assert_eq!(limiter.check_at(100, t0), Verdict::Log { suppressed: 0 });
        assert_eq!(limiter.check_at(101, t0), Verdict::Quiet);
        assert_eq!(limiter.tracked(), 4);
        // After an interval the old keys are forgotten and new ones tracked again.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(limiter.check_at(5, later), Verdict::Log { suppressed: 0 });
        assert_eq!(limiter.tracked(), 1);
    }
}
