//! The controller of RocketMQ 5's controller mode (RIP-44): decides which replica of each
//! broker group is master, and keeps that decision replicated with Raft (tikv's raft-rs) among
//! the controllers, so masters fail over without an operator.
//!
//! | file | owns |
//! |---|---|
//! | [`state`] | the replicated state (groups, replicas, master, epochs, SyncStateSet) and its commands; pure |
//! | [`liveness`] | broker heartbeats (per controller, not replicated); pure |
//! | [`log_store`] | the Raft log and snapshot on disk (crc32c per record) and raft-rs's `Storage` over them |

pub mod liveness;
pub mod log_store;
pub mod state;
