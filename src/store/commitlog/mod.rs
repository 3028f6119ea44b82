//! The commitlog of one shard: segment files under `commitlog/<shard>/` (size from config,
//! 1 GiB by default, named by their 20-digit start offset, preallocated one ahead of need),
//! the single append cursor, the group-commit flusher and the recovery scan.
//!
//! Owned by the shard's executor; exactly one writer. Knows nothing of consumers or queues:
//! offsets here are offsets *in the shard*; the physical offsets RocketMQ sees carry the shard
//! in their top 8 bits ([`to_physical`]).
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
use crate::runtime::OffsetWatch;

/// Bits of a physical offset below the shard number.
pub const SHARD_SHIFT: u32 = 56;
const IN_SHARD_MASK: u64 = (1 << SHARD_SHIFT) - 1;

/// The physical offset RocketMQ sees for `pos` in `shard`'s commitlog.
pub fn to_physical(shard: u8, pos: u64) -> i64 {
    assert!(
        pos <= IN_SHARD_MASK,
        "commitlog offset {pos} overflows 56 bits"
    );
    ((u64::from(shard) << SHARD_SHIFT) | pos) as i64
}

/// Splits a physical offset into (shard, offset in that shard's commitlog).
pub fn split_physical(physical: i64) -> (u8, u64) {
    let raw = physical as u64;
    ((raw >> SHARD_SHIFT) as u8, raw & IN_SHARD_MASK)
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
}

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
        }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_offsets_carry_the_shard_in_the_top_bits() {
        assert_eq!(to_physical(0, 1234), 1234);
        let p = to_physical(3, 1 << 40);
        assert_eq!(p, (3i64 << 56) | (1 << 40));
        assert_eq!(split_physical(p), (3, 1 << 40));
        assert_eq!(split_physical(to_physical(255, 7)), (255, 7));
    }
}
