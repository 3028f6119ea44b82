//! The nameserver's request processor (`DefaultRequestProcessor`): one function per request
//! code, all synchronous on the nameserver's executor.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::net::{Busy, Connection, Handler, Reply};
use crate::protocol::register::{DataVersion, RegisterBrokerBody};
use crate::protocol::route::to_json_body;
use crate::protocol::{FieldError, Fields};
use crate::refusal::{self, Refusal, Refusals};
use crate::remoting::{request as req, response as resp, ExtFields, RemotingCommand};

use super::kv_config::KvConfig;
use super::route_table::{BrokerIdentity, RouteTable};

/// KV namespace holding `topic → "brokerA:4;brokerB:4"` for ordered topics.
pub use crate::names::NAMESPACE_ORDER_TOPIC_CONFIG;

/// Settings the processor needs.
#[derive(Debug, Clone)]
pub struct ProcessorOptions {
    /// Put `orderTopicConf` from the KV store into routes (`orderMessageEnable`).
    pub order_message_enable: bool,
    /// A broker not heard from for this long is removed.
    pub broker_expiry: Duration,
    /// `key=value` lines served by GET_NAMESRV_CONFIG.
    pub config_properties: Vec<(String, String)>,
    /// The controller embedded in this nameserver (`enableControllerInNamesrv`): its request
    /// codes are handed to it.
    pub controller: Option<crate::controller::ControllerHandle>,
}

/// The nameserver state and its request handling.
pub struct NamesrvProcessor {
    pub routes: RefCell<RouteTable>,
    pub kv: RefCell<KvConfig>,
    options: ProcessorOptions,
    /// Refused requests: per-peer counts and their rate-limited WARN lines.
    pub refusals: Refusals,
}

/// A failed request: response code and remark.
type Failure = (i32, String);

impl From<FieldError> for (i32, String) {
    fn from(e: FieldError) -> Self {
        (resp::SYSTEM_ERROR, e.to_string())
    }
}

impl NamesrvProcessor {
    /// A processor over `kv` with an empty route table.
    pub fn new(kv: KvConfig, options: ProcessorOptions) -> NamesrvProcessor {
        NamesrvProcessor {
            routes: RefCell::new(RouteTable::default()),
            kv: RefCell::new(kv),
            options,
            refusals: Refusals::default(),
        }
    }

    /// Drops brokers past their expiry; run every `brokerScanIntervalMs`.
    pub fn scan_expired(&self, now: Instant) -> Vec<String> {
        self.routes
            .borrow_mut()
            .expire(now, self.options.broker_expiry)
    }

    /// Processes one request received from `peer` on connection `connection_id`; a refusal is
    /// counted and logged (rate-limited, [`crate::refusal`]).
    pub fn process(
        &self,
        connection_id: u64,
        peer: SocketAddr,
        request: &RemotingCommand,
    ) -> RemotingCommand {
        let result = match request.code {
            req::REGISTER_BROKER => self.register_broker(connection_id, request),
            req::UNREGISTER_BROKER => self.unregister_broker(request),
            req::GET_ROUTEINFO_BY_TOPIC => self.route(request),
            req::GET_BROKER_CLUSTER_INFO => Ok(request
                .success_to()
                .with_body(to_json_body(&self.routes.borrow().cluster_info()))),
            req::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => Ok(request
                .success_to()
                .with_body(to_json_body(&self.routes.borrow().topics()))),
            req::GET_TOPICS_BY_CLUSTER => self.topics_by_cluster(request),
            req::DELETE_TOPIC_IN_NAMESRV => self.delete_topic(request),
            req::WIPE_WRITE_PERM_OF_BROKER => self.write_perm(request, true),
            req::ADD_WRITE_PERM_OF_BROKER => self.write_perm(request, false),
            req::PUT_KV_CONFIG | req::GET_KV_CONFIG | req::DELETE_KV_CONFIG => {
                self.kv_config(request)
            }
            req::GET_KVLIST_BY_NAMESPACE => self.kv_namespace(request),
            req::QUERY_DATA_VERSION => self.query_data_version(request),
            req::GET_NAMESRV_CONFIG => Ok(self.namesrv_config(request)),
            code => Err((
                resp::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {code} not supported"),
            )),
        };
        result.unwrap_or_else(|(code, remark)| {
            if refusal::is_refusal(request.code, code) {
                let refused = Refusal {
                    peer,
                    request_code: request.code,
                    response_code: code,
                    remark: &remark,
                };
                let client_id = || request.ext("clientID").map(str::to_string);
                self.refusals.record(refused, client_id);
            }
            request.error_to(code, remark)
        })
    }

    fn register_broker(
        &self,
        connection_id: u64,
        request: &RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let broker = identity(request)?;
        let ha_server_addr = request
            .opt_str("haServerAddr")
            .unwrap_or_default()
            .to_string();
        let expected_crc = request.opt_i64("bodyCrc32")?.unwrap_or(0);
        if expected_crc != 0 {
            let actual = i64::from(crc32fast::hash(&request.body) & 0x7FFF_FFFF);
            if actual != expected_crc {
                let remark =
                    format!("crc32 not match: header says {expected_crc}, body has {actual}");
                return Err((resp::SYSTEM_ERROR, remark));
            }
        }
        let body = RegisterBrokerBody::decode(&request.body, request.bool_or("compressed", false))
            .map_err(|e| (resp::SYSTEM_ERROR, e.to_string()))?;
        let wrapper = body.topic_config_serialize_wrapper;
        let result = self.routes.borrow_mut().register(
            &broker,
            &ha_server_addr,
            Some(&wrapper),
            connection_id,
            Instant::now(),
        );
        let mut response = request.success_to();
        let mut fields = ExtFields::new();
        if let Some(addr) = result.ha_server_addr {
            fields.insert("haServerAddr", addr);
        }
        if let Some(addr) = result.master_addr {
            fields.insert("masterAddr", addr);
        }
        response.ext_fields = Some(fields);
        if let Some(table) = self.kv.borrow().namespace(NAMESPACE_ORDER_TOPIC_CONFIG) {
            response.body = to_json_body(&table).into();
        }
        Ok(response)
    }

    fn unregister_broker(&self, request: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let broker = identity(request)?;
        self.routes.borrow_mut().unregister(&broker);
        tracing::info!(broker = %broker.broker_name, addr = %broker.broker_addr, "broker unregistered");
        Ok(request.success_to())
    }

    fn route(&self, request: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let topic = request.req_str("topic")?;
        let Some(mut route) = self.routes.borrow().route(topic) else {
            let remark = format!(
                "No topic route info in name server for the topic: {topic}\n\
                 See http://rocketmq.apache.org/docs/faq/ for further details."
            );
            return Err((resp::TOPIC_NOT_EXIST, remark));
        };
        if self.options.order_message_enable {
            route.order_topic_conf = self
                .kv
                .borrow()
                .get(NAMESPACE_ORDER_TOPIC_CONFIG, topic)
                .map(str::to_string);
        }
        Ok(request.success_to().with_body(to_json_body(&route)))
    }

    fn topics_by_cluster(&self, request: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let cluster = request.req_str("cluster")?;
        let topics = self.routes.borrow().topics_of_cluster(cluster);
        Ok(request.success_to().with_body(to_json_body(&topics)))
    }

    fn delete_topic(&self, request: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let topic = request.req_str("topic")?;
        self.routes
            .borrow_mut()
            .delete_topic(topic, request.opt_str("clusterName"));
        Ok(request.success_to())
    }

    fn write_perm(
        &self,
        request: &RemotingCommand,
        wipe: bool,
    ) -> Result<RemotingCommand, Failure> {
        let broker_name = request.req_str("brokerName")?;
        let count = self.routes.borrow_mut().set_write_perm(broker_name, wipe);
        let key = if wipe {
            "wipeTopicCount"
        } else {
            "addTopicCount"
        };
        Ok(request.success_to().with_ext(key, count.to_string()))
    }

    fn kv_config(&self, request: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let namespace = request.req_str("namespace")?;
        let key = request.req_str("key")?;
        let io_failure =
            |e: std::io::Error| (resp::SYSTEM_ERROR, format!("cannot persist KV config: {e}"));
        match request.code {
            req::PUT_KV_CONFIG => {
                let value = request.req_str("value")?;
                self.kv
                    .borrow_mut()
                    .put(namespace, key, value)
                    .map_err(io_failure)?;
                Ok(request.success_to())
            }
            req::GET_KV_CONFIG => match self.kv.borrow().get(namespace, key) {
                Some(value) => Ok(request.success_to().with_ext("value", value)),
                None => Err((
                    resp::QUERY_NOT_FOUND,
                    format!("No config item, Namespace: {namespace} Key: {key}"),
                )),
            },
            _ => {
                self.kv
                    .borrow_mut()
                    .delete(namespace, key)
                    .map_err(io_failure)?;
                Ok(request.success_to())
            }
        }
    }

    fn kv_namespace(&self, request: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let namespace = request.req_str("namespace")?;
        match self.kv.borrow().namespace(namespace) {
            Some(table) => Ok(request.success_to().with_body(to_json_body(&table))),
            None => Err((
                resp::QUERY_NOT_FOUND,
                format!("No config item, Namespace: {namespace}"),
            )),
        }
    }

    fn query_data_version(&self, request: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let broker_addr = request.req_str("brokerAddr")?;
        let version: DataVersion =
            crate::protocol::lenient::from_slice(&request.body).map_err(|e| {
                (
                    resp::SYSTEM_ERROR,
                    format!("body is not a DataVersion: {e}"),
                )
            })?;
        let mut routes = self.routes.borrow_mut();
        let changed = !routes.data_version_matches(broker_addr, &version, Instant::now());
        let mut response = request
            .success_to()
            .with_ext("changed", changed.to_string());
        if let Some(current) = routes.data_version(broker_addr) {
            response.body = to_json_body(&current).into();
        }
        Ok(response)
    }

    fn namesrv_config(&self, request: &RemotingCommand) -> RemotingCommand {
        let text: String = self
            .options
            .config_properties
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        request.success_to().with_body(text.into_bytes())
    }
}

fn identity(request: &RemotingCommand) -> Result<BrokerIdentity, FieldError> {
    Ok(BrokerIdentity {
        cluster_name: request.req_str("clusterName")?.to_string(),
        broker_name: request.req_str("brokerName")?.to_string(),
        broker_addr: request.req_str("brokerAddr")?.to_string(),
        broker_id: request.req_i64("brokerId")?,
    })
}

impl Handler for NamesrvProcessor {
    fn handle(
        self: &Rc<Self>,
        conn: &Rc<Connection>,
        request: RemotingCommand,
        busy: Busy,
    ) -> Reply {
        if let Some(controller) = &self.options.controller {
            if crate::controller::ControllerHandle::serves(request.code) {
                return crate::controller::server::forward(controller, request, busy);
            }
        }
        Reply::Now(Some(self.process(conn.id, conn.peer, &request)))
    }

    fn on_close(&self, conn: &Connection) {
        self.routes.borrow_mut().connection_closed(conn.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_peer_and_not_found_routes_are_not() {
        let options = ProcessorOptions {
            order_message_enable: false,
            broker_expiry: Duration::from_secs(120),
            config_properties: Vec::new(),
            controller: None,
        };
        let processor = NamesrvProcessor::new(KvConfig::load(None).unwrap(), options);
        let peer: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let route = RemotingCommand::request(req::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "T");
        let answer = processor.process(1, peer, &route);
        assert_eq!(answer.code, resp::TOPIC_NOT_EXIST);
        assert_eq!(processor.refusals.of(peer), 0);
        // A REGISTER_BROKER without its identity, and a data version that is not one.
        let register = RemotingCommand::request(req::REGISTER_BROKER);
        assert_eq!(
            processor.process(1, peer, &register).code,
            resp::SYSTEM_ERROR
        );
        let version = RemotingCommand::request(req::QUERY_DATA_VERSION)
            .with_ext("brokerAddr", "127.0.0.1:10911")
            .with_body(br#"{"counter":"x"}"#.to_vec());
        let answer = processor.process(1, peer, &version);
        assert_eq!(answer.code, resp::SYSTEM_ERROR);
        let remark = answer.remark.unwrap_or_default();
        assert!(
            remark.contains(r#"counter: "x" is not an integer"#),
            "{remark}"
        );
        assert_eq!(processor.refusals.of(peer), 2);
    }
}
