//! HEART_BEAT's body (`HeartbeatData`) and the queue-lock bodies (LOCK/UNLOCK_BATCH_MQ).
//!
//! Read with [`super::lenient::from_slice`], as Java reads them: Java and Go write enum names, the
//! C++ client writes Java ordinals (`consumeType` 0/1, `messageModel` 0 = BROADCASTING /
//! 1 = CLUSTERING, `consumeFromWhere`) and `subVersion` as a string and omits empty sets; the Go
//! client writes `codeSet` as strings (`["2598919"]`); the Rust client adds unknown keys
//! (`heartbeatFingerprint`, `withoutSub`). The client's `codeSet` is ignored: tag hash codes are
//! recomputed from `tagsSet` (the C++ client's are wrong, Go's differ for non-ASCII).

use std::collections::BTreeSet;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

/// How a group consumes (Java's names, in ordinal order: the C++ client sends ordinals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum ConsumeType {
    /// Pull consumers.
    #[serde(rename = "CONSUME_ACTIVELY")]
    Actively,
    /// Push consumers.
    #[default]
    #[serde(rename = "CONSUME_PASSIVELY")]
    Passively,
}

/// How a group's members share messages (Java's names, in ordinal order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum MessageModel {
    #[serde(rename = "BROADCASTING")]
    Broadcasting,
    #[default]
    #[serde(rename = "CLUSTERING")]
    Clustering,
}

/// Java's `ConsumeFromWhere` names in ordinal order (C++ sends the ordinal).
pub const CONSUME_FROM_WHERE: [&str; 6] = [
    "CONSUME_FROM_LAST_OFFSET",
    "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
    "CONSUME_FROM_MIN_OFFSET",
    "CONSUME_FROM_MAX_OFFSET",
    "CONSUME_FROM_FIRST_OFFSET",
    "CONSUME_FROM_TIMESTAMP",
];

/// `ConsumeFromWhere`, read by name or ordinal and kept as its name (see [`CONSUME_FROM_WHERE`]).
#[derive(Deserialize)]
enum ConsumeFromWhere {
    #[serde(rename = "CONSUME_FROM_LAST_OFFSET")]
    LastOffset,
    #[serde(rename = "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST")]
    LastOffsetAndFromMinWhenBootFirst,
    #[serde(rename = "CONSUME_FROM_MIN_OFFSET")]
    MinOffset,
    #[serde(rename = "CONSUME_FROM_MAX_OFFSET")]
    MaxOffset,
    #[serde(rename = "CONSUME_FROM_FIRST_OFFSET")]
    FirstOffset,
    #[serde(rename = "CONSUME_FROM_TIMESTAMP")]
    Timestamp,
}

fn consume_from_where<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(CONSUME_FROM_WHERE[ConsumeFromWhere::deserialize(d)? as usize].to_string())
}

fn default_expression_type() -> String {
    "TAG".into()
}

/// One subscription of a consumer group (`SubscriptionData`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionData {
    #[serde(default)]
    pub class_filter_mode: bool,
    /// As the client sent it; not trusted (see the module doc).
    #[serde(default)]
    pub code_set: BTreeSet<i64>,
    #[serde(default = "default_expression_type")]
    pub expression_type: String,
    pub sub_string: String,
    #[serde(default)]
    pub sub_version: i64,
    #[serde(default)]
    pub tags_set: BTreeSet<String>,
    pub topic: String,
}

impl SubscriptionData {
    /// True when every tag matches (`*` or an empty expression).
    pub fn matches_all(&self) -> bool {
        let s = self.sub_string.trim();
        s.is_empty() || s == "*"
    }

    /// Tag hash codes computed here from the tags (Java `String.hashCode`).
    pub fn tag_codes(&self) -> BTreeSet<i64> {
        self.tags_set
            .iter()
            .map(|t| crate::message::tags_hash_code(t))
            .collect()
    }
}

/// Parses a TAG expression (`"a || b"`) the way Java's `FilterAPI.buildSubscriptionData` does.
pub fn parse_tag_expression(topic: &str, expression: &str, sub_version: i64) -> SubscriptionData {
    let tags_set: BTreeSet<String> = if expression.trim() == "*" || expression.trim().is_empty() {
        BTreeSet::new()
    } else {
        expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    };
    let mut data = SubscriptionData {
        class_filter_mode: false,
        code_set: BTreeSet::new(),
        expression_type: default_expression_type(),
        sub_string: if tags_set.is_empty() {
            "*".into()
        } else {
            expression.trim().into()
        },
        sub_version,
        tags_set,
        topic: topic.into(),
    };
    data.code_set = data.tag_codes();
    data
}

/// One consumer group of a heartbeat (`ConsumerData`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerData {
    #[serde(
        default = "default_consume_from",
        deserialize_with = "consume_from_where"
    )]
    pub consume_from_where: String,
    #[serde(default)]
    pub consume_type: ConsumeType,
    pub group_name: String,
    #[serde(default)]
    pub message_model: MessageModel,
    #[serde(default)]
    pub subscription_data_set: Vec<SubscriptionData>,
    #[serde(default)]
    pub unit_mode: bool,
}

fn default_consume_from() -> String {
    CONSUME_FROM_WHERE[0].into()
}

/// One producer group of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerData {
    pub group_name: String,
}

/// The HEART_BEAT body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(default, rename = "consumerDataSet")]
    pub consumer_data_set: Vec<ConsumerData>,
    #[serde(default, rename = "producerDataSet")]
    pub producer_data_set: Vec<ProducerData>,
}

/// A message queue as JSON bodies name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueue {
    pub broker_name: String,
    pub queue_id: i32,
    pub topic: String,
}

/// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ request body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LockBatchRequest {
    pub client_id: String,
    pub consumer_group: String,
    #[serde(default)]
    pub mq_set: BTreeSet<MessageQueue>,
}

/// LOCK_BATCH_MQ response body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LockBatchResponse {
    /// Java's field is `lockOKMQSet`, which camelCase would not produce.
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: BTreeSet<MessageQueue>,
}

/// GET_CONSUMER_LIST_BY_GROUP response body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerIdList {
    pub consumer_id_list: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_heartbeat_parses() {
        let body = br#"{"clientID":"10.0.0.5@12345#8791234567890","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"cg","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1700000000000,"tagsSet":["TagA"],"topic":"TopicTest"}],"unitMode":false}],"producerDataSet":[{"groupName":"pg"}]}"#;
        let hb: HeartbeatData = crate::protocol::lenient::from_slice(body).unwrap();
        let c = &hb.consumer_data_set[0];
        assert_eq!(c.message_model, MessageModel::Clustering);
        assert_eq!(c.consume_type, ConsumeType::Passively);
        let sub = &c.subscription_data_set[0];
        assert_eq!(sub.sub_version, 1_700_000_000_000);
        assert_eq!(sub.tag_codes(), BTreeSet::from([2598919]));
        assert_eq!(hb.producer_data_set[0].group_name, "pg");
    }

    #[test]
    fn cpp_heartbeat_with_ordinals_and_string_versions_parses() {
        let body = br#"{"clientID":"5615-127.0.0.1@DEFAULT","consumerDataSet":[{"consumeFromWhere":4,"consumeType":0,"groupName":"g","messageModel":0,"subscriptionDataSet":[{"codeSet":[7],"subString":"a || b","subVersion":"1795243811204","tagsSet":["a","b"],"topic":"T"}]}]}
"#;
        let hb: HeartbeatData = crate::protocol::lenient::from_slice(body).unwrap();
        let c = &hb.consumer_data_set[0];
        assert_eq!(c.consume_from_where, "CONSUME_FROM_FIRST_OFFSET");
        assert_eq!(c.consume_type, ConsumeType::Actively);
        assert_eq!(c.message_model, MessageModel::Broadcasting);
        let sub = &c.subscription_data_set[0];
        assert_eq!(sub.sub_version, 1_795_243_811_204);
        assert_eq!(sub.expression_type, "TAG");
        // The C++ client's code set (atoi of the tags) is ignored for ours.
        assert_eq!(sub.tag_codes(), BTreeSet::from([97, 98]));
        assert!(hb.producer_data_set.is_empty());
    }

    #[test]
    fn go_heartbeat_with_string_code_set_parses() {
        let body = br#"{"clientID":"192.0.2.2@c1","producerDataSet":[],"consumerDataSet":[{"groupName":"g","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","subscriptionDataSet":[{"classFilterMode":false,"topic":"T","subString":"TagA","tagsSet":["TagA"],"codeSet":["2598919"],"subVersion":1796396390586635983,"expressionType":"TAG"}],"unitMode":false}]}"#;
        let hb: HeartbeatData = crate::protocol::lenient::from_slice(body).unwrap();
        let sub = &hb.consumer_data_set[0].subscription_data_set[0];
        assert_eq!(sub.code_set, BTreeSet::from([2598919]));
        assert_eq!(sub.sub_version, 1_796_396_390_586_635_983);
    }

    #[test]
    fn rust_client_extra_keys_are_ignored_and_bad_enums_rejected() {
        let ok = br#"{"clientID":"c","heartbeatFingerprint":5,"withoutSub":false}"#;
        assert!(crate::protocol::lenient::from_slice::<HeartbeatData>(ok).is_ok());
        let bad = br#"{"clientID":"c","consumerDataSet":[{"groupName":"g","messageModel":9}]}"#;
        assert!(crate::protocol::lenient::from_slice::<HeartbeatData>(bad).is_err());
    }

    #[test]
    fn tag_expressions() {
        let all = parse_tag_expression("T", " * ", 1);
        assert!(all.matches_all());
        let two = parse_tag_expression("T", "TagA || TagB", 1);
        assert_eq!(two.tags_set.len(), 2);
        assert!(two.code_set.contains(&2598919));
        assert!(!two.matches_all());
    }
}
