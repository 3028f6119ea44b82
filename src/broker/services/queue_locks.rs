//! The queue locks of orderly consumers (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ), on the control
//! shard: a client holds a queue of its group exclusively until it releases it or stops
//! renewing it for [`LOCK_MAX_LIVE`] (`rocketmq.broker.rebalance.lockMaxLiveTime`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::heartbeat::MessageQueue;

/// How long a lock lives without renewal.
pub const LOCK_MAX_LIVE: Duration = Duration::from_secs(60);

/// One group's locks: queue → (client id, last renewal).
type GroupLocks = HashMap<MessageQueue, (String, Instant)>;

/// The locks of every group.
#[derive(Debug, Default)]
pub struct QueueLocks {
    groups: RefCell<HashMap<String, GroupLocks>>,
}

impl QueueLocks {
    /// Locks what `client` may lock; returns the queues it now holds.
    pub fn lock(
        &self,
        group: &str,
        client: &str,
        queues: &[MessageQueue],
        now: Instant,
    ) -> Vec<MessageQueue> {
        let mut groups = self.groups.borrow_mut();
        let table = groups.entry(group.to_string()).or_default();
        let mut ok = Vec::new();
        for mq in queues {
            let free = match table.get(mq) {
                None => true,
                Some((owner, at)) => {
                    owner == client || now.saturating_duration_since(*at) > LOCK_MAX_LIVE
                }
            };
            if free {
                table.insert(mq.clone(), (client.to_string(), now));
                ok.push(mq.clone());
            }
        }
        ok
    }

    /// Releases `client`'s locks on `queues`.
    pub fn unlock(&self, group: &str, client: &str, queues: &[MessageQueue]) {
        if let Some(table) = self.groups.borrow_mut().get_mut(group) {
            for mq in queues {
                if table.get(mq).is_some_and(|(owner, _)| owner == client) {
                    table.remove(mq);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(q: i32) -> MessageQueue {
        MessageQueue {
            broker_name: "b".into(),
            queue_id: q,
            topic: "T".into(),
        }
    }

    #[test]
    fn locks_are_exclusive_until_released_or_expired() {
        let t = QueueLocks::default();
        let t0 = Instant::now();
        assert_eq!(t.lock("g", "c1", &[mq(0), mq(1)], t0).len(), 2);
        assert_eq!(t.lock("g", "c2", &[mq(1), mq(2)], t0), [mq(2)]);
        assert_eq!(t.lock("g", "c1", &[mq(1)], t0), [mq(1)]);
        t.unlock("g", "c2", &[mq(1)]);
        assert!(t.lock("g", "c2", &[mq(1)], t0).is_empty());
        t.unlock("g", "c1", &[mq(1)]);
        assert_eq!(t.lock("g", "c2", &[mq(1)], t0), [mq(1)]);
        let later = t0 + LOCK_MAX_LIVE + Duration::from_secs(1);
        assert_eq!(t.lock("g", "c3", &[mq(0)], later), [mq(0)]);
        assert_eq!(t.lock("other", "c9", &[mq(0)], t0), [mq(0)]);
    }
}
