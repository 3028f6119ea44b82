//! INVOKE_BROKER_TO_RESET_OFFSET (222) on the control shard: mqadmin's `resetOffsetByTime` and
//! the dashboard's reset. As Java's `Broker2Client.resetOffset`: for every write queue of the
//! topic, the offset of the first message stored at or after `timestamp` (`-1`: the queue's max
//! offset), kept only when `isForce` or when it lies before the group's offset; the group's
//! online clients are told with RESET_CONSUMER_CLIENT_OFFSET (220, oneway; the list form of
//! `ResetOffsetBodyForC` when the request came from a C++ client, `-c`), and the answer is the
//! new offset table. A group with no client online is refused with CONSUMER_NOT_ONLINE, which
//! mqadmin answers by writing the offsets itself (UPDATE_CONSUMER_OFFSET).
//!
//! Unlike Java, ringmq also commits the new offsets to its own offset table (on the shards that
//! own the queues), so consumer stats show them at once and a client that misses the push (or
//! restarts) resumes from them.

use serde::Serialize;

use std::cell::RefCell;

use super::admin_shards::{encode_failure, encode_mq_map, message_queue, AllShards};
use super::{field_failure, Failure};
use crate::broker::consumer_groups::ClientRegistry;
use crate::broker::mesh_proto::QueueReset;
use crate::broker::mesh_proto::{AdminAnswer, AdminQuery};
use crate::broker::services::connections::Connections;
use crate::broker::services::topic_book::TopicBook;
use crate::config::BrokerConfig;
use crate::protocol::Fields;
use crate::remoting::{request as req, response as resp, LanguageCode, RemotingCommand};

/// `MessageQueueForC` of `ResetOffsetBodyForC` (fastjson field order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueForC<'a> {
    broker_name: &'a str,
    offset: i64,
    queue_id: i32,
    topic: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResetOffsetBodyForC<'a> {
    offset_table: Vec<QueueForC<'a>>,
}

/// INVOKE_BROKER_TO_RESET_OFFSET: header `topic`, `group`, `timestamp` (ms, -1 = the max
/// offset), `isForce`. The group's clients are told on their connections (`connections`
/// here, the other shards' over the mesh).
pub(crate) async fn reset_offset(
    cfg: &BrokerConfig,
    topics: &TopicBook,
    clients: &RefCell<ClientRegistry>,
    all: &AllShards<'_>,
    connections: &Connections,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let group = cmd.req_str("group").map_err(field_failure)?;
    let timestamp = cmd.req_i64("timestamp").map_err(field_failure)?;
    let force = cmd.req_str("isForce").map_err(field_failure)?;
    let force = force.eq_ignore_ascii_case("true");
    let Some(queues) = topics.write_queues(topic) else {
        let remark =
            format!("[reset-offset] reset offset failed, no topic in this broker. topic={topic}");
        return Err((resp::SYSTEM_ERROR, remark));
    };
    let channels = clients.borrow().consumer_channels(group);
    if channels.is_empty() {
        let remark = format!(
            "Consumer not online, so can not reset offset, Group: {group} Topic: {topic} \
             Timestamp: {timestamp}"
        );
        return Err((resp::CONSUMER_NOT_ONLINE, remark));
    }
    let stats = all.queue_stats(topic, queues, Some(group)).await?;
    if stats.iter().all(|s| s.consumer_offset.is_none()) {
        // Java's remark, typo included.
        let remark = format!("THe consumer group <{group}> not exist");
        return Err((resp::SYSTEM_ERROR, remark));
    }
    let query = || AdminQuery::ResetOffsets {
        topic: topic.to_string(),
        group: group.to_string(),
        queues,
        timestamp,
        force,
    };
    let mut resets: Vec<QueueReset> = Vec::new();
    for answer in all.ask(query).await? {
        match answer {
            AdminAnswer::Reset(Ok(done)) => resets.extend(done),
            AdminAnswer::Reset(Err(e)) => return Err(super::failure::shard(e)),
            _ => {}
        }
    }
    resets.sort_by_key(|r| r.queue_id);
    tracing::info!(
        topic,
        group,
        timestamp,
        force,
        ?resets,
        "consumer offsets reset"
    );
    let entries: Vec<_> = resets
        .iter()
        .map(|r| (message_queue(cfg, topic, r.queue_id), r.offset))
        .collect();
    let table = encode_mq_map(&entries).map_err(encode_failure)?;
    let body = format!(r#"{{"offsetTable":{table}}}"#);
    let push_body = match cmd.language {
        LanguageCode::Cpp => {
            let broker_name = &cfg.broker_name;
            let offset_table = resets
                .iter()
                .map(|r| QueueForC {
                    broker_name,
                    offset: r.offset,
                    queue_id: r.queue_id,
                    topic,
                })
                .collect();
            serde_json::to_string(&ResetOffsetBodyForC { offset_table }).map_err(encode_failure)?
        }
        _ => body.clone(),
    };
    let push = RemotingCommand::request(req::RESET_CONSUMER_CLIENT_OFFSET)
        .with_ext("topic", topic)
        .with_ext("group", group)
        .with_ext("timestamp", timestamp.to_string())
        .with_ext("isForce", force.to_string())
        .with_body(push_body.into_bytes());
    all.mesh.send_to_channels(
        connections,
        channels.into_iter().map(|c| (c, push.clone())).collect(),
    );
    Ok(cmd.success_to().with_body(body.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::super::admin_shards::reset_target;
    use super::*;

    #[test]
    fn targets_follow_force_and_the_current_offset() {
        assert_eq!(reset_target(3, Some(10), false), 3);
        assert_eq!(reset_target(12, Some(10), false), 10);
        assert_eq!(reset_target(10, Some(10), false), 10);
        assert_eq!(reset_target(12, Some(10), true), 12);
        assert_eq!(reset_target(-5, Some(10), true), 0);
        assert_eq!(reset_target(7, None, false), 7);
    }

    #[test]
    fn the_c_body_is_a_list() {
        let body = ResetOffsetBodyForC {
            offset_table: vec![QueueForC {
                broker_name: "b",
                offset: 4,
                queue_id: 1,
                topic: "T",
            }],
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"offsetTable":[{"brokerName":"b","offset":4,"queueId":1,"topic":"T"}]}"#
        );
    }
}
