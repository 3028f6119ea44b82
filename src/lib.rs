//! ringmq: a message broker and nameserver that speak Apache RocketMQ 4.x's remoting protocol,
//! built thread-per-core on glommio (io_uring).
//!
//! # Layout
//!
//! Dependencies flow one way, pure leaves first:
//!
//! | module | owns |
//! |---|---|
//! | [`limits`] | every fixed bound (frame size, header size, in-flight requests), asserted together |
//! | [`names`] | RocketMQ's fixed names: system topics, retry/DLQ prefixes, KV namespaces |
//! | [`log_limit`] | rate-limited logging of repeated conditions (one line per key per interval, with a count) |
//! | [`logfile`] | the servers' log files (`~/logs/rocketmqlogs/broker.log`, …): size rotation, non-blocking |
//! | [`refusal`] | refused requests: per-peer counts and rate-limited WARN lines (broker and nameserver) |
//! | [`config`] | `.properties` parsing into typed configs (`NamesrvConfig`, `BrokerConfig`) |
//! | [`filter`] | SQL92 property filters: parser, evaluator, per-shard compiled selectors (pure) |
//! | [`message`] | the message model and the stored record layout, properties, ids, tag hashes, trace records |
//! | [`remoting`] | the frame, JSON and ROCKETMQ headers, request/response/language codes, `WireError` |
//! | [`protocol`] | typed request/response headers and JSON bodies per command family |
//! | [`net`] | glommio sockets: accept loop, per-connection framing, pipelined dispatch |
//! | [`store`] | one shard's message store: commitlog (O_DIRECT, group commit), consume queues, index, recovery, metadata files |
//! | [`controller`] | RocketMQ 5's controller: master election per broker group, replicated with raft-rs |
//! | [`namesrv`] | the route registry: route table, liveness expiry, request processor |
//! | [`broker`] | the broker: shards (wiring around services with narrow APIs), the mesh protocol, routing, request processors, registration |
//! | `testing` | SimStorage and SimClock for seeded fault tests (tests and the `sim` feature only) |
//! | [`acl`] | plain ACL: request signatures, plain_acl.yml rules, the broker's check and reload |
//! | [`admin`] | `ringmq admin`: mqadmin's commands over the client |
//! | [`dashboard`] | `ringmq dashboard`: web console, `/api/` and `/metrics` over `admin`'s data functions |
//! | [`client`] | a small blocking client (tests, admin); never imports servers |
//!
//! `remoting` and `protocol` are pure: no I/O, no async, no glommio.

// The project's rules that a lint can hold: nothing unfinished on a reachable path, no
// debugging leftovers. CI runs `cargo clippy --all-targets -- -D warnings`.
#![deny(clippy::todo, clippy::unimplemented, clippy::dbg_macro)]

pub mod acl;
pub mod admin;
pub mod broker;
pub mod client;
pub mod config;
pub mod controller;
pub mod dashboard;
pub mod filter;
pub mod fsutil;
pub mod ha;
pub mod limits;
pub mod log_limit;
pub mod logfile;
pub mod message;
pub mod names;
pub mod namesrv;
pub mod net;
pub mod packed_map;
pub mod pidfile;
pub mod protocol;
pub mod refusal;
pub mod remoting;
pub mod runtime;
pub mod store;
#[cfg(any(test, feature = "sim"))]
pub mod testing;
