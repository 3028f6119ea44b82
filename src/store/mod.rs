//! The message store of one shard: its commitlog, the consume queues and key index of the
//! queues it owns, their checkpoint and recovery. [`MessageStore`] is the only store API the
//! broker and HA see. The store is the only module that touches files, always through the
//! [`io::Storage`] seam.
//!
//! Runs on the shard's executor: one writer, `Rc`/`RefCell` inside, no locks. Background work
//! (the commitlog flusher; consume-queue flush, index sealing and checkpoints; retention,
//! which deletes old segments and refuses writes while the disk is full) runs in tasks of the
//! same executor.
//!
//! Layout under `storePathRootDir` (ringmq's; the commitlog directory may be moved with
//! `storePathCommitLog`):
//!
//! ```text
//! shard_count                                    the shard count the store was made with
//! store_format                                   the offset layout (53-bit offsets)
//! commitlog/<shard>/<20-digit offset>            segments (offsets in the shard)
//! consumequeue/<shard>/<topic>/<queueId>/<20-digit byte offset>
//! index/<shard>/<20-digit first offset>          sealed index files
//! checkpoint/<shard>                             recovery start offsets
//! abort/<shard>                                  exists while the shard's store is open
//! ```

pub mod checkpoint;
pub mod commitlog;
pub mod consumequeue;
pub mod dispatch;
pub mod error;
pub mod index;
pub mod io;
pub mod metadata;
pub mod replica;
pub mod retention;

mod background;
mod delete;
mod open;
mod put;
mod read;
mod segmented;
mod tail;
mod write_plan;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

use commitlog::CommitLog;
use consumequeue::ConsumeQueues;
use index::Index;

pub use commitlog::{checked_split_physical, split_physical, to_physical};
pub use error::{StoreError, StoreResult};
pub use io::{DmaStorage, Storage};
pub use read::{GetResult, GetStatus, Reader};
pub use retention::{RetentionConfig, RetentionReport};

use crate::config::{BrokerConfig, FlushDiskType};
use crate::limits::{PROPERTIES_MAX_BYTES, TOPIC_NAME_MAX_BYTES};

/// Bytes of a record besides its body, topic and properties (both hosts IPv6).
const RECORD_FIXED_MAX_BYTES: usize = 115;

/// A source of wall-clock milliseconds (store timestamps), injectable for tests.
pub trait Clock {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_millis() as i64)
    }
}

/// What one shard's store needs from the configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `storePathRootDir`.
    pub root_dir: PathBuf,
    /// `storePathCommitLog`: the parent of the per-shard commitlog directories.
    pub commitlog_dir: PathBuf,
    /// This shard.
    pub shard: u8,
    /// Shards of the broker (recorded in the store; another count is refused).
    pub shard_count: u32,
    /// `mappedFileSizeCommitLog`.
    pub segment_bytes: u64,
    /// `mappedFileSizeConsumeQueue` (rounded up to whole units and alignment).
    pub consume_queue_file_bytes: u64,
    pub flush_disk_type: FlushDiskType,
    pub sync_flush_timeout_ms: u64,
    pub flush_interval_commitlog_ms: u64,
    pub flush_interval_consume_queue_ms: u64,
    pub flush_consume_queue_least_pages: u32,
    pub flush_consume_queue_thorough_interval_ms: u64,
    /// `maxMessageSize`: largest body.
    pub max_message_bytes: u64,
    pub check_crc_on_recover: bool,
    pub message_index_enable: bool,
    /// `messageDelayLevel` in ms (SCHEDULE_TOPIC_XXXX tag codes).
    pub delay_levels_ms: Vec<u64>,
    /// Flushed commitlog bytes kept in memory for readers of the hot tail.
    pub hot_tail_bytes: u64,
    /// Unflushed commitlog bytes beyond which puts wait (then fail with `Busy`).
    pub unflushed_max_bytes: u64,
    /// SYNC_FLUSH writes the commitlog through O_DSYNC handles, each write its own durable
    /// flush round (true, the default), rather than writes followed by pipelined fdatasync
    /// rounds (false).
    pub sync_flush_dsync: bool,
    /// O_DSYNC commitlog writes in flight at once (1 to `limits::COMMITLOG_WRITES_IN_FLIGHT_MAX`;
    /// `RINGMQ_DSYNC_WRITES` in the broker's environment, for comparison in one binary: 1 is
    /// one write at a time).
    pub dsync_writes_in_flight: usize,
    /// Index entries kept in memory before they are sealed to a file.
    pub index_active_entries_max: usize,
    /// Deleting old segments and the disk-full guard.
    pub retention: RetentionConfig,
    /// Recovery cuts the commitlog here (a slave following a master whose history diverged
    /// from its own): records at or past this offset in the shard are dropped.
    pub truncate_to: Option<u64>,
}

impl StoreConfig {
    /// The store settings of `cfg` for `shard` of `shard_count`.
    pub fn from_broker(cfg: &BrokerConfig, shard: u8, shard_count: u32) -> StoreConfig {
        StoreConfig {
            root_dir: cfg.store_path_root_dir.clone(),
            commitlog_dir: cfg.store_path_commitlog.clone(),
            shard,
            shard_count,
            segment_bytes: cfg.mapped_file_size_commitlog_bytes,
            consume_queue_file_bytes: cfg.mapped_file_size_consume_queue_bytes,
            // A SYNC_MASTER acknowledges a send only once it is durable here as well as on
            // the slave: ringmq's unflushed tail lives in process memory (O_DIRECT), not in
            // the page cache, so this is what keeps slave-acknowledged sends through a kill -9
            // of the master (group commit keeps the cost to one fdatasync per batch).
            flush_disk_type: match cfg.broker_role {
                crate::config::BrokerRole::SyncMaster => FlushDiskType::SyncFlush,
                _ => cfg.flush_disk_type,
            },
            sync_flush_timeout_ms: cfg.sync_flush_timeout_ms,
            flush_interval_commitlog_ms: cfg.flush_interval_commitlog_ms,
            flush_interval_consume_queue_ms: cfg.flush_interval_consume_queue_ms,
            flush_consume_queue_least_pages: cfg.flush_consume_queue_least_pages,
            flush_consume_queue_thorough_interval_ms: cfg.flush_consume_queue_thorough_interval_ms,
            max_message_bytes: cfg.max_message_size_bytes,
            check_crc_on_recover: cfg.check_crc_on_recover,
            message_index_enable: cfg.message_index_enable,
            delay_levels_ms: cfg.message_delay_levels_ms.clone(),
            // Bounded by what the disk needs rather than generously: an ASYNC_FLUSH flush starts
            // once 4 MiB wait (open.rs), puts wait beyond 32 MiB unflushed (a disk that cannot
            // keep up), and readers past the hot tail read the file.
            hot_tail_bytes: 8 << 20,
            unflushed_max_bytes: 32 << 20,
            sync_flush_dsync: std::env::var_os("RINGMQ_SYNC_FDATASYNC").is_none(),
            dsync_writes_in_flight: std::env::var("RINGMQ_DSYNC_WRITES")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(crate::limits::COMMITLOG_WRITES_IN_FLIGHT_DEFAULT)
                .clamp(1, crate::limits::COMMITLOG_WRITES_IN_FLIGHT_MAX),
            index_active_entries_max: index::INDEX_ACTIVE_ENTRIES_MAX,
            retention: RetentionConfig::from_broker(cfg),
            truncate_to: None,
        }
    }

    /// Defaults for a store in `root` (tests, tools): Java's defaults, one shard.
    pub fn for_dir(root: impl Into<PathBuf>) -> StoreConfig {
        let mut cfg = BrokerConfig::default();
        let root = root.into();
        cfg.store_path_root_dir = root.clone();
        cfg.store_path_commitlog = root.join("commitlog");
        StoreConfig::from_broker(&cfg, 0, 1)
    }

    /// Largest record: the body limit plus the largest topic, properties and fixed fields.
    pub fn max_record_bytes(&self) -> usize {
        self.max_message_bytes as usize
            + TOPIC_NAME_MAX_BYTES
            + PROPERTIES_MAX_BYTES
            + RECORD_FIXED_MAX_BYTES
    }

    fn validate(&self) -> StoreResult<()> {
        let fail = |reason: String| Err(StoreError::Config { reason });
        if self.shard_count == 0
            || self.shard_count > crate::limits::SHARDS_MAX
            || u32::from(self.shard) >= self.shard_count
        {
            return fail(format!("shard {} of {}", self.shard, self.shard_count));
        }
        if self.segment_bytes < self.max_record_bytes() as u64 + 8 {
            return fail(format!(
                "mapped_file_size_commitlog_bytes {} cannot hold a record of {} bytes \
                 (maxMessageSize plus headers); raise it or lower maxMessageSize",
                self.segment_bytes,
                self.max_record_bytes()
            ));
        }
        let capacity = crate::limits::SHARD_COMMITLOG_CAPACITY_BYTES;
        if self.segment_bytes > capacity / 16 {
            return fail(format!(
                "mapped_file_size_commitlog_bytes {} is too large: a shard's commitlog \
                 addresses {capacity} bytes (offsets stay below 2^53)",
                self.segment_bytes
            ));
        }
        if let Some(problem) = self.retention.problem() {
            return fail(problem);
        }
        Ok(())
    }
}

/// Removes every file of one shard's store (commitlog, consume queues, index, checkpoint):
/// a slave too far behind its master starts over. The store must be closed.
pub fn remove_shard_files(cfg: &StoreConfig) -> std::io::Result<()> {
    let layout = Layout::new(cfg);
    for dir in [&layout.commitlog, &layout.consumequeue, &layout.index] {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match std::fs::remove_file(&layout.checkpoint) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How a put ended (the record is stored in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStatus {
    /// Stored (and durable, if the put waited under SYNC_FLUSH).
    PutOk,
    /// Stored, but not known durable within `syncFlushTimeout` (response code 10).
    FlushDiskTimeout,
    /// SYNC_MASTER: stored, but no slave acknowledged it within `slaveTimeout` (code 12).
    FlushSlaveTimeout,
    /// SYNC_MASTER: stored, but no slave is connected or it is too far behind (code 11).
    SlaveNotAvailable,
}

/// What a SYNC_MASTER put waits for besides its own flush: a slave acknowledging the bytes up
/// to an offset in this shard's commitlog (set by the broker's HA service).
pub trait ReplicaWait {
    fn wait_replicated(
        &self,
        end: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = PutStatus> + '_>>;
}

/// The result of [`MessageStore::put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub status: PutStatus,
    /// Physical offset (the shard in bits 45–52).
    pub physical_offset: i64,
    /// Queue offset (0 for prepared and rollback records, which get no queue unit).
    pub queue_offset: i64,
    pub store_timestamp: i64,
    pub wrote_bytes: usize,
}

/// The result of [`MessageStore::put_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutBatchResult {
    pub status: PutStatus,
    /// Physical offset of every record, in order.
    pub physical_offsets: Vec<i64>,
    /// Queue offset of the first record; the others follow consecutively.
    pub queue_offset: i64,
    /// Store timestamp of the last record.
    pub store_timestamp: i64,
    pub wrote_bytes: usize,
}

/// Paths of one shard's store.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub commitlog_root: PathBuf,
    pub commitlog: PathBuf,
    pub consumequeue: PathBuf,
    pub index: PathBuf,
    pub checkpoint: PathBuf,
    pub abort: PathBuf,
}

impl Layout {
    fn new(cfg: &StoreConfig) -> Layout {
        let shard = cfg.shard.to_string();
        let root = cfg.root_dir.clone();
        Layout {
            commitlog_root: cfg.commitlog_dir.clone(),
            commitlog: cfg.commitlog_dir.join(&shard),
            consumequeue: root.join("consumequeue").join(&shard),
            index: root.join("index").join(&shard),
            checkpoint: root.join("checkpoint").join(&shard),
            abort: root.join("abort").join(&shard),
            root,
        }
    }
}

pub(crate) struct Inner<S: Storage> {
    cfg: StoreConfig,
    storage: S,
    clock: Rc<dyn Clock>,
    layout: Layout,
    commitlog: Rc<CommitLog<S>>,
    queues: ConsumeQueues<S>,
    index: Index<S>,
    /// The background tasks, detached: a store dropped without `close` (only tests do that)
    /// is freed from inside one of its own tasks when the executor drops them, and a `Task`
    /// would then cancel its siblings through the executor that is being torn down (a panic
    /// in a destructor: the process aborts). `close` awaits them.
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    retention: retention::RetentionState,
    closed: Cell<bool>,
    /// The store was not closed cleanly last time (the abort file was there).
    unclean_start: bool,
    /// SYNC_MASTER: puts that wait also wait for a slave.
    replica: RefCell<Option<Rc<dyn ReplicaWait>>>,
    /// Commitlog reads at the device at once (`STORE_READS_IN_FLIGHT_MAX`).
    reads: glommio::sync::Semaphore,
}

/// The message store of one shard. Cheap to clone (a handle); lives on one executor.
pub struct MessageStore<S: Storage = DmaStorage> {
    inner: Rc<Inner<S>>,
}

impl<S: Storage> Clone for MessageStore<S> {
    fn clone(&self) -> Self {
        MessageStore {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Storage> MessageStore<S> {
    /// This store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Whether the last shutdown was unclean (the `abort` marker was found at open).
    pub fn was_unclean_start(&self) -> bool {
        self.inner.unclean_start
    }

    /// Commitlog bytes appended (physical offset of the next record).
    pub fn max_physical_offset(&self) -> i64 {
        to_physical(self.inner.cfg.shard, self.inner.commitlog.written())
    }

    /// Commitlog bytes durable.
    pub fn flushed_physical_offset(&self) -> i64 {
        to_physical(self.inner.cfg.shard, self.inner.commitlog.flushed())
    }

    /// Physical offset of the first stored byte.
    pub fn min_physical_offset(&self) -> i64 {
        to_physical(self.inner.cfg.shard, self.inner.commitlog.min_offset())
    }

    /// Completed commitlog flush rounds (each one fdatasync per segment touched).
    pub fn flush_rounds(&self) -> u64 {
        self.inner.commitlog.flush_rounds.get()
    }

    /// Makes every put that waits (WAIT=true) also wait for `replica` (SYNC_MASTER).
    pub fn set_replica_wait(&self, replica: Rc<dyn ReplicaWait>) {
        *self.inner.replica.borrow_mut() = Some(replica);
    }

    /// Why the store refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.inner.commitlog.failure.borrow().clone()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fault_rounds;

#[cfg(test)]
pub(crate) mod test_support {
    use std::future::Future;

    /// Runs `fut` to completion on a glommio executor on this thread.
    pub(crate) fn run<T>(fut: impl Future<Output = T>) -> T {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .ring_depth(64)
            .make()
            .expect("cannot start a glommio executor");
        ex.run(fut)
    }
}
