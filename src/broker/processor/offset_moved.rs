//! OFFSET_MOVED_EVENT messages: when a master answers a pull with PULL_OFFSET_MOVED (the
//! consumer asked for an offset the queue no longer or not yet has, and is moved to
//! `nextBeginOffset`), it stores an `OffsetMovedEvent` in the `OFFSET_MOVED_EVENT` topic (queue
//! 0, tags and keys the consumer group), as RocketMQ 4.x's `PullMessageProcessor.
//! generateOffsetMovedEvent` does — unconditionally there (no config key; 5.x only logs it), and
//! so here. Monitoring tools (Java's `MonitorService`) subscribe to it.

use serde::Serialize;

use crate::broker::context::BrokerContext;
use crate::broker::services::puts::Puts;
use crate::broker::topic_config::OFFSET_MOVED_EVENT;
use crate::message::properties::{self, Properties};
use crate::message::record::RecordInput;
use crate::protocol::heartbeat::MessageQueue;
use crate::store::{Clock, SystemClock};

/// Java's `OffsetMovedEvent` (fastjson field order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OffsetMovedEvent<'a> {
    consumer_group: &'a str,
    message_queue: MessageQueue,
    offset_new: i64,
    offset_request: i64,
}

/// Stores the event of `group`'s pull of `topic`/`queue_id` at `requested` moved to
/// `moved_to` (best effort: a failure is logged, the pull is answered anyway).
pub(crate) async fn offset_moved_event(
    ctx: &BrokerContext,
    puts: Puts<'_>,
    topic: &str,
    queue_id: i32,
    group: &str,
    (requested, moved_to): (i64, i64),
) {
    tracing::warn!(
        topic,
        group,
        requested,
        moved_to,
        "PULL_OFFSET_MOVED: correction offset"
    );
    let event = OffsetMovedEvent {
        consumer_group: group,
        message_queue: MessageQueue {
            broker_name: ctx.cfg.broker_name.clone(),
            queue_id,
            topic: topic.to_string(),
        },
        offset_new: moved_to,
        offset_request: requested,
    };
    let body = match serde_json::to_vec(&event) {
        Ok(body) => body,
        Err(e) => return tracing::warn!(error = %e, "offset moved event not encoded"),
    };
    let mut props = Properties::default();
    props.set(properties::TAGS, group);
    props.set(properties::KEYS, group);
    let wire = props.to_wire();
    let now = SystemClock.now_ms();
    let input = RecordInput::from_broker(OFFSET_MOVED_EVENT, ctx.store_host, now, &body, &wire);
    if let Err(e) = puts.put_input(&input).await {
        tracing::warn!(topic, group, error = %e, "offset moved event not stored");
    }
}
