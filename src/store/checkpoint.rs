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

/// The store format this version writes: physical offsets carry the shard in bits 45–52.
/// Stores from before it (no format line) put the shard in bits 56–63.
pub const STORE_FORMAT: u32 = 2;
const FORMAT_WORD: &str = "store-format";

/// Checks (or, for a new store, records) the shard count and the store format in
/// `<root>/shard_count` (`<count>\nstore-format <n>\n`). Refuses a store made with another
/// count, also when the file is missing but the commitlog has a shard directory the
/// configured count would not own. A store from before the format line is upgraded in place
/// when nothing in shards 1 and up was written with the old offset layout (shard 0's offsets
/// are the same in both), and refused with [`StoreError::OldOffsetLayout`] otherwise: it is
/// never misread. (A ringmq from before the format line refuses the two-line file rather than
/// misread this layout.)
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
    let format = match content {
        Some(bytes) => {
            let (found, format) = parse_shard_count(&path, &bytes)?;
            if found != configured {
                return Err(mismatch(found));
            }
            format
        }
        None => {
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
            None
        }
    };
    match format {
        Some(STORE_FORMAT) => return Ok(()),
        Some(other) => {
            return Err(StoreError::Config {
                reason: format!(
                    "{} says store format {other}; this ringmq reads format {STORE_FORMAT} \
                     (and upgrades stores from before the format was recorded)",
                    path.display()
                ),
            })
        }
        None => {}
    }
    let shards = old_layout_shards(storage, root, commitlog_root, configured).await?;
    if !shards.is_empty() {
        return Err(StoreError::OldOffsetLayout {
            root: root.to_path_buf(),
            shards,
        });
    }
    let content = format!("{configured}\n{FORMAT_WORD} {STORE_FORMAT}\n");
    write_small_file(storage, &path, content.as_bytes())
        .await
        .map_err(|e| StoreError::io("writing", &path, e))
}

/// Parses `<count>` and an optional `store-format <n>` line.
fn parse_shard_count(path: &Path, bytes: &[u8]) -> StoreResult<(u32, Option<u32>)> {
    let text = String::from_utf8_lossy(bytes);
    let bad = || StoreError::Config {
        reason: format!("{} holds {text:?}, not a shard count", path.display()),
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let count = lines.next().and_then(|l| l.parse().ok()).ok_or_else(bad)?;
    let format = match lines.next() {
        None => None,
        Some(line) => match line.split_once(' ') {
            Some((FORMAT_WORD, n)) => Some(n.trim().parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        },
    };
    Ok((count, format))
}

/// The shards (1 and up) of a store from before the format line whose commitlog, consume
/// queues or index hold anything: their offsets carry the shard in bits 56–63.
async fn old_layout_shards<S: Storage>(
    storage: &S,
    root: &Path,
    commitlog_root: &Path,
    shard_count: u32,
) -> StoreResult<Vec<u32>> {
    let mut found = Vec::new();
    for shard in 1..shard_count {
        let name = shard.to_string();
        let places = [
            (commitlog_root.join(&name), 0),
            (root.join("consumequeue").join(&name), 2),
            (root.join("index").join(&name), 0),
        ];
        for (dir, depth) in places {
            if holds_data(storage, &dir, depth).await? {
                found.push(shard);
                break;
            }
        }
    }
    Ok(found)
}

/// Whether a file `depth` directories below `dir` starts with anything but zeros (commitlog
/// segments are preallocated: an unwritten one reads as zeros).
async fn holds_data<S: Storage>(storage: &S, dir: &Path, depth: u32) -> StoreResult<bool> {
    let names = match storage.list_dir(dir).await {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io("listing", dir, e)),
    };
    for name in names.iter().filter(|n| !n.starts_with('.')) {
        let path = dir.join(name);
        let data = match depth {
            0 => file_starts_with_data(storage, &path).await?,
            _ => Box::pin(holds_data(storage, &path, depth - 1)).await?,
        };
        if data {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn file_starts_with_data<S: Storage>(storage: &S, path: &Path) -> StoreResult<bool> {
    let file = storage
        .open(path, false)
        .await
        .map_err(|e| StoreError::io("opening", path, e))?;
    let size = file
        .file_size()
        .await
        .map_err(|e| StoreError::io("stat", path, e))?;
    // A record header, a queue unit or an index header.
    let head = file
        .read_at(0, size.min(64) as usize)
        .await
        .map_err(|e| StoreError::io("reading", path, e))?;
    Ok(head.iter().any(|b| *b != 0))
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
