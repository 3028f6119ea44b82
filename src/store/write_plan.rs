//! `WritePlan`: which blocks of an O_DSYNC log the next write may carry while other writes are
//! still in flight, and how far the log is durable once writes complete in any order.
//!
//! Writes are whole aligned blocks (the file's alignment, "pages" here), and the last page of
//! the data is usually partial: the write that carries it writes the page zero-padded, and the
//! next write of that page rewrites it with more data. Two writes of one page in flight at once
//! could reach the disk in either order, the older landing last and erasing the newer one's
//! bytes, so the plan keeps the writes in flight page-disjoint:
//!
//! - a new write starts at the first page holding bytes no write carried yet that is not in
//!   flight, and ends at the next page in flight, the segment's end or the data's end;
//! - bytes appended into a page while a write of that page is in flight (the rest of its
//!   partial last page) are left to a later write, planned once that write completed;
//! - while any write is in flight a new one carries whole pages only: the partial last page
//!   is held back until it fills or nothing else is in flight, so that a burst of appends is
//!   written as it comes without each write leaving a page to rewrite behind it.
//!
//! A completed write makes durable every byte it carried (O_DSYNC: data and metadata, on its
//! own, whatever else is in flight). Durability is the contiguous prefix of completed writes'
//! ranges, and what the log reports durable is the last end of the log (a record boundary:
//! the log was written up to there) at or below it: an append is acknowledged only when every
//! byte below its end is on the disk, so a crash never keeps a later record while losing an
//! earlier one, and recovery, the checkpoint and consume queues only ever see a durable end
//! between records (a write of whole pages ends inside a record). A failed write's bytes are
//! owed again. Pure bookkeeping: no I/O, no clock, one owner.

use std::collections::{BTreeMap, VecDeque};

/// Ends of the log above the durable prefix kept as candidates for the durable end; past
/// this the newest is replaced (coarser steps, never a wrong one).
const ENDS_KEPT: usize = 64;

/// One planned write: the file range `[from, to)` (page-aligned) written from memory as it
/// is at planning time, carrying the log's bytes `[from, data_end)`, of which those from
/// `fresh` on were carried by no earlier write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlannedWrite {
    pub id: u64,
    pub from: u64,
    pub to: u64,
    pub data_end: u64,
    pub fresh: u64,
}

/// What the writer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Start this write.
    Write(PlannedWrite),
    /// Nothing to start until the log is written up to this offset or a write completes.
    WaitFor(u64),
}

/// The writes of an O_DSYNC log: in flight, owed, completed.
#[derive(Debug)]
pub(crate) struct WritePlan {
    max_in_flight: usize,
    /// Bytes owed to a write (appended, or carried by a write that failed) and carried by
    /// none in flight or completed: disjoint ranges, start to end.
    owed: BTreeMap<u64, u64>,
    /// Appended bytes below this have been added to `owed` (or carried).
    seen: u64,
    in_flight: Vec<PlannedWrite>,
    /// Ranges carried by completed writes that do not join the durable prefix yet.
    done: BTreeMap<u64, u64>,
    /// Every byte below this is durable.
    durable: u64,
    /// Ends of the log (record boundaries) seen above `settled`, oldest first.
    ends: VecDeque<u64>,
    /// The last end of the log at or below `durable`: what the log reports durable.
    settled: u64,
    /// The highest page end any write was planned to (zeros ahead start past it).
    planned_end: u64,
    next_id: u64,
    /// A write beside others carries at least this much (each write is a device flush).
    beside_min: u64,
}

/// `v` rounded down to a multiple of `align`.
pub(crate) fn align_down(v: u64, align: u64) -> u64 {
    v - v % align
}

/// `v` rounded up to a multiple of `align`.
pub(crate) fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// Inserts `[start, end)` into a set of disjoint ranges, merging what touches it.
fn insert_range(set: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
    if start >= end {
        return;
    }
    if let Some((&s, &e)) = set.range(..=start).next_back() {
        if e >= start {
            start = s;
            end = end.max(e);
            set.remove(&s);
        }
    }
    while let Some((&s, &e)) = set.range(start..=end).next() {
        end = end.max(e);
        set.remove(&s);
    }
    set.insert(start, end);
}

/// Removes `[start, end)` from a set of disjoint ranges.
fn remove_range(set: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let mut cut = Vec::new();
    if let Some((&s, &e)) = set.range(..start).next_back() {
        if e > start {
            cut.push((s, e));
        }
    }
    cut.extend(set.range(start..end).map(|(&s, &e)| (s, e)));
    for (s, e) in cut {
        set.remove(&s);
        if s < start {
            set.insert(s, start);
        }
        if e > end {
            set.insert(end, e);
        }
    }
}

impl WritePlan {
    /// A plan for a log durable (and written) up to `end`, with at most `max_in_flight` writes
    /// at once.
    pub(crate) fn new(end: u64, max_in_flight: usize) -> WritePlan {
        assert!(max_in_flight > 0);
        WritePlan {
            max_in_flight,
            owed: BTreeMap::new(),
            seen: end,
            in_flight: Vec::new(),
            done: BTreeMap::new(),
            durable: end,
            ends: VecDeque::new(),
            settled: end,
            planned_end: end,
            next_id: 0,
            beside_min: 0,
        }
    }

    /// A write beside others in flight carries at least `bytes` of whole pages; smaller ones
    /// wait for the writes in flight to complete (one write then carries them).
    pub(crate) fn with_beside_min(mut self, bytes: u64) -> WritePlan {
        self.beside_min = bytes;
        self
    }

    /// Starts over for a log durable (and written) up to `end`, with nothing in flight or
    /// owed; the same bounds (writes in flight, the least beside others).
    pub(crate) fn restart(&mut self, end: u64) {
        *self = WritePlan::new(end, self.max_in_flight).with_beside_min(self.beside_min);
    }

    /// Everything below this is durable, and it is an end the log was written to.
    pub(crate) fn durable_end(&self) -> u64 {
        self.settled
    }

    /// Writes in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The highest offset a planned write reaches (page-aligned), or the durable end.
    pub(crate) fn planned_end(&self) -> u64 {
        self.planned_end.max(self.durable)
    }

    /// The page-aligned file range in flight holding `page`, if any.
    fn in_flight_at(&self, page: u64) -> Option<&PlannedWrite> {
        self.in_flight
            .iter()
            .find(|w| w.from <= page && page < w.to)
    }

    /// The lowest start of a write in flight above `page`.
    fn next_in_flight_after(&self, page: u64) -> Option<u64> {
        self.in_flight
            .iter()
            .map(|w| w.from)
            .filter(|f| *f > page)
            .min()
    }

    /// Plans the next write for a log appended up to `written`, whose files take writes
    /// aligned to `align` and whose segments are `segment_bytes` long (a write never crosses a
    /// segment's end).
    pub(crate) fn next(&mut self, written: u64, align: u64, segment_bytes: u64) -> Next {
        assert!(written >= self.seen, "written moved back");
        if written > self.seen {
            insert_range(&mut self.owed, self.seen, written);
            self.seen = written;
            match self.ends.len() < ENDS_KEPT {
                true => self.ends.push_back(written),
                false => *self.ends.back_mut().expect("kept ends") = written,
            }
        }
        // Until the partial last page fills (when it is held back) or a write completes.
        let refill = align_down(written, align) + align.max(self.beside_min);
        if self.in_flight.len() >= self.max_in_flight {
            return Next::WaitFor(u64::MAX);
        }
        let ranges: Vec<(u64, u64)> = self.owed.iter().map(|(&s, &e)| (s, e)).collect();
        for (start, end) in ranges {
            // The first page of this range that no write in flight holds.
            let mut page = align_down(start, align);
            while let Some(w) = self.in_flight_at(page) {
                page = w.to;
            }
            if page >= end {
                continue;
            }
            let segment_end = align_down(page, segment_bytes) + segment_bytes;
            let limit = self
                .next_in_flight_after(page)
                .unwrap_or(u64::MAX)
                .min(segment_end);
            // Owed bytes below the limit: this range and any later ones before it (the pages
            // between them are rewritten unchanged: complete, immutable, not in flight).
            let last = self
                .owed
                .range(..limit)
                .next_back()
                .map_or(end, |(_, &e)| e.min(limit));
            let mut to = align_up(last, align).min(limit);
            if !self.in_flight.is_empty() && last == written && written % align != 0 {
                to = align_down(written, align); // hold the partial last page back
            }
            if to <= page || (!self.in_flight.is_empty() && to - page < self.beside_min) {
                continue;
            }
            let data_end = to.min(written);
            let write = PlannedWrite {
                id: self.next_id,
                from: page,
                to,
                data_end,
                fresh: start.max(page),
            };
            self.next_id += 1;
            remove_range(&mut self.owed, page, data_end);
            self.in_flight.push(write);
            self.planned_end = self.planned_end.max(to);
            return Next::Write(write);
        }
        match self.owed.is_empty() {
            true => Next::WaitFor(written + 1),
            false => Next::WaitFor(refill),
        }
    }

    /// Ends write `id`: on success its bytes are durable, and the durable prefix grows over
    /// every completed range that now joins it; on failure its bytes are owed again. Returns
    /// the durable end ([`WritePlan::durable_end`]).
    pub(crate) fn complete(&mut self, id: u64, ok: bool) -> u64 {
        let i = self
            .in_flight
            .iter()
            .position(|w| w.id == id)
            .expect("completing a write not in flight");
        let write = self.in_flight.swap_remove(i);
        if !ok {
            insert_range(&mut self.owed, write.from.max(self.durable), write.data_end);
            return self.settled;
        }
        insert_range(&mut self.done, write.from, write.data_end);
        while let Some((&s, &e)) = self.done.iter().next() {
            if s > self.durable {
                break;
            }
            self.durable = self.durable.max(e);
            self.done.remove(&s);
        }
        while let Some(&end) = self.ends.front() {
            if end > self.durable {
                break;
            }
            self.settled = end;
            self.ends.pop_front();
        }
        self.settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 512;
    const SEG: u64 = 1 << 20;

    fn write(next: Next) -> PlannedWrite {
        match next {
            Next::Write(w) => w,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn a_write_beside_another_starts_past_its_pages_and_carries_whole_pages_only() {
        let mut plan = WritePlan::new(0, 2);
        let a = write(plan.next(700, PAGE, SEG));
        assert_eq!((a.from, a.to, a.data_end), (0, 1024, 700));
        // 700..1024 is in a page A writes: held until A completes. Whole pages after it go now.
        let b = write(plan.next(2000, PAGE, SEG));
        assert_eq!((b.from, b.to, b.data_end), (1024, 1536, 1536));
        assert_eq!(
            plan.next(2000, PAGE, SEG),
            Next::WaitFor(u64::MAX),
            "two in flight"
        );
    }

    #[test]
    fn durability_is_the_prefix_of_completed_writes_and_a_shared_page_is_rewritten_after() {
        let mut plan = WritePlan::new(0, 2);
        let a = write(plan.next(700, PAGE, SEG));
        let b = write(plan.next(2000, PAGE, SEG));
        // B completes first: its bytes are durable, but not those before it in A's pages.
        assert_eq!(plan.complete(b.id, true), 0);
        // The bytes appended into A's last page (700..1024) are not written while A is in
        // flight, and the partial page 1536.. is held back while anything is in flight.
        assert_eq!(plan.next(2000, PAGE, SEG), Next::WaitFor(2048));
        assert_eq!(
            plan.complete(a.id, true),
            700,
            "A alone: up to its own data"
        );
        // Alone now: A's page again (its head is durable already), B's page unchanged, and
        // the partial last page.
        let c = write(plan.next(2000, PAGE, SEG));
        assert_eq!((c.from, c.to, c.data_end, c.fresh), (512, 2048, 2000, 700));
        assert_eq!(plan.complete(c.id, true), 2000);
        assert_eq!(plan.next(2000, PAGE, SEG), Next::WaitFor(2001));
    }

    #[test]
    fn a_page_appended_to_while_its_write_is_in_flight_is_rewritten_after_it() {
        let mut plan = WritePlan::new(0, 2);
        let a = write(plan.next(700, PAGE, SEG));
        let b = write(plan.next(2100, PAGE, SEG));
        assert_eq!((b.from, b.to), (1024, 2048));
        assert_eq!(plan.complete(a.id, true), 700);
        // B is in flight: A's page alone, up to B's first page.
        let c = write(plan.next(2100, PAGE, SEG));
        assert_eq!((c.from, c.to, c.data_end), (512, 1024, 1024));
        // Durable to 1024, then 2048: inside the record that ends at 2100, so the durable
        // end stays at the last end of the log below (700) until the rest is written.
        assert_eq!(plan.complete(c.id, true), 700);
        assert_eq!(plan.complete(b.id, true), 700);
        let d = write(plan.next(2100, PAGE, SEG));
        assert_eq!((d.from, d.data_end), (2048, 2100));
        assert_eq!(plan.complete(d.id, true), 2100);
    }

    #[test]
    fn alone_a_write_carries_the_partial_last_page_and_waits_otherwise_for_it_to_fill() {
        let mut plan = WritePlan::new(0, 2);
        let a = write(plan.next(100, PAGE, SEG));
        assert_eq!((a.from, a.to, a.data_end), (0, 512, 100));
        // More in A's page: held (A holds the page), and no whole page to write yet.
        assert_eq!(plan.next(400, PAGE, SEG), Next::WaitFor(512));
        // Past the page: held still (the page is in flight), the next page partial.
        assert_eq!(plan.next(600, PAGE, SEG), Next::WaitFor(1024));
        assert_eq!(plan.complete(a.id, true), 100);
        let b = write(plan.next(600, PAGE, SEG));
        assert_eq!(
            (b.from, b.to, b.data_end),
            (0, 1024, 600),
            "alone again: all of it"
        );
        assert_eq!(plan.complete(b.id, true), 600);
    }

    #[test]
    fn a_failed_write_is_owed_again_and_holds_the_prefix_back() {
        let mut plan = WritePlan::new(0, 2);
        let a = write(plan.next(1024, PAGE, SEG));
        let b = write(plan.next(2048, PAGE, SEG));
        assert_eq!(plan.complete(a.id, false), 0);
        assert_eq!(plan.complete(b.id, true), 0, "B's bytes wait for A's again");
        let again = write(plan.next(2048, PAGE, SEG));
        assert_eq!((again.from, again.data_end), (0, 1024));
        assert_eq!(plan.complete(again.id, true), 2048);
    }

    #[test]
    fn a_write_beside_others_waits_until_it_carries_enough() {
        let mut plan = WritePlan::new(0, 2).with_beside_min(2048);
        let a = write(plan.next(700, PAGE, SEG));
        // One whole page past A's: not enough to go beside it.
        assert_eq!(plan.next(1600, PAGE, SEG), Next::WaitFor(3584));
        let b = write(plan.next(3100, PAGE, SEG));
        assert_eq!((b.from, b.to), (1024, 3072));
        assert_eq!(plan.complete(a.id, true), 700);
        // A's page alone would go beside B: too small, it waits for B.
        assert_eq!(plan.next(3100, PAGE, SEG), Next::WaitFor(5120));
        assert_eq!(plan.complete(b.id, true), 700);
        let c = write(plan.next(3100, PAGE, SEG));
        assert_eq!((c.from, c.data_end), (512, 3100));
        assert_eq!(plan.complete(c.id, true), 3100);
    }

    #[test]
    fn writes_stop_at_segment_ends() {
        let mut plan = WritePlan::new(SEG - 600, 2);
        let a = write(plan.next(SEG + 700, PAGE, SEG));
        assert_eq!((a.from, a.to, a.data_end), (SEG - 1024, SEG, SEG));
        let b = write(plan.next(SEG + 700, PAGE, SEG));
        assert_eq!((b.from, b.to, b.data_end), (SEG, SEG + 512, SEG + 512));
        assert_eq!(plan.complete(b.id, true), SEG - 600);
        assert_eq!(
            plan.complete(a.id, true),
            SEG - 600,
            "inside the record ending at +700"
        );
        let c = write(plan.next(SEG + 700, PAGE, SEG));
        assert_eq!((c.from, c.data_end), (SEG + 512, SEG + 700));
        assert_eq!(plan.complete(c.id, true), SEG + 700);
    }

    /// Random appends, plans and completions in any order, against a model of the disk
    /// where each write lands at a random moment while in flight: no two writes in flight
    /// ever share a page, and whatever the prefix says is durable is on the model disk with
    /// the bytes appended there.
    #[test]
    fn under_random_order_the_prefix_never_runs_ahead_of_the_disk() {
        for seed in 1..200u64 {
            let mut rng = seed;
            let mut rand = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let max = 1 + rand(3) as usize;
            let mut plan = WritePlan::new(0, max);
            // The log's bytes: byte i of the log is (i % 251) + 1; the disk starts all zero.
            let byte = |i: u64| (i % 251) as u8 + 1;
            let mut disk = vec![0u8; 64 * 1024];
            let mut written = 0u64;
            // In flight: the write and the image of its pages taken when it was planned.
            let mut flying: Vec<(PlannedWrite, Vec<u8>)> = Vec::new();
            let mut durable = 0;
            let mut ends = vec![0u64];
            for _ in 0..400 {
                match rand(3) {
                    0 if written < 60 * 1024 => {
                        written += 1 + rand(700);
                        ends.push(written);
                    }
                    1 => {
                        if let Next::Write(w) = plan.next(written, PAGE, 16 * 1024) {
                            for (other, _) in &flying {
                                assert!(
                                    w.to <= other.from || other.to <= w.from,
                                    "seed {seed}: {w:?} shares a page with {other:?}"
                                );
                            }
                            let image = (w.from..w.to)
                                .map(|i| if i < written { byte(i) } else { 0 })
                                .collect();
                            flying.push((w, image));
                        }
                    }
                    _ if !flying.is_empty() => {
                        let (w, image) = flying.swap_remove(rand(flying.len() as u64) as usize);
                        let ok = rand(10) != 0;
                        if ok {
                            disk[w.from as usize..w.to as usize].copy_from_slice(&image);
                        }
                        let before = durable;
                        durable = plan.complete(w.id, ok);
                        assert!(ends.contains(&durable), "seed {seed}: {durable} is no end");
                        for i in before..durable {
                            assert_eq!(
                                disk[i as usize],
                                byte(i),
                                "seed {seed}: byte {i} below the durable end {durable} \
                                 is not on the disk"
                            );
                        }
                    }
                    _ => {}
                }
            }
            assert!(durable <= written);
            // Nothing landing later took back what was durable before.
            for i in 0..durable {
                assert_eq!(disk[i as usize], byte(i), "seed {seed}: byte {i} lost");
            }
        }
    }
}
