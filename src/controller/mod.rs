//! The controller of RocketMQ 5's controller mode (RIP-44): decides which replica of each
//! broker group is master, and keeps that decision replicated with Raft (tikv's raft-rs) among
//! the controllers, so masters fail over without an operator.
//!
//! | file | owns |
//! |---|---|
//! | [`broker_agent`] | a broker in controller mode: identity, heartbeats, role from the controller, fencing (by its replicas, or a lease), SyncStateSet reports |
//! | [`state`] | the replicated state (groups, replicas, master, epochs, SyncStateSet) and its commands; pure |
//! | [`liveness`] | broker heartbeats (per controller, not replicated); pure |
//! | [`log_store`] | the Raft log and snapshot on disk (crc32c per record) and raft-rs's `Storage` over them |
//! | [`node`] | one controller: the thread driving raft-rs, proposals, applying, the leader's scan |
//! | [`service`] | the controller request codes (904, 1001..=1013) on that thread |
//! | [`server`] | the remoting side: forwarding from the nameserver, or a server of its own |
//! | [`transport`] | Raft messages between controllers over TCP |

pub mod broker_agent;
pub mod liveness;
pub mod log_store;
pub mod node;
pub mod server;
pub mod service;
pub mod state;
pub mod transport;

pub use node::{Controller, ControllerError, ControllerHandle, ControllerOptions, Peer};
#[cfg(test)]
mod cluster_tests;
