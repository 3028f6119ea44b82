//! A shard's replica of the control shard's topic table: every shard answers sends and pulls
//! from its own copy; the control shard tells the others each change
//! ([`crate::broker::mesh_proto::MeshRequest::TopicChanged`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::protocol::register::TopicConfig;

/// The topic table as this shard knows it, and its cursor for sends that leave the queue to
/// the broker.
pub struct TopicReplica {
    topics: RefCell<HashMap<String, TopicConfig>>,
    next_queue: Cell<u32>,
}

impl TopicReplica {
    pub fn new(topics: impl IntoIterator<Item = TopicConfig>) -> TopicReplica {
        TopicReplica {
            topics: RefCell::new(
                topics
                    .into_iter()
                    .map(|t| (t.topic_name.clone(), t))
                    .collect(),
            ),
            next_queue: Cell::new(0),
        }
    }

    /// A topic's configuration.
    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics.borrow().get(name).cloned()
    }

    /// Takes a change of the control shard's table (`None`: deleted).
    pub fn apply(&self, name: &str, config: Option<TopicConfig>) {
        let mut topics = self.topics.borrow_mut();
        match config {
            Some(config) => topics.insert(name.to_string(), config),
            None => topics.remove(name),
        };
    }

    /// The queue a send to `topic` that lets the broker pick goes to (Java: random over the
    /// write queues; here round robin).
    pub fn pick_write_queue(&self, topic: &str) -> u32 {
        let queues = self.get(topic).map_or(1, |t| t.write_queue_nums.max(1));
        let next = self.next_queue.get().wrapping_add(1);
        self.next_queue.set(next);
        next % queues as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, write_queues: i32) -> TopicConfig {
        let json = serde_json::json!({"topicName": name, "writeQueueNums": write_queues});
        serde_json::from_value(json).expect("a topic config")
    }

    #[test]
    fn changes_apply_and_picked_queues_go_round_the_write_queues() {
        let replica = TopicReplica::new([topic("A", 3)]);
        assert_eq!(replica.get("A").map(|t| t.write_queue_nums), Some(3));
        let picked: Vec<u32> = (0..6).map(|_| replica.pick_write_queue("A")).collect();
        assert_eq!(picked, [1, 2, 0, 1, 2, 0]);
        // An unknown topic has one queue.
        assert_eq!(replica.pick_write_queue("nope"), 0);
        replica.apply("B", Some(topic("B", 1)));
        assert!(replica.get("B").is_some());
        replica.apply("A", None);
        assert!(replica.get("A").is_none());
    }
}
