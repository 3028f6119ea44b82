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
