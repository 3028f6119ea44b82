//! Broker-side message filters beyond tags: RocketMQ's SQL92 property filter ([`sql`]).
//! Pure: no I/O, no broker state. The broker compiles a subscription's expression once
//! ([`sql::compile_cached`], per shard and expression text) and evaluates it against each
//! candidate record's properties on the shard that owns the queue.

pub mod sql;
