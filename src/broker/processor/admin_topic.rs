//! Topic admin on the control shard: UPDATE_AND_CREATE_TOPIC (17), DELETE_TOPIC_IN_BROKER (215),
//! GET_ALL_TOPIC_CONFIG (21) and GET_TOPIC_STATS_INFO (202), with Java's checks and remarks
//! (`AdminBrokerProcessor`, `TopicValidator`). A change is persisted (topics.json), pushed to
//! every shard's replica and re-registered with the nameservers.

use serde::Serialize;

use super::admin_shards::{
    encode_failure, encode_mq_map, message_queue, refuse_on_slave, AllShards,
};
use super::{field_failure, Failure};
use crate::broker::mesh_proto::AdminQuery;
use crate::broker::services::registration::RegisterSignal;
use crate::broker::services::topic_book::TopicBook;
use crate::broker::topic_config::{perm, SCHEDULE_TOPIC, TBW102};
use crate::config::BrokerConfig;
use crate::protocol::heartbeat::MessageQueue;
use crate::protocol::register::TopicConfig;
use crate::protocol::Fields;
use crate::remoting::{response as resp, RemotingCommand};

/// The remark Java leaves on a successful UPDATE_AND_CREATE_TOPIC (its response starts as
/// SYSTEM_ERROR "not set any response code" and only the code is changed; golden java/0006).
pub const UNSET_REMARK: &str = "not set any response code";

/// `TopicValidator.SYSTEM_TOPIC_SET` before the broker adds its own names.
const SYSTEM_TOPICS: [&str; 9] = [
    TBW102,
    SCHEDULE_TOPIC,
    "BenchmarkTest",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
];

/// `TopicValidator.SYSTEM_TOPIC_PREFIX`.
const SYSTEM_TOPIC_PREFIX: &str = "rmq_sys_";

/// `TopicValidator.validateTopic(topic, response)`: the checks and remarks of Java's admin path.
pub fn validate_topic(topic: &str) -> Result<(), Failure> {
    let remark = if topic.trim().is_empty() {
        "The specified topic is blank."
    } else if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "%|_-".contains(c))
    {
        "The specified topic contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$"
    } else if topic.len() > crate::limits::TOPIC_NAME_MAX_BYTES {
        "The specified topic is longer than topic max length."
    } else {
        return Ok(());
    };
    Err((resp::SYSTEM_ERROR, remark.to_string()))
}

/// `TopicValidator.TopicOffset` as TopicStatsTable writes it (fastjson field order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TopicOffset {
    last_update_timestamp: i64,
    max_offset: i64,
    min_offset: i64,
}

/// `TopicValidator.isSystemTopic` with the names the broker adds at start: its cluster and
/// broker names, `<cluster>_REPLY_TOPIC` and the trace topic when enabled.
pub fn is_system_topic(cfg: &BrokerConfig, topic: &str) -> bool {
    SYSTEM_TOPICS.contains(&topic)
        || topic.starts_with(SYSTEM_TOPIC_PREFIX)
        || topic == cfg.broker_cluster_name
        || topic == cfg.broker_name
        || topic == format!("{}_REPLY_TOPIC", cfg.broker_cluster_name)
        || (cfg.trace_topic_enable && topic == cfg.msg_trace_topic_name)
}

fn refuse_system_topic(cfg: &BrokerConfig, topic: &str) -> Result<(), Failure> {
    if is_system_topic(cfg, topic) {
        let remark = format!("The topic[{topic}] is conflict with system topic.");
        return Err((resp::SYSTEM_ERROR, remark));
    }
    Ok(())
}

/// A change of the topic table by an admin request: checked against the broker's settings,
/// made in the control shard's table, put into every shard's replica and registered.
#[derive(Clone, Copy)]
pub(crate) struct TopicChange<'a> {
    pub cfg: &'a BrokerConfig,
    pub topics: &'a TopicBook,
    pub all: &'a AllShards<'a>,
    pub registration: &'a RegisterSignal,
}

impl TopicChange<'_> {
    /// Puts a topic change into every shard's replica, waiting for them (so that the next
    /// request sees it on whichever shard it lands), and re-registers with the nameservers.
    async fn publish(&self, name: &str, config: Option<TopicConfig>) -> Result<(), Failure> {
        let apply = || AdminQuery::ApplyTopic {
            name: name.to_string(),
            config: config.clone(),
        };
        let applied = self.all.ask(apply).await;
        self.registration.soon();
        applied.map(drop)
    }

    /// UPDATE_AND_CREATE_TOPIC (17).
    pub(crate) async fn update(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        refuse_on_slave(self.cfg)?;
        let name = cmd.req_str("topic").map_err(field_failure)?;
        validate_topic(name)?;
        refuse_system_topic(self.cfg, name)?;
        let config = topic_from_header(cmd, name)?;
        let persisted = match self.topics.upsert(config.clone()) {
            Ok(job) => job.run().await,
            Err(e) => Err(e),
        };
        tracing::info!(
            topic = name,
            ?config,
            "topic created or updated by an admin request"
        );
        // The table changed even when the file could not be written: every replica follows it.
        self.publish(name, Some(config)).await?;
        persisted.map_err(|e| {
            (
                resp::SYSTEM_ERROR,
                format!("the topic is not persisted: {e}"),
            )
        })?;
        Ok(cmd.response_to(resp::SUCCESS, Some(UNSET_REMARK.to_string())))
    }

    /// DELETE_TOPIC_IN_BROKER (215): the config, then on every shard the topic's consume
    /// queues and every group's offsets of it; a topic created again under the name starts at
    /// offset 0 with no consumer offsets. The records stay in the commitlog until retention
    /// removes their segments (as in Java); queries by key may still find them.
    pub(crate) async fn delete(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        refuse_on_slave(self.cfg)?;
        let name = cmd.req_str("topic").map_err(field_failure)?;
        if name.trim().is_empty() {
            let remark = "The specified topic is blank.".to_string();
            return Err((resp::SYSTEM_ERROR, remark));
        }
        refuse_system_topic(self.cfg, name)?;
        let deleted = match self.topics.delete(name) {
            Ok((existed, job)) => job.run().await.map(|()| existed),
            Err(e) => Err(e),
        };
        let existed = match deleted {
            Ok(existed) => existed,
            Err(e) => {
                self.publish(name, None).await?;
                let remark = format!("the topic deletion is not persisted: {e}");
                return Err((resp::SYSTEM_ERROR, remark));
            }
        };
        if existed {
            tracing::info!(topic = name, "topic deleted by an admin request");
            self.publish(name, None).await?;
        }
        // Its queues and offsets go whether or not the config was still there (Java's
        // `deleteTopicInBroker`), so a topic made again under the name starts clean.
        self.all
            .delete_topic_data(name)
            .await
            .map_err(super::failure::delete_topic)?;
        Ok(cmd.success_to())
    }
}

/// GET_ALL_TOPIC_CONFIG (21): the TopicConfigSerializeWrapper, as topics.json holds it.
pub(crate) fn all_topic_config(
    topics: &TopicBook,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    // Read-write permission: the table as stored, without the registration's override.
    let wrapper = topics.registration(perm::READ | perm::WRITE);
    let body = serde_json::to_vec(&wrapper).map_err(encode_failure)?;
    let mut response = cmd.success_to().with_body(body);
    response.ext_fields = Some(Default::default());
    Ok(response)
}

/// GET_TOPIC_STATS_INFO (202): min/max offset and last store time of every write queue,
/// from the shards that own them, in a TopicStatsTable (MessageQueue keys).
pub(crate) async fn topic_stats(
    cfg: &BrokerConfig,
    topics: &TopicBook,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let Some(queues) = topics.write_queues(topic) else {
        let remark = format!("topic[{topic}] not exist");
        return Err((resp::TOPIC_NOT_EXIST, remark));
    };
    let stats = all.queue_stats(topic, queues, None).await?;
    let entries: Vec<(MessageQueue, TopicOffset)> = stats
        .iter()
        .map(|s| {
            let offset = TopicOffset {
                last_update_timestamp: s.last_update_timestamp,
                max_offset: s.max_offset,
                min_offset: s.min_offset,
            };
            (message_queue(cfg, topic, s.queue_id), offset)
        })
        .collect();
    let table = encode_mq_map(&entries).map_err(encode_failure)?;
    let body = format!(r#"{{"offsetTable":{table}}}"#);
    Ok(cmd.success_to().with_body(body.into_bytes()))
}

/// The TopicConfig an UPDATE_AND_CREATE_TOPIC header describes (`CreateTopicRequestHeader`).
fn topic_from_header(cmd: &RemotingCommand, name: &str) -> Result<TopicConfig, Failure> {
    let read_queue_nums = cmd.req_i32("readQueueNums").map_err(field_failure)?;
    let write_queue_nums = cmd.req_i32("writeQueueNums").map_err(field_failure)?;
    let perm = cmd.req_i32("perm").map_err(field_failure)?;
    if read_queue_nums < 0 || write_queue_nums < 0 {
        let remark = format!(
            "the queue counts of topic[{name}] may not be negative (read {read_queue_nums}, \
             write {write_queue_nums})"
        );
        return Err((resp::SYSTEM_ERROR, remark));
    }
    let filter_type = cmd.opt_str("topicFilterType").unwrap_or("SINGLE_TAG");
    if filter_type != "SINGLE_TAG" && filter_type != "MULTI_TAG" {
        let remark = format!("topicFilterType {filter_type} is neither SINGLE_TAG nor MULTI_TAG");
        return Err((resp::SYSTEM_ERROR, remark));
    }
    let sys_flag = cmd.opt_i64("topicSysFlag").map_err(field_failure)?;
    Ok(TopicConfig {
        order: cmd.bool_or("order", false),
        perm,
        read_queue_nums,
        topic_filter_type: filter_type.to_string(),
        topic_name: name.to_string(),
        topic_sys_flag: sys_flag.unwrap_or(0) as i32,
        write_queue_nums,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_with_javas_remarks() {
        assert!(validate_topic("Topic_A-1%|x").is_ok());
        let remark = |t: &str| validate_topic(t).unwrap_err().1;
        assert_eq!(remark(" "), "The specified topic is blank.");
        assert_eq!(
            remark("a b"),
            "The specified topic contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$"
        );
        assert_eq!(
            remark(&"t".repeat(128)),
            "The specified topic is longer than topic max length."
        );
        assert!(validate_topic(&"t".repeat(127)).is_ok());
        assert_eq!(validate_topic("").unwrap_err().0, resp::SYSTEM_ERROR);
    }

    #[test]
    fn a_create_header_becomes_a_topic_config() {
        let cmd = RemotingCommand::request(17)
            .with_ext("readQueueNums", "2")
            .with_ext("writeQueueNums", "3")
            .with_ext("perm", "6")
            .with_ext("topicFilterType", "MULTI_TAG")
            .with_ext("topicSysFlag", "1")
            .with_ext("order", "true");
        let config = topic_from_header(&cmd, "T").unwrap();
        assert_eq!(
            (config.read_queue_nums, config.write_queue_nums, config.perm),
            (2, 3, 6)
        );
        assert!(config.order);
        assert_eq!(
            (config.topic_sys_flag, config.topic_filter_type.as_str()),
            (1, "MULTI_TAG")
        );
        let bad = cmd.clone().with_ext("topicFilterType", "SQL");
        assert!(topic_from_header(&bad, "T").is_err());
        let negative = cmd.with_ext("writeQueueNums", "-1");
        assert!(topic_from_header(&negative, "T").is_err());
    }
}
