//! Which shard owns a message queue: a stable function of (topic, queueId) that spreads a
//! topic's queues over all shards (DESIGN.md "Threads and ownership"). The shard count is
//! recorded in the store, so the mapping never changes under existing data.

use crate::message::java_string_hash;

/// The shard that owns queue `queue_id` of `topic`.
pub fn owner_shard(topic: &str, queue_id: i32, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let base = java_string_hash(topic) as u32 as u64;
    ((base + queue_id.max(0) as u64) % shards as u64) as usize
}

/// The shard a physical offset from a client belongs to (bits 45–52); `None` for a value
/// that is no physical offset (negative, or 2^53 and above).
pub fn shard_of_physical(physical_offset: i64) -> Option<usize> {
    crate::store::checked_split_physical(physical_offset).map(|(shard, _)| shard as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_queues_spread_over_all_shards() {
        for shards in 1..=8 {
            let mut seen = vec![0; shards];
            for q in 0..(shards as i32 * 4) {
                seen[owner_shard("TopicTest", q, shards)] += 1;
            }
            assert!(seen.iter().all(|n| *n == 4), "{shards}: {seen:?}");
        }
        assert_eq!(owner_shard("T", 3, 4), owner_shard("T", 3, 4));
    }
}
