//! Route and cluster bodies served by the nameserver: `TopicRouteData` (GET_ROUTEINFO_BY_TOPIC),
//! `ClusterInfo` (GET_BROKER_CLUSTER_INFO), `TopicList`, `KVTable`.
//!
//! Emitted as compact, standard JSON with fastjson's sorted keys and quoted numeric map keys,
//! which every client parses: Go splits `brokerAddrs` by hand (no whitespace allowed, the member
//! must be present), and the Rust client requires `enableActingMaster`, `filterServerTable` and
//! `topicSysFlag` (PROTOCOL.md §6.4). Struct fields are declared in alphabetical order so serde
//! writes them in fastjson's order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A topic's queues on one broker group (`QueueData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    pub broker_name: String,
    pub perm: i32,
    pub read_queue_nums: i32,
    #[serde(default)]
    pub topic_sys_flag: i32,
    pub write_queue_nums: i32,
}

/// One broker group: its name, cluster and addresses by broker id (`BrokerData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    /// Broker id (0 = master) to `ip:port`; always emitted, `{}` when empty (Go panics on a
    /// missing member).
    #[serde(default)]
    pub broker_addrs: BTreeMap<i64, String>,
    pub broker_name: String,
    pub cluster: String,
    /// A 5.x field: the Rust client refuses a route without it.
    #[serde(default)]
    pub enable_acting_master: bool,
}

/// The route of one topic (`TopicRouteData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicRouteData {
    pub broker_datas: Vec<BrokerData>,
    /// Always `{}` (filter servers are gone in 4.x); required by the Rust client.
    #[serde(default)]
    pub filter_server_table: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
}

/// Cluster membership (`ClusterInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// A list of topic names (`TopicList`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopicList {
    pub topic_list: BTreeSet<String>,
}

/// A string-to-string table (`KVTable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KvTable {
    pub table: BTreeMap<String, String>,
}

/// Serialises a body as compact JSON. These types hold only strings, integers and maps with
/// string or integer keys, for which serde_json cannot fail.
pub fn to_json_body<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_json_is_compact_sorted_and_complete() {
        let route = TopicRouteData {
            broker_datas: vec![BrokerData {
                broker_addrs: BTreeMap::from([(0, "127.0.0.1:10911".into()), (1, "b:1".into())]),
                broker_name: "broker-a".into(),
                cluster: "DefaultCluster".into(),
                enable_acting_master: false,
            }],
            filter_server_table: BTreeMap::new(),
            order_topic_conf: None,
            queue_datas: vec![QueueData {
                broker_name: "broker-a".into(),
                perm: 6,
                read_queue_nums: 4,
                topic_sys_flag: 0,
                write_queue_nums: 4,
            }],
        };
        let text = String::from_utf8(to_json_body(&route)).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:10911","1":"b:1"},"#,
                r#""brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"#,
                r#""filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"#,
                r#""readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
            )
        );
        let back: TopicRouteData = serde_json::from_str(&text).unwrap();
        assert_eq!(back, route);
    }
}
