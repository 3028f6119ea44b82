//! `SimStorage`: an in-memory [`Storage`] for tests. Seeded (every random choice comes from
//! the seed, so a failing run can be replayed), with injectable faults: EIO or ENOSPC on writes
//! and fsyncs, EIO on reads, and fsyncs and writes that stall. [`SimStorage::crash`] simulates
//! power loss: each file keeps what its last successful `fdatasync` covered, and every operation since then is kept,
//! lost, or (for writes) torn after a random number of whole sectors (the alignment: a disk
//! writes a sector whole or not at all), each independently (a disk may reorder unsynced
//! writes). Only unsynced data can be lost (STYLE habit 14). Directory operations
//! are durable at once. A crash, like [`SimStorage::kill`], also ends the process that used
//! the storage: every handle taken before it (a store dropped without `close` still runs its
//! background tasks on its clone) fails from then on, so nothing the dead process had in
//! memory reaches the files after the crash. For retention tests, files
//! carry a modification time from an attached [`SimClock`] ([`SimStorage::set_clock`]) and
//! the disk reports an injected usage ([`SimStorage::set_disk_usage`]).
//!
//! Runs on one glommio executor (fsync stalls sleep on the glommio timer).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::store::io::{DiskUsage, IoBuffer, Storage, StorageFile};
use crate::store::Clock;

/// Faults to inject; each applies to files whose path starts with `path_prefix` (all when
/// `None`).
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// errno returned by every `write_at` and `pre_allocate` (e.g. `libc::EIO`,
    /// `libc::ENOSPC`).
    pub write_errno: Option<i32>,
    /// errno returned by every `fdatasync`.
    pub fsync_errno: Option<i32>,
    /// errno returned by every `read_at` (e.g. `libc::EIO`: a bad sector).
    pub read_errno: Option<i32>,
    /// How long every `fdatasync` takes.
    pub fsync_delay: Duration,
    /// How long every `write_at` takes (its bytes reach the file when it completes; an
    /// fdatasync that began before that does not cover them).
    pub write_delay: Duration,
    /// When set, how long a `write_at` through a handle not opened O_DSYNC takes instead of
    /// `write_delay` (an O_DSYNC commitlog's zeros ahead go through such a handle).
    pub plain_write_delay: Option<Duration>,
    /// Up to this much more (at random) on every `write_at`'s delay, so that writes in flight
    /// at once complete in any order.
    pub write_delay_jitter: Duration,
    /// How long every `read_at` takes (it reads the file as it is when it completes).
    pub read_delay: Duration,
    /// Restricts the faults to paths with this prefix.
    pub path_prefix: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
    Zero { pos: u64, len: u64 },
}

#[derive(Debug, Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Op>,
    /// Clock time of the last change (0 without a clock).
    modified_ms: i64,
}

#[derive(Debug)]
struct State {
    files: HashMap<u64, FileData>,
    names: HashMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_id: u64,
    rng: u64,
    alignment: u64,
    faults: SimFaults,
    writes: u64,
    /// O_DSYNC writes started and not completed, and the most there were at once.
    writes_in_flight: (u64, u64),
    fsyncs: u64,
    clock: Option<SimClock>,
    usage: DiskUsage,
    /// Bumped by every crash or kill; handles of an older generation are dead.
    generation: u64,
    /// While set, nothing becomes durable: every fdatasync and O_DSYNC write waits (a disk
    /// that has stopped completing flushes; see [`SimStorage::hold_durability`]).
    held: bool,
    held_waiters: Vec<std::task::Waker>,
    /// [`SimFile`]s alive (opened and not yet dropped), whatever their generation.
    open_handles: u64,
}

/// The in-memory file system. Clones share it; a clone belongs to the generation (process
/// lifetime) it was made in.
#[derive(Clone)]
pub struct SimStorage {
    state: Rc<RefCell<State>>,
    generation: Cell<u64>,
}

/// An open file of a [`SimStorage`].
pub struct SimFile {
    storage: SimStorage,
    id: u64,
    path: PathBuf,
    /// Opened with [`Storage::open_dsync`]: each completed write is durable (with every
    /// operation completed before it).
    dsync: bool,
}

/// A plain buffer (alignment is checked on write instead).
pub struct SimBuffer(Vec<u8>);

impl IoBuffer for SimBuffer {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }

    fn byte_len(&self) -> usize {
        self.0.len()
    }
}

fn apply(data: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, data: bytes } => {
            let end = *pos as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*pos as usize..end].copy_from_slice(bytes);
        }
        Op::SetLen(len) => data.resize(*len as usize, 0),
        Op::Zero { pos, len } => {
            let end = ((pos + len) as usize).min(data.len());
            let start = (*pos as usize).min(end);
            data[start..end].fill(0);
        }
    }
}

impl State {
    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn faulty(&self, path: &Path) -> bool {
        match &self.faults.path_prefix {
            Some(prefix) => path.starts_with(prefix),
            None => true,
        }
    }

    fn file(&mut self, id: u64) -> &mut FileData {
        self.files.entry(id).or_default()
    }

    fn record(&mut self, id: u64, op: Op) {
        let now = self.clock.as_ref().map_or(0, SimClock::now_ms);
        let file = self.file(id);
        apply(&mut file.current, &op);
        file.pending.push(op);
        file.modified_ms = now;
    }
}

impl SimStorage {
    /// An empty file system with 512-byte alignment and the given seed.
    pub fn new(seed: u64) -> SimStorage {
        SimStorage::with_alignment(seed, 512)
    }

    /// An empty file system whose files report `alignment`.
    pub fn with_alignment(seed: u64, alignment: u64) -> SimStorage {
        assert!(alignment.is_power_of_two());
        SimStorage {
            state: Rc::new(RefCell::new(State {
                files: HashMap::new(),
                names: HashMap::new(),
                dirs: BTreeSet::new(),
                next_id: 1,
                rng: seed,
                alignment,
                faults: SimFaults::default(),
                writes: 0,
                writes_in_flight: (0, 0),
                fsyncs: 0,
                clock: None,
                usage: DiskUsage::percent(0),
                generation: 0,
                held: false,
                held_waiters: Vec::new(),
                open_handles: 0,
            })),
            generation: Cell::new(0),
        }
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: SimFaults) {
        self.state.borrow_mut().faults = faults;
    }

    /// Holds (`true`) or releases durability: while held, every `fdatasync` and every write
    /// through an O_DSYNC handle waits, without a timer, until it is released (a slow disk on
    /// simulated time: the simulator decides when it catches up). A crash while held loses
    /// what those calls would have made durable.
    pub fn hold_durability(&self, held: bool) {
        let waiters = {
            let mut state = self.state.borrow_mut();
            state.held = held;
            match held {
                true => Vec::new(),
                false => std::mem::take(&mut state.held_waiters),
            }
        };
        for w in waiters {
            w.wake();
        }
    }

    /// Whether durability is held.
    pub fn durability_held(&self) -> bool {
        self.state.borrow().held
    }

    /// Resolves once durability is not held; EIO if the process died meanwhile.
    async fn durability_gate(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            match state.held {
                true => {
                    state.held_waiters.push(cx.waker().clone());
                    std::task::Poll::Pending
                }
                false => std::task::Poll::Ready(()),
            }
        })
        .await;
        self.alive()
    }

    /// Stamps every later change of a file with `clock`'s time (file modification times).
    pub fn set_clock(&self, clock: &SimClock) {
        self.state.borrow_mut().clock = Some(clock.clone());
    }

    /// What [`Storage::disk_usage`] reports from now on, for every path.
    pub fn set_disk_usage(&self, usage: DiskUsage) {
        self.state.borrow_mut().usage = usage;
    }

    /// Files open now: handles opened and not yet dropped (a descriptor each on a real disk).
    pub fn open_handles(&self) -> u64 {
        self.state.borrow().open_handles
    }

    /// Successful `fdatasync` calls so far.
    pub fn fsync_count(&self) -> u64 {
        self.state.borrow().fsyncs
    }

    /// Successful `write_at` calls so far.
    pub fn write_count(&self) -> u64 {
        self.state.borrow().writes
    }

    /// O_DSYNC writes (to files the faults apply to) in flight now.
    pub fn dsync_writes_in_flight(&self) -> u64 {
        self.state.borrow().writes_in_flight.0
    }

    /// The most O_DSYNC writes (to files the faults apply to) that were in flight at once.
    pub fn max_dsync_writes_in_flight(&self) -> u64 {
        self.state.borrow().writes_in_flight.1
    }

    /// Simulates the process being killed (`kill -9`): the files keep everything written
    /// (the page cache survives), but every handle taken before — other clones of this
    /// storage and the files opened through them — fails with EIO from now on. This handle
    /// stands for the next process and goes on working.
    pub fn kill(&self) {
        let mut state = self.state.borrow_mut();
        state.generation += 1;
        self.generation.set(state.generation);
    }

    /// Simulates power loss: the process dies as in [`SimStorage::kill`], and every file
    /// falls back to its durable image plus a random selection of the operations not covered
    /// by an fsync, each kept, lost or (for writes) torn after a random number of whole sectors
    /// (the file system's alignment).
    pub fn crash(&self) {
        self.kill();
        let mut state = self.state.borrow_mut();
        // In id order: the random choices must not depend on the map's iteration order, or a
        // seed would not replay.
        let mut ids: Vec<u64> = state.files.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let pending = std::mem::take(&mut state.file(id).pending);
            let mut image = state.file(id).durable.clone();
            for op in pending {
                match state.next_random() % 3 {
                    0 => {}
                    1 => apply(&mut image, &op),
                    _ => {
                        if let Op::Write { pos, data } = &op {
                            // Cut at the write's start, a sector boundary inside it, or its
                            // end.
                            let align = state.alignment;
                            let end = pos + data.len() as u64;
                            let cuts: Vec<u64> = std::iter::once(*pos)
                                .chain(
                                    (pos / align + 1..)
                                        .map(|k| k * align)
                                        .take_while(|b| *b < end),
                                )
                                .chain(std::iter::once(end))
                                .collect();
                            let pick = state.next_random() % cuts.len() as u64;
                            let keep = (cuts[pick as usize] - pos) as usize;
                            let torn = Op::Write {
                                pos: *pos,
                                data: data[..keep].to_vec(),
                            };
                            apply(&mut image, &torn);
                        }
                    }
                }
            }
            let file = state.file(id);
            file.durable = image.clone();
            file.current = image;
        }
    }

    /// The current content of a file, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        let id = state.names.get(path)?;
        state.files.get(id).map(|f| f.current.clone())
    }

    /// What of a file is durable: what a crash now would leave at least.
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        let id = state.names.get(path)?;
        state.files.get(id).map(|f| f.durable.clone())
    }

    /// Overwrites bytes of a file durably (to plant garbage or corruption in tests).
    pub fn write_raw(&self, path: &Path, pos: u64, bytes: &[u8]) {
        self.modify_raw(
            path,
            Op::Write {
                pos,
                data: bytes.to_vec(),
            },
        );
    }

    /// Sets a file's length durably (to simulate a truncated file in tests).
    pub fn set_len_raw(&self, path: &Path, len: u64) {
        self.modify_raw(path, Op::SetLen(len));
    }

    fn modify_raw(&self, path: &Path, op: Op) {
        let mut state = self.state.borrow_mut();
        let Some(&id) = state.names.get(path) else {
            panic!("no file {}", path.display());
        };
        let file = state.file(id);
        apply(&mut file.current, &op);
        apply(&mut file.durable, &op);
    }

    /// Paths of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.state.borrow().names.keys().cloned().collect();
        paths.sort();
        paths
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl SimStorage {
    /// EIO when this handle belongs to a process that was killed or crashed since.
    fn alive(&self) -> io::Result<()> {
        match self.generation.get() == self.state.borrow().generation {
            true => Ok(()),
            false => Err(errno(libc::EIO)),
        }
    }

    fn open_file(&self, path: &Path, create: bool, dsync: bool) -> io::Result<SimFile> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        let id = match state.names.get(path) {
            Some(id) => *id,
            None if create => {
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if !state.dirs.contains(&parent) {
                    return Err(not_found(&parent));
                }
                let id = state.next_id;
                state.next_id += 1;
                state.names.insert(path.to_path_buf(), id);
                state.files.insert(id, FileData::default());
                id
            }
            None => return Err(not_found(path)),
        };
        state.open_handles += 1;
        Ok(SimFile {
            storage: self.clone(),
            id,
            path: path.to_path_buf(),
            dsync,
        })
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.storage.state.borrow_mut().open_handles -= 1;
    }
}

impl SimFile {
    /// Sleeps `delay` if the faults apply to this file; EIO if the process died meanwhile.
    async fn stall(&self, delay: Duration) -> io::Result<()> {
        if delay.is_zero() || !self.storage.state.borrow().faulty(&self.path) {
            return Ok(());
        }
        glommio::timer::sleep(delay).await;
        self.storage.alive()
    }
}

impl StorageFile for SimFile {
    type Buffer = SimBuffer;

    fn alignment(&self) -> u64 {
        self.storage.state.borrow().alignment
    }

    fn alloc_buffer(&self, len: usize) -> SimBuffer {
        assert_eq!(
            len as u64 % self.alignment(),
            0,
            "unaligned buffer of {len}"
        );
        SimBuffer(vec![0xA5; len])
    }

    async fn write_shared_at(&self, buf: Rc<SimBuffer>, pos: u64) -> io::Result<()> {
        self.storage.alive()?;
        let delay = {
            let state = self.storage.state.borrow();
            let align = state.alignment;
            assert_eq!(pos % align, 0, "unaligned write at {pos}");
            assert_eq!(
                buf.0.len() as u64 % align,
                0,
                "unaligned write of {}",
                buf.0.len()
            );
            if let (true, Some(code)) = (state.faulty(&self.path), state.faults.write_errno) {
                return Err(errno(code));
            }
            // O_DSYNC: a failing flush fails the write (after its bytes reached the file).
            if let (true, true, Some(code)) = (
                self.dsync,
                state.faulty(&self.path),
                state.faults.fsync_errno,
            ) {
                let op = Op::Write {
                    pos,
                    data: buf.0.clone(),
                };
                drop(state);
                self.storage.state.borrow_mut().record(self.id, op);
                return Err(errno(code));
            }
            match (self.dsync, state.faults.plain_write_delay) {
                (false, Some(delay)) => delay,
                _ => state.faults.write_delay,
            }
        };
        let (delay, counted) = {
            let mut state = self.storage.state.borrow_mut();
            let jitter = state.faults.write_delay_jitter.as_micros() as u64;
            let extra = match jitter {
                0 => 0,
                j => state.next_random() % j,
            };
            let counted = self.dsync && state.faulty(&self.path);
            if counted {
                let (now, max) = state.writes_in_flight;
                state.writes_in_flight = (now + 1, max.max(now + 1));
            }
            (delay + Duration::from_micros(extra), counted)
        };
        // A crash during the write: it never reached the file.
        let stalled = self.stall(delay).await;
        if counted {
            self.storage.state.borrow_mut().writes_in_flight.0 -= 1;
        }
        stalled?;
        if self.dsync {
            self.storage.durability_gate().await?;
        }
        let mut state = self.storage.state.borrow_mut();
        state.writes += 1;
        let data = buf.0.clone();
        state.record(self.id, Op::Write { pos, data });
        if self.dsync {
            // O_DSYNC: durable once it completes, as Linux does it (the write, then an
            // fdatasync of the file: every write completed before it is durable too).
            let file = state.file(self.id);
            for op in std::mem::take(&mut file.pending) {
                apply(&mut file.durable, &op);
            }
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.storage.alive()?;
        let delay = self.storage.state.borrow().faults.read_delay;
        self.stall(delay).await?;
        let mut state = self.storage.state.borrow_mut();
        if let (true, Some(code)) = (state.faulty(&self.path), state.faults.read_errno) {
            return Err(errno(code));
        }
        let data = &state.file(self.id).current;
        let start = (pos as usize).min(data.len());
        let end = (start + len).min(data.len());
        Ok(Bytes::copy_from_slice(&data[start..end]))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        self.storage.alive()?;
        let (delay, covered) = {
            let mut state = self.storage.state.borrow_mut();
            let covered = state.file(self.id).pending.len();
            let faulty = state.faulty(&self.path);
            if let (true, Some(code)) = (faulty, state.faults.fsync_errno) {
                return Err(errno(code));
            }
            let delay = if faulty {
                state.faults.fsync_delay
            } else {
                Duration::ZERO
            };
            (delay, covered)
        };
        if !delay.is_zero() {
            glommio::timer::sleep(delay).await;
            // A crash during the stall: the fsync never completed.
            self.storage.alive()?;
        }
        self.storage.durability_gate().await?;
        let mut state = self.storage.state.borrow_mut();
        state.fsyncs += 1;
        let file = state.file(self.id);
        let covered = covered.min(file.pending.len());
        let ops: Vec<Op> = file.pending.drain(..covered).collect();
        for op in &ops {
            apply(&mut file.durable, op);
        }
        Ok(())
    }

    async fn pre_allocate(&self, size: u64) -> io::Result<()> {
        self.storage.alive()?;
        let mut state = self.storage.state.borrow_mut();
        if let (true, Some(code)) = (state.faulty(&self.path), state.faults.write_errno) {
            return Err(errno(code));
        }
        let len = state.file(self.id).current.len() as u64;
        if size > len {
            state.record(self.id, Op::SetLen(size));
        }
        Ok(())
    }

    async fn truncate(&self, size: u64) -> io::Result<()> {
        self.storage.alive()?;
        self.storage
            .state
            .borrow_mut()
            .record(self.id, Op::SetLen(size));
        Ok(())
    }

    async fn zero_range(&self, pos: u64, len: u64) -> io::Result<()> {
        self.storage.alive()?;
        self.storage
            .state
            .borrow_mut()
            .record(self.id, Op::Zero { pos, len });
        Ok(())
    }

    async fn file_size(&self) -> io::Result<u64> {
        self.storage.alive()?;
        Ok(self.storage.state.borrow_mut().file(self.id).current.len() as u64)
    }

    async fn modified_ms(&self) -> io::Result<i64> {
        self.storage.alive()?;
        Ok(self.storage.state.borrow_mut().file(self.id).modified_ms)
    }
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        self.open_file(path, create, false)
    }

    async fn open_dsync(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        self.open_file(path, create, true)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        match state.names.remove(path) {
            Some(_) => Ok(()),
            None => Err(not_found(path)),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        let id = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.alive()?;
        let state = self.state.borrow();
        if !state.dirs.contains(path) {
            return Err(not_found(path));
        }
        let children = state.names.keys().chain(state.dirs.iter());
        let mut names: Vec<String> = children
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        for dir in path.ancestors() {
            state.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    async fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        self.alive()?;
        Ok(())
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.alive()?;
        let mut state = self.state.borrow_mut();
        let children = state.names.keys().chain(state.dirs.iter());
        if children.into_iter().any(|p| p.parent() == Some(path)) {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                "not empty",
            ));
        }
        match state.dirs.remove(path) {
            true => Ok(()),
            false => Err(not_found(path)),
        }
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        self.alive()?;
        let state = self.state.borrow();
        Ok(state.names.contains_key(path) || state.dirs.contains(path))
    }

    async fn disk_usage(&self, path: &Path) -> io::Result<DiskUsage> {
        self.alive()?;
        let state = self.state.borrow();
        match state.dirs.contains(path) || state.names.contains_key(path) {
            true => Ok(state.usage),
            false => Err(not_found(path)),
        }
    }
}

/// A clock the test sets by hand.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    now_ms: Rc<Cell<i64>>,
}

impl SimClock {
    /// A clock at `now_ms`.
    pub fn new(now_ms: i64) -> SimClock {
        SimClock {
            now_ms: Rc::new(Cell::new(now_ms)),
        }
    }

    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.now_ms.set(now_ms);
    }

    /// Moves the time forward.
    pub fn advance(&self, delta_ms: i64) {
        self.now_ms.set(self.now_ms.get() + delta_ms);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.get()
    }
}
