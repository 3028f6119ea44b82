//! Putting records: [`MessageStore::put`] and [`MessageStore::put_batch`]. The synchronous
//! part (validate, assign queue offsets, place and patch each record, copy it into the
//! commitlog tail, dispatch it to its queue and the index) runs without an `.await`, so it is
//! atomic on the shard. Then the put waits according to the flush mode: SYNC_FLUSH with
//! `wait` resolves after an fdatasync that covers the batch (group commit), or reports
//! FLUSH_DISK_TIMEOUT after `syncFlushTimeout` (the records stay stored); ASYNC_FLUSH and
//! `wait == false` resolve at once.

use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future;

use super::commitlog::appender::Durability;
use super::dispatch::{dispatch, gets_queue_unit, Targets};
use super::error::{StoreError, StoreResult};
use super::io::Storage;
use super::{MessageStore, PutBatchResult, PutResult, PutStatus};
use crate::config::FlushDiskType;
use crate::message::record::{RecordSlots, RecordView};

/// A topic that can name a directory.
fn is_path_safe(topic: &str) -> bool {
    !topic.is_empty() && topic != "." && topic != ".." && !topic.contains(['/', '\0'])
}

impl<S: Storage> MessageStore<S> {
    /// Stores one record encoded by `RecordInput::encode` (queue offset, physical offset and
    /// store timestamp are patched in here). `wait` is the message's WAIT property.
    pub async fn put(
        &self,
        record: BytesMut,
        slots: RecordSlots,
        wait: bool,
    ) -> StoreResult<PutResult> {
        let batch = self.put_batch(vec![(record, slots)], wait).await?;
        Ok(PutResult {
            status: batch.status,
            physical_offset: batch.physical_offsets[0],
            queue_offset: batch.queue_offset,
            store_timestamp: batch.store_timestamp,
            wrote_bytes: batch.wrote_bytes,
        })
    }

    /// Stores records of one topic and queue with consecutive queue offsets
    /// (SEND_BATCH_MESSAGE). All are stored or none.
    pub async fn put_batch(
        &self,
        mut records: Vec<(BytesMut, RecordSlots)>,
        wait: bool,
    ) -> StoreResult<PutBatchResult> {
        assert!(!records.is_empty(), "empty batch");
        self.inner.commitlog.check_writable()?;
        self.check_batch(&records)?;
        let len: usize = records.iter().map(|(r, _)| r.len()).sum();
        self.wait_for_room(len).await?;
        let mut result = self.append_batch(&mut records)?;
        if wait {
            result.status = self.settled(self.inner.commitlog.written()).await?;
        }
        Ok(result)
    }

    /// Stores records of any queues that arrived together (a hand-over from another shard),
    /// each checked and appended in order exactly as [`MessageStore::put`] would; those that
    /// wait share one durability (and replication) wait for the last of them.
    pub async fn put_many(
        &self,
        items: Vec<(BytesMut, RecordSlots, bool)>,
    ) -> Vec<StoreResult<PutResult>> {
        let mut out = Vec::with_capacity(items.len());
        let mut waiting = Vec::new();
        for (record, slots, wait) in items {
            let mut one = [(record, slots)];
            let put = async {
                self.inner.commitlog.check_writable()?;
                self.check_batch(&one)?;
                self.wait_for_room(one[0].0.len()).await?;
                self.append_batch(&mut one)
            };
            let put = put.await.map(|b| PutResult {
                status: b.status,
                physical_offset: b.physical_offsets[0],
                queue_offset: b.queue_offset,
                store_timestamp: b.store_timestamp,
                wrote_bytes: b.wrote_bytes,
            });
            if wait && put.is_ok() {
                waiting.push(out.len());
            }
            out.push(put);
        }
        if !waiting.is_empty() {
            let end = self.inner.commitlog.written();
            let settled = self.settled(end).await;
            for i in waiting {
                match (&settled, &mut out[i]) {
                    (Ok(status), Ok(put)) => put.status = *status,
                    (Err(_), slot) => *slot = Err(StoreError::FlushFailed { offset: end }),
                    _ => {}
                }
            }
        }
        out
    }

    /// Waits until the commitlog up to `end` is durable (SYNC_FLUSH) and, on a SYNC_MASTER,
    /// replicated; the status a waiting put reports.
    async fn settled(&self, end: u64) -> StoreResult<PutStatus> {
        let replica = self.inner.replica.borrow().clone();
        let (flushed, replicated) = match replica {
            Some(replica) => {
                let both = future::zip(self.durable(end), replica.wait_replicated(end));
                both.await
            }
            None => (self.durable(end).await, PutStatus::PutOk),
        };
        // Java reports the flush outcome first, then the slave's.
        Ok(match flushed? {
            PutStatus::PutOk => replicated,
            other => other,
        })
    }

    /// Waits until `end` is durable under SYNC_FLUSH (at once under ASYNC_FLUSH).
    async fn durable(&self, end: u64) -> StoreResult<PutStatus> {
        if self.inner.cfg.flush_disk_type != FlushDiskType::SyncFlush {
            return Ok(PutStatus::PutOk);
        }
        match self.inner.commitlog.wait_durable_shared(end).await {
            Durability::Durable => Ok(PutStatus::PutOk),
            Durability::TimedOut => Ok(PutStatus::FlushDiskTimeout),
            Durability::Failed => Err(StoreError::FlushFailed { offset: end }),
        }
    }

    fn check_batch(&self, records: &[(BytesMut, RecordSlots)]) -> StoreResult<()> {
        let max = self.inner.cfg.max_record_bytes();
        let mut first: Option<(&str, i32)> = None;
        for (index, (record, _)) in records.iter().enumerate() {
            if record.len() > max {
                return Err(StoreError::RecordTooLarge {
                    size: record.len(),
                    max,
                });
            }
            let view = RecordView::parse(record)
                .map_err(|source| StoreError::BadRecord { index, source })?;
            if !is_path_safe(view.topic) {
                return Err(StoreError::Config {
                    reason: format!("topic {:?} cannot name a queue directory", view.topic),
                });
            }
            match first {
                None => first = Some((view.topic, view.queue_id)),
                Some((t, q)) if t == view.topic && q == view.queue_id => {}
                Some(_) => return Err(StoreError::MixedBatch),
            }
        }
        Ok(())
    }

    /// Back-pressure: waits while more than `unflushed_max_bytes` wait for the disk, up to
    /// `syncFlushTimeout`, then refuses with `Busy` (puts, and a slave's replicated appends).
    pub async fn wait_for_room(&self, len: usize) -> StoreResult<()> {
        let cl = &self.inner.commitlog;
        let max = self.inner.cfg.unflushed_max_bytes;
        let over = || (cl.written() + len as u64).saturating_sub(cl.flushed() + max);
        let timeout = Duration::from_millis(self.inner.cfg.sync_flush_timeout_ms);
        let deadline = std::time::Instant::now() + timeout;
        while over() > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let outcome = if left.is_zero() {
                Durability::TimedOut
            } else {
                cl.wait_durable(cl.flushed() + over(), left).await
            };
            match outcome {
                Durability::Durable => {}
                Durability::Failed => return cl.check_writable(),
                Durability::TimedOut => {
                    return Err(StoreError::Busy {
                        unflushed_bytes: cl.written() - cl.flushed(),
                    })
                }
            }
        }
        Ok(())
    }

    /// The synchronous part: places every record and dispatches it. No `.await` inside.
    fn append_batch(&self, records: &mut [(BytesMut, RecordSlots)]) -> StoreResult<PutBatchResult> {
        let inner = &*self.inner;
        inner.commitlog.check_writable()?;
        let now = inner.clock.now_ms();
        let targets = Targets {
            queues: &inner.queues,
            index: inner.cfg.message_index_enable.then_some(&inner.index),
            to_queue: true,
            delay_levels_ms: &inner.cfg.delay_levels_ms,
        };
        let mut out = PutBatchResult {
            status: PutStatus::PutOk,
            physical_offsets: Vec::with_capacity(records.len()),
            queue_offset: 0,
            store_timestamp: 0,
            wrote_bytes: 0,
        };
        for (i, (record, slots)) in records.iter_mut().enumerate() {
            let queue_offset = self.next_queue_offset(record)?;
            if i == 0 {
                out.queue_offset = queue_offset;
            }
            let placed = inner.commitlog.append(record, *slots, queue_offset, now)?;
            let view = RecordView::parse(record)
                .map_err(|source| StoreError::BadRecord { index: i, source })?;
            dispatch(&targets, &view, placed.pos + record.len() as u64);
            out.physical_offsets.push(placed.physical_offset);
            out.store_timestamp = placed.store_timestamp;
            out.wrote_bytes += record.len();
        }
        Ok(out)
    }

    /// The queue offset the record will get: its queue's max offset, or 0 for records that
    /// get no queue unit.
    fn next_queue_offset(&self, record: &[u8]) -> StoreResult<i64> {
        let view = RecordView::parse(record)
            .map_err(|source| StoreError::BadRecord { index: 0, source })?;
        if !gets_queue_unit(view.sys_flag) {
            return Ok(0);
        }
        let cq = self.inner.queues.get_or_create(view.topic, view.queue_id);
        Ok(cq.max_offset() as i64)
    }
}
