//! Opening and closing a shard's store, and recovery.
//!
//! Open: check the shard count, note whether the `abort` marker survived (unclean shutdown),
//! create it, load the commitlog segments, consume queues and sealed index files, then
//! recover. Recovery scans the commitlog from the last safe point — the lowest of the
//! checkpoint's durable commitlog offset, its consume-queue safe offset and the end of the
//! sealed index — verifying every record's CRC; the first invalid record is the end, and
//! everything after it (a torn or corrupt tail) is cut off. Queue units past the safe point
//! are dropped and rebuilt from the scanned records, as are the index entries past the sealed
//! files. Queue min offsets are then corrected against the commitlog's min offset, and queue
//! and index files below it removed (retention may have stopped between deleting segments
//! and cleaning up after them). Close: stop the tasks, flush everything, write the
//! checkpoint, remove `abort`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use super::checkpoint::{check_shard_count, write_small_file, Checkpoint};
use super::commitlog::recovery::{Scanner, Step};
use super::commitlog::{appender, CommitLog};
use super::consumequeue::ConsumeQueues;
use super::dispatch::{dispatch, Targets};
use super::error::{StoreError, StoreResult};
use super::index::Index;
use super::io::Storage;
use super::retention::{self, RetentionState};
use super::{background, Clock, Inner, Layout, MessageStore, StoreConfig};
use crate::config::FlushDiskType;

/// Under ASYNC_FLUSH a flush starts before its interval ends once this much waits: a write of
/// 4 MiB already runs at the disk's sequential speed, and every byte waiting is process memory
/// (O_DIRECT: no page cache holds it), per shard.
const ASYNC_EARLY_FLUSH_BYTES: u64 = 4 << 20;
use crate::message::record::RecordView;

/// Shares of the background task queue (glommio's default queue has 1000).
const BACKGROUND_SHARES: usize = 250;
/// Scanned bytes between two flushes of the rebuilt queues during recovery.
const RECOVERY_FLUSH_EVERY_BYTES: u64 = 64 << 20;

impl<S: Storage> MessageStore<S> {
    /// Opens (creating if needed) and recovers shard `cfg.shard`'s store, then starts its
    /// background tasks. Must run on the executor that will own the store.
    pub async fn open(storage: S, clock: Rc<dyn Clock>, cfg: StoreConfig) -> StoreResult<Self> {
        cfg.validate()?;
        let layout = Layout::new(&cfg);
        check_shard_count(
            &storage,
            &layout.root,
            &layout.commitlog_root,
            cfg.shard_count,
        )
        .await?;
        let unclean_start = storage
            .exists(&layout.abort)
            .await
            .map_err(|e| StoreError::io("checking", &layout.abort, e))?;
        let checkpoint = Checkpoint::read(&storage, &layout.checkpoint).await?;
        write_small_file(&storage, &layout.abort, b"")
            .await
            .map_err(|e| StoreError::io("creating", &layout.abort, e))?;
        let commitlog = Rc::new(
            CommitLog::new(
                storage.clone(),
                layout.commitlog.clone(),
                cfg.shard,
                cfg.segment_bytes,
                cfg.max_record_bytes(),
                cfg.hot_tail_bytes as usize,
                (cfg.unflushed_max_bytes / 2).min(ASYNC_EARLY_FLUSH_BYTES),
            )
            .with_dsync_writes(
                cfg.flush_disk_type == FlushDiskType::SyncFlush && cfg.sync_flush_dsync,
                cfg.dsync_writes_in_flight,
            ),
        );
        commitlog.load().await?;
        let queues = ConsumeQueues::new(
            storage.clone(),
            layout.consumequeue.clone(),
            cfg.consume_queue_file_bytes,
        );
        queues.load_all().await?;
        let index = Index::new(
            storage.clone(),
            layout.index.clone(),
            cfg.index_active_entries_max,
        );
        index.load().await?;
        let inner = Rc::new(Inner {
            cfg,
            storage,
            clock,
            layout,
            commitlog,
            queues,
            index,
            tasks: RefCell::new(Vec::new()),
            retention: RetentionState::new(),
            closed: Cell::new(false),
            unclean_start,
            replica: RefCell::new(None),
            reads: glommio::sync::Semaphore::new(crate::limits::STORE_READS_IN_FLIGHT_MAX as u64),
        });
        let store = MessageStore { inner };
        store.recover(checkpoint).await?;
        if store.inner.cfg.flush_disk_type == FlushDiskType::SyncFlush {
            // Recovered records are durable; from here on a record reaches consumers once it
            // is (see ConsumeQueue::readable_max).
            let flushed = store.inner.commitlog.flushed_watch.clone();
            store.inner.queues.track_durable(flushed);
        }
        store.clean_queues_and_index().await?;
        store.start_tasks();
        Ok(store)
    }

    async fn recover(&self, checkpoint: Option<Checkpoint>) -> StoreResult<()> {
        let inner = &*self.inner;
        let cl = &inner.commitlog;
        let clog_min = cl.min_offset();
        let limit = inner.cfg.truncate_to.unwrap_or(u64::MAX).max(clog_min);
        let cq_start = checkpoint
            .map_or(clog_min, |c| c.consume_queue_safe.min(c.commitlog_flushed))
            .max(clog_min)
            .min(limit);
        let index_start = match inner.cfg.message_index_enable {
            true => inner.index.safe_offset().max(clog_min).min(limit),
            false => u64::MAX,
        };
        let start = cq_start.min(index_start);
        if inner.unclean_start {
            tracing::warn!(
                shard = inner.cfg.shard,
                start,
                "unclean shutdown: recovering"
            );
        }
        for cq in inner.queues.all() {
            cq.cut_at(cq_start)
                .await
                .map_err(|e| StoreError::io("cutting consume queue", &inner.layout.root, e))?;
        }
        inner.index.restart_at(index_start);
        let (end, last_ts) = self.rescan(start, cq_start, index_start, limit).await?;
        if let Some(ck) = checkpoint.filter(|_| limit == u64::MAX) {
            if end < ck.commitlog_flushed {
                tracing::error!(end, flushed = ck.commitlog_flushed, "durable records lost");
            }
        }
        cl.log
            .truncate(end)
            .await
            .map_err(|e| StoreError::io("truncating", cl.log.dir(), e))?;
        let index_restart = inner.index.cut_at(end).await?;
        if index_start > end {
            inner.index.restart_at(index_restart);
        }
        let last_ts = last_ts.max(checkpoint.map_or(0, |c| c.last_store_timestamp));
        cl.last_store_timestamp.set(last_ts);
        cl.written_watch.advance(end);
        cl.submitted_watch.advance(end);
        cl.flushed_watch.advance(end);
        self.write_checkpoint().await
    }

    /// Re-reads the commitlog from `start`, re-dispatching records to the queues from
    /// `cq_start` and to the index from `index_start`. Returns (end, last store timestamp).
    async fn rescan(
        &self,
        start: u64,
        cq_start: u64,
        index_start: u64,
        limit: u64,
    ) -> StoreResult<(u64, i64)> {
        let inner = &*self.inner;
        let mut scanner = Scanner::new(&inner.commitlog, start, inner.cfg.check_crc_on_recover);
        let (mut last_ts, mut since_flush, mut records) = (0i64, 0u64, 0u64);
        let end = loop {
            match scanner.next().await? {
                Step::Record { pos, bytes } if pos + bytes.len() as u64 > limit => {
                    tracing::warn!(
                        shard = inner.cfg.shard,
                        end = pos,
                        records,
                        "commitlog cut to follow the master's history"
                    );
                    break pos;
                }
                Step::Record { pos, bytes } => {
                    let view = RecordView::parse(&bytes).map_err(|e| StoreError::Corrupt {
                        offset: pos,
                        reason: e.to_string(),
                    })?;
                    let index_on = inner.cfg.message_index_enable && pos >= index_start;
                    let targets = Targets {
                        queues: &inner.queues,
                        index: index_on.then_some(&inner.index),
                        to_queue: pos >= cq_start,
                        delay_levels_ms: &inner.cfg.delay_levels_ms,
                    };
                    dispatch(&targets, &view, pos + bytes.len() as u64);
                    last_ts = last_ts.max(view.store_timestamp);
                    records += 1;
                    since_flush += bytes.len() as u64;
                    if since_flush >= RECOVERY_FLUSH_EVERY_BYTES {
                        since_flush = 0;
                        self.flush_queues_and_index(1).await?;
                    }
                    glommio::yield_if_needed().await;
                }
                Step::End { pos, reason } => {
                    tracing::info!(shard = inner.cfg.shard, start, end = pos, records, %reason,
                        "commitlog recovered");
                    break pos;
                }
            }
        };
        Ok((end, last_ts))
    }

    /// Flushes queues with at least `min_dirty_bytes` unflushed and seals full index maps. A
    /// failure of one (a full disk) does not keep the other from being tried; what failed stays
    /// in memory for the next round.
    pub(crate) async fn flush_queues_and_index(&self, min_dirty_bytes: u64) -> StoreResult<()> {
        let queues = self.inner.queues.flush(min_dirty_bytes).await;
        let index = self.inner.index.seal_frozen().await;
        queues.and(index)
    }

    /// Flushes every queue and frozen index map, then writes the checkpoint. The offsets it
    /// records were taken before those flushes, so each is covered by an fsync.
    pub(crate) async fn write_checkpoint(&self) -> StoreResult<()> {
        let cl = &self.inner.commitlog;
        let (dispatched, flushed) = (cl.written(), cl.flushed());
        self.flush_queues_and_index(1).await?;
        let ck = Checkpoint {
            commitlog_flushed: flushed,
            consume_queue_safe: dispatched,
            index_safe: self.inner.index.safe_offset(),
            last_store_timestamp: cl.last_store_timestamp.get(),
        };
        ck.write(&self.inner.storage, &self.inner.layout.checkpoint)
            .await
    }

    fn start_tasks(&self) {
        let cfg = &self.inner.cfg;
        let interval = match cfg.flush_disk_type {
            FlushDiskType::SyncFlush => None,
            FlushDiskType::AsyncFlush => {
                Some(Duration::from_millis(cfg.flush_interval_commitlog_ms))
            }
        };
        let flusher = glommio::spawn_local(appender::run_flusher(
            self.inner.commitlog.clone(),
            interval,
        ));
        // Queue flushes, index sealing, checkpoints and retention yield to request handling.
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(BACKGROUND_SHARES),
            glommio::Latency::NotImportant,
            "store-background",
        );
        let housekeeping = glommio::spawn_local_into(background::run(self.clone()), queue)
            .unwrap_or_else(|_| glommio::spawn_local(background::run(self.clone())));
        let retention = glommio::spawn_local_into(retention::run(self.clone()), queue)
            .unwrap_or_else(|_| glommio::spawn_local(retention::run(self.clone())));
        self.inner
            .tasks
            .borrow_mut()
            .extend([flusher, housekeeping, retention].map(glommio::Task::detach));
        if interval.is_none() {
            let timeout = Duration::from_millis(cfg.sync_flush_timeout_ms);
            let watchdog = appender::run_flush_watchdog(self.inner.commitlog.clone(), timeout);
            self.inner
                .tasks
                .borrow_mut()
                .push(glommio::spawn_local(watchdog).detach());
        }
    }

    /// Stops the background tasks, flushes everything, writes the checkpoint and removes the
    /// `abort` marker (only if every flush succeeded). Puts fail with `ShutDown` afterwards.
    pub async fn close(&self) -> StoreResult<()> {
        let inner = &*self.inner;
        if inner.closed.replace(true) {
            return Ok(());
        }
        inner.commitlog.stop.advance(1);
        // The replica wait holds this store: let go of it (no Rc cycle past close).
        inner.replica.borrow_mut().take();
        let tasks = std::mem::take(&mut *inner.tasks.borrow_mut());
        for task in tasks {
            task.await;
        }
        // The SYNC_FLUSH writer's zeros ahead run as a task of their own.
        inner.commitlog.log.zeros_settled().await;
        if inner.commitlog.failure.borrow().is_none() {
            inner.commitlog.flush_once().await?;
        }
        inner.commitlog.check_writable().or_else(|e| match e {
            StoreError::ShutDown => Ok(()),
            other => Err(other),
        })?;
        inner.index.freeze_active();
        self.write_checkpoint().await?;
        let abort = &inner.layout.abort;
        inner
            .storage
            .remove(abort)
            .await
            .map_err(|e| StoreError::io("removing", abort, e))?;
        let dir = abort.parent().unwrap_or(abort);
        inner
            .storage
            .sync_dir(dir)
            .await
            .map_err(|e| StoreError::io("syncing", dir, e))
    }
}
