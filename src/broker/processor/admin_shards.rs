//! What each shard answers for the admin requests, and the fan-out that asks them all: a
//! shard's own figures ([`ShardFigures`]: queue offsets and store times, consumer and delay
//! offsets, message counters, refusals, stats items; a consumer offset reset, a deleted
//! topic's data) and [`AllShards`], which asks this shard and then every other one over the
//! mesh ([`AdminQuery`]; each shard answers for the queues [`owner_shard`] gives it). Also
//! fastjson's `Map<MessageQueue, X>`
//! encoding (PROTOCOL.md §6.2) and the small helpers the admin requests share. Runs on every
//! shard; the admin requests themselves run on the control shard (`admin.rs`).

use serde::Serialize;

use super::Failure;
use crate::broker::live_config::LiveConfig;
use crate::broker::mesh_proto::{
    AdminAnswer, AdminQuery, MeshRequest, MeshResponse, OffsetsSnapshot, QueueReset, QueueStat,
    ShardCounters, ShardFailure,
};
use crate::broker::placement::owner_shard;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::offsets::OffsetBook;
use crate::broker::services::shard_stats::ShardStats;
use crate::broker::services::store::ShardStore;
use crate::broker::services::topics::TopicReplica;
use crate::broker::stats::{BrokerStatsData, Totals, GROUP_GET_NUMS};
use crate::config::{BrokerConfig, BrokerRole};
use crate::message::record::RecordView;
use crate::protocol::heartbeat::MessageQueue;
use crate::refusal::Refusals;
use crate::remoting::response as resp;
use crate::store::{split_physical, Clock, MessageStore, SystemClock};

/// Java's remark when a master-only admin change reaches a slave (`validateSlave`).
pub const SLAVE_REMARK: &str = concat!(
    "Can't modify topic or subscription group from slave broker, ",
    "please execute it from master broker."
);

/// Why a deleted topic's data (queues, offsets, statistics) is not gone on every shard.
#[derive(Debug, thiserror::Error)]
pub enum DeleteTopicError {
    /// A shard could not be asked (the hop's remark).
    #[error("{0}")]
    Unasked(String),
    #[error(transparent)]
    OnShard(#[from] ShardFailure),
}

/// The offset a reset moves a queue to: `target` (below 0 counts as 0) when forced, when the
/// group has no offset yet or when it is before the group's offset; else the group's offset.
pub fn reset_target(target: i64, before: Option<i64>, force: bool) -> i64 {
    let target = target.max(0);
    match before {
        Some(current) if !force && target >= current => current,
        _ => target,
    }
}

/// A shard's own figures, as it answers an [`AdminQuery`] (asked by the control shard, or
/// the control shard's own part of an admin request).
#[derive(Clone, Copy)]
pub struct ShardFigures<'a> {
    /// This shard's id and the number of shards (which queues it owns).
    pub shard: usize,
    pub shards: usize,
    pub store: &'a ShardStore,
    pub offsets: &'a OffsetBook,
    pub topics: &'a TopicReplica,
    pub live: &'a LiveConfig,
    pub refusals: &'a Refusals,
    pub stats: &'a ShardStats,
}

impl ShardFigures<'_> {
    /// Serves an [`AdminQuery`] from this shard's own state.
    pub async fn answer(&self, query: AdminQuery) -> AdminAnswer {
        match query {
            AdminQuery::QueueStats {
                topic,
                queues,
                group,
            } => AdminAnswer::QueueStats(self.queue_stats(&topic, queues, group.as_deref()).await),
            AdminQuery::Offsets => AdminAnswer::Offsets(Box::new(self.offsets.snapshot())),
            AdminQuery::Counters => AdminAnswer::Counters(self.counters().await),
            AdminQuery::RemoveGroupOffsets { group } => {
                let topics = self.offsets.remove_group(&group);
                tracing::info!(
                    shard = self.shard,
                    group,
                    topics,
                    "consumer offsets removed"
                );
                AdminAnswer::Done
            }
            AdminQuery::ApplyTopic { name, config } => {
                self.topics.apply(&name, config);
                AdminAnswer::Done
            }
            AdminQuery::ResetOffsets {
                topic,
                group,
                queues,
                timestamp,
                force,
            } => AdminAnswer::Reset(
                reset_local(self, &topic, &group, queues, timestamp, force).await,
            ),
            AdminQuery::ApplyConfig(cfg) => {
                self.live.apply(*cfg);
                AdminAnswer::Done
            }
            AdminQuery::Refusals => AdminAnswer::Refusals(self.refusals.counts()),
            AdminQuery::StatsTotals { name, key } => {
                AdminAnswer::Totals(self.stats.items.totals(&name, &key))
            }
            AdminQuery::DeleteTopicData { topic } => self.delete_topic_data(&topic).await,
        }
    }

    /// True for the queues of `topic` this shard owns.
    fn owns(&self, topic: &str, queue_id: i32) -> bool {
        owner_shard(topic, queue_id, self.shards) == self.shard
    }

    async fn delete_topic_data(&self, topic: &str) -> AdminAnswer {
        let groups = self.offsets.remove_topic(topic);
        self.stats.items.remove_topic(topic);
        match self.store.get().delete_topic(topic).await {
            Ok(queues) => {
                tracing::info!(
                    shard = self.shard,
                    topic,
                    queues,
                    groups,
                    "deleted topic's consume queues and consumer offsets removed"
                );
                AdminAnswer::Done
            }
            Err(e) => AdminAnswer::Failed(ShardFailure::TopicDataKept {
                shard: self.shard,
                reason: e.to_string(),
            }),
        }
    }

    async fn queue_stats(&self, topic: &str, queues: i32, group: Option<&str>) -> Vec<QueueStat> {
        let store = self.store.get();
        let mut stats = Vec::new();
        for queue_id in (0..queues).filter(|q| self.owns(topic, *q)) {
            let max_offset = store.max_offset(topic, queue_id).max(0);
            let consumer_offset = group.and_then(|g| self.offsets.query(topic, g, queue_id));
            let consumer_timestamp = match consumer_offset {
                Some(offset) => store_time(&store, topic, queue_id, offset - 1).await,
                None => 0,
            };
            stats.push(QueueStat {
                queue_id,
                min_offset: store.min_offset(topic, queue_id).max(0),
                max_offset,
                last_update_timestamp: store_time(&store, topic, queue_id, max_offset - 1).await,
                consumer_offset,
                consumer_timestamp,
            });
        }
        stats
    }

    async fn counters(&self) -> ShardCounters {
        let store = self.store.get();
        let (_, min) = split_physical(store.min_physical_offset());
        let (_, max) = split_physical(store.max_physical_offset());
        let (_, flushed) = split_physical(store.flushed_physical_offset());
        let earliest_store_time = match max > min {
            true => first_store_time(&store).await,
            false => None,
        };
        ShardCounters {
            commitlog_min: min,
            commitlog_max: max,
            unflushed: max.saturating_sub(flushed),
            earliest_store_time,
            ..self.stats.message_counters()
        }
    }
}

/// Store time of the message at a queue offset; 0 when there is none (as Java reports).
async fn store_time(store: &MessageStore, topic: &str, queue_id: i32, offset: i64) -> i64 {
    if offset < 0 {
        return 0;
    }
    match store.store_time_at(topic, queue_id, offset).await {
        Ok(time) => time.unwrap_or(0),
        Err(e) => {
            tracing::warn!(topic, queue_id, offset, error = %e, "no store time for stats");
            0
        }
    }
}

/// Store time of the first record of a shard's commitlog (a segment starts with one).
async fn first_store_time(store: &MessageStore) -> Option<i64> {
    let record = store
        .read_by_physical_offset(store.min_physical_offset())
        .await
        .ok()?;
    RecordView::parse(&record).ok().map(|v| v.store_timestamp)
}

/// Admin queries to every shard: this one's figures first, then the others' over the mesh.
#[derive(Clone, Copy)]
pub struct AllShards<'a> {
    pub here: ShardFigures<'a>,
    pub mesh: &'a MeshClient,
}

impl AllShards<'_> {
    /// Runs `query` here and on every other shard; answers in shard order, this shard's first.
    pub async fn ask(&self, query: impl Fn() -> AdminQuery) -> Result<Vec<AdminAnswer>, Failure> {
        let mut answers = vec![self.here.answer(query()).await];
        if self.mesh.shards() <= 1 {
            return Ok(answers);
        }
        let mesh = self.mesh.get().ok_or_else(|| {
            (
                resp::SYSTEM_ERROR,
                "the shard mesh is not ready".to_string(),
            )
        })?;
        for shard in (0..self.mesh.shards()).filter(|s| *s != self.mesh.here()) {
            match mesh.call(shard, MeshRequest::Admin(query())).await {
                Ok(MeshResponse::Admin(answer)) => answers.push(answer),
                Ok(_) => {
                    let remark = format!("shard {shard} sent an unexpected answer");
                    return Err((resp::SYSTEM_ERROR, remark));
                }
                Err(e) => {
                    let remark = format!("shard {shard} did not answer: {e}");
                    return Err((resp::SYSTEM_ERROR, remark));
                }
            }
        }
        Ok(answers)
    }

    /// Figures of `topic`'s queues `0..queues` from every shard, by queue id.
    pub async fn queue_stats(
        &self,
        topic: &str,
        queues: i32,
        group: Option<&str>,
    ) -> Result<Vec<QueueStat>, Failure> {
        let answers = self
            .ask(|| AdminQuery::QueueStats {
                topic: topic.to_string(),
                queues,
                group: group.map(str::to_string),
            })
            .await?;
        let mut stats: Vec<QueueStat> = answers
            .into_iter()
            .flat_map(|a| match a {
                AdminAnswer::QueueStats(s) => s,
                _ => Vec::new(),
            })
            .collect();
        stats.sort_by_key(|s| s.queue_id);
        Ok(stats)
    }

    /// Every shard's consumer and delay offsets, merged.
    pub async fn offsets(&self) -> Result<OffsetsSnapshot, Failure> {
        let mut merged = OffsetsSnapshot::default();
        for answer in self.ask(|| AdminQuery::Offsets).await? {
            if let AdminAnswer::Offsets(snapshot) = answer {
                merged.merge(&snapshot);
            }
        }
        Ok(merged)
    }

    /// Every shard's counters, summed.
    pub async fn counters(&self) -> Result<ShardCounters, Failure> {
        let answers = self.ask(|| AdminQuery::Counters).await?;
        let mut all = answers.into_iter().filter_map(|a| match a {
            AdminAnswer::Counters(c) => Some(c),
            _ => None,
        });
        let first = all.next().unwrap_or_default();
        Ok(all.fold(first, ShardCounters::sum))
    }

    /// An item's totals over every shard (`None`: no such stats name).
    async fn item_totals(&self, name: &str, key: &str) -> Result<Option<Totals>, Failure> {
        let answers = self
            .ask(|| AdminQuery::StatsTotals {
                name: name.to_string(),
                key: key.to_string(),
            })
            .await?;
        let mut sum: Option<Totals> = None;
        for answer in answers {
            if let AdminAnswer::Totals(Some(t)) = answer {
                sum = Some(sum.unwrap_or_default().sum(t));
            }
        }
        Ok(sum)
    }

    /// An item measured over the minute, hour and day (sampled now, into this shard's
    /// history).
    pub async fn measured(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<BrokerStatsData>, Failure> {
        let Some(now) = self.item_totals(name, key).await? else {
            return Ok(None);
        };
        let data = self
            .here
            .stats
            .measure(name, key, SystemClock.now_ms(), now);
        Ok(Some(data).filter(|_| now.times > 0))
    }

    /// Java's `tpsGroupGetNums(group, topic)`: GROUP_GET_NUMS of `topic@group` per second
    /// over the last minute.
    pub async fn group_get_tps(&self, topic: &str, group: &str) -> Result<f64, Failure> {
        let key = format!("{topic}@{group}");
        let data = self.measured(GROUP_GET_NUMS, &key).await?;
        Ok(data.map_or(0.0, |d| d.stats_minute.tps))
    }

    /// Drops a deleted topic's consume queues, consumer offsets and statistics on every
    /// shard (DELETE_TOPIC_IN_BROKER on a master; a slave whose metadata sync found the topic
    /// gone from its master's table).
    pub async fn delete_topic_data(&self, topic: &str) -> Result<(), DeleteTopicError> {
        let data = || AdminQuery::DeleteTopicData {
            topic: topic.to_string(),
        };
        let answers = self
            .ask(data)
            .await
            .map_err(|(_, why)| DeleteTopicError::Unasked(why))?;
        for answer in answers {
            if let AdminAnswer::Failed(failure) = answer {
                return Err(failure.into());
            }
        }
        Ok(())
    }
}

/// The reset of the queues of `0..queues` the shard of `figures` owns (see [`reset_target`]).
async fn reset_local(
    figures: &ShardFigures<'_>,
    topic: &str,
    group: &str,
    queues: i32,
    timestamp: i64,
    force: bool,
) -> Result<Vec<QueueReset>, ShardFailure> {
    let store = figures.store.get();
    let mut done = Vec::new();
    for queue_id in (0..queues).filter(|q| figures.owns(topic, *q)) {
        let target = match timestamp {
            -1 => store.readable_max_offset(topic, queue_id),
            t => store
                .offset_by_time(topic, queue_id, t)
                .await
                .map_err(|e| ShardFailure::NoOffsetByTime {
                    topic: topic.to_string(),
                    queue_id,
                    reason: e.to_string(),
                })?,
        };
        let before = figures.offsets.query(topic, group, queue_id);
        let offset = reset_target(target, before, force);
        figures.offsets.commit(topic, group, queue_id, offset);
        done.push(QueueReset {
            queue_id,
            before,
            offset,
        });
    }
    Ok(done)
}

/// Java's `validateSlave`: topics and groups are changed on the master only.
pub(crate) fn refuse_on_slave(cfg: &BrokerConfig) -> Result<(), Failure> {
    match cfg.broker_role {
        BrokerRole::Slave => Err((resp::SYSTEM_ERROR, SLAVE_REMARK.to_string())),
        _ => Ok(()),
    }
}

/// A queue of this broker, as bodies name it.
pub(crate) fn message_queue(cfg: &BrokerConfig, topic: &str, queue_id: i32) -> MessageQueue {
    MessageQueue {
        broker_name: cfg.broker_name.clone(),
        queue_id,
        topic: topic.to_string(),
    }
}

/// A `Map<MessageQueue, V>` as fastjson writes it (PROTOCOL.md §6.2): every key a JSON object,
/// `{{"brokerName":"b","queueId":0,"topic":"T"}:{…},…}`. Not JSON, but what Java admin tools
/// (fastjson) read back into `TopicStatsTable` and `ConsumeStats`. Entries in the order given.
pub fn encode_mq_map<V: Serialize>(
    entries: &[(MessageQueue, V)],
) -> Result<String, serde_json::Error> {
    let mut out = String::from("{");
    for (i, (mq, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(mq)?);
        out.push(':');
        out.push_str(&serde_json::to_string(value)?);
    }
    out.push('}');
    Ok(out)
}

/// A body that failed to encode, as a failure.
pub fn encode_failure(e: serde_json::Error) -> Failure {
    (resp::SYSTEM_ERROR, format!("cannot encode the body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(topic: &str, queue_id: i32) -> MessageQueue {
        MessageQueue {
            broker_name: "broker-a".into(),
            queue_id,
            topic: topic.into(),
        }
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Offsets {
        broker_offset: i64,
        consumer_offset: i64,
        last_timestamp: i64,
    }

    #[test]
    fn message_queue_keys_are_written_as_objects_like_fastjson() {
        let value = |b, c, t| Offsets {
            broker_offset: b,
            consumer_offset: c,
            last_timestamp: t,
        };
        let entries = vec![
            (mq("TopicTest", 3), value(250, 250, 1795243659612)),
            (mq("%RETRY%g", 0), value(0, 0, 0)),
        ];
        let text = encode_mq_map(&entries).unwrap();
        // The golden ConsumeStats body (java/0054) writes exactly these entries.
        assert_eq!(
            text,
            concat!(
                r#"{{"brokerName":"broker-a","queueId":3,"topic":"TopicTest"}:"#,
                r#"{"brokerOffset":250,"consumerOffset":250,"lastTimestamp":1795243659612},"#,
                r#"{"brokerName":"broker-a","queueId":0,"topic":"%RETRY%g"}:"#,
                r#"{"brokerOffset":0,"consumerOffset":0,"lastTimestamp":0}}"#
            )
        );
        assert_eq!(encode_mq_map::<Offsets>(&[]).unwrap(), "{}");
    }

    #[test]
    fn offsets_of_several_shards_merge() {
        let mut a = OffsetsSnapshot::default();
        a.consumer.commit("T", "g", 0, 5);
        a.delay.set(1, 3);
        let mut b = OffsetsSnapshot::default();
        b.consumer.commit("T", "g", 1, 7);
        b.consumer.commit("U", "h", 0, 1);
        b.delay.set(2, 9);
        a.merge(&b);
        assert_eq!(a.consumer.query("T", "g", 0), Some(5));
        assert_eq!(a.consumer.query("T", "g", 1), Some(7));
        assert_eq!(a.consumer.query("U", "h", 0), Some(1));
        assert_eq!((a.delay.get(1), a.delay.get(2)), (Some(3), Some(9)));
    }

    #[test]
    fn counters_add_up_over_shards() {
        let a = ShardCounters {
            put_msgs: 2,
            commitlog_min: 0,
            commitlog_max: 100,
            earliest_store_time: Some(20),
            ..Default::default()
        };
        let b = ShardCounters {
            put_msgs: 3,
            get_msgs: 1,
            commitlog_min: 50,
            commitlog_max: 10,
            earliest_store_time: Some(10),
            ..Default::default()
        };
        let sum = a.sum(b);
        assert_eq!((sum.put_msgs, sum.get_msgs), (5, 1));
        assert_eq!((sum.commitlog_min, sum.commitlog_max), (0, 110));
        assert_eq!(sum.earliest_store_time, Some(10));
        let none = ShardCounters::default().sum(ShardCounters::default());
        assert_eq!(none.earliest_store_time, None);
    }
}
