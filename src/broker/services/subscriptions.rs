//! A shard's replica of what the control shard knows about consumer groups: each group's
//! subscriptions (pulls filter with them) and the subscription groups pulls named that the
//! control shard has, with their `consumeEnable` (forgotten when the control shard's groups
//! change).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::protocol::heartbeat::SubscriptionData;

/// Consumer subscriptions (group → topic → subscription) and the groups seen.
#[derive(Default)]
pub struct SubscriptionReplica {
    by_group: RefCell<HashMap<String, HashMap<String, SubscriptionData>>>,
    groups_seen: RefCell<HashMap<String, bool>>,
}

impl SubscriptionReplica {
    /// Takes a group's current subscriptions (empty: the group is gone).
    pub fn apply(&self, group: String, subscriptions: Vec<SubscriptionData>) {
        let mut table = self.by_group.borrow_mut();
        if subscriptions.is_empty() {
            table.remove(&group);
        } else {
            let by_topic = subscriptions
                .into_iter()
                .map(|s| (s.topic.clone(), s))
                .collect();
            table.insert(group, by_topic);
        }
    }

    /// `group`'s subscription of `topic`, as last heard.
    pub fn get(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        self.by_group.borrow().get(group)?.get(topic).cloned()
    }

    /// Whether the control shard has subscription group `group` (its `consumeEnable`), if
    /// this shard asked already.
    pub fn group_seen(&self, group: &str) -> Option<bool> {
        self.groups_seen.borrow().get(group).copied()
    }

    /// Remembers the control shard's answer about `group`.
    pub fn remember_group(&self, group: &str, consume_enable: bool) {
        self.groups_seen
            .borrow_mut()
            .insert(group.to_string(), consume_enable);
    }

    /// The control shard's groups changed: ask again.
    pub fn forget_groups(&self) {
        self.groups_seen.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(topic: &str, version: i64) -> SubscriptionData {
        let json = serde_json::json!({"topic": topic, "subString": "*", "subVersion": version});
        serde_json::from_value(json).expect("a subscription")
    }

    #[test]
    fn a_group_is_replaced_whole_and_gone_when_empty() {
        let replica = SubscriptionReplica::default();
        replica.apply("g".into(), vec![subscription("A", 1), subscription("B", 1)]);
        assert_eq!(replica.get("g", "A").map(|s| s.sub_version), Some(1));
        replica.apply("g".into(), vec![subscription("B", 2)]);
        assert!(replica.get("g", "A").is_none(), "replaced, not merged");
        assert_eq!(replica.get("g", "B").map(|s| s.sub_version), Some(2));
        replica.apply("g".into(), Vec::new());
        assert!(replica.get("g", "B").is_none());
    }

    #[test]
    fn groups_seen_are_forgotten_together() {
        let replica = SubscriptionReplica::default();
        assert_eq!(replica.group_seen("g"), None);
        replica.remember_group("g", false);
        assert_eq!(replica.group_seen("g"), Some(false));
        replica.forget_groups();
        assert_eq!(replica.group_seen("g"), None);
    }
}
