//! Starting servers in-process on 127.0.0.1:0, and small helpers shared by the tests.

use std::time::Duration;

use ringmq::client::namesrv::BrokerRegistration;
use ringmq::client::{Connection, NamesrvClient};
use ringmq::namesrv::{self, NamesrvHandle, NamesrvOptions};
use ringmq::protocol::register::{
    DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigWrapper,
};
use ringmq::runtime::Shutdown;

/// Call timeout used by test clients.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A nameserver on a free loopback port; stopped when dropped.
pub struct TestNamesrv {
    handle: Option<NamesrvHandle>,
    pub addr: String,
}

impl TestNamesrv {
    /// Starts one with default options.
    pub fn start() -> TestNamesrv {
        TestNamesrv::start_with(|_| {})
    }

    /// Starts one after `tweak` adjusted its options.
    pub fn start_with(tweak: impl FnOnce(&mut NamesrvOptions)) -> TestNamesrv {
        let mut options = NamesrvOptions::new("127.0.0.1:0".parse().unwrap());
        tweak(&mut options);
        let handle = namesrv::start(options, Shutdown::new()).expect("nameserver starts");
        let addr = handle.local_addr.to_string();
        TestNamesrv {
            handle: Some(handle),
            addr,
        }
    }

    /// A new client connection.
    pub fn client(&self) -> NamesrvClient {
        NamesrvClient::connect(&self.addr, TIMEOUT).expect("connect to nameserver")
    }

    /// A raw connection.
    pub fn connection(&self) -> Connection {
        Connection::connect(&self.addr, TIMEOUT).expect("connect to nameserver")
    }
}

impl Drop for TestNamesrv {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
        }
    }
}

/// A topic config as a Java broker registers it.
pub fn topic(name: &str, queues: i32, perm: i32) -> TopicConfig {
    TopicConfig {
        order: false,
        perm,
        read_queue_nums: queues,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_name: name.into(),
        topic_sys_flag: 0,
        write_queue_nums: queues,
    }
}

/// A registration of broker `name`/`id` at `addr` carrying `topics`.
pub fn broker(
    cluster: &str,
    name: &str,
    id: i64,
    addr: &str,
    topics: &[TopicConfig],
) -> BrokerRegistration {
    let mut wrapper = TopicConfigWrapper {
        data_version: DataVersion {
            counter: 1,
            timestamp: 1_700_000_000_000,
        },
        ..Default::default()
    };
    for t in topics {
        wrapper
            .topic_config_table
            .insert(t.topic_name.clone(), t.clone());
    }
    BrokerRegistration {
        cluster_name: cluster.into(),
        broker_name: name.into(),
        broker_addr: addr.into(),
        broker_id: id,
        ha_server_addr: format!("{}:{}", addr.rsplit_once(':').unwrap().0, 10912),
        body: RegisterBrokerBody {
            filter_server_list: vec![],
            topic_config_serialize_wrapper: wrapper,
        },
    }
}

/// A nameserver and a broker registered with it, store in a temp dir on a real file system
/// (glommio drops O_DIRECT on tmpfs); stopped when dropped.
pub struct TestBroker {
    pub namesrv: TestNamesrv,
    handle: Option<ringmq::broker::BrokerHandle>,
    /// The broker's main port on loopback.
    pub addr: String,
    pub store: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    /// One broker with `shards` shards and a fresh store.
    pub fn start(shards: usize) -> TestBroker {
        let dir = tempfile::Builder::new()
            .prefix("ringmq-it-")
            .tempdir_in("/tmp")
            .unwrap();
        let store = dir.path().to_path_buf();
        let mut broker = TestBroker::start_in(TestNamesrv::start(), &store, shards, |_| {});
        broker._dir = Some(dir);
        broker
    }

    /// A broker over `store` (kept), registering with `namesrv`, after `tweak`.
    pub fn start_in(
        namesrv: TestNamesrv,
        store: &std::path::Path,
        shards: usize,
        tweak: impl FnOnce(&mut ringmq::config::BrokerConfig),
    ) -> TestBroker {
        let mut cfg = ringmq::config::BrokerConfig {
            broker_name: "broker-it".into(),
            broker_ip1: "127.0.0.1".parse().unwrap(),
            broker_ip2: "127.0.0.1".parse().unwrap(),
            listen_addr: "127.0.0.1".parse().unwrap(),
            store_path_root_dir: store.to_path_buf(),
            store_path_commitlog: store.join("commitlog"),
            mapped_file_size_commitlog_bytes: 64 << 20,
            ..Default::default()
        };
        tweak(&mut cfg);
        let options = ringmq::broker::BrokerOptions {
            cfg,
            namesrv_addrs: vec![namesrv.addr.clone()],
            port_override: Some(0),
            shards,
            config_file: None,
            sync_state: None,
        };
        let handle = ringmq::broker::start(options, Shutdown::new()).expect("broker starts");
        let addr = handle.local_addr.to_string();
        TestBroker {
            namesrv,
            handle: Some(handle),
            addr,
            store: store.to_path_buf(),
            _dir: None,
        }
    }

    /// A raw connection to the broker.
    pub fn connection(&self) -> Connection {
        Connection::connect(&self.addr, TIMEOUT).expect("connect to broker")
    }

    /// Stops the broker gracefully, keeping the nameserver and the store.
    pub fn stop(mut self) -> (TestNamesrv, Option<tempfile::TempDir>) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
        }
        let dir = self._dir.take();
        let namesrv = std::mem::replace(&mut self.namesrv, TestNamesrv::detached());
        (namesrv, dir)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
        }
    }
}

impl TestNamesrv {
    /// A placeholder that owns no server.
    pub fn detached() -> TestNamesrv {
        TestNamesrv::attach("")
    }

    /// A handle on a nameserver another `TestNamesrv` runs (it stops with that one).
    pub fn attach(addr: &str) -> TestNamesrv {
        TestNamesrv {
            handle: None,
            addr: addr.to_string(),
        }
    }
}

/// The next message of queue 0 of `topic` at `offset`, long-polled until `limit` passes
/// (retrying while the topic does not exist yet). `None` when nothing came.
pub fn wait_for_message(
    conn: &mut Connection,
    topic: &str,
    offset: i64,
    limit: Duration,
) -> Option<ringmq::client::broker::PulledMessage> {
    use ringmq::remoting::response;
    let deadline = std::time::Instant::now() + limit;
    conn.timeout = limit + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let left_ms = left.as_millis().max(1) as i64;
        match conn.pull("cg", topic, 0, offset, 1, "*", left_ms) {
            Ok(r) if r.code == response::SUCCESS => return r.messages.into_iter().next(),
            Ok(_) => {}
            Err(e) if e.code() == Some(response::TOPIC_NOT_EXIST) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("pull failed: {e}"),
        }
    }
    None
}

/// UPDATE_AND_CREATE_TOPIC of `topic` with `queues` read and write queues, read-write.
pub fn create_topic(conn: &mut Connection, topic: &str, queues: i32) {
    let queues = queues.to_string();
    let cmd = ringmq::remoting::RemotingCommand::request(
        ringmq::remoting::request::UPDATE_AND_CREATE_TOPIC,
    )
    .with_ext("topic", topic)
    .with_ext("readQueueNums", queues.as_str())
    .with_ext("writeQueueNums", queues.as_str())
    .with_ext("perm", "6");
    conn.call(cmd).expect("topic created");
}

/// A SEND_MESSAGE_V2 request to `topic`/`queue_id` carrying `body`, with `opaque` (for tests
/// that pipeline sends and match the answers).
pub fn send_request(
    topic: &str,
    queue_id: i32,
    body: Vec<u8>,
    opaque: i32,
) -> ringmq::remoting::RemotingCommand {
    let header = ringmq::protocol::send::SendRequest {
        producer_group: "pg".into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id,
        sys_flag: 0,
        born_timestamp: 1,
        flag: 0,
        properties: String::new(),
        reconsume_times: 0,
        unit_mode: false,
        max_reconsume_times: None,
        batch: false,
    };
    let mut cmd = header
        .to_command(ringmq::remoting::request::SEND_MESSAGE_V2)
        .with_body(body);
    cmd.opaque = opaque;
    cmd
}
