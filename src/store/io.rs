//! The storage seam: the [`Storage`] and [`StorageFile`] traits every store file goes through,
//! and [`DmaStorage`], their implementation on glommio's `DmaFile` (O_DIRECT over io_uring).
//! This is the **only** module where glommio file APIs appear; tests substitute
//! `testing::SimStorage` (STYLE habit 13).
//!
//! Runs on the shard that owns the store; every handle is `!Send` and used by one executor.
//! Writes take whole aligned buffers at aligned positions; the alignment comes from the file
//! (`DmaFile::alignment()`), never from a constant.

use std::io;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

/// A buffer that can be handed to [`StorageFile::write_at`].
pub trait IoBuffer {
    /// The bytes to fill before writing.
    fn as_mut_slice(&mut self) -> &mut [u8];
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
    async fn write_at(&self, buf: Self::Buffer, pos: u64) -> io::Result<()>;
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
}

/// A file system: the directory operations of the store. Cheap to clone (a handle).
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    /// Its open file type.
    type File: StorageFile;

    /// Opens `path` for reading and writing, creating it (empty) when `create` is set.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
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
    /// Whether a file or directory exists.
    async fn exists(&self, path: &Path) -> io::Result<bool>;
}

/// [`Storage`] on the local file system through glommio `DmaFile`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage;

/// A glommio `DmaFile`.
pub struct DmaStorageFile {
    file: Rc<DmaFile>,
}

/// An aligned buffer from the executor's DMA memory.
pub struct DmaIoBuffer(DmaBuffer);

impl IoBuffer for DmaIoBuffer {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

impl StorageFile for DmaStorageFile {
    type Buffer = DmaIoBuffer;

    fn alignment(&self) -> u64 {
        self.file.alignment()
    }

    fn alloc_buffer(&self, len: usize) -> DmaIoBuffer {
        DmaIoBuffer(self.file.alloc_dma_buffer(len))
    }

    async fn write_at(&self, buf: DmaIoBuffer, pos: u64) -> io::Result<()> {
        let len = buf.0.len();
        let written = self.file.write_at(buf.0, pos).await?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at {pos}"),
            ));
        }
        Ok(())
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
}

/// glommio decides once per block device whether O_DIRECT I/O may go through its polled ring,
/// by reading the first block of the first `DmaFile` opened on that device. An empty file
/// answers that read at EOF without touching the device, so glommio concludes "yes", and on
/// devices without polled queues (virtio disks, for one) every later read then fails with
/// EOPNOTSUPP. Before the first open on a device we therefore open a file holding one block
/// of data so that the probe reaches the device. Blocking calls: once per device per process.
async fn prime_iopoll_probe(dir: &Path) -> io::Result<()> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    static PRIMED: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
    let dev = std::fs::metadata(dir)?.dev();
    let primed = |insert: bool| {
        let mut guard = PRIMED.lock().unwrap_or_else(|p| p.into_inner());
        let set = guard.get_or_insert_with(HashSet::new);
        if insert {
            set.insert(dev)
        } else {
            set.contains(&dev)
        }
    };
    if primed(false) {
        return Ok(());
    }
    let probe = dir.join(format!(".ringmq-dio-probe-{}", std::process::id()));
    std::fs::write(&probe, vec![0u8; 64 * 1024])?;
    let opened = DmaFile::open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    opened?.close().await?;
    primed(true);
    Ok(())
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<DmaStorageFile> {
        prime_iopoll_probe(path.parent().unwrap_or(Path::new("."))).await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await?;
        Ok(DmaStorageFile {
            file: Rc::new(file),
        })
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

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        // Blocking stat: at open only.
        match std::fs::metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
