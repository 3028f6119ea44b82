//! LOCK_BATCH_MQ (41) and UNLOCK_BATCH_MQ (42) on the control shard: orderly consumers hold
//! their queues exclusively; a lock not renewed for 60 s expires
//! (`rocketmq.broker.rebalance.lockMaxLiveTime`).

use std::time::Instant;

use super::Failure;
use crate::broker::services::queue_locks::QueueLocks;
use crate::protocol::heartbeat::{LockBatchRequest, LockBatchResponse, MessageQueue};
use crate::protocol::route::to_json_body;
use crate::remoting::{request as req, response as resp, RemotingCommand};

/// LOCK_BATCH_MQ and UNLOCK_BATCH_MQ on the control shard's lock table (`None` elsewhere).
pub(crate) fn lock_batch(
    locks: Option<&QueueLocks>,
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
