//! `StoreError`: what the store reports to the broker. Faults of the world (EIO, ENOSPC, a store
//! made with another shard count, a record too large) are errors; our own invariants are
//! `assert!`s in the code that owns them (STYLE habit 4/5).

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::message::record::RecordError;

/// An error of the message store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A commitlog flush failed earlier (a failed fdatasync, EIO on a write); the store accepts
    /// no more writes until it is reopened, so nothing unsynced is ever acknowledged. Running out
    /// of space is not this: see [`StoreError::NoSpace`].
    #[error("store is not writable: {reason}")]
    Unwritable { reason: String },
    /// The file system ran out of space (ENOSPC, EDQUOT) before a commitlog flush could write
    /// or a segment could be created: nothing was lost (the bytes are still in memory), appends
    /// are refused and the flush is retried in the background until it succeeds. The broker
    /// answers SERVICE_NOT_AVAILABLE (14).
    #[error(
        "the broker's disk is full: {reason}; writes resume by themselves once space is freed"
    )]
    NoSpace { reason: String },
    /// The disk holding the store is too full: appends are refused (nothing is stored) until
    /// retention frees space and usage is back at or under `resume_percent`. The broker
    /// answers SERVICE_NOT_AVAILABLE (14).
    #[error(
        "the broker's disk is full: {path} is on a disk {used_percent}% full (writes stop \
         above {full_percent}%): writes are refused until usage is at most {resume_percent}%; \
         free space, lower fileReservedTime or add disk"
    )]
    DiskFull {
        path: PathBuf,
        used_percent: u32,
        full_percent: u32,
        resume_percent: u32,
    },
    /// The flush covering this append failed; the append was not acknowledged.
    #[error("flush failed before the append at offset {offset} was durable")]
    FlushFailed { offset: u64 },
    /// The store is closing or closed.
    #[error("store is shut down")]
    ShutDown,
    /// The store directory was created with another shard count.
    #[error(
        "store {root} was created with {found} shard(s) but this broker runs {configured}: \
         start it with shardCount={found}, or point storePathRootDir at a new directory"
    )]
    ShardCountMismatch {
        root: PathBuf,
        found: u32,
        configured: u32,
    },
    /// The store was written before the 53-bit offset layout and its shards 1 and up hold
    /// records whose physical offsets carry the shard in bits 56–63.
    #[error(
        "store {root} was written by an older ringmq that put the shard in bits 56-63 of \
         physical offsets (offsets at or above 2^53, which JavaScript and other clients that \
         hold numbers as doubles round); shard(s) {shards:?} hold data in that layout, which \
         this version does not read. To migrate: stop the producers, let the consumers finish \
         on the older ringmq and stop it, then start this version with a new \
         storePathRootDir (keep topics and groups by copying config/topics.json and \
         config/subscriptionGroup.json into it; consumer offsets start over with the new \
         store). A store whose data is all on shard 0 (shardCount=1) opens as it is"
    )]
    OldOffsetLayout { root: PathBuf, shards: Vec<u32> },
    /// A record larger than the configured limit, or one that cannot fit a segment.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// The record handed to `put` does not parse.
    #[error("record at batch index {index} is malformed: {source}")]
    BadRecord {
        index: usize,
        #[source]
        source: RecordError,
    },
    /// A batch mixed topics or queues.
    #[error("batch records must share one topic and queue")]
    MixedBatch,
    /// Too many bytes are waiting for the disk (back-pressure); the put was not stored.
    #[error("{unflushed_bytes} bytes wait for the disk; try again later")]
    Busy { unflushed_bytes: u64 },
    /// Stored bytes that do not hold what they should (CRC, magic, size).
    #[error("corrupt data at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// A physical offset that belongs to another shard or lies outside the commitlog.
    #[error("physical offset {offset} is not in this shard's commitlog")]
    OffsetOutOfRange { offset: i64 },
    /// Configuration the store cannot work with.
    #[error("store configuration: {reason}")]
    Config { reason: String },
}

impl StoreError {
    /// Wraps an I/O error with the operation and path it came from.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Whether `e` says the file system has no room (ENOSPC, or EDQUOT for a quota): the operation
/// did not happen and can be retried once space is freed. Other errors (EIO above all) are not.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

/// Shorthand for results of store functions.
pub type StoreResult<T> = Result<T, StoreError>;
