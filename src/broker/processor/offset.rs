//! Consumer offsets and queue offsets (PROTOCOL.md §7.5), on the shard that owns the queue.

use super::{field_failure, Failure};
use crate::broker::services::offsets::OffsetBook;
use crate::protocol::Fields;
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::store::MessageStore;

/// QUERY_CONSUMER_OFFSET (14).
pub(crate) fn query_consumer_offset(
    offsets: &OffsetBook,
    store: &MessageStore,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let group = cmd.req_str("consumerGroup").map_err(field_failure)?;
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let queue_id = cmd.req_i32("queueId").map_err(field_failure)?;
    let offset = match offsets.query(topic, group, queue_id) {
        Some(offset) => offset,
        // No offset yet: a queue that starts at 0 is consumed from 0 (Java does the same when
        // its first message is still in memory), anything else is QUERY_NOT_FOUND so the
        // client applies consumeFromWhere.
        None if store.min_offset(topic, queue_id) <= 0 => 0,
        None => {
            return Err((
                resp::QUERY_NOT_FOUND,
                "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first".into(),
            ))
        }
    };
    Ok(cmd.success_to().with_ext("offset", offset.to_string()))
}

/// UPDATE_CONSUMER_OFFSET (15).
pub(crate) fn update_consumer_offset(
    offsets: &OffsetBook,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let group = cmd.req_str("consumerGroup").map_err(field_failure)?;
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let queue_id = cmd.req_i32("queueId").map_err(field_failure)?;
    let offset = cmd.req_i64("commitOffset").map_err(field_failure)?;
    offsets.commit(topic, group, queue_id, offset);
    Ok(cmd.success_to())
}

/// GET_MAX_OFFSET (30) and GET_MIN_OFFSET (31).
pub(crate) fn queue_offset(
    store: &MessageStore,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let queue_id = cmd.req_i32("queueId").map_err(field_failure)?;
    let offset = match cmd.code {
        req::GET_MAX_OFFSET => store.readable_max_offset(topic, queue_id),
        _ => store.min_offset(topic, queue_id),
    };
    Ok(cmd.success_to().with_ext("offset", offset.to_string()))
}

/// SEARCH_OFFSET_BY_TIMESTAMP (29).
pub(crate) async fn search_offset(
    store: &MessageStore,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let queue_id = cmd.req_i32("queueId").map_err(field_failure)?;
    let timestamp = cmd.req_i64("timestamp").map_err(field_failure)?;
    let offset = store
        .offset_by_time(topic, queue_id, timestamp)
        .await
        .map_err(|e| (resp::SYSTEM_ERROR, e.to_string()))?;
    Ok(cmd.success_to().with_ext("offset", offset.to_string()))
}

/// GET_EARLIEST_MSG_STORETIME (32).
pub(crate) async fn earliest_store_time(
    store: &MessageStore,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let queue_id = cmd.req_i32("queueId").map_err(field_failure)?;
    let time = store
        .earliest_store_time(topic, queue_id)
        .await
        .map_err(|e| (resp::SYSTEM_ERROR, e.to_string()))?;
    Ok(cmd
        .success_to()
        .with_ext("timestamp", time.unwrap_or(-1).to_string()))
}
