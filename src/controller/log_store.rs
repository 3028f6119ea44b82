//! The controller's Raft log and snapshot on disk, in `controllerStorePath`, and the
//! [`raft::Storage`] raft-rs reads them through.
//!
//! Files:
//! - `controller.json`: the group, this node's id and the peers the store was created for; a
//!   store of another group is refused at start-up.
//! - `raft.log`: append-only records `[len u32][crc32c u32][kind u8][payload]` (little endian;
//!   the CRC covers kind and payload). Kind 1 is one Raft entry (protobuf), kind 2 the hard
//!   state (term, vote, commit). A later entry at an index at or below the last one replaces
//!   the suffix from there, as Raft truncates a follower's conflicting tail. Each ready's
//!   records are written and fdatasync'ed before its messages are sent.
//! - `snapshot`: `[crc32c u32][Snapshot protobuf]`, the state machine at an index, written to
//!   a temporary file, synced and renamed. After a snapshot `raft.log` is rewritten (same way)
//!   with only the entries after it.
//!
//! A record whose CRC does not match, or a record kind that does not exist, is corruption: the
//! store is refused with an error naming the file and the record's offset, never reset. An
//! incomplete last record (the length runs past the end of the file) is a write cut short by a
//! crash before its fdatasync returned, so nothing it held was acknowledged or voted on: it is
//! cut off with a warning.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use serde::{Deserialize, Serialize};

const LOG_FILE: &str = "raft.log";
const SNAPSHOT_FILE: &str = "snapshot";
const META_FILE: &str = "controller.json";
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
/// Bound on one record (an entry carries one small command; a bigger length is corruption).
const RECORD_MAX_BYTES: usize = 64 << 20;

/// Why the store cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is corrupted at offset {offset}: {what}; refusing to start (restore the file or remove the store to rejoin as an empty member)")]
    Corrupted {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path} belongs to controller group {found:?}, not {expected:?} (controllerDLegerGroup); point controllerStorePath at this group's store")]
    OtherGroup {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path} was created for node {found:?}, not {expected:?} (controllerDLegerSelfId)")]
    OtherNode {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Meta {
    group: String,
    self_id: String,
}

/// The Raft log and snapshot of one controller: in memory for raft-rs, on disk for restarts.
pub struct LogStore {
    dir: PathBuf,
    log: File,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl LogStore {
    /// Opens (or creates) the store in `dir` for `group`/`self_id`; `voters` is the static
    /// membership (raft ids). Refuses another group's store and a corrupted one.
    pub fn open(
        dir: &Path,
        group: &str,
        self_id: &str,
        voters: &[u64],
    ) -> Result<LogStore, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let meta_path = dir.join(META_FILE);
        let expected = Meta {
            group: group.to_string(),
            self_id: self_id.to_string(),
        };
        match fs::read(&meta_path) {
            Ok(bytes) => {
                let found: Meta =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupted {
                        path: meta_path.clone(),
                        offset: 0,
                        what: e.to_string(),
                    })?;
                if found.group != expected.group {
                    return Err(StoreError::OtherGroup {
                        path: dir.to_path_buf(),
                        found: found.group,
                        expected: expected.group,
                    });
                }
                if found.self_id != expected.self_id {
                    return Err(StoreError::OtherNode {
                        path: dir.to_path_buf(),
                        found: found.self_id,
                        expected: expected.self_id,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let bytes = serde_json::to_vec_pretty(&expected).expect("meta serializes");
                write_atomically(dir, META_FILE, &bytes)?;
            }
            Err(e) => return Err(io_err(&meta_path)(e)),
        }
        let mut snapshot = read_snapshot(dir)?.unwrap_or_default();
        let mut conf_state = snapshot.get_metadata().get_conf_state().clone();
        if conf_state.voters.is_empty() {
            conf_state.voters = voters.to_vec();
            snapshot.mut_metadata().set_conf_state(conf_state.clone());
        }
        let log_path = dir.join(LOG_FILE);
        let (records, good_len, file_len) = read_records(&log_path)?;
        let mut store = LogStore {
            dir: dir.to_path_buf(),
            log: OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(io_err(&log_path))?,
            hard_state: HardState::default(),
            conf_state,
            snapshot,
            entries: Vec::new(),
        };
        let snap_meta = store.snapshot.get_metadata().clone();
        store.hard_state.term = snap_meta.term;
        store.hard_state.commit = snap_meta.index;
        for (offset, kind, payload) in records {
            let corrupted = |what: String| StoreError::Corrupted {
                path: log_path.clone(),
                offset,
                what,
            };
            match kind {
                KIND_ENTRY => {
                    let entry = Entry::parse_from_bytes(&payload)
                        .map_err(|e| corrupted(format!("undecodable entry: {e}")))?;
                    if entry.index <= snap_meta.index {
                        continue;
                    }
                    let first = store.first_index_();
                    if entry.index > store.last_index_() + 1 {
                        return Err(corrupted(format!(
                            "entry {} leaves a gap after {}",
                            entry.index,
                            store.last_index_()
                        )));
                    }
                    store.entries.truncate((entry.index - first) as usize);
                    store.entries.push(entry);
                }
                KIND_HARD_STATE => {
                    store.hard_state = HardState::parse_from_bytes(&payload)
                        .map_err(|e| corrupted(format!("undecodable hard state: {e}")))?;
                }
                other => return Err(corrupted(format!("unknown record kind {other}"))),
            }
        }
        if good_len < file_len {
            tracing::warn!(
                file = %log_path.display(),
                offset = good_len,
                "the controller log ends in an incomplete record (a write cut short by a crash before it was synced); cutting it off"
            );
            store.log.set_len(good_len).map_err(io_err(&log_path))?;
            store.log.sync_all().map_err(io_err(&log_path))?;
        }
        // The commit index never points past the log we have.
        store.hard_state.commit = store.hard_state.commit.min(store.last_index_());
        Ok(store)
    }

    fn first_index_(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last_index_(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    /// The snapshot the store holds (its data is the state machine at its index).
    pub fn snapshot_held(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Entries in `[low, high)` that the store holds (for replay into the state machine).
    pub fn entries_between(&self, low: u64, high: u64) -> Vec<Entry> {
        let first = self.first_index_();
        let low = low.max(first);
        if high <= low {
            return Vec::new();
        }
        self.entries[(low - first) as usize..(high - first) as usize].to_vec()
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Appends `entries` (replacing any suffix they conflict with) and, if given, the new hard
    /// state; synced before returning.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for entry in entries {
            let first = self.first_index_();
            assert!(entry.index >= first, "raft appended a compacted entry");
            self.entries.truncate((entry.index - first) as usize);
            self.entries.push(entry.clone());
            encode_record(
                &mut buf,
                KIND_ENTRY,
                &entry.write_to_bytes().expect("entry encodes"),
            );
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
            encode_record(
                &mut buf,
                KIND_HARD_STATE,
                &hs.write_to_bytes().expect("hard state encodes"),
            );
        }
        let path = self.dir.join(LOG_FILE);
        self.log.write_all(&buf).map_err(io_err(&path))?;
        self.log.sync_data().map_err(io_err(&path))
    }

    /// Records that everything up to `commit` is committed (kept in the hard state).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        if commit > self.hard_state.commit {
            let mut hs = self.hard_state.clone();
            hs.commit = commit;
            self.persist(&[], Some(&hs))?;
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader: the log is replaced by it.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let meta = snapshot.get_metadata();
        self.entries.clear();
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.snapshot = snapshot.clone();
        self.write_snapshot_and_rewrite_log()
    }

    /// Takes a snapshot of the state machine `data` at `index` (applied) and drops the log up
    /// to it.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        if index < self.first_index_() || index > self.last_index_() {
            return Ok(());
        }
        let term = self.term_(index).expect("index is in the log");
        let first = self.first_index_();
        self.entries.drain(..=(index - first) as usize);
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.snapshot = snapshot;
        self.write_snapshot_and_rewrite_log()
    }

    fn write_snapshot_and_rewrite_log(&mut self) -> Result<(), StoreError> {
        let body = self.snapshot.write_to_bytes().expect("snapshot encodes");
        let mut bytes = crc32c::crc32c(&body).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        write_atomically(&self.dir, SNAPSHOT_FILE, &bytes)?;
        let mut log = Vec::new();
        encode_record(
            &mut log,
            KIND_HARD_STATE,
            &self.hard_state.write_to_bytes().expect("encodes"),
        );
        for entry in &self.entries {
            encode_record(
                &mut log,
                KIND_ENTRY,
                &entry.write_to_bytes().expect("encodes"),
            );
        }
        write_atomically(&self.dir, LOG_FILE, &log)?;
        let path = self.dir.join(LOG_FILE);
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(())
    }

    fn term_(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first_index_() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index_() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first_index_()) as usize].term)
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index_() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index_() + 1,
            "entries past the last index"
        );
        let first = self.first_index_();
        let slice = &self.entries[(low - first) as usize..(high - first) as usize];
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        let mut out = Vec::new();
        for e in slice {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

fn encode_record(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let mut digest = crc32c::crc32c(&[kind]);
    digest = crc32c::crc32c_append(digest, payload);
    buf.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
    buf.extend_from_slice(&digest.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
}

/// The records of `path` as (offset, kind, payload), the length of its complete records and
/// the file's length.
#[allow(clippy::type_complexity)]
fn read_records(path: &Path) -> Result<(Vec<(u64, u8, Vec<u8>)>, u64, u64), StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0, 0)),
        Err(e) => return Err(io_err(path)(e)),
    }
    let mut records = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len == 0 || len > RECORD_MAX_BYTES {
            return Err(StoreError::Corrupted {
                path: path.to_path_buf(),
                offset: at as u64,
                what: format!("record length {len} is impossible"),
            });
        }
        if bytes.len() - at - 8 < len {
            break; // incomplete last record
        }
        let body = &bytes[at + 8..at + 8 + len];
        if crc32c::crc32c(body) != crc {
            return Err(StoreError::Corrupted {
                path: path.to_path_buf(),
                offset: at as u64,
                what: "record checksum (crc32c) does not match".to_string(),
            });
        }
        records.push((at as u64, body[0], body[1..].to_vec()));
        at += 8 + len;
    }
    Ok((records, at as u64, bytes.len() as u64))
}

fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, StoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let corrupted = |what: &str| StoreError::Corrupted {
        path: path.clone(),
        offset: 0,
        what: what.to_string(),
    };
    if bytes.len() < 4 {
        return Err(corrupted("shorter than its checksum"));
    }
    let crc = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[4..]) != crc {
        return Err(corrupted("snapshot checksum (crc32c) does not match"));
    }
    Snapshot::parse_from_bytes(&bytes[4..])
        .map(Some)
        .map_err(|e| corrupted(&format!("undecodable snapshot: {e}")))
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Entry::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    #[test]
    fn entries_and_hard_state_survive_reopen_with_truncation_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path(), "g", "n0", &[1, 2, 3]).unwrap();
            let batch: Vec<Entry> = (1..=5).map(|i| entry(i, 1, b"a")).collect();
            s.persist(&batch, Some(&hs(1, 1, 3))).unwrap();
            // A new leader overwrites 4..: the conflicting tail goes.
            s.persist(&[entry(4, 2, b"b")], Some(&hs(2, 2, 3))).unwrap();
        }
        let mut s = LogStore::open(dir.path(), "g", "n0", &[1, 2, 3]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 4));
        assert_eq!(s.term(4).unwrap(), 2);
        let state = s.initial_state().unwrap();
        assert_eq!(
            (
                state.hard_state.term,
                state.hard_state.vote,
                state.hard_state.commit
            ),
            (2, 2, 3)
        );
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        s.compact(3, b"state-at-3".to_vec()).unwrap();
        s.persist(&[entry(5, 2, b"c")], None).unwrap();
        drop(s);
        let s = LogStore::open(dir.path(), "g", "n0", &[1, 2, 3]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (4, 5));
        assert_eq!(s.snapshot_held().get_data(), b"state-at-3");
        assert_eq!(s.term(3).unwrap(), 1);
        assert!(s
            .entries(2, 4, None, GetEntriesContext::empty(false))
            .is_err());
        let got = s
            .entries(4, 6, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn a_corrupted_record_is_refused_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path(), "g", "n0", &[1]).unwrap();
            s.persist(&[entry(1, 1, b"first")], None).unwrap();
            s.persist(&[entry(2, 1, b"second")], None).unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let second = bytes.len() - 3;
        bytes[second] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let err = LogStore::open(dir.path(), "g", "n0", &[1])
            .err()
            .expect("refused");
        let text = err.to_string();
        let (first_len, _) = (
            u32::from_le_bytes(bytes[..4].try_into().unwrap()) as u64 + 8,
            0,
        );
        assert!(text.contains("raft.log"), "{text}");
        assert!(text.contains(&format!("offset {first_len}")), "{text}");
        // Not reset: the file is as it was.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_torn_tail_is_cut_and_another_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = LogStore::open(dir.path(), "g", "n0", &[1]).unwrap();
            s.persist(&[entry(1, 1, b"first")], None).unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let good = fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let s = LogStore::open(dir.path(), "g", "n0", &[1]).unwrap();
        assert_eq!(s.last_index().unwrap(), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
        drop(s);
        let err = LogStore::open(dir.path(), "other", "n0", &[1])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("controller group \"g\""), "{err}");
        let err = LogStore::open(dir.path(), "g", "n1", &[1])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("node \"n0\""), "{err}");
    }
}
