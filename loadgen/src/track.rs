//! Exactly-once accounting for `--flush-check`: which messages were acknowledged (per producer
//! executor) and which were delivered, how often. Each executor fills its own sets; the main
//! thread merges them after the run. Pure.

use std::collections::HashMap;

use crate::body::Stamp;

/// Bits per chunk of a [`Bits`] set.
const CHUNK_BITS: u64 = 64 * 1024;
const CHUNK_WORDS: usize = (CHUNK_BITS / 64) as usize;

/// A set of message numbers, stored in 8 KiB chunks created on first use, so memory follows
/// the numbers used (dense in practice) and a stray large number costs one chunk.
#[derive(Debug, Default, Clone)]
pub struct Bits {
    chunks: HashMap<u64, Box<[u64; CHUNK_WORDS]>>,
}

impl Bits {
    /// Adds `n`; true when it was already there.
    pub fn insert(&mut self, n: u64) -> bool {
        let chunk = self
            .chunks
            .entry(n / CHUNK_BITS)
            .or_insert_with(|| Box::new([0; CHUNK_WORDS]));
        let bit = n % CHUNK_BITS;
        let word = &mut chunk[(bit / 64) as usize];
        let mask = 1u64 << (bit % 64);
        let had = *word & mask != 0;
        *word |= mask;
        had
    }

    /// How many numbers are in the set.
    pub fn len(&self) -> u64 {
        self.chunks
            .values()
            .flat_map(|c| c.iter())
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many numbers are in `self` but not in `other`.
    pub fn count_missing_from(&self, other: &Bits) -> u64 {
        let mut missing = 0;
        for (key, chunk) in &self.chunks {
            let theirs = other.chunks.get(key);
            for (i, word) in chunk.iter().enumerate() {
                let them = theirs.map_or(0, |c| c[i]);
                missing += u64::from((word & !them).count_ones());
            }
        }
        missing
    }

    /// Adds every number of `other`; returns how many were in both.
    pub fn union_counting_overlap(&mut self, other: Bits) -> u64 {
        let mut overlap = 0;
        for (key, chunk) in other.chunks {
            match self.chunks.get_mut(&key) {
                Some(mine) => {
                    for (m, o) in mine.iter_mut().zip(chunk.iter()) {
                        overlap += u64::from((*m & o).count_ones());
                        *m |= o;
                    }
                }
                None => {
                    self.chunks.insert(key, chunk);
                }
            }
        }
        overlap
    }
}

/// The deliveries one consumer executor saw.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// Only messages of this run count; `None` counts every loadgen body (consume scenario).
    run_id: Option<u64>,
    /// Run → producer executor → delivered message numbers.
    runs: HashMap<u64, Vec<Bits>>,
    /// Deliveries of counted messages, duplicates included.
    pub delivered: u64,
    /// Deliveries of a message already delivered.
    pub duplicates: u64,
    /// Messages that are not loadgen's, or another run's when `run_id` is set.
    pub foreign: u64,
}

/// The largest producer executor index a body may carry before it is treated as foreign.
const EXECUTORS_MAX: usize = 1024;

impl Deliveries {
    /// Deliveries of run `run_id` only, or of every run.
    pub fn new(run_id: Option<u64>) -> Deliveries {
        Deliveries {
            run_id,
            ..Default::default()
        }
    }

    /// Records one delivered message; true when it counted (not foreign).
    pub fn record(&mut self, stamp: Option<Stamp>) -> bool {
        let Some(stamp) = stamp.filter(|s| self.run_id.is_none_or(|r| r == s.run_id)) else {
            self.foreign += 1;
            return false;
        };
        if stamp.executor() >= EXECUTORS_MAX {
            self.foreign += 1;
            return false;
        }
        let per_executor = self.runs.entry(stamp.run_id).or_default();
        if per_executor.len() <= stamp.executor() {
            per_executor.resize_with(stamp.executor() + 1, Bits::default);
        }
        self.delivered += 1;
        if per_executor[stamp.executor()].insert(stamp.local()) {
            self.duplicates += 1;
        }
        true
    }

    /// Folds another executor's deliveries in; a message both saw is a duplicate.
    pub fn merge(&mut self, other: Deliveries) {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
        for (run, sets) in other.runs {
            let mine = self.runs.entry(run).or_default();
            if mine.len() < sets.len() {
                mine.resize_with(sets.len(), Bits::default);
            }
            for (m, o) in mine.iter_mut().zip(sets) {
                self.duplicates += m.union_counting_overlap(o);
            }
        }
    }

    /// Acknowledged messages of `run_id` never delivered, and delivered messages never
    /// acknowledged (sends that failed or timed out but were stored). `acked[e]` holds the
    /// acknowledged numbers of producer executor `e`.
    pub fn check(&self, run_id: u64, acked: &[Bits]) -> (u64, u64) {
        let empty = Vec::new();
        let delivered = self.runs.get(&run_id).unwrap_or(&empty);
        let none = Bits::default();
        let lost = acked
            .iter()
            .enumerate()
            .map(|(e, a)| a.count_missing_from(delivered.get(e).unwrap_or(&none)))
            .sum();
        let unacknowledged = delivered
            .iter()
            .enumerate()
            .map(|(e, d)| d.count_missing_from(acked.get(e).unwrap_or(&none)))
            .sum();
        (lost, unacknowledged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::SEQUENCE_LOCAL_BITS;

    fn stamp(run_id: u64, executor: u64, local: u64) -> Option<Stamp> {
        Some(Stamp {
            run_id,
            sequence: (executor << SEQUENCE_LOCAL_BITS) | local,
            sent_unix_ns: 0,
        })
    }

    #[test]
    fn duplicates_across_executors_and_losses_are_found() {
        let mut a = Deliveries::new(Some(7));
        let mut b = Deliveries::new(Some(7));
        assert!(a.record(stamp(7, 0, 1)));
        assert!(a.record(stamp(7, 1, 200_000)));
        assert!(!a.record(stamp(8, 0, 2)));
        assert!(a.record(stamp(7, 0, 1)));
        assert!(b.record(stamp(7, 1, 200_000)));
        a.merge(b);
        assert_eq!((a.delivered, a.duplicates, a.foreign), (4, 2, 1));
        let mut acked = vec![Bits::default(), Bits::default()];
        acked[0].insert(1);
        acked[0].insert(2);
        acked[1].insert(200_000);
        assert_eq!(a.check(7, &acked), (1, 0));
        acked[0] = Bits::default();
        assert_eq!(a.check(7, &acked), (0, 1));
    }

    #[test]
    fn bits_count_and_union() {
        let mut x = Bits::default();
        let mut y = Bits::default();
        for n in [0, 63, 64, 1 << 40] {
            assert!(!x.insert(n));
        }
        assert!(x.insert(63));
        y.insert(64);
        y.insert(5);
        assert_eq!(x.len(), 4);
        assert_eq!(x.count_missing_from(&y), 3);
        assert_eq!(x.union_counting_overlap(y), 1);
        assert_eq!(x.len(), 5);
    }
}
