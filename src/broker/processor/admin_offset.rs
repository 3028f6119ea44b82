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

use super::admin::{encode_failure, encode_mq_map};
use super::{field_failure, Failure};
use crate::broker::mesh_proto::{AdminAnswer, AdminQuery};
use crate::broker::mesh_proto::{QueueReset, ShardFailure};
use crate::broker::placement::owner_shard;
use crate::broker::shard::Shard;
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

/// The offset a reset moves a queue to: `target` (below 0 counts as 0) when forced, when the
/// group has no offset yet or when it is before the group's offset; else the group's offset.
pub fn reset_target(target: i64, before: Option<i64>, force: bool) -> i64 {
    let target = target.max(0);
    match before {
        Some(current) if !force && target >= current => current,
        _ => target,
    }
}

impl Shard {
    /// INVOKE_BROKER_TO_RESET_OFFSET: header `topic`, `group`, `timestamp` (ms, -1 = the max
    /// offset), `isForce`.
    pub(crate) async fn reset_offset(
        &self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let topic = cmd.req_str("topic").map_err(field_failure)?;
        let group = cmd.req_str("group").map_err(field_failure)?;
        let timestamp = cmd.req_i64("timestamp").map_err(field_failure)?;
        let force = cmd.req_str("isForce").map_err(field_failure)?;
        let force = force.eq_ignore_ascii_case("true");
        let control = self.admin_control()?;
        let Some(queues) = self.write_queues(topic)? else {
            let remark = format!(
                "[reset-offset] reset offset failed, no topic in this broker. topic={topic}"
            );
            return Err((resp::SYSTEM_ERROR, remark));
        };
        let channels = control.clients.borrow().consumer_channels(group);
        if channels.is_empty() {
            let remark = format!(
                "Consumer not online, so can not reset offset, Group: {group} Topic: {topic} \
                 Timestamp: {timestamp}"
            );
            return Err((resp::CONSUMER_NOT_ONLINE, remark));
        }
        let stats = self.gather_queue_stats(topic, queues, Some(group)).await?;
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
        for answer in self.ask_all_shards(query).await? {
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
            .map(|r| (self.message_queue(topic, r.queue_id), r.offset))
            .collect();
        let table = encode_mq_map(&entries).map_err(encode_failure)?;
        let body = format!(r#"{{"offsetTable":{table}}}"#);
        let push_body = match cmd.language {
            LanguageCode::Cpp => {
                let broker_name = &self.ctx.cfg.broker_name;
                let offset_table = resets
                    .iter()
                    .map(|r| QueueForC {
                        broker_name,
                        offset: r.offset,
                        queue_id: r.queue_id,
                        topic,
                    })
                    .collect();
                serde_json::to_string(&ResetOffsetBodyForC { offset_table })
                    .map_err(encode_failure)?
            }
            _ => body.clone(),
        };
        let push = RemotingCommand::request(req::RESET_CONSUMER_CLIENT_OFFSET)
            .with_ext("topic", topic)
            .with_ext("group", group)
            .with_ext("timestamp", timestamp.to_string())
            .with_ext("isForce", force.to_string())
            .with_body(push_body.into_bytes());
        self.mesh.send_to_channels(
            &self.connections,
            channels.into_iter().map(|c| (c, push.clone())).collect(),
        );
        Ok(cmd.success_to().with_body(body.into_bytes()))
    }

    /// The reset of the queues of `0..queues` this shard owns (see [`reset_target`]).
    pub(crate) async fn reset_local(
        &self,
        topic: &str,
        group: &str,
        queues: i32,
        timestamp: i64,
        force: bool,
    ) -> Result<Vec<QueueReset>, ShardFailure> {
        let mine = |q: &i32| owner_shard(topic, *q, self.ctx.shards) == self.id;
        let mut done = Vec::new();
        for queue_id in (0..queues).filter(mine) {
            let target = match timestamp {
                -1 => self.store.get().readable_max_offset(topic, queue_id),
                t => self
                    .store
                    .get()
                    .offset_by_time(topic, queue_id, t)
                    .await
                    .map_err(|e| ShardFailure::NoOffsetByTime {
                        topic: topic.to_string(),
                        queue_id,
                        reason: e.to_string(),
                    })?,
            };
            let before = self.offsets.query(topic, group, queue_id);
            let offset = reset_target(target, before, force);
            self.offsets.commit(topic, group, queue_id, offset);
            done.push(QueueReset {
                queue_id,
                before,
                offset,
            });
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
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
