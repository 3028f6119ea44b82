//! A shard's message counters (GET_BROKER_RUNTIME_INFO's totals and TPS) and its per-topic
//! and per-group stats items (VIEW_BROKER_STATS_DATA, consume TPS), bumped by the send, reply
//! and pull processors; the control shard also keeps the samples of the items an admin asked
//! for. Read by the admin requests through `processor/admin_shards.rs`.

use std::cell::Cell;

use crate::broker::mesh_proto::ShardCounters;
use crate::broker::stats::{BrokerStatsData, StatsHistory, StatsItems, Totals};
use crate::store::{Clock, SystemClock};

/// One shard's counters and stats items.
#[derive(Debug)]
pub struct ShardStats {
    boot_ms: i64,
    put_msgs: Cell<u64>,
    put_bytes: Cell<u64>,
    get_found: Cell<u64>,
    get_miss: Cell<u64>,
    get_msgs: Cell<u64>,
    /// Per-topic and per-group items under Java's stats names (VIEW_BROKER_STATS_DATA).
    pub items: StatsItems,
    /// Samples of the items asked for (control shard).
    item_history: StatsHistory,
}

impl Default for ShardStats {
    fn default() -> ShardStats {
        ShardStats {
            boot_ms: SystemClock.now_ms(),
            put_msgs: Cell::new(0),
            put_bytes: Cell::new(0),
            get_found: Cell::new(0),
            get_miss: Cell::new(0),
            get_msgs: Cell::new(0),
            items: Default::default(),
            item_history: Default::default(),
        }
    }
}

impl ShardStats {
    /// When the shard started (ms).
    pub fn boot_ms(&self) -> i64 {
        self.boot_ms
    }

    /// A stored send of `messages` messages and `bytes` bytes.
    pub fn count_put(&self, messages: usize, bytes: usize) {
        self.put_msgs.set(self.put_msgs.get() + messages as u64);
        self.put_bytes.set(self.put_bytes.get() + bytes as u64);
        crate::runtime::colocate::count_puts(messages);
    }

    /// An answered pull that carried `messages` messages (0: it found none).
    pub fn count_pull(&self, messages: usize) {
        if messages == 0 {
            self.get_miss.set(self.get_miss.get() + 1);
        } else {
            self.get_found.set(self.get_found.get() + 1);
            self.get_msgs.set(self.get_msgs.get() + messages as u64);
        }
    }

    /// The message counters (the commitlog figures are the store's, left at their defaults).
    pub fn message_counters(&self) -> ShardCounters {
        ShardCounters {
            put_msgs: self.put_msgs.get(),
            put_bytes: self.put_bytes.get(),
            get_found: self.get_found.get(),
            get_miss: self.get_miss.get(),
            get_msgs: self.get_msgs.get(),
            ..ShardCounters::default()
        }
    }

    /// An item measured over the minute, hour and day from its totals over every shard `now`
    /// (kept as this shard's sample of it).
    pub fn measure(&self, name: &str, key: &str, now_ms: i64, now: Totals) -> BrokerStatsData {
        self.item_history
            .measure(name, key, now_ms, now, self.boot_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_count_found_and_missed() {
        let stats = ShardStats::default();
        stats.count_pull(0);
        stats.count_pull(3);
        stats.count_put(2, 400);
        let c = stats.message_counters();
        assert_eq!((c.get_miss, c.get_found, c.get_msgs), (1, 1, 3));
        assert_eq!((c.put_msgs, c.put_bytes), (2, 400));
        assert_eq!(
            c.commitlog_max, 0,
            "the store's figures are not counted here"
        );
    }
}
