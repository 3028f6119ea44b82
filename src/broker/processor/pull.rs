//! PULL_MESSAGE (11) on the shard that owns the queue (PROTOCOL.md §7.3): subscription checks,
//! tag filtering by hash code, SQL92 filtering by properties (`enablePropertyFilter`), long
//! polling parked on the queue's watch (woken by the append — under SYNC_FLUSH by the flush
//! that makes it durable, as only durable records are served — answered PULL_NOT_FOUND at the
//! deadline), the offset commit piggybacked on the pull, and the store status mapped to
//! RocketMQ's response codes. Bodies are the stored records as they are.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_lite::future;

use super::admin::ShardStats;
use super::client::Registry;
use super::{field_failure, filter, Failure};
use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::{MeshRequest, MeshResponse};
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::offsets::OffsetBook;
use crate::broker::services::puts::Puts;
use crate::broker::services::store::ShardStore;
use crate::broker::services::subscriptions::SubscriptionReplica;
use crate::broker::services::topics::TopicReplica;
use crate::broker::topic_config::perm;
use crate::config::BrokerRole;
use crate::filter::sql::Selector;
use crate::message::record::RecordView;
use crate::protocol::heartbeat::{parse_tag_expression, SubscriptionData};
use crate::protocol::register::TopicConfig;
use crate::protocol::Fields;
use crate::remoting::{response as resp, RemotingCommand};
use crate::store::{GetResult, GetStatus, Reader};

/// PullSysFlag bits.
const FLAG_COMMIT_OFFSET: i64 = 0x1;
pub(crate) const FLAG_SUSPEND: i64 = 0x2;
const FLAG_SUBSCRIPTION: i64 = 0x4;

/// What a pull filters by.
enum PullFilter {
    All,
    /// TAG: the consume queue's tag codes (no commitlog read for the rest).
    Tags(HashSet<i32>),
    /// SQL92: each candidate record's properties.
    Sql(Rc<Selector>),
}

struct PullRequest<'a> {
    group: &'a str,
    topic: &'a str,
    queue_id: i32,
    offset: i64,
    max_count: usize,
    sys_flag: i64,
    commit_offset: i64,
    suspend_ms: u64,
}

impl<'a> PullRequest<'a> {
    fn parse(cmd: &'a RemotingCommand) -> Result<PullRequest<'a>, Failure> {
        Ok(PullRequest {
            group: cmd.req_str("consumerGroup").map_err(field_failure)?,
            topic: cmd.req_str("topic").map_err(field_failure)?,
            queue_id: cmd.req_i32("queueId").map_err(field_failure)?,
            offset: cmd.req_i64("queueOffset").map_err(field_failure)?,
            max_count: cmd
                .req_i64("maxMsgNums")
                .map_err(field_failure)?
                .clamp(1, 1024) as usize,
            sys_flag: cmd.req_i64("sysFlag").map_err(field_failure)?,
            commit_offset: cmd
                .opt_i64("commitOffset")
                .map_err(field_failure)?
                .unwrap_or(-1),
            suspend_ms: cmd
                .opt_i64("suspendTimeoutMillis")
                .map_err(field_failure)?
                .unwrap_or(0)
                .clamp(0, 60_000) as u64,
        })
    }
}

/// What a pull touches: the settings, this shard's store, topic and subscription replicas and
/// offsets, the control shard's registry (`None` on the other shards: they ask it over the
/// mesh), the routed puts (an offset-moved event) and the counters.
pub(crate) struct Puller<'a> {
    pub ctx: &'a BrokerContext,
    pub store: &'a ShardStore,
    pub topics: &'a TopicReplica,
    pub subscriptions: &'a SubscriptionReplica,
    pub offsets: &'a OffsetBook,
    pub registry: Option<Registry<'a>>,
    pub mesh: &'a MeshClient,
    pub puts: Puts<'a>,
    pub stats: &'a ShardStats,
}

impl Puller<'_> {
    pub(crate) async fn pull(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let request = PullRequest::parse(cmd)?;
        if !self.ctx.readable() {
            return Err((
                resp::NO_PERMISSION,
                format!(
                    "the broker[{}] pulling message is forbidden",
                    self.ctx.broker_addr
                ),
            ));
        }
        self.check_pull_group(request.group).await?;
        let topic = self.topics.get(request.topic);
        let topic = topic
            .or_else(|| replicated_topic(self.ctx, self.store, request.topic, request.queue_id));
        let topic = topic.ok_or_else(|| {
            (
                resp::TOPIC_NOT_EXIST,
                format!("topic[{}] not exist, apply first please!", request.topic),
            )
        })?;
        if topic.perm & perm::READ == 0 {
            return Err((
                resp::NO_PERMISSION,
                format!("the topic[{}] pulling message is forbidden", request.topic),
            ));
        }
        if request.queue_id < 0 || request.queue_id >= topic.read_queue_nums {
            let remark = format!(
                "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}] consumer:[{}]",
                request.queue_id, request.topic, topic.read_queue_nums, request.group
            );
            return Err((resp::SYSTEM_ERROR, remark));
        }
        let filter = self.pull_filter(cmd, &request).await?;
        if request.sys_flag & FLAG_COMMIT_OFFSET != 0
            && request.commit_offset >= 0
            && self.ctx.cfg.broker_role != BrokerRole::Slave
        {
            self.offsets.commit(
                request.topic,
                request.group,
                request.queue_id,
                request.commit_offset,
            );
        }
        let mut result = self.read_queue(&request, &filter).await?;
        let may_wait = request.sys_flag & FLAG_SUSPEND != 0 && self.ctx.live.long_polling_enable();
        if may_wait && pull_code(&result, request.offset) == resp::PULL_NOT_FOUND {
            self.park(&request).await;
            result = self.read_queue(&request, &filter).await?;
        }
        self.stats.count_pull(result.messages.len());
        let bytes = result.messages.iter().map(|m| m.len()).sum();
        let found = result.messages.len();
        self.stats
            .items
            .get(request.topic, request.group, found, bytes);
        let suggest = self.suggest_broker(&result);
        let mut response = pull_response(cmd, result, request.offset, suggest);
        if self.ctx.cfg.broker_role == BrokerRole::Slave
            && !self.ctx.cfg.offset_check_in_slave
            && response.code == resp::PULL_OFFSET_MOVED
        {
            // A slave may lag its master: it does not move the consumer (HA.md §5).
            response.code = resp::PULL_RETRY_IMMEDIATELY;
            response.set_ext("nextBeginOffset", request.offset.to_string());
        }
        // A slave's store follows its master's commitlog: it writes no event of its own.
        if response.code == resp::PULL_OFFSET_MOVED && self.ctx.cfg.broker_role != BrokerRole::Slave
        {
            let moved_to = response
                .ext("nextBeginOffset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(request.offset);
            let (topic, queue, group) = (request.topic, request.queue_id, request.group);
            let moved = (request.offset, moved_to);
            super::offset_moved::offset_moved_event(
                self.ctx, self.puts, topic, queue, group, moved,
            )
            .await;
        }
        Ok(response)
    }

    /// `suggestWhichBrokerId`: with `slaveReadEnable`, a consumer reading what has likely left
    /// memory (further behind the commitlog's end than `accessMessageInMemoryMaxRatio` % of
    /// RAM) is sent to the slave (id 1, `whichBrokerWhenConsumeSlowly`'s default), any other
    /// to the master.
    fn suggest_broker(&self, result: &GetResult) -> i64 {
        let live = &self.ctx.live;
        if !live.slave_read_enable() {
            return 0;
        }
        let last = result
            .messages
            .last()
            .and_then(|m| crate::message::record::RecordView::parse(m).ok())
            .map(|v| crate::store::split_physical(v.physical_offset).1);
        let behind = last.map_or(0, |l| self.store.get().written_offset().saturating_sub(l));
        let in_memory = total_memory_bytes() / 100
            * u64::from(live.access_message_in_memory_max_ratio_percent());
        suggest_broker_id(behind, in_memory)
    }

    /// Waits until the queue holds a readable message at the requested offset or the suspend
    /// time passes. Woken by the append's dispatch (under SYNC_FLUSH: by the flush that makes
    /// the record durable), never by polling.
    async fn park(&self, request: &PullRequest<'_>) {
        let offset = request.offset.max(0) as u64;
        let store = self.store.get();
        future::or(
            store.wait_readable(request.topic, request.queue_id, offset),
            glommio::timer::sleep(Duration::from_millis(request.suspend_ms)),
        )
        .await;
    }

    async fn read_queue(
        &self,
        request: &PullRequest<'_>,
        filter: &PullFilter,
    ) -> Result<GetResult, Failure> {
        let max_bytes = self.ctx.cfg.max_transfer_in_memory_bytes as usize;
        let max_count = request
            .max_count
            .min(self.ctx.cfg.max_transfer_in_memory_count.max(1) as usize);
        let tags = match filter {
            PullFilter::All => None,
            PullFilter::Tags(codes) => Some(codes),
            PullFilter::Sql(selector) => {
                let limits = (max_count, max_bytes);
                return self.read_matching(request, selector, limits).await;
            }
        };
        self.read_at(request, request.offset, max_count, max_bytes, tags)
            .await
    }

    async fn read_at(
        &self,
        request: &PullRequest<'_>,
        offset: i64,
        max_count: usize,
        max_bytes: usize,
        tags: Option<&HashSet<i32>>,
    ) -> Result<GetResult, Failure> {
        self.store
            .get()
            .get_messages(
                Reader::Consumer,
                request.topic,
                request.queue_id,
                offset,
                max_count,
                max_bytes,
                tags,
            )
            .await
            .map_err(|e| (resp::SYSTEM_ERROR, e.to_string()))
    }

    /// An SQL92 pull: reads on from the requested offset, keeping the records whose properties
    /// match, until `max_count` (or `max_bytes`) matched, the queue's end, or
    /// [`SQL_SCAN_UNITS_MAX`] units were looked at (Java's 16,000 bytes of units). Nothing
    /// matched: NO_MATCHED_MESSAGE with the offset scanned to, as Java answers.
    async fn read_matching(
        &self,
        request: &PullRequest<'_>,
        selector: &Selector,
        (max_count, max_bytes): (usize, usize),
    ) -> Result<GetResult, Failure> {
        let mut offset = request.offset;
        let mut matched: Option<GetResult> = None;
        let mut bytes = 0usize;
        loop {
            let kept = matched.as_ref().map_or(0, |m| m.messages.len());
            let mut got = self
                .read_at(request, offset, max_count - kept, max_bytes - bytes, None)
                .await?;
            if got.status != GetStatus::Found {
                return Ok(match matched {
                    None => got,
                    Some(found) if found.messages.is_empty() => no_match(found, offset),
                    Some(found) => found,
                });
            }
            got.messages
                .retain(|record| record_matches(record, selector));
            bytes += got.messages.iter().map(|m| m.len()).sum::<usize>();
            offset = got.next_begin_offset;
            let found = match matched.take() {
                None => got,
                Some(mut found) => {
                    found.messages.append(&mut got.messages);
                    found.next_begin_offset = offset;
                    found
                }
            };
            let done = found.messages.len() >= max_count
                || bytes >= max_bytes
                || offset >= found.max_offset
                || (offset - request.offset) as u64 >= SQL_SCAN_UNITS_MAX;
            if done {
                return Ok(match found.messages.is_empty() {
                    true => no_match(found, offset),
                    false => found,
                });
            }
            matched = Some(found);
        }
    }

    /// Java's subscription group check of a pull: an unknown group is auto-created when
    /// `autoCreateSubscriptionGroup` is on (or it is a `CID_RMQ_SYS_` group), else refused
    /// with SUBSCRIPTION_GROUP_NOT_EXIST; a group with `consumeEnable=false` gets
    /// NO_PERMISSION. Shards other than the control shard ask it once per group and remember
    /// the answer until the groups change.
    async fn check_pull_group(&self, group: &str) -> Result<(), Failure> {
        let seen = self.subscriptions.group_seen(group);
        let consume_enable = match (seen, &self.registry) {
            (Some(enabled), _) => Some(enabled),
            (None, Some(registry)) => registry.find_group(group).map(|g| g.consume_enable),
            (None, None) => {
                let request = MeshRequest::FindGroup {
                    group: group.to_string(),
                };
                let mesh = self.mesh.get().ok_or_else(|| {
                    (
                        resp::SYSTEM_ERROR,
                        "the shard mesh is not ready".to_string(),
                    )
                })?;
                match mesh.call(0, request).await {
                    Ok(MeshResponse::Group(found)) => {
                        if let Some(enabled) = found {
                            self.subscriptions.remember_group(group, enabled);
                        }
                        found
                    }
                    Ok(_) => {
                        let remark = "the control shard answered a group lookup wrongly";
                        return Err((resp::SYSTEM_ERROR, remark.to_string()));
                    }
                    Err(e) => {
                        let remark = format!("the control shard cannot look the group up: {e}");
                        return Err((resp::SYSTEM_ERROR, remark));
                    }
                }
            }
        };
        match consume_enable {
            Some(true) => Ok(()),
            Some(false) => Err((
                resp::NO_PERMISSION,
                format!("subscription group no permission, {group}"),
            )),
            None => Err((
                resp::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!(
                    "subscription group [{group}] does not exist, \nSee \
                     http://rocketmq.apache.org/docs/faq/ for further details."
                ),
            )),
        }
    }

    /// What to filter by, from the pull's own expression or from the group's heartbeat:
    /// tag codes (TAG), a compiled selector (SQL92, with `enablePropertyFilter`), or nothing.
    async fn pull_filter(
        &self,
        cmd: &RemotingCommand,
        request: &PullRequest<'_>,
    ) -> Result<PullFilter, Failure> {
        let sub_version = cmd
            .opt_i64("subVersion")
            .map_err(field_failure)?
            .unwrap_or(0);
        let enabled = self.ctx.live.enable_property_filter();
        let subscription = if request.sys_flag & FLAG_SUBSCRIPTION != 0 {
            let expression = cmd.opt_str("subscription").unwrap_or("*");
            let expression_type = cmd.opt_str("expressionType").unwrap_or("TAG");
            if !filter::is_tag_type(expression_type) {
                let selector = filter::sql_selector(enabled, expression_type, expression)?;
                return Ok(PullFilter::Sql(selector));
            }
            parse_tag_expression(request.topic, expression, sub_version)
        } else {
            let found = self
                .subscription(request.group, request.topic, sub_version)
                .await;
            let sub = found.ok_or_else(|| {
                (
                    resp::SUBSCRIPTION_NOT_EXIST,
                    "the consumer's subscription not exist".to_string(),
                )
            })?;
            if sub.sub_version < sub_version {
                return Err((
                    resp::SUBSCRIPTION_NOT_LATEST,
                    "the consumer's subscription not latest".into(),
                ));
            }
            if !filter::is_tag_type(&sub.expression_type) {
                let compiled = filter::sql_selector(enabled, &sub.expression_type, &sub.sub_string);
                // Java: the heartbeat registered no filter data for an expression it could
                // not compile.
                let compiled = compiled.map_err(|(code, remark)| match code {
                    resp::SUBSCRIPTION_PARSE_FAILED => (resp::FILTER_DATA_NOT_EXIST, remark),
                    _ => (code, remark),
                });
                return compiled.map(PullFilter::Sql);
            }
            sub
        };
        if subscription.matches_all() {
            return Ok(PullFilter::All);
        }
        let codes = subscription.tag_codes().into_iter().map(|c| c as i32);
        Ok(PullFilter::Tags(codes.collect()))
    }

    /// A group's subscription to a topic as of `min_version`: from the registry on the control
    /// shard; elsewhere from this shard's replica, or asked of the control shard when the
    /// replica has none or an older one (the heartbeat's broadcast may still be on its way).
    async fn subscription(
        &self,
        group: &str,
        topic: &str,
        min_version: i64,
    ) -> Option<SubscriptionData> {
        if let Some(registry) = &self.registry {
            return registry
                .clients
                .borrow()
                .subscription(group, topic)
                .cloned();
        }
        let local = self.subscriptions.get(group, topic);
        if local.as_ref().is_some_and(|s| s.sub_version >= min_version) {
            return local;
        }
        let mesh = self.mesh.get()?;
        let request = MeshRequest::GetSubscriptions {
            group: group.to_string(),
        };
        match mesh.call(0, request).await {
            Ok(MeshResponse::Subscriptions(subs)) => {
                let found = subs.iter().find(|s| s.topic == topic).cloned();
                self.subscriptions.apply(group.to_string(), subs);
                found
            }
            _ => local,
        }
    }
}

/// A slave serves a topic its metadata sync has not brought yet (created on the master less
/// than a sync period before it went down) when it holds replicated messages of the queue
/// asked for: consumers that move to the slave find everything that was acknowledged.
fn replicated_topic(
    ctx: &BrokerContext,
    store: &ShardStore,
    topic: &str,
    queue_id: i32,
) -> Option<TopicConfig> {
    if ctx.cfg.broker_role != BrokerRole::Slave || store.get().max_offset(topic, queue_id) <= 0 {
        return None;
    }
    let queues = queue_id + 1;
    Some(TopicConfig {
        order: false,
        perm: perm::READ,
        read_queue_nums: queues,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_name: topic.to_string(),
        topic_sys_flag: 0,
        write_queue_nums: queues,
    })
}

/// Queue units an SQL92 pull looks at, at most (Java: 16,000 bytes of 20-byte units).
const SQL_SCAN_UNITS_MAX: u64 = 800;

/// Whether a stored record's properties match `selector`.
fn record_matches(record: &[u8], selector: &Selector) -> bool {
    RecordView::parse(record).is_ok_and(|view| selector.matches(view.properties))
}

/// `result` as "scanned to `next`, nothing matched".
fn no_match(mut result: GetResult, next: i64) -> GetResult {
    result.status = GetStatus::NoMatchedMessage;
    result.next_begin_offset = next;
    result.messages.clear();
    result
}

/// Java's mapping of a store status to a pull response code.
fn pull_code(result: &GetResult, requested: i64) -> i32 {
    match result.status {
        GetStatus::Found => resp::SUCCESS,
        GetStatus::NoMatchedMessage | GetStatus::MessageWasRemoving => resp::PULL_RETRY_IMMEDIATELY,
        GetStatus::NoMessageInQueue if requested != 0 => resp::PULL_OFFSET_MOVED,
        GetStatus::NoMessageInQueue | GetStatus::OffsetOverflowOne | GetStatus::OffsetFoundNull => {
            resp::PULL_NOT_FOUND
        }
        GetStatus::OffsetTooSmall | GetStatus::OffsetOverflowBadly => resp::PULL_OFFSET_MOVED,
    }
}

fn status_name(status: GetStatus) -> &'static str {
    match status {
        GetStatus::Found => "FOUND",
        GetStatus::NoMatchedMessage => "NO_MATCHED_MESSAGE",
        GetStatus::MessageWasRemoving => "MESSAGE_WAS_REMOVING",
        GetStatus::NoMessageInQueue => "NO_MESSAGE_IN_QUEUE",
        GetStatus::OffsetTooSmall => "OFFSET_TOO_SMALL",
        GetStatus::OffsetOverflowOne => "OFFSET_OVERFLOW_ONE",
        GetStatus::OffsetOverflowBadly => "OFFSET_OVERFLOW_BADLY",
        GetStatus::OffsetFoundNull => "OFFSET_FOUND_NULL",
    }
}

/// The broker id a consumer `behind` bytes from the commitlog's end should pull from next.
fn suggest_broker_id(behind: u64, in_memory_bytes: u64) -> i64 {
    match behind > in_memory_bytes {
        true => 1,
        false => 0,
    }
}

/// Physical memory of the machine (Java's `TOTAL_PHYSICAL_MEMORY_SIZE`), read once.
fn total_memory_bytes() -> u64 {
    static TOTAL: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (pages.max(0) as u64).saturating_mul(page.max(0) as u64)
    })
}

fn pull_response(
    cmd: &RemotingCommand,
    result: GetResult,
    requested: i64,
    suggest: i64,
) -> RemotingCommand {
    let code = pull_code(&result, requested);
    let mut response = cmd
        .response_to(code, Some(status_name(result.status).to_string()))
        .with_ext("suggestWhichBrokerId", suggest.to_string())
        .with_ext("nextBeginOffset", result.next_begin_offset.to_string())
        .with_ext("minOffset", result.min_offset.to_string())
        .with_ext("maxOffset", result.max_offset.to_string());
    if code == resp::SUCCESS {
        let len = result.messages.iter().map(|m| m.len()).sum();
        let mut body = BytesMut::with_capacity(len);
        for message in &result.messages {
            body.put_slice(message);
        }
        response.body = body.freeze();
    }
    response
}
