//! `SegmentedLog`: an append-only byte log split into fixed-size segment files named by their
//! 20-digit start offset, with its unflushed (and recently flushed) end in memory ([`Tail`]).
//! The commitlog and every consume queue are one each.
//!
//! `written` (appended, in memory) and `flushed` (written to the file and fdatasync'ed) are
//! tracked apart. A flush writes the dirty range rounded out to the file's alignment: the
//! partial last page is rewritten each time, zero-padded past `written`. When memory no longer
//! holds the head of that page (after a reopen or an eviction) it is re-read from the file
//! first ("hydrated"). The flush copies the dirty range out of the tail into DMA buffers: a
//! second copy, accepted because glommio's `write_at` consumes an owned aligned buffer and the
//! tail keeps accepting appends while the write is in flight.
//!
//! One writer (the shard's executor) and one flusher at a time; all state is in a `RefCell`
//! whose borrows never cross an `.await`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::io::{IoBuffer, Storage, StorageFile};
use super::tail::Tail;
use super::write_plan::{align_down, align_up, Next, PlannedWrite, WritePlan};
use crate::runtime::OffsetWatch;

/// Largest single write a flush issues; also the largest buffer a log keeps for reuse, so
/// that a long flush (ASYNC_FLUSH's) writes from one kept buffer chunk after chunk.
const WRITE_MAX_BYTES: u64 = 1 << 20;
/// Preallocated logs keep this much of the file past the flushed data written with zeros
/// (refilled by [`ZERO_CHUNK_BYTES`] once a chunk of it is used up). On ext4 an fdatasync
/// after writing into fallocate'd (unwritten) blocks must commit the extent conversion to the
/// journal; into blocks already written it only flushes data: measured here ~1,150 vs ~7,000
/// 4 KiB write+fdatasync rounds per second. So one journal commit per chunk of zeros instead
/// of one per flush.
const ZERO_AHEAD_BYTES: u64 = 4 << 20;
/// Zeros ahead are written in chunks of this size from one buffer kept for the purpose.
const ZERO_CHUNK_BYTES: u64 = 1 << 20;
/// Zeros ahead start at least this far past the written data. They run beside data writes,
/// and a data write that would reach them waits for them: with zeros right after the data
/// (a fresh segment, a restart) the next few writes would. Leaving the first chunk after
/// the data to the data writes themselves (into preallocated, unwritten blocks: slower, once
/// per segment) means none ever waits; later the zeros are several chunks ahead anyway.
const ZERO_GAP_BYTES: u64 = ZERO_CHUNK_BYTES;

/// O_DSYNC logs: a write carrying at least this much new data is submitted at once
/// ([`StorageFile::write_shared_at_now`]) rather than with the executor's next poll. Many
/// appends per write means many puts were acknowledged by the previous one, whose answers
/// (and the requests read meanwhile) the executor works through before it polls: the device
/// would sit idle all that time, CPU and disk taking turns. A write of one or two appends
/// (a quiet broker) goes in with the sleep that follows, saving the system call.
const SUBMIT_NOW_BYTES: u64 = 1024;

/// O_DSYNC logs: the block size writes in flight at once are kept apart by ([`WritePlan`])
/// until a segment file tells its own alignment (a multiple of any device's sector, so writes
/// planned with it are aligned whatever the device).
const PLAN_PAGE_BYTES: u64 = 4096;
/// O_DSYNC logs: a write beside others in flight carries at least this much (each write is a
/// device flush: a record or two per write beside would spend the device's flushes).
const BESIDE_MIN_BYTES: u64 = 4096;

/// Aligned write buffers a log keeps for reuse, so that a flush does not allocate (and, for
/// buffers beyond the executor's registered I/O memory, map and later unmap) a fresh one:
/// up to `max` buffers matched by exact length, and one buffer of zeros for
/// [`SegmentedLog::zero_ahead`]. A buffer is back in the pool only once its write completed
/// (the write shares it until then).
struct BufferPool<B> {
    free: RefCell<Vec<B>>,
    zeros: RefCell<Option<Rc<B>>>,
    max: usize,
}

impl<B: IoBuffer> BufferPool<B> {
    fn new(max: usize) -> BufferPool<B> {
        BufferPool {
            free: RefCell::new(Vec::new()),
            zeros: RefCell::new(None),
            max,
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified): a kept one, or a new one.
    fn take<F: StorageFile<Buffer = B>>(&self, file: &F, len: usize) -> B {
        let mut free = self.free.borrow_mut();
        match free.iter().position(|b| b.byte_len() == len) {
            Some(i) => free.swap_remove(i),
            None => file.alloc_buffer(len),
        }
    }

    /// Keeps `buf` for reuse if no write holds it any more and there is room (the oldest
    /// kept buffer makes way).
    fn give(&self, buf: Rc<B>) {
        let Ok(buf) = Rc::try_unwrap(buf) else {
            return;
        };
        if self.max == 0 || buf.byte_len() as u64 > WRITE_MAX_BYTES {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() == self.max {
            free.remove(0);
        }
        free.push(buf);
    }

    /// The shared buffer of `len` zero bytes (made on first use).
    fn zeros<F: StorageFile<Buffer = B>>(&self, file: &F, len: usize) -> Rc<B> {
        let mut zeros = self.zeros.borrow_mut();
        match zeros.as_ref() {
            Some(z) if z.byte_len() == len => Rc::clone(z),
            _ => {
                let mut buf = file.alloc_buffer(len);
                buf.as_mut_slice().fill(0);
                let buf = Rc::new(buf);
                *zeros = Some(Rc::clone(&buf));
                buf
            }
        }
    }
}

/// The 20-digit zero-padded file name of a segment starting at `offset`.
pub(crate) fn segment_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// Parses a segment file name (exactly 20 decimal digits).
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// A failed fdatasync of written data, made opaque: whatever its errno (ENOSPC included), the
/// kernel may have dropped what it failed to write, so it is never taken for a retryable
/// lack of space ([`crate::store::error::is_no_space`]); the commitlog stops accepting writes.
fn fsync_failed(e: io::Error) -> io::Error {
    io::Error::other(format!("fdatasync failed: {e}"))
}

struct LogState<F> {
    files: BTreeMap<u64, Rc<F>>,
    tail: Tail,
    written: u64,
    /// Bytes below this are written to their files (not necessarily durable yet).
    submitted: u64,
    flushed: u64,
    /// A write ([`SegmentedLog::write_pending`]) is in flight.
    writing: bool,
    /// fdatasync rounds ([`SegmentedLog::begin_sync`]) in flight.
    syncing: usize,
    /// `submitted` when the newest fdatasync round began.
    sync_started: u64,
    /// Segments written since the last fdatasync round began (oldest first).
    unsynced: Vec<u64>,
    /// Preallocated logs: how far the segment being written is known written (data or
    /// zeros), as (segment start, offset).
    zeroed: (u64, u64),
    /// O_DSYNC logs: a plain (not O_DSYNC) handle of the segment being written, for the zeros
    /// ahead, which need no durability of their own and would otherwise hold the writer for
    /// a durable 1 MiB write each.
    zero_file: Option<(u64, Rc<F>)>,
    /// A zeros-ahead write in flight ([`SegmentedLog::begin_zeros_ahead`]). It may run beside
    /// data writes; one that would reach its range waits for it first.
    zeroing: Option<ZerosAhead>,
    /// O_DSYNC logs: the writes in flight at once and the durable prefix they make
    /// ([`SegmentedLog::plan_write`]).
    plan: WritePlan,
    /// The segment files' write alignment, once one is open.
    align: Option<u64>,
}

/// A zeros-ahead write: `[from, to)` of the segment starting at `seg` (file offsets are
/// relative to it), the `round`-th since the log was made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZerosAhead {
    seg: u64,
    from: u64,
    to: u64,
    round: u64,
}

/// An fdatasync round in flight: what it makes durable.
pub(crate) struct SyncRound {
    /// Everything below this offset was written when the round began.
    pub target: u64,
    segments: Vec<u64>,
}

/// Options of one log.
#[derive(Debug, Clone)]
pub(crate) struct LogOptions {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    /// Preallocate segment files to their full size (commitlog); otherwise they grow.
    pub preallocate: bool,
    pub chunk_bytes: usize,
    /// Flushed bytes kept in memory for readers of the hot tail.
    pub hot_bytes: usize,
    /// Segment files are opened O_DSYNC ([`Storage::open_dsync`]): every write is durable when
    /// it completes, so an fdatasync round has nothing left to do ([`SegmentedLog::dsync`]).
    pub dsync: bool,
}

/// One append-only log of segment files.
pub(crate) struct SegmentedLog<S: Storage> {
    storage: S,
    opts: LogOptions,
    state: RefCell<LogState<S::File>>,
    pool: BufferPool<<S::File as StorageFile>::Buffer>,
    /// Zeros-ahead writes completed (or failed): a data write waiting for one to leave its
    /// range waits on this.
    zeros_done: OffsetWatch,
}

impl<S: Storage> SegmentedLog<S> {
    /// An empty log; no file is touched until [`SegmentedLog::load`] or the first flush.
    pub(crate) fn new(storage: S, opts: LogOptions) -> SegmentedLog<S> {
        assert!(opts.segment_bytes > 0);
        let tail = Tail::new(opts.chunk_bytes);
        let plan = WritePlan::new(0, 1).with_beside_min(BESIDE_MIN_BYTES);
        SegmentedLog {
            storage,
            pool: BufferPool::new(0),
            opts,
            state: RefCell::new(LogState {
                files: BTreeMap::new(),
                tail,
                written: 0,
                submitted: 0,
                flushed: 0,
                writing: false,
                syncing: 0,
                sync_started: 0,
                unsynced: Vec::new(),
                zeroed: (u64::MAX, 0),
                zero_file: None,
                zeroing: None,
                plan,
                align: None,
            }),
            zeros_done: OffsetWatch::new(0),
        }
    }

    /// Keeps up to `count` write buffers for reuse (none by default; see [`BufferPool`]).
    pub(crate) fn keep_buffers(mut self, count: usize) -> SegmentedLog<S> {
        self.pool.max = count;
        self
    }

    /// Opens segment files O_DSYNC from now on (see [`LogOptions::dsync`]), with up to
    /// `in_flight` writes at once ([`WritePlan`]); before [`SegmentedLog::load`].
    pub(crate) fn dsync_writes(mut self, on: bool, in_flight: usize) -> SegmentedLog<S> {
        self.opts.dsync = on;
        self.state.get_mut().plan = WritePlan::new(0, in_flight).with_beside_min(BESIDE_MIN_BYTES);
        self
    }

    /// Whether every write is durable when it completes (segment files opened O_DSYNC).
    pub(crate) fn dsync(&self) -> bool {
        self.opts.dsync
    }

    async fn open_segment(&self, start: u64, create: bool) -> io::Result<S::File> {
        let path = self.path_of(start);
        match self.opts.dsync {
            true => self.storage.open_dsync(&path, create).await,
            false => self.storage.open(&path, create).await,
        }
    }

    /// Opens the segment files already in the directory; returns their start offsets.
    pub(crate) async fn load(&self) -> io::Result<Vec<u64>> {
        let names = match self.storage.list_dir(&self.opts.dir).await {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut starts = Vec::new();
        for start in names.iter().filter_map(|n| parse_segment_name(n)) {
            let file = self.open_segment(start, false).await?;
            let mut st = self.state.borrow_mut();
            st.align = Some(file.alignment());
            st.files.insert(start, Rc::new(file));
            starts.push(start);
        }
        Ok(starts)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.opts.dir
    }

    pub(crate) fn path_of(&self, start: u64) -> PathBuf {
        self.opts.dir.join(segment_name(start))
    }

    pub(crate) fn segment_bytes(&self) -> u64 {
        self.opts.segment_bytes
    }

    /// Start of the segment holding `pos`.
    pub(crate) fn segment_of(&self, pos: u64) -> u64 {
        align_down(pos, self.opts.segment_bytes)
    }

    pub(crate) fn segment_starts(&self) -> Vec<u64> {
        self.state.borrow().files.keys().copied().collect()
    }

    pub(crate) fn file(&self, start: u64) -> Option<Rc<S::File>> {
        self.state.borrow().files.get(&start).cloned()
    }

    pub(crate) fn written(&self) -> u64 {
        self.state.borrow().written
    }

    pub(crate) fn flushed(&self) -> u64 {
        self.state.borrow().flushed
    }

    /// Appends `bytes` at `at` (the current end, or beyond it after a skip).
    pub(crate) fn append(&self, at: u64, bytes: &[u8]) {
        let mut st = self.state.borrow_mut();
        assert!(
            at >= st.written,
            "append at {at} behind written {}",
            st.written
        );
        assert!(
            self.segment_of(at) == self.segment_of(at + bytes.len() as u64 - 1),
            "append of {} bytes at {at} crosses a segment end",
            bytes.len()
        );
        st.tail.append(at, bytes);
        st.written = at + bytes.len() as u64;
    }

    /// Moves `written` to `at` without data: past the rest of a segment after its blank
    /// record (commitlog), or to a consume queue's sparse start. Whole segments are skipped;
    /// the skipped part of the segment holding `at` is filled with zeros, because a flush
    /// writes one contiguous run of memory per segment.
    pub(crate) fn skip_to(&self, at: u64) {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut from = {
            let mut st = self.state.borrow_mut();
            assert!(at >= st.written, "skip back from {} to {at}", st.written);
            st.written = st.written.max(self.segment_of(at));
            st.written
        };
        while from < at {
            let n = ZEROS.len().min((at - from) as usize);
            self.append(from, &ZEROS[..n]);
            from += n as u64;
        }
        assert_eq!(self.written(), at);
    }

    /// Sets both offsets to `end` and forgets the memory (after recovery or truncation).
    pub(crate) fn set_end(&self, end: u64) {
        let mut st = self.state.borrow_mut();
        assert!(!st.writing && st.syncing == 0, "set_end during a flush");
        assert_eq!(st.plan.in_flight(), 0, "set_end during a write");
        st.plan.restart(end);
        st.tail.clear();
        st.written = end;
        st.submitted = end;
        st.sync_started = end;
        st.flushed = end;
        st.unsynced.clear();
        st.zero_file = None;
    }

    /// `[pos, pos + len)` if the in-memory tail holds all of it.
    pub(crate) fn read_hot(&self, pos: u64, len: usize) -> Option<Bytes> {
        self.state.borrow().tail.read(pos, len)
    }

    /// Reads `[pos, pos + len)`, which must lie in one segment below `written`.
    ///
    /// The part below the in-memory tail comes from the file (the tail gives up only flushed
    /// bytes), the rest from memory. The one hole memory may have is the rest of a segment
    /// after its blank record, which `skip_to` leaves out and nothing ever writes: a read
    /// reaching into it (HA reads chunks up to a segment's end) gets zeros there, as a reader
    /// of the blank expects, and not the file's bytes, which hold nothing of it either.
    pub(crate) async fn read(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let end = pos + len as u64;
        let seg_end = self.segment_of(pos) + self.opts.segment_bytes;
        loop {
            let (mem_start, flushed, moved_on) = {
                let st = self.state.borrow();
                assert!(end <= st.written, "read past written {}", st.written);
                if let Some(bytes) = st.tail.read(pos, len) {
                    return Ok(bytes);
                }
                (st.tail.start(), st.flushed, st.written >= seg_end)
            };
            let disk_end = match mem_start {
                Some(m) if end > flushed && m > pos => m,
                // All of it in memory's range but for the hole after a blank.
                Some(m) if m <= pos && moved_on => pos,
                _ => end,
            };
            let head = match disk_end > pos {
                true => self.read_disk(pos, (disk_end - pos) as usize).await?,
                false => Bytes::new(),
            };
            if disk_end == end {
                return Ok(head);
            }
            let st = self.state.borrow();
            let rest_len = (end - disk_end) as usize;
            // None: a flush evicted the start of the rest during the disk read. The tail gives
            // up only flushed bytes, so the file has those now: read again from the new split.
            // (This answered "tail moved during a read", failing pulls at random.) Or the rest
            // runs into the hole after a blank (ringmq-sim seed 48 found a read retrying for
            // ever there): zeros.
            let in_memory = st.tail.start().is_some_and(|m| m <= disk_end);
            let rest = st.tail.read(disk_end, rest_len).or_else(|| {
                (in_memory && moved_on).then(|| {
                    let mut rest = vec![0u8; rest_len];
                    st.tail.copy_range_into(disk_end, &mut rest);
                    Bytes::from(rest)
                })
            });
            drop(st);
            if let Some(rest) = rest {
                let mut out = BytesMut::with_capacity(len);
                out.extend_from_slice(&head);
                out.extend_from_slice(&rest);
                return Ok(out.freeze());
            }
        }
    }

    /// Reads from the segment file only; fails with `UnexpectedEof` when the file is short.
    pub(crate) async fn read_disk(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let start = self.segment_of(pos);
        assert!(
            pos + len as u64 <= start + self.opts.segment_bytes,
            "read crosses segment"
        );
        let file = self.file(start).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("segment {start} missing"))
        })?;
        let bytes = file.read_at(pos - start, len).await?;
        if bytes.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} of {len} bytes at {pos}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// The segment file starting at `start`, created (and preallocated, and its directory
    /// entry synced) if it does not exist yet.
    pub(crate) async fn file_for_write(&self, start: u64) -> io::Result<Rc<S::File>> {
        if let Some(file) = self.file(start) {
            return Ok(file);
        }
        self.storage.create_dir_all(&self.opts.dir).await?;
        let file = self.open_segment(start, true).await?;
        if self.opts.preallocate {
            // A failure (ENOSPC) may leave the file partly allocated: the next attempt goes on
            // from there, and a restart preallocates a short last segment.
            file.pre_allocate(self.opts.segment_bytes).await?;
            file.fdatasync().await?;
        }
        self.storage.sync_dir(&self.opts.dir).await?;
        let file = Rc::new(file);
        let mut st = self.state.borrow_mut();
        st.align = Some(file.alignment());
        // A concurrent caller may have created it meanwhile; keep the first handle.
        Ok(st.files.entry(start).or_insert(file).clone())
    }

    /// Offset up to which appended bytes are written to their files (durable or not).
    pub(crate) fn submitted(&self) -> u64 {
        self.state.borrow().submitted
    }

    /// Writes and fdatasyncs everything appended so far; returns the new flushed offset.
    pub(crate) async fn flush(&self) -> io::Result<u64> {
        self.write_pending().await?;
        self.write_zeros_ahead(u64::MAX).await?;
        self.sync_submitted().await
    }

    /// Preallocated logs: writes zeros ahead of the written data (see [`ZERO_AHEAD_BYTES`])
    /// when less than that minus one chunk is left, up to `max_chunks` chunks of
    /// [`ZERO_CHUNK_BYTES`]. Called between data writes; needs no fdatasync of its own. Does
    /// nothing while another zeros-ahead write runs.
    pub(crate) async fn write_zeros_ahead(&self, max_chunks: u64) -> io::Result<()> {
        match self.begin_zeros_ahead(max_chunks) {
            Some(zeros) => self.write_zeros(zeros).await,
            None => Ok(()),
        }
    }

    /// Plans the next zeros-ahead write ([`SegmentedLog::write_zeros_ahead`]) and marks it in
    /// flight, or `None` when none is due (or one already runs, or this log is not
    /// preallocated). Called when no data write is in flight, so the range starts past
    /// everything written; the write ([`SegmentedLog::write_zeros`]) may then run beside later
    /// data writes, and a data write that would reach its range waits for it first.
    pub(crate) fn begin_zeros_ahead(&self, max_chunks: u64) -> Option<ZerosAhead> {
        if !self.opts.preallocate {
            return None;
        }
        let mut st = self.state.borrow_mut();
        assert!(!st.writing, "zeros ahead planned during a write");
        if st.zeroing.is_some() {
            return None;
        }
        // Past every write planned, those still in flight included (O_DSYNC logs).
        let end = st.submitted.max(st.plan.planned_end());
        let seg = self.segment_of(end);
        // Nothing written in this segment yet: no file, or no zeros needed before the first
        // write (it goes into preallocated blocks whatever happens).
        let align = st.files.get(&seg)?.alignment();
        let data_end = align_up(end, align);
        let seg_end = seg + self.opts.segment_bytes;
        let (zeroed_seg, zeroed_to) = st.zeroed;
        let from = match zeroed_seg == seg {
            true => zeroed_to.max(data_end + ZERO_GAP_BYTES),
            false => data_end + ZERO_GAP_BYTES,
        };
        if from >= seg_end || from >= data_end + ZERO_AHEAD_BYTES - ZERO_CHUNK_BYTES {
            return None;
        }
        // Whole zero chunks (one shared buffer, written again and again) except at the
        // segment's end.
        let chunks = (data_end + ZERO_AHEAD_BYTES - from)
            .div_ceil(ZERO_CHUNK_BYTES)
            .min(max_chunks);
        let to = (from + chunks * ZERO_CHUNK_BYTES).min(seg_end);
        let zeros = ZerosAhead {
            seg,
            from,
            to,
            round: self.zeros_done.get(),
        };
        st.zeroing = Some(zeros);
        Some(zeros)
    }

    /// Writes the zeros planned by [`SegmentedLog::begin_zeros_ahead`] so later flushes land
    /// in written blocks (see [`ZERO_AHEAD_BYTES`]); a later fdatasync round covers them (no
    /// need: they only save later rounds a journal commit). Whatever its outcome, the range
    /// is free for data writes afterwards.
    pub(crate) async fn write_zeros(&self, zeros: ZerosAhead) -> io::Result<()> {
        let result = self.write_zeros_range(zeros).await;
        self.state.borrow_mut().zeroing = None;
        self.zeros_done.advance(zeros.round + 1);
        result
    }

    /// Waits for the zeros-ahead write in flight, if any (a store closing: nothing of it may
    /// land after the store is reopened).
    pub(crate) async fn zeros_settled(&self) {
        let zeroing = self.state.borrow().zeroing;
        if let Some(z) = zeroing {
            let _ = self.zeros_done.wait_for(z.round + 1).await;
        }
    }

    /// Whether a zeros-ahead write is in flight.
    #[cfg(test)]
    pub(crate) fn zeros_in_flight(&self) -> bool {
        self.state.borrow().zeroing.is_some()
    }

    async fn write_zeros_range(&self, zeros: ZerosAhead) -> io::Result<()> {
        let ZerosAhead { seg, from, to, .. } = zeros;
        let Some(file) = self.zero_file(seg).await? else {
            return Ok(()); // the segment went away meanwhile (truncation)
        };
        let mut pos = from;
        while pos < to {
            let len = (to - pos).min(ZERO_CHUNK_BYTES);
            let buf = match len == ZERO_CHUNK_BYTES {
                true => self.pool.zeros(&*file, len as usize),
                false => {
                    let mut buf = file.alloc_buffer(len as usize);
                    buf.as_mut_slice().fill(0);
                    Rc::new(buf)
                }
            };
            file.write_shared_at(buf, pos - seg).await?;
            pos += len;
            let mut st = self.state.borrow_mut();
            if st.zeroed.0 != seg || st.zeroed.1 < pos {
                st.zeroed = (seg, pos);
            }
        }
        Ok(())
    }

    /// Waits until no zeros-ahead write runs inside `[.., hi)` of segment `seg` (a data
    /// write up to `hi` must not race one: either could reach the disk last).
    async fn clear_of_zeros(&self, seg: u64, hi: u64) {
        loop {
            let zeroing = self.state.borrow().zeroing;
            match zeroing {
                Some(z) if z.seg == seg && hi > z.from => {
                    // Never closed: the zeros write always ends by advancing it.
                    let _ = self.zeros_done.wait_for(z.round + 1).await;
                }
                _ => return,
            }
        }
    }

    /// The handle zeros ahead are written through: the segment's own, or for an O_DSYNC log a
    /// plain one (opened once per segment).
    async fn zero_file(&self, seg: u64) -> io::Result<Option<Rc<S::File>>> {
        if self.file(seg).is_none() {
            return Ok(None);
        }
        if !self.opts.dsync {
            return Ok(self.file(seg));
        }
        if let Some((at, file)) = &self.state.borrow().zero_file {
            if *at == seg {
                return Ok(Some(Rc::clone(file)));
            }
        }
        let file = Rc::new(self.storage.open(&self.path_of(seg), false).await?);
        self.state.borrow_mut().zero_file = Some((seg, Rc::clone(&file)));
        Ok(Some(file))
    }

    /// O_DSYNC logs: plans the next write that may start beside the writes in flight (see
    /// [`WritePlan`]), or says what to wait for. Not mixed with [`SegmentedLog::write_pending`]
    /// (which runs only with no planned write in flight: a store closing).
    pub(crate) fn plan_write(&self) -> Next {
        let mut st = self.state.borrow_mut();
        assert!(self.opts.dsync, "planned writes need O_DSYNC files");
        assert!(!st.writing, "a planned write beside write_pending");
        let written = st.written;
        let page = st.align.unwrap_or(PLAN_PAGE_BYTES);
        st.plan.next(written, page, self.opts.segment_bytes)
    }

    /// Writes a planned write ([`SegmentedLog::plan_write`]): the pages `[from, to)` as memory
    /// holds them up to the end of the data (the rest of a segment past its blank record is
    /// never written), the head of the first page read back from the file when memory no
    /// longer holds it (it is durable). Its bytes are durable when it completes.
    ///
    /// `at_once`: handed to the device at once whatever its size (the writer has answers to
    /// send before it next polls); otherwise only from [`SUBMIT_NOW_BYTES`] of new data.
    pub(crate) async fn write_planned(&self, w: PlannedWrite, at_once: bool) -> io::Result<()> {
        let seg = self.segment_of(w.from);
        assert!(
            w.to <= seg + self.opts.segment_bytes,
            "a write crosses a segment"
        );
        let Some(data_hi) = self.state.borrow().tail.data_end_before(w.from, w.data_end) else {
            return Ok(()); // only skipped space (after a blank record): nothing to write
        };
        let file = self.file_for_write(seg).await?;
        let align = file.alignment();
        if w.from % align != 0 || self.opts.segment_bytes % align != 0 {
            return Err(io::Error::other(format!(
                "{}: writes at {} in segments of {} are not aligned to the device's {align}",
                self.opts.dir.display(),
                w.from,
                self.opts.segment_bytes
            )));
        }
        let end = align_up(data_hi, align).min(w.to);
        self.clear_of_zeros(seg, end).await;
        let mut pos = w.from;
        while pos < end {
            let chunk_end = end.min(pos + WRITE_MAX_BYTES);
            let mut buf = self.pool.take(&*file, (chunk_end - pos) as usize);
            let dst = buf.as_mut_slice();
            dst.fill(0);
            let mem_start = self.state.borrow().tail.start().unwrap_or(u64::MAX);
            if mem_start > pos {
                let head = mem_start.min(data_hi).min(chunk_end);
                assert!(head <= self.flushed(), "evicted bytes at {pos} not durable");
                let bytes = file.read_at(pos - seg, (head - pos) as usize).await?;
                dst[..bytes.len()].copy_from_slice(&bytes);
            }
            let copied = self.state.borrow().tail.copy_range_into(pos, dst);
            let need = data_hi.min(chunk_end).saturating_sub(mem_start.max(pos));
            assert!(
                copied as u64 >= need,
                "tail lacks bytes to write: {copied} < {need}"
            );
            let buf = Rc::new(buf);
            match at_once || data_hi.saturating_sub(w.fresh) >= SUBMIT_NOW_BYTES {
                true => file.write_shared_at_now(Rc::clone(&buf), pos - seg).await?,
                false => file.write_shared_at(Rc::clone(&buf), pos - seg).await?,
            }
            self.pool.give(buf);
            pos = chunk_end;
        }
        Ok(())
    }

    /// Ends a planned write with its outcome: on success its bytes are durable and `flushed`
    /// moves to the end of the durable prefix (returned); a failed write's bytes are owed
    /// to a later write.
    pub(crate) fn end_write(&self, w: PlannedWrite, ok: bool) -> u64 {
        let mut st = self.state.borrow_mut();
        let durable = st.plan.complete(w.id, ok);
        if durable > st.flushed {
            st.flushed = durable;
            // With nothing in flight these are all one: what `write_pending` starts from.
            st.submitted = durable;
            st.sync_started = durable;
            st.tail.evict(durable, self.opts.hot_bytes);
        }
        st.flushed
    }

    /// Writes what was appended since the last write to the segment files, without
    /// fdatasync; returns the new `submitted` offset. At most one write runs at a time; an
    /// fdatasync round ([`SegmentedLog::sync_submitted`]) may run beside it. Rewrites the
    /// partial last page each time (the bytes already written in it are written again
    /// unchanged, so a crash during this write cannot damage them whichever version of the
    /// page reaches the disk).
    pub(crate) async fn write_pending(&self) -> io::Result<u64> {
        let (from, target) = {
            let mut st = self.state.borrow_mut();
            assert!(!st.writing, "two writes of one log at once");
            st.writing = true;
            (st.submitted, st.written)
        };
        let result = self.write_range(from, target).await;
        let mut st = self.state.borrow_mut();
        st.writing = false;
        result?;
        assert!(st.submitted == from, "submitted moved during a write");
        st.submitted = target;
        Ok(target)
    }

    /// One fdatasync round, alone: makes everything written so far durable and returns the
    /// new `flushed` offset.
    pub(crate) async fn sync_submitted(&self) -> io::Result<u64> {
        let Some(round) = self.begin_sync() else {
            return Ok(self.flushed());
        };
        let result = self.sync_round(&round).await;
        self.end_sync(round, result)
    }

    /// `submitted` when the newest fdatasync round began.
    pub(crate) fn sync_started(&self) -> u64 {
        self.state.borrow().sync_started
    }

    /// Begins an fdatasync round covering every write completed so far (one fdatasync per
    /// segment written since the previous round began), or `None` when there is nothing new.
    /// Only writes completed before the round began count: a write running beside it is
    /// covered by a later round. Rounds may overlap; they must end
    /// ([`SegmentedLog::end_sync`]) in the order they began.
    pub(crate) fn begin_sync(&self) -> Option<SyncRound> {
        let mut st = self.state.borrow_mut();
        if st.submitted <= st.sync_started && st.unsynced.is_empty() {
            return None;
        }
        st.syncing += 1;
        st.sync_started = st.submitted;
        Some(SyncRound {
            target: st.submitted,
            segments: std::mem::take(&mut st.unsynced),
        })
    }

    /// Runs the fdatasyncs of a round.
    pub(crate) async fn sync_round(&self, round: &SyncRound) -> io::Result<()> {
        self.sync_segments(&round.segments).await
    }

    /// Ends a round with the outcome of [`SegmentedLog::sync_round`]; on success `flushed`
    /// moves to its target (every round begun before it has ended successfully, so every
    /// segment written below the target is synced) and returns it.
    pub(crate) fn end_sync(&self, round: SyncRound, result: io::Result<()>) -> io::Result<u64> {
        let mut st = self.state.borrow_mut();
        st.syncing -= 1;
        if let Err(e) = result {
            // Not durable. With nothing else in flight, the next flush writes everything
            // since `flushed` again (as a retried flush always did); in any case it syncs
            // these segments again.
            if !st.writing && st.syncing == 0 {
                st.submitted = st.flushed;
                st.sync_started = st.flushed;
            }
            let later = std::mem::replace(&mut st.unsynced, round.segments);
            for seg in later {
                if !st.unsynced.contains(&seg) {
                    st.unsynced.push(seg);
                }
            }
            return Err(e);
        }
        st.flushed = st.flushed.max(round.target);
        let flushed = st.flushed;
        st.tail.evict(flushed, self.opts.hot_bytes);
        if st.plan.in_flight() == 0 && st.plan.durable_end() < flushed {
            // Written by `write_pending` (a store closing): the plan starts over from there.
            st.plan.restart(flushed);
        }
        Ok(flushed)
    }

    async fn sync_segments(&self, segments: &[u64]) -> io::Result<()> {
        if self.opts.dsync {
            return Ok(()); // every completed write is durable already
        }
        for seg in segments {
            let file = self.file(*seg).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("segment {seg} missing"))
            })?;
            file.fdatasync().await.map_err(fsync_failed)?;
        }
        Ok(())
    }

    async fn write_range(&self, mut from: u64, target: u64) -> io::Result<()> {
        while from < target {
            let seg = self.segment_of(from);
            let seg_end = seg + self.opts.segment_bytes;
            let hi = target.min(seg_end);
            self.write_segment(seg, from, hi).await?;
            from = hi;
        }
        Ok(())
    }

    /// Writes the data of `[lo, hi)` (one segment) and notes the segment for the next
    /// fdatasync round.
    async fn write_segment(&self, seg: u64, lo: u64, hi: u64) -> io::Result<()> {
        let Some(data_hi) = self.state.borrow().tail.data_end_before(lo, hi) else {
            return Ok(()); // only skipped space (after a blank record): nothing to write
        };
        let file = self.file_for_write(seg).await?;
        let align = file.alignment();
        if self.opts.segment_bytes % align != 0 {
            return Err(io::Error::other(format!(
                "{}: segment size {} is not a multiple of the device alignment {align}",
                self.opts.dir.display(),
                self.opts.segment_bytes
            )));
        }
        let (a, b) = (align_down(lo, align), align_up(data_hi, align));
        self.clear_of_zeros(seg, b).await;
        let mut pos = a;
        while pos < b {
            let end = b.min(pos + WRITE_MAX_BYTES);
            let mut buf = self.pool.take(&*file, (end - pos) as usize);
            let dst = buf.as_mut_slice();
            dst.fill(0);
            if pos < lo {
                self.hydrate(&file, seg, pos, lo, dst).await?;
            }
            let copied = self.state.borrow().tail.copy_range_into(pos, dst);
            let need = data_hi.min(end) - lo.max(pos);
            assert!(
                copied as u64 >= need,
                "tail lacks dirty bytes: {copied} < {need}"
            );
            let buf = Rc::new(buf);
            match self.opts.dsync && data_hi - lo >= SUBMIT_NOW_BYTES {
                true => file.write_shared_at_now(Rc::clone(&buf), pos - seg).await?,
                false => file.write_shared_at(Rc::clone(&buf), pos - seg).await?,
            }
            self.pool.give(buf);
            pos = end;
        }
        let mut st = self.state.borrow_mut();
        if !st.unsynced.contains(&seg) {
            st.unsynced.push(seg);
        }
        Ok(())
    }

    /// Fills `dst[..lo - pos]` with the durable head of the partial page from the file.
    async fn hydrate(
        &self,
        file: &S::File,
        seg: u64,
        pos: u64,
        lo: u64,
        dst: &mut [u8],
    ) -> io::Result<()> {
        let in_memory = self.state.borrow().tail.start().is_some_and(|m| m <= pos);
        if in_memory {
            return Ok(());
        }
        let head = file.read_at(pos - seg, (lo - pos) as usize).await?;
        dst[..head.len()].copy_from_slice(&head);
        Ok(())
    }

    /// Removes the oldest segment file, which starts at `start` (retention). It must not be
    /// the segment being written, and all its bytes must be durable. A reader holding the
    /// file keeps reading it; later readers find it gone. The caller syncs the directory.
    pub(crate) async fn remove_oldest(&self, start: u64) -> io::Result<()> {
        {
            let st = self.state.borrow();
            assert_eq!(
                st.files.keys().next(),
                Some(&start),
                "removing a segment that is not the oldest"
            );
            let end = start + self.opts.segment_bytes;
            assert!(
                end <= st.flushed,
                "removing segment {start} flushed only to {}",
                st.flushed
            );
            assert!(
                st.files.len() > 1 && self.segment_of(st.written) > start,
                "removing the segment being written"
            );
        }
        // The file goes first and the handle after: until then readers still find it.
        self.storage.remove(&self.path_of(start)).await?;
        let removed = self.state.borrow_mut().files.remove(&start);
        assert!(removed.is_some(), "segment {start} removed twice");
        Ok(())
    }

    /// Makes the directory's entries durable (after removals).
    pub(crate) async fn sync_dir(&self) -> io::Result<()> {
        self.storage.sync_dir(&self.opts.dir).await
    }

    /// Cuts the log at `end` (recovery): zeroes the rest of the segment holding it, removes
    /// later segments, and makes that durable. Afterwards `written == flushed == end`.
    pub(crate) async fn truncate(&self, end: u64) -> io::Result<()> {
        let keep = self.segment_of(end);
        let later: Vec<u64> = self
            .segment_starts()
            .into_iter()
            .filter(|s| *s > keep)
            .collect();
        for start in later.iter().rev() {
            self.state.borrow_mut().files.remove(start);
            self.storage.remove(&self.path_of(*start)).await?;
        }
        if let Some(file) = self.file(keep) {
            let size = file.file_size().await?;
            let at = end - keep;
            if size > at {
                file.zero_range(at, size - at).await?;
            }
            if self.opts.preallocate {
                file.pre_allocate(self.opts.segment_bytes).await?;
            } else {
                file.truncate(align_up(at, file.alignment()).min(size))
                    .await?;
            }
            file.fdatasync().await?;
        }
        if !later.is_empty() {
            self.storage.sync_dir(&self.opts.dir).await?;
        }
        self.set_end(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimStorage;

    fn opts(prealloc: bool) -> LogOptions {
        LogOptions {
            dir: PathBuf::from("/s/log"),
            segment_bytes: 4096,
            preallocate: prealloc,
            chunk_bytes: 1000,
            hot_bytes: 0,
            dsync: false,
        }
    }

    #[test]
    fn flush_rewrites_the_partial_page_and_reopen_hydrates_it() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(1);
            let log = SegmentedLog::new(sim.clone(), opts(false));
            log.append(0, &[1; 700]);
            assert_eq!(log.flush().await.unwrap(), 700);
            log.append(700, &[2; 100]);
            log.flush().await.unwrap();
            let reopened = SegmentedLog::new(sim.clone(), opts(false));
            assert_eq!(reopened.load().await.unwrap(), vec![0]);
            reopened.set_end(800);
            reopened.append(800, &[3; 50]);
            reopened.flush().await.unwrap();
            let file = sim
                .file_bytes(Path::new("/s/log/00000000000000000000"))
                .unwrap();
            assert_eq!(file.len(), 1024, "grows by aligned pages");
            assert_eq!(&file[..700], &[1; 700][..]);
            assert_eq!(&file[700..800], &[2; 100][..]);
            assert_eq!(&file[800..850], &[3; 50][..]);
            assert!(file[850..].iter().all(|b| *b == 0));
            assert_eq!(
                &reopened.read(690, 20).await.unwrap()[..],
                &[[1; 10], [2; 10]].concat()
            );
        });
    }

    #[test]
    fn a_skip_into_a_segment_flushes_zeros_up_to_the_next_append() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(4);
            let log = SegmentedLog::new(sim.clone(), opts(false));
            log.append(0, &[1; 100]);
            log.flush().await.unwrap();
            log.skip_to(4096 + 600); // a whole segment and part of the next
            log.append(4696, &[2; 10]);
            log.skip_to(4796); // inside the segment being written
            log.append(4796, &[3; 5]);
            assert_eq!(log.flush().await.unwrap(), 4801);
            assert_eq!(log.segment_starts(), vec![0, 4096]);
            let second = sim
                .file_bytes(Path::new("/s/log/00000000000000004096"))
                .unwrap();
            assert!(second[..600].iter().all(|b| *b == 0));
            assert_eq!(&second[600..610], &[2; 10][..]);
            assert!(second[610..700].iter().all(|b| *b == 0));
            assert_eq!(&second[700..705], &[3; 5][..]);
            assert_eq!(
                &log.read(4690, 12).await.unwrap()[..],
                &[0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2]
            );
        });
    }

    #[test]
    fn a_read_past_a_blank_into_the_skipped_rest_of_its_segment_reads_zeros() {
        // Found by ringmq-sim (seed 48): HA reads a chunk up to the segment's end; when the
        // records before the blank were flushed but the blank was not, the rest came from a
        // tail with a hole after the blank, and the read retried for ever.
        crate::store::test_support::run(async {
            let sim = SimStorage::new(5);
            let log = SegmentedLog::new(sim.clone(), opts(true));
            log.append(0, &[1; 100]);
            assert_eq!(log.flush().await.unwrap(), 100);
            log.append(100, &[9; 8]); // the blank record closing the segment
            log.skip_to(4096);
            log.append(4096, &[3; 10]);
            let read = log.read(50, 4096 - 50).await.unwrap();
            assert_eq!(&read[..50], &[1; 50][..]);
            assert_eq!(&read[50..58], &[9; 8][..]);
            assert!(read[58..].iter().all(|b| *b == 0));
        });
    }

    #[test]
    fn a_read_split_between_file_and_tail_survives_a_flush_evicting_the_tail_meanwhile() {
        crate::store::test_support::run(async {
            // Alignment = chunk size, so the flush below writes whole chunks and need not read
            // the file first.
            let sim = SimStorage::with_alignment(9, 1024);
            let opts = LogOptions {
                chunk_bytes: 1024,
                ..opts(false)
            };
            let log = Rc::new(SegmentedLog::new(sim.clone(), opts));
            log.append(0, &[1; 3072]);
            // Flushed to 3072; memory keeps only the last chunk, [2048, 3072).
            log.flush().await.unwrap();
            log.append(3072, &[2; 1024]); // a full chunk, only in memory
            sim.set_faults(crate::testing::SimFaults {
                read_delay: std::time::Duration::from_millis(20),
                ..Default::default()
            });
            let reader = {
                let log = Rc::clone(&log);
                glommio::spawn_local(async move { log.read(1536, 2048).await }).detach()
            };
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            // While the reader reads [1536, 2048) from the file (the rest, [2048, 3584), is to
            // come from memory), everything is flushed and [2048, 3072) evicted.
            log.flush().await.unwrap();
            assert!(log.read_hot(2048, 512).is_none(), "the tail was evicted");
            let read = reader.await.unwrap().unwrap();
            assert_eq!(&read[..], &[&[1; 1536][..], &[2; 512][..]].concat()[..]);
        });
    }

    #[test]
    fn removing_the_oldest_segment_forgets_it_and_readers_find_it_gone() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(5);
            let log = SegmentedLog::new(sim.clone(), opts(true));
            log.append(0, &[7; 4000]);
            log.skip_to(4096);
            log.append(4096, &[8; 10]);
            log.flush().await.unwrap();
            let kept = log.file(0).unwrap();
            log.remove_oldest(0).await.unwrap();
            assert_eq!(log.segment_starts(), vec![4096]);
            assert!(sim
                .file_bytes(Path::new("/s/log/00000000000000000000"))
                .is_none());
            assert_eq!(
                kept.read_at(0, 4).await.unwrap()[..],
                [7; 4],
                "open handles still read"
            );
            let err = log.read_disk(0, 10).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        });
    }

    #[test]
    #[should_panic(expected = "removing the segment being written")]
    fn removing_the_segment_being_written_is_a_bug() {
        crate::store::test_support::run(async {
            let log = SegmentedLog::new(SimStorage::new(6), opts(true));
            log.append(0, &[7; 4096]); // full, but the next segment does not exist yet
            log.flush().await.unwrap();
            let _ = log.remove_oldest(0).await;
        });
    }

    #[test]
    fn truncate_zeroes_the_tail_and_drops_later_segments() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(2);
            let log = SegmentedLog::new(sim.clone(), opts(true));
            log.append(0, &[7; 4000]);
            log.skip_to(4096);
            log.append(4096, &[8; 10]);
            log.flush().await.unwrap();
            assert_eq!(log.segment_starts(), vec![0, 4096]);
            log.truncate(1000).await.unwrap();
            assert_eq!(log.segment_starts(), vec![0]);
            let file = sim
                .file_bytes(Path::new("/s/log/00000000000000000000"))
                .unwrap();
            assert_eq!(file.len(), 4096);
            assert!(file[1000..].iter().all(|b| *b == 0));
            assert_eq!(log.written(), 1000);
        });
    }
}
