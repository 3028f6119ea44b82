//! Transactional messages on the broker (STORE.md §10): END_TRANSACTION (37) commits a half
//! message (a copy in its real topic with the COMMIT flag) or rolls it back, and records an op
//! message either way; the check-back service asks a producer of the group
//! (CHECK_TRANSACTION_STATE, 39) about half messages left open longer than
//! `transactionTimeOut`, at most `transactionCheckMax` times, every `transactionCheckInterval`.
//! Both run on the shard that owns the half queue (`RMQ_SYS_TRANS_HALF_TOPIC` queue 0), which
//! also keeps the op log's progress.

use std::cell::RefCell;
use std::time::Duration;

use bytes::BytesMut;

use super::errors::TransactionError;
use super::{failure, field_failure, Failure};
use crate::broker::consumer_groups::{ChannelId, ClientRegistry};
use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::{MeshRequest, MeshResponse};
use crate::broker::schedule;
use crate::broker::services::connections::Connections;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::offsets::OffsetBook;
use crate::broker::services::puts::Puts;
use crate::broker::services::store::ShardStore;
use crate::broker::services::transaction_checks::{CheckTurn, TransactionChecks};
use crate::broker::topic_config::{TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC};
use crate::message::properties::{self, Properties};
use crate::message::record::{patch, RecordError, RecordInput, RecordView};
use crate::message::{offset_msg_id, sysflag};
use crate::protocol::Fields;
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::runtime::Shutdown;
use crate::store::{Clock, GetStatus, Reader, SystemClock};

/// The internal group whose offsets track the half and op queues.
pub const TRANS_GROUP: &str = "CID_RMQ_SYS_TRANS";

/// `commitOrRollback` values (MessageSysFlag).
const COMMIT: i64 = 8;
const ROLLBACK: i64 = 12;

/// END_TRANSACTION on the shard that stores the half message (read from `puts.store`): the
/// committed copy and the op record go through the routed `puts`.
pub(crate) async fn end_transaction(
    ctx: &BrokerContext,
    puts: Puts<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let group = cmd.req_str("producerGroup").map_err(field_failure)?;
    let queue_offset = cmd.req_i64("tranStateTableOffset").map_err(field_failure)?;
    let physical = cmd.req_i64("commitLogOffset").map_err(field_failure)?;
    let decision = cmd.req_i64("commitOrRollback").map_err(field_failure)?;
    if ctx.cfg.broker_role == crate::config::BrokerRole::Slave {
        // Java's EndTransactionProcessor answers SLAVE_NOT_AVAILABLE on a slave.
        return Err((
            resp::SLAVE_NOT_AVAILABLE,
            "Message is not allowed to be stored in a slave broker".into(),
        ));
    }
    if !ctx.writable() {
        return Err((
            resp::SERVICE_NOT_AVAILABLE,
            "the broker's write permission is off: end transaction refused".into(),
        ));
    }
    if decision != COMMIT && decision != ROLLBACK {
        // 0: the producer does not know yet; a check-back will ask again.
        return Ok(cmd.success_to());
    }
    let stored = puts
        .store
        .get()
        .read_by_physical_offset(physical)
        .await
        .map_err(|e| {
            (
                resp::SYSTEM_ERROR,
                format!("find prepared transaction message failed: {e}"),
            )
        })?;
    let half = RecordView::parse(&stored).map_err(|e| (resp::SYSTEM_ERROR, e.to_string()))?;
    check_half(&half, group, queue_offset, physical)?;
    if decision == COMMIT {
        commit_half(ctx, puts, &half)
            .await
            .map_err(failure::transaction)?;
    }
    write_op(ctx, puts, half.queue_offset)
        .await
        .map_err(failure::transaction)?;
    Ok(cmd.success_to())
}

/// Stores the committed copy of a half message in its real topic and queue.
async fn commit_half(
    ctx: &BrokerContext,
    puts: Puts<'_>,
    half: &RecordView<'_>,
) -> Result<(), TransactionError> {
    let mut props = Properties::parse(half.properties);
    let topic = props
        .remove(properties::REAL_TOPIC)
        .ok_or(TransactionError::NoRealTopic)?;
    let queue_id: i32 = props
        .remove(properties::REAL_QID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    props.remove(properties::TRAN_MSG);
    let wire = props.to_wire();
    let input = RecordInput {
        topic: &topic,
        queue_id,
        flag: half.flag,
        sys_flag: (half.sys_flag & !sysflag::TRANSACTION_MASK) | sysflag::TRANSACTION_COMMIT,
        born_timestamp: half.born_timestamp,
        born_host: half.born_host,
        store_host: ctx.store_host,
        reconsume_times: half.reconsume_times,
        prepared_transaction_offset: half.physical_offset,
        body: half.body,
        properties: &wire,
    };
    // Delayed transactional messages are delayed from their commit (Java does the same).
    let level = schedule::delay_level(&wire);
    if level > 0 {
        let mut props = Properties::parse(&wire);
        let levels = ctx.cfg.message_delay_levels_ms.len();
        let q = schedule::to_schedule_queue(&mut props, &topic, queue_id, level, levels);
        let wire = props.to_wire();
        let topic = crate::broker::topic_config::SCHEDULE_TOPIC;
        let delayed = RecordInput {
            topic,
            queue_id: q,
            properties: &wire,
            ..input
        };
        return Ok(puts.put_input(&delayed).await?);
    }
    Ok(puts.put_input(&input).await?)
}

/// Records that half-queue offset `half_offset` is finished (committed or rolled back).
async fn write_op(
    ctx: &BrokerContext,
    puts: Puts<'_>,
    half_offset: i64,
) -> Result<(), TransactionError> {
    let body = half_offset.to_string();
    let props = format!("{}\u{1}d", properties::TAGS);
    let input = RecordInput::from_broker(
        TRANS_OP_HALF_TOPIC,
        ctx.store_host,
        SystemClock.now_ms(),
        body.as_bytes(),
        &props,
    );
    Ok(puts.put_input(&input).await?)
}

/// A half message must match what the producer says about it (Java's checks).
fn check_half(
    half: &RecordView<'_>,
    group: &str,
    queue_offset: i64,
    physical: i64,
) -> Result<(), Failure> {
    let pgroup = properties::find(half.properties, properties::PGROUP).unwrap_or_default();
    if half.topic != TRANS_HALF_TOPIC {
        return Err((
            resp::SYSTEM_ERROR,
            format!("the message at {physical} is not a half message"),
        ));
    }
    if pgroup != group {
        return Err((resp::SYSTEM_ERROR, "The producer group wrong".into()));
    }
    if half.queue_offset != queue_offset {
        return Err((
            resp::SYSTEM_ERROR,
            "The transaction state table offset wrong".into(),
        ));
    }
    if half.physical_offset != physical {
        return Err((resp::SYSTEM_ERROR, "The commit log offset wrong".into()));
    }
    Ok(())
}

/// What the check-back loop of the half queue's shard touches: the settings, its store and
/// offsets (the half and op queues' progress), its check-back state, and the way to a
/// producer's connection (the control shard's client registry, `None` elsewhere: asked over
/// the mesh).
pub struct Checker<'a> {
    pub ctx: &'a BrokerContext,
    pub store: &'a ShardStore,
    pub offsets: &'a OffsetBook,
    pub checks: &'a TransactionChecks,
    pub clients: Option<&'a RefCell<ClientRegistry>>,
    pub mesh: &'a MeshClient,
    pub connections: &'a Connections,
}

impl Checker<'_> {
    /// The producer connection to ask about `group`'s transactions (from the control shard).
    async fn producer_channel(&self, group: &str) -> Option<ChannelId> {
        if let Some(clients) = self.clients {
            return clients
                .borrow()
                .producer_channels(group)
                .first()
                .map(|c| c.channel);
        }
        let mesh = self.mesh.get()?;
        match mesh
            .call(
                0,
                MeshRequest::ProducerChannel {
                    group: group.to_string(),
                },
            )
            .await
        {
            Ok(MeshResponse::Channel(channel)) => channel,
            _ => None,
        }
    }
}

/// The check-back loop of the half queue's shard.
pub async fn run_checks(checker: &Checker<'_>, shutdown: Shutdown) {
    if crate::broker::placement::owner_shard(TRANS_HALF_TOPIC, 0, checker.ctx.shards)
        != checker.mesh.here()
    {
        return;
    }
    let interval =
        || Duration::from_millis(checker.ctx.live.transaction_check_interval_ms().max(100));
    while shutdown.sleep(interval()).await {
        if let Err(e) = check_pass(checker).await {
            tracing::warn!(error = %e, "transaction check pass failed");
        }
    }
}

/// Reads the op log into `done`, then walks the open half messages.
async fn check_pass(checker: &Checker<'_>) -> Result<(), TransactionError> {
    read_ops(checker).await?;
    let mut offset = checker
        .offsets
        .query(TRANS_HALF_TOPIC, TRANS_GROUP, 0)
        .unwrap_or(0);
    let now = SystemClock.now_ms();
    let timeout_ms = checker.ctx.live.transaction_timeout_ms() as i64;
    let mut prefix_open = false;
    loop {
        let result = checker
            .store
            .get()
            .get_messages(
                Reader::Broker,
                TRANS_HALF_TOPIC,
                0,
                offset,
                32,
                1 << 20,
                None,
            )
            .await?;
        if result.status != GetStatus::Found {
            if !prefix_open
                && matches!(
                    result.status,
                    GetStatus::OffsetTooSmall | GetStatus::OffsetOverflowBadly
                )
            {
                checker
                    .offsets
                    .commit(TRANS_HALF_TOPIC, TRANS_GROUP, 0, result.next_begin_offset);
            }
            return Ok(());
        }
        for stored in &result.messages {
            let view = RecordView::parse(stored)?;
            let finished = check_one(checker, &view, now, timeout_ms).await?;
            if finished && !prefix_open {
                checker
                    .offsets
                    .commit(TRANS_HALF_TOPIC, TRANS_GROUP, 0, view.queue_offset + 1);
            }
            prefix_open |= !finished;
            if !finished && now - view.born_timestamp < timeout_ms {
                return Ok(()); // younger ones follow
            }
        }
        offset = result.next_begin_offset;
    }
}

/// Handles one half message; true when it needs no more attention (finished or discarded).
async fn check_one(
    checker: &Checker<'_>,
    view: &RecordView<'_>,
    now: i64,
    timeout_ms: i64,
) -> Result<bool, TransactionError> {
    if checker.checks.pass_finished(view.queue_offset) {
        return Ok(true);
    }
    let immunity_ms = properties::find(view.properties, properties::CHECK_IMMUNITY_TIME_IN_SECONDS)
        .and_then(|s| s.parse::<i64>().ok())
        .map_or(timeout_ms, |s| s * 1000);
    if now - view.born_timestamp < immunity_ms {
        return Ok(false);
    }
    let max = checker.ctx.live.transaction_check_max();
    if checker.checks.next_check(view.queue_offset, max) == CheckTurn::GiveUp {
        tracing::warn!(
            offset = view.queue_offset,
            "half message checked too often; discarded"
        );
        return Ok(true);
    }
    let group = properties::find(view.properties, properties::PGROUP)
        .unwrap_or_default()
        .to_string();
    match checker.producer_channel(&group).await {
        Some(channel) => checker
            .mesh
            .send_to_channels(checker.connections, vec![(channel, check_command(view)?)]),
        None => tracing::debug!(%group, "no producer online to check a transaction with"),
    }
    Ok(false)
}

/// CHECK_TRANSACTION_STATE for a half message; its body is the message with its real topic
/// and queue restored, as Java's clients decode it.
fn check_command(view: &RecordView<'_>) -> Result<RemotingCommand, RecordError> {
    let uniq = properties::find(view.properties, properties::UNIQ_KEY).unwrap_or_default();
    let topic = properties::find(view.properties, properties::REAL_TOPIC).unwrap_or(view.topic);
    let queue_id = properties::find(view.properties, properties::REAL_QID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let input = RecordInput {
        topic,
        queue_id,
        flag: view.flag,
        sys_flag: view.sys_flag,
        born_timestamp: view.born_timestamp,
        born_host: view.born_host,
        store_host: view.store_host,
        reconsume_times: view.reconsume_times,
        prepared_transaction_offset: view.prepared_transaction_offset,
        body: view.body,
        properties: view.properties,
    };
    let mut body = BytesMut::with_capacity(input.encoded_len());
    let slots = input.encode(&mut body)?;
    patch(
        &mut body,
        slots,
        view.queue_offset,
        view.physical_offset,
        view.store_timestamp,
    );
    Ok(RemotingCommand::request(req::CHECK_TRANSACTION_STATE)
        .with_ext("tranStateTableOffset", view.queue_offset.to_string())
        .with_ext("commitLogOffset", view.physical_offset.to_string())
        .with_ext("msgId", uniq)
        .with_ext("transactionId", uniq)
        .with_ext(
            "offsetMsgId",
            offset_msg_id(view.store_host, view.physical_offset),
        )
        .with_body(body.freeze()))
}

/// Reads new op records (finished half offsets) from the op queue's saved offset.
async fn read_ops(checker: &Checker<'_>) -> Result<(), TransactionError> {
    let mut offset = checker
        .offsets
        .query(TRANS_OP_HALF_TOPIC, TRANS_GROUP, 0)
        .unwrap_or(0);
    loop {
        let result = checker
            .store
            .get()
            .get_messages(
                Reader::Broker,
                TRANS_OP_HALF_TOPIC,
                0,
                offset,
                256,
                1 << 20,
                None,
            )
            .await?;
        if result.status != GetStatus::Found {
            return Ok(());
        }
        let half_min = checker
            .offsets
            .query(TRANS_HALF_TOPIC, TRANS_GROUP, 0)
            .unwrap_or(0);
        for stored in &result.messages {
            let view = RecordView::parse(stored)?;
            if let Some(half) = std::str::from_utf8(view.body)
                .ok()
                .and_then(|b| b.trim().parse::<i64>().ok())
            {
                if half >= half_min {
                    checker.checks.finished(half);
                }
            }
        }
        offset = result.next_begin_offset;
        checker
            .offsets
            .commit(TRANS_OP_HALF_TOPIC, TRANS_GROUP, 0, offset);
    }
}
