//! The storage seam: the [`Storage`] and [`StorageFile`] traits every store file goes through,
//! and [`DmaStorage`], their implementation on glommio's `DmaFile` (O_DIRECT over io_uring).
//! This is the **only** module where glommio file APIs appear; tests substitute
//! `testing::SimStorage` (STYLE habit 13).
//!
//! Runs on the shard that owns the store; every handle is `!Send` and used by one executor.
//! Writes take whole aligned buffers at aligned positions; the alignment comes from the file
//! (`DmaFile::alignment()`), never from a constant. Retention reads file modification times
//! and the disk usage through the same seam, so tests can age files and fill the disk.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

/// A buffer that can be handed to [`StorageFile::write_at`].
pub trait IoBuffer {
    /// The bytes to fill before writing.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Its length in bytes.
    fn byte_len(&self) -> usize;
}

/// Space of the file system holding a path, counted as `df` does: `used_bytes` are the blocks
/// in use, `total_bytes` those plus the ones an unprivileged writer may still use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

impl DiskUsage {
    /// `percent` % of a 100 GiB disk in use (tests).
    pub fn percent(percent: u32) -> DiskUsage {
        assert!(percent <= 100, "{percent}% used");
        let total_bytes = 100 << 30;
        DiskUsage {
            used_bytes: total_bytes / 100 * u64::from(percent),
            total_bytes,
        }
    }

    /// Whether more than `percent` % is used (exact integer arithmetic, no rounding).
    pub fn above(&self, percent: u32) -> bool {
        u128::from(self.used_bytes) * 100 > u128::from(self.total_bytes) * u128::from(percent)
    }

    /// The used share in whole percent, rounded down.
    pub fn used_percent(&self) -> u32 {
        match self.total_bytes {
            0 => 100,
            t => (u128::from(self.used_bytes.min(t)) * 100 / u128::from(t)) as u32,
        }
    }

    /// The fuller of two file systems (by used share).
    pub fn fuller(self, other: DiskUsage) -> DiskUsage {
        let mine = u128::from(self.used_bytes) * u128::from(other.total_bytes);
        let theirs = u128::from(other.used_bytes) * u128::from(self.total_bytes);
        if theirs > mine {
            other
        } else {
            self
        }
    }
}

/// One open file. Positions and lengths of writes are multiples of [`StorageFile::alignment`].
// The futures are deliberately not `Send`: a file belongs to one executor (thread-per-core).
#[allow(async_fn_in_trait)]
pub trait StorageFile: 'static {
    /// The aligned buffer type writes consume.
    type Buffer: IoBuffer;

    /// I/O alignment of this file in bytes (a power of two).
    fn alignment(&self) -> u64;
    /// An aligned buffer of `len` bytes (a multiple of the alignment), contents unspecified.
    fn alloc_buffer(&self, len: usize) -> Self::Buffer;
    /// Writes the whole buffer at `pos` (aligned); a short write is an error.
    async fn write_at(&self, buf: Self::Buffer, pos: u64) -> io::Result<()> {
        self.write_shared_at(Rc::new(buf), pos).await
    }
    /// [`StorageFile::write_at`] of a buffer the caller keeps: the write shares it until it
    /// completes; then the caller may reuse it (a pool, or one buffer of zeros written many
    /// times).
    async fn write_shared_at(&self, buf: Rc<Self::Buffer>, pos: u64) -> io::Result<()>;
    /// [`StorageFile::write_shared_at`], handed to the device at once rather than when the
    /// executor next polls its rings (after the tasks ready to run): for a write that others
    /// wait on while the executor has more work queued. Costs a system call of its own.
    async fn write_shared_at_now(&self, buf: Rc<Self::Buffer>, pos: u64) -> io::Result<()> {
        self.write_shared_at(buf, pos).await
    }
    /// Reads up to `len` bytes at `pos` (any alignment); shorter only at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    /// Makes every completed write (and the file size) durable.
    async fn fdatasync(&self) -> io::Result<()>;
    /// Allocates blocks for `[0, size)` and sets the size to at least `size`.
    async fn pre_allocate(&self, size: u64) -> io::Result<()>;
    /// Sets the file size.
    async fn truncate(&self, size: u64) -> io::Result<()>;
    /// Makes `[pos, pos + len)` read as zeros without changing the size (punches a hole).
    async fn zero_range(&self, pos: u64, len: u64) -> io::Result<()>;
    /// The file size in bytes.
    async fn file_size(&self) -> io::Result<u64>;
    /// When the file's data last changed, in ms since the Unix epoch (retention ages by it).
    async fn modified_ms(&self) -> io::Result<i64>;
}

/// A file system: the directory operations of the store. Cheap to clone (a handle).
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    /// Its open file type.
    type File: StorageFile;

    /// Opens `path` for reading and writing, creating it (empty) when `create` is set.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// [`Storage::open`] with every write through the handle durable when it completes
    /// (O_DSYNC): its data and whatever metadata reading it back needs. No fdatasync needed
    /// after it; the handle's other calls are unchanged.
    async fn open_dsync(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// Removes a file.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names of the entries of a directory (`NotFound` when it does not exist).
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Creates a directory and its parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, removed, renamed files) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    async fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a file or directory exists.
    async fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Space of the file system holding `path` (which must exist).
    async fn disk_usage(&self, path: &Path) -> io::Result<DiskUsage>;
}

/// [`Storage`] on the local file system through glommio `DmaFile`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage;

/// A glommio `DmaFile`.
pub struct DmaStorageFile {
    file: Rc<DmaFile>,
}

/// An aligned buffer from the executor's registered DMA memory (or, when that is used up,
/// from the heap).
impl IoBuffer for DmaBuffer {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }

    fn byte_len(&self) -> usize {
        self.len()
    }
}

/// A write of `len` bytes at `pos` that wrote `written`: a short one is an error.
fn whole_write(written: usize, len: usize, pos: u64) -> io::Result<()> {
    if written != len {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {len} bytes at {pos}"),
        ));
    }
    Ok(())
}

impl StorageFile for DmaStorageFile {
    type Buffer = DmaBuffer;

    fn alignment(&self) -> u64 {
        self.file.alignment()
    }

    fn alloc_buffer(&self, len: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(len)
    }

    async fn write_shared_at(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        let len = buf.len();
        let written = self.file.write_rc_at(buf, pos).await?;
        whole_write(written, len, pos)
    }

    async fn write_shared_at_now(&self, buf: Rc<DmaBuffer>, pos: u64) -> io::Result<()> {
        let len = buf.len();
        let written = self.file.write_rc_at_now(buf, pos).await?;
        whole_write(written, len, pos)
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        // glommio reads into its own aligned buffer; the one copy into `Bytes` lets callers
        // slice and keep the result without holding DMA memory.
        let read = self.file.read_at(pos, len).await?;
        Ok(Bytes::copy_from_slice(&read))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        Ok(self.file.fdatasync().await?)
    }

    async fn pre_allocate(&self, size: u64) -> io::Result<()> {
        Ok(self.file.pre_allocate(size, false).await?)
    }

    async fn truncate(&self, size: u64) -> io::Result<()> {
        Ok(self.file.truncate(size).await?)
    }

    async fn zero_range(&self, pos: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        Ok(self.file.deallocate(pos, len).await?)
    }

    async fn file_size(&self) -> io::Result<u64> {
        Ok(self.file.file_size().await?)
    }

    async fn modified_ms(&self) -> io::Result<i64> {
        // Blocking fstat, inline: it is answered from the in-memory inode of a file we hold
        // open and never waits for the device; retention calls it for a few files per pass.
        // SAFETY: `st` is a valid, writable `stat` and the descriptor is open while `self` is.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.file.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.st_mtime * 1000 + st.st_mtime_nsec / 1_000_000)
    }
}

/// glommio decides once per block device whether O_DIRECT I/O may go through its polled ring,
/// by reading the first block of the first `DmaFile` opened on that device. An empty file
/// answers that read at EOF without touching the device, so glommio concludes "yes", and on
/// devices without polled queues (virtio disks, for one) every later read then fails with
/// EOPNOTSUPP. Before the first open on a device we therefore open a file holding one block
/// of data so that the probe reaches the device. glommio keeps that decision per thread (its
/// device map is thread-local), so every executor thread primes each device once. Blocking
/// calls: once per device per executor thread.
async fn prime_iopoll_probe(dir: &Path) -> io::Result<()> {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    thread_local!(static PRIMED: RefCell<HashSet<u64>> = RefCell::new(HashSet::new()));
    /// Makes probe file names unique across the threads of this process.
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let dev = std::fs::metadata(dir)?.dev();
    if PRIMED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let probe = dir.join(format!(".ringmq-dio-probe-{}-{n}", std::process::id()));
    std::fs::write(&probe, vec![0u8; 64 * 1024])?;
    let opened = DmaFile::open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    opened?.close().await?;
    PRIMED.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

async fn dma_open(path: &Path, create: bool, flags: libc::c_int) -> io::Result<DmaStorageFile> {
    prime_iopoll_probe(path.parent().unwrap_or(Path::new("."))).await?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(flags)
        .dma_open(path)
        .await?;
    Ok(DmaStorageFile {
        file: Rc::new(file),
    })
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<DmaStorageFile> {
        dma_open(path, create, 0).await
    }

    async fn open_dsync(&self, path: &Path, create: bool) -> io::Result<DmaStorageFile> {
        dma_open(path, create, libc::O_DSYNC).await
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        Ok(glommio::io::remove(path).await?)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        Ok(glommio::io::rename(from, to).await?)
    }

    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        // Blocking readdir: called only while opening and recovering a store, on directories
        // of a few entries per segment or queue, before the shard serves requests.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Blocking mkdir: at open, or once per new consume queue from the background flusher.
        std::fs::create_dir_all(path)
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let dir = glommio::io::Directory::open(path).await?;
        dir.sync().await?;
        Ok(dir.close().await?)
    }

    async fn remove_dir(&self, path: &Path) -> io::Result<()> {
        // Blocking rmdir of an empty directory: once per queue of a topic an admin deletes.
        std::fs::remove_dir(path)
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        // Blocking stat: at open only.
        match std::fs::metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn disk_usage(&self, path: &Path) -> io::Result<DiskUsage> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // Blocking statvfs, inline: the kernel answers it from the superblock it keeps in
        // memory; called once or twice per retention pass (every `cleanResourceInterval`).
        // SAFETY: `c_path` is NUL-terminated and `st` a valid, writable `statvfs`.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let used_bytes = st.f_blocks.saturating_sub(st.f_bfree) * st.f_frsize;
        let total_bytes = used_bytes + st.f_bavail * st.f_frsize;
        Ok(DiskUsage {
            used_bytes,
            total_bytes,
        })
    }
}
