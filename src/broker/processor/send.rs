//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320) on the shard that owns
//! the target queue (PROTOCOL.md §7.2): checks, topic auto-creation, building the stored record
//! once, the put, and the flush wait under SYNC_FLUSH.

use std::rc::Rc;

use bytes::BytesMut;

use super::admin::ShardStats;
use super::{field_failure, Failure};
use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::Origin;
use crate::broker::put_hop::Ticket;
use crate::broker::schedule;
use crate::broker::services::puts::Puts;
use crate::broker::services::topic_creation::TopicCreation;
use crate::broker::services::topics::TopicReplica;
use crate::broker::topic_config::{
    check_send_topic, dlq_topic, perm, RETRY_GROUP_TOPIC_PREFIX, SCHEDULE_TOPIC, TRANS_HALF_TOPIC,
};
use crate::message::properties::{self, Properties};
use crate::message::record::{RecordInput, RecordSlots};
use crate::message::{batch, offset_msg_id, sysflag};
use crate::net::Connection;
use crate::protocol::register::TopicConfig;
use crate::protocol::send::{SendRequest, SendResponse};
use crate::remoting::{response as resp, RemotingCommand};
use crate::store::{PutBatchResult, PutResult, PutStatus, StoreError, StoreResult};

/// Java's refusal of sends by a slave or a broker whose write permission is off.
pub(crate) fn check_writable(ctx: &BrokerContext) -> Result<(), Failure> {
    if ctx.writable() {
        return Ok(());
    }
    let remark = format!(
        "the broker[{}] sending message is forbidden (it is a slave or its write permission is off)",
        ctx.broker_addr
    );
    Err((resp::SERVICE_NOT_AVAILABLE, remark))
}

/// A body over `maxMessageSize` is MESSAGE_ILLEGAL with the sizes.
pub(crate) fn check_body_size(ctx: &BrokerContext, cmd: &RemotingCommand) -> Result<(), Failure> {
    check_send_body_bytes(ctx, cmd.body.len())
}

/// [`check_body_size`] for a body of `body_bytes` (also asked on a request's header alone,
/// before its body is read).
pub(crate) fn check_send_body_bytes(ctx: &BrokerContext, body_bytes: usize) -> Result<(), Failure> {
    let max = ctx.live.max_message_size_bytes() as usize;
    if body_bytes <= max {
        return Ok(());
    }
    let remark = format!(
        "the message body size {body_bytes} exceeds the limit of {max} bytes (maxMessageSize)"
    );
    Err((resp::MESSAGE_ILLEGAL, remark))
}

/// What a send touches: the broker's settings, the topic replica (and the control shard's
/// topic creation), the routed puts and the shard's counters.
pub(crate) struct Sender<'a, C> {
    pub ctx: &'a BrokerContext,
    pub topics: &'a TopicReplica,
    pub creation: &'a C,
    pub puts: Puts<'a>,
    pub stats: &'a ShardStats,
    /// The request's connection, when the shard that owns the queue may answer on it itself
    /// (several shards, not SYNC_MASTER: [`crate::broker::put_hop`]).
    pub conn: Option<Rc<Connection>>,
}

impl<C: TopicCreation> Sender<'_, C> {
    /// Answers a send; `None` when the answer is the owning shard's to write (it was handed
    /// over whole).
    pub(crate) async fn send(
        &self,
        origin: Origin,
        cmd: &RemotingCommand,
    ) -> Result<Option<RemotingCommand>, Failure> {
        let mut request = SendRequest::from_command(cmd).map_err(field_failure)?;
        check_writable(self.ctx)?;
        check_send_topic(&request.topic).map_err(super::failure::topic_name)?;
        let topic = send_topic(self.topics, self.creation, &request).await?;
        let queue_id = check_queue(&request, &topic)?;
        check_body_size(self.ctx, cmd)?;
        let mut props = Properties::parse(&request.properties);
        let wait = props
            .remove(properties::WAIT)
            .is_none_or(|w| !w.eq_ignore_ascii_case("false"));
        let prepared = is_prepared(&props, &request);
        if prepared {
            check_prepared(self.ctx, &request)?;
            // The half message gets a consume-queue unit in the half topic (STORE.md §10).
            request.sys_flag &= !sysflag::TRANSACTION_MASK;
        }
        props.set(properties::CLUSTER, &self.ctx.cfg.broker_cluster_name);
        let (target, target_queue) = self
            .send_target(cmd, &request, queue_id, &mut props, prepared)
            .await?;
        let result = if request.batch {
            let records = batch_records(self.ctx, origin, &request, queue_id, &props, &cmd.body)?;
            self.puts
                .put_batch(&request.topic, queue_id, records, wait)
                .await
                .map_err(super::failure::put)?
        } else {
            let (record, slots) = element_record(
                self.ctx,
                origin,
                &request,
                &target,
                target_queue,
                request.flag,
                &cmd.body,
                &props.to_wire(),
            )?;
            // The owner is looked up only for a send that may be handed (the put finds it again).
            let conn = self
                .conn
                .as_ref()
                .filter(|c| !prepared && !cmd.is_oneway() && c.is_quiet());
            let owner = conn.and_then(|_| self.puts.owner_elsewhere(&target, target_queue));
            if let (Some(owner), Some(conn)) = (owner, conn) {
                if conn.link().claim_answer() {
                    let ticket = Ticket {
                        link: std::sync::Arc::clone(conn.link()),
                        peer: origin.peer,
                        channel: origin.channel,
                        head: cmd.response_to(cmd.code, None),
                        queue_id,
                        topic: target,
                    };
                    let item = (record, slots, wait);
                    let conn = Rc::downgrade(conn);
                    self.puts
                        .hand(owner, item, ticket, conn, handed_error)
                        .map_err(super::failure::put)?;
                    return Ok(None);
                }
            }
            let put = self
                .puts
                .put(&target, target_queue, record, slots, wait)
                .await
                .map_err(super::failure::put)?;
            single(put)
        };
        count_put(self.stats, &target, &result);
        let head = cmd.response_to(cmd.code, None);
        Ok(Some(put_response(self.ctx, head, queue_id, &result)))
    }

    /// Where a single message is really stored: a retry-topic send past its max reconsume
    /// times goes to the group's DLQ; a delayed message to its level's schedule queue.
    async fn send_target(
        &self,
        cmd: &RemotingCommand,
        request: &SendRequest,
        queue_id: i32,
        props: &mut Properties,
        prepared: bool,
    ) -> Result<(String, i32), Failure> {
        let (mut topic, mut queue) = (request.topic.clone(), queue_id);
        // Timer messages (RocketMQ 5's TIMER_* properties) go to the shard's timer queue.
        let kind = crate::broker::timer::SendKind {
            batch: request.batch,
            prepared,
        };
        if let Some(to) = crate::broker::timer::on_send(self.ctx, props, &topic, queue, kind)? {
            return Ok(to);
        }
        if prepared {
            Box::pin(self.creation.ensure_group_topic(TRANS_HALF_TOPIC, 1))
                .await
                .ok_or_else(|| {
                    (
                        resp::SYSTEM_ERROR,
                        format!("cannot create {TRANS_HALF_TOPIC}"),
                    )
                })?;
            props.set(properties::REAL_TOPIC, &topic);
            props.set(properties::REAL_QID, &queue.to_string());
            return Ok((TRANS_HALF_TOPIC.to_string(), 0));
        }
        if let Some(group) = request.topic.strip_prefix(RETRY_GROUP_TOPIC_PREFIX) {
            // Java honours the header's max only from clients at V3_4_9 (121) or later.
            let max = request
                .max_reconsume_times
                .filter(|_| cmd.version >= 121)
                .unwrap_or(16);
            if request.reconsume_times >= max {
                topic = dlq_topic(group);
                queue = 0;
                props.remove(properties::DELAY);
                let created = Box::pin(self.creation.ensure_group_topic(&topic, 1)).await;
                created.ok_or_else(|| {
                    (
                        resp::SYSTEM_ERROR,
                        format!("cannot create the dead letter topic {topic}"),
                    )
                })?;
            }
        }
        let level = schedule::delay_level_of(props.get(properties::DELAY));
        if level > 0 {
            if request.batch {
                return Err((
                    resp::MESSAGE_ILLEGAL,
                    "a batch message may not be delayed".into(),
                ));
            }
            let levels = self.ctx.cfg.message_delay_levels_ms.len();
            queue = schedule::to_schedule_queue(props, &topic, queue, level, levels);
            topic = SCHEDULE_TOPIC.to_string();
        }
        Ok((topic, queue))
    }
}

/// One message's put as a batch's (the shape a send response is built from).
fn single(put: PutResult) -> PutBatchResult {
    PutBatchResult {
        status: put.status,
        physical_offsets: vec![put.physical_offset],
        queue_offset: put.queue_offset,
        store_timestamp: put.store_timestamp,
        wrote_bytes: put.wrote_bytes,
    }
}

/// Counts a stored send in the shard's put figures.
fn count_put(stats: &ShardStats, topic: &str, result: &PutBatchResult) {
    let stored = (result.physical_offsets.len(), result.wrote_bytes);
    stats.count_put(stored.0, stored.1);
    stats.items.put(topic, stored.0, stored.1);
}

/// The SEND response for a stored send: `head` has the request's frame fields
/// (`RemotingCommand::response_to`), `queue_id` the queue the request named.
fn put_response(
    ctx: &BrokerContext,
    head: RemotingCommand,
    queue_id: i32,
    result: &PutBatchResult,
) -> RemotingCommand {
    let msg_id = match result.physical_offsets.as_slice() {
        [one] => offset_msg_id(ctx.store_host, *one),
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|p| offset_msg_id(ctx.store_host, *p))
                .collect();
            ids.join(",")
        }
    };
    let code = match result.status {
        PutStatus::PutOk => resp::SUCCESS,
        PutStatus::FlushDiskTimeout => resp::FLUSH_DISK_TIMEOUT,
        PutStatus::FlushSlaveTimeout => resp::FLUSH_SLAVE_TIMEOUT,
        PutStatus::SlaveNotAvailable => resp::SLAVE_NOT_AVAILABLE,
    };
    let mut response = RemotingCommand { code, ..head };
    SendResponse {
        msg_id,
        queue_id,
        queue_offset: result.queue_offset,
        transaction_id: None,
        region_id: ctx.cfg.region_id.clone(),
        trace_on: ctx.cfg.trace_on,
    }
    .apply(&mut response);
    response
}

/// The error answer to a handed send whose put failed (`head`: its response header, whose
/// code is the request's), as the reader would have answered it.
pub(crate) fn handed_error(head: &RemotingCommand, e: StoreError) -> RemotingCommand {
    let (code, remark) = super::failure::put(e);
    RemotingCommand {
        code,
        remark: Some(remark),
        ..head.clone()
    }
}

/// On the shard that owns the queue: the answer to a send handed to it whole, with its put's
/// `result`, counted in this shard's put figures. An error is also returned as its
/// (code, remark), for the refusal log.
pub(crate) fn handed_answer(
    ctx: &BrokerContext,
    stats: &ShardStats,
    ticket: &Ticket,
    result: StoreResult<PutResult>,
) -> (RemotingCommand, Option<Failure>) {
    match result {
        Ok(put) => {
            let result = single(put);
            count_put(stats, &ticket.topic, &result);
            let head = ticket.head.clone();
            (put_response(ctx, head, ticket.queue_id, &result), None)
        }
        Err(e) => {
            let answer = handed_error(&ticket.head, e);
            let failure = (answer.code, answer.remark.clone().unwrap_or_default());
            (answer, Some(failure))
        }
    }
}

/// The topic's config, auto-creating it when allowed; NO_PERMISSION when not writable.
pub(crate) async fn send_topic(
    topics: &TopicReplica,
    creation: &impl TopicCreation,
    request: &SendRequest,
) -> Result<TopicConfig, Failure> {
    let existing = topics.get(&request.topic);
    let topic = match existing {
        Some(t) => t,
        // Boxed: the creation's state would otherwise be part of every send's future (copied
        // whenever one is made), though only a topic's first send reaches it.
        None => Box::pin(creation.create_for_send(
            &request.topic,
            &request.default_topic,
            request.default_topic_queue_nums,
            0,
        ))
        .await
        .ok_or_else(|| {
            let remark = format!(
                "topic[{}] not exist, apply first please! (autoCreateTopicEnable is off \
                     or the template topic {} is missing)",
                request.topic, request.default_topic
            );
            (resp::TOPIC_NOT_EXIST, remark)
        })?,
    };
    if topic.perm & perm::WRITE == 0 {
        return Err((
            resp::NO_PERMISSION,
            format!("the topic[{}] sending message is forbidden", request.topic),
        ));
    }
    Ok(topic)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn element_record(
    ctx: &BrokerContext,
    origin: Origin,
    request: &SendRequest,
    topic: &str,
    queue_id: i32,
    flag: i32,
    body: &[u8],
    properties: &str,
) -> Result<(BytesMut, RecordSlots), Failure> {
    let input = RecordInput {
        topic,
        queue_id,
        flag,
        sys_flag: request.sys_flag,
        born_timestamp: request.born_timestamp,
        born_host: origin.peer,
        store_host: ctx.store_host,
        reconsume_times: request.reconsume_times,
        prepared_transaction_offset: 0,
        body,
        properties,
    };
    let mut buf = BytesMut::with_capacity(input.encoded_len());
    let slots = input
        .encode(&mut buf)
        .map_err(|e| (resp::MESSAGE_ILLEGAL, e.to_string()))?;
    Ok((buf, slots))
}

/// One stored record per batch element, each with the header's properties appended.
fn batch_records(
    ctx: &BrokerContext,
    origin: Origin,
    request: &SendRequest,
    queue_id: i32,
    header_props: &Properties,
    body: &[u8],
) -> Result<Vec<(BytesMut, RecordSlots)>, Failure> {
    let elements = batch::decode(body).map_err(|e| (resp::MESSAGE_ILLEGAL, e.to_string()))?;
    if elements.is_empty() {
        return Err((resp::MESSAGE_ILLEGAL, "the batch is empty".into()));
    }
    elements
        .iter()
        .map(|e| {
            let mut props = Properties::parse(e.properties);
            if props.get(properties::DELAY).is_some() {
                return Err((
                    resp::MESSAGE_ILLEGAL,
                    "a batch message may not be delayed".into(),
                ));
            }
            for (k, v) in header_props.iter() {
                props.set(k, v);
            }
            let wire = props.to_wire();
            element_record(
                ctx,
                origin,
                request,
                &request.topic,
                queue_id,
                e.flag,
                e.body,
                &wire,
            )
        })
        .collect()
}

/// The target queue: `queueId` as sent (the route picked it); it must exist.
fn check_queue(request: &SendRequest, topic: &TopicConfig) -> Result<i32, Failure> {
    let max = topic.write_queue_nums.max(topic.read_queue_nums);
    if request.queue_id < 0 || request.queue_id >= max {
        let remark = format!(
            "request queueId[{}] is illegal, topic:[{}] topicConfig.writeQueueNums:[{}] producer:[{}]",
            request.queue_id, request.topic, topic.write_queue_nums, request.producer_group
        );
        return Err((resp::SYSTEM_ERROR, remark));
    }
    Ok(request.queue_id)
}

/// A transactional half message: `TRAN_MSG=true` or the prepared sysFlag bits.
fn is_prepared(props: &Properties, request: &SendRequest) -> bool {
    props
        .get(properties::TRAN_MSG)
        .is_some_and(|t| t.eq_ignore_ascii_case("true"))
        || request.sys_flag & sysflag::TRANSACTION_MASK == sysflag::TRANSACTION_PREPARED
}

/// Half messages are refused when `rejectTransactionMessage` is set, and may not be batched.
fn check_prepared(
    ctx: &crate::broker::context::BrokerContext,
    request: &SendRequest,
) -> Result<(), Failure> {
    if ctx.live.reject_transaction_message() {
        let remark = format!(
            "the broker[{}] sending transaction message is forbidden",
            ctx.cfg.broker_name
        );
        return Err((resp::NO_PERMISSION, remark));
    }
    if request.batch {
        return Err((
            resp::MESSAGE_ILLEGAL,
            "a batch may not hold transactional messages".into(),
        ));
    }
    Ok(())
}
