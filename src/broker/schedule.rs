//! Delayed messages (STORE.md §9): a send with `DELAY = n` is stored in queue `n - 1` of
//! `SCHEDULE_TOPIC_XXXX`; the shard that owns that queue runs one task per level which waits
//! for the head message's delivery time (store time + the level's delay; a scheduled wake-up,
//! or the next append when the queue is empty), then re-puts it to `REAL_TOPIC`/`REAL_QID`
//! on that queue's shard and advances the level's offset. Offsets persist in
//! `config/delayOffset.json` (per shard), so delivery resumes on time after a restart.

use std::time::Duration;

use futures_lite::future;

use crate::broker::context::BrokerContext;
use crate::broker::placement::owner_shard;
use crate::broker::services::offsets::OffsetBook;
use crate::broker::services::puts::{PutError, Puts};
use crate::broker::topic_config::SCHEDULE_TOPIC;
use crate::message::properties::{self, Properties};
use crate::message::record::{RecordError, RecordInput, RecordView};
use crate::runtime::Shutdown;
use crate::store::{Clock, GetStatus, Reader, StoreError, SystemClock};

/// Rewrites a message for the schedule queue: REAL_TOPIC / REAL_QID set, topic and queue
/// replaced. Returns the schedule queue id.
pub fn to_schedule_queue(
    props: &mut Properties,
    topic: &str,
    queue_id: i32,
    level: usize,
    levels: usize,
) -> i32 {
    let level = level.clamp(1, levels.max(1));
    props.set(properties::REAL_TOPIC, topic);
    props.set(properties::REAL_QID, &queue_id.to_string());
    props.set(properties::DELAY, &level.to_string());
    (level - 1) as i32
}

/// The delay level a message asks for (0 = none), from its properties string.
pub fn delay_level(props_wire: &str) -> usize {
    delay_level_of(properties::find(props_wire, properties::DELAY))
}

/// The delay level a `DELAY` property's value asks for (0 = none or unreadable).
pub fn delay_level_of(delay: Option<&str>) -> usize {
    delay
        .and_then(|d| d.trim().parse::<usize>().ok())
        .unwrap_or(0)
}

/// The delay levels whose schedule queue shard `here` owns (each runs as a task of its own,
/// [`run_level`]).
pub fn levels_of(ctx: &BrokerContext, here: usize) -> Vec<usize> {
    let levels = ctx.cfg.message_delay_levels_ms.len();
    (1..=levels)
        .filter(|level| owner_shard(SCHEDULE_TOPIC, (*level - 1) as i32, ctx.shards) == here)
        .collect()
}

/// What a delay level's delivery touches: the settings, the delay offsets of the shard that
/// owns the level's queue, and the routed puts (the level's queue is read from `puts.store`).
pub struct Scheduler<'a> {
    pub ctx: &'a BrokerContext,
    pub offsets: &'a OffsetBook,
    pub puts: Puts<'a>,
}

/// Delivers delay level `level`'s messages as they come due, until shutdown.
pub async fn run_level(scheduler: &Scheduler<'_>, level: usize, shutdown: Shutdown) {
    let queue_id = (level - 1) as i32;
    let delay_ms = scheduler.ctx.cfg.message_delay_levels_ms[level - 1] as i64;
    loop {
        let offset = scheduler.offsets.delay(level as i32).unwrap_or(0);
        let wait = match deliver_due(scheduler, queue_id, offset, delay_ms).await {
            Ok(Some(wait)) => wait,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(level, error = %e, "delayed delivery failed; retrying");
                Wait::For(Duration::from_secs(1))
            }
        };
        let woken = match wait {
            // The head message's delivery time: a scheduled wake-up, not a poll.
            Wait::For(duration) => shutdown.sleep(duration).await,
            Wait::NewMessage(target) => {
                let watch = scheduler
                    .puts
                    .store
                    .get()
                    .queue_watch(SCHEDULE_TOPIC, queue_id);
                future::or(
                    async {
                        let _ = watch.wait_for(target).await;
                        true
                    },
                    async {
                        shutdown.wait().await;
                        false
                    },
                )
                .await
            }
        };
        if !woken {
            return;
        }
    }
}

/// Why a delay level's delivery round failed (retried a second later).
#[derive(Debug, thiserror::Error)]
enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a delayed record does not parse: {0}")]
    Record(#[from] RecordError),
    #[error(transparent)]
    Put(#[from] PutError),
}

enum Wait {
    For(Duration),
    NewMessage(u64),
}

/// Delivers the due messages from `offset`; says what to wait for next (`None`: go again).
async fn deliver_due(
    scheduler: &Scheduler<'_>,
    queue_id: i32,
    offset: i64,
    delay_ms: i64,
) -> Result<Option<Wait>, ScheduleError> {
    let result = scheduler
        .puts
        .store
        .get()
        .get_messages(
            Reader::Broker,
            SCHEDULE_TOPIC,
            queue_id,
            offset,
            32,
            1 << 20,
            None,
        )
        .await?;
    if result.status != GetStatus::Found {
        if matches!(
            result.status,
            GetStatus::OffsetTooSmall | GetStatus::OffsetOverflowBadly
        ) {
            scheduler
                .offsets
                .set_delay(queue_id + 1, result.next_begin_offset);
            return Ok(None);
        }
        return Ok(Some(Wait::NewMessage(offset.max(0) as u64 + 1)));
    }
    let now = SystemClock.now_ms();
    let mut next = offset;
    for stored in &result.messages {
        let view = RecordView::parse(stored)?;
        let due = view.store_timestamp + delay_ms;
        if due > now {
            scheduler.offsets.set_delay(queue_id + 1, next);
            return Ok(Some(Wait::For(Duration::from_millis((due - now) as u64))));
        }
        redeliver(scheduler, &view).await?;
        next = view.queue_offset + 1;
        scheduler.offsets.set_delay(queue_id + 1, next);
    }
    Ok(None)
}

/// Re-puts a due message to its real topic and queue.
async fn redeliver(scheduler: &Scheduler<'_>, view: &RecordView<'_>) -> Result<(), PutError> {
    let mut props = Properties::parse(view.properties);
    props.remove(properties::DELAY);
    let topic = props
        .get(properties::REAL_TOPIC)
        .unwrap_or_default()
        .to_string();
    let queue_id: i32 = props
        .get(properties::REAL_QID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    if topic.is_empty() {
        tracing::warn!(
            offset = view.queue_offset,
            "delayed message without REAL_TOPIC dropped"
        );
        return Ok(());
    }
    let wire = props.to_wire();
    let input = moved_copy(view, &topic, queue_id, &wire, scheduler.ctx.store_host);
    scheduler.puts.put_input(&input).await
}

/// A stored message moved to (`topic`, `queue_id`) with new properties, stored by this
/// broker: a due delayed or timer message.
pub fn moved_copy<'a>(
    view: &RecordView<'a>,
    topic: &'a str,
    queue_id: i32,
    properties: &'a str,
    store_host: std::net::SocketAddr,
) -> RecordInput<'a> {
    RecordInput {
        topic,
        queue_id,
        flag: view.flag,
        sys_flag: view.sys_flag,
        born_timestamp: view.born_timestamp,
        born_host: view.born_host,
        store_host,
        reconsume_times: view.reconsume_times,
        prepared_transaction_offset: view.prepared_transaction_offset,
        body: view.body,
        properties,
    }
}
