//! The broker (being built): per-shard request processing over the store. So far: the client
//! registry that heartbeats feed.

pub mod consumer_groups;
