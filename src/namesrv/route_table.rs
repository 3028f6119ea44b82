//! The nameserver's route registry (`RouteInfoManager`): clusters, broker groups and their
//! addresses, each topic's queues per broker group, and broker liveness. Single-threaded: owned
//! by the nameserver's executor. Time is passed in, so expiry is testable without sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::register::{DataVersion, TopicConfig, TopicConfigWrapper};
use crate::protocol::route::{BrokerData, ClusterInfo, QueueData, TopicList, TopicRouteData};

/// Broker id of a master.
pub const MASTER_ID: i64 = 0;
/// Write permission bit (`PermName.PERM_WRITE`).
pub const PERM_WRITE: i32 = 2;
/// Read permission bit.
pub const PERM_READ: i32 = 4;

/// Who a broker is, as REGISTER_BROKER / UNREGISTER_BROKER name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerIdentity {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_addr: String,
    pub broker_id: i64,
}

/// A live broker (`BrokerLiveInfo`).
#[derive(Debug, Clone)]
struct LiveBroker {
    last_update: Instant,
    data_version: DataVersion,
    /// The connection it registered through; its close removes the broker at once.
    connection_id: u64,
    ha_server_addr: String,
}

/// What REGISTER_BROKER answers a slave with: its master's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterResult {
    pub master_addr: Option<String>,
    pub ha_server_addr: Option<String>,
}

/// The route registry.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// topic → broker name → queues.
    topic_queues: BTreeMap<String, BTreeMap<String, QueueData>>,
    /// broker name → cluster and addresses.
    brokers: BTreeMap<String, BrokerData>,
    /// cluster → broker names.
    clusters: BTreeMap<String, BTreeSet<String>>,
    /// broker address → liveness.
    live: HashMap<String, LiveBroker>,
}

impl RouteTable {
    /// Registers (or refreshes) a broker. Topic queues are taken from masters only, and only
    /// when its data version changed or it is new, as Java's `registerBroker` does.
    pub fn register(
        &mut self,
        broker: &BrokerIdentity,
        ha_server_addr: &str,
        topics: Option<&TopicConfigWrapper>,
        connection_id: u64,
        now: Instant,
    ) -> RegisterResult {
        self.clusters
            .entry(broker.cluster_name.clone())
            .or_default()
            .insert(broker.broker_name.clone());
        let data = self
            .brokers
            .entry(broker.broker_name.clone())
            .or_insert_with(|| BrokerData {
                broker_addrs: BTreeMap::new(),
                broker_name: broker.broker_name.clone(),
                cluster: broker.cluster_name.clone(),
                enable_acting_master: false,
            });
        // A slave promoted to master (or the reverse) re-registers the same address under
        // another id: drop the old id first.
        data.broker_addrs
            .retain(|id, addr| *addr != broker.broker_addr || *id == broker.broker_id);
        let old = data
            .broker_addrs
            .insert(broker.broker_id, broker.broker_addr.clone());
        let first = old.is_none();
        if let (Some(wrapper), MASTER_ID) = (topics, broker.broker_id) {
            let changed = self
                .live
                .get(&broker.broker_addr)
                .is_none_or(|l| l.data_version != wrapper.data_version);
            if first || changed {
                for config in wrapper.topic_config_table.values() {
                    self.upsert_queue_data(&broker.broker_name, config);
                }
            }
        }
        let data_version = topics.map(|w| w.data_version).unwrap_or_default();
        let previous = self.live.insert(
            broker.broker_addr.clone(),
            LiveBroker {
                last_update: now,
                data_version,
                connection_id,
                ha_server_addr: ha_server_addr.into(),
            },
        );
        if previous.is_none() {
            tracing::info!(broker = %broker.broker_name, addr = %broker.broker_addr, "new broker registered");
        }
        self.master_of(broker)
    }

    fn master_of(&self, broker: &BrokerIdentity) -> RegisterResult {
        if broker.broker_id == MASTER_ID {
            return RegisterResult::default();
        }
        let master = self
            .brokers
            .get(&broker.broker_name)
            .and_then(|d| d.broker_addrs.get(&MASTER_ID));
        match master.and_then(|addr| self.live.get(addr).map(|l| (addr, l))) {
            Some((addr, live)) => RegisterResult {
                master_addr: Some(addr.clone()),
                ha_server_addr: Some(live.ha_server_addr.clone()),
            },
            None => RegisterResult::default(),
        }
    }

    fn upsert_queue_data(&mut self, broker_name: &str, config: &TopicConfig) {
        let queue = QueueData {
            broker_name: broker_name.to_string(),
            perm: config.perm,
            read_queue_nums: config.read_queue_nums,
            topic_sys_flag: config.topic_sys_flag,
            write_queue_nums: config.write_queue_nums,
        };
        self.topic_queues
            .entry(config.topic_name.clone())
            .or_default()
            .insert(broker_name.to_string(), queue);
    }

    /// Removes one broker address (UNREGISTER_BROKER).
    pub fn unregister(&mut self, broker: &BrokerIdentity) {
        self.live.remove(&broker.broker_addr);
        let emptied = match self.brokers.get_mut(&broker.broker_name) {
            Some(data) => {
                data.broker_addrs.remove(&broker.broker_id);
                data.broker_addrs.is_empty()
            }
            None => false,
        };
        if emptied {
            self.remove_broker_name(&broker.broker_name);
        }
    }

    /// Removes every broker that registered through connection `connection_id` (it closed).
    pub fn connection_closed(&mut self, connection_id: u64) {
        let addrs: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.connection_id == connection_id)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in addrs {
            tracing::info!(%addr, "broker connection closed; removing it");
            self.remove_addr(&addr);
        }
    }

    /// Removes brokers not heard from for longer than `expiry`. Returns their addresses.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<String> {
        let stale: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.last_update) > expiry)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in &stale {
            tracing::warn!(%addr, expiry_s = expiry.as_secs(), "broker expired; removing it");
            self.remove_addr(addr);
        }
        stale
    }

    fn remove_addr(&mut self, addr: &str) {
        self.live.remove(addr);
        let mut emptied = Vec::new();
        for (name, data) in self.brokers.iter_mut() {
            data.broker_addrs.retain(|_, a| a != addr);
            if data.broker_addrs.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            self.remove_broker_name(&name);
        }
    }

    fn remove_broker_name(&mut self, broker_name: &str) {
        if let Some(data) = self.brokers.remove(broker_name) {
            if let Some(names) = self.clusters.get_mut(&data.cluster) {
                names.remove(broker_name);
                if names.is_empty() {
                    self.clusters.remove(&data.cluster);
                }
            }
        }
        self.topic_queues.retain(|_, queues| {
            queues.remove(broker_name);
            !queues.is_empty()
        });
    }

    /// The route of `topic`, or `None` when it has no queues or no broker group with an address.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topic_queues.get(topic)?;
        let broker_datas: Vec<BrokerData> = queues
            .keys()
            .filter_map(|name| self.brokers.get(name))
            .filter(|d| !d.broker_addrs.is_empty())
            .cloned()
            .collect();
        if broker_datas.is_empty() {
            return None;
        }
        Some(TopicRouteData {
            broker_datas,
            filter_server_table: BTreeMap::new(),
            order_topic_conf: None,
            queue_datas: queues.values().cloned().collect(),
        })
    }

    /// Cluster membership (GET_BROKER_CLUSTER_INFO).
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.brokers.clone(),
            cluster_addr_table: self.clusters.clone(),
        }
    }

    /// Every topic with queues (GET_ALL_TOPIC_LIST_FROM_NAMESERVER).
    pub fn topics(&self) -> TopicList {
        TopicList {
            topic_list: self.topic_queues.keys().cloned().collect(),
        }
    }

    /// Topics served by the brokers of `cluster` (GET_TOPICS_BY_CLUSTER).
    pub fn topics_of_cluster(&self, cluster: &str) -> TopicList {
        let names = self.clusters.get(cluster);
        let topic_list = self
            .topic_queues
            .iter()
            .filter(|(_, q)| q.keys().any(|b| names.is_some_and(|n| n.contains(b))))
            .map(|(t, _)| t.clone())
            .collect();
        TopicList { topic_list }
    }

    /// Deletes a topic everywhere, or only from the brokers of `cluster` (DELETE_TOPIC_IN_NAMESRV).
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) {
        let Some(cluster) = cluster else {
            self.topic_queues.remove(topic);
            return;
        };
        let names = self.clusters.get(cluster).cloned().unwrap_or_default();
        if let Some(queues) = self.topic_queues.get_mut(topic) {
            queues.retain(|broker, _| !names.contains(broker));
            if queues.is_empty() {
                self.topic_queues.remove(topic);
            }
        }
    }

    /// Clears (`wipe`) or restores the write bit on every topic of `broker_name`; returns the
    /// number of topics touched (WIPE_WRITE_PERM_OF_BROKER / ADD_WRITE_PERM_OF_BROKER).
    pub fn set_write_perm(&mut self, broker_name: &str, wipe: bool) -> usize {
        let mut count = 0;
        for queues in self.topic_queues.values_mut() {
            if let Some(q) = queues.get_mut(broker_name) {
                q.perm = if wipe {
                    q.perm & !PERM_WRITE
                } else {
                    PERM_READ | PERM_WRITE
                };
                count += 1;
            }
        }
        count
    }

    /// True when `broker_addr` registered with `version` (QUERY_DATA_VERSION); refreshes its
    /// liveness as Java does.
    pub fn data_version_matches(
        &mut self,
        broker_addr: &str,
        version: &DataVersion,
        now: Instant,
    ) -> bool {
        match self.live.get_mut(broker_addr) {
            Some(live) => {
                live.last_update = now;
                live.data_version == *version
            }
            None => false,
        }
    }

    /// The data version of a live broker.
    pub fn data_version(&self, broker_addr: &str) -> Option<DataVersion> {
        self.live.get(broker_addr).map(|l| l.data_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, broker_id: i64, addr: &str) -> BrokerIdentity {
        BrokerIdentity {
            cluster_name: "c".into(),
            broker_name: name.into(),
            broker_addr: addr.into(),
            broker_id,
        }
    }

    fn wrapper(counter: i64, topics: &[(&str, i32)]) -> TopicConfigWrapper {
        let mut w = TopicConfigWrapper {
            data_version: DataVersion {
                counter,
                timestamp: 1,
            },
            ..Default::default()
        };
        for (name, queues) in topics {
            let config = TopicConfig {
                order: false,
                perm: 6,
                read_queue_nums: *queues,
                topic_filter_type: "SINGLE_TAG".into(),
                topic_name: name.to_string(),
                topic_sys_flag: 0,
                write_queue_nums: *queues,
            };
            w.topic_config_table.insert(name.to_string(), config);
        }
        w
    }

    #[test]
    fn expiry_is_by_last_registration() {
        let mut t = RouteTable::default();
        let t0 = Instant::now();
        let expiry = Duration::from_secs(120);
        t.register(
            &id("a", 0, "h:1"),
            "h:2",
            Some(&wrapper(1, &[("T", 4)])),
            1,
            t0,
        );
        assert!(t.expire(t0 + Duration::from_secs(119), expiry).is_empty());
        t.register(
            &id("a", 0, "h:1"),
            "h:2",
            Some(&wrapper(1, &[("T", 4)])),
            1,
            t0 + Duration::from_secs(100),
        );
        assert!(t.expire(t0 + Duration::from_secs(219), expiry).is_empty());
        assert_eq!(
            t.expire(t0 + Duration::from_secs(221), expiry),
            vec!["h:1".to_string()]
        );
        assert!(t.route("T").is_none());
        assert!(t.cluster_info().cluster_addr_table.is_empty());
    }

    #[test]
    fn topics_follow_the_data_version_of_masters_only() {
        let mut t = RouteTable::default();
        let now = Instant::now();
        t.register(
            &id("a", 0, "h:1"),
            "",
            Some(&wrapper(1, &[("T", 4)])),
            1,
            now,
        );
        // Same version: a changed table is ignored, as Java does.
        t.register(
            &id("a", 0, "h:1"),
            "",
            Some(&wrapper(1, &[("T", 8)])),
            1,
            now,
        );
        assert_eq!(t.route("T").unwrap().queue_datas[0].write_queue_nums, 4);
        t.register(
            &id("a", 0, "h:1"),
            "",
            Some(&wrapper(2, &[("T", 8)])),
            1,
            now,
        );
        assert_eq!(t.route("T").unwrap().queue_datas[0].write_queue_nums, 8);
        // A slave's topic table is not taken.
        t.register(
            &id("a", 1, "h:3"),
            "",
            Some(&wrapper(9, &[("S", 1)])),
            2,
            now,
        );
        assert!(t.route("S").is_none());
        // Closing the master's connection leaves the slave serving the route.
        t.connection_closed(1);
        let route = t.route("T").unwrap();
        assert_eq!(
            route.broker_datas[0]
                .broker_addrs
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [1]
        );
    }

    #[test]
    fn address_moving_to_another_id_is_replaced() {
        let mut t = RouteTable::default();
        let now = Instant::now();
        t.register(&id("a", 1, "h:1"), "", None, 1, now);
        t.register(&id("a", 0, "h:1"), "", None, 1, now);
        let info = t.cluster_info();
        assert_eq!(
            info.broker_addr_table["a"]
                .broker_addrs
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [0]
        );
    }
}
