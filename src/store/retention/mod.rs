//! Retention (STORE.md §7.1): deleting old commitlog segments, then the consume-queue and
//! index files that only describe deleted records, and refusing appends while the disk is
//! full. [`policy::decide`] is the pure rule book; this module is the thin executor around it.
//!
//! A pass gathers the inputs (the disk usage of the commitlog's and the store root's file
//! systems through [`Storage::disk_usage`], the store's [`Clock`](super::Clock), the local
//! hour from `localtime_r`, the oldest segments' modification times through
//! [`StorageFile::modified_ms`]), applies the decision through the store, and measures the
//! disk again after deleting so that a full disk becomes writable as soon as it can.
//!
//! Deleting a segment never races a reader into a crash. The commitlog's min offset moves
//! past a segment in the same step that forgets its file, and every reader checks positions
//! against the min offset (pulls answer MESSAGE_WAS_REMOVING or OFFSET_TOO_SMALL, lookups by
//! offset answer out-of-range). A reader already holding the file keeps its handle. The
//! writer is never involved: only fully flushed segments before the one being written go.
//!
//! Runs on the shard's executor: the background task every `cleanResourceInterval` (first
//! after one interval, as Java waits too), woken early by
//! [`MessageStore::request_delete_expired_files`]; one pass at a time.

pub mod policy;

#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::time::Duration;

use futures_lite::future;
use glommio::sync::Semaphore;

use super::commitlog::DiskFullMark;
use super::error::{StoreError, StoreResult};
use super::io::{DiskUsage, Storage, StorageFile};
use super::{to_physical, MessageStore};
use crate::runtime::OffsetWatch;
use policy::{disk_full_state, PolicyInput, SegmentInfo, Trigger};
pub use policy::{RetentionConfig, CLEAN_FORCIBLY_RATIO_PERCENT, DISK_FULL_RATIO_PERCENT};

/// Passes that delete at any hour after one manual trigger (Java
/// `MAX_MANUAL_DELETE_FILE_TIMES`).
const MANUAL_PASSES: u32 = 20;

/// Retention's state in the store.
pub(crate) struct RetentionState {
    /// Passes left that delete expired segments at any hour (manual trigger).
    manual_passes: Cell<u32>,
    /// Advanced by the manual trigger to wake the background task.
    wake: OffsetWatch,
    /// One pass at a time (the task and direct calls).
    lock: Semaphore,
    /// The commitlog min offset the queues and index were last cleaned up to.
    cleaned_to: Cell<u64>,
}

impl RetentionState {
    pub(crate) fn new() -> RetentionState {
        RetentionState {
            manual_passes: Cell::new(0),
            wake: OffsetWatch::new(0),
            lock: Semaphore::new(1),
            cleaned_to: Cell::new(0),
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Why the pass deleted (`None`: no rule allowed deleting).
    pub trigger: Option<Trigger>,
    /// Physical offsets of the first bytes of the deleted segments, oldest first.
    pub deleted_segments: Vec<i64>,
    /// Consume-queue and index files deleted after them.
    pub deleted_queue_files: usize,
    pub deleted_index_files: usize,
    /// The commitlog's min physical offset after the pass.
    pub min_physical_offset: i64,
    /// Disk usage at the end of the pass, if known.
    pub usage: Option<DiskUsage>,
    /// Whether appends are refused because the disk is full.
    pub disk_full: bool,
}

/// The local hour (0..=23) at `now_ms`, from the C library's time zone (`TZ`,
/// `/etc/localtime`); UTC if the conversion fails.
pub fn local_hour(now_ms: i64) -> u8 {
    let secs: libc::time_t = now_ms.div_euclid(1000);
    // SAFETY: both pointers are valid for the call; localtime_r writes only `tm`. It reads the
    // zone file once per process (tzset); later calls compute in memory.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let converted = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if converted && (0..24).contains(&tm.tm_hour) {
        tm.tm_hour as u8
    } else {
        (secs.rem_euclid(86_400) / 3_600) as u8
    }
}

impl<S: Storage> MessageStore<S> {
    /// Runs one retention pass now: what the background task does every
    /// `cleanResourceInterval`. Waits for a pass already running.
    pub async fn clean_expired_files(&self) -> StoreResult<RetentionReport> {
        if self.inner.closed.get() {
            return Err(StoreError::ShutDown);
        }
        let state = &self.inner.retention;
        let _permit = state
            .lock
            .acquire_permit(1)
            .await
            .map_err(|_| StoreError::ShutDown)?;
        let cfg = &self.inner.cfg.retention;
        let usage = self.disk_usage().await;
        let manual = state.manual_passes.get() > 0;
        let segments = self.segment_infos().await?;
        let cl = &self.inner.commitlog;
        let now_ms = self.inner.clock.now_ms();
        let input = PolicyInput {
            segments: &segments,
            flushed: cl.flushed(),
            now_ms,
            local_hour: local_hour(now_ms),
            usage,
            manual,
            disk_full: cl.disk_full.get().is_some(),
        };
        let decision = policy::decide(cfg, &input);
        assert!(decision.delete.len() <= cfg.files_per_pass_max);
        if manual {
            state.manual_passes.set(state.manual_passes.get() - 1);
        }
        self.mark_disk(decision.disk_full, usage);
        let deleted = self
            .delete_segments(&decision.delete, decision.forced)
            .await?;
        let (deleted_queue_files, deleted_index_files) = self.clean_queues_and_index().await?;
        let mut usage = usage;
        if !deleted.is_empty() {
            usage = self.disk_usage().await;
            let was_full = cl.disk_full.get().is_some();
            self.mark_disk(disk_full_state(cfg, was_full, usage), usage);
        }
        Ok(RetentionReport {
            trigger: decision.trigger,
            deleted_segments: deleted,
            deleted_queue_files,
            deleted_index_files,
            min_physical_offset: self.min_physical_offset(),
            usage,
            disk_full: cl.disk_full.get().is_some(),
        })
    }

    /// The admin trigger (DELETE_EXPIRED_COMMITLOG): the next 20 passes delete expired
    /// segments at any hour, and the background task runs one at once. Returns immediately.
    pub fn request_delete_expired_files(&self) {
        let state = &self.inner.retention;
        state.manual_passes.set(MANUAL_PASSES);
        state.wake.advance(state.wake.get() + 1);
    }

    /// Whether appends are refused because the disk is full.
    pub fn is_disk_full(&self) -> bool {
        self.inner.commitlog.disk_full.get().is_some()
    }

    /// The fuller of the commitlog's and the store root's file systems; `None` (logged) if
    /// neither can be measured.
    async fn disk_usage(&self) -> Option<DiskUsage> {
        let layout = &self.inner.layout;
        let mut fullest: Option<DiskUsage> = None;
        for dir in [&layout.commitlog_root, &layout.root] {
            match self.inner.storage.disk_usage(dir).await {
                Ok(u) if u.total_bytes > 0 => {
                    fullest = Some(fullest.map_or(u, |f| f.fuller(u)));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot measure disk"),
            }
        }
        fullest
    }

    /// The oldest segments (as many as one pass may delete) and the one being written, with
    /// their modification times. Preallocated segments past the written one are left out.
    async fn segment_infos(&self) -> StoreResult<Vec<SegmentInfo>> {
        let log = &self.inner.commitlog.log;
        let active = log.segment_of(log.written());
        let starts: Vec<u64> = log
            .segment_starts()
            .into_iter()
            .filter(|s| *s <= active)
            .collect();
        let per_pass = self.inner.cfg.retention.files_per_pass_max;
        let Some((&newest, older)) = starts.split_last() else {
            return Ok(Vec::new());
        };
        let mut infos = Vec::with_capacity(per_pass + 1);
        for &start in older.iter().take(per_pass).chain([&newest]) {
            let Some(file) = log.file(start) else {
                break;
            };
            let path = log.path_of(start);
            let last_modified_ms = file
                .modified_ms()
                .await
                .map_err(|e| StoreError::io("stat", path, e))?;
            infos.push(SegmentInfo {
                start,
                end: start + log.segment_bytes(),
                last_modified_ms,
            });
        }
        Ok(infos)
    }

    /// Sets or clears the disk-full mark that makes appends fail with `DiskFull`.
    fn mark_disk(&self, full: bool, usage: Option<DiskUsage>) {
        let cfg = &self.inner.cfg.retention;
        let cl = &self.inner.commitlog;
        let was = cl.disk_full.get();
        // Unknown usage keeps a full disk full, with the usage last measured.
        let used_percent = usage
            .map(|u| u.used_percent())
            .or(was.map(|m| m.used_percent))
            .unwrap_or(100);
        let mark = full.then_some(DiskFullMark {
            used_percent,
            full_percent: cfg.disk_full_ratio_percent,
            resume_percent: cfg.clean_forcibly_ratio_percent,
        });
        cl.disk_full.set(mark);
        let dir = cl.log.dir().display().to_string();
        match (was.is_some(), mark) {
            (false, Some(m)) => {
                tracing::error!(%dir, used_percent = m.used_percent, "disk full: refusing writes");
            }
            (true, None) => tracing::warn!(%dir, "disk space ok again: accepting writes"),
            _ => {}
        }
    }

    /// Deletes the given oldest segments, pausing `deleteCommitLogFilesInterval` between two;
    /// stops early when the store closes. Returns the physical offsets of the deleted ones.
    /// `forced`: the disk is over the force-clean ratio and segments go whatever their age
    /// (said in the log: their messages are gone before `fileReservedTime`).
    async fn delete_segments(&self, starts: &[u64], forced: bool) -> StoreResult<Vec<i64>> {
        let cl = &self.inner.commitlog;
        let pause =
            Duration::from_millis(self.inner.cfg.retention.delete_commitlog_files_interval_ms);
        let mut deleted = Vec::with_capacity(starts.len());
        let min_before = cl.min_offset();
        for (i, &start) in starts.iter().enumerate() {
            if i > 0 && !pause.is_zero() && !cl.pause(pause).await {
                break;
            }
            let path = cl.log.path_of(start);
            cl.log
                .remove_oldest(start)
                .await
                .map_err(|e| StoreError::io("removing", &path, e))?;
            if forced {
                let ratio = self.inner.cfg.retention.clean_forcibly_ratio_percent;
                tracing::warn!(path = %path.display(), "deleted commitlog segment whatever its \
                    age: the disk is over {ratio}% full and cleanFileForciblyEnable=true");
            } else {
                tracing::info!(path = %path.display(), "deleted expired commitlog segment");
            }
            deleted.push(to_physical(self.inner.cfg.shard, start));
            assert!(cl.min_offset() > start && cl.min_offset() <= cl.flushed());
        }
        assert!(
            deleted.is_empty() || cl.min_offset() > min_before,
            "min offset did not move"
        );
        if !deleted.is_empty() {
            cl.log
                .sync_dir()
                .await
                .map_err(|e| StoreError::io("syncing", cl.log.dir(), e))?;
        }
        Ok(deleted)
    }

    /// Moves every queue's min offset to the commitlog's and deletes the queue and index
    /// files below it (STORE.md §3, §4). Runs at open and in every pass, but is a no-op
    /// once a run has finished for the current commitlog min. Returns (queue files, index
    /// files).
    pub(crate) async fn clean_queues_and_index(&self) -> StoreResult<(usize, usize)> {
        let inner = &*self.inner;
        let clog_min = inner.commitlog.min_offset();
        if clog_min <= inner.retention.cleaned_to.get() {
            return Ok((0, 0));
        }
        let (mut queue_files, mut complete) = (0, true);
        for cq in inner.queues.all() {
            let (removed, unflushed) = cq.clean_below(clog_min).await.map_err(|e| {
                let dir = inner.layout.consumequeue.join(&cq.topic);
                StoreError::io("cleaning consume queue", dir, e)
            })?;
            queue_files += removed;
            complete &= !unflushed;
            glommio::yield_if_needed().await;
        }
        let index_files = inner.index.remove_below(clog_min).await?;
        if complete {
            inner.retention.cleaned_to.set(clog_min);
        }
        Ok((queue_files, index_files))
    }
}

/// How often the disk is measured again while writes are refused for lack of space, when
/// `cleanResourceInterval` is longer: writes resume within about this long of space coming
/// back.
const SHORT_SPACE_RECHECK: Duration = Duration::from_secs(1);

/// The retention task: a pass every `cleanResourceInterval` (every second while writes are
/// refused for lack of space), at once after a manual trigger (also one made before the task
/// first ran), and at once when a write meets a full file system, until the store closes.
/// Failures are logged (once per interval) and retried next pass.
pub(crate) async fn run<S: Storage>(store: MessageStore<S>) {
    let inner = &store.inner;
    let cl = &inner.commitlog;
    let interval = Duration::from_millis(inner.cfg.retention.clean_resource_interval_ms);
    let state = &inner.retention;
    let (mut handled, mut short_seen) = (0, 0);
    loop {
        let stop = async {
            let _ = cl.stop.wait_for(1).await;
            false
        };
        let short = cl.disk_full.get().is_some() || cl.no_space.borrow().is_some();
        let period = match short {
            true => interval.min(SHORT_SPACE_RECHECK),
            false => interval,
        };
        let tick = async {
            let woken = async {
                let _ = state.wake.wait_for(handled + 1).await;
            };
            let space_short = async {
                let _ = cl.space_short.wait_for(short_seen + 1).await;
            };
            let timer = glommio::timer::sleep(period);
            future::or(timer, future::or(woken, space_short)).await;
            true
        };
        if !future::or(stop, tick).await {
            return;
        }
        handled = state.wake.get();
        short_seen = cl.space_short.get();
        match store.clean_expired_files().await {
            Ok(r) if !r.deleted_segments.is_empty() => tracing::info!(
                segments = r.deleted_segments.len(),
                queue_files = r.deleted_queue_files,
                index_files = r.deleted_index_files,
                min_physical_offset = r.min_physical_offset,
                "retention pass"
            ),
            Ok(_) => {}
            Err(e) => {
                if let Some(suppressed) = cl.log_now("retention") {
                    tracing::error!(error = %e, suppressed, "retention pass failed; will retry");
                }
            }
        }
    }
}
