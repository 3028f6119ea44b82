//! Typed nameserver calls: routes, cluster info, topics, KV config, broker registration.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{ClientError, Connection};
use crate::protocol::lenient;
use crate::protocol::register::RegisterBrokerBody;
use crate::protocol::route::{ClusterInfo, KvTable, TopicList, TopicRouteData};
use crate::remoting::{request, RemotingCommand};

/// What a broker sends in REGISTER_BROKER / UNREGISTER_BROKER.
#[derive(Debug, Clone)]
pub struct BrokerRegistration {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_addr: String,
    pub broker_id: i64,
    pub ha_server_addr: String,
    pub body: RegisterBrokerBody,
}

/// REGISTER_BROKER's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registered {
    /// For slaves: their master's address.
    pub master_addr: Option<String>,
    /// For slaves: their master's HA address.
    pub ha_server_addr: Option<String>,
}

/// A connection to one nameserver.
pub struct NamesrvClient {
    pub conn: Connection,
}

impl NamesrvClient {
    /// Connects to `addr`.
    pub fn connect(addr: &str, timeout: Duration) -> Result<NamesrvClient, ClientError> {
        Ok(NamesrvClient {
            conn: Connection::connect(addr, timeout)?,
        })
    }

    fn body<T: DeserializeOwned>(&self, response: &RemotingCommand) -> Result<T, ClientError> {
        lenient::from_slice(&response.body).map_err(|e| ClientError::Body {
            addr: self.conn.addr().to_string(),
            reason: e.to_string(),
        })
    }

    /// GET_ROUTEINFO_BY_TOPIC.
    pub fn route(&mut self, topic: &str) -> Result<TopicRouteData, ClientError> {
        let response = self.conn.call(
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic),
        )?;
        self.body(&response)
    }

    /// GET_BROKER_CLUSTER_INFO.
    pub fn cluster_info(&mut self) -> Result<ClusterInfo, ClientError> {
        let response = self
            .conn
            .call(RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO))?;
        self.body(&response)
    }

    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
    pub fn topics(&mut self) -> Result<TopicList, ClientError> {
        let response = self.conn.call(RemotingCommand::request(
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
        ))?;
        self.body(&response)
    }

    /// DELETE_TOPIC_IN_NAMESRV.
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) -> Result<(), ClientError> {
        let mut cmd =
            RemotingCommand::request(request::DELETE_TOPIC_IN_NAMESRV).with_ext("topic", topic);
        if let Some(cluster) = cluster {
            cmd.set_ext("clusterName", cluster);
        }
        self.conn.call(cmd).map(drop)
    }

    /// PUT_KV_CONFIG.
    pub fn put_kv(&mut self, namespace: &str, key: &str, value: &str) -> Result<(), ClientError> {
        let cmd = RemotingCommand::request(request::PUT_KV_CONFIG)
            .with_ext("namespace", namespace)
            .with_ext("key", key)
            .with_ext("value", value);
        self.conn.call(cmd).map(drop)
    }

    /// GET_KV_CONFIG; `Ok(None)` when the key is not set.
    pub fn get_kv(&mut self, namespace: &str, key: &str) -> Result<Option<String>, ClientError> {
        let cmd = RemotingCommand::request(request::GET_KV_CONFIG)
            .with_ext("namespace", namespace)
            .with_ext("key", key);
        match self.conn.call(cmd) {
            Ok(response) => Ok(response.ext("value").map(str::to_string)),
            Err(e) if e.code() == Some(crate::remoting::response::QUERY_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET_KVLIST_BY_NAMESPACE.
    pub fn kv_namespace(&mut self, namespace: &str) -> Result<KvTable, ClientError> {
        let cmd = RemotingCommand::request(request::GET_KVLIST_BY_NAMESPACE)
            .with_ext("namespace", namespace);
        let response = self.conn.call(cmd)?;
        self.body(&response)
    }

    /// REGISTER_BROKER with a JSON body and its CRC.
    pub fn register_broker(
        &mut self,
        broker: &BrokerRegistration,
    ) -> Result<Registered, ClientError> {
        let body = serde_json::to_vec(&broker.body).unwrap_or_default();
        let crc = crc32fast::hash(&body) & 0x7FFF_FFFF;
        let cmd = identity_request(request::REGISTER_BROKER, broker)
            .with_ext("haServerAddr", broker.ha_server_addr.as_str())
            .with_ext("compressed", "false")
            .with_ext("bodyCrc32", crc.to_string())
            .with_body(body);
        let response = self.conn.call(cmd)?;
        Ok(Registered {
            master_addr: response.ext("masterAddr").map(str::to_string),
            ha_server_addr: response.ext("haServerAddr").map(str::to_string),
        })
    }

    /// UNREGISTER_BROKER.
    pub fn unregister_broker(&mut self, broker: &BrokerRegistration) -> Result<(), ClientError> {
        self.conn
            .call(identity_request(request::UNREGISTER_BROKER, broker))
            .map(drop)
    }
}

fn identity_request(code: i32, broker: &BrokerRegistration) -> RemotingCommand {
    RemotingCommand::request(code)
        .with_ext("brokerName", broker.broker_name.as_str())
        .with_ext("brokerAddr", broker.broker_addr.as_str())
        .with_ext("clusterName", broker.cluster_name.as_str())
        .with_ext("brokerId", broker.broker_id.to_string())
}
