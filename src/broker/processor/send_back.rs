//! CONSUMER_SEND_MSG_BACK (36): a consumer failed a message; it goes to `%RETRY%group` after the
//! delay of its reconsume count (level 3 + times: 10 s, 30 s, 1 m, …), or to `%DLQ%group` once
//! it was reconsumed the group's maximum (16 by default) or the client asks (delayLevel < 0).
//! Runs on the shard that holds the original record (from the physical offset).

use super::{field_failure, Failure};
use crate::broker::context::BrokerContext;
use crate::broker::schedule;
use crate::broker::services::puts::Puts;
use crate::broker::services::topic_creation::TopicCreation;
use crate::broker::topic_config::{dlq_topic, retry_topic, SCHEDULE_TOPIC};
use crate::message::offset_msg_id;
use crate::message::properties::{self, Properties};
use crate::message::record::{RecordInput, RecordView};
use crate::protocol::Fields;
use crate::remoting::{response as resp, RemotingCommand};

/// Java's default `retryMaxTimes` of a subscription group.
const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;

/// Stores a failed message again: read from this shard's store, put (through `puts`) on the
/// group's retry or DLQ topic, created by `creation` if missing.
pub(crate) async fn send_back(
    ctx: &BrokerContext,
    puts: Puts<'_>,
    creation: &impl TopicCreation,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let offset = cmd.req_i64("offset").map_err(field_failure)?;
    let group = cmd.req_str("group").map_err(field_failure)?.to_string();
    let delay_level = cmd
        .opt_i64("delayLevel")
        .map_err(field_failure)?
        .unwrap_or(0);
    let max = cmd
        .opt_i64("maxReconsumeTimes")
        .map_err(field_failure)?
        .filter(|_| cmd.version >= 121)
        .map_or(DEFAULT_MAX_RECONSUME_TIMES, |m| m as i32);
    if !ctx.writable() {
        return Err((
            resp::NO_PERMISSION,
            format!(
                "the broker[{}] sending message is forbidden",
                ctx.broker_addr
            ),
        ));
    }
    let stored = puts
        .store
        .get()
        .read_by_physical_offset(offset)
        .await
        .map_err(|e| {
            (
                resp::SYSTEM_ERROR,
                format!("look message by offset failed, {offset}: {e}"),
            )
        })?;
    let original = RecordView::parse(&stored).map_err(|e| (resp::SYSTEM_ERROR, e.to_string()))?;
    let mut props = Properties::parse(original.properties);
    if props.get(properties::RETRY_TOPIC).is_none() {
        props.set(properties::RETRY_TOPIC, original.topic);
    }
    if props.get(properties::ORIGIN_MESSAGE_ID).is_none() {
        props.set(
            properties::ORIGIN_MESSAGE_ID,
            &offset_msg_id(original.store_host, original.physical_offset),
        );
    }
    props.remove(properties::DELAY);
    let dead = original.reconsume_times >= max || delay_level < 0;
    let (mut topic, mut queue) = match dead {
        true => (dlq_topic(&group), 0),
        false => (retry_topic(&group), 0),
    };
    creation
        .ensure_group_topic(&topic, 1)
        .await
        .ok_or_else(|| (resp::SYSTEM_ERROR, format!("cannot create topic {topic}")))?;
    if !dead {
        let level = if delay_level == 0 {
            3 + original.reconsume_times as i64
        } else {
            delay_level
        };
        let levels = ctx.cfg.message_delay_levels_ms.len();
        queue =
            schedule::to_schedule_queue(&mut props, &topic, queue, level.max(1) as usize, levels);
        topic = SCHEDULE_TOPIC.to_string();
    }
    let wire = props.to_wire();
    let input = RecordInput {
        topic: &topic,
        queue_id: queue,
        flag: original.flag,
        sys_flag: original.sys_flag,
        born_timestamp: original.born_timestamp,
        born_host: original.born_host,
        store_host: ctx.store_host,
        reconsume_times: original.reconsume_times + 1,
        prepared_transaction_offset: 0,
        body: original.body,
        properties: &wire,
    };
    puts.put_input(&input)
        .await
        .map_err(super::failure::send_back)?;
    Ok(cmd.success_to())
}
