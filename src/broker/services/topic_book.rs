//! The control shard's topic table (`config/topics.json`), the one every shard's
//! [`super::topics::TopicReplica`] follows. Lives on the control shard only; the other shards
//! reach it over the mesh. Every change returns the [`PersistJob`] that writes the new table
//! off the shard thread; telling the replicas and the nameservers is the caller's part
//! (`crate::broker::control`).

use crate::broker::topic_config::{TopicChanges, TopicConfigManager};
use crate::protocol::register::{DataVersion, TopicConfig, TopicConfigWrapper};
use crate::store::metadata::{MetadataError, PersistJob, TopicTable};
use std::cell::RefCell;

/// The control shard's topic table.
pub struct TopicBook {
    table: RefCell<TopicConfigManager>,
}

impl TopicBook {
    pub fn new(manager: TopicConfigManager) -> TopicBook {
        TopicBook {
            table: RefCell::new(manager),
        }
    }

    /// A topic's configuration.
    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.table.borrow().get(name).cloned()
    }

    /// A topic's write queue count, if the table has it.
    pub fn write_queues(&self, name: &str) -> Option<i32> {
        self.table.borrow().get(name).map(|t| t.write_queue_nums)
    }

    /// A topic created on its first send from `default_topic`'s template (see
    /// [`TopicConfigManager::create_on_send`]).
    pub fn create_on_send(
        &self,
        name: &str,
        default_topic: &str,
        queue_nums: i32,
        sys_flag: i32,
    ) -> Result<(Option<TopicConfig>, PersistJob), MetadataError> {
        let mut table = self.table.borrow_mut();
        table.create_on_send(name, default_topic, queue_nums, sys_flag)
    }

    /// A group's retry or DLQ topic, created if missing (the job is `Some` when created).
    pub fn ensure_group_topic(
        &self,
        name: &str,
        queues: i32,
    ) -> Result<(TopicConfig, Option<PersistJob>), MetadataError> {
        self.table.borrow_mut().ensure_group_topic(name, queues)
    }

    /// Creates or replaces a topic (UPDATE_AND_CREATE_TOPIC).
    pub fn upsert(&self, config: TopicConfig) -> Result<PersistJob, MetadataError> {
        self.table.borrow_mut().upsert(config)
    }

    /// Deletes a topic; true when it existed.
    pub fn delete(&self, name: &str) -> Result<(bool, PersistJob), MetadataError> {
        self.table.borrow_mut().delete(name)
    }

    /// Takes a master's table whole (a slave); the topics that changed or went.
    pub fn replace(&self, table: TopicTable) -> Result<(TopicChanges, PersistJob), MetadataError> {
        self.table.borrow_mut().replace(table)
    }

    /// A new data version with the same topics (the broker's permission changed).
    pub fn next_version(&self) -> Result<PersistJob, MetadataError> {
        self.table.borrow_mut().next_version()
    }

    /// The table's data version.
    pub fn data_version(&self) -> DataVersion {
        self.table.borrow().data_version()
    }

    /// The table as registered with the nameservers under `broker_permission`.
    pub fn registration(&self, broker_permission: i32) -> TopicConfigWrapper {
        self.table.borrow().registration(broker_permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::topic_config::perm;
    use crate::config::BrokerConfig;

    #[test]
    fn topics_are_created_changed_and_deleted_with_new_versions() {
        let manager = TopicConfigManager::open(&BrokerConfig::default(), false).unwrap();
        let book = TopicBook::new(manager);
        let before = book.data_version();
        let (config, job) = book.ensure_group_topic("%RETRY%g", 2).unwrap();
        assert!(job.is_some(), "created just now");
        assert_eq!(
            (config.write_queue_nums, book.write_queues("%RETRY%g")),
            (2, Some(2))
        );
        assert!(book.ensure_group_topic("%RETRY%g", 5).unwrap().1.is_none());
        assert_ne!(book.data_version(), before);
        let wrapper = book.registration(perm::READ);
        assert_eq!(wrapper.topic_config_table["%RETRY%g"].perm, perm::READ);
        assert_eq!(
            book.get("%RETRY%g").map(|t| t.perm),
            Some(perm::READ | perm::WRITE)
        );
        let (existed, _) = book.delete("%RETRY%g").unwrap();
        assert!(existed && book.get("%RETRY%g").is_none());
        assert!(!book.delete("%RETRY%g").unwrap().0);
    }
}
