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
