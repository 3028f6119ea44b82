//! The state of one shard's timer wheel, without I/O: which timers are pending, which bucket
//! is loaded, how far delivery and intake have gone, and what a restart may take as delivered.
//! The service (`service.rs`) does the reading, writing and putting and tells the wheel what
//! happened; the wheel decides. Lives on the shard that owns the shard's timer queue.
//!
//! A timer is named by its [`Key`]: (`TIMER_OUT_MS`, its offset in the shard's queue of
//! `rmq_sys_wheel_timer`). Keys are unique (the queue offset is) and delivery follows key
//! order, so "delivered" can be kept as a watermark.
//!
//! # What a restart takes as delivered
//!
//! The checkpoint holds `(enqueue_next, delivered, commitlog_pos)`, captured between two
//! rounds of the service (no put in flight), saved only once the shard's commitlog is durable
//! up to `commitlog_pos`. A timer with queue offset `qo` and key `k` is delivered after a
//! restart iff
//!
//! * its delivered copy lies in the commitlog after `commitlog_pos` (the service scans that
//!   tail for the copies' `RINGMQ_TIMER_QO` marker: the `recent` set), or
//! * `qo < enqueue_next` and `k <= delivered`.
//!
//! The second rule holds because every timer below `enqueue_next` was either delivered at
//! once when taken in (its key was already at or below the watermark: it came in late) or
//! placed in the window or a bucket file with a key above the watermark, and the window is
//! delivered in key order, buckets in time order. Copies are appended in delivery order to
//! the same shard's commitlog, and recovery keeps a prefix of it, so after a crash the
//! watermark may be raised to the largest key among the surviving copies: every pending timer
//! below it was delivered before that copy and survived with it.

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;

/// (`TIMER_OUT_MS`, queue offset in the shard's timer queue).
pub type Key = (i64, i64);

/// Width of one bucket file (and of the window loaded at a time).
pub const BUCKET_MS: i64 = 60_000;

/// The bucket a timer waits in.
pub fn bucket_of(out_ms: i64) -> i64 {
    out_ms.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// Saved progress of one shard's wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Timer queue offsets below this are taken in (in a bucket file, the window, or
    /// delivered).
    pub enqueue_next: i64,
    /// Every taken-in timer at or below this key is delivered.
    pub delivered: Option<Key>,
    /// Offset in the shard's commitlog at capture: every delivered copy before it is covered
    /// by the two fields above.
    pub commitlog_pos: u64,
}

/// Where a timer just taken in goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Already delivered (its copy was found after the checkpoint).
    Skip,
    /// Late: at or below the watermark; deliver it now.
    DeliverNow,
    /// In the loaded window (and appended to its bucket file for a restart).
    Window,
    /// Appended to the file of a later bucket only.
    File(i64),
}

/// One shard's timer wheel state.
#[derive(Debug, Default)]
pub struct Wheel {
    /// Pending timers of the loaded bucket(s), in delivery order.
    window: BTreeSet<Key>,
    /// The newest bucket loaded into the window; `None` before the first.
    current: Option<i64>,
    /// Bucket files not loaded yet, all later than `current`.
    pending_buckets: BTreeSet<i64>,
    /// Bucket files on disk (loaded or not).
    files: BTreeSet<i64>,
    /// Watermark: every taken-in timer at or below it is delivered.
    delivered: Option<Key>,
    /// Next timer queue offset to take in.
    enqueue_next: i64,
    /// Queue offsets at or past `enqueue_next` whose copies were found after the checkpoint.
    recent: HashSet<i64>,
    /// Where those copies were looked for: a checkpoint captured while `recent` is not empty
    /// must make the next start look there again (it alone says they were delivered).
    rescan_from: u64,
}

impl Wheel {
    /// The wheel after a (re)start: the saved checkpoint (or `None`: nothing saved yet, start
    /// at `queue_min`), the keys of copies found after it from commitlog offset
    /// `scanned_from`, and the bucket files on disk.
    pub fn restore(
        checkpoint: Option<Checkpoint>,
        queue_min: i64,
        recent: &[Key],
        scanned_from: u64,
        files: &[i64],
    ) -> Wheel {
        let (enqueue_next, saved) = match checkpoint {
            Some(c) => (c.enqueue_next, c.delivered),
            None => (queue_min, None),
        };
        let delivered = recent.iter().copied().chain(saved).max();
        Wheel {
            window: BTreeSet::new(),
            current: None,
            pending_buckets: files.iter().copied().collect(),
            files: files.iter().copied().collect(),
            delivered,
            enqueue_next: enqueue_next.max(queue_min),
            recent: recent
                .iter()
                .map(|k| k.1)
                .filter(|qo| *qo >= enqueue_next)
                .collect(),
            rescan_from: scanned_from,
        }
    }

    /// Next timer queue offset to take in.
    pub fn enqueue_next(&self) -> i64 {
        self.enqueue_next
    }

    /// The watermark.
    pub fn delivered(&self) -> Option<Key> {
        self.delivered
    }

    /// Timers in the window.
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    fn at_or_below_watermark(&self, key: Key) -> bool {
        self.delivered.is_some_and(|d| key <= d)
    }

    /// Decides where a timer just read from the queue goes (and puts it in the window when
    /// that is the place). Files it is appended to are recorded.
    pub fn place(&mut self, key: Key) -> Place {
        assert!(key.1 >= self.enqueue_next, "{key:?} taken in twice");
        if self.recent.contains(&key.1) {
            return Place::Skip;
        }
        if self.at_or_below_watermark(key) {
            // It may be in the window too (read from its bucket file after a restart).
            self.window.remove(&key);
            return Place::DeliverNow;
        }
        let bucket = bucket_of(key.0);
        let current = match self.current {
            Some(c) => c,
            // Nothing loaded yet: the timer's bucket becomes the window unless an earlier
            // file must be loaded first.
            None if self.pending_buckets.first().is_none_or(|b| bucket < *b) => {
                self.current = Some(bucket);
                bucket
            }
            None => i64::MIN,
        };
        self.files.insert(bucket);
        if bucket <= current {
            self.window.insert(key);
            Place::Window
        } else {
            self.pending_buckets.insert(bucket);
            Place::File(bucket)
        }
    }

    /// Every timer below `next` is taken in (placed, and its file write done).
    pub fn enqueued_to(&mut self, next: i64) {
        assert!(next >= self.enqueue_next, "intake went back");
        self.enqueue_next = next;
        self.recent.retain(|qo| *qo >= next);
    }

    /// Up to `max` due timers (`TIMER_OUT_MS + precision <= now`), in delivery order. They
    /// stay in the window until [`Wheel::delivered_one`]. A timer the intake has not reached
    /// yet (read from its bucket file after a restart) waits for it: the intake decides
    /// whether it was delivered before the crash.
    pub fn due(&self, now_ms: i64, precision_ms: i64, max: usize) -> Vec<Key> {
        self.due_after(None, now_ms, precision_ms, max)
    }

    /// [`Wheel::due`] among the timers after `after` (all when `None`): what the service
    /// builds copies of ahead of their time.
    pub fn due_after(
        &self,
        after: Option<Key>,
        now_ms: i64,
        precision_ms: i64,
        max: usize,
    ) -> Vec<Key> {
        self.pending_after(after)
            .take_while(|k| k.0.saturating_add(precision_ms) <= now_ms)
            .take(max)
            .collect()
    }

    /// Pending timers the intake has reached, after `after`, in delivery order.
    fn pending_after(&self, after: Option<Key>) -> impl Iterator<Item = Key> + '_ {
        let from = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.window
            .range((from, Bound::Unbounded))
            .filter(|k| k.1 < self.enqueue_next)
            .copied()
    }

    /// When the first pending timer after `after` (the intake has reached) is due.
    pub fn next_due_after(&self, after: Option<Key>, precision_ms: i64) -> Option<i64> {
        self.pending_after(after)
            .next()
            .map(|k| k.0.saturating_add(precision_ms))
    }

    /// A window timer's copy is stored (or its message is gone): the watermark moves to it
    /// (it only falls behind it for a timer the intake skipped, removed by retention).
    pub fn delivered_one(&mut self, key: Key) {
        assert!(
            self.window.remove(&key),
            "{key:?} delivered but not pending"
        );
        assert!(key.1 < self.enqueue_next, "{key:?} delivered before intake");
        self.delivered = self.delivered.max(Some(key));
    }

    /// When the first pending timer the intake has reached is due.
    pub fn next_due_ms(&self, precision_ms: i64) -> Option<i64> {
        self.next_due_after(None, precision_ms)
    }

    /// The bucket file to load next: the window is empty and a later file waits.
    pub fn bucket_to_load(&self) -> Option<i64> {
        if self.window.is_empty() {
            self.pending_buckets.first().copied()
        } else {
            None
        }
    }

    /// The entries of bucket file `bucket` (duplicates allowed) are read: the pending ones
    /// join the window.
    pub fn loaded(&mut self, bucket: i64, entries: &[Key]) {
        assert!(
            self.pending_buckets.remove(&bucket),
            "{bucket} loaded twice"
        );
        assert!(
            self.current.is_none_or(|c| c < bucket),
            "buckets out of order"
        );
        self.current = Some(bucket);
        for key in entries {
            // At or below the watermark: delivered, or (past `enqueue_next` and not in
            // `recent`) taken in again by the intake, which delivers it as late.
            if !self.at_or_below_watermark(*key) && !self.recent.contains(&key.1) {
                self.window.insert(*key);
            }
        }
    }

    /// The progress to save, `commitlog_pos` being the shard's commitlog end now.
    pub fn capture(&self, commitlog_pos: u64) -> Checkpoint {
        Checkpoint {
            enqueue_next: self.enqueue_next,
            delivered: self.delivered,
            // Copies known only from the last start's scan are not covered by
            // `enqueue_next` yet: the next start must find them again.
            commitlog_pos: if self.recent.is_empty() {
                commitlog_pos
            } else {
                self.rescan_from.min(commitlog_pos)
            },
        }
    }

    /// Bucket files every timer of which is covered by a saved checkpoint: they may go.
    pub fn files_done(&mut self, saved: &Checkpoint) -> Vec<i64> {
        let Some((out, _)) = saved.delivered else {
            return Vec::new();
        };
        let done: Vec<i64> = self
            .files
            .iter()
            .copied()
            .take_while(|b| b.saturating_add(BUCKET_MS) <= out)
            .collect();
        for b in &done {
            self.files.remove(b);
            assert!(!self.pending_buckets.contains(b), "{b} removed unread");
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: i64 = 1_000;

    fn take(w: &mut Wheel, keys: &[Key]) -> Vec<Place> {
        let places = keys.iter().map(|k| w.place(*k)).collect();
        w.enqueued_to(keys.iter().map(|k| k.1 + 1).max().unwrap_or(0));
        places
    }

    #[test]
    fn timers_come_due_in_time_then_queue_order() {
        let mut w = Wheel::restore(None, 0, &[], 0, &[]);
        let places = take(&mut w, &[(5_000, 0), (3_000, 1), (5_000, 2), (3_000, 3)]);
        assert!(places.iter().all(|p| *p == Place::Window), "{places:?}");
        assert_eq!(w.next_due_ms(P), Some(4_000));
        assert!(w.due(3_999, P, 10).is_empty());
        assert_eq!(w.due(4_000, P, 10), vec![(3_000, 1), (3_000, 3)]);
        assert_eq!(w.due(9_000, P, 3), vec![(3_000, 1), (3_000, 3), (5_000, 0)]);
        for k in w.due(9_000, P, 10) {
            w.delivered_one(k);
        }
        assert_eq!(w.delivered(), Some((5_000, 2)));
        assert_eq!(w.next_due_ms(P), None);
    }

    #[test]
    fn timers_after_a_key_come_due_in_order() {
        let mut w = Wheel::restore(None, 0, &[], 0, &[]);
        take(&mut w, &[(3_000, 0), (3_000, 1), (5_000, 2), (3_000, 3)]);
        assert_eq!(
            w.due_after(Some((3_000, 1)), 9_000, P, 10),
            vec![(3_000, 3), (5_000, 2)]
        );
        assert_eq!(
            w.due_after(Some((3_000, 1)), 4_000, P, 10),
            vec![(3_000, 3)]
        );
        assert_eq!(w.next_due_after(Some((3_000, 3)), P), Some(6_000));
        assert_eq!(w.next_due_after(Some((5_000, 2)), P), None);
    }

    #[test]
    fn later_buckets_wait_in_files_and_load_in_order() {
        let mut w = Wheel::restore(None, 0, &[], 0, &[]);
        let far = 10 * BUCKET_MS + 5;
        let places = take(&mut w, &[(1_000, 0), (far, 1), (3 * BUCKET_MS, 2)]);
        assert_eq!(
            places,
            vec![
                Place::Window,
                Place::File(bucket_of(far)),
                Place::File(3 * BUCKET_MS)
            ]
        );
        assert_eq!(w.bucket_to_load(), None, "the window is not empty");
        w.delivered_one((1_000, 0));
        assert_eq!(w.bucket_to_load(), Some(3 * BUCKET_MS));
        // The file holds the entry twice (written again after a crash): one timer.
        w.loaded(3 * BUCKET_MS, &[(3 * BUCKET_MS, 2), (3 * BUCKET_MS, 2)]);
        assert_eq!(w.window_len(), 1);
        // A new timer for a bucket before the loaded one joins the window.
        assert_eq!(take(&mut w, &[(2 * BUCKET_MS, 3)]), vec![Place::Window]);
        assert_eq!(w.due(i64::MAX / 2, P, 10)[0], (2 * BUCKET_MS, 3));
    }

    #[test]
    fn a_timer_below_the_watermark_is_delivered_at_once() {
        let mut w = Wheel::restore(None, 0, &[], 0, &[]);
        take(&mut w, &[(5_000, 0)]);
        w.delivered_one((5_000, 0));
        assert_eq!(w.place((4_000, 1)), Place::DeliverNow);
        assert_eq!(
            w.place((5_000, 2)),
            Place::Window,
            "same time, later offset"
        );
    }

    /// The restart rule, played against every crash point of a small run: a timer is
    /// delivered exactly once whatever survived.
    #[test]
    fn a_restart_delivers_every_timer_once_whatever_the_crash_point() {
        // Timers (out, qo); the run takes them all in, then delivers in order.
        let keys: Vec<Key> = vec![(3_000, 0), (1_000, 1), (2_000, 2), (2_000, 3), (9_000, 4)];
        let mut w = Wheel::restore(None, 0, &[], 0, &[]);
        take(&mut w, &keys[..3]);
        let ckpt = w.capture(100);
        let mut log: Vec<Key> = Vec::new(); // delivered copies, in commitlog order
        for k in w.due(10_000, P, 2) {
            w.delivered_one(k);
            log.push(k);
        }
        take(&mut w, &keys[3..]);
        for k in w.due(10_000, P, 10) {
            w.delivered_one(k);
            log.push(k);
        }
        assert_eq!(log.len(), 5);
        // Crash with the first `survived` copies after the checkpoint kept, and the bucket
        // file holding the timers taken in before the checkpoint or all of them.
        let cases = (0..=log.len())
            .flat_map(|s| [(s, 3), (s, 5)])
            .flat_map(|(s, f)| [(s, f, false), (s, f, true)]);
        for (survived, in_file, deliver_first) in cases {
            let recent = &log[..survived];
            let mut r = Wheel::restore(Some(ckpt), 0, recent, 100, &[0]);
            let mut again: Vec<Key> = Vec::new();
            r.loaded(0, &keys[..in_file]);
            if deliver_first {
                // The window delivers what is due before the intake replays the queue.
                for k in r.due(10_000, P, 10) {
                    r.delivered_one(k);
                    again.push(k);
                }
            }
            for k in &keys[3..] {
                match r.place(*k) {
                    Place::DeliverNow => again.push(*k),
                    Place::Skip => {}
                    _ => {}
                }
            }
            r.enqueued_to(5);
            for k in r.due(10_000, P, 10) {
                r.delivered_one(k);
                again.push(k);
            }
            let mut all: Vec<Key> = recent.to_vec();
            all.extend(&again);
            all.sort();
            let mut want = keys.clone();
            want.retain(|k| k.0 + P <= 10_000);
            want.sort();
            assert_eq!(
                all, want,
                "survived {survived}, in file {in_file}, window first {deliver_first}: \
                 again {again:?}"
            );
        }
    }

    /// A checkpoint saved after a restart but before the intake passed the copies found
    /// by its scan still points the next start at them (else a second crash repeats them).
    #[test]
    fn a_checkpoint_keeps_pointing_at_copies_the_intake_has_not_passed() {
        let ckpt = Checkpoint {
            enqueue_next: 2,
            delivered: Some((1_000, 1)),
            commitlog_pos: 500,
        };
        let mut w = Wheel::restore(Some(ckpt), 0, &[(1_500, 4)], 500, &[]);
        assert_eq!(w.delivered(), Some((1_500, 4)));
        assert_eq!(w.capture(900).commitlog_pos, 500);
        assert_eq!(w.place((2_000, 2)), Place::Window);
        w.enqueued_to(3);
        assert_eq!(w.capture(900).commitlog_pos, 500, "offset 4 not passed yet");
        assert_eq!(w.place((1_200, 3)), Place::DeliverNow);
        assert_eq!(w.place((1_500, 4)), Place::Skip);
        w.enqueued_to(5);
        assert_eq!(w.capture(900).commitlog_pos, 900);
    }

    #[test]
    fn files_go_once_a_saved_watermark_passes_them() {
        let mut w = Wheel::restore(None, 0, &[], 0, &[]);
        take(&mut w, &[(1_000, 0), (BUCKET_MS + 1, 1)]);
        w.delivered_one((1_000, 0));
        let c = w.capture(0);
        assert!(w.files_done(&c).is_empty());
        w.loaded(BUCKET_MS, &[(BUCKET_MS + 1, 1)]);
        w.delivered_one((BUCKET_MS + 1, 1));
        take(&mut w, &[(2 * BUCKET_MS + 7, 2)]);
        w.loaded(2 * BUCKET_MS, &[(2 * BUCKET_MS + 7, 2)]);
        w.delivered_one((2 * BUCKET_MS + 7, 2));
        let c = w.capture(0);
        assert_eq!(w.files_done(&c), vec![0, BUCKET_MS]);
    }
}
