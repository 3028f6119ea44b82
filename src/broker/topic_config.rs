//! The broker's topic table (`TopicConfigManager`): system topics created at start, topics
//! auto-created on first send from the `TBW102` template, retry and DLQ topics, and the table a
//! broker registers with its nameservers. Persisted in `config/topics.json` on every change:
//! each mutation returns the [`PersistJob`] that writes the new table off the shard thread.

use crate::config::BrokerConfig;
use crate::protocol::register::{TopicConfig, TopicConfigWrapper};
use crate::store::metadata::{self, MetadataError, OrderedFile, PersistJob, TopicTable};

pub use crate::names::{
    BENCHMARK_TOPIC, DLQ_GROUP_TOPIC_PREFIX, OFFSET_MOVED_EVENT, RETRY_GROUP_TOPIC_PREFIX,
    SCHEDULE_TOPIC, SELF_TEST_TOPIC, TBW102, TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC,
    TRANS_OP_HALF_TOPIC,
};

/// Permission bits (`PermName`).
pub mod perm {
    pub const INHERIT: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const READ: i32 = 4;
}

/// Topics a producer may not send to directly (`TopicValidator.NOT_ALLOWED_SEND_TOPIC_SET`).
const NOT_ALLOWED_SEND: [&str; 6] = [
    SCHEDULE_TOPIC,
    TRANS_HALF_TOPIC,
    TRANS_OP_HALF_TOPIC,
    TRANS_CHECK_MAX_TIME_TOPIC,
    SELF_TEST_TOPIC,
    OFFSET_MOVED_EVENT,
];

/// The retry topic of `group`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_GROUP_TOPIC_PREFIX}{group}")
}

/// The dead-letter topic of `group`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_GROUP_TOPIC_PREFIX}{group}")
}

/// Which rule a send's topic name breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("the topic is blank")]
    Blank,
    #[error("the topic is longer than {max} characters")]
    TooLong { max: usize },
    #[error("the topic [{topic}] contains the illegal character {c:?}")]
    IllegalCharacter { topic: String, c: char },
    #[error("sending message to topic[{0}] is forbidden")]
    Forbidden(String),
}

/// Checks a topic name as Java's `msgCheck` does: not blank, at most 127 characters, only
/// `%|a-zA-Z0-9_-`, and not a topic producers may not send to. The error says which rule.
pub fn check_send_topic(topic: &str) -> Result<(), TopicNameError> {
    if topic.trim().is_empty() {
        return Err(TopicNameError::Blank);
    }
    if topic.len() > crate::limits::TOPIC_NAME_MAX_BYTES {
        return Err(TopicNameError::TooLong {
            max: crate::limits::TOPIC_NAME_MAX_BYTES,
        });
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "%|_-".contains(*c)))
    {
        return Err(TopicNameError::IllegalCharacter {
            topic: topic.to_string(),
            c,
        });
    }
    if NOT_ALLOWED_SEND.contains(&topic) {
        return Err(TopicNameError::Forbidden(topic.to_string()));
    }
    Ok(())
}

fn topic(name: &str, queues: i32, perm: i32) -> TopicConfig {
    TopicConfig {
        order: false,
        perm,
        read_queue_nums: queues,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_name: name.into(),
        topic_sys_flag: 0,
        write_queue_nums: queues,
    }
}

/// Topics that changed (`Some`) or went (`None`).
pub type TopicChanges = Vec<(String, Option<TopicConfig>)>;

/// The topic table of one broker.
pub struct TopicConfigManager {
    table: TopicTable,
    file: Option<OrderedFile>,
}

impl TopicConfigManager {
    /// Loads `config/topics.json` under the store root (when `persist`), then adds the system
    /// topics of STORE.md §8 that are missing.
    pub fn open(cfg: &BrokerConfig, persist: bool) -> Result<TopicConfigManager, MetadataError> {
        let path = persist.then(|| metadata::MetadataPaths::new(&cfg.store_path_root_dir).topics);
        let table = match &path {
            Some(p) => metadata::load::<TopicTable>(p)?,
            None => TopicTable::new(),
        };
        let file = path.map(OrderedFile::new);
        let mut manager = TopicConfigManager { table, file };
        for config in system_topics(cfg) {
            manager.table.seed(config);
        }
        Ok(manager)
    }

    /// A topic's config.
    pub fn get(&self, name: &str) -> Option<&TopicConfig> {
        self.table.get(name)
    }

    /// Creates `topic` on its first send from `default_topic` when that template exists with the
    /// INHERIT bit (TBW102 with `autoCreateTopicEnable`): queues = min(client's count, the
    /// template's write queues), perm = the template's without INHERIT. `None` when it may not
    /// be auto-created (the send then gets TOPIC_NOT_EXIST). The job writes the table when
    /// the topic was created.
    pub fn create_on_send(
        &mut self,
        name: &str,
        default_topic: &str,
        client_queue_nums: i32,
        topic_sys_flag: i32,
    ) -> Result<(Option<TopicConfig>, PersistJob), MetadataError> {
        if let Some(existing) = self.table.get(name) {
            return Ok((Some(existing.clone()), PersistJob::none()));
        }
        let Some(template) = self.table.get(default_topic) else {
            return Ok((None, PersistJob::none()));
        };
        if template.perm & perm::INHERIT == 0 {
            return Ok((None, PersistJob::none()));
        }
        let queues = client_queue_nums.clamp(1, template.write_queue_nums.max(1));
        let mut config = topic(name, queues, template.perm & !perm::INHERIT);
        config.topic_sys_flag = topic_sys_flag;
        let job = self.upsert(config.clone())?;
        Ok((Some(config), job))
    }

    /// Creates a group's retry (or DLQ) topic if missing: `queues` queues, perm RW. The job is
    /// `Some` when the topic was created.
    pub fn ensure_group_topic(
        &mut self,
        name: &str,
        queues: i32,
    ) -> Result<(TopicConfig, Option<PersistJob>), MetadataError> {
        if let Some(existing) = self.table.get(name) {
            return Ok((existing.clone(), None));
        }
        let config = topic(name, queues.max(1), perm::READ | perm::WRITE);
        let job = self.upsert(config.clone())?;
        Ok((config, Some(job)))
    }

    /// UPDATE_AND_CREATE_TOPIC.
    pub fn upsert(&mut self, config: TopicConfig) -> Result<PersistJob, MetadataError> {
        self.table.upsert(config);
        self.persist()
    }

    /// DELETE_TOPIC_IN_BROKER; true when it existed.
    pub fn delete(&mut self, name: &str) -> Result<(bool, PersistJob), MetadataError> {
        let existed = self.table.remove(name).is_some();
        let job = if existed {
            self.persist()?
        } else {
            PersistJob::none()
        };
        Ok((existed, job))
    }

    /// A slave takes its master's table whole (when its data version differs); returns the
    /// topics that changed or went (`None`), for the shards' replicas.
    pub fn replace(
        &mut self,
        table: TopicTable,
    ) -> Result<(TopicChanges, PersistJob), MetadataError> {
        let old = self.table.topics();
        let mut changes: Vec<(String, Option<TopicConfig>)> = old
            .keys()
            .filter(|name| table.get(name).is_none())
            .map(|name| (name.clone(), None))
            .collect();
        for (name, config) in table.topics() {
            if old.get(name) != Some(config) {
                changes.push((name.clone(), Some(config.clone())));
            }
        }
        self.table = table;
        let job = self.persist()?;
        Ok((changes, job))
    }

    /// A new data version with the same topics, as Java's `nextVersion` when the broker's
    /// permission changes: nameservers take a registration's topics only from a new version.
    pub fn next_version(&mut self) -> Result<PersistJob, MetadataError> {
        let mut wrapper = self.table.wrapper().clone();
        metadata::next_version(&mut wrapper.data_version);
        self.table = TopicTable::from_wrapper(wrapper);
        self.persist()
    }

    /// The table's data version.
    pub fn data_version(&self) -> crate::protocol::register::DataVersion {
        self.table.data_version()
    }

    /// The table to register with the nameservers; a broker whose permission is not read-write
    /// registers every topic with its own permission (Java does the same).
    pub fn registration(&self, broker_permission: i32) -> TopicConfigWrapper {
        let mut wrapper = self.table.wrapper().clone();
        if broker_permission != perm::READ | perm::WRITE {
            for config in wrapper.topic_config_table.values_mut() {
                config.perm = broker_permission;
            }
        }
        wrapper
    }

    /// All topics.
    pub fn topics(&self) -> impl Iterator<Item = &TopicConfig> {
        self.table.topics().values()
    }

    /// The job that writes the current table (encoded now; written off the shard thread).
    fn persist(&self) -> Result<PersistJob, MetadataError> {
        match &self.file {
            Some(file) => file.job(&self.table),
            None => Ok(PersistJob::none()),
        }
    }
}

/// The topics every broker has (STORE.md §8).
fn system_topics(cfg: &BrokerConfig) -> Vec<TopicConfig> {
    let rw = perm::READ | perm::WRITE;
    let mut topics = vec![
        topic(SELF_TEST_TOPIC, 1, rw),
        topic(BENCHMARK_TOPIC, 1024, rw),
        topic(OFFSET_MOVED_EVENT, 1, rw),
        topic(
            SCHEDULE_TOPIC,
            cfg.message_delay_levels_ms.len().max(1) as i32,
            rw,
        ),
        topic(&format!("{}_REPLY_TOPIC", cfg.broker_cluster_name), 1, rw),
    ];
    if cfg.auto_create_topic_enable {
        topics.push(topic(
            TBW102,
            cfg.default_topic_queue_nums as i32,
            rw | perm::INHERIT,
        ));
    }
    let inherit = |enabled: bool| if enabled { rw | perm::INHERIT } else { rw };
    topics.push(topic(
        &cfg.broker_cluster_name,
        16,
        inherit(cfg.cluster_topic_enable),
    ));
    topics.push(topic(&cfg.broker_name, 1, inherit(cfg.broker_topic_enable)));
    if cfg.trace_topic_enable {
        topics.push(topic(&cfg.msg_trace_topic_name, 1, rw));
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig {
            broker_cluster_name: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn system_topics_match_a_java_broker_registration() {
        let manager = TopicConfigManager::open(&config(), false).unwrap();
        let names: Vec<&str> = manager.topics().map(|t| t.topic_name.as_str()).collect();
        // The golden capture's first REGISTER_BROKER (broker/0001) carries exactly these.
        for name in [
            "SCHEDULE_TOPIC_XXXX",
            "SELF_TEST_TOPIC",
            "DefaultCluster",
            "DefaultCluster_REPLY_TOPIC",
            "broker-a",
            "TBW102",
            "BenchmarkTest",
            "OFFSET_MOVED_EVENT",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let tbw = manager.get(TBW102).unwrap();
        assert_eq!((tbw.perm, tbw.write_queue_nums), (7, 8));
        assert_eq!(manager.get(SCHEDULE_TOPIC).unwrap().read_queue_nums, 18);
    }

    #[test]
    fn auto_create_follows_the_template() {
        let mut manager = TopicConfigManager::open(&config(), false).unwrap();
        let created = manager
            .create_on_send("NewTopic", TBW102, 4, 0)
            .unwrap()
            .0
            .unwrap();
        assert_eq!(
            (
                created.perm,
                created.write_queue_nums,
                created.read_queue_nums
            ),
            (6, 4, 4)
        );
        let capped = manager
            .create_on_send("Wide", TBW102, 64, 0)
            .unwrap()
            .0
            .unwrap();
        assert_eq!(capped.write_queue_nums, 8);
        assert!(manager
            .create_on_send("X", "NoTemplate", 4, 0)
            .unwrap()
            .0
            .is_none());
        let mut no_auto = config();
        no_auto.auto_create_topic_enable = false;
        let mut strict = TopicConfigManager::open(&no_auto, false).unwrap();
        assert!(strict
            .create_on_send("NewTopic", TBW102, 4, 0)
            .unwrap()
            .0
            .is_none());
    }

    #[test]
    fn send_topic_checks_name_the_rule() {
        assert!(check_send_topic("Topic_A-1%|x").is_ok());
        assert!(check_send_topic(" ")
            .unwrap_err()
            .to_string()
            .contains("blank"));
        assert!(check_send_topic(&"t".repeat(128))
            .unwrap_err()
            .to_string()
            .contains("127"));
        assert!(check_send_topic("a b")
            .unwrap_err()
            .to_string()
            .contains("illegal character"));
        assert!(check_send_topic(SCHEDULE_TOPIC)
            .unwrap_err()
            .to_string()
            .contains("forbidden"));
    }

    #[test]
    fn non_rw_broker_registers_its_own_permission() {
        let manager = TopicConfigManager::open(&config(), false).unwrap();
        let wrapper = manager.registration(perm::READ);
        assert!(wrapper
            .topic_config_table
            .values()
            .all(|t| t.perm == perm::READ));
    }

    #[test]
    fn topics_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.store_path_root_dir = dir.path().to_path_buf();
        let mut manager = TopicConfigManager::open(&cfg, true).unwrap();
        let (_, job) = manager.create_on_send("Kept", TBW102, 2, 0).unwrap();
        job.run_blocking().unwrap();
        let again = TopicConfigManager::open(&cfg, true).unwrap();
        assert_eq!(again.get("Kept").unwrap().write_queue_nums, 2);
    }
}
