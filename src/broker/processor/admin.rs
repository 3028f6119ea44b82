//! Broker admin and stats requests (PROTOCOL.md §7.15), the ones mqadmin and dashboards send:
//! topics (`admin_topic.rs`), subscription groups, client connections, offsets and consume
//! stats (`admin_consumer.rs`), runtime info and configuration (`admin_runtime.rs`).
//!
//! They run on the control shard (the default route of codes `Shard::route` does not know).
//! Figures that live on other shards (queue offsets and store times, consumer and delay
//! offsets, message counters) are gathered over the mesh with [`AdminQuery`]: each shard
//! answers for the queues [`owner_shard`] gives it. Also here: fastjson's `Map<MessageQueue, X>`
//! encoding (PROTOCOL.md §6.2) and the per-shard message counters ([`ShardStats`]).

use std::cell::{Cell, RefCell};

use serde::Serialize;

use super::admin_runtime::History;
use super::Failure;
use crate::broker::mesh_proto::{
    AdminAnswer, AdminQuery, MeshRequest, MeshResponse, OffsetsSnapshot, QueueStat, ShardCounters,
    ShardFailure,
};
use crate::broker::placement::owner_shard;
use crate::broker::shard::{Control, Shard};
use crate::config::BrokerRole;
use crate::message::record::RecordView;
use crate::protocol::heartbeat::MessageQueue;
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::store::{split_physical, Clock, SystemClock};

/// Java's remark when a master-only admin change reaches a slave (`validateSlave`).
pub const SLAVE_REMARK: &str = concat!(
    "Can't modify topic or subscription group from slave broker, ",
    "please execute it from master broker."
);

/// The request codes this module answers.
const CODES: [i32; 20] = [
    req::UPDATE_AND_CREATE_TOPIC,
    req::DELETE_TOPIC_IN_BROKER,
    req::GET_ALL_TOPIC_CONFIG,
    req::GET_TOPIC_STATS_INFO,
    req::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    req::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    req::DELETE_SUBSCRIPTIONGROUP,
    req::GET_CONSUMER_CONNECTION_LIST,
    req::GET_PRODUCER_CONNECTION_LIST,
    req::GET_CONSUME_STATS,
    req::GET_ALL_CONSUMER_OFFSET,
    req::GET_ALL_DELAY_OFFSET,
    req::QUERY_TOPIC_CONSUME_BY_WHO,
    req::GET_BROKER_RUNTIME_INFO,
    req::GET_BROKER_CONFIG,
    req::CHECK_CLIENT_CONFIG,
    req::INVOKE_BROKER_TO_RESET_OFFSET,
    req::UPDATE_BROKER_CONFIG,
    req::VIEW_BROKER_STATS_DATA,
    req::GET_BROKER_CONSUME_STATS,
];

/// True for the request codes [`Shard::admin`] answers.
pub(crate) fn handles(code: i32) -> bool {
    CODES.contains(&code)
}

/// Message counters of one shard, bumped by the send and pull processors; the control shard's
/// also keeps the samples behind the TPS figures and the day marks of GET_BROKER_RUNTIME_INFO.
#[derive(Debug)]
pub struct ShardStats {
    /// When the shard started (ms).
    pub boot_ms: i64,
    put_msgs: Cell<u64>,
    put_bytes: Cell<u64>,
    get_found: Cell<u64>,
    get_miss: Cell<u64>,
    get_msgs: Cell<u64>,
    pub(super) history: RefCell<History>,
    /// Per-topic and per-group items under Java's stats names (VIEW_BROKER_STATS_DATA).
    pub items: crate::broker::stats::StatsItems,
    /// Samples of the items asked for (control shard).
    pub(super) item_history: crate::broker::stats::StatsHistory,
}

impl Default for ShardStats {
    fn default() -> ShardStats {
        let boot_ms = SystemClock.now_ms();
        ShardStats {
            boot_ms,
            put_msgs: Cell::new(0),
            put_bytes: Cell::new(0),
            get_found: Cell::new(0),
            get_miss: Cell::new(0),
            get_msgs: Cell::new(0),
            history: RefCell::new(History::new(boot_ms)),
            items: Default::default(),
            item_history: Default::default(),
        }
    }
}

impl ShardStats {
    /// A stored send of `messages` messages and `bytes` bytes.
    pub fn count_put(&self, messages: usize, bytes: usize) {
        self.put_msgs.set(self.put_msgs.get() + messages as u64);
        self.put_bytes.set(self.put_bytes.get() + bytes as u64);
    }

    /// An answered pull that carried `messages` messages (0: it found none).
    pub fn count_pull(&self, messages: usize) {
        if messages == 0 {
            self.get_miss.set(self.get_miss.get() + 1);
        } else {
            self.get_found.set(self.get_found.get() + 1);
            self.get_msgs.set(self.get_msgs.get() + messages as u64);
        }
    }
}

impl Shard {
    /// Answers an admin request (on the control shard).
    pub(crate) async fn admin(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        match cmd.code {
            req::UPDATE_AND_CREATE_TOPIC => self.update_topic(cmd).await,
            req::DELETE_TOPIC_IN_BROKER => self.delete_topic(cmd).await,
            req::GET_ALL_TOPIC_CONFIG => self.all_topic_config(cmd),
            req::GET_TOPIC_STATS_INFO => self.topic_stats(cmd).await,
            req::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => self.update_group(cmd).await,
            req::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => self.all_groups(cmd),
            req::DELETE_SUBSCRIPTIONGROUP => self.delete_group(cmd).await,
            req::GET_CONSUMER_CONNECTION_LIST => self.consumer_connections(cmd).await,
            req::GET_PRODUCER_CONNECTION_LIST => self.producer_connections(cmd).await,
            req::GET_CONSUME_STATS => self.consume_stats(cmd).await,
            req::GET_ALL_CONSUMER_OFFSET => self.all_consumer_offsets(cmd).await,
            req::GET_ALL_DELAY_OFFSET => self.all_delay_offsets(cmd).await,
            req::QUERY_TOPIC_CONSUME_BY_WHO => self.topic_consumed_by(cmd).await,
            req::GET_BROKER_RUNTIME_INFO => self.runtime_info(cmd).await,
            req::GET_BROKER_CONFIG => self.broker_config(cmd),
            req::CHECK_CLIENT_CONFIG => self.check_client_config(cmd),
            req::INVOKE_BROKER_TO_RESET_OFFSET => self.reset_offset(cmd).await,
            req::UPDATE_BROKER_CONFIG => self.update_broker_config(cmd).await,
            req::VIEW_BROKER_STATS_DATA => self.view_stats(cmd).await,
            req::GET_BROKER_CONSUME_STATS => self.broker_consume_stats(cmd).await,
            code => Err((
                resp::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {code} not supported"),
            )),
        }
    }

    /// The control shard's state (admin requests are routed there).
    pub(crate) fn admin_control(&self) -> Result<&Control, Failure> {
        self.control.as_ref().ok_or_else(|| {
            (
                resp::SYSTEM_ERROR,
                "an admin request reached a shard that is not the control shard".to_string(),
            )
        })
    }

    /// Java's `validateSlave`: topics and groups are changed on the master only.
    pub(crate) fn refuse_on_slave(&self) -> Result<(), Failure> {
        match self.ctx.cfg.broker_role {
            BrokerRole::Slave => Err((resp::SYSTEM_ERROR, SLAVE_REMARK.to_string())),
            _ => Ok(()),
        }
    }

    /// Serves an [`AdminQuery`] from this shard's own state.
    pub async fn admin_local(&self, query: AdminQuery) -> AdminAnswer {
        match query {
            AdminQuery::QueueStats {
                topic,
                queues,
                group,
            } => AdminAnswer::QueueStats(
                self.local_queue_stats(&topic, queues, group.as_deref())
                    .await,
            ),
            AdminQuery::Offsets => AdminAnswer::Offsets(Box::new(self.offsets.snapshot())),
            AdminQuery::Counters => AdminAnswer::Counters(self.local_counters().await),
            AdminQuery::RemoveGroupOffsets { group } => {
                let topics = self.offsets.remove_group(&group);
                tracing::info!(shard = self.id, group, topics, "consumer offsets removed");
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
                self.reset_local(&topic, &group, queues, timestamp, force)
                    .await,
            ),
            AdminQuery::ApplyConfig(cfg) => {
                self.ctx.live.apply(*cfg);
                AdminAnswer::Done
            }
            AdminQuery::Refusals => AdminAnswer::Refusals(self.refusals.counts()),
            AdminQuery::StatsTotals { name, key } => {
                AdminAnswer::Totals(self.stats.items.totals(&name, &key))
            }
            AdminQuery::DeleteTopicData { topic } => {
                let groups = self.offsets.remove_topic(&topic);
                self.stats.items.remove_topic(&topic);
                match self.store.get().delete_topic(&topic).await {
                    Ok(queues) => {
                        tracing::info!(
                            shard = self.id,
                            topic,
                            queues,
                            groups,
                            "deleted topic's consume queues and consumer offsets removed"
                        );
                        AdminAnswer::Done
                    }
                    Err(e) => AdminAnswer::Failed(ShardFailure::TopicDataKept {
                        shard: self.id,
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }

    /// Runs `query` here and on every other shard; answers in shard order, this shard's first.
    pub(crate) async fn ask_all_shards(
        &self,
        query: impl Fn() -> AdminQuery,
    ) -> Result<Vec<AdminAnswer>, Failure> {
        let mut answers = vec![self.admin_local(query()).await];
        if self.ctx.shards <= 1 {
            return Ok(answers);
        }
        let mesh = self.mesh.get().ok_or_else(|| {
            (
                resp::SYSTEM_ERROR,
                "the shard mesh is not ready".to_string(),
            )
        })?;
        for shard in (0..self.ctx.shards).filter(|s| *s != self.id) {
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
    pub(crate) async fn gather_queue_stats(
        &self,
        topic: &str,
        queues: i32,
        group: Option<&str>,
    ) -> Result<Vec<QueueStat>, Failure> {
        let answers = self
            .ask_all_shards(|| AdminQuery::QueueStats {
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
    pub(crate) async fn gather_offsets(&self) -> Result<OffsetsSnapshot, Failure> {
        let mut merged = OffsetsSnapshot::default();
        for answer in self.ask_all_shards(|| AdminQuery::Offsets).await? {
            if let AdminAnswer::Offsets(snapshot) = answer {
                merged.merge(&snapshot);
            }
        }
        Ok(merged)
    }

    /// Every shard's counters, summed.
    pub(crate) async fn gather_counters(&self) -> Result<ShardCounters, Failure> {
        let answers = self.ask_all_shards(|| AdminQuery::Counters).await?;
        let mut all = answers.into_iter().filter_map(|a| match a {
            AdminAnswer::Counters(c) => Some(c),
            _ => None,
        });
        let first = all.next().unwrap_or_default();
        Ok(all.fold(first, ShardCounters::sum))
    }

    async fn local_queue_stats(
        &self,
        topic: &str,
        queues: i32,
        group: Option<&str>,
    ) -> Vec<QueueStat> {
        let mine = |q: &i32| owner_shard(topic, *q, self.ctx.shards) == self.id;
        let mut stats = Vec::new();
        for queue_id in (0..queues).filter(mine) {
            let max_offset = self.store.get().max_offset(topic, queue_id).max(0);
            let consumer_offset = group.and_then(|g| self.offsets.query(topic, g, queue_id));
            let consumer_timestamp = match consumer_offset {
                Some(offset) => self.store_time(topic, queue_id, offset - 1).await,
                None => 0,
            };
            stats.push(QueueStat {
                queue_id,
                min_offset: self.store.get().min_offset(topic, queue_id).max(0),
                max_offset,
                last_update_timestamp: self.store_time(topic, queue_id, max_offset - 1).await,
                consumer_offset,
                consumer_timestamp,
            });
        }
        stats
    }

    /// Store time of the message at a queue offset; 0 when there is none (as Java reports).
    async fn store_time(&self, topic: &str, queue_id: i32, offset: i64) -> i64 {
        if offset < 0 {
            return 0;
        }
        match self
            .store
            .get()
            .store_time_at(topic, queue_id, offset)
            .await
        {
            Ok(time) => time.unwrap_or(0),
            Err(e) => {
                tracing::warn!(topic, queue_id, offset, error = %e, "no store time for stats");
                0
            }
        }
    }

    async fn local_counters(&self) -> ShardCounters {
        let (_, min) = split_physical(self.store.get().min_physical_offset());
        let (_, max) = split_physical(self.store.get().max_physical_offset());
        let (_, flushed) = split_physical(self.store.get().flushed_physical_offset());
        let earliest_store_time = match max > min {
            true => self.first_store_time().await,
            false => None,
        };
        let s = &self.stats;
        ShardCounters {
            put_msgs: s.put_msgs.get(),
            put_bytes: s.put_bytes.get(),
            get_found: s.get_found.get(),
            get_miss: s.get_miss.get(),
            get_msgs: s.get_msgs.get(),
            commitlog_min: min,
            commitlog_max: max,
            unflushed: max.saturating_sub(flushed),
            earliest_store_time,
        }
    }

    /// Store time of the first record of this shard's commitlog (a segment starts with one).
    async fn first_store_time(&self) -> Option<i64> {
        let record = self
            .store
            .get()
            .read_by_physical_offset(self.store.get().min_physical_offset())
            .await
            .ok()?;
        RecordView::parse(&record).ok().map(|v| v.store_timestamp)
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
pub(crate) fn encode_failure(e: serde_json::Error) -> Failure {
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

    #[test]
    fn pulls_count_found_and_missed() {
        let stats = ShardStats::default();
        stats.count_pull(0);
        stats.count_pull(3);
        stats.count_put(2, 400);
        assert_eq!(
            (
                stats.get_miss.get(),
                stats.get_found.get(),
                stats.get_msgs.get()
            ),
            (1, 1, 3)
        );
        assert_eq!((stats.put_msgs.get(), stats.put_bytes.get()), (2, 400));
        assert!(handles(req::GET_CONSUME_STATS) && !handles(req::SEND_MESSAGE));
    }
}
