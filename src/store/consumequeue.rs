//! Consume queues: per (topic, queueId) files of 20-byte units — commitlog physical offset
//! (i64), record size (i32), tag hash code (i64) — under
//! `consumequeue/<shard>/<topic>/<queueId>/<20-digit byte offset>` (STORE.md §3; the shard
//! level is ringmq's). Logical offset *n* is the unit at byte *n × 20*. Files grow as units
//! are flushed (not preallocated) up to a size that is a multiple of both the unit and the
//! I/O alignment. Units before a queue's first message are zeros (a sparse start); a gap
//! inside a queue is filled with blank units `(0, i32::MAX, 0)` that readers skip.
//!
//! Written only by `dispatch` (in memory, at once) and flushed by the store's background
//! task; always rebuildable from the commitlog. Memory: the unflushed units plus at most one
//! small chunk per queue written since open.
//!
//! Retention (STORE.md §3): after commitlog segments are deleted, a queue's min offset moves
//! to its first unit that points at or past the commitlog's min offset, and its files wholly
//! below that go (never the last one). The same correction runs at open, so a crash between
//! the two steps leaves nothing behind.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use super::commitlog::split_physical;
use super::error::{StoreError, StoreResult};
use super::io::{Storage, StorageFile};
use super::segmented::{LogOptions, SegmentedLog};
use crate::runtime::OffsetWatch;

/// Bytes of one unit.
pub use crate::limits::CQ_UNIT_BYTES;
/// Consume-queue file sizes are rounded up to a multiple of this: lcm(20, 4096), so a file
/// holds whole units and ends on an aligned boundary for any alignment up to 4 KiB.
pub const CQ_FILE_GRANULE_BYTES: u64 = CQ_UNIT_BYTES * 1024;
/// In-memory chunk of a queue's tail.
const CQ_CHUNK_BYTES: usize = 4000;
/// Bytes read at once when searching a file backwards for its last unit.
const CQ_SCAN_BYTES: u64 = 4000;
/// Units read at once when looking past blank units for the next real one.
const BLANK_SCAN_UNITS: u64 = 200;

/// One consume-queue unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqUnit {
    pub physical_offset: i64,
    pub size: i32,
    pub tags_code: i64,
}

impl CqUnit {
    /// The filler of a gap.
    pub const BLANK: CqUnit = CqUnit {
        physical_offset: 0,
        size: i32::MAX,
        tags_code: 0,
    };

    fn encode(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..8].copy_from_slice(&self.physical_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.size.to_be_bytes());
        out[12..].copy_from_slice(&self.tags_code.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> CqUnit {
        let mut p = [0u8; 8];
        let mut s = [0u8; 4];
        let mut t = [0u8; 8];
        p.copy_from_slice(&b[..8]);
        s.copy_from_slice(&b[8..12]);
        t.copy_from_slice(&b[12..20]);
        CqUnit {
            physical_offset: i64::from_be_bytes(p),
            size: i32::from_be_bytes(s),
            tags_code: i64::from_be_bytes(t),
        }
    }

    /// Written by a dispatch (zeros are not).
    pub fn is_valid(&self) -> bool {
        self.size > 0
    }

    /// A gap filler.
    pub fn is_blank(&self) -> bool {
        *self == CqUnit::BLANK
    }
}

/// The consume queue of one (topic, queueId).
pub(crate) struct ConsumeQueue<S: Storage> {
    pub(crate) topic: String,
    pub(crate) queue_id: i32,
    log: SegmentedLog<S>,
    min: Cell<u64>,
    /// Created on first request (long polls); advanced with every unit.
    watch: RefCell<Option<OffsetWatch>>,
    /// SYNC_FLUSH: the commitlog's durable offset, and the units appended while their record
    /// was not yet durable as (queue offset, record end in the shard), oldest first. Readers
    /// outside the broker see the queue only up to the first of them ([`Self::readable_max`]).
    durable: RefCell<Option<OffsetWatch>>,
    pending: RefCell<VecDeque<(u64, u64)>>,
    /// Its topic was deleted: never flushed again (its files are being removed).
    deleted: Cell<bool>,
}

impl<S: Storage> ConsumeQueue<S> {
    fn new(storage: S, dir: PathBuf, file_bytes: u64, topic: &str, queue_id: i32) -> Self {
        let opts = LogOptions {
            dir,
            segment_bytes: file_bytes,
            preallocate: false,
            chunk_bytes: CQ_CHUNK_BYTES,
            hot_bytes: 0,
            dsync: false,
        };
        ConsumeQueue {
            topic: topic.to_string(),
            queue_id,
            log: SegmentedLog::new(storage, opts),
            min: Cell::new(0),
            watch: RefCell::new(None),
            durable: RefCell::new(None),
            pending: RefCell::new(VecDeque::new()),
            deleted: Cell::new(false),
        }
    }

    /// From now on, units whose record is not durable are held back from
    /// [`Self::readable_max`] until `durable` (the commitlog's flushed offset) covers them.
    pub(crate) fn track_durable(&self, durable: OffsetWatch) {
        *self.durable.borrow_mut() = Some(durable);
    }

    /// Drops the pending units whose record is durable now; the durable offset, if tracked.
    fn prune_pending(&self) -> Option<u64> {
        let flushed = self.durable.borrow().as_ref()?.get();
        let mut pending = self.pending.borrow_mut();
        while pending.front().is_some_and(|&(_, end)| end <= flushed) {
            pending.pop_front();
        }
        Some(flushed)
    }

    /// The queue's max offset as consumers see it: the first offset whose record is not
    /// durable yet (SYNC_FLUSH; ringmq's unflushed commitlog tail is process memory, which a
    /// kill -9 erases), or [`Self::max_offset`] when durability is not tracked.
    pub(crate) fn readable_max(&self) -> u64 {
        self.prune_pending();
        let first = self.pending.borrow().front().map(|&(offset, _)| offset);
        first.unwrap_or_else(|| self.max_offset())
    }

    /// What makes `offset` readable: `None` once it is (or durability is not tracked), else
    /// the commitlog offset that must be durable first (its record's end) — `Some(None)` when
    /// the unit is not even appended yet.
    pub(crate) fn readable_after(&self, offset: u64) -> Option<Option<u64>> {
        self.prune_pending();
        if offset < self.readable_max() {
            return None;
        }
        if offset >= self.max_offset() {
            return Some(None);
        }
        let pending = self.pending.borrow();
        let end = pending.iter().take_while(|&&(o, _)| o <= offset).last();
        Some(end.map(|&(_, end)| end))
    }

    /// Next offset to be written (the queue's max offset).
    pub(crate) fn max_offset(&self) -> u64 {
        self.log.written() / CQ_UNIT_BYTES
    }

    /// First offset with a unit.
    pub(crate) fn min_offset(&self) -> u64 {
        self.min.get()
    }

    /// A watch of the max offset, for waking parked pulls.
    pub(crate) fn watch(&self) -> OffsetWatch {
        self.watch
            .borrow_mut()
            .get_or_insert_with(|| OffsetWatch::new(self.max_offset()))
            .clone()
    }

    /// Unflushed bytes.
    pub(crate) fn dirty_bytes(&self) -> u64 {
        self.log.written() - self.log.flushed()
    }

    /// Appends the unit for logical offset `offset` (in memory).
    pub(crate) fn append(&self, offset: u64, unit: CqUnit) {
        let max = self.max_offset();
        assert!(
            offset >= max,
            "unit {offset} of {} behind max {max}",
            self.topic
        );
        if offset > max && self.min.get() == max {
            // Empty queue starting mid-way (rebuilt after old segments went): sparse start.
            self.log.skip_to(offset * CQ_UNIT_BYTES);
            self.min.set(offset);
        }
        for gap in self.max_offset()..offset {
            tracing::warn!(topic = %self.topic, queue = self.queue_id, gap, "queue gap filled");
            self.log
                .append(gap * CQ_UNIT_BYTES, &CqUnit::BLANK.encode());
        }
        self.log.append(offset * CQ_UNIT_BYTES, &unit.encode());
        if let Some(flushed) = self.prune_pending() {
            let end = split_physical(unit.physical_offset).1 + unit.size as u64;
            if end > flushed {
                self.pending.borrow_mut().push_back((offset, end));
            }
        }
        if let Some(watch) = self.watch.borrow().as_ref() {
            watch.advance(offset + 1);
        }
    }

    /// Up to `max_units` units from `from` (stopping at the end of a file).
    pub(crate) async fn units(&self, from: u64, max_units: u64) -> io::Result<Vec<CqUnit>> {
        let file_units = self.log.segment_bytes() / CQ_UNIT_BYTES;
        let to_file_end = file_units - from % file_units;
        let n = max_units
            .min(self.max_offset().saturating_sub(from))
            .min(to_file_end);
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = self
            .log
            .read(from * CQ_UNIT_BYTES, (n * CQ_UNIT_BYTES) as usize)
            .await?;
        Ok(bytes.chunks_exact(20).map(CqUnit::decode).collect())
    }

    /// The unit at `offset` (below the max offset).
    pub(crate) async fn unit(&self, offset: u64) -> io::Result<CqUnit> {
        let bytes = self.log.read(offset * CQ_UNIT_BYTES, 20).await?;
        Ok(CqUnit::decode(&bytes))
    }

    pub(crate) async fn flush(&self) -> io::Result<()> {
        if self.deleted.get() {
            return Ok(());
        }
        self.log.flush().await.map(|_| ())
    }

    /// Removes the queue's files and directory (its topic was deleted; it is out of the map).
    /// A flush that was already writing may have made a file again: calling it twice, the
    /// second time after that flush, removes that one too.
    pub(crate) async fn remove_files(&self, storage: &S) -> io::Result<()> {
        self.deleted.set(true);
        let dir = self.log.dir().to_path_buf();
        let names = match storage.list_dir(&dir).await {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in names {
            storage.remove(&dir.join(name)).await?;
        }
        storage.remove_dir(&dir).await
    }

    /// Opens the files and finds min and max offsets.
    async fn load(&self) -> io::Result<()> {
        let starts = self.log.load().await?;
        let Some(&first) = starts.first() else {
            return Ok(());
        };
        let (end, last_file) = self.find_end(&starts).await?;
        let last = *starts.last().unwrap_or(&first);
        let (size, align) = match self.log.file(last) {
            Some(f) => (f.file_size().await?, f.alignment()),
            None => (0, 1),
        };
        if last != last_file || size > (end - last_file).div_ceil(align) * align {
            self.log.truncate(end).await?;
        } else {
            self.log.set_end(end);
        }
        self.min.set(self.find_min(first, end).await?);
        Ok(())
    }

    /// Byte offset after the last valid unit, and the file holding it.
    async fn find_end(&self, starts: &[u64]) -> io::Result<(u64, u64)> {
        for &start in starts.iter().rev() {
            let Some(file) = self.log.file(start) else {
                continue;
            };
            let size = file.file_size().await?;
            let mut hi = size - size % CQ_UNIT_BYTES;
            while hi > 0 {
                let lo = hi.saturating_sub(CQ_SCAN_BYTES);
                let bytes = file.read_at(lo, (hi - lo) as usize).await?;
                let units = bytes.len() / 20;
                let last = (0..units)
                    .rev()
                    .find(|i| CqUnit::decode(&bytes[i * 20..]).is_valid());
                if let Some(i) = last {
                    return Ok((start + lo + (i as u64 + 1) * CQ_UNIT_BYTES, start));
                }
                hi = lo;
            }
        }
        Ok((
            starts.first().copied().unwrap_or(0),
            starts.first().copied().unwrap_or(0),
        ))
    }

    /// First valid unit of the queue (units before it are a sparse, zero start).
    async fn find_min(&self, first_file: u64, end: u64) -> io::Result<u64> {
        let (mut lo, mut hi) = (first_file / CQ_UNIT_BYTES, end / CQ_UNIT_BYTES);
        let file_end = (first_file + self.log.segment_bytes()) / CQ_UNIT_BYTES;
        hi = hi.min(file_end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.unit(mid).await?.is_valid() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo.min(end / CQ_UNIT_BYTES))
    }

    /// Drops the units from the first one that is invalid or points at or past `limit` (an
    /// offset in this shard's commitlog). Recovery re-dispatches what follows.
    pub(crate) async fn cut_at(&self, limit: u64) -> io::Result<()> {
        let (min, max) = (self.min_offset(), self.max_offset());
        let beyond = |u: CqUnit| !u.is_valid() || split_physical(u.physical_offset).1 >= limit;
        if min == max || !beyond(self.unit(max - 1).await?) {
            return Ok(());
        }
        let (mut lo, mut hi) = (min, max - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if beyond(self.unit(mid).await?) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.log.truncate(lo * CQ_UNIT_BYTES).await?;
        self.pending.borrow_mut().retain(|&(offset, _)| offset < lo);
        if lo <= min {
            self.min.set(lo);
        }
        Ok(())
    }

    /// Retention: moves the min offset to the first unit pointing at or past `clog_min` (an
    /// offset in this shard's commitlog) and removes the files wholly below it, except the
    /// last file. Returns how many files went, and whether one that could go had to stay
    /// because part of it is not flushed yet (a later pass removes it).
    pub(crate) async fn clean_below(&self, clog_min: u64) -> io::Result<(usize, bool)> {
        let min = self.first_kept(clog_min).await?;
        assert!(
            min <= self.max_offset(),
            "min {min} past max {}",
            self.max_offset()
        );
        if min > self.min.get() {
            self.min.set(min);
        }
        // Files before the one holding the min offset are wholly below it.
        let below = self.log.segment_of(self.min.get() * CQ_UNIT_BYTES);
        let mut removed = 0;
        loop {
            let starts = self.log.segment_starts();
            let (Some(&first), true) = (starts.first(), starts.len() > 1) else {
                break;
            };
            let end = first + self.log.segment_bytes();
            if end > below || end > self.log.flushed() {
                break;
            }
            self.log.remove_oldest(first).await?;
            removed += 1;
        }
        // Bytes below still in memory will make (or grow) files a later pass must remove.
        let unflushed = self.log.flushed() < below;
        if removed > 0 {
            self.log.sync_dir().await?;
        }
        Ok((removed, unflushed))
    }

    /// The first offset in `[min, max)` whose unit points at or past `clog_min`; the max
    /// offset when there is none. Binary search: units point ever further into the log.
    async fn first_kept(&self, clog_min: u64) -> io::Result<u64> {
        let (mut lo, mut hi) = (self.min_offset(), self.max_offset());
        if lo == hi || self.kept_from(lo, hi, clog_min).await? {
            return Ok(lo);
        }
        lo += 1;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.kept_from(mid, hi, clog_min).await? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// Whether the first non-blank unit in `[from, hi)` points at or past `clog_min` (true
    /// when every one is blank: a gap carries no record to lose).
    async fn kept_from(&self, from: u64, hi: u64, clog_min: u64) -> io::Result<bool> {
        let mut at = from;
        while at < hi {
            let units = self.units(at, BLANK_SCAN_UNITS.min(hi - at)).await?;
            if units.is_empty() {
                // A file shorter than the queue's max says: corrupt or truncated on disk.
                let topic = &self.topic;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("consume queue of {topic}: no unit at {at} below its max {hi}"),
                ));
            }
            if let Some(u) = units.iter().find(|u| !u.is_blank()) {
                return Ok(u.is_valid() && split_physical(u.physical_offset).1 >= clog_min);
            }
            at += units.len() as u64;
        }
        Ok(true)
    }
}

/// Queues by topic, then queue id (looked up by `&str` without allocating).
type QueueMap<S> = HashMap<String, HashMap<i32, Rc<ConsumeQueue<S>>>>;

/// The consume queues of one shard.
pub(crate) struct ConsumeQueues<S: Storage> {
    storage: S,
    dir: PathBuf,
    file_bytes: u64,
    map: RefCell<QueueMap<S>>,
    /// Set by [`Self::track_durable`] (SYNC_FLUSH) and given to every queue.
    durable: RefCell<Option<OffsetWatch>>,
}

impl<S: Storage> ConsumeQueues<S> {
    /// Queues under `dir` (`consumequeue/<shard>`), files of about `file_bytes`.
    pub(crate) fn new(storage: S, dir: PathBuf, file_bytes: u64) -> Self {
        let file_bytes = file_bytes.div_ceil(CQ_FILE_GRANULE_BYTES) * CQ_FILE_GRANULE_BYTES;
        ConsumeQueues {
            storage,
            dir,
            file_bytes,
            map: RefCell::new(HashMap::new()),
            durable: RefCell::new(None),
        }
    }

    /// Every queue, now and later, holds back units whose record `durable` (the commitlog's
    /// flushed offset) does not cover yet; see [`ConsumeQueue::readable_max`].
    pub(crate) fn track_durable(&self, durable: OffsetWatch) {
        for cq in self.all() {
            cq.track_durable(durable.clone());
        }
        *self.durable.borrow_mut() = Some(durable);
    }

    pub(crate) fn get(&self, topic: &str, queue_id: i32) -> Option<Rc<ConsumeQueue<S>>> {
        self.map.borrow().get(topic)?.get(&queue_id).cloned()
    }

    /// The queue, created (in memory) if new.
    pub(crate) fn get_or_create(&self, topic: &str, queue_id: i32) -> Rc<ConsumeQueue<S>> {
        if let Some(cq) = self.get(topic, queue_id) {
            return cq;
        }
        let dir = self.dir.join(topic).join(queue_id.to_string());
        let cq = Rc::new(ConsumeQueue::new(
            self.storage.clone(),
            dir,
            self.file_bytes,
            topic,
            queue_id,
        ));
        if let Some(durable) = self.durable.borrow().as_ref() {
            cq.track_durable(durable.clone());
        }
        let mut map = self.map.borrow_mut();
        map.entry(topic.to_string())
            .or_default()
            .insert(queue_id, cq.clone());
        cq
    }

    /// Takes every queue of `topic` out of the map (a deleted topic; a send to the name
    /// afterwards starts a new queue at offset 0).
    pub(crate) fn remove_topic(&self, topic: &str) -> Vec<Rc<ConsumeQueue<S>>> {
        let removed = self.map.borrow_mut().remove(topic);
        removed
            .map(|q| q.into_values().collect())
            .unwrap_or_default()
    }

    /// How many queues of `topic` are in the map.
    pub(crate) fn get_topic_count(&self, topic: &str) -> usize {
        self.map.borrow().get(topic).map_or(0, HashMap::len)
    }

    /// The directory of `topic`'s queues.
    pub(crate) fn topic_dir(&self, topic: &str) -> PathBuf {
        self.dir.join(topic)
    }

    pub(crate) fn all(&self) -> Vec<Rc<ConsumeQueue<S>>> {
        let map = self.map.borrow();
        map.values().flat_map(|q| q.values().cloned()).collect()
    }

    /// Opens every queue found on disk.
    pub(crate) async fn load_all(&self) -> StoreResult<()> {
        let topics = match self.storage.list_dir(&self.dir).await {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("listing", &self.dir, e)),
        };
        for topic in topics {
            let tdir = self.dir.join(&topic);
            let ids = self
                .storage
                .list_dir(&tdir)
                .await
                .map_err(|e| StoreError::io("listing", &tdir, e))?;
            for id in ids.iter().filter_map(|i| i.parse::<i32>().ok()) {
                let cq = self.get_or_create(&topic, id);
                let qdir = tdir.join(id.to_string());
                cq.load()
                    .await
                    .map_err(|e| StoreError::io("loading consume queue", qdir, e))?;
                glommio::yield_if_needed().await;
            }
        }
        Ok(())
    }

    /// Flushes every queue with at least `min_dirty_bytes` unflushed (1 = all dirty ones). A
    /// queue that fails (a full disk) keeps its units in memory for the next round and does
    /// not hold back the others; the first failure is returned.
    pub(crate) async fn flush(&self, min_dirty_bytes: u64) -> StoreResult<()> {
        let mut first_error = None;
        for cq in self.all() {
            if cq.dirty_bytes() >= min_dirty_bytes.max(1) {
                if let Err(e) = cq.flush().await {
                    let dir = self.dir.join(&cq.topic);
                    first_error.get_or_insert(StoreError::io("flushing consume queue", dir, e));
                }
            }
            glommio::yield_if_needed().await;
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimStorage;

    fn unit(pos: u64) -> CqUnit {
        CqUnit {
            physical_offset: pos as i64,
            size: 100,
            tags_code: 0,
        }
    }

    /// A queue of 1024-unit files whose unit `i` points at commitlog offset `i * 100`, with
    /// units 1500..1510 missing (filled with blank units).
    async fn queue_with_a_gap(sim: &SimStorage) -> Rc<ConsumeQueue<SimStorage>> {
        let queues = ConsumeQueues::new(sim.clone(), PathBuf::from("/s/cq"), 20 * 1024);
        let cq = queues.get_or_create("T", 0);
        for i in (0..1500).chain(1510..3000) {
            cq.append(i, unit(i * 100));
        }
        cq
    }

    #[test]
    fn cleaning_moves_the_min_past_removed_records_and_blank_gaps_and_drops_files() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(7);
            let cq = queue_with_a_gap(&sim).await;
            cq.flush().await.unwrap();
            assert_eq!(cq.clean_below(0).await.unwrap(), (0, false));
            assert_eq!(cq.min_offset(), 0);
            assert_eq!(cq.clean_below(1_499 * 100).await.unwrap(), (1, false));
            assert_eq!(cq.min_offset(), 1_499);
            // Blank units carry no record: the min may land on the first of them.
            cq.clean_below(1_505 * 100).await.unwrap();
            assert_eq!(cq.min_offset(), 1_500);
            cq.clean_below(1_510 * 100).await.unwrap();
            assert_eq!(cq.min_offset(), 1_500, "the next real unit is kept");
            cq.clean_below(1_511 * 100).await.unwrap();
            assert_eq!(cq.min_offset(), 1_511);
            // Everything gone: the queue is empty at its max, and its last file stays.
            assert_eq!(cq.clean_below(u64::MAX >> 8).await.unwrap(), (1, false));
            assert_eq!((cq.min_offset(), cq.max_offset()), (3_000, 3_000));
            assert_eq!(cq.log.segment_starts(), vec![2 * 20 * 1024]);
            assert_eq!(
                cq.clean_below(0).await.unwrap(),
                (0, false),
                "never backwards"
            );
            assert_eq!(cq.min_offset(), 3_000);
        });
    }

    #[test]
    fn unflushed_files_stay_until_they_are_on_disk() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(8);
            let cq = queue_with_a_gap(&sim).await;
            assert_eq!(cq.clean_below(2_500 * 100).await.unwrap(), (0, true));
            assert_eq!(cq.min_offset(), 2_500, "the min moves at once");
            cq.flush().await.unwrap();
            assert_eq!(cq.clean_below(2_500 * 100).await.unwrap(), (2, false));
        });
    }
}
