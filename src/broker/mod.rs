//! The broker (being built): per-shard request processing over the store. So far: the client
//! registry that heartbeats feed and the topic table.

pub mod consumer_groups;
pub mod topic_config;
