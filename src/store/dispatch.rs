//! The dispatcher: turns an appended record into its consume-queue unit and index entries.
//! The same function serves the append path (called inline, right after the record is placed,
//! so parked pulls can be woken at once) and recovery (called for every record the scan
//! re-reads), so a rebuilt queue is byte-for-byte what the append path built. The dispatched
//! offset is the commitlog's written offset. Never modifies the commitlog.

use super::commitlog::split_physical;
use super::consumequeue::{ConsumeQueues, CqUnit};
use super::index::Index;
use super::io::Storage;
use crate::message::properties::{find, DELAY, KEYS, KEY_SEPARATOR, TAGS, UNIQ_KEY};
use crate::message::record::RecordView;
use crate::message::{sysflag, tags_hash_code};

pub use crate::names::SCHEDULE_TOPIC;

/// Whether a record with this sysFlag gets a consume-queue unit and a queue offset (NOT_TYPE
/// and COMMIT only; prepared and rollback records live in the commitlog alone).
pub fn gets_queue_unit(sys_flag: i32) -> bool {
    matches!(
        sys_flag & sysflag::TRANSACTION_MASK,
        0 | sysflag::TRANSACTION_COMMIT
    )
}

/// Whether a record with this sysFlag is indexed by key (all but ROLLBACK).
pub fn is_indexed(sys_flag: i32) -> bool {
    sys_flag & sysflag::TRANSACTION_MASK != sysflag::TRANSACTION_ROLLBACK
}

/// The consume-queue tag code of a record: the hash of TAGS, or for SCHEDULE_TOPIC_XXXX the
/// delivery time (store time + the delay of its level; Java `computeDeliverTimestamp`).
pub fn tags_code(view: &RecordView<'_>, delay_levels_ms: &[u64]) -> i64 {
    if view.topic == SCHEDULE_TOPIC {
        let level = find(view.properties, DELAY).and_then(|d| d.parse::<usize>().ok());
        let delay = match level {
            Some(l) if l > 0 && !delay_levels_ms.is_empty() => {
                delay_levels_ms[l.min(delay_levels_ms.len()) - 1] as i64
            }
            _ => 1000,
        };
        return view.store_timestamp + delay;
    }
    find(view.properties, TAGS).map_or(0, tags_hash_code)
}

/// Where a dispatch goes.
pub(crate) struct Targets<'a, S: Storage> {
    pub queues: &'a ConsumeQueues<S>,
    /// `None` when `messageIndexEnable` is off, or for records already indexed.
    pub index: Option<&'a Index<S>>,
    pub to_queue: bool,
    pub delay_levels_ms: &'a [u64],
}

/// Dispatches the stored record `view` that ends at `end` (offset in the shard).
pub(crate) fn dispatch<S: Storage>(targets: &Targets<'_, S>, view: &RecordView<'_>, end: u64) {
    let pos = split_physical(view.physical_offset).1;
    assert!(
        pos + view.total_size as u64 == end,
        "dispatch of a misplaced record at {pos}"
    );
    if targets.to_queue && gets_queue_unit(view.sys_flag) {
        let cq = targets.queues.get_or_create(view.topic, view.queue_id);
        let offset = view.queue_offset.max(0) as u64;
        if offset < cq.max_offset() {
            tracing::warn!(
                topic = view.topic,
                queue = view.queue_id,
                offset,
                "record repeats a queue offset; not queued again"
            );
        } else {
            cq.append(
                offset,
                CqUnit {
                    physical_offset: view.physical_offset,
                    size: view.total_size as i32,
                    tags_code: tags_code(view, targets.delay_levels_ms),
                },
            );
        }
    }
    if let Some(index) = targets.index {
        if is_indexed(view.sys_flag) {
            add_keys(index, view);
        }
        index.covered_to(end);
    }
}

fn add_keys<S: Storage>(index: &Index<S>, view: &RecordView<'_>) {
    let (topic, ts, phys) = (view.topic, view.store_timestamp, view.physical_offset);
    if let Some(uniq) = find(view.properties, UNIQ_KEY) {
        index.add(topic, uniq, phys, ts);
    }
    if let Some(keys) = find(view.properties, KEYS) {
        for key in keys.split(KEY_SEPARATOR).filter(|k| !k.is_empty()) {
            index.add(topic, key, phys, ts);
        }
    }
}

/// Whether the record `view` carries `key` as its UNIQ_KEY or one of its KEYS.
pub(crate) fn has_key(view: &RecordView<'_>, key: &str) -> bool {
    find(view.properties, UNIQ_KEY) == Some(key)
        || find(view.properties, KEYS)
            .is_some_and(|keys| keys.split(KEY_SEPARATOR).any(|k| k == key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_and_committed_records_are_queued() {
        assert!(gets_queue_unit(0));
        assert!(gets_queue_unit(
            sysflag::TRANSACTION_COMMIT | sysflag::COMPRESSED
        ));
        assert!(!gets_queue_unit(sysflag::TRANSACTION_PREPARED));
        assert!(!gets_queue_unit(sysflag::TRANSACTION_ROLLBACK));
        assert!(is_indexed(sysflag::TRANSACTION_PREPARED));
        assert!(!is_indexed(sysflag::TRANSACTION_ROLLBACK));
    }
}
