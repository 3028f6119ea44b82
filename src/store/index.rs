//! The message index by key: `topic#KEYS-token` and `topic#UNIQ_KEY` (STORE.md §4) mapped to
//! physical offsets and store times. ringmq's own format (Java's 420 MB hash files are not
//! required): the newest entries live in an in-memory hash map (the *active* index); when it
//! holds [`INDEX_ACTIVE_ENTRIES_MAX`] entries it is frozen and written once as a sealed file
//! `index/<shard>/<20-digit first offset>` — a header block, the entries sorted by key hash in
//! 4 KiB blocks, and a fence (first hash of every block) that is kept in memory.
//!
//! Memory bound: the active map (≤ `INDEX_ACTIVE_ENTRIES_MAX` entries, 36 bytes each,
//! covering at most [`INDEX_SPAN_MAX_BYTES`] of commitlog)
//! plus 8 bytes of fence per 170 sealed entries. While a full map is sealed it is held with
//! its sorted copy and the file's image (about 24 + 24 bytes more per entry) beside the next
//! active map: about 11 MiB per shard at the peak. Only sealed files are durable; recovery
//! rebuilds the active part from the commitlog past the last sealed file, so the index is
//! always rebuildable. Written only by `dispatch`; sealed by the store's background task.
//! Runs on the shard's executor.
//!
//! Retention (STORE.md §4): sealed files whose records all lie below the commitlog's min
//! offset are deleted. Entries still in memory may name removed records; lookups return
//! them as candidates and the reader, which checks every candidate, drops them.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;

use super::error::{StoreError, StoreResult};
use super::io::{IoBuffer, Storage, StorageFile};
use super::segmented::{parse_segment_name, segment_name};

/// Entries the active index holds before it is sealed. 2^17: 4.5 MiB of map per shard. At
/// 2^18 a 2-shard broker sealing both maps at once peaked at 114–120 MiB of RSS under
/// `producer.sh` (README "Broker memory under load (stop 33)").
pub const INDEX_ACTIVE_ENTRIES_MAX: usize = 1 << 17;
/// Commitlog bytes the active index may cover before it is sealed, which bounds what
/// recovery rescans for it.
pub const INDEX_SPAN_MAX_BYTES: u64 = 256 << 20;
/// Block size of sealed index files (a format constant; the I/O alignment must divide it).
const BLOCK_BYTES: usize = 4096;
const ENTRY_BYTES: usize = 24;
const ENTRIES_PER_BLOCK: usize = BLOCK_BYTES / ENTRY_BYTES;
const MAGIC: &[u8; 8] = b"RMQIDX01";
const HEADER_BYTES: usize = 60;

/// FNV-1a 64 of `topic#key`: stable across builds, unlike std's hasher.
pub(crate) fn key_hash(topic: &str, key: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in topic
        .bytes()
        .chain(std::iter::once(b'#'))
        .chain(key.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    h
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub hash: u64,
    pub physical_offset: i64,
    pub store_timestamp: i64,
}

/// Entries for the records of `[begin, end)` (offsets in the shard): a chained hash table in
/// two flat arrays, 32 bytes per entry plus a 4-byte bucket head per possible entry (a
/// `HashMap` of one `Vec` per key took about 80 bytes per entry and one allocation per key).
#[derive(Default)]
struct Active {
    /// In the order added; `next` links the entries of one bucket, newest first.
    slots: Vec<Slot>,
    /// Index of the newest slot of each bucket (`NO_SLOT` when empty); a power of two long,
    /// allocated with the first entry.
    heads: Vec<u32>,
    begin: u64,
    end: u64,
    begin_ts: i64,
    end_ts: i64,
}

/// One entry of the active index.
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    physical_offset: i64,
    store_timestamp: i64,
    next: u32,
}

const NO_SLOT: u32 = u32::MAX;

impl Active {
    fn count(&self) -> usize {
        self.slots.len()
    }

    /// Adds an entry; `capacity` (the sealing threshold) sizes the arrays once.
    fn add(&mut self, hash: u64, physical_offset: i64, store_timestamp: i64, capacity: usize) {
        if self.heads.is_empty() {
            let buckets = capacity.next_power_of_two().max(16);
            self.heads = vec![NO_SLOT; buckets];
            self.slots.reserve_exact(capacity);
        }
        let bucket = self.bucket(hash);
        let at = u32::try_from(self.slots.len()).expect("active index holds < 2^32 entries");
        self.slots.push(Slot {
            hash,
            physical_offset,
            store_timestamp,
            next: self.heads[bucket],
        });
        self.heads[bucket] = at;
    }

    fn bucket(&self, hash: u64) -> usize {
        // Folds the high half in: FNV-1a's low bits alone are weaker.
        ((hash >> 32) ^ hash) as usize & (self.heads.len() - 1)
    }

    /// The (physical offset, store timestamp) of every entry for `hash`.
    fn find(&self, hash: u64, mut each: impl FnMut(i64, i64)) {
        if self.heads.is_empty() {
            return;
        }
        let mut at = self.heads[self.bucket(hash)];
        while at != NO_SLOT {
            let slot = &self.slots[at as usize];
            if slot.hash == hash {
                each(slot.physical_offset, slot.store_timestamp);
            }
            at = slot.next;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    count: u64,
    begin: u64,
    end: u64,
    begin_ts: i64,
    end_ts: i64,
}

/// A sealed file as memory knows it: its header and fence. The file itself is opened only by
/// the lookups that read it, so the files a long retention window keeps (one per
/// [`INDEX_ACTIVE_ENTRIES_MAX`] keys) hold no descriptor each.
struct Sealed {
    /// The file, as named when it was written or found.
    path: PathBuf,
    header: Header,
    fences: Vec<u64>,
}

/// The index of one shard.
pub(crate) struct Index<S: Storage> {
    storage: S,
    dir: PathBuf,
    max_entries: usize,
    active: RefCell<Active>,
    frozen: RefCell<Vec<Rc<Active>>>,
    sealed: RefCell<Vec<Rc<Sealed>>>,
}

impl<S: Storage> Index<S> {
    /// An index under `dir` that seals every `max_entries` entries.
    pub(crate) fn new(storage: S, dir: PathBuf, max_entries: usize) -> Index<S> {
        assert!(max_entries > 0);
        Index {
            storage,
            dir,
            max_entries,
            active: RefCell::new(Active::default()),
            frozen: RefCell::new(Vec::new()),
            sealed: RefCell::new(Vec::new()),
        }
    }

    /// Adds an entry for the record at `pos` (offset in the shard).
    pub(crate) fn add(&self, topic: &str, key: &str, physical: i64, timestamp: i64) {
        let mut a = self.active.borrow_mut();
        if a.count() == 0 {
            a.begin_ts = timestamp;
        }
        a.end_ts = a.end_ts.max(timestamp);
        a.add(key_hash(topic, key), physical, timestamp, self.max_entries);
    }

    /// Records that every record before `end` has been given its entries; freezes the active
    /// map when it is full.
    pub(crate) fn covered_to(&self, end: u64) {
        let mut a = self.active.borrow_mut();
        assert!(end >= a.end, "index end moved back from {} to {end}", a.end);
        a.end = end;
        if a.count() == 0 {
            // Nothing to lose: an empty map may start anywhere, so recovery need not rescan
            // records that had no keys.
            a.begin = end;
        }
        let count = a.count();
        if count >= self.max_entries || (count > 0 && end - a.begin >= INDEX_SPAN_MAX_BYTES) {
            let next = Active {
                begin: end,
                end,
                ..Active::default()
            };
            let full = std::mem::replace(&mut *a, next);
            self.frozen.borrow_mut().push(Rc::new(full));
        }
    }

    /// Restarts the active index at `pos` (recovery: the records from there are re-added).
    pub(crate) fn restart_at(&self, pos: u64) {
        *self.active.borrow_mut() = Active {
            begin: pos,
            end: pos,
            ..Active::default()
        };
    }

    /// Every record below this offset is in a sealed file.
    pub(crate) fn safe_offset(&self) -> u64 {
        match self.frozen.borrow().first() {
            Some(f) => f.begin,
            None => self.active.borrow().begin,
        }
    }

    /// Whether frozen maps wait to be written.
    #[cfg(test)]
    pub(crate) fn has_frozen(&self) -> bool {
        !self.frozen.borrow().is_empty()
    }

    /// Freezes the active map if it holds anything (at close).
    pub(crate) fn freeze_active(&self) {
        let end = self.active.borrow().end;
        let mut a = self.active.borrow_mut();
        if a.count() > 0 {
            let next = Active {
                begin: end,
                end,
                ..Active::default()
            };
            let full = std::mem::replace(&mut *a, next);
            self.frozen.borrow_mut().push(Rc::new(full));
        }
    }

    /// Writes the frozen maps as sealed files.
    pub(crate) async fn seal_frozen(&self) -> StoreResult<()> {
        loop {
            let Some(frozen) = self.frozen.borrow().first().cloned() else {
                return Ok(());
            };
            let sealed = self.write_sealed(&frozen).await?;
            self.sealed.borrow_mut().push(Rc::new(sealed));
            let done = self.frozen.borrow_mut().remove(0);
            drop(frozen);
            // Freeing a full in-memory index (one Vec per key) took tens of milliseconds on the
            // shard thread, stalling every request behind it: it is freed on glommio's
            // blocking-thread pool instead.
            if let Ok(active) = Rc::try_unwrap(done) {
                let free = glommio::executor().spawn_blocking(move || drop(active));
                glommio::spawn_local(free).detach();
            }
        }
    }

    async fn write_sealed(&self, frozen: &Active) -> StoreResult<Sealed> {
        let mut entries: Vec<Entry> = frozen
            .slots
            .iter()
            .map(|s| Entry {
                hash: s.hash,
                physical_offset: s.physical_offset,
                store_timestamp: s.store_timestamp,
            })
            .collect();
        let header = Header {
            count: entries.len() as u64,
            begin: frozen.begin,
            end: frozen.end,
            begin_ts: frozen.begin_ts,
            end_ts: frozen.end_ts,
        };
        // Sorting and encoding up to a full index (hundreds of thousands of entries) is tens of
        // milliseconds of CPU: done on the blocking-thread pool so the shard keeps serving.
        let (fences, image) = glommio::executor()
            .spawn_blocking(move || {
                entries.sort_unstable();
                let image = encode_file(&header, &entries);
                let fences: Vec<u64> = entries
                    .chunks(ENTRIES_PER_BLOCK)
                    .map(|c| c[0].hash)
                    .collect();
                (fences, image)
            })
            .await;
        let path = self.dir.join(segment_name(header.begin));
        self.write_file(&image, &path)
            .await
            .map_err(|e| StoreError::io("writing index", &path, e))?;
        Ok(Sealed {
            path,
            header,
            fences,
        })
    }

    async fn write_file(&self, image: &[u8], path: &std::path::Path) -> io::Result<()> {
        self.storage.create_dir_all(&self.dir).await?;
        let tmp = path.with_extension("tmp");
        let file = self.storage.open(&tmp, true).await?;
        let align = file.alignment() as usize;
        if BLOCK_BYTES % align != 0 {
            return Err(io::Error::other(format!(
                "alignment {align} does not divide 4096"
            )));
        }
        for (i, piece) in image.chunks(1 << 20).enumerate() {
            let mut buf = file.alloc_buffer(piece.len());
            buf.as_mut_slice().copy_from_slice(piece);
            file.write_at(buf, (i << 20) as u64).await?;
        }
        file.fdatasync().await?;
        drop(file);
        self.storage.rename(&tmp, path).await?;
        self.storage.sync_dir(&self.dir).await
    }

    /// Opens the sealed files, dropping leftovers of interrupted writes.
    pub(crate) async fn load(&self) -> StoreResult<()> {
        let names = match self.storage.list_dir(&self.dir).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("listing", &self.dir, e)),
        };
        for name in names {
            let path = self.dir.join(&name);
            if parse_segment_name(&name).is_none() {
                let _ = self.storage.remove(&path).await;
                continue;
            }
            let sealed = self
                .open_sealed(&path)
                .await
                .map_err(|e| StoreError::io("opening index", &path, e))?;
            match sealed {
                Some(s) => self.sealed.borrow_mut().push(Rc::new(s)),
                None => {
                    tracing::warn!(path = %path.display(), "dropping unreadable index file");
                    let _ = self.storage.remove(&path).await;
                }
            }
        }
        let end = self.sealed.borrow().last().map_or(0, |s| s.header.end);
        self.restart_at(end);
        Ok(())
    }

    async fn open_sealed(&self, path: &std::path::Path) -> io::Result<Option<Sealed>> {
        let file = self.storage.open(path, false).await?;
        let head = file.read_at(0, BLOCK_BYTES).await?;
        let Some(header) = decode_header(&head) else {
            return Ok(None);
        };
        let blocks = header.count.div_ceil(ENTRIES_PER_BLOCK as u64) as usize;
        let at = ((1 + blocks) * BLOCK_BYTES) as u64;
        let raw = file.read_at(at, blocks * 8).await?;
        if raw.len() < blocks * 8 {
            return Ok(None);
        }
        let fences = raw.chunks_exact(8).map(be_u64).collect();
        Ok(Some(Sealed {
            path: path.to_path_buf(),
            header,
            fences,
        }))
    }

    /// Drops sealed files that start at or past `end` (their records are gone) and restarts
    /// the active index at `min(safe offset, end)`.
    pub(crate) async fn cut_at(&self, end: u64) -> StoreResult<u64> {
        loop {
            let last = self.sealed.borrow().last().cloned();
            match last {
                Some(s) if s.header.begin >= end => {
                    self.sealed.borrow_mut().pop();
                    let path = s.path.as_path();
                    self.storage
                        .remove(path)
                        .await
                        .map_err(|e| StoreError::io("removing index", path, e))?;
                }
                _ => break,
            }
        }
        let start = self
            .sealed
            .borrow()
            .last()
            .map_or(0, |s| s.header.end)
            .min(end);
        Ok(start)
    }

    /// Retention: removes the sealed files (oldest first) that cover only records below
    /// `clog_min` (an offset in the shard). A lookup that meanwhile finds one gone skips it
    /// (its records are gone too). Returns how many files went.
    pub(crate) async fn remove_below(&self, clog_min: u64) -> StoreResult<usize> {
        let mut removed = 0;
        loop {
            let first = self.sealed.borrow().first().cloned();
            let Some(first) = first.filter(|s| s.header.end <= clog_min) else {
                break;
            };
            let path = first.path.as_path();
            self.storage
                .remove(path)
                .await
                .map_err(|e| StoreError::io("removing index", path, e))?;
            let gone = self.sealed.borrow_mut().remove(0);
            assert!(
                Rc::ptr_eq(&gone, &first),
                "sealed index files changed order"
            );
            removed += 1;
        }
        if removed > 0 {
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|e| StoreError::io("syncing", &self.dir, e))?;
        }
        Ok(removed)
    }

    /// Physical offsets (newest first) of entries for `topic#key` stored in
    /// `[begin_ts, end_ts]`; at most `limit`. Hash collisions are possible: callers check.
    pub(crate) async fn lookup(
        &self,
        topic: &str,
        key: &str,
        begin_ts: i64,
        end_ts: i64,
        limit: usize,
    ) -> StoreResult<Vec<i64>> {
        let hash = key_hash(topic, key);
        let in_range = |t: i64| t >= begin_ts && t <= end_ts;
        let mut found: Vec<i64> = Vec::new();
        let take = |list: &[(i64, i64)], found: &mut Vec<i64>| {
            found.extend(list.iter().filter(|(_, t)| in_range(*t)).map(|(p, _)| *p));
        };
        let mut in_memory = |a: &Active| {
            a.find(hash, |p, t| {
                if in_range(t) {
                    found.push(p);
                }
            })
        };
        in_memory(&self.active.borrow());
        for frozen in self.frozen.borrow().iter().rev() {
            in_memory(frozen);
        }
        let sealed: Vec<_> = self.sealed.borrow().iter().rev().cloned().collect();
        for s in sealed {
            if found.len() >= limit {
                break;
            }
            if s.header.end_ts < begin_ts || s.header.begin_ts > end_ts {
                continue;
            }
            let path = s.path.as_path();
            let file = match self.storage.open(path, false).await {
                Ok(file) => file,
                // Removed by retention since the list was taken: its records are gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("opening index", path, e)),
            };
            let list = lookup_sealed(&file, &s, hash)
                .await
                .map_err(|e| StoreError::io("reading index", path, e))?;
            take(&list, &mut found);
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.dedup();
        found.truncate(limit);
        Ok(found)
    }
}

async fn lookup_sealed<F: StorageFile>(
    file: &F,
    s: &Sealed,
    hash: u64,
) -> io::Result<Vec<(i64, i64)>> {
    let lo = s.fences.partition_point(|f| *f < hash).saturating_sub(1);
    let hi = s.fences.partition_point(|f| *f <= hash);
    let mut out = Vec::new();
    for block in lo..hi {
        let bytes: Bytes = file
            .read_at(((1 + block) * BLOCK_BYTES) as u64, BLOCK_BYTES)
            .await?;
        let n = (s.header.count as usize - block * ENTRIES_PER_BLOCK).min(ENTRIES_PER_BLOCK);
        for e in bytes.chunks_exact(ENTRY_BYTES).take(n) {
            if be_u64(&e[..8]) == hash {
                out.push((be_u64(&e[8..16]) as i64, be_u64(&e[16..24]) as i64));
            }
        }
    }
    Ok(out)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn encode_file(header: &Header, entries: &[Entry]) -> Vec<u8> {
    let blocks = entries.len().div_ceil(ENTRIES_PER_BLOCK);
    let fence_bytes = (blocks * 8).div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    let mut image = vec![0u8; (1 + blocks) * BLOCK_BYTES + fence_bytes];
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(MAGIC);
    for v in [header.count, header.begin, header.end] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h.extend_from_slice(&header.begin_ts.to_be_bytes());
    h.extend_from_slice(&header.end_ts.to_be_bytes());
    h.extend_from_slice(&(blocks as u64).to_be_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_be_bytes());
    image[..HEADER_BYTES].copy_from_slice(&h);
    for (i, block) in entries.chunks(ENTRIES_PER_BLOCK).enumerate() {
        let base = (1 + i) * BLOCK_BYTES;
        for (j, e) in block.iter().enumerate() {
            let at = base + j * ENTRY_BYTES;
            image[at..at + 8].copy_from_slice(&e.hash.to_be_bytes());
            image[at + 8..at + 16].copy_from_slice(&e.physical_offset.to_be_bytes());
            image[at + 16..at + 24].copy_from_slice(&e.store_timestamp.to_be_bytes());
        }
        let fence_at = (1 + blocks) * BLOCK_BYTES + i * 8;
        image[fence_at..fence_at + 8].copy_from_slice(&block[0].hash.to_be_bytes());
    }
    image
}

fn decode_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_BYTES || &b[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes(b[56..60].try_into().ok()?);
    if crc32c::crc32c(&b[..56]) != crc {
        return None;
    }
    let header = Header {
        count: be_u64(&b[8..]),
        begin: be_u64(&b[16..]),
        end: be_u64(&b[24..]),
        begin_ts: be_u64(&b[32..]) as i64,
        end_ts: be_u64(&b[40..]) as i64,
    };
    let blocks = be_u64(&b[48..]);
    (blocks == header.count.div_ceil(ENTRIES_PER_BLOCK as u64)).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimStorage;

    #[test]
    fn the_active_table_finds_every_entry_of_a_key_and_no_other() {
        crate::store::test_support::run(async {
            // 16 buckets for 900 entries of 300 keys: long chains shared by many keys.
            let index = Index::new(SimStorage::new(7), PathBuf::from("/s/index/0"), 1000);
            for i in 0..900i64 {
                index.add("T", &format!("k{}", i % 300), i * 10, 5000 + i);
            }
            index.covered_to(9000);
            assert!(!index.has_frozen());
            assert_eq!(index.active.borrow().heads.len(), 1024);
            for k in [0, 7, 299] {
                let hits = index
                    .lookup("T", &format!("k{k}"), 0, i64::MAX, 10)
                    .await
                    .unwrap();
                assert_eq!(hits, vec![(k + 600) * 10, (k + 300) * 10, k * 10]);
            }
            let ranged = index.lookup("T", "k7", 5300, 5600, 10).await.unwrap();
            assert_eq!(ranged, vec![3070]);
            let missing = index.lookup("T", "k300", 0, i64::MAX, 10).await.unwrap();
            assert!(missing.is_empty());
            let small = Index::new(SimStorage::new(8), PathBuf::from("/s/index/1"), 3);
            for i in 0..3i64 {
                small.add("T", "same", i, i);
            }
            assert_eq!(small.active.borrow().heads.len(), 16);
            let hits = small.lookup("T", "same", 0, 10, 2).await.unwrap();
            assert_eq!(hits, vec![2, 1], "newest first, at most the limit");
        });
    }

    #[test]
    fn sealed_and_active_entries_are_found_and_survive_reopen() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(3);
            let dir = PathBuf::from("/s/index/0");
            let index = Index::new(sim.clone(), dir.clone(), 500);
            for i in 0..1200i64 {
                index.add("T", &format!("k{}", i % 300), i * 100, 1000 + i);
                index.covered_to((i as u64 + 1) * 100);
            }
            assert!(index.has_frozen());
            index.seal_frozen().await.unwrap();
            assert_eq!(index.safe_offset(), 1000 * 100);
            let hits = index.lookup("T", "k7", 0, i64::MAX, 10).await.unwrap();
            assert_eq!(hits, vec![90_700, 60_700, 30_700, 700]);
            let ranged = index.lookup("T", "k7", 1050, 1900, 10).await.unwrap();
            assert_eq!(ranged, vec![60_700, 30_700]);
            assert!(index
                .lookup("U", "k7", 0, i64::MAX, 10)
                .await
                .unwrap()
                .is_empty());
            let reopened = Index::new(sim.clone(), dir.clone(), 500);
            reopened.load().await.unwrap();
            assert_eq!(reopened.safe_offset(), 100_000);
            let hits = reopened.lookup("T", "k7", 0, i64::MAX, 3).await.unwrap();
            assert_eq!(hits, vec![90_700, 60_700, 30_700]);
        });
    }

    #[test]
    fn sealed_files_hold_no_handle_and_a_file_gone_meanwhile_is_skipped() {
        crate::store::test_support::run(async {
            let sim = SimStorage::new(5);
            let dir = PathBuf::from("/s/index/0");
            let index = Index::new(sim.clone(), dir.clone(), 100);
            for i in 0..1000i64 {
                index.add("T", &format!("k{}", i % 50), i * 100, 1000 + i);
                index.covered_to((i as u64 + 1) * 100);
            }
            index.seal_frozen().await.unwrap();
            assert_eq!(index.sealed.borrow().len(), 10);
            // Ten sealed files, none of them open: the files a long retention window keeps
            // cost no descriptor each.
            assert_eq!(sim.open_handles(), 0);
            let hits = index.lookup("T", "k3", 0, i64::MAX, 100).await.unwrap();
            assert_eq!(hits.len(), 20);
            assert_eq!(sim.open_handles(), 0, "a lookup closes what it opened");
            // A file removed behind the index's back (as retention may between a lookup's
            // list and its open) is skipped: its records are gone too.
            sim.remove(&dir.join(segment_name(0))).await.unwrap();
            let hits = index.lookup("T", "k3", 0, i64::MAX, 100).await.unwrap();
            assert_eq!(hits.len(), 18);
            assert!(hits.iter().all(|p| *p >= 100 * 100));
            let reopened = Index::new(sim.clone(), dir, 100);
            reopened.load().await.unwrap();
            assert_eq!(
                sim.open_handles(),
                0,
                "loading reads headers and fences only"
            );
            assert_eq!(reopened.sealed.borrow().len(), 9);
        });
    }
}
