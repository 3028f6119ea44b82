//! Appending to the commitlog and making appends durable.
//!
//! [`CommitLog::append`] is synchronous: it rolls over to the next segment when the record
//! (plus a blank record) does not fit, assigns the position and a monotonic store timestamp,
//! patches the record and copies it into the in-memory tail. Nothing waits for I/O there.
//!
//! [`run_flusher`] is the one flusher task per commitlog. Under SYNC_FLUSH (by default) the
//! segment files are opened O_DSYNC and the writes alone are the group commit: the writer
//! wakes on `written_watch` and writes everything appended so far; appends arriving during a
//! write go into the next write, which the completing write starts before it releases its
//! puts (so the device works while the shard answers them), or (with
//! `StoreConfig::dsync_writes_in_flight` above one; one by default) into a write beside it
//! once they fill 4 KiB (never two writes of one page at once, `store::write_plan`); a
//! completed write's bytes are durable, and `flushed_watch` releases every append whose bytes
//! are all durable up to its end. One operation per write instead of a write and an fdatasync (which
//! io_uring hands to an io-wq worker thread every time). With
//! `StoreConfig::sync_flush_dsync` off it is pipelined
//! group commit that keeps the device busy: the writer wakes on `written_watch`, writes
//! everything appended so far and advances `submitted_watch`; a syncer wakes on that, runs
//! one fdatasync per segment written since the previous round began and advances
//! `flushed_watch` to what was written when its round began, which releases every append
//! those writes carried. One write and up to two fdatasync rounds are in flight at once, so
//! appends arriving during an fdatasync are written at once and go into the very next round
//! (no timer). Under ASYNC_FLUSH one write-and-fdatasync round runs every
//! `flushIntervalCommitLog`. A failed write or fdatasync fails every waiter and marks the
//! commitlog unwritable: nothing unsynced is acknowledged.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use super::segment::{blank_record, needs_rollover};
use super::{to_physical, CommitLog};
use crate::message::record::{patch, RecordSlots, BLANK_RECORD_BYTES};
use crate::runtime::OffsetWatch;
use crate::store::error::{is_no_space, StoreError, StoreResult};
use crate::store::io::Storage;
use crate::store::write_plan::{Next, PlannedWrite};

/// First pause before a write that ran out of space is tried again; it doubles up to
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
    /// waiters it covered (ASYNC_FLUSH's interval flusher and `close`). When the file system is
    /// out of space before anything was synced (ENOSPC creating a segment or writing), appends
    /// are refused with `NoSpace` and the waiters keep waiting: the bytes are still in memory
    /// and the next round retries them. On any other error (a failed fdatasync above all) the
    /// commitlog becomes unwritable for good and every waiter fails.
    pub(crate) async fn flush_once(&self) -> StoreResult<u64> {
        match self.log.flush().await {
            Ok(target) => {
                self.submitted_watch.advance(target);
                self.synced(target);
                Ok(target)
            }
            Err(e) if is_no_space(&e) => Err(self.out_of_space(e)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// An fdatasync round made everything below `target` durable: release its waiters (and
    /// accept writes again if they were refused for want of space).
    fn synced(&self, target: u64) {
        self.flush_rounds.set(self.flush_rounds.get() + 1);
        self.flushed_watch.advance(target);
        if self.no_space.borrow_mut().take().is_some() {
            let dir = self.log.dir().display().to_string();
            tracing::warn!(%dir, "commitlog flushed again after running out of space: \
                accepting writes");
        }
    }

    /// A write ran out of space: appends are refused (the bytes stay in memory and are
    /// retried; nothing is acknowledged meanwhile) and retention measures the disk at once.
    fn out_of_space(&self, e: std::io::Error) -> StoreError {
        let dir = self.log.dir().display().to_string();
        let reason = format!("flushing commitlog {dir}: {e}");
        if let Some(suppressed) = self.log_now("commitlog-no-space") {
            tracing::error!(%reason, suppressed, "disk full: refusing writes until \
                the commitlog can be flushed (retrying)");
        }
        *self.no_space.borrow_mut() = Some(reason.clone());
        self.note_space_short();
        StoreError::NoSpace { reason }
    }

    /// A write or fdatasync failed: the commitlog becomes unwritable (a failed fdatasync may
    /// have dropped dirty pages, so no later one can vouch for them), every waiter fails and
    /// the flusher stops.
    fn fail(&self, e: std::io::Error) -> StoreError {
        let dir = self.log.dir().display().to_string();
        let reason = format!("flushing commitlog {dir} failed: {e}");
        tracing::error!(%reason, "commitlog is now read-only");
        *self.failure.borrow_mut() = Some(reason.clone());
        self.flushed_watch.close();
        self.submitted_watch.close();
        StoreError::Unwritable { reason }
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

    /// Resolves `true` once `watch` reaches `target`; `false` when the store stops or the
    /// flush failed first.
    async fn wait_for_turn(&self, watch: &OffsetWatch, target: u64) -> bool {
        let work = async { watch.wait_for(target).await.is_ok() };
        let stop = async {
            let _ = self.stop.wait_for(1).await;
            false
        };
        let failed = async {
            let _ = self.flushed_watch.wait_for(u64::MAX).await;
            false
        };
        future::or(stop, future::or(failed, work)).await
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
/// there is data, pipelined: [`run_writer`] and [`run_syncer`]) and the flush period for
/// ASYNC_FLUSH (one write-and-fdatasync round per period, or sooner once
/// `early_flush_bytes` wait).
pub(crate) async fn run_flusher<S: Storage>(log: Rc<CommitLog<S>>, interval: Option<Duration>) {
    // Creating the next segment (fallocate of a whole segment, fdatasync, directory sync) runs
    // beside the flusher, not in its loop: flushes, and the SYNC_FLUSH puts waiting for them,
    // go on meanwhile. The segment file handle is shared safely (`file_for_write` keeps the
    // first of two concurrent creations).
    let preallocating = Rc::new(Cell::new(false));
    let Some(interval) = interval else {
        if log.log.dsync() {
            // Each write is durable when it completes: the writers are the group commit.
            run_dsync_writer(&log, &preallocating).await;
            return;
        }
        let (ended, next_round) = (OffsetWatch::new(0), Cell::new(0));
        let syncers = future::zip(
            run_syncer(&log, &ended, &next_round),
            run_syncer(&log, &ended, &next_round),
        );
        future::zip(run_writer(&log, &preallocating), syncers).await;
        return;
    };
    let mut retry = NO_SPACE_RETRY_MIN;
    loop {
        if !log.sleep_unless_stopped(interval).await {
            break;
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
        preallocate_soon(&log, &preallocating);
    }
}

/// SYNC_FLUSH's writer with fdatasync rounds (`StoreConfig::sync_flush_dsync` off; O_DSYNC
/// files have [`run_dsync_writer`]): as soon as appends wait to be written (and its previous
/// write is done), writes them all in one go and advances `submitted_watch`. It does not wait
/// for fdatasync: while [`run_syncer`]'s round is in flight the next appends are already being
/// written, so that round's end finds them on the file and the next round starts at once.
/// A write that runs out of space is retried (the same bytes, after a pause doubling up to a
/// second) while appends are refused; any other write error makes the commitlog unwritable.
async fn run_writer<S: Storage>(log: &Rc<CommitLog<S>>, preallocating: &Rc<Cell<bool>>) {
    let mut retry = NO_SPACE_RETRY_MIN;
    loop {
        let next = log.log.submitted() + 1;
        if !log.wait_for_turn(&log.written_watch, next).await {
            return;
        }
        let written = match log.log.write_pending().await {
            Ok(end) => {
                log.submitted_watch.advance(end);
                // Zeros ahead are planned after the data they precede has been handed to the
                // syncer, one chunk per turn, and written beside the next data writes (which
                // wait only if they would reach the zeros).
                zeros_ahead_soon(log);
                Ok(())
            }
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => retry = NO_SPACE_RETRY_MIN,
            Err(e) if is_no_space(&e) => {
                log.out_of_space(e);
                if !log.pause(retry).await {
                    return;
                }
                retry = (retry * 2).min(NO_SPACE_RETRY_MAX);
                continue;
            }
            Err(e) => {
                log.fail(e);
                return;
            }
        }
        preallocate_soon(log, preallocating);
    }
}

/// SYNC_FLUSH's group commit on O_DSYNC segment files (the default): every write is durable
/// when it completes. Up to `StoreConfig::dsync_writes_in_flight` writes (one by default) run
/// at once, each carrying what was appended when it was planned and none sharing a page with
/// another in flight (`store::write_plan`). `flushed_watch` releases an append when every
/// byte up to its end is durable (the prefix of completed writes), never on a later write's
/// completion alone. The write that completes starts the next one itself, before it releases
/// the puts it made durable ([`spawn_dsync_write`]): the device works on the appends that
/// came during a write while the shard answers that write's puts, instead of waiting until
/// every one of them was answered and this loop ran again. A write that runs out of space is
/// owed again and retried after a pause (doubling up to a second) while appends are refused;
/// any other write error makes the commitlog unwritable. On stop, the writes in flight are
/// waited for.
async fn run_dsync_writer<S: Storage>(log: &Rc<CommitLog<S>>, preallocating: &Rc<Cell<bool>>) {
    let writes = Rc::new(DsyncWrites {
        ended: OffsetWatch::new(0),
        started: Cell::new(0),
        no_space: Cell::new(false),
        preallocating: Rc::clone(preallocating),
    });
    let mut retry = NO_SPACE_RETRY_MIN;
    loop {
        if log.failure.borrow().is_some() {
            break;
        }
        if writes.no_space.replace(false) {
            if !log.pause(retry).await {
                break;
            }
            retry = (retry * 2).min(NO_SPACE_RETRY_MAX);
            continue;
        }
        let wait_for = start_dsync_writes(log, &writes, false);
        if log.failure.borrow().is_some() || writes.no_space.get() {
            continue; // a write failed at once
        }
        if log.no_space.borrow().is_none() {
            retry = NO_SPACE_RETRY_MIN;
        }
        let done = writes.ended.get();
        let more = async { log.written_watch.wait_for(wait_for).await.is_ok() };
        let end = async { writes.ended.wait_for(done + 1).await.is_ok() };
        let stop = async {
            let _ = log.stop.wait_for(1).await;
            false
        };
        if !future::or(stop, future::or(end, more)).await {
            break;
        }
    }
    // Nothing of this writer may land after the store closes (or is reopened). A write that
    // completes from now on starts no other (the store is stopping, or the log failed).
    let _ = writes.ended.wait_for(writes.started.get()).await;
}

/// The O_DSYNC writer's writes, shared by its loop and the writes in flight.
struct DsyncWrites {
    /// Writes ended, counted: the loop waits on it beside new appends.
    ended: OffsetWatch,
    /// Writes started, counted.
    started: Cell<u64>,
    /// A write ran out of space: the loop pauses before the next.
    no_space: Cell<bool>,
    preallocating: Rc<Cell<bool>>,
}

/// Starts every write the plan allows now (see [`SegmentedLog::plan_write`]), each handed to
/// the device at once when `chained` (started by a completed write); returns the
/// offset the log must be written to before another may start (or a write must end). Stops
/// at a failed write: a write task may run at once when spawned, and a failed write's bytes
/// are owed again, so planning on would start the same write over and over.
///
/// [`SegmentedLog::plan_write`]: crate::store::segmented::SegmentedLog::plan_write
fn start_dsync_writes<S: Storage>(
    log: &Rc<CommitLog<S>>,
    writes: &Rc<DsyncWrites>,
    chained: bool,
) -> u64 {
    loop {
        if log.failure.borrow().is_some() || writes.no_space.get() {
            return u64::MAX;
        }
        match log.log.plan_write() {
            Next::Write(w) => {
                writes.started.set(writes.started.get() + 1);
                spawn_dsync_write(log, w, writes, chained);
            }
            Next::WaitFor(at) => return at,
        }
    }
}

/// Runs one planned O_DSYNC write as a task of its own and ends it (see [`run_dsync_writer`]).
/// On success it first starts the next write (what was appended meanwhile), then releases
/// the puts it made durable: the next write's task is queued before theirs, so it reaches
/// the device before the shard answers them.
fn spawn_dsync_write<S: Storage>(
    log: &Rc<CommitLog<S>>,
    w: PlannedWrite,
    writes: &Rc<DsyncWrites>,
    chained: bool,
) {
    let (log, writes) = (Rc::clone(log), Rc::clone(writes));
    glommio::spawn_local(async move {
        // Started by a completed write: its puts are answered before the executor next
        // polls, so the write goes to the device at once, however small.
        let result = log.log.write_planned(w, chained).await;
        let durable = log.log.end_write(w, result.is_ok());
        match result {
            // After a failure nothing more is acknowledged.
            Ok(()) if log.failure.borrow().is_some() => {}
            Ok(()) => {
                if log.stop.get() == 0 && !writes.no_space.get() {
                    start_dsync_writes(&log, &writes, true);
                }
                log.synced(durable);
                zeros_ahead_soon(&log);
                preallocate_soon(&log, &writes.preallocating);
            }
            Err(e) if is_no_space(&e) => {
                log.out_of_space(e);
                writes.no_space.set(true);
            }
            Err(e) => {
                log.fail(e);
            }
        }
        writes.ended.advance(writes.ended.get() + 1);
    })
    .detach();
}

/// SYNC_FLUSH's group commit, run twice side by side (so up to two rounds are in flight: the
/// next round's fdatasync is issued as soon as its write completed, and the kernel starts its
/// device flush the moment the current one ends, with no trip through this executor in
/// between). Whenever data was written since the newest round began, one of them begins a
/// round covering every write completed before it (one fdatasync per segment written since
/// the previous round began). Rounds end in the order they began (`ended` counts them;
/// `next_round` numbers them): then `flushed_watch` releases the puts whose bytes those writes
/// carried. A put is therefore acknowledged only after fdatasyncs that started after its
/// bytes were written.
async fn run_syncer<S: Storage>(
    log: &Rc<CommitLog<S>>,
    ended: &OffsetWatch,
    next_round: &Cell<u64>,
) {
    loop {
        let next = log.log.sync_started() + 1;
        if !log.wait_for_turn(&log.submitted_watch, next).await {
            return;
        }
        let Some(round) = log.log.begin_sync() else {
            continue; // the other syncer took it
        };
        let seq = next_round.get();
        next_round.set(seq + 1);
        let result = log.log.sync_round(&round).await;
        if ended.wait_for(seq).await.is_err() || log.failure.borrow().is_some() {
            // A write or an earlier round failed: the commitlog is unwritable.
            ended.close();
            return;
        }
        match log.log.end_sync(round, result) {
            Ok(end) => log.synced(end),
            Err(e) => {
                log.fail(e);
                ended.close();
                return;
            }
        }
        ended.advance(seq + 1);
    }
}

/// Starts a zeros-ahead write beside the SYNC_FLUSH writer when one is due (see
/// `SegmentedLog::begin_zeros_ahead`). Its failure acknowledges nothing and loses nothing
/// (the zeros only save later writes a metadata commit): it is logged, and a later turn
/// tries again; a failing disk fails the data writes themselves.
fn zeros_ahead_soon<S: Storage>(log: &Rc<CommitLog<S>>) {
    let Some(zeros) = log.log.begin_zeros_ahead(1) else {
        return;
    };
    let log = Rc::clone(log);
    glommio::spawn_local(async move {
        if let Err(e) = log.log.write_zeros(zeros).await {
            if let Some(suppressed) = log.log_now("zeros ahead") {
                tracing::warn!(error = %e, suppressed, "cannot write zeros ahead of the commitlog");
            }
        }
    })
    .detach();
}

/// Starts creating the next segment beside the flusher if it is missing and no creation runs.
fn preallocate_soon<S: Storage>(log: &Rc<CommitLog<S>>, preallocating: &Rc<Cell<bool>>) {
    if !preallocating.get() && log.next_segment_missing() {
        preallocating.set(true);
        let (log, preallocating) = (Rc::clone(log), Rc::clone(preallocating));
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

const _: () = assert!(BLANK_RECORD_BYTES == 8);
