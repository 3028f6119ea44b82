//! The consumer offsets and delay-level offsets of the queues a shard owns: committed by pulls
//! and UPDATE_CONSUMER_OFFSET, advanced by the delay scheduler, copied from the master on a
//! slave, and persisted by the shard's flush task.

use std::cell::RefCell;
use std::path::Path;

use crate::broker::mesh_proto::OffsetsSnapshot;
use crate::store::metadata::{self, ConsumerOffsetTable, DelayOffsetTable, MetadataError};

/// One shard's slice of the offset tables.
pub struct OffsetBook {
    consumer: RefCell<ConsumerOffsetTable>,
    delay: RefCell<DelayOffsetTable>,
}

impl OffsetBook {
    pub fn new(consumer: ConsumerOffsetTable, delay: DelayOffsetTable) -> OffsetBook {
        OffsetBook {
            consumer: RefCell::new(consumer),
            delay: RefCell::new(delay),
        }
    }

    /// `group`'s committed offset of a queue.
    pub fn query(&self, topic: &str, group: &str, queue_id: i32) -> Option<i64> {
        self.consumer.borrow().query(topic, group, queue_id)
    }

    /// Commits `group`'s offset of a queue.
    pub fn commit(&self, topic: &str, group: &str, queue_id: i32, offset: i64) {
        self.consumer
            .borrow_mut()
            .commit(topic, group, queue_id, offset);
    }

    /// Drops every offset of `group`; the number of topics it had offsets of.
    pub fn remove_group(&self, group: &str) -> usize {
        self.consumer.borrow_mut().remove_group(group)
    }

    /// Drops every group's offsets of `topic`; the number of groups that had some.
    pub fn remove_topic(&self, topic: &str) -> usize {
        self.consumer.borrow_mut().remove_topic(topic)
    }

    /// The next offset to deliver of a delay level's queue.
    pub fn delay(&self, level: i32) -> Option<i64> {
        self.delay.borrow().get(level)
    }

    /// Sets the next offset to deliver of a delay level's queue.
    pub fn set_delay(&self, level: i32, offset: i64) {
        self.delay.borrow_mut().set(level, offset);
    }

    /// A copy of both tables (admin figures).
    pub fn snapshot(&self) -> OffsetsSnapshot {
        OffsetsSnapshot {
            consumer: self.consumer.borrow().clone(),
            delay: self.delay.borrow().clone(),
        }
    }

    /// Takes offsets copied from the master (a slave): consumer offsets by `topic@group` key,
    /// delay offsets by level.
    pub fn apply_synced(&self, consumer: Vec<(String, i32, i64)>, delay: Vec<(i32, i64)>) {
        let mut offsets = self.consumer.borrow_mut();
        for (key, queue, offset) in consumer {
            offsets.set_by_key(&key, queue, offset);
        }
        let mut delays = self.delay.borrow_mut();
        for (level, offset) in delay {
            delays.set(level, offset);
        }
    }

    /// Both tables encoded for their files (written off the shard thread by the caller).
    pub fn encode_for_persist(
        &self,
        consumer_path: &Path,
        delay_path: &Path,
    ) -> (
        Result<Vec<u8>, MetadataError>,
        Result<Vec<u8>, MetadataError>,
    ) {
        (
            metadata::encode_for_persist(consumer_path, &*self.consumer.borrow()),
            metadata::encode_for_persist(delay_path, &*self.delay.borrow()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_commit_remove_and_take_the_masters_copy() {
        let book = OffsetBook::new(Default::default(), Default::default());
        book.commit("T", "g", 0, 5);
        book.commit("U", "g", 1, 7);
        book.commit("T", "h", 0, 9);
        assert_eq!(book.query("T", "g", 0), Some(5));
        assert_eq!(book.remove_group("g"), 2);
        assert_eq!(book.query("T", "g", 0), None);
        assert_eq!(book.remove_topic("T"), 1);
        assert_eq!(book.query("T", "h", 0), None);
        book.set_delay(3, 11);
        assert_eq!(book.delay(3), Some(11));
        book.apply_synced(vec![("T@g".into(), 2, 40)], vec![(1, 8)]);
        assert_eq!(book.query("T", "g", 2), Some(40));
        let snapshot = book.snapshot();
        assert_eq!(snapshot.consumer.query("T", "g", 2), Some(40));
        assert_eq!(snapshot.delay.get(1), Some(8));
    }
}
