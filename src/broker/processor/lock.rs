//! LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42) on the control shard: orderly consumers hold
//! their queues exclusively; a lock not renewed for 60 s expires
//! (`rocketmq.broker.rebalance.lockMaxLiveTime`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Failure;
use crate::protocol::heartbeat::{LockBatchRequest, LockBatchResponse, MessageQueue};
use crate::protocol::route::to_json_body;
use crate::remoting::{request as req, response as resp, RemotingCommand};

/// How long a lock lives without renewal.
pub const LOCK_MAX_LIVE: Duration = Duration::from_secs(60);

/// group → queue → (client id, last renewal).
#[derive(Debug, Default)]
pub struct LockTable {
    groups: HashMap<String, HashMap<MessageQueue, (String, Instant)>>,
}

impl LockTable {
    /// Locks what `client` may lock; returns the queues it now holds.
    pub fn lock(
        &mut self,
        group: &str,
        client: &str,
        queues: &[MessageQueue],
        now: Instant,
    ) -> Vec<MessageQueue> {
        let table = self.groups.entry(group.to_string()).or_default();
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
    pub fn unlock(&mut self, group: &str, client: &str, queues: &[MessageQueue]) {
        if let Some(table) = self.groups.get_mut(group) {
            for mq in queues {
                if table.get(mq).is_some_and(|(owner, _)| owner == client) {
                    table.remove(mq);
                }
            }
        }
    }
}

/// LOCK_BATCH_MQ and UNLOCK_BATCH_MQ on the control shard's lock table (`None` elsewhere).
pub(crate) fn lock_batch(
    locks: Option<&RefCell<LockTable>>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let Some(locks) = locks else {
        return Err((
            resp::SYSTEM_ERROR,
            "lock routed to a non-control shard".into(),
        ));
    };
    let body: LockBatchRequest = crate::protocol::lenient::from_slice(&cmd.body).map_err(|e| {
        (
            resp::SYSTEM_ERROR,
            format!("the lock body does not parse: {e}"),
        )
    })?;
    let queues: Vec<MessageQueue> = body.mq_set.into_iter().collect();
    let mut locks = locks.borrow_mut();
    if cmd.code == req::UNLOCK_BATCH_MQ {
        locks.unlock(&body.consumer_group, &body.client_id, &queues);
        return Ok(cmd.success_to());
    }
    let ok = locks.lock(
        &body.consumer_group,
        &body.client_id,
        &queues,
        Instant::now(),
    );
    let answer = LockBatchResponse {
        lock_ok_mq_set: ok.into_iter().collect(),
    };
    Ok(cmd.success_to().with_body(to_json_body(&answer)))
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
        let mut t = LockTable::default();
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
