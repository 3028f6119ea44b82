//! The checkpoint of one shard (`checkpoint/<shard>`): the offsets recovery may start from.
//! ringmq's own small format (Java's 4 KiB three-timestamp file does not fit a sharded,
//! offset-based recovery): magic, the durable commitlog offset, the offset below which every
//! consume-queue unit is durable, the offset below which every record is in a sealed index
//! file, the last store timestamp, and a CRC-32C. Written only after the fsyncs it vouches
//! for, to a temporary file that is fsynced and renamed over the old one (never torn).
//!
//! Also the other small files of the store root: the shard count and the `abort` marker.

use std::io;
use std::path::Path;

use super::error::{StoreError, StoreResult};
use super::io::{IoBuffer, Storage, StorageFile};

const MAGIC: &[u8; 8] = b"RMQCKPT1";
const BYTES: usize = 8 + 8 * 4 + 4;

/// What a checkpoint vouches for (offsets in the shard's commitlog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Everything below is durable in the commitlog.
    pub commitlog_flushed: u64,
    /// Every consume-queue unit of a record below this is durable.
    pub consume_queue_safe: u64,
    /// Every record below this is in a sealed index file.
    pub index_safe: u64,
    /// Store timestamp of the last record appended.
    pub last_store_timestamp: i64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; BYTES] {
        let mut out = [0u8; BYTES];
        out[..8].copy_from_slice(MAGIC);
        out[8..16].copy_from_slice(&self.commitlog_flushed.to_be_bytes());
        out[16..24].copy_from_slice(&self.consume_queue_safe.to_be_bytes());
        out[24..32].copy_from_slice(&self.index_safe.to_be_bytes());
        out[32..40].copy_from_slice(&self.last_store_timestamp.to_be_bytes());
        let crc = crc32c::crc32c(&out[..40]);
        out[40..44].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() < BYTES || &b[..8] != MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes(b[40..44].try_into().ok()?);
        if crc32c::crc32c(&b[..40]) != crc {
            return None;
        }
        let u = |at: usize| b[at..at + 8].try_into().ok().map(u64::from_be_bytes);
        Some(Checkpoint {
            commitlog_flushed: u(8)?,
            consume_queue_safe: u(16)?,
            index_safe: u(24)?,
            last_store_timestamp: u(32)? as i64,
        })
    }

    /// Reads the checkpoint; `None` when missing or unreadable (then recovery scans all).
    pub async fn read<S: Storage>(storage: &S, path: &Path) -> StoreResult<Option<Checkpoint>> {
        match read_small_file(storage, path).await {
            Ok(Some(bytes)) => {
                let ck = Checkpoint::decode(&bytes);
                if ck.is_none() {
                    tracing::warn!(path = %path.display(), "ignoring a corrupt checkpoint");
                }
                Ok(ck)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::io("reading", path, e)),
        }
    }

    /// Writes the checkpoint durably (temporary file, fsync, rename, directory fsync).
    pub async fn write<S: Storage>(&self, storage: &S, path: &Path) -> StoreResult<()> {
        write_small_file(storage, path, &self.encode())
            .await
            .map_err(|e| StoreError::io("writing", path, e))
    }
}

/// Reads a small file whole; `None` when it does not exist.
pub(crate) async fn read_small_file<S: Storage>(
    storage: &S,
    path: &Path,
) -> io::Result<Option<Vec<u8>>> {
    let file = match storage.open(path, false).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.file_size().await?;
    Ok(Some(file.read_at(0, size as usize).await?.to_vec()))
}

/// Replaces `path` with `content` durably: write a temporary file in aligned blocks, cut it
/// to the content length, fsync, rename over `path`, fsync the directory.
pub(crate) async fn write_small_file<S: Storage>(
    storage: &S,
    path: &Path,
    content: &[u8],
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    storage.create_dir_all(dir).await?;
    // Unique per call: shards opening at once may write the same file (the shard count).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let file = storage.open(&tmp, true).await?;
    let align = file.alignment() as usize;
    let mut buf = file.alloc_buffer(content.len().div_ceil(align).max(1) * align);
    let slice = buf.as_mut_slice();
    slice.fill(0);
    slice[..content.len()].copy_from_slice(content);
    file.write_at(buf, 0).await?;
    file.truncate(content.len() as u64).await?;
    file.fdatasync().await?;
    storage.rename(&tmp, path).await?;
    storage.sync_dir(dir).await
}

/// Checks (or, for a new store, records) the shard count in `<root>/shard_count`. Refuses a
/// store made with another count, also when the file is missing but the commitlog has a
/// shard directory the configured count would not own.
pub(crate) async fn check_shard_count<S: Storage>(
    storage: &S,
    root: &Path,
    commitlog_root: &Path,
    configured: u32,
) -> StoreResult<()> {
    let path = root.join("shard_count");
    let mismatch = |found: u32| StoreError::ShardCountMismatch {
        root: root.to_path_buf(),
        found,
        configured,
    };
    let content = read_small_file(storage, &path)
        .await
        .map_err(|e| StoreError::io("reading", &path, e))?;
    if let Some(bytes) = content {
        let text = String::from_utf8_lossy(&bytes);
        let found: u32 = text.trim().parse().map_err(|_| StoreError::Config {
            reason: format!("{} holds {text:?}, not a shard count", path.display()),
        })?;
        return if found == configured {
            Ok(())
        } else {
            Err(mismatch(found))
        };
    }
    let shards = match storage.list_dir(commitlog_root).await {
        Ok(names) => names.iter().filter_map(|n| n.parse::<u32>().ok()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::io("listing", commitlog_root, e)),
    };
    if let Some(max) = shards.iter().max() {
        if *max >= configured {
            return Err(mismatch(max + 1));
        }
    }
    write_small_file(storage, &path, format!("{configured}\n").as_bytes())
        .await
        .map_err(|e| StoreError::io("writing", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimStorage;

    #[test]
    fn checkpoint_round_trips_and_rejects_corruption() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(4);
            let path = Path::new("/s/checkpoint/0");
            assert_eq!(Checkpoint::read(&sim, path).await.unwrap(), None);
            let ck = Checkpoint {
                commitlog_flushed: 10,
                consume_queue_safe: 9,
                index_safe: 8,
                last_store_timestamp: 7,
            };
            ck.write(&sim, path).await.unwrap();
            assert_eq!(Checkpoint::read(&sim, path).await.unwrap(), Some(ck));
            sim.write_raw(path, 9, &[0xFF]);
            assert_eq!(Checkpoint::read(&sim, path).await.unwrap(), None);
        });
    }

    #[test]
    fn another_shard_count_is_refused() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(5);
            let (root, cl) = (Path::new("/s"), Path::new("/s/commitlog"));
            check_shard_count(&sim, root, cl, 4).await.unwrap();
            check_shard_count(&sim, root, cl, 4).await.unwrap();
            let err = check_shard_count(&sim, root, cl, 2).await.unwrap_err();
            assert!(matches!(
                err,
                StoreError::ShardCountMismatch {
                    found: 4,
                    configured: 2,
                    ..
                }
            ));
            assert!(err.to_string().contains("shardCount=4"), "{err}");
            let other = SimStorage::new(6);
            other
                .create_dir_all(Path::new("/s/commitlog/3"))
                .await
                .unwrap();
            let err = check_shard_count(&other, root, cl, 2).await.unwrap_err();
            assert!(matches!(
                err,
                StoreError::ShardCountMismatch { found: 4, .. }
            ));
        });
    }
}
