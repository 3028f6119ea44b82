//! One task per shard (masters only) that takes in the shard's timer messages and delivers
//! them when due. Each round it loads the next bucket file when the window is empty, takes in
//! new records of the shard's queue of `rmq_sys_wheel_timer`, delivers what is due, builds
//! the copies of what comes due within the next 3 s (read and re-encoded ahead, up to
//! 32 MiB, so that a slot of many timers costs only its appends when it is due), and captures
//! a checkpoint at most every `timerFlushIntervalMs` when progress moved. Between rounds it
//! sleeps on four wake-ups only: a new record in the timer queue, the first due time in the
//! window (one timer), 3 s before the first timer not built yet, and the next
//! checkpoint; with nothing pending it does not wake at all. File work runs on blocking
//! threads.
//!
//! Delivery appends the copy to the same shard's commitlog (the target queue's owner is the
//! timer queue's owner), marked with `RINGMQ_TIMER_QO=<shard>:<queue offset>`; at start the
//! service reads the commitlog from the checkpoint's position for those marks (see
//! [`super::wheel`]), so a crash between a stored copy and the next checkpoint neither loses
//! nor repeats a timer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::future;

use super::files;
use super::wheel::{bucket_of, Checkpoint, Key, Place, Wheel};
use super::{timer_queue, TIMER_DEQUEUE_MS, TIMER_ENQUEUE_MS, TIMER_OUT_MS, TIMER_QO, TIMER_TOPIC};
use crate::broker::context::BrokerContext;
use crate::broker::placement::owner_shard;
use crate::broker::schedule::moved_copy;
use crate::broker::services::puts::Puts;
use crate::log_limit::{LogLimiter, Verdict};
use crate::message::properties::{self, Properties};
use crate::message::record::{
    peek_header, RecordError, RecordSlots, RecordView, MESSAGE_MAGIC_CODE,
};
use crate::runtime::Shutdown;
use crate::store::{Clock, GetStatus, Reader, StoreError, SystemClock};

/// Records taken in per read, and due timers delivered (or built ahead) per round.
const BATCH: usize = 32;
const DELIVER_PER_ROUND: usize = 1_024;
const READ_BYTES_MAX: usize = 4 << 20;
/// Timer records read at once for delivery (a run of queue offsets).
const FETCH_MAX: usize = 512;
/// How long before their time the copies of due timers are built (read, re-encoded), so
/// that at the time only their appends are left.
const PREPARE_AHEAD_MS: i64 = 3_000;
/// Bytes of copies built ahead, at most (per shard); past it the rest are built when due.
const PREPARE_BYTES_MAX: usize = 32 << 20;
/// Wait after a failed round (a full disk, an I/O error) before the next.
const RETRY: Duration = Duration::from_secs(1);

/// Why a timer round failed (logged; the round is retried after [`RETRY`]).
#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a timer record does not parse or encode: {0}")]
    Record(#[from] RecordError),
    #[error("the commitlog closed")]
    CommitlogClosed,
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, Fail>> {
    let task = glommio::executor().spawn_blocking(f);
    async move { Ok(task.await?) }
}

/// What the timer service touches: the settings, its shard's id, and the routed puts (its
/// shard's store is `puts.store`).
#[derive(Clone, Copy)]
pub struct TimerShard<'a> {
    pub id: usize,
    pub ctx: &'a BrokerContext,
    pub puts: Puts<'a>,
}

/// Runs the shard's timer service until shutdown.
pub async fn run(shard: TimerShard<'_>, shutdown: Shutdown) {
    let mut service = loop {
        match Service::start(shard).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(shard = shard.id, error = %e, "timer store cannot start; retrying");
                if !shutdown.sleep(RETRY).await {
                    return;
                }
            }
        }
    };
    service.serve(shutdown).await;
}

struct Service<'a> {
    shard: TimerShard<'a>,
    queue: i32,
    dir: PathBuf,
    wheel: Wheel,
    precision_ms: i64,
    flush_interval_ms: i64,
    /// Bucket files appended to since the last checkpoint's sync.
    dirty: Rc<RefCell<BTreeSet<i64>>>,
    /// The last captured progress and when.
    captured: Option<(i64, Option<Key>)>,
    captured_at_ms: i64,
    /// A checkpoint is being saved.
    saving: Rc<Cell<bool>>,
    /// How the last save ended: `Some(c)` saved (bucket files it covers may go), `None`
    /// failed (capture again).
    saved: Rc<Cell<Option<Option<Checkpoint>>>>,
    /// Copies built ahead of their time.
    prepared: Prepared,
    /// Whether copies are built ahead (`RINGMQ_TIMER_PREPARE=0` turns it off, for A/B).
    prepare: bool,
    log: LogLimiter<&'static str>,
}

/// A timer's copy, built: the record to append (its last bytes are the `TIMER_DEQUEUE_MS`
/// value, set again to the append time) and the queue it goes to.
struct Copy {
    record: BytesMut,
    slots: RecordSlots,
    topic: String,
    queue_id: i32,
}

impl Copy {
    /// Sets `TIMER_DEQUEUE_MS` (the record's last bytes, after the name-value separator) to
    /// `now` when it has the same number of digits (every epoch ms from 2001 to 2286 has 13).
    fn dequeued_at(&mut self, now: i64) {
        let digits = now.to_string();
        let Some(start) = self.record.len().checked_sub(digits.len() + 1) else {
            return;
        };
        let (separator, tail) = self.record[start..].split_at_mut(1);
        if separator[0] == properties::NAME_VALUE_SEPARATOR as u8
            && tail.iter().all(u8::is_ascii_digit)
        {
            tail.copy_from_slice(digits.as_bytes());
        }
    }
}

/// Copies built ahead, in delivery order (`None`: the timer has nothing to deliver — its
/// message is gone or does not match), and their bytes.
#[derive(Default)]
struct Prepared {
    copies: VecDeque<(Key, Option<Copy>)>,
    bytes: usize,
}

impl Prepared {
    /// The last key built.
    fn last(&self) -> Option<Key> {
        self.copies.back().map(|(k, _)| *k)
    }

    fn push(&mut self, key: Key, copy: Option<Copy>) {
        self.bytes += copy.as_ref().map_or(0, |c| c.record.len());
        self.copies.push_back((key, copy));
    }

    /// The built copy of `key`, if it was built (`Some(None)`: built, nothing to deliver).
    /// Copies of earlier keys are dropped: those timers left the window another way.
    fn take(&mut self, key: Key) -> Option<Option<Copy>> {
        while let Some((k, _)) = self.copies.front() {
            if *k > key {
                return None;
            }
            let (k, copy) = self.copies.pop_front().expect("front");
            self.bytes -= copy.as_ref().map_or(0, |c| c.record.len());
            if k == key {
                return Some(copy);
            }
        }
        None
    }
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

impl<'a> Service<'a> {
    async fn start(shard: TimerShard<'a>) -> Result<Service<'a>, Fail> {
        let queue = timer_queue(shard.id, shard.ctx.shards);
        let dir = files::dir(&shard.ctx.cfg.store_path_root_dir, shard.id);
        let d = dir.clone();
        let buckets = blocking(move || files::open(&d)).await?;
        let d = dir.clone();
        let checkpoint = match blocking(move || files::load_checkpoint(&d)).await {
            Ok(c) => c,
            Err(e) => {
                // Starting over is safe: intake from the queue's start, copies found by scanning.
                tracing::warn!(shard = shard.id, error = %e, "timer checkpoint unreadable; rescanning");
                None
            }
        };
        let store = shard.puts.store.get();
        let queue_min = store.min_offset(TIMER_TOPIC, queue);
        let scan_from = match checkpoint {
            Some(c) => c.commitlog_pos,
            None => first_record_pos(&shard, queue, queue_min).await?,
        };
        let copies = scan_copies(&shard, scan_from).await?;
        let found = copies.len();
        let recent = verified(&shard, queue, checkpoint, copies).await?;
        let qos = (
            recent.iter().map(|k| k.1).min(),
            recent.iter().map(|k| k.1).max(),
        );
        tracing::info!(
            shard = shard.id,
            ?checkpoint,
            scan_from,
            scan_to = store.written_offset(),
            found,
            verified = recent.len(),
            ?qos,
            "timer copies after the checkpoint"
        );
        let wheel = Wheel::restore(checkpoint, queue_min, &recent, scan_from, &buckets);
        tracing::info!(
            shard = shard.id,
            queue,
            enqueue_next = wheel.enqueue_next(),
            buckets = buckets.len(),
            copies_after_checkpoint = recent.len(),
            "timer store open"
        );
        let cfg = &shard.ctx.cfg;
        Ok(Service {
            queue,
            dir,
            wheel,
            precision_ms: cfg.timer_precision_ms as i64,
            flush_interval_ms: cfg.timer_flush_interval_ms as i64,
            dirty: Rc::default(),
            captured: checkpoint.map(|c| (c.enqueue_next, c.delivered)),
            captured_at_ms: 0,
            saving: Rc::default(),
            saved: Rc::default(),
            prepared: Prepared::default(),
            prepare: std::env::var("RINGMQ_TIMER_PREPARE").map_or(true, |v| v != "0"),
            log: LogLimiter::new(Duration::from_secs(10), 8),
            shard,
        })
    }

    async fn serve(&mut self, shutdown: Shutdown) {
        loop {
            let busy = match self.round().await {
                Ok(busy) => busy,
                Err(e) => {
                    if let Verdict::Log { suppressed } = self.log.check("round") {
                        tracing::warn!(shard = self.shard.id, error = %e, suppressed,
                            "timer delivery failed; retrying");
                    }
                    if !shutdown.sleep(RETRY).await {
                        return;
                    }
                    continue;
                }
            };
            self.maybe_checkpoint();
            if busy {
                glommio::yield_if_needed().await;
                continue;
            }
            if !self.wait(&shutdown).await {
                return;
            }
        }
    }

    /// One round; `true` when there may be more to do at once.
    async fn round(&mut self) -> Result<bool, Fail> {
        match self.saved.take() {
            None => {}
            Some(None) => self.captured = None,
            Some(Some(done)) => self.remove_covered(done).await?,
        }
        if let Some(bucket) = self.wheel.bucket_to_load() {
            let d = self.dir.clone();
            let entries = blocking(move || files::read(&d, bucket)).await?;
            self.wheel.loaded(bucket, &entries);
            return Ok(true);
        }
        let took = self.intake().await?;
        let delivered = self.deliver_due().await?;
        let prepared = !delivered && self.prepare_ahead().await?;
        Ok(took || delivered || prepared)
    }

    /// Removes the bucket files a saved checkpoint covers.
    async fn remove_covered(&mut self, done: Checkpoint) -> Result<(), Fail> {
        {
            let gone = self.wheel.files_done(&done);
            if !gone.is_empty() {
                let d = self.dir.clone();
                blocking(move || files::remove(&d, &gone)).await?;
            }
        }
        Ok(())
    }

    /// Takes in up to [`BATCH`] new timer records.
    async fn intake(&mut self) -> Result<bool, Fail> {
        let next = self.wheel.enqueue_next();
        let store = self.shard.puts.store.get();
        let r = store
            .get_messages(
                Reader::Broker,
                TIMER_TOPIC,
                self.queue,
                next,
                BATCH,
                READ_BYTES_MAX,
                None,
            )
            .await?;
        match r.status {
            GetStatus::Found => {}
            GetStatus::OffsetTooSmall => {
                // Removed by retention before they were taken in.
                tracing::warn!(
                    shard = self.shard.id,
                    from = next,
                    to = r.next_begin_offset,
                    "timer messages removed from the store before their time"
                );
                self.wheel.enqueued_to(r.next_begin_offset);
                return Ok(true);
            }
            _ => return Ok(false),
        }
        let mut groups: BTreeMap<i64, Vec<Key>> = BTreeMap::new();
        let mut late: Vec<(Key, Bytes)> = Vec::new();
        let mut end = next;
        for raw in &r.messages {
            let view = RecordView::parse(raw)?;
            end = view.queue_offset + 1;
            let Some(out) = out_ms(&view) else {
                if let Verdict::Log { suppressed } = self.log.check("no TIMER_OUT_MS") {
                    tracing::warn!(
                        offset = view.queue_offset,
                        suppressed,
                        "timer message without a valid TIMER_OUT_MS skipped"
                    );
                }
                continue;
            };
            let key = (out, view.queue_offset);
            match self.wheel.place(key) {
                Place::Skip => {}
                Place::DeliverNow => late.push((key, raw.clone())),
                Place::Window => groups.entry(bucket_of(out)).or_default().push(key),
                Place::File(b) => groups.entry(b).or_default().push(key),
            }
        }
        if !groups.is_empty() {
            self.dirty.borrow_mut().extend(groups.keys());
            let d = self.dir.clone();
            let groups: Vec<(i64, Vec<Key>)> = groups.into_iter().collect();
            blocking(move || files::append(&d, &groups)).await?;
        }
        for (key, raw) in late {
            if let Err(e) = self.deliver(key, &raw).await {
                // Everything before it is taken in; it is read again next round.
                self.wheel.enqueued_to(key.1);
                return Err(e);
            }
        }
        self.wheel.enqueued_to(end);
        Ok(true)
    }

    /// Delivers up to [`DELIVER_PER_ROUND`] due timers in order: their copies (built ahead,
    /// or now) appended one after the other with no wait in between.
    async fn deliver_due(&mut self) -> Result<bool, Fail> {
        let due = self
            .wheel
            .due(now_ms(), self.precision_ms, DELIVER_PER_ROUND);
        if due.is_empty() {
            return Ok(false);
        }
        let mut copies: Vec<Option<Option<Copy>>> =
            due.iter().map(|k| self.prepared.take(*k)).collect();
        let unbuilt: Vec<Key> = due
            .iter()
            .zip(&copies)
            .filter(|(_, c)| c.is_none())
            .map(|(k, _)| *k)
            .collect();
        if !unbuilt.is_empty() {
            let mut built = self.build(&unbuilt, now_ms()).await?.into_iter();
            for slot in copies.iter_mut().filter(|c| c.is_none()) {
                *slot = built.next().map(|(_, copy)| copy);
            }
        }
        for (key, copy) in due.into_iter().zip(copies) {
            // A copy not built (past the read limit) waits for the next round, as does every
            // timer after it: delivery follows key order.
            let Some(copy) = copy else { break };
            if let Some(copy) = copy {
                self.append(copy).await?;
            }
            self.wheel.delivered_one(key);
        }
        Ok(true)
    }

    /// Builds the copies of timers due within [`PREPARE_AHEAD_MS`] (up to
    /// [`PREPARE_BYTES_MAX`] of them), so that when they are due only their appends are
    /// left; `true` when it built some.
    async fn prepare_ahead(&mut self) -> Result<bool, Fail> {
        if !self.prepare || self.prepared.bytes >= PREPARE_BYTES_MAX {
            return Ok(false);
        }
        let horizon = now_ms() + PREPARE_AHEAD_MS;
        let keys = self.wheel.due_after(
            self.prepared.last(),
            horizon,
            self.precision_ms,
            DELIVER_PER_ROUND,
        );
        if keys.is_empty() {
            return Ok(false);
        }
        // Set again when appended; until then the time they are due.
        let due_ms = keys[0].0 + self.precision_ms;
        for (key, copy) in self.build(&keys, due_ms).await? {
            self.prepared.push(key, copy);
        }
        Ok(true)
    }

    /// The copies of timers `keys` (in delivery order), `TIMER_DEQUEUE_MS` = `dequeue_ms`:
    /// `None` for a timer whose message is gone or does not match its entry. About
    /// [`READ_BYTES_MAX`] of records are read at a time: the copies of a first part of `keys`
    /// (at least one) when there are more.
    async fn build(
        &mut self,
        keys: &[Key],
        dequeue_ms: i64,
    ) -> Result<Vec<(Key, Option<Copy>)>, Fail> {
        let (records, looked) = self.read_records(keys).await?;
        let mut out = Vec::with_capacity(looked);
        for key in &keys[..looked] {
            let copy = match records.get(&key.1) {
                Some(raw) => self.copy_of(*key, raw, dequeue_ms)?,
                None => {
                    if let Verdict::Log { suppressed } = self.log.check("gone") {
                        tracing::warn!(
                            shard = self.shard.id,
                            offset = key.1,
                            suppressed,
                            "timer message removed from the store before its time; skipped"
                        );
                    }
                    None
                }
            };
            out.push((*key, copy));
        }
        Ok(out)
    }

    /// The timer records of a first part of `keys` (at least one, up to about
    /// [`READ_BYTES_MAX`] read), each run of nearby queue offsets in one read; and how many
    /// keys were looked for (a key whose record is not in the map is gone).
    async fn read_records(&self, keys: &[Key]) -> Result<(HashMap<i64, Bytes>, usize), Fail> {
        let mut found = HashMap::with_capacity(keys.len());
        // Queue offsets [from, to) looked at.
        let mut looked: Vec<(i64, i64)> = Vec::new();
        let store = self.shard.puts.store.get();
        let mut bytes = 0;
        for (done, key) in keys.iter().enumerate() {
            let qo = key.1;
            if looked.iter().any(|(from, to)| (*from..*to).contains(&qo)) {
                continue;
            }
            if bytes >= READ_BYTES_MAX {
                return Ok((found, done));
            }
            let last = keys[done..]
                .iter()
                .map(|k| k.1)
                .filter(|q| (qo..qo + FETCH_MAX as i64).contains(q))
                .max()
                .unwrap_or(qo);
            let r = store
                .get_messages(
                    Reader::Broker,
                    TIMER_TOPIC,
                    self.queue,
                    qo,
                    (last - qo + 1) as usize,
                    READ_BYTES_MAX,
                    None,
                )
                .await?;
            for raw in r.messages {
                let at = RecordView::parse(&raw)?.queue_offset;
                bytes += raw.len();
                found.insert(at, raw);
            }
            // Offsets the read passed (or that are gone) are done with.
            looked.push((qo, r.next_begin_offset.max(qo + 1)));
        }
        Ok((found, keys.len()))
    }

    /// The copy of timer record `raw` for its real topic and queue; `None` (with a warning)
    /// when it does not match its entry or names no real topic.
    fn copy_of(&self, key: Key, raw: &Bytes, dequeue_ms: i64) -> Result<Option<Copy>, Fail> {
        let view = RecordView::parse(raw)?;
        assert_eq!(view.queue_offset, key.1, "fetched the wrong timer record");
        if out_ms(&view) != Some(key.0) {
            tracing::warn!(
                offset = key.1,
                "timer record does not match its entry; skipped"
            );
            return Ok(None);
        }
        let mut props = Properties::parse(view.properties);
        let topic = props.remove(properties::REAL_TOPIC).unwrap_or_default();
        let queue_id = props
            .remove(properties::REAL_QID)
            .and_then(|q| q.parse::<i32>().ok());
        let Some(queue_id) = queue_id.filter(|_| !topic.is_empty()) else {
            tracing::warn!(
                offset = key.1,
                "timer message without REAL_TOPIC/REAL_QID dropped"
            );
            return Ok(None);
        };
        props.set(TIMER_ENQUEUE_MS, &view.store_timestamp.to_string());
        props.set(TIMER_QO, &marker(self.shard.id, key.1));
        // Last, so that the append can set it again in place.
        props.remove(TIMER_DEQUEUE_MS);
        props.set(TIMER_DEQUEUE_MS, &dequeue_ms.to_string());
        let wire = props.to_wire();
        let input = moved_copy(&view, &topic, queue_id, &wire, self.shard.ctx.store_host);
        let mut record = BytesMut::with_capacity(input.encoded_len());
        let slots = input.encode(&mut record)?;
        Ok(Some(Copy {
            record,
            slots,
            topic,
            queue_id,
        }))
    }

    /// Appends a copy to its queue: in this shard's store (the send hook keeps a timer on
    /// the shard of its target queue), else through the queue's owner.
    async fn append(&self, mut copy: Copy) -> Result<(), Fail> {
        copy.dequeued_at(now_ms());
        let shards = self.shard.ctx.shards;
        if owner_shard(&copy.topic, copy.queue_id, shards) == self.shard.id {
            let store = self.shard.puts.store.get();
            let put = store.put(copy.record, copy.slots, false).await;
            return Ok(put.map(drop)?);
        }
        // Cannot happen with the send hook's choice of queue; delivery still goes on.
        tracing::warn!(
            topic = copy.topic,
            queue_id = copy.queue_id,
            "timer copy stored on another shard"
        );
        let puts = self.shard.puts;
        let put = puts.put(&copy.topic, copy.queue_id, copy.record, copy.slots, false);
        Ok(put.await.map(drop)?)
    }

    /// Stores the copy of timer record `raw` (taken in after its time) at once.
    async fn deliver(&self, key: Key, raw: &Bytes) -> Result<(), Fail> {
        match self.copy_of(key, raw, now_ms())? {
            Some(copy) => self.append(copy).await,
            None => Ok(()),
        }
    }

    /// Captures progress and saves it in the background, at most every
    /// `timerFlushIntervalMs`, once the commitlog is durable up to the capture.
    fn maybe_checkpoint(&mut self) {
        let state = (self.wheel.enqueue_next(), self.wheel.delivered());
        if self.captured == Some(state)
            || self.saving.get()
            || now_ms() < self.captured_at_ms + self.flush_interval_ms
        {
            return;
        }
        let store = self.shard.puts.store.get();
        let checkpoint = self.wheel.capture(store.written_offset());
        self.captured = Some(state);
        self.captured_at_ms = now_ms();
        self.saving.set(true);
        let dirty: Vec<i64> = std::mem::take(&mut *self.dirty.borrow_mut())
            .into_iter()
            .collect();
        let (dir, saving, saved, dirty_back) = (
            self.dir.clone(),
            Rc::clone(&self.saving),
            Rc::clone(&self.saved),
            Rc::clone(&self.dirty),
        );
        let shard_id = self.shard.id;
        glommio::spawn_local(async move {
            let d = dir.clone();
            let synced = dirty.clone();
            let mut result = blocking(move || files::sync(&d, &synced)).await;
            if result.is_ok()
                && store
                    .flushed_watch()
                    .wait_for(checkpoint.commitlog_pos)
                    .await
                    .is_err()
            {
                result = Err(Fail::CommitlogClosed);
            }
            if result.is_ok() {
                let d = dir.clone();
                result = blocking(move || files::save_checkpoint(&d, &checkpoint)).await;
            }
            match result {
                Ok(()) => saved.set(Some(Some(checkpoint))),
                Err(e) => {
                    dirty_back.borrow_mut().extend(dirty);
                    saved.set(Some(None));
                    tracing::warn!(shard = shard_id, error = %e, "timer checkpoint not saved");
                }
            }
            saving.set(false);
        })
        .detach();
    }

    /// Sleeps until a new timer record, the first due time, the time to build the next
    /// copies ahead, the next checkpoint, or shutdown (`false`).
    async fn wait(&self, shutdown: &Shutdown) -> bool {
        let now = now_ms();
        let mut wake = self.wheel.next_due_ms(self.precision_ms);
        if self.prepare && self.prepared.bytes < PREPARE_BYTES_MAX {
            let next = self
                .wheel
                .next_due_after(self.prepared.last(), self.precision_ms);
            if let Some(build_at) = next.map(|due| due - PREPARE_AHEAD_MS) {
                wake = Some(wake.map_or(build_at, |w| w.min(build_at)));
            }
        }
        let state = (self.wheel.enqueue_next(), self.wheel.delivered());
        if self.captured != Some(state) {
            // While a save is under way, look again in 100 ms (it may take a flush).
            let soonest = now + if self.saving.get() { 100 } else { 1 };
            let at = (self.captured_at_ms + self.flush_interval_ms).max(soonest);
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        let watch = self
            .shard
            .puts
            .store
            .get()
            .queue_watch(TIMER_TOPIC, self.queue);
        let target = self.wheel.enqueue_next().max(0) as u64 + 1;
        let new_record = async {
            let _ = watch.wait_for(target).await;
            true
        };
        let timer = async {
            match wake {
                Some(at) => {
                    glommio::timer::sleep(Duration::from_millis((at - now).max(0) as u64)).await;
                    true
                }
                None => future::pending().await,
            }
        };
        let stop = async {
            shutdown.wait().await;
            false
        };
        future::or(future::or(new_record, timer), stop).await
    }
}

/// A record's `TIMER_OUT_MS`.
fn out_ms(view: &RecordView<'_>) -> Option<i64> {
    properties::find(view.properties, TIMER_OUT_MS).and_then(|v| v.parse().ok())
}

fn marker(shard: usize, qo: i64) -> String {
    format!("{shard}:{qo}")
}

/// Where the copies of the timers of a store without a checkpoint can start: at the first
/// timer record still stored (a copy always follows its timer record).
async fn first_record_pos(shard: &TimerShard<'_>, queue: i32, queue_min: i64) -> Result<u64, Fail> {
    let store = shard.puts.store.get();
    let r = store
        .get_messages(
            Reader::Broker,
            TIMER_TOPIC,
            queue,
            queue_min,
            1,
            READ_BYTES_MAX,
            None,
        )
        .await?;
    let Some(raw) = r.messages.first() else {
        return Ok(store.written_offset());
    };
    let view = RecordView::parse(raw)?;
    Ok(crate::store::split_physical(view.physical_offset).1)
}

/// (`TIMER_OUT_MS`, queue offset) of every copy this shard's timer service stored from `pos`
/// (an offset in the shard's commitlog) to the end.
async fn scan_copies(shard: &TimerShard<'_>, pos: u64) -> Result<Vec<Key>, Fail> {
    let store = shard.puts.store.get();
    let mut pos = pos.max(store.commitlog_min_offset());
    let mut found = Vec::new();
    let mine = format!("{}:", shard.id);
    while let Some(chunk) = store.replication_chunk(pos, 1 << 20).await? {
        let bytes = &chunk.bytes[..];
        let mut at = 0;
        while let Some((size, magic)) = peek_header(&bytes[at..]) {
            if magic != MESSAGE_MAGIC_CODE || size <= 0 || at + size as usize > bytes.len() {
                break;
            }
            let record = &bytes[at..at + size as usize];
            at += size as usize;
            let Ok(view) = RecordView::parse(record) else {
                continue;
            };
            if view.topic == TIMER_TOPIC {
                continue;
            }
            let qo = properties::find(view.properties, TIMER_QO)
                .and_then(|m| m.strip_prefix(&mine))
                .and_then(|q| q.parse::<i64>().ok());
            if let (Some(qo), Some(out)) = (qo, out_ms(&view)) {
                found.push((out, qo));
            }
        }
        pos = chunk.next;
        glommio::yield_if_needed().await;
    }
    Ok(found)
}

/// The copies that are not covered by the checkpoint and name a timer record that is really
/// there with that `TIMER_OUT_MS` (a producer cannot fake the mark: the send hook removes it,
/// and a message re-sent from a delivered copy names a timer already delivered).
async fn verified(
    shard: &TimerShard<'_>,
    queue: i32,
    checkpoint: Option<Checkpoint>,
    copies: Vec<Key>,
) -> Result<Vec<Key>, Fail> {
    let covered = |k: &Key| {
        checkpoint.is_some_and(|c| k.1 < c.enqueue_next && c.delivered.is_some_and(|d| *k <= d))
    };
    let store = shard.puts.store.get();
    let mut out = Vec::new();
    for key in copies.into_iter().filter(|k| !covered(k)) {
        let r = store
            .get_messages(
                Reader::Broker,
                TIMER_TOPIC,
                queue,
                key.1,
                1,
                READ_BYTES_MAX,
                None,
            )
            .await?;
        let real = r.messages.first().is_some_and(|raw| {
            RecordView::parse(raw)
                .is_ok_and(|v| v.queue_offset == key.1 && out_ms(&v) == Some(key.0))
        });
        if real {
            out.push(key);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(tail: &str) -> Copy {
        let mut record = BytesMut::from(&b"....TIMER_DEQUEUE_MS\x01"[..]);
        record.extend_from_slice(tail.as_bytes());
        Copy {
            record,
            slots: RecordSlots {
                store_timestamp_at: 0,
            },
            topic: "T".into(),
            queue_id: 0,
        }
    }

    #[test]
    fn the_dequeue_time_is_set_again_in_place_when_appended() {
        let mut c = copy("1700000000000");
        c.dequeued_at(1_700_000_012_345);
        assert!(c.record.ends_with(b"\x011700000012345"));
        // Another width (never between 2001 and 2286) keeps the built value.
        c.dequeued_at(99);
        assert!(c.record.ends_with(b"\x011700000012345"));
    }

    #[test]
    fn built_copies_are_taken_in_key_order_and_stale_ones_dropped() {
        let mut p = Prepared::default();
        p.push((1_000, 1), Some(copy("1")));
        p.push((1_000, 2), None);
        p.push((1_000, 5), Some(copy("5")));
        p.push((2_000, 3), Some(copy("3")));
        assert_eq!(p.last(), Some((2_000, 3)));
        // Not built: a timer before the first built one.
        assert!(p.take((500, 9)).is_none());
        assert!(p.take((1_000, 1)).is_some_and(|c| c.is_some()));
        assert!(p.take((1_000, 2)).is_some_and(|c| c.is_none()));
        // (1_000, 5) left the window another way: dropped when a later key is asked for.
        assert!(p.take((2_000, 3)).is_some_and(|c| c.is_some()));
        assert_eq!((p.bytes, p.copies.len()), (0, 0));
    }
}
