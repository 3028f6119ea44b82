//! What the dashboard remembers of the cluster: every `interval` the sampler thread takes a
//! [`Snapshot`] (each broker's runtime table, each topic's offsets per broker, each consumer
//! group's clients, progress and lag) and keeps the last ones in a ring ([`History`], ten
//! minutes by default). Charts are drawn from the ring, and `/metrics` is rendered from the
//! newest snapshot; the producer and consumer TPS and byte rates come from each master's own
//! statistics (VIEW_BROKER_STATS_DATA, the minute figures, as rocketmq-exporter reads them).
//! A part of the cluster that cannot be read is left out of a snapshot and named in its
//! `errors`; the rest is kept.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::cluster::{broker_runtimes, Member};
use crate::admin::group::{
    consume_stats, consumer_connection_info, group_summary, retry_groups, sort_summaries,
    ConsumerConnection, GroupSummary, Progress,
};
use crate::admin::output::now_ms;
use crate::admin::query::message_at;
use crate::admin::topic::{route, topic_names, topic_queues};
use crate::admin::Common;
use crate::broker::stats::{GROUP_GET_NUMS, GROUP_GET_SIZE, TOPIC_PUT_NUMS, TOPIC_PUT_SIZE};
use crate::client::Connection;
use crate::protocol::lenient;
use crate::remoting::{request, response, RemotingCommand};

/// Why a broker's statistics could not be read (shown on the page, per broker).
#[derive(Debug, thiserror::Error)]
enum StatsError {
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("VIEW_BROKER_STATS_DATA {name} {key}: {source}")]
    Parse {
        name: String,
        key: String,
        source: lenient::LenientError,
    },
    #[error("VIEW_BROKER_STATS_DATA {name} {key} answered {code}: {remark}")]
    Refused {
        name: String,
        key: String,
        code: i32,
        remark: String,
    },
}

/// Connect timeout of the statistics reads.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Per-second rates over the last minute from the masters' statistics
    /// (VIEW_BROKER_STATS_DATA `statsMinute.tps`), by (broker name, stats name, stats key):
    /// TOPIC_PUT_NUMS / TOPIC_PUT_SIZE of every topic, GROUP_GET_NUMS / GROUP_GET_SIZE of every
    /// `topic@group` with progress. An item the broker never counted is 0.
    pub stats: BTreeMap<(String, String, String), f64>,
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
    broker_stats(&mut snap);
    snap
}

/// The statistics items the exporter reads, per broker name: every topic's put figures on
/// each broker holding it, and every group's get figures on each broker it has progress on.
fn wanted_stats(snap: &Snapshot) -> BTreeMap<String, BTreeSet<(&'static str, String)>> {
    let mut wanted: BTreeMap<String, BTreeSet<(&'static str, String)>> = BTreeMap::new();
    for t in &snap.topics {
        for b in &t.brokers {
            let items = wanted.entry(b.broker_name.clone()).or_default();
            items.insert((TOPIC_PUT_NUMS, t.topic.clone()));
            items.insert((TOPIC_PUT_SIZE, t.topic.clone()));
        }
    }
    for g in &snap.groups {
        for q in g.progress.iter().flat_map(|p| &p.queues) {
            let key = format!("{}@{}", q.topic, g.summary.group);
            let items = wanted.entry(q.broker_name.clone()).or_default();
            items.insert((GROUP_GET_NUMS, key.clone()));
            items.insert((GROUP_GET_SIZE, key));
        }
    }
    wanted
}

/// Reads [`Snapshot::stats`] from each master (one connection per master).
fn broker_stats(snap: &mut Snapshot) {
    for (broker, items) in wanted_stats(snap) {
        let Some(addr) = snap.master_addr(&broker).map(str::to_string) else {
            continue;
        };
        let read = || -> Result<(), StatsError> {
            let mut conn = Connection::connect(&addr, STATS_TIMEOUT)?;
            for (name, key) in items {
                let tps = minute_tps(&mut conn, name, &key)?;
                snap.stats
                    .insert((broker.clone(), name.to_string(), key), tps);
            }
            Ok(())
        };
        if let Err(e) = read() {
            snap.errors
                .push(format!("statistics of broker {broker} ({addr}): {e}"));
        }
    }
}

/// VIEW_BROKER_STATS_DATA of one item: its `statsMinute.tps`; 0 for an item the broker never
/// counted (Java's SYSTEM_ERROR "The stats <…> <…> not exist").
fn minute_tps(conn: &mut Connection, name: &str, key: &str) -> Result<f64, StatsError> {
    let cmd = RemotingCommand::request(request::VIEW_BROKER_STATS_DATA)
        .with_ext("statsName", name)
        .with_ext("statsKey", key);
    let reply = conn.invoke(cmd)?;
    match reply.code {
        response::SUCCESS => {
            let data: serde_json::Value =
                lenient::from_slice(&reply.body).map_err(|source| StatsError::Parse {
                    name: name.to_string(),
                    key: key.to_string(),
                    source,
                })?;
            Ok(data["statsMinute"]["tps"].as_f64().unwrap_or(0.0))
        }
        response::SYSTEM_ERROR
            if reply
                .remark
                .as_deref()
                .is_some_and(|r| r.ends_with("not exist")) =>
        {
            Ok(0.0)
        }
        code => Err(StatsError::Refused {
            name: name.to_string(),
            key: key.to_string(),
            code,
            remark: reply.remark.unwrap_or_default(),
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exporters_items_are_read_per_broker() {
        let snap = Snapshot {
            topics: vec![TopicState {
                topic: "T".into(),
                brokers: vec![TopicOnBroker {
                    broker_name: "b".into(),
                    max_offset: 3,
                    last_update: 0,
                }],
            }],
            groups: vec![GroupState {
                summary: group_summary("g", None, None),
                progress: Some(Progress {
                    group: "g".into(),
                    queues: vec![crate::admin::group::QueueProgress {
                        topic: "T".into(),
                        broker_name: "c".into(),
                        queue_id: 0,
                        broker_offset: 3,
                        consumer_offset: 1,
                        diff: 2,
                        last_timestamp: 0,
                    }],
                    consume_tps: 0.0,
                    diff_total: 2,
                }),
                connection: None,
                latency_ms: BTreeMap::new(),
            }],
            ..Snapshot::default()
        };
        let wanted = wanted_stats(&snap);
        let items = |b: &str| -> Vec<(&str, &str)> {
            wanted[b].iter().map(|(n, k)| (*n, k.as_str())).collect()
        };
        assert_eq!(items("b"), [(TOPIC_PUT_NUMS, "T"), (TOPIC_PUT_SIZE, "T")]);
        assert_eq!(
            items("c"),
            [(GROUP_GET_NUMS, "T@g"), (GROUP_GET_SIZE, "T@g")]
        );
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
