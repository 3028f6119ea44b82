//! Handing records to the shard that owns their queue, many per mesh message (DESIGN.md: the
//! shard that reads a request decodes it and builds the stored record; the owner only appends
//! and assigns offsets).
//!
//! Records for another shard that are put during one run of the executor's ready tasks (the
//! requests of one socket read, the sends of many connections that woke together) go into one
//! open [`HopBatch`] per destination. The first record of a batch spawns the task that sends
//! it: glommio runs tasks in the order they became ready, so that task runs after the other
//! requests already woken and carries all of their records in one `PutMany`, answered by one
//! message. One cross-shard wake-up per batch instead of two per message. Each put then waits
//! on the batch's `done` watch and takes its own result. Order is kept: batches to one shard
//! leave in order over one FIFO channel, and the owner appends a batch's records in order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use bytes::BytesMut;

use crate::message::record::RecordSlots;
use crate::runtime::OffsetWatch;
use crate::store::{PutResult, StoreError, StoreResult};

/// One record put as [`crate::store::MessageStore::put`] takes it, and its WAIT property.
pub type HopItem = (BytesMut, RecordSlots, bool);

/// Records on their way to one shard, and their results once it answered.
pub struct HopBatch {
    items: RefCell<Vec<HopItem>>,
    results: RefCell<Vec<Option<StoreResult<PutResult>>>>,
    /// Set when the sending task took the items: later puts start a new batch.
    sealed: Cell<bool>,
    /// Moves to 1 when `results` are in.
    done: OffsetWatch,
}

impl HopBatch {
    /// Takes the records to send (once).
    pub fn seal(&self) -> Vec<HopItem> {
        self.sealed.set(true);
        std::mem::take(&mut *self.items.borrow_mut())
    }

    /// Stores the owner's answers (one per record, in order) and releases the waiting puts.
    pub fn finish(&self, results: Vec<StoreResult<PutResult>>) {
        *self.results.borrow_mut() = results.into_iter().map(Some).collect();
        self.done.advance(1);
    }

    /// Fails every record of the batch with `reason` (the owner could not be reached).
    pub fn fail(&self, reason: &str, count: usize) {
        let results = (0..count)
            .map(|_| {
                Err(StoreError::Unwritable {
                    reason: reason.to_string(),
                })
            })
            .collect();
        self.finish(results);
    }

    /// Waits for this batch's answer and takes the result of record `index`.
    pub async fn result(&self, index: usize) -> StoreResult<PutResult> {
        let _ = self.done.wait_for(1).await;
        let taken = self
            .results
            .borrow_mut()
            .get_mut(index)
            .and_then(Option::take);
        taken.unwrap_or_else(|| {
            Err(StoreError::Unwritable {
                reason: "the owning shard gave no answer for this record".into(),
            })
        })
    }
}

/// The open batch per destination shard of one shard.
#[derive(Default)]
pub struct PutHop {
    open: RefCell<HashMap<usize, Rc<HopBatch>>>,
}

impl PutHop {
    /// Adds a record for shard `to`. Returns its batch, its index in it, and whether this
    /// record opened the batch (the caller then spawns the task that sends it).
    pub fn enqueue(&self, to: usize, item: HopItem) -> (Rc<HopBatch>, usize, bool) {
        let mut open = self.open.borrow_mut();
        let fresh = || {
            Rc::new(HopBatch {
                items: RefCell::new(Vec::new()),
                results: RefCell::new(Vec::new()),
                sealed: Cell::new(false),
                done: OffsetWatch::new(0),
            })
        };
        let batch = open.entry(to).or_insert_with(fresh);
        let opened = batch.sealed.get() || batch.items.borrow().is_empty();
        if batch.sealed.get() {
            *batch = fresh();
        }
        let mut items = batch.items.borrow_mut();
        items.push(item);
        (Rc::clone(batch), items.len() - 1, opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> HopItem {
        (
            BytesMut::new(),
            RecordSlots {
                store_timestamp_at: 0,
            },
            false,
        )
    }

    #[test]
    fn records_share_a_batch_until_it_is_sealed_then_a_new_one_opens() {
        let hop = PutHop::default();
        let (a, ia, opened_a) = hop.enqueue(1, item());
        let (b, ib, opened_b) = hop.enqueue(1, item());
        let (c, _, opened_c) = hop.enqueue(2, item());
        assert!(opened_a && !opened_b && opened_c);
        assert!(Rc::ptr_eq(&a, &b) && !Rc::ptr_eq(&a, &c));
        assert_eq!((ia, ib), (0, 1));
        assert_eq!(a.seal().len(), 2);
        let (d, id, opened_d) = hop.enqueue(1, item());
        assert!(opened_d && !Rc::ptr_eq(&a, &d));
        assert_eq!(id, 0);
    }

    #[test]
    fn each_put_takes_its_own_result_and_a_failed_hop_fails_them_all() {
        crate::store::test_support::run(async {
            let hop = PutHop::default();
            let (batch, _, _) = hop.enqueue(1, item());
            hop.enqueue(1, item());
            let ok = |q| PutResult {
                status: crate::store::PutStatus::PutOk,
                physical_offset: 0,
                queue_offset: q,
                store_timestamp: 0,
                wrote_bytes: 0,
            };
            batch.finish(vec![Ok(ok(7)), Ok(ok(8))]);
            assert_eq!(batch.result(1).await.unwrap().queue_offset, 8);
            assert_eq!(batch.result(0).await.unwrap().queue_offset, 7);
            let (failed, _, _) = hop.enqueue(1, item());
            let count = failed.seal().len();
            failed.fail("shard 1 is gone", count);
            assert!(matches!(
                failed.result(0).await,
                Err(StoreError::Unwritable { .. })
            ));
        });
    }
}
