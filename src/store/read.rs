//! Reads: messages by queue offset (PULL_MESSAGE), queue min/max offsets, offset by time,
//! by physical offset (VIEW_MESSAGE_BY_ID, END_TRANSACTION), by key (QUERY_MESSAGE). Returns
//! the stored record bytes as they are (`Bytes`: slices of the hot tail, or of one DMA read
//! per run of nearby records), checked (size, magic, CRC) but never re-encoded.
//! Runs on the shard that owns the queues.
//!
//! Retention may delete the oldest segments between two awaits of a read. Positions are
//! checked against the commitlog's min offset before each read and again when one fails:
//! records found removed are skipped (a pull reports MESSAGE_WAS_REMOVING if nothing else was
//! found, as Java does), and a lookup by offset reports it out of range.

use std::collections::HashSet;

use bytes::Bytes;
use futures_lite::future;

use super::commitlog::{checked_split_physical, split_physical};
use super::consumequeue::{ConsumeQueue, CqUnit};
use super::dispatch::has_key;
use super::error::{StoreError, StoreResult};
use super::io::Storage;
use super::MessageStore;
use crate::message::record::{peek_header, RecordView, MESSAGE_MAGIC_CODE};
use crate::runtime::OffsetWatch;

/// Largest span of the commitlog read at once for neighbouring records of one pull.
const READ_RUN_MAX_BYTES: u64 = 1 << 20;
/// Units scanned at least per pull when filtering (Java: 16000 bytes of units).
const SCAN_UNITS_MIN: u64 = 800;

/// Status of a [`MessageStore::get_messages`] (Java `GetMessageStatus`, PROTOCOL.md §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    Found,
    NoMatchedMessage,
    MessageWasRemoving,
    NoMessageInQueue,
    OffsetTooSmall,
    OffsetOverflowOne,
    OffsetOverflowBadly,
    OffsetFoundNull,
}

/// Who reads, which decides how far: see [`MessageStore::get_messages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The broker's own readers (delayed delivery, transactions): everything stored, durable
    /// or not.
    Broker,
    /// Consumers (PULL_MESSAGE): only up to the readable max offset
    /// ([`MessageStore::readable_max_offset`]), so nothing a kill -9 can still erase is served
    /// under SYNC_FLUSH. An offset between the readable and the stored max is
    /// OFFSET_OVERFLOW_ONE (wait), never moved.
    Consumer,
}

/// The result of [`MessageStore::get_messages`].
#[derive(Debug, Clone)]
pub struct GetResult {
    pub status: GetStatus,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    /// Stored records, in queue order.
    pub messages: Vec<Bytes>,
}

impl GetResult {
    fn empty(status: GetStatus, next: u64, min: u64, max: u64) -> GetResult {
        GetResult {
            status,
            next_begin_offset: next as i64,
            min_offset: min as i64,
            max_offset: max as i64,
            messages: Vec::new(),
        }
    }
}

impl<S: Storage> MessageStore<S> {
    /// Smallest queue offset with a message (0 for an unknown queue).
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner
            .queues
            .get(topic, queue_id)
            .map_or(0, |q| q.min_offset() as i64)
    }

    /// Next queue offset to be written (0 for an unknown queue).
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner
            .queues
            .get(topic, queue_id)
            .map_or(0, |q| q.max_offset() as i64)
    }

    /// The max offset a consumer sees: under SYNC_FLUSH the first queue offset whose record
    /// is not durable yet, else [`Self::max_offset`] (GET_MAX_OFFSET, pulls, offset search).
    pub fn readable_max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner
            .queues
            .get(topic, queue_id)
            .map_or(0, |q| q.readable_max() as i64)
    }

    /// A watch of the queue's max offset, advanced by every message dispatched to it (the
    /// broker's own readers: delayed delivery).
    pub fn queue_watch(&self, topic: &str, queue_id: i32) -> OffsetWatch {
        self.inner.queues.get_or_create(topic, queue_id).watch()
    }

    /// Resolves once the queue holds a readable message at `offset` (see
    /// [`Self::readable_max_offset`]): woken by the append's dispatch, and under SYNC_FLUSH by
    /// the commitlog flush that makes the record durable — never by polling. Pending forever
    /// if the store fails (a caller bounds it with its suspend time).
    pub async fn wait_readable(&self, topic: &str, queue_id: i32, offset: u64) {
        let cq = self.inner.queues.get_or_create(topic, queue_id);
        loop {
            let woken = match cq.readable_after(offset) {
                None => return,
                Some(None) => cq.watch().wait_for(offset + 1).await,
                Some(Some(end)) => self.inner.commitlog.flushed_watch.wait_for(end).await,
            };
            if woken.is_err() {
                return future::pending().await;
            }
        }
    }

    /// Up to `max_count` messages (and `max_bytes`, at least one) from `offset`, skipping
    /// units whose tag code (as `i32`) is not in `tag_codes` when given, as `reader` may see
    /// them.
    #[allow(clippy::too_many_arguments)]
    pub async fn get_messages(
        &self,
        reader: Reader,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_count: usize,
        max_bytes: usize,
        tag_codes: Option<&HashSet<i32>>,
    ) -> StoreResult<GetResult> {
        let Some(cq) = self.inner.queues.get(topic, queue_id) else {
            return Ok(GetResult::empty(GetStatus::NoMessageInQueue, 0, 0, 0));
        };
        let limit = match reader {
            Reader::Broker => cq.max_offset(),
            Reader::Consumer => cq.readable_max(),
        };
        let range = (offset, limit);
        self.get_upto(&cq, range, max_count, max_bytes, tag_codes)
            .await
    }

    /// Reads from `offset` up to `limit` (at most the queue's max offset).
    async fn get_upto(
        &self,
        cq: &ConsumeQueue<S>,
        (offset, limit): (i64, u64),
        max_count: usize,
        max_bytes: usize,
        tag_codes: Option<&HashSet<i32>>,
    ) -> StoreResult<GetResult> {
        let (min, max) = (cq.min_offset(), limit);
        let offset = offset.max(0) as u64;
        let early = match () {
            _ if cq.max_offset() == 0 => Some((GetStatus::NoMessageInQueue, 0)),
            _ if offset < min => Some((GetStatus::OffsetTooSmall, min)),
            // Stored but not readable yet (held back until durable): wait, do not move.
            _ if offset >= max && offset < cq.max_offset() => {
                Some((GetStatus::OffsetOverflowOne, offset))
            }
            _ if offset == max => Some((GetStatus::OffsetOverflowOne, offset)),
            _ if offset > max => Some((
                GetStatus::OffsetOverflowBadly,
                if min == 0 { 0 } else { max },
            )),
            _ => None,
        };
        if let Some((status, next)) = early {
            return Ok(GetResult::empty(status, next, min, max));
        }
        let scan = SCAN_UNITS_MIN.max(max_count as u64).min(max - offset);
        let units = cq
            .units(offset, scan)
            .await
            .map_err(|e| self.cq_error(&cq.topic, e))?;
        if units.is_empty() {
            return Ok(GetResult::empty(
                GetStatus::OffsetFoundNull,
                offset + 1,
                min,
                max,
            ));
        }
        let pick = self.pick(
            &cq.topic,
            cq.queue_id,
            offset,
            &units,
            max_count,
            max_bytes,
            tag_codes,
        )?;
        let (messages, removed) = self.read_units(&pick.chosen).await?;
        let status = match () {
            _ if !messages.is_empty() => GetStatus::Found,
            _ if pick.removed || removed => GetStatus::MessageWasRemoving,
            _ => GetStatus::NoMatchedMessage,
        };
        let mut result = GetResult::empty(status, offset + pick.scanned, min, max);
        result.messages = messages;
        Ok(result)
    }

    /// Chooses what to read among `units` (the queue's units from offset `first`). A unit that
    /// names another shard or bytes past the commitlog's end is corrupt data on disk: the read
    /// fails with the queue, the offset and what is wrong (the shard keeps serving).
    #[allow(clippy::too_many_arguments)]
    fn pick(
        &self,
        topic: &str,
        queue_id: i32,
        first: u64,
        units: &[CqUnit],
        max_count: usize,
        max_bytes: usize,
        tag_codes: Option<&HashSet<i32>>,
    ) -> StoreResult<Picked> {
        let cl = &self.inner.commitlog;
        let (clog_min, written) = (cl.min_offset(), cl.written());
        let mut picked = Picked::default();
        let mut bytes = 0usize;
        for (at, unit) in (first..).zip(units) {
            if picked.chosen.len() >= max_count.max(1) {
                break;
            }
            if unit.is_blank() {
                picked.scanned += 1;
                continue;
            }
            let (shard, pos) = split_physical(unit.physical_offset);
            let corrupt = |what: String| StoreError::Corrupt {
                offset: at,
                reason: format!(
                    "consume queue {} unit {at}: {what}",
                    self.inner
                        .layout
                        .consumequeue
                        .join(topic)
                        .join(queue_id.to_string())
                        .display()
                ),
            };
            if shard != self.inner.cfg.shard || unit.physical_offset < 0 || unit.size < 0 {
                let (offset, size) = (unit.physical_offset, unit.size);
                return Err(corrupt(format!(
                    "names physical offset {offset} (shard {shard}) and size {size}, not a \
                     record of shard {}",
                    self.inner.cfg.shard
                )));
            }
            if pos + unit.size as u64 > written {
                let end = pos + unit.size as u64;
                return Err(corrupt(format!(
                    "names bytes up to {end}, past the commitlog's end {written}"
                )));
            }
            let size = unit.size as usize;
            if !picked.chosen.is_empty() && bytes + size > max_bytes {
                break;
            }
            picked.scanned += 1;
            if pos < clog_min {
                picked.removed = true;
                continue;
            }
            if tag_codes.is_some_and(|codes| !codes.contains(&(unit.tags_code as i32))) {
                continue;
            }
            bytes += size;
            picked.chosen.push((pos, size));
        }
        Ok(picked)
    }

    /// Reads the records at `(pos, size)`, one commitlog read per run of nearby records.
    /// Runs that retention deleted meanwhile are skipped; the flag says whether any was.
    async fn read_units(&self, chosen: &[(u64, usize)]) -> StoreResult<(Vec<Bytes>, bool)> {
        let mut out = Vec::with_capacity(chosen.len());
        let mut removed = false;
        let mut i = 0;
        while i < chosen.len() {
            let (start, seg) = (
                chosen[i].0,
                self.inner.commitlog.log.segment_of(chosen[i].0),
            );
            let mut j = i + 1;
            while j < chosen.len() {
                let (pos, size) = chosen[j];
                let end = pos + size as u64;
                if pos < start
                    || end - start > READ_RUN_MAX_BYTES
                    || self.inner.commitlog.log.segment_of(pos) != seg
                {
                    break;
                }
                j += 1;
            }
            let end = chosen[i..j]
                .iter()
                .map(|(p, s)| p + *s as u64)
                .max()
                .unwrap_or(start);
            let run = match self
                .read_unless_removed(start, (end - start) as usize)
                .await?
            {
                Some(run) => run,
                None => {
                    removed = true;
                    i = j;
                    continue;
                }
            };
            for (pos, size) in &chosen[i..j] {
                let from = (pos - start) as usize;
                let record = run.slice(from..from + size);
                self.check_served(&record, *pos)?;
                out.push(record);
            }
            i = j;
        }
        Ok((out, removed))
    }

    /// Whether retention has deleted the commitlog byte at `pos` (an offset in the shard).
    fn is_removed(&self, pos: u64) -> bool {
        pos < self.inner.commitlog.min_offset()
    }

    /// Reads `len` commitlog bytes at `pos`; `None` if retention deleted them before or
    /// during the read.
    async fn read_unless_removed(&self, pos: u64, len: usize) -> StoreResult<Option<Bytes>> {
        if self.is_removed(pos) {
            return Ok(None);
        }
        match self.read_commitlog(pos, len).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(_) if self.is_removed(pos) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read_commitlog(&self, pos: u64, len: usize) -> StoreResult<Bytes> {
        let cl = &self.inner.commitlog;
        if let Some(hot) = cl.read_hot(pos, len) {
            return Ok(hot);
        }
        // A read that goes to the device waits for its turn (the semaphore is FIFO).
        let _turn = self.inner.reads.acquire_permit(1).await.ok();
        cl.read(pos, len).await.map_err(|e| {
            StoreError::io(
                "reading commitlog",
                cl.log.path_of(cl.log.segment_of(pos)),
                e,
            )
        })
    }

    /// The second side of the disk check: a served record must parse, sit where it says
    /// and carry a matching body CRC.
    fn check_served(&self, record: &[u8], pos: u64) -> StoreResult<()> {
        let corrupt = |reason: String| StoreError::Corrupt {
            offset: pos,
            reason,
        };
        let view = RecordView::parse(record).map_err(|e| corrupt(e.to_string()))?;
        view.check_crc().map_err(|e| corrupt(e.to_string()))?;
        if split_physical(view.physical_offset).1 != pos || view.total_size != record.len() {
            return Err(corrupt(format!(
                "record says it is at {}",
                view.physical_offset
            )));
        }
        Ok(())
    }

    fn cq_error(&self, topic: &str, e: std::io::Error) -> StoreError {
        StoreError::io(
            "reading consume queue",
            self.inner.layout.consumequeue.join(topic),
            e,
        )
    }

    /// The stored record at a physical offset of this shard.
    pub async fn read_by_physical_offset(&self, physical: i64) -> StoreResult<Bytes> {
        let Some((shard, pos)) = checked_split_physical(physical) else {
            return Err(StoreError::OffsetOutOfRange { offset: physical });
        };
        let cl = &self.inner.commitlog;
        if shard != self.inner.cfg.shard || pos < cl.min_offset() || pos + 8 > cl.written() {
            return Err(StoreError::OffsetOutOfRange { offset: physical });
        }
        // A client-supplied offset (VIEW_MESSAGE_BY_ID) may point anywhere: only the start of
        // a message record inside one segment is a record.
        let gone = StoreError::OffsetOutOfRange { offset: physical };
        let Some(head) = self.read_unless_removed(pos, 8).await? else {
            return Err(gone);
        };
        let (size, magic) = peek_header(&head).unwrap_or((0, 0));
        let seg_end = cl.log.segment_of(pos) + cl.log.segment_bytes();
        let end = pos + size.max(0) as u64;
        if magic != MESSAGE_MAGIC_CODE || size <= 8 || end > cl.written() || end > seg_end {
            return Err(StoreError::OffsetOutOfRange { offset: physical });
        }
        let Some(record) = self.read_unless_removed(pos, size as usize).await? else {
            return Err(gone);
        };
        self.check_served(&record, pos)?;
        Ok(record)
    }

    /// Store timestamp of the message at a queue offset.
    pub async fn store_time_at(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> StoreResult<Option<i64>> {
        let Some(cq) = self.inner.queues.get(topic, queue_id) else {
            return Ok(None);
        };
        if offset < cq.min_offset() as i64 || offset >= cq.max_offset() as i64 {
            return Ok(None);
        }
        let unit = cq
            .unit(offset as u64)
            .await
            .map_err(|e| self.cq_error(topic, e))?;
        if !unit.is_valid() || unit.is_blank() {
            return Ok(None);
        }
        let record = match self.read_by_physical_offset(unit.physical_offset).await {
            Ok(record) => record,
            // Deleted by retention; the queue's min offset is about to move past it.
            Err(StoreError::OffsetOutOfRange { .. })
                if self.is_removed(split_physical(unit.physical_offset).1) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let view = RecordView::parse(&record).map_err(|e| StoreError::Corrupt {
            offset: split_physical(unit.physical_offset).1,
            reason: e.to_string(),
        })?;
        Ok(Some(view.store_timestamp))
    }

    /// Store time of the queue's first message.
    pub async fn earliest_store_time(
        &self,
        topic: &str,
        queue_id: i32,
    ) -> StoreResult<Option<i64>> {
        self.store_time_at(topic, queue_id, self.min_offset(topic, queue_id))
            .await
    }

    /// The first queue offset whose message was stored at or after `timestamp_ms` (binary
    /// search on store time); the readable max offset when every readable message is older. Java 4.x returns
    /// the nearest one instead; the lower bound is what consumers starting from a time want.
    pub async fn offset_by_time(
        &self,
        topic: &str,
        queue_id: i32,
        timestamp_ms: i64,
    ) -> StoreResult<i64> {
        let (mut lo, mut hi) = (
            self.min_offset(topic, queue_id),
            self.readable_max_offset(topic, queue_id),
        );
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.store_time_at(topic, queue_id, mid).await? {
                Some(t) if t >= timestamp_ms => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// Messages of `topic` with `key` as a KEYS token or UNIQ_KEY, stored in
    /// `[begin_ts, end_ts]`, newest first, at most `max`.
    pub async fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin_ts: i64,
        end_ts: i64,
    ) -> StoreResult<Vec<Bytes>> {
        let candidates = self
            .inner
            .index
            .lookup(topic, key, begin_ts, end_ts, max * 4 + 16)
            .await?;
        let mut out = Vec::new();
        for physical in candidates {
            if out.len() >= max {
                break;
            }
            let Ok(record) = self.read_by_physical_offset(physical).await else {
                continue; // an entry past a recovered end, or a removed segment
            };
            let matches = RecordView::parse(&record).is_ok_and(|v| {
                v.topic == topic
                    && has_key(&v, key)
                    && v.store_timestamp >= begin_ts
                    && v.store_timestamp <= end_ts
            });
            if matches {
                out.push(record);
            }
        }
        Ok(out)
    }
}

#[derive(Default)]
struct Picked {
    chosen: Vec<(u64, usize)>,
    scanned: u64,
    removed: bool,
}
