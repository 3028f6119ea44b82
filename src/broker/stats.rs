//! Per-topic and per-group statistics under Java's `BrokerStatsManager` names, counted on the
//! shards as sends and pulls are served: TOPIC_PUT_NUMS / TOPIC_PUT_SIZE (key: topic),
//! GROUP_GET_NUMS / GROUP_GET_SIZE (key: `topic@group`), BROKER_PUT_NUMS / BROKER_GET_NUMS
//! (key: the cluster name). Each item is a value (messages or bytes) and a count of requests
//! ("times"), as Java's `StatsItem`.
//!
//! VIEW_BROKER_STATS_DATA (315) and the consume TPS of GET_CONSUME_STATS /
//! GET_BROKER_CONSUME_STATS sum the item over every shard on the control shard and measure it
//! over Java's windows (minute, hour, day) against earlier samples of it: Java samples every
//! item every 10 s on a timer; ringmq keeps no timer, it samples an item when it is asked for
//! (an exporter scraping every few seconds sees the same figures) and, for an item asked for
//! the first time, measures from the broker's start.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use serde::Serialize;

pub const TOPIC_PUT_NUMS: &str = "TOPIC_PUT_NUMS";
pub const TOPIC_PUT_SIZE: &str = "TOPIC_PUT_SIZE";
pub const GROUP_GET_NUMS: &str = "GROUP_GET_NUMS";
pub const GROUP_GET_SIZE: &str = "GROUP_GET_SIZE";
pub const BROKER_PUT_NUMS: &str = "BROKER_PUT_NUMS";
pub const BROKER_GET_NUMS: &str = "BROKER_GET_NUMS";

/// Java's windows: minute, hour, day (ms).
const WINDOWS_MS: [i64; 3] = [60_000, 3_600_000, 86_400_000];
/// Samples kept per item (oldest dropped first; one per request for the item).
const SAMPLES_MAX: usize = 1024;
/// Items whose samples the control shard keeps (the least recently asked one goes first).
const HISTORIES_MAX: usize = 4096;

/// One item's totals: its value and how many requests added to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub value: u64,
    pub times: u64,
}

impl Totals {
    pub fn sum(self, o: Totals) -> Totals {
        Totals {
            value: self.value + o.value,
            times: self.times + o.times,
        }
    }
}

/// A value and a size item counted together (NUMS and SIZE).
#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    nums: Totals,
    size: Totals,
}

impl Pair {
    fn add(&mut self, messages: usize, bytes: usize) {
        self.nums.value += messages as u64;
        self.nums.times += 1;
        self.size.value += bytes as u64;
        self.size.times += 1;
    }
}

/// One shard's counters, bumped by the send and pull processors. Looked up by `&str` (no
/// allocation on the request path once a topic or group was seen).
#[derive(Debug, Default)]
pub struct StatsItems {
    /// topic → TOPIC_PUT_NUMS / TOPIC_PUT_SIZE.
    topics: RefCell<HashMap<String, Pair>>,
    /// topic → group → GROUP_GET_NUMS / GROUP_GET_SIZE.
    groups: RefCell<HashMap<String, HashMap<String, Pair>>>,
    broker_put: Cell<Totals>,
    broker_get: Cell<Totals>,
}

fn bump(cell: &Cell<Totals>, value: usize) {
    let t = cell.get();
    cell.set(Totals {
        value: t.value + value as u64,
        times: t.times + 1,
    });
}

impl StatsItems {
    /// A stored send of `messages` messages and `bytes` bytes to `topic`.
    pub fn put(&self, topic: &str, messages: usize, bytes: usize) {
        let mut topics = self.topics.borrow_mut();
        match topics.get_mut(topic) {
            Some(pair) => pair.add(messages, bytes),
            None => topics
                .entry(topic.to_string())
                .or_default()
                .add(messages, bytes),
        }
        bump(&self.broker_put, messages);
    }

    /// A pull of `group` that found `messages` messages of `bytes` bytes in `topic` (Java
    /// counts only pulls that found some).
    pub fn get(&self, topic: &str, group: &str, messages: usize, bytes: usize) {
        if messages == 0 {
            return;
        }
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(topic) {
            groups.insert(topic.to_string(), HashMap::new());
        }
        if let Some(of_topic) = groups.get_mut(topic) {
            match of_topic.get_mut(group) {
                Some(pair) => pair.add(messages, bytes),
                None => of_topic
                    .entry(group.to_string())
                    .or_default()
                    .add(messages, bytes),
            }
        }
        bump(&self.broker_get, messages);
    }

    /// This shard's totals of an item (zero when never counted; `None`: no such name).
    pub fn totals(&self, name: &str, key: &str) -> Option<Totals> {
        let topic =
            |pick: fn(&Pair) -> Totals| self.topics.borrow().get(key).map(pick).unwrap_or_default();
        let group = |pick: fn(&Pair) -> Totals| {
            let (topic, group) = key.split_once('@').unwrap_or((key, ""));
            let groups = self.groups.borrow();
            let pair = groups.get(topic).and_then(|g| g.get(group));
            pair.map(pick).unwrap_or_default()
        };
        Some(match name {
            TOPIC_PUT_NUMS => topic(|p| p.nums),
            TOPIC_PUT_SIZE => topic(|p| p.size),
            GROUP_GET_NUMS => group(|p| p.nums),
            GROUP_GET_SIZE => group(|p| p.size),
            BROKER_PUT_NUMS => self.broker_put.get(),
            BROKER_GET_NUMS => self.broker_get.get(),
            _ => return None,
        })
    }

    /// Forgets the items of a deleted topic.
    pub fn remove_topic(&self, topic: &str) {
        self.topics.borrow_mut().remove(topic);
        self.groups.borrow_mut().remove(topic);
    }
}

/// Java's `StatsSnapshot` as BrokerStatsItem writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StatsWindow {
    pub avgpt: f64,
    pub sum: u64,
    pub tps: f64,
}

/// Java's `BrokerStatsData` (fastjson field order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatsData {
    pub stats_day: StatsWindow,
    pub stats_hour: StatsWindow,
    pub stats_minute: StatsWindow,
}

/// An item's samples, oldest first: (time in ms, totals then).
type Samples = VecDeque<(i64, Totals)>;

/// Samples of the items asked for (by stats name and key), on the control shard.
#[derive(Debug, Default)]
pub struct StatsHistory {
    samples: RefCell<HashMap<(String, String), Samples>>,
}

impl StatsHistory {
    /// Records `now` for the item and measures it over the three windows. An item seen for
    /// the first time is measured from `boot_ms` (all zero then).
    pub fn measure(
        &self,
        name: &str,
        key: &str,
        now_ms: i64,
        now: Totals,
        boot_ms: i64,
    ) -> BrokerStatsData {
        let mut all = self.samples.borrow_mut();
        if all.len() >= HISTORIES_MAX && !all.contains_key(&(name.to_string(), key.to_string())) {
            let oldest = all
                .iter()
                .min_by_key(|(_, s)| s.back().map_or(0, |(at, _)| *at))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                all.remove(&oldest);
            }
        }
        let samples = all
            .entry((name.to_string(), key.to_string()))
            .or_insert_with(|| VecDeque::from([(boot_ms, Totals::default())]));
        let window = |ms: i64| {
            let base = samples
                .iter()
                .find(|(at, _)| now_ms - at <= ms)
                .or(samples.back())
                .copied()
                .unwrap_or((now_ms, now));
            measure(base, (now_ms, now))
        };
        let data = BrokerStatsData {
            stats_minute: window(WINDOWS_MS[0]),
            stats_hour: window(WINDOWS_MS[1]),
            stats_day: window(WINDOWS_MS[2]),
        };
        while samples.len() >= 2 && now_ms - samples[1].0 >= WINDOWS_MS[2] {
            samples.pop_front();
        }
        if samples.len() >= SAMPLES_MAX {
            samples.pop_front();
        }
        samples.push_back((now_ms, now));
        data
    }
}

fn measure(from: (i64, Totals), to: (i64, Totals)) -> StatsWindow {
    let sum = to.1.value.saturating_sub(from.1.value);
    let times = to.1.times.saturating_sub(from.1.times);
    let elapsed = to.0 - from.0;
    StatsWindow {
        avgpt: if times == 0 {
            0.0
        } else {
            sum as f64 / times as f64
        },
        sum,
        tps: if elapsed <= 0 {
            0.0
        } else {
            sum as f64 * 1000.0 / elapsed as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_count_per_topic_and_group_and_measure_over_windows() {
        let items = StatsItems::default();
        items.put("T", 3, 300);
        items.put("T", 1, 100);
        items.get("T", "g", 2, 50);
        items.get("T", "g", 0, 0);
        let t = |n: &str, k: &str| items.totals(n, k).unwrap();
        assert_eq!(t(TOPIC_PUT_NUMS, "T"), Totals { value: 4, times: 2 });
        assert_eq!(t(TOPIC_PUT_SIZE, "T").value, 400);
        assert_eq!(t(GROUP_GET_NUMS, "T@g"), Totals { value: 2, times: 1 });
        assert_eq!(t(BROKER_PUT_NUMS, "AnyCluster").value, 4);
        assert_eq!(t(TOPIC_PUT_NUMS, "U"), Totals::default());
        assert!(items.totals("NO_SUCH_STATS", "T").is_none());
        items.remove_topic("T");
        assert_eq!(t(GROUP_GET_NUMS, "T@g"), Totals::default());

        let history = StatsHistory::default();
        let at = |v, times| Totals { value: v, times };
        // First asked 20 s after boot with 200 puts: measured from the boot.
        let d = history.measure(TOPIC_PUT_NUMS, "T", 20_000, at(200, 100), 0);
        assert_eq!((d.stats_minute.sum, d.stats_minute.tps), (200, 10.0));
        assert_eq!(d.stats_minute.avgpt, 2.0);
        // 10 s later, 100 more: the minute window still reaches the boot sample.
        let d = history.measure(TOPIC_PUT_NUMS, "T", 30_000, at(300, 150), 0);
        assert_eq!(d.stats_minute.tps, 10.0);
        // A minute later: the minute starts at the oldest sample inside it.
        let d = history.measure(TOPIC_PUT_NUMS, "T", 90_000, at(360, 180), 0);
        assert_eq!((d.stats_minute.sum, d.stats_minute.tps), (60, 1.0));
        assert_eq!(d.stats_hour.sum, 360);
    }
}
