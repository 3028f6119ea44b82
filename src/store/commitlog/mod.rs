//! The commitlog of one shard: segment files under `commitlog/<shard>/` (size from config,
//! 1 GiB by default, named by their 20-digit start offset, preallocated one ahead of need),
//! the single append cursor, the group-commit flusher and the recovery scan.
//!
//! Owned by the shard's executor; exactly one writer. Knows nothing of consumers or queues:
//! offsets here are offsets *in the shard*; the physical offsets RocketMQ sees carry the shard
//! in bits 45–52 ([`to_physical`]), so that every one is below 2^53: 256 shards of 32 TiB.
//!
//! - `segment`: the record-level view of segment bytes (blank record, record checks).
//! - `appender`: append with rollover, the flusher task, durable waits.
//! - `recovery`: the forward scan that finds the valid end.

pub(crate) mod appender;
#[cfg(test)]
mod pipeline_tests;
pub(crate) mod recovery;
pub(crate) mod segment;

use std::cell::{Cell, RefCell};
use std::io;

use bytes::Bytes;

use super::error::{StoreError, StoreResult};
use super::io::{Storage, StorageFile};
use super::segmented::{LogOptions, SegmentedLog};
use crate::log_limit::{LogLimiter, Verdict};
use crate::runtime::OffsetWatch;

/// Bits of a physical offset below the shard number (the shard sits in bits 45–52, so every
/// physical offset is below 2^53 and survives a client that holds it as an IEEE double).
pub const SHARD_SHIFT: u32 = crate::limits::SHARD_OFFSET_BITS;
const IN_SHARD_MASK: u64 = (1 << SHARD_SHIFT) - 1;
/// The first value that is not a physical offset.
pub const PHYSICAL_OFFSET_END: u64 = 1 << crate::limits::CLIENT_EXACT_INTEGER_BITS;

/// Where stores made before the 53-bit layout kept the shard (bits 56–63). Only the check
/// that refuses such stores and the migration tests use it.
pub const OLD_SHARD_SHIFT: u32 = 56;

/// The physical offset RocketMQ sees for `pos` in `shard`'s commitlog.
pub fn to_physical(shard: u8, pos: u64) -> i64 {
    assert!(
        pos <= IN_SHARD_MASK,
        "commitlog offset {pos} overflows {SHARD_SHIFT} bits"
    );
    ((u64::from(shard) << SHARD_SHIFT) | pos) as i64
}

/// Splits a physical offset into (shard, offset in that shard's commitlog). For offsets the
/// broker made itself; an offset from a client goes through [`checked_split_physical`].
pub fn split_physical(physical: i64) -> (u8, u64) {
    let raw = physical as u64;
    (((raw >> SHARD_SHIFT) & 0xFF) as u8, raw & IN_SHARD_MASK)
}

/// Splits a physical offset from outside (a client, an offsetMsgId): `None` when it is
/// negative or not below 2^53 (for example one handed out under the old layout), so it can
/// never be taken for an offset of another shard.
pub fn checked_split_physical(physical: i64) -> Option<(u8, u64)> {
    ((0..PHYSICAL_OFFSET_END as i64).contains(&physical)).then(|| split_physical(physical))
}

/// Write buffers the commitlog keeps for reuse (at most 1 MiB each; flushes write a few
/// sizes over and over).
const WRITE_BUFFERS_KEPT: usize = 3;

/// One shard's commitlog.
pub(crate) struct CommitLog<S: Storage> {
    pub(crate) log: SegmentedLog<S>,
    pub(crate) shard: u8,
    /// Largest record accepted (header + body + topic + properties).
    pub(crate) max_record_bytes: usize,
    /// Advanced by every append; the flusher waits on it (no timer, no polling).
    pub(crate) written_watch: OffsetWatch,
    /// Advanced after each write of appended data to the file (not yet durable); the SYNC_FLUSH
    /// syncer waits on it.
    pub(crate) submitted_watch: OffsetWatch,
    /// Advanced after each fdatasync; SYNC_FLUSH appends wait on it.
    pub(crate) flushed_watch: OffsetWatch,
    /// SYNC_FLUSH: data up to here stayed unflushed for `syncFlushTimeout` (advanced by the
    /// flush watchdog; the puts waiting for it report FLUSH_DISK_TIMEOUT).
    pub(crate) timed_out_watch: OffsetWatch,
    /// Moves to 1 when the store closes; the flusher waits on it beside `written_watch`.
    pub(crate) stop: OffsetWatch,
    pub(crate) last_store_timestamp: Cell<i64>,
    /// Why the store stopped accepting writes (a failed flush).
    pub(crate) failure: RefCell<Option<String>>,
    /// Completed flush rounds (each one fdatasync per touched segment).
    pub(crate) flush_rounds: Cell<u64>,
    /// Under ASYNC_FLUSH, unflushed bytes that start a flush before the interval ends.
    pub(crate) early_flush_bytes: u64,
    /// Set by retention while the disk is too full to accept appends.
    pub(crate) disk_full: Cell<Option<DiskFullMark>>,
    /// Why the last flush could not write (the file system is out of space): appends are
    /// refused and the flusher retries until a flush succeeds. Unlike `failure`, nothing is
    /// lost and no restart is needed.
    pub(crate) no_space: RefCell<Option<String>>,
    /// Advanced whenever a write or a segment creation meets a full file system; retention
    /// measures the disk again at once.
    pub(crate) space_short: OffsetWatch,
    /// Repeated store warnings (no space, failed background flushes): once per interval.
    pub(crate) log_limit: LogLimiter<&'static str>,
}

/// How often one repeated store warning is logged (with the count of those not logged).
pub(crate) const STORE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why appends are refused while the disk is full: its usage when last measured, and the
/// thresholds that set and clear the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskFullMark {
    pub used_percent: u32,
    pub full_percent: u32,
    pub resume_percent: u32,
}

impl<S: Storage> CommitLog<S> {
    /// A commitlog over `dir`; call [`CommitLog::load`] before use.
    pub(crate) fn new(
        storage: S,
        dir: std::path::PathBuf,
        shard: u8,
        segment_bytes: u64,
        max_record_bytes: usize,
        hot_bytes: usize,
        early_flush_bytes: u64,
    ) -> CommitLog<S> {
        let opts = LogOptions {
            dir,
            segment_bytes,
            preallocate: true,
            chunk_bytes: segment_bytes.min(1 << 20) as usize,
            hot_bytes,
            dsync: false,
        };
        CommitLog {
            log: SegmentedLog::new(storage, opts).keep_buffers(WRITE_BUFFERS_KEPT),
            shard,
            max_record_bytes,
            written_watch: OffsetWatch::new(0),
            submitted_watch: OffsetWatch::new(0),
            flushed_watch: OffsetWatch::new(0),
            timed_out_watch: OffsetWatch::new(0),
            stop: OffsetWatch::new(0),
            last_store_timestamp: Cell::new(0),
            failure: RefCell::new(None),
            flush_rounds: Cell::new(0),
            early_flush_bytes,
            disk_full: Cell::new(None),
            no_space: RefCell::new(None),
            space_short: OffsetWatch::new(0),
            log_limit: LogLimiter::new(STORE_LOG_INTERVAL, 16),
        }
    }

    /// Writes segments through O_DSYNC handles (SYNC_FLUSH), up to `in_flight` at once: each
    /// write is its own durable flush round, no fdatasync follows ([`appender::run_flusher`]).
    /// Before [`CommitLog::load`].
    pub(crate) fn with_dsync_writes(mut self, on: bool, in_flight: usize) -> CommitLog<S> {
        self.log = self.log.dsync_writes(on, in_flight);
        self
    }

    /// Opens the existing segments and checks they match the configured size.
    pub(crate) async fn load(&self) -> StoreResult<Vec<u64>> {
        let dir = self.log.dir().to_path_buf();
        let starts = self
            .log
            .load()
            .await
            .map_err(|e| StoreError::io("listing", &dir, e))?;
        let seg = self.log.segment_bytes();
        for (i, start) in starts.iter().enumerate() {
            let path = self.log.path_of(*start);
            if start % seg != 0 {
                return Err(StoreError::Config {
                    reason: format!(
                        "{} does not start at a multiple of mapped_file_size_commitlog_bytes \
                         ({seg}): the store was made with another segment size",
                        path.display()
                    ),
                });
            }
            self.check_segment_size(*start, i + 1 == starts.len())
                .await?;
        }
        Ok(starts)
    }

    async fn check_segment_size(&self, start: u64, last: bool) -> StoreResult<()> {
        let path = self.log.path_of(start);
        let file = self.log.file(start).ok_or_else(|| StoreError::Config {
            reason: format!("{} vanished", path.display()),
        })?;
        let size = file
            .file_size()
            .await
            .map_err(|e| StoreError::io("stat", &path, e))?;
        let seg = self.log.segment_bytes();
        if size == seg {
            return Ok(());
        }
        if last && size < seg {
            // Created but not yet preallocated when the process died.
            return file
                .pre_allocate(seg)
                .await
                .map_err(|e| StoreError::io("preallocating", &path, e));
        }
        Err(StoreError::Config {
            reason: format!(
                "{} is {size} bytes but mapped_file_size_commitlog_bytes is {seg}",
                path.display()
            ),
        })
    }

    /// Offset of the first byte still stored (the start of the oldest segment; retention
    /// moves it forward by whole segments).
    pub(crate) fn min_offset(&self) -> u64 {
        self.log.segment_starts().first().copied().unwrap_or(0)
    }

    /// Offset after the last appended byte.
    pub(crate) fn written(&self) -> u64 {
        self.log.written()
    }

    /// Offset up to which everything is durable.
    pub(crate) fn flushed(&self) -> u64 {
        self.log.flushed()
    }

    /// `len` stored bytes at `pos` if they are all in the in-memory hot tail.
    pub(crate) fn read_hot(&self, pos: u64, len: usize) -> Option<Bytes> {
        self.log.read_hot(pos, len)
    }

    /// Reads `len` stored bytes at `pos` (hot tail from memory, the rest from the file).
    pub(crate) async fn read(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.log.read(pos, len).await
    }

    /// Error to report when appends are refused.
    pub(crate) fn check_writable(&self) -> StoreResult<()> {
        if let Some(reason) = self.failure.borrow().as_ref() {
            return Err(StoreError::Unwritable {
                reason: reason.clone(),
            });
        }
        if self.stop.get() > 0 {
            return Err(StoreError::ShutDown);
        }
        if let Some(mark) = self.disk_full.get() {
            return Err(StoreError::DiskFull {
                path: self.log.dir().to_path_buf(),
                used_percent: mark.used_percent,
                full_percent: mark.full_percent,
                resume_percent: mark.resume_percent,
            });
        }
        if let Some(reason) = self.no_space.borrow().as_ref() {
            return Err(StoreError::NoSpace {
                reason: reason.clone(),
            });
        }
        self.check_offset_room()
    }

    /// Refuses appends once the shard's commitlog nears the end of its offset space
    /// ([`crate::limits::SHARD_COMMITLOG_CAPACITY_BYTES`], 32 TiB). The margin covers any one
    /// put: a batch (at most a frame) with the blank ends of the segments it rolls over can
    /// take at most twice its bytes plus two segments, so no append ever crosses the end.
    fn check_offset_room(&self) -> StoreResult<()> {
        let reserve = 2 * (self.log.segment_bytes() + crate::limits::FRAME_SIZE_MAX_BYTES as u64);
        let capacity = crate::limits::SHARD_COMMITLOG_CAPACITY_BYTES;
        if self.written() + reserve <= capacity {
            return Ok(());
        }
        Err(StoreError::Unwritable {
            reason: format!(
                "shard {}'s commitlog has reached the end of its offset space ({} TiB per \
                 shard, so that every offset stays below 2^53): run more shards on a new store",
                self.shard,
                capacity >> 40
            ),
        })
    }

    /// Whether to log one occurrence of the repeated condition `key` now: `Some(count of
    /// occurrences not logged since the last line)` once per [`STORE_LOG_INTERVAL`].
    pub(crate) fn log_now(&self, key: &'static str) -> Option<u64> {
        match self.log_limit.check(key) {
            Verdict::Log { suppressed } => Some(suppressed),
            Verdict::Quiet => None,
        }
    }

    /// Notes that the file system is out of space (retention measures it at once).
    pub(crate) fn note_space_short(&self) {
        self.space_short.advance(self.space_short.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_offsets_carry_the_shard_in_bits_45_to_52() {
        assert_eq!(to_physical(0, 1234), 1234);
        let p = to_physical(3, 1 << 40);
        assert_eq!(p, (3i64 << 45) | (1 << 40));
        assert_eq!(split_physical(p), (3, 1 << 40));
        assert_eq!(split_physical(to_physical(255, 7)), (255, 7));
        let top = to_physical(255, IN_SHARD_MASK);
        assert_eq!(top as u64, PHYSICAL_OFFSET_END - 1);
        assert_eq!(top as f64 as i64, top, "exact as a double");
        assert_eq!(checked_split_physical(top), Some((255, IN_SHARD_MASK)));
    }

    #[test]
    fn offsets_from_outside_the_layout_name_no_shard() {
        assert_eq!(checked_split_physical(-1), None);
        assert_eq!(checked_split_physical(PHYSICAL_OFFSET_END as i64), None);
        // An offset of shard 1 handed out under the old layout is not read as shard 0's.
        assert_eq!(checked_split_physical((1i64 << OLD_SHARD_SHIFT) | 64), None);
        assert_eq!(checked_split_physical(64), Some((0, 64)));
    }

    #[test]
    #[should_panic(expected = "overflows 45 bits")]
    fn a_position_past_the_shard_capacity_is_a_bug() {
        to_physical(1, 1 << 45);
    }
}
