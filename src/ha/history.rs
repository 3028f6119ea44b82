//! A shard's replication history: its lineage (a random id given to a store the first time it
//! runs as a master, adopted by its slaves) and its epochs (each master start begins one at the
//! commitlog end it recovered). Kept in `<storePathRootDir>/ha/<shard>`.
//!
//! A master that crashed may come back with less than it had sent (its unflushed tail was in
//! memory): its new epoch starts where its log now ends. A slave that received bytes of the
//! old epoch past that point holds a history the master no longer has; [`decide`] finds the
//! common point from the two epoch lists, and the slave cuts its log there.

use std::io;
use std::path::{Path, PathBuf};

use super::error::StaleMaster;
use super::proto::{Action, Hello};

/// One master life: it appended from `start` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    pub epoch: u32,
    pub start: u64,
}

/// A shard's lineage and epochs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// 0 until the store first runs as a master or follows one.
    pub lineage: u64,
    pub epochs: Vec<Epoch>,
}

/// What a master tells a slave after its HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Stream { action: Action, start: u64 },
    Refuse(String),
}

impl History {
    /// Where shard `shard` of the store under `root` keeps its history.
    pub fn path(root: &Path, shard: usize) -> PathBuf {
        root.join("ha").join(shard.to_string())
    }

    /// Reads a history file; a missing file is an empty history.
    pub fn load(path: &Path) -> io::Result<History> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(History::default()),
            Err(e) => return Err(e),
        };
        let bad = |line: usize, what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{}: {what}", path.display(), line + 1),
            )
        };
        let mut history = History::default();
        for (n, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["lineage", hex] => {
                    history.lineage =
                        u64::from_str_radix(hex, 16).map_err(|_| bad(n, "bad lineage"))?;
                }
                ["epoch", epoch, start] => history.epochs.push(Epoch {
                    epoch: epoch.parse().map_err(|_| bad(n, "bad epoch number"))?,
                    start: start.parse().map_err(|_| bad(n, "bad epoch start"))?,
                }),
                _ => return Err(bad(n, "expected `lineage <hex>` or `epoch <n> <start>`")),
            }
        }
        Ok(history)
    }

    /// Writes the history atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut text = format!("lineage {:016x}\n", self.lineage);
        for e in &self.epochs {
            text.push_str(&format!("epoch {} {}\n", e.epoch, e.start));
        }
        crate::fsutil::write_atomically(path, text.as_bytes())
    }

    /// A master starts: a new epoch at `at` (its commitlog end), and a lineage if it had none.
    pub fn begin_epoch(&mut self, at: u64) {
        self.begin_epoch_at_least(at, 0);
    }

    /// As [`History::begin_epoch`], numbered at least `min_epoch`. Numbers only tell epochs
    /// apart together with their start (see [`common_point`]), so two masters that begin the
    /// same number at different offsets still fork cleanly.
    pub fn begin_epoch_at_least(&mut self, at: u64, min_epoch: u32) {
        if self.lineage == 0 {
            self.lineage = random_lineage();
        }
        let epoch = self.epochs.last().map_or(1, |e| e.epoch + 1).max(min_epoch);
        self.epochs.push(Epoch { epoch, start: at });
    }
}

/// A random non-zero id (no rand dependency: the std hasher's random keys, the clock, the PID).
fn random_lineage() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// Where the bytes of epoch `i` of `list` end, in a log that ends at `log_end`.
fn epoch_end(list: &[Epoch], i: usize, log_end: u64) -> u64 {
    list.get(i + 1)
        .map_or(log_end, |next| next.start)
        .min(log_end)
}

/// The largest offset up to which a master (epochs `master`, log end `master_end`) and a
/// slave (`slave`, `slave_end`) of the same lineage hold the same bytes: the end, in both, of
/// the latest epoch they share.
pub fn common_point(master: &[Epoch], master_end: u64, slave: &[Epoch], slave_end: u64) -> u64 {
    for (i, e) in slave.iter().enumerate().rev() {
        if let Some(j) = master.iter().position(|m| m == e) {
            return epoch_end(slave, i, slave_end).min(epoch_end(master, j, master_end));
        }
    }
    0
}

/// Controller mode's epoch check of the HA handshake, on both sides: a master elected at
/// `master_epoch` and a slave that knows `slave_known` (the newest master epoch its agent read
/// from the controller; both 0 outside controller mode). A slave that knows a newer epoch than
/// the master's has seen another master elected after this one: the master is stale (cut off
/// from the controllers and replaced), must not stream to it — and above all must not make it
/// cut its log to a history the new master does not have. `None` when they may replicate.
pub fn stale_master(master_epoch: u32, slave_known: u32) -> Option<StaleMaster> {
    (slave_known > master_epoch).then_some(StaleMaster {
        master_epoch,
        slave_known,
    })
}

/// The master's answer to `hello`, given its own history and log (`min`..`end`).
pub fn decide(master: &History, min: u64, end: u64, hello: &Hello) -> Decision {
    if hello.offset == 0 {
        return Decision::Stream {
            action: Action::Continue,
            start: min,
        };
    }
    if hello.lineage == 0 {
        return Decision::Refuse(format!(
            "the slave's shard {} holds {} bytes but no replication history: it was not \
             copied from this master; empty its store to make it a slave",
            hello.shard, hello.offset
        ));
    }
    if hello.lineage != master.lineage {
        return Decision::Refuse(format!(
            "the slave's shard {} descends from another master store (lineage {:016x}, \
             this master's is {:016x}): was the master's store replaced? The slave keeps its \
             data; empty its store to make it follow this master",
            hello.shard, hello.lineage, master.lineage
        ));
    }
    let common = common_point(&master.epochs, end, &hello.epochs, hello.offset);
    let (action, start) = if common < min {
        (Action::Wipe, min)
    } else if common < hello.offset {
        (Action::Truncate, common)
    } else {
        (Action::Continue, hello.offset)
    };
    Decision::Stream { action, start }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: u32, start: u64) -> Epoch {
        Epoch { epoch, start }
    }

    fn hello(lineage: u64, offset: u64, epochs: Vec<Epoch>) -> Hello {
        Hello {
            shard: 0,
            shard_count: 1,
            segment_bytes: 1 << 20,
            lineage,
            offset,
            epochs,
            slave_addr: "s".into(),
            master_epoch: 0,
        }
    }

    #[test]
    fn a_master_older_than_the_epoch_the_slave_knows_is_stale() {
        assert_eq!(stale_master(0, 0), None, "outside controller mode");
        assert_eq!(stale_master(3, 3), None);
        assert_eq!(
            stale_master(4, 3),
            None,
            "a slave that has not read the newest epoch yet"
        );
        let why = stale_master(3, 4).unwrap().to_string();
        assert!(why.contains("epoch 3") && why.contains("epoch 4"), "{why}");
        assert!(why.contains("stale"), "{why}");
    }

    fn master(epochs: Vec<Epoch>) -> History {
        History { lineage: 7, epochs }
    }

    #[test]
    fn history_files_round_trip_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = History::path(dir.path(), 2);
        assert_eq!(History::load(&path).unwrap(), History::default());
        let mut h = History::default();
        h.begin_epoch(0);
        h.begin_epoch(4096);
        assert_ne!(h.lineage, 0);
        assert_eq!(h.epochs, vec![e(1, 0), e(2, 4096)]);
        h.save(&path).unwrap();
        assert_eq!(History::load(&path).unwrap(), h);
        std::fs::write(&path, "lineage 1\nepoch x 0\n").unwrap();
        let err = History::load(&path).unwrap_err().to_string();
        assert!(err.contains(":2: bad epoch number"), "{err}");
    }

    #[test]
    fn an_empty_slave_starts_at_the_masters_oldest_byte() {
        let d = decide(
            &master(vec![e(1, 0)]),
            1 << 30,
            5 << 30,
            &hello(0, 0, vec![]),
        );
        assert_eq!(
            d,
            Decision::Stream {
                action: Action::Continue,
                start: 1 << 30
            }
        );
    }

    #[test]
    fn a_slave_behind_in_the_same_epoch_continues() {
        let m = master(vec![e(1, 0), e(2, 1000)]);
        let d = decide(&m, 0, 5000, &hello(7, 800, vec![e(1, 0), e(2, 1000)]));
        assert_eq!(
            d,
            Decision::Stream {
                action: Action::Continue,
                start: 800
            }
        );
        let d = decide(&m, 0, 5000, &hello(7, 3000, vec![e(1, 0), e(2, 1000)]));
        assert_eq!(
            d,
            Decision::Stream {
                action: Action::Continue,
                start: 3000
            }
        );
    }

    #[test]
    fn bytes_the_master_lost_in_a_crash_are_cut() {
        // Epoch 2 reached 3000 on the slave; the master came back at 2500 (epoch 3).
        let m = master(vec![e(1, 0), e(2, 1000), e(3, 2500)]);
        let d = decide(&m, 0, 2600, &hello(7, 3000, vec![e(1, 0), e(2, 1000)]));
        assert_eq!(
            d,
            Decision::Stream {
                action: Action::Truncate,
                start: 2500
            }
        );
        // A slave already following epoch 3 continues.
        let d = decide(&m, 0, 2600, &hello(7, 2550, m.epochs.clone()));
        assert_eq!(
            d,
            Decision::Stream {
                action: Action::Continue,
                start: 2550
            }
        );
    }

    #[test]
    fn a_slave_holding_an_epoch_the_master_never_had_is_cut_at_the_fork() {
        // The slave was promoted (epoch 3 at 2000) and wrote; the old master went on in its
        // own epoch 3 from 1800.
        let m = master(vec![e(1, 0), e(2, 1000), e(3, 1800)]);
        let s = vec![e(1, 0), e(2, 1000), e(3, 2000)];
        let d = decide(&m, 0, 4000, &hello(7, 2500, s));
        assert_eq!(
            d,
            Decision::Stream {
                action: Action::Truncate,
                start: 1800
            }
        );
    }

    #[test]
    fn a_slave_behind_the_masters_oldest_segment_is_wiped() {
        let m = master(vec![e(1, 0)]);
        let d = decide(&m, 1 << 20, 3 << 20, &hello(7, 500, vec![e(1, 0)]));
        assert_eq!(
            d,
            Decision::Stream {
                action: Action::Wipe,
                start: 1 << 20
            }
        );
    }

    #[test]
    fn a_slave_of_another_store_is_refused_with_its_data_kept() {
        let m = master(vec![e(1, 0)]);
        match decide(&m, 0, 100, &hello(8, 50, vec![e(1, 0)])) {
            Decision::Refuse(why) => assert!(why.contains("another master store"), "{why}"),
            other => panic!("{other:?}"),
        }
        match decide(&m, 0, 100, &hello(0, 50, vec![])) {
            Decision::Refuse(why) => assert!(why.contains("no replication history"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
