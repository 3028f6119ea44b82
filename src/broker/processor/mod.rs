//! Request processing on the shard a request was routed to: one file per request family, each
//! turning a `protocol` request into store calls and a response. Dispatch is one `match`.

pub(crate) mod admin;
mod admin_config;
mod admin_consumer;
mod admin_offset;
mod admin_runtime;
mod admin_shards;
mod admin_stats;
mod admin_topic;
pub(crate) mod client;
pub(crate) mod controller;
mod errors;
pub(crate) mod failure;
mod filter;
pub(crate) mod lock;
pub(crate) mod offset;
pub(crate) mod offset_moved;
pub(crate) mod pull;
pub(crate) mod query;
pub(crate) mod relay;
pub mod reply;
pub(crate) mod send;
pub(crate) mod send_back;
pub mod transaction;

use crate::protocol::FieldError;
use crate::remoting::response as resp;

/// A failed request: response code and remark.
pub(crate) type Failure = (i32, String);

pub(crate) fn field_failure(e: FieldError) -> Failure {
    (resp::SYSTEM_ERROR, e.to_string())
}
