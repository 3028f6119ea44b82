//! What the dashboard remembers of the cluster: every `interval` the sampler thread takes a
//! [`Snapshot`] (each broker's runtime table, each topic's offsets per broker, each consumer
//! group's clients, progress and lag) and keeps the last ones in a ring ([`History`], ten
//! minutes by default). Charts are drawn from the ring, and `/metrics` is rendered from the
//! newest snapshot, with rates (producer and consumer TPS) from the offsets of the older ones.
//! A part of the cluster that cannot be read is left out of a snapshot and named in its
//! `errors`; the rest is kept.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::admin::cluster::{broker_runtimes, Member};
use crate::admin::group::{
    consume_stats, consumer_connection_info, group_summary, retry_groups, sort_summaries,
    ConsumerConnection, GroupSummary, Progress,
};
use crate::admin::output::now_ms;
use crate::admin::query::message_at;
use crate::admin::topic::{route, topic_names, topic_queues};
use crate::admin::Common;

/// One broker and its GET_BROKER_RUNTIME_INFO table (empty, with `error`, when unreadable).
#[derive(Debug, Clone)]
pub struct BrokerState {
    pub member: Member,
    pub runtime: BTreeMap<String, String>,
    pub error: Option<String>,
}

impl BrokerState {
    /// The first (10 s) figure of a `putTps`-style value `"a b c"`.
    pub fn rate(&self, key: &str) -> f64 {
        let first = self.runtime.get(key).and_then(|v| v.split(' ').next());
        first.and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    pub fn in_tps(&self) -> f64 {
        self.rate("putTps")
    }

    pub fn out_tps(&self) -> f64 {
        self.rate("getTransferedTps")
    }

    /// `MASTER` (broker id 0) or `SLAVE`.
    pub fn role(&self) -> &'static str {
        match self.member.broker_id {
            0 => "MASTER",
            _ => "SLAVE",
        }
    }
}

/// A topic's offsets on one broker: the sum of its queues' max offsets, and the newest store
/// time of their last messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOnBroker {
    pub broker_name: String,
    pub max_offset: i64,
    pub last_update: i64,
}

#[derive(Debug, Clone)]
pub struct TopicState {
    pub topic: String,
    pub brokers: Vec<TopicOnBroker>,
}

/// A consumer group: its summary, progress per queue, clients, and per (broker, topic) how
/// long ago the oldest message it has not consumed was stored (0 when caught up).
#[derive(Debug, Clone)]
pub struct GroupState {
    pub summary: GroupSummary,
    pub progress: Option<Progress>,
    pub connection: Option<ConsumerConnection>,
    pub latency_ms: BTreeMap<(String, String), i64>,
}

/// The cluster at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub at_ms: i64,
    pub brokers: Vec<BrokerState>,
    pub topics: Vec<TopicState>,
    pub groups: Vec<GroupState>,
    /// What could not be read.
    pub errors: Vec<String>,
}

impl Snapshot {
    /// The cluster a broker name belongs to (from the cluster info).
    pub fn cluster_of(&self, broker_name: &str) -> &str {
        let found = self
            .brokers
            .iter()
            .find(|b| b.member.broker_name == broker_name);
        found.map_or("", |b| b.member.cluster_name.as_str())
    }

    /// The master's address of a broker name.
    pub fn master_addr(&self, broker_name: &str) -> Option<&str> {
        let master = self
            .brokers
            .iter()
            .find(|b| b.member.broker_name == broker_name && b.member.broker_id == 0);
        master.map(|b| b.member.addr.as_str())
    }
}

/// Reads the whole cluster once (see [`Snapshot`]).
pub fn collect(common: &Common) -> Snapshot {
    let mut snap = Snapshot {
        at_ms: now_ms(),
        ..Snapshot::default()
    };
    match broker_runtimes(common) {
        Ok(brokers) => {
            for b in brokers {
                let (runtime, error) = match b.runtime {
                    Ok(kv) => (kv, None),
                    Err(e) => (BTreeMap::new(), Some(e.to_string())),
                };
                snap.errors.extend(error.clone());
                snap.brokers.push(BrokerState {
                    member: b.member,
                    runtime,
                    error,
                });
            }
        }
        Err(e) => snap.errors.push(e.to_string()),
    }
    let topics = match topic_names(common) {
        Ok(topics) => topics,
        Err(e) => {
            snap.errors.push(e.to_string());
            return snap;
        }
    };
    for topic in &topics {
        match topic_state(common, topic) {
            Ok(state) => snap.topics.push(state),
            Err(e) => snap.errors.push(e.to_string()),
        }
    }
    let mut summaries = Vec::new();
    for group in retry_groups(&topics) {
        let progress = consume_stats(common, &group).ok();
        let connection = consumer_connection_info(common, &group).ok();
        let summary = group_summary(&group, progress.as_ref(), connection.as_ref());
        let latency_ms = progress
            .as_ref()
            .map(|p| latencies(&snap, p))
            .unwrap_or_default();
        summaries.push(summary.clone());
        snap.groups.push(GroupState {
            summary,
            progress,
            connection,
            latency_ms,
        });
    }
    sort_summaries(&mut summaries);
    let order: Vec<&String> = summaries.iter().map(|s| &s.group).collect();
    snap.groups
        .sort_by_key(|g| order.iter().position(|o| **o == g.summary.group));
    snap
}

fn topic_state(common: &Common, topic: &str) -> Result<TopicState, crate::admin::AdminError> {
    let route = route(&mut common.namesrv()?, topic)?;
    let mut brokers: Vec<TopicOnBroker> = Vec::new();
    for q in topic_queues(&route, topic)? {
        match brokers.iter_mut().find(|b| b.broker_name == q.broker_name) {
            Some(b) => {
                b.max_offset += q.max_offset;
                b.last_update = b.last_update.max(q.last_update_timestamp);
            }
            None => brokers.push(TopicOnBroker {
                broker_name: q.broker_name,
                max_offset: q.max_offset,
                last_update: q.last_update_timestamp,
            }),
        }
    }
    Ok(TopicState {
        topic: topic.to_string(),
        brokers,
    })
}

/// rocketmq-exporter's `rocketmq_group_get_latency_by_storetime`: per (broker, topic), the
/// largest age of the first unconsumed message of a queue (0 for queues caught up).
fn latencies(snap: &Snapshot, progress: &Progress) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for q in &progress.queues {
        let key = (q.broker_name.clone(), q.topic.clone());
        let age = match (q.diff > 0, snap.master_addr(&q.broker_name)) {
            (true, Some(addr)) => message_at(addr, &q.topic, q.queue_id, q.consumer_offset)
                .ok()
                .flatten()
                .map_or(0, |m| (snap.at_ms - m.store_timestamp).max(0)),
            _ => 0,
        };
        let entry = out.entry(key).or_insert(0);
        *entry = (*entry).max(age);
    }
    out
}

/// The newest snapshots, oldest first, at most `capacity`.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    snapshots: VecDeque<Arc<Snapshot>>,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            capacity: capacity.max(2),
            snapshots: VecDeque::new(),
        }
    }

    pub fn push(&mut self, snap: Snapshot) {
        if self.snapshots.len() == self.capacity {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back(Arc::new(snap));
    }

    pub fn all(&self) -> Vec<Arc<Snapshot>> {
        self.snapshots.iter().cloned().collect()
    }
}

/// Per second between the oldest of `snapshots` within `window_ms` of the newest and the
/// newest, of the counter `value` reads (a key missing in either gives 0).
pub fn rate<K: Ord>(
    snapshots: &[Arc<Snapshot>],
    window_ms: i64,
    value: impl Fn(&Snapshot) -> BTreeMap<K, i64>,
) -> BTreeMap<K, f64> {
    let Some(newest) = snapshots.last() else {
        return BTreeMap::new();
    };
    let base = snapshots
        .iter()
        .find(|s| newest.at_ms - s.at_ms <= window_ms)
        .filter(|s| s.at_ms < newest.at_ms);
    let now = value(newest);
    let Some(base) = base else {
        return now.into_keys().map(|k| (k, 0.0)).collect();
    };
    let then = value(base);
    let seconds = (newest.at_ms - base.at_ms) as f64 / 1000.0;
    now.into_iter()
        .map(|(k, v)| {
            let delta = then.get(&k).map_or(0, |old| (v - old).max(0));
            (k, delta as f64 / seconds)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at_ms: i64, offset: i64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            at_ms,
            topics: vec![TopicState {
                topic: "T".into(),
                brokers: vec![TopicOnBroker {
                    broker_name: "b".into(),
                    max_offset: offset,
                    last_update: 0,
                }],
            }],
            ..Snapshot::default()
        })
    }

    fn offsets(s: &Snapshot) -> BTreeMap<String, i64> {
        let t = &s.topics[0];
        [(t.topic.clone(), t.brokers[0].max_offset)].into()
    }

    #[test]
    fn rates_come_from_the_oldest_snapshot_in_the_window() {
        let all = [snap(0, 0), snap(10_000, 100), snap(20_000, 300)];
        assert_eq!(rate(&all, 60_000, offsets)["T"], 15.0);
        assert_eq!(rate(&all, 10_000, offsets)["T"], 20.0);
        assert_eq!(rate(&all[..1], 60_000, offsets)["T"], 0.0);
        assert!(rate(&[], 60_000, offsets).is_empty());
    }

    #[test]
    fn the_history_keeps_the_newest() {
        let mut h = History::new(2);
        for at in [1, 2, 3] {
            h.push(Snapshot {
                at_ms: at,
                ..Snapshot::default()
            });
        }
        let kept: Vec<i64> = h.all().iter().map(|s| s.at_ms).collect();
        assert_eq!(kept, [2, 3]);
    }
}
