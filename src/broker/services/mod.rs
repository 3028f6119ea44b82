//! A shard's parts ("services"), each owning one piece of the shard's state behind a narrow
//! API with private fields: its store handle ([`store::ShardStore`]), its slice of consumer and
//! delay offsets ([`offsets::OffsetBook`]), its replica of the topic table
//! ([`topics::TopicReplica`]) and of consumer subscriptions
//! ([`subscriptions::SubscriptionReplica`]), the connections it accepted
//! ([`connections::Connections`]), its client of the other shards
//! ([`mesh_client::MeshClient`]), its part in replication ([`replication::Replication`]) and its
//! message counters ([`shard_stats::ShardStats`]). The
//! control shard adds the topic table ([`topic_book::TopicBook`]), the subscription groups
//! ([`group_book::GroupBook`]), orderly consumers' queue locks
//! ([`queue_locks::QueueLocks`]) and the signal to register again
//! ([`registration::RegisterSignal`]). Redpanda's sharded services are the model: one
//! instance per shard, reached on another shard only through a mesh message
//! ([`crate::broker::mesh_proto`]).
//!
//! Services sit below the processors: they import lower layers (store, runtime, net) and the
//! mesh protocol, never a processor or the [`crate::broker::shard::Shard`] that wires them
//! (checked by `crate::broker::import_graph`'s test).

pub mod connections;
pub mod group_book;
pub mod mesh_client;
pub mod offsets;
pub mod puts;
pub mod queue_locks;
pub mod registration;
pub mod replication;
pub mod shard_stats;
pub mod store;
pub mod subscriptions;
pub mod topic_book;
pub mod topic_creation;
pub mod topics;
pub mod transaction_checks;
