//! Tests driven by the crates.io client `rocketmq-client-rust` 1.0.0 against our nameserver.
//!
//! The client's public entry point used is `rocketmq_client_rust::ClientInstanceHandle`
//! (`src/lib.rs`, module `cluster_session`), a managed `MQClientInstance`:
//! * `topic_route` → `MQClientAPIImpl::get_topic_route_info_from_name_server`
//!   (`src/implementation/mq_client_api_impl/route.rs`): GET_ROUTEINFO_BY_TOPIC over TCP, body
//!   decoded by `rocketmq_protocol` `TopicRouteData::decode`; code 17 TOPIC_NOT_EXIST is surfaced
//!   as `Ok(None)`, any other failure code as `Err`.
//! * `broker_cluster_info` → `MQClientAPIImpl::get_broker_cluster_info`
//!   (`src/implementation/mq_client_api_impl/admin.rs`): GET_BROKER_CLUSTER_INFO, body decoded
//!   by `ClusterInfo::decode`.
//!
//! Every client object needs a `ClientRuntime`, which can only be built from a
//! `rocketmq_runtime::RuntimeOwner` (the client never uses the caller's tokio runtime), hence
//! the `rocketmq-runtime` dev-dependency. The owner runs its own tokio runtime; the tests are
//! plain `#[test]`s that `block_on` it and assert outside of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketmq_client_rust::{
    ClientConfig, ClientInstanceHandle, ClientRuntime, ClientRuntimeConfig, TelemetryHandle,
};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner, ShutdownReport};

use ringmq::client::NamesrvClient;

use crate::harness::{self, TestNamesrv};

const TOPIC: &str = "RustClientTopic";
const CLUSTER: &str = "RustCluster";
const BROKER: &str = "rust-broker-a";
const MASTER_ADDR: &str = "127.0.0.1:20911";
const SLAVE_ADDR: &str = "127.0.0.1:20921";
/// Timeout handed to each client call.
const CALL_MILLIS: u64 = 3_000;

/// A started `rocketmq-client-rust` client instance pointed at one nameserver; `close` stops
/// it and asserts that every task it started was joined.
struct RustClient {
    owner: Option<RuntimeOwner>,
    runtime: Arc<ClientRuntime>,
    handle: ClientInstanceHandle,
}

impl RustClient {
    /// Builds and starts a client instance named `name` (also the runtime scope).
    fn start(namesrv_addr: &str, name: &'static str, domain_id: u64) -> RustClient {
        let owner = RuntimeOwner::plan(RuntimeConfig {
            worker_threads: 2,
            thread_name: format!("rmq-{name}"),
            ..Default::default()
        })
        .expect("runtime config is valid")
        .build()
        .expect("runtime owner builds");
        let runtime = ClientRuntime::try_new(
            owner.root_context().component(name),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .expect("client runtime builds");
        let mut config = ClientConfig::default();
        config.set_instance_name(name.into());
        config.set_namesrv_addr(namesrv_addr.into());
        config.set_mq_client_api_timeout(CALL_MILLIS);
        let handle = ClientInstanceHandle::get_or_create(&runtime, domain_id, config, None)
            .expect("client instance");
        owner
            .block_on(handle.start())
            .expect("client instance starts against our nameserver");
        RustClient {
            owner: Some(owner),
            runtime,
            handle,
        }
    }

    /// Runs `future` on the client's own runtime.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.owner
            .as_ref()
            .expect("runtime owner alive")
            .block_on(future)
    }

    /// Stops the instance and the runtimes; asserts every task was joined.
    fn close(mut self) {
        for report in self.shutdown_tasks() {
            assert!(report.is_healthy(), "client shutdown: {}", report.to_json());
        }
    }

    /// Releases the instance, joins the client runtime's and the owner's tasks, stops the
    /// owner's tokio runtime; returns the two task reports.
    fn shutdown_tasks(&mut self) -> [ShutdownReport; 2] {
        let owner = self.owner.take().expect("runtime owner alive");
        let reports = owner.block_on(async {
            self.handle.shutdown_owned().await;
            [self.runtime.shutdown().await, owner.shutdown_tasks().await]
        });
        let _ = owner.shutdown_runtime_blocking_with_timeout(Duration::from_secs(5));
        reports
    }
}

impl Drop for RustClient {
    /// Best-effort stop when a test failed before `close`.
    fn drop(&mut self) {
        if self.owner.is_some() {
            let _ = self.shutdown_tasks();
        }
    }
}

/// A nameserver holding `BROKER` (master id 0 + slave id 1) in `CLUSTER` with `TOPIC`
/// (4 queues, perm 6), and the connection that registered them: like Java's, our nameserver
/// drops a broker as soon as the connection it registered through closes, so keep it open.
fn namesrv_with_broker_group() -> (TestNamesrv, NamesrvClient) {
    let namesrv = TestNamesrv::start();
    let mut ours = namesrv.client();
    for (id, addr) in [(0, MASTER_ADDR), (1, SLAVE_ADDR)] {
        ours.register_broker(&harness::broker(
            CLUSTER,
            BROKER,
            id,
            addr,
            &[harness::topic(TOPIC, 4, 6)],
        ))
        .expect("register broker");
    }
    (namesrv, ours)
}

/// A parsed `brokerAddrs` as `(id, addr)` pairs sorted by id.
fn sorted_addrs<V: ToString>(addrs: &HashMap<u64, V>) -> Vec<(u64, String)> {
    let mut pairs: Vec<_> = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
    pairs.sort();
    pairs
}

fn master_and_slave() -> Vec<(u64, String)> {
    vec![(0, MASTER_ADDR.to_string()), (1, SLAVE_ADDR.to_string())]
}

#[test]
fn rust_client_parses_topic_route() {
    let (namesrv, _registrar) = namesrv_with_broker_group();
    let client = RustClient::start(&namesrv.addr, "ringmq-it-route", 91_001);
    let route = client.block_on(client.handle.topic_route(TOPIC, CALL_MILLIS));
    client.close();

    let route = route
        .unwrap_or_else(|e| panic!("rocketmq-client-rust failed on our route answer: {e}"))
        .expect("route present (client reported TOPIC_NOT_EXIST)");
    assert_eq!(route.queue_datas.len(), 1, "{route:?}");
    let queue = &route.queue_datas[0];
    assert_eq!(queue.broker_name.as_str(), BROKER);
    assert_eq!((queue.read_queue_nums, queue.write_queue_nums), (4, 4));
    assert_eq!((queue.perm, queue.topic_sys_flag), (6, 0));

    assert_eq!(route.broker_datas.len(), 1, "{route:?}");
    let broker = &route.broker_datas[0];
    assert_eq!(broker.broker_name().as_str(), BROKER);
    assert_eq!(broker.cluster(), CLUSTER);
    assert_eq!(sorted_addrs(broker.broker_addrs()), master_and_slave());
    assert!(!broker.enable_acting_master());
    let selected = broker.select_broker_addr_with_index(1);
    assert_eq!(
        selected.as_deref(),
        Some(MASTER_ADDR),
        "client picks the master"
    );

    assert!(route.filter_server_table.is_empty(), "{route:?}");
    assert_eq!(route.order_topic_conf, None);
}

#[test]
fn rust_client_reports_unknown_topic_as_not_exist() {
    let (namesrv, _registrar) = namesrv_with_broker_group();
    let client = RustClient::start(&namesrv.addr, "ringmq-it-no-topic", 91_002);
    let started = Instant::now();
    let unknown = client.block_on(client.handle.topic_route("NoSuchRustTopic", CALL_MILLIS));
    let elapsed = started.elapsed();
    // The known topic still resolves through the same client afterwards.
    let known = client.block_on(client.handle.topic_route(TOPIC, CALL_MILLIS));
    client.close();

    // `topic_route` maps code 17 (and only 17) to `Ok(None)`; any other code, a decode error or
    // a timeout is an `Err`.
    match unknown {
        Ok(None) => {}
        Ok(Some(route)) => panic!("unknown topic got a route: {route:?}"),
        Err(e) => panic!("unknown topic: expected TOPIC_NOT_EXIST, client error: {e}"),
    }
    let limit = Duration::from_millis(CALL_MILLIS);
    assert!(elapsed < limit, "answer took {elapsed:?}");
    let known = known.expect("known topic after a miss");
    let known = known.expect("known topic has a route");
    assert_eq!(known.queue_datas[0].broker_name.as_str(), BROKER);
}

#[test]
fn rust_client_parses_cluster_info() {
    let (namesrv, mut ours) = namesrv_with_broker_group();
    let other = harness::broker("OtherCluster", "rust-broker-b", 0, "127.0.0.1:20931", &[]);
    ours.register_broker(&other)
        .expect("register second broker");
    let client = RustClient::start(&namesrv.addr, "ringmq-it-cluster", 91_003);
    let info = client.block_on(client.handle.broker_cluster_info(CALL_MILLIS));
    client.close();

    let info = info.unwrap_or_else(|e| panic!("rocketmq-client-rust failed on cluster info: {e}"));
    let brokers = info.broker_addr_table.as_ref().expect("brokerAddrTable");
    assert_eq!(brokers.len(), 2, "{brokers:?}");
    let a = brokers.get(BROKER).expect("broker-a in brokerAddrTable");
    assert_eq!(a.broker_name().as_str(), BROKER);
    assert_eq!(a.cluster(), CLUSTER);
    assert_eq!(sorted_addrs(a.broker_addrs()), master_and_slave());
    let b = brokers
        .get("rust-broker-b")
        .expect("broker-b in brokerAddrTable");
    assert_eq!(b.cluster(), "OtherCluster");
    let b_addrs = vec![(0, "127.0.0.1:20931".to_string())];
    assert_eq!(sorted_addrs(b.broker_addrs()), b_addrs);

    let clusters = info.cluster_addr_table.as_ref().expect("clusterAddrTable");
    assert_eq!(clusters.len(), 2, "{clusters:?}");
    let members = |c: &str| -> Vec<String> {
        let mut v: Vec<String> = clusters[c].iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(members(CLUSTER), vec![BROKER.to_string()]);
    assert_eq!(members("OtherCluster"), vec!["rust-broker-b".to_string()]);
}
