//! Appending to the commitlog and making appends durable.
//!
//! [`CommitLog::append`] is synchronous: it rolls over to the next segment when the record
//! (plus a blank record) does not fit, assigns the position and a monotonic store timestamp,
//! patches the record and copies it into the in-memory tail. Nothing waits for I/O there.
//!
//! [`run_flusher`] is the one flusher task per commitlog. Under SYNC_FLUSH it is group commit:
//! it sleeps on `written_watch` until there is unflushed data, snapshots `written`, writes the
//! dirty range, fdatasyncs once per touched segment, and advances `flushed_watch`, which
//! releases every append the fdatasync covered. Appends arriving meanwhile form the next
//! group. Under ASYNC_FLUSH it does the same every `flushIntervalCommitLog`. A failed flush
//! fails every waiter and marks the commitlog unwritable: nothing unsynced is acknowledged.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use super::segment::{blank_record, needs_rollover};
use super::{to_physical, CommitLog};
use crate::message::record::{patch, RecordSlots, BLANK_RECORD_BYTES};
use crate::store::error::{is_no_space, StoreError, StoreResult};
use crate::store::io::Storage;

/// First pause before a flush that ran out of space is tried again; it doubles up to
/// [`NO_SPACE_RETRY_MAX`].
const NO_SPACE_RETRY_MIN: Duration = Duration::from_millis(50);
const NO_SPACE_RETRY_MAX: Duration = Duration::from_secs(1);

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Offset in the shard's commitlog.
    pub pos: u64,
    pub physical_offset: i64,
    pub store_timestamp: i64,
}

/// How a wait for durability ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Durable,
    TimedOut,
    Failed,
}

impl<S: Storage> CommitLog<S> {
    /// Appends one encoded record, patching its queue offset, physical offset and store
    /// timestamp. The caller has checked [`CommitLog::check_writable`].
    pub(crate) fn append(
        &self,
        record: &mut [u8],
        slots: RecordSlots,
        queue_offset: i64,
        now_ms: i64,
    ) -> StoreResult<Appended> {
        let len = record.len();
        if len > self.max_record_bytes {
            return Err(StoreError::RecordTooLarge {
                size: len,
                max: self.max_record_bytes,
            });
        }
        let seg_bytes = self.log.segment_bytes();
        let mut pos = self.log.written();
        if needs_rollover(pos, len, seg_bytes) {
            let seg_end = self.log.segment_of(pos) + seg_bytes;
            self.log.append(pos, &blank_record(seg_end - pos));
            self.log.skip_to(seg_end);
            pos = seg_end;
        }
        assert!(
            !needs_rollover(pos, len, seg_bytes),
            "record of {len} cannot fit a segment"
        );
        let store_timestamp = now_ms.max(self.last_store_timestamp.get());
        self.last_store_timestamp.set(store_timestamp);
        let physical_offset = to_physical(self.shard, pos);
        patch(
            record,
            slots,
            queue_offset,
            physical_offset,
            store_timestamp,
        );
        self.log.append(pos, record);
        self.written_watch.advance(pos + len as u64);
        Ok(Appended {
            pos,
            physical_offset,
            store_timestamp,
        })
    }

    /// Waits until `end` is durable, the flush fails, or `timeout` passes.
    pub(crate) async fn wait_durable(&self, end: u64, timeout: Duration) -> Durability {
        let durable = async {
            match self.flushed_watch.wait_for(end).await {
                Ok(()) => Durability::Durable,
                Err(()) => Durability::Failed,
            }
        };
        let deadline = async {
            glommio::timer::sleep(timeout).await;
            Durability::TimedOut
        };
        future::or(durable, deadline).await
    }

    /// Waits until `end` is durable or the flush fails, or reports `TimedOut` once the flush
    /// watchdog ([`run_flush_watchdog`]) saw the data up to `end` stay unflushed for
    /// `syncFlushTimeout`. Unlike [`CommitLog::wait_durable`] it arms no timer of its own: the
    /// watchdog's one timer per flush round serves every waiting put (a timer per put made the
    /// executor arm and cancel a kernel timeout around every park).
    pub(crate) async fn wait_durable_shared(&self, end: u64) -> Durability {
        let durable = async {
            match self.flushed_watch.wait_for(end).await {
                Ok(()) => Durability::Durable,
                Err(()) => Durability::Failed,
            }
        };
        let late = async {
            if self.timed_out_watch.wait_for(end).await.is_err() {
                future::pending::<()>().await;
            }
            Durability::TimedOut
        };
        future::or(durable, late).await
    }

    /// One flush round: writes and fdatasyncs everything appended so far, then releases the
    /// waiters it covered. When the file system is out of space before anything was synced
    /// (ENOSPC creating a segment or writing), appends are refused with `NoSpace` and the
    /// waiters keep waiting: the bytes are still in memory and the next round retries them.
    /// On any other error (a failed fdatasync above all) the commitlog becomes unwritable for
    /// good and every waiter fails.
    pub(crate) async fn flush_once(&self) -> StoreResult<u64> {
        match self.log.flush().await {
            Ok(target) => {
                self.flush_rounds.set(self.flush_rounds.get() + 1);
                self.flushed_watch.advance(target);
                if self.no_space.borrow_mut().take().is_some() {
                    let dir = self.log.dir().display().to_string();
                    tracing::warn!(%dir, "commitlog flushed again after running out of space: \
                        accepting writes");
                }
                Ok(target)
            }
            Err(e) if is_no_space(&e) => {
                let dir = self.log.dir().display().to_string();
                let reason = format!("flushing commitlog {dir}: {e}");
                if let Some(suppressed) = self.log_now("commitlog-no-space") {
                    tracing::error!(%reason, suppressed, "disk full: refusing writes until \
                        the commitlog can be flushed (retrying)");
                }
                *self.no_space.borrow_mut() = Some(reason.clone());
                self.note_space_short();
                Err(StoreError::NoSpace { reason })
            }
            Err(e) => {
                let dir = self.log.dir().display().to_string();
                let reason = format!("flushing commitlog {dir} failed: {e}");
                tracing::error!(%reason, "commitlog is now read-only");
                *self.failure.borrow_mut() = Some(reason.clone());
                self.flushed_watch.close();
                Err(StoreError::Unwritable { reason })
            }
        }
    }

    /// Whether the segment after the one being written is still to be created.
    fn next_segment_missing(&self) -> bool {
        let next = self.log.segment_of(self.log.written()) + self.log.segment_bytes();
        self.log.file(next).is_none()
    }

    /// Creates the segment after the one being written, if missing, so rollover finds it
    /// ready; `false` if that failed (logged once per interval; a full file system also makes
    /// retention measure it at once). The flush that needs the file reports it.
    async fn preallocate_next(&self) -> bool {
        let next = self.log.segment_of(self.log.written()) + self.log.segment_bytes();
        if self.log.file(next).is_some() {
            return true;
        }
        let Err(e) = self.log.file_for_write(next).await else {
            return true;
        };
        if is_no_space(&e) {
            self.note_space_short();
        }
        if let Some(suppressed) = self.log_now("preallocate") {
            tracing::warn!(segment = next, error = %e, suppressed,
                "cannot preallocate the next segment (retrying)");
        }
        false
    }

    /// Sleeps `pause`; `false` if the store stops first.
    pub(crate) async fn pause(&self, pause: Duration) -> bool {
        let stop = async {
            let _ = self.stop.wait_for(1).await;
            false
        };
        let sleep = async {
            glommio::timer::sleep(pause).await;
            true
        };
        future::or(stop, sleep).await
    }

    /// Resolves `true` when there is unflushed data, `false` when the store stops.
    async fn wait_for_work(&self) -> bool {
        let work = async {
            self.written_watch
                .wait_for(self.flushed() + 1)
                .await
                .is_ok()
        };
        let stop = async {
            let _ = self.stop.wait_for(1).await;
            false
        };
        future::or(stop, work).await
    }

    /// Sleeps `interval`, or until `early_flush_bytes` are unflushed; `false` if the store
    /// stops first.
    async fn sleep_unless_stopped(&self, interval: Duration) -> bool {
        let sleep = async {
            let early = self
                .written_watch
                .wait_for(self.flushed() + self.early_flush_bytes);
            future::or(glommio::timer::sleep(interval), async {
                let _ = early.await;
            })
            .await;
            true
        };
        let stop = async {
            let _ = self.stop.wait_for(1).await;
            false
        };
        future::or(stop, sleep).await
    }
}

/// SYNC_FLUSH's timeout keeper: for each flush round it snapshots `written` and, if that
/// much is not durable within `timeout`, advances `timed_out_watch` to it, so every put still
/// waiting on data up to there reports FLUSH_DISK_TIMEOUT (each of them has waited at least
/// `timeout`, at most twice that). One timer per round, none while nothing is unflushed.
pub(crate) async fn run_flush_watchdog<S: Storage>(log: Rc<CommitLog<S>>, timeout: Duration) {
    while log.wait_for_work().await {
        let target = log.written();
        let durable = async { log.flushed_watch.wait_for(target).await.is_ok() };
        let late = async {
            glommio::timer::sleep(timeout).await;
            log.timed_out_watch.advance(target);
            true
        };
        let stop = async {
            let _ = log.stop.wait_for(1).await;
            false
        };
        if !future::or(stop, future::or(durable, late)).await {
            return;
        }
    }
}

/// The flusher task of one commitlog. `interval` is `None` for SYNC_FLUSH (flush as soon as
/// there is data) and the flush period for ASYNC_FLUSH.
pub(crate) async fn run_flusher<S: Storage>(log: Rc<CommitLog<S>>, interval: Option<Duration>) {
    // Creating the next segment (fallocate of a whole segment, fdatasync, directory sync) runs
    // beside the flusher, not in its loop: flushes, and the SYNC_FLUSH puts waiting for them,
    // go on meanwhile. The segment file handle is shared safely (`file_for_write` keeps the
    // first of two concurrent creations).
    let preallocating = Rc::new(std::cell::Cell::new(false));
    let mut retry = NO_SPACE_RETRY_MIN;
    loop {
        if let Some(interval) = interval {
            if !log.sleep_unless_stopped(interval).await {
                break;
            }
        }
        if !log.wait_for_work().await {
            break;
        }
        match log.flush_once().await {
            Ok(_) => retry = NO_SPACE_RETRY_MIN,
            // Out of space: the same bytes again after a pause (doubling up to a second);
            // puts are refused meanwhile, so nothing else waits on this loop.
            Err(StoreError::NoSpace { .. }) => {
                if !log.pause(retry).await {
                    break;
                }
                retry = (retry * 2).min(NO_SPACE_RETRY_MAX);
                continue;
            }
            Err(_) => break,
        }
        if !preallocating.get() && log.next_segment_missing() {
            preallocating.set(true);
            let (log, preallocating) = (Rc::clone(&log), Rc::clone(&preallocating));
            glommio::spawn_local(async move {
                // After a failure the next attempt waits a while (not one per flush).
                if !log.preallocate_next().await {
                    log.pause(NO_SPACE_RETRY_MAX).await;
                }
                preallocating.set(false);
            })
            .detach();
        }
    }
}

const _: () = assert!(BLANK_RECORD_BYTES == 8);
