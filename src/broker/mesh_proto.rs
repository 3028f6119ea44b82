//! The messages shards send each other over the mesh ([`crate::runtime::mesh`]), and the plain
//! data they carry. This module sits below the processors and the shard's services: it names
//! only data types of lower layers (store, ha, protocol, remoting) and of the few broker parts
//! below the processors (client channels, put batches, stats totals), so every part of the
//! broker can speak it without importing the parts that answer it. Processors build these
//! requests and read these answers; `shard.rs` routes each to the part that serves it.

use crate::broker::consumer_groups::ChannelId;
use crate::ha::master::SlaveLag;
use crate::ha::slave::FollowerStatus;
use crate::protocol::heartbeat::SubscriptionData;
use crate::protocol::register::TopicConfig;
use crate::remoting::RemotingCommand;
use crate::store::metadata::{ConsumerOffsetTable, DelayOffsetTable};
use std::net::SocketAddr;

/// Where a request came from: the client's address and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub peer: SocketAddr,
    pub channel: ChannelId,
}

/// Messages between shards.
pub enum MeshRequest {
    /// Process this client request here and answer it.
    Forward {
        origin: Origin,
        command: RemotingCommand,
    },
    /// Send `command` on connection `connection` of the receiving shard (NOTIFY, check-back).
    SendOnConnection {
        connection: u64,
        command: RemotingCommand,
    },
    /// Send `command` on connection `connection` of the receiving shard and answer with the
    /// client's answer (a relay: GET_CONSUMER_RUNNING_INFO, …).
    Invoke {
        connection: u64,
        command: RemotingCommand,
        timeout: std::time::Duration,
    },
    /// The control shard changed a topic (`None`: deleted).
    TopicChanged {
        name: String,
        config: Option<TopicConfig>,
    },
    /// The control shard's view of a group's subscriptions changed (empty: group gone).
    SubscriptionsChanged {
        group: String,
        subscriptions: Vec<SubscriptionData>,
    },
    /// To the control shard: create `topic` for a send, as TBW102 allows.
    CreateTopicForSend {
        topic: String,
        default_topic: String,
        queue_nums: i32,
        sys_flag: i32,
    },
    /// To the control shard: a connection of the sending shard closed.
    ConnectionClosed { channel: ChannelId },
    /// Look a key up in this shard's index only.
    QueryKey(KeyQuery),
    /// From the control shard: an admin request's figures of this shard.
    Admin(AdminQuery),
    /// Store records built on the sending shard in queues this shard owns, in order, each
    /// as its own put (a [`crate::broker::put_hop`] batch).
    PutMany(Vec<crate::broker::put_hop::HopItem>),
    /// Store records of sends handed over whole and answer each on its client's connection
    /// (told, not called: the sending shard is not woken for the answers; see
    /// [`crate::broker::put_hop`]).
    PutHanded {
        items: Vec<crate::broker::put_hop::HandedItem>,
        progress: std::sync::Arc<crate::broker::put_hop::HandedProgress>,
    },
    /// To a connection's shard: what the owner of handed sends could not write itself.
    Handback(crate::broker::put_hop::Handback),
    /// Store one SEND_BATCH_MESSAGE's records (one queue this shard owns; all or none).
    PutBatch {
        records: Vec<(bytes::BytesMut, crate::message::record::RecordSlots)>,
        wait: bool,
    },
    /// To the control shard: a connection of a producer group (transaction check-back).
    ProducerChannel { group: String },
    /// To the control shard: the connection of a producer client by its client id
    /// (request-reply: the requester of a reply).
    ProducerChannelOf { client_id: String },
    /// To the control shard: a group's current subscriptions.
    GetSubscriptions { group: String },
    /// To the control shard: make sure a group topic (retry, DLQ) exists.
    EnsureGroupTopic { name: String, queues: i32 },
    /// To the control shard: a subscription group a pull names, auto-created when
    /// `autoCreateSubscriptionGroup` allows (answered with [`MeshResponse::Group`]).
    FindGroup { group: String },
    /// From the control shard: subscription groups changed; forget the ones known.
    GroupsChanged,
    /// A slave's HA connection for the receiving shard (a duplicated descriptor it now owns).
    HaLink {
        fd: i32,
        hello: crate::ha::proto::Hello,
    },
    /// This shard's replication figures.
    HaStatus,
    /// A slave's master is (now) here.
    MasterAddr {
        ha: Option<String>,
        remoting: Option<String>,
    },
    /// A slave: offsets copied from the master, for queues the receiving shard owns.
    SyncedOffsets {
        consumer: Vec<(String, i32, i64)>,
        delay: Vec<(i32, i64)>,
    },
}

/// Answers on the mesh.
pub enum MeshResponse {
    Reply(Option<RemotingCommand>),
    Topic(Option<TopicConfig>),
    Messages(Vec<bytes::Bytes>),
    Admin(AdminAnswer),
    Puts(Vec<crate::store::StoreResult<crate::store::PutResult>>),
    PutBatch(crate::store::StoreResult<crate::store::PutBatchResult>),
    Subscriptions(Vec<SubscriptionData>),
    Channel(Option<ChannelId>),
    Ha(HaStatus),
    Invoked(Result<RemotingCommand, crate::net::invoke::InvokeError>),
    /// A subscription group's `consumeEnable`; `None`: no such group.
    Group(Option<bool>),
}

/// One key lookup, as shards run it locally.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    pub topic: String,
    pub key: String,
    pub max: usize,
    pub begin_ts: i64,
    pub end_ts: i64,
}

/// What the control shard asks another shard for an admin request.
#[derive(Debug, Clone)]
pub enum AdminQuery {
    /// Figures of `topic`'s queues `0..queues` this shard owns (and `group`'s offsets on them).
    QueueStats {
        topic: String,
        queues: i32,
        group: Option<String>,
    },
    /// This shard's consumer and delay offset tables.
    Offsets,
    /// This shard's message counters and commitlog figures.
    Counters,
    /// Drop every consumer offset of `group` (DELETE_SUBSCRIPTIONGROUP with removeOffset).
    RemoveGroupOffsets { group: String },
    /// Put a topic changed by an admin request into this shard's replica (`None`: deleted).
    ApplyTopic {
        name: String,
        config: Option<TopicConfig>,
    },
    /// Reset `group`'s offsets on the queues of `topic`'s `0..queues` this shard owns
    /// (INVOKE_BROKER_TO_RESET_OFFSET).
    ResetOffsets {
        topic: String,
        group: String,
        queues: i32,
        timestamp: i64,
        force: bool,
    },
    /// Take this configuration as the current one (UPDATE_BROKER_CONFIG).
    ApplyConfig(Box<crate::config::BrokerConfig>),
    /// This shard's count of refused requests per peer (crate::refusal).
    Refusals,
    /// Drop a deleted topic's consume queues and every group's offsets of it on this shard.
    DeleteTopicData { topic: String },
    /// This shard's totals of a stats item (crate::broker::stats).
    StatsTotals { name: String, key: String },
}

/// A shard's answer to an [`AdminQuery`].
#[derive(Debug, Clone)]
pub enum AdminAnswer {
    QueueStats(Vec<QueueStat>),
    Offsets(Box<OffsetsSnapshot>),
    Counters(ShardCounters),
    Reset(Result<Vec<QueueReset>, ShardFailure>),
    Refusals(std::collections::HashMap<std::net::SocketAddr, u64>),
    Done,
    /// A shard could not do what it was asked.
    Failed(ShardFailure),
    Totals(Option<crate::broker::stats::Totals>),
}

/// Why a shard could not do what an admin query asked. A store error crosses to the asking
/// shard as its text (it may hold an `io::Error`, which is not `Clone`), with what it was about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardFailure {
    #[error("no offset by time in {topic}:{queue_id}: {reason}")]
    NoOffsetByTime {
        topic: String,
        queue_id: i32,
        reason: String,
    },
    #[error("shard {shard}: {reason}")]
    TopicDataKept { shard: usize, reason: String },
}

/// One queue's figures, from the shard that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    pub queue_id: i32,
    pub min_offset: i64,
    pub max_offset: i64,
    /// Store time of the queue's last message (0 when empty).
    pub last_update_timestamp: i64,
    /// The group's committed offset, when a group was asked for and has one.
    pub consumer_offset: Option<i64>,
    /// Store time of the last consumed message (0 when unknown).
    pub consumer_timestamp: i64,
}

/// A shard's consumer and delay offsets.
#[derive(Debug, Clone, Default)]
pub struct OffsetsSnapshot {
    pub consumer: ConsumerOffsetTable,
    pub delay: DelayOffsetTable,
}

impl OffsetsSnapshot {
    /// Adds another shard's offsets (shards own disjoint queues, so nothing is overwritten).
    pub fn merge(&mut self, other: &OffsetsSnapshot) {
        for (key, queues) in other.consumer.table() {
            let Some((topic, group)) = key.split_once('@') else {
                continue;
            };
            for (queue_id, offset) in queues {
                self.consumer.commit(topic, group, *queue_id, *offset);
            }
        }
        for (level, offset) in other.delay.table() {
            self.delay.set(*level, *offset);
        }
    }
}

/// A shard's message counters and commitlog figures (commitlog offsets are in-shard bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounters {
    pub put_msgs: u64,
    pub put_bytes: u64,
    pub get_found: u64,
    pub get_miss: u64,
    pub get_msgs: u64,
    pub commitlog_min: u64,
    pub commitlog_max: u64,
    pub unflushed: u64,
    /// Store time of the shard's first stored message, if any.
    pub earliest_store_time: Option<i64>,
}

impl ShardCounters {
    /// The counters of two shards together (earliest time: the smaller one).
    pub fn sum(self, o: ShardCounters) -> ShardCounters {
        let earliest = match (self.earliest_store_time, o.earliest_store_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ShardCounters {
            put_msgs: self.put_msgs + o.put_msgs,
            put_bytes: self.put_bytes + o.put_bytes,
            get_found: self.get_found + o.get_found,
            get_miss: self.get_miss + o.get_miss,
            get_msgs: self.get_msgs + o.get_msgs,
            commitlog_min: self.commitlog_min.min(o.commitlog_min),
            commitlog_max: self.commitlog_max + o.commitlog_max,
            unflushed: self.unflushed + o.unflushed,
            earliest_store_time: earliest,
        }
    }
}

/// What one shard did to one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueReset {
    pub queue_id: i32,
    /// The group's offset before (None: it had none).
    pub before: Option<i64>,
    /// The group's offset now.
    pub offset: i64,
}

/// One shard's replication figures (runtime info, admin).
pub struct HaStatus {
    pub shard: usize,
    /// Where the shard's commitlog ends.
    pub end: u64,
    pub role: HaRole,
}

/// A shard's side of replication, with its figures.
pub enum HaRole {
    Master(Vec<SlaveLag>),
    Slave(FollowerStatus),
}
