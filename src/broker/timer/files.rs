//! The timer store's files, under `<storePathRootDir>/timer/<shard>/`:
//!
//! ```text
//! <bucket start ms>   entries of 16 bytes (TIMER_OUT_MS i64 LE, timer queue offset i64 LE),
//!                     appended in intake order; a torn last entry is ignored
//! checkpoint          one line: `ringmq-timer 1 <enqueue_next> <out|-> <qo|-> <commitlog_pos>`
//! ```
//!
//! Plain blocking file calls: the service runs each on a blocking thread
//! (`spawn_blocking`), never on the shard's thread. Bucket files are rebuilt from the timer
//! queue from the checkpoint on, so they need to be durable only up to what the checkpoint
//! covers: the service syncs them before saving it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::wheel::{Checkpoint, Key};

const ENTRY_BYTES: usize = 16;
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";
const MAGIC: &str = "ringmq-timer 1";

/// The directory of one shard's timer files.
pub fn dir(store_root: &Path, shard: usize) -> PathBuf {
    store_root.join("timer").join(shard.to_string())
}

fn bucket_path(dir: &Path, bucket: i64) -> PathBuf {
    dir.join(bucket.to_string())
}

/// Creates the directory; returns the bucket files in it.
pub fn open(dir: &Path) -> io::Result<Vec<i64>> {
    fs::create_dir_all(dir)?;
    let mut buckets = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(b) = name.to_str().and_then(|n| n.parse::<i64>().ok()) {
            buckets.push(b);
        }
    }
    buckets.sort_unstable();
    Ok(buckets)
}

/// Appends entries to their bucket files.
pub fn append(dir: &Path, groups: &[(i64, Vec<Key>)]) -> io::Result<()> {
    for (bucket, keys) in groups {
        let mut bytes = Vec::with_capacity(keys.len() * ENTRY_BYTES);
        for (out, qo) in keys {
            bytes.extend_from_slice(&out.to_le_bytes());
            bytes.extend_from_slice(&qo.to_le_bytes());
        }
        let path = bucket_path(dir, *bucket);
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A torn entry left by a crash would shift every later one: start on a boundary.
        let len = file.metadata()?.len();
        if len % ENTRY_BYTES as u64 != 0 {
            file.set_len(len - len % ENTRY_BYTES as u64)?;
        }
        file.write_all(&bytes)?;
    }
    Ok(())
}

/// Makes the given bucket files (and the directory's entries) durable.
pub fn sync(dir: &Path, buckets: &[i64]) -> io::Result<()> {
    for bucket in buckets {
        match File::open(bucket_path(dir, *bucket)) {
            Ok(f) => f.sync_data()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    File::open(dir)?.sync_all()
}

/// The entries of a bucket file (a missing file has none).
pub fn read(dir: &Path, bucket: i64) -> io::Result<Vec<Key>> {
    let bytes = match fs::read(bucket_path(dir, bucket)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let word = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
    Ok(bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|e| (word(&e[..8]), word(&e[8..])))
        .collect())
}

/// Removes bucket files.
pub fn remove(dir: &Path, buckets: &[i64]) -> io::Result<()> {
    for bucket in buckets {
        match fs::remove_file(bucket_path(dir, *bucket)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The saved checkpoint; `Ok(None)` when there is none yet, `Err` when it does not parse.
pub fn load_checkpoint(dir: &Path) -> io::Result<Option<Checkpoint>> {
    let text = match fs::read_to_string(dir.join(CHECKPOINT)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    parse_checkpoint(&text)
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}")))
}

fn parse_checkpoint(text: &str) -> Option<Checkpoint> {
    let rest = text.trim_end().strip_prefix(MAGIC)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let [next, out, qo, pos] = fields[..] else {
        return None;
    };
    let delivered = match (out, qo) {
        ("-", "-") => None,
        (o, q) => Some((o.parse().ok()?, q.parse().ok()?)),
    };
    Some(Checkpoint {
        enqueue_next: next.parse().ok()?,
        delivered,
        commitlog_pos: pos.parse().ok()?,
    })
}

fn format_checkpoint(c: &Checkpoint) -> String {
    let (out, qo) = c
        .delivered
        .map_or(("-".to_string(), "-".to_string()), |(o, q)| {
            (o.to_string(), q.to_string())
        });
    format!(
        "{MAGIC} {} {out} {qo} {}\n",
        c.enqueue_next, c.commitlog_pos
    )
}

/// Saves the checkpoint durably (temp file, fsync, rename, directory fsync).
pub fn save_checkpoint(dir: &Path, c: &Checkpoint) -> io::Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(format_checkpoint(c).as_bytes())?;
    file.sync_data()?;
    fs::rename(&tmp, dir.join(CHECKPOINT))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_checkpoints_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = dir(tmp.path(), 1);
        assert!(open(&d).expect("open").is_empty());
        assert_eq!(load_checkpoint(&d).expect("none"), None);
        append(
            &d,
            &[(60_000, vec![(60_001, 1), (60_002, 2)]), (0, vec![(5, 3)])],
        )
        .expect("append");
        // A torn entry at the end is cut before the next append and never read.
        let path = bucket_path(&d, 60_000);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&[7; 5]))
            .expect("torn");
        assert_eq!(read(&d, 60_000).expect("read").len(), 2);
        append(&d, &[(60_000, vec![(60_003, 4)])]).expect("append");
        assert_eq!(
            read(&d, 60_000).expect("read"),
            vec![(60_001, 1), (60_002, 2), (60_003, 4)]
        );
        sync(&d, &[0, 60_000, 120_000]).expect("sync");
        assert_eq!(open(&d).expect("open"), vec![0, 60_000]);
        for c in [
            Checkpoint {
                enqueue_next: 4,
                delivered: Some((60_001, 1)),
                commitlog_pos: 1 << 40,
            },
            Checkpoint {
                enqueue_next: 0,
                delivered: None,
                commitlog_pos: 0,
            },
        ] {
            save_checkpoint(&d, &c).expect("save");
            assert_eq!(load_checkpoint(&d).expect("load"), Some(c));
        }
        fs::write(d.join(CHECKPOINT), "garbage").expect("write");
        assert!(load_checkpoint(&d).is_err());
        remove(&d, &[0, 60_000]).expect("remove");
        assert!(open(&d).expect("open").is_empty());
    }
}
