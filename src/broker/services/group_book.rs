//! The control shard's subscription groups (`config/subscriptionGroup.json`): created by admin
//! requests or on first use, copied whole from the master on a slave, written off the shard
//! thread by its own ordered writer. Lives on the control shard only; the other shards ask it
//! over the mesh and keep what they heard in [`super::subscriptions::SubscriptionReplica`].

use std::cell::RefCell;
use std::path::PathBuf;

use crate::protocol::register::DataVersion;
use crate::store::metadata::{
    self, GroupLookup, MetadataError, OrderedFile, PersistJob, SubscriptionGroupConfig,
    SubscriptionGroupTable,
};

/// The control shard's subscription group table and its file.
pub struct GroupBook {
    groups: RefCell<SubscriptionGroupTable>,
    file: OrderedFile,
}

impl GroupBook {
    /// The table loaded at start, written to `path` on every change.
    pub fn new(groups: SubscriptionGroupTable, path: PathBuf) -> GroupBook {
        GroupBook {
            groups: RefCell::new(groups),
            file: OrderedFile::new(path),
        }
    }

    /// A group's config, created with the defaults when `auto_create` allows it (Java's
    /// `findSubscriptionGroupConfig`), and whether it was created just now (the table must
    /// then be persisted).
    pub fn find_or_create(
        &self,
        group: &str,
        auto_create: bool,
    ) -> (Option<SubscriptionGroupConfig>, bool) {
        let mut groups = self.groups.borrow_mut();
        let lookup = groups.get_or_auto_create(group, auto_create);
        let created = matches!(lookup, GroupLookup::Created(_));
        (lookup.config().cloned(), created)
    }

    /// Creates or replaces a group.
    pub fn update(&self, config: SubscriptionGroupConfig) {
        self.groups.borrow_mut().update(config);
    }

    /// Deletes a group; true when it existed.
    pub fn delete(&self, group: &str) -> bool {
        self.groups.borrow_mut().delete(group).is_some()
    }

    /// The names of every group.
    pub fn names(&self) -> Vec<String> {
        self.groups.borrow().groups().keys().cloned().collect()
    }

    /// The table as subscriptionGroup.json holds it, without indentation (an admin body).
    pub fn encode_compact(&self) -> Result<Vec<u8>, serde_json::Error> {
        metadata::encode_compact(&*self.groups.borrow())
    }

    /// The table's data version.
    pub fn data_version(&self) -> DataVersion {
        self.groups.borrow().data_version()
    }

    /// Takes a master's table whole (a slave).
    pub fn replace(&self, groups: SubscriptionGroupTable) {
        *self.groups.borrow_mut() = groups;
    }

    /// The job that writes the table as it is now.
    pub fn persist_job(&self) -> Result<PersistJob, MetadataError> {
        self.file.job(&*self.groups.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_created_updated_and_deleted() {
        let dir = std::env::temp_dir().join("ringmq-group-book-test.json");
        let book = GroupBook::new(SubscriptionGroupTable::new(), dir);
        let version = book.data_version();
        assert_eq!(book.find_or_create("g", false), (None, false));
        let (found, created) = book.find_or_create("g", true);
        assert!(created && found.is_some_and(|c| c.group_name == "g"));
        assert!(!book.find_or_create("g", false).1, "found, not created");
        assert_ne!(book.data_version(), version);
        let mut config = SubscriptionGroupConfig::new("h");
        config.consume_enable = false;
        book.update(config);
        assert!(book.names().contains(&"h".to_string()));
        let body = String::from_utf8(book.encode_compact().unwrap()).unwrap();
        assert!(body.contains(r#""consumeEnable":false"#), "{body}");
        assert!(book.delete("h") && !book.delete("h"));
        book.replace(SubscriptionGroupTable::new());
        assert!(!book.names().contains(&"g".to_string()));
        assert!(book.persist_job().unwrap().is_some());
    }
}
