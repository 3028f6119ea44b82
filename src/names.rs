//! RocketMQ's fixed names, each once: system topics, group-topic prefixes and nameserver KV
//! namespaces (Java's `TopicValidator`, `MixAll`, `NamesrvUtil`). Pure constants, like
//! [`crate::limits`]; every layer may import them.

/// The auto-create template topic.
pub const TBW102: &str = "TBW102";
/// The delay-message topic whose tag codes are delivery times (STORE.md §9).
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
pub const SELF_TEST_TOPIC: &str = "SELF_TEST_TOPIC";
pub const BENCHMARK_TOPIC: &str = "BenchmarkTest";
pub const OFFSET_MOVED_EVENT: &str = "OFFSET_MOVED_EVENT";
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
pub const TRANS_CHECK_MAX_TIME_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";

/// A consumer group's retry topic is this prefix and the group's name.
pub const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
/// A consumer group's dead-letter topic is this prefix and the group's name.
pub const DLQ_GROUP_TOPIC_PREFIX: &str = "%DLQ%";

/// The nameserver KV namespace of ordered topics' `brokerName:queues;…`.
pub const NAMESPACE_ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";
