//! Master/slave replication: in-process master and slave brokers on loopback (the process-level
//! kill -9 tests are in `ha_process`).

use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::config::{BrokerConfig, BrokerRole};
use ringmq::message::properties::{Properties, KEYS};
use ringmq::remoting::{request, response, RemotingCommand};

use crate::harness::{TestBroker, TestNamesrv};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the master (`id` 0) or slave (`id` 1) of broker group "ha-a".
pub fn ha_config(role: BrokerRole) -> impl FnOnce(&mut BrokerConfig) {
    move |cfg| {
        cfg.broker_name = "ha-a".into();
        cfg.broker_role = role;
        cfg.broker_id = u64::from(role == BrokerRole::Slave);
        cfg.slave_timeout_ms = 3_000;
    }
}

/// A master and its slave on their own stores, registered with one nameserver.
pub struct Pair {
    pub master: TestBroker,
    pub slave: TestBroker,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ringmq-ha-")
        .tempdir_in("/tmp")
        .unwrap()
}

impl Pair {
    pub fn start(role: BrokerRole, shards: usize) -> Pair {
        let (m, s) = (temp(), temp());
        let master = TestBroker::start_in(TestNamesrv::start(), m.path(), shards, ha_config(role));
        let ns = TestNamesrv::attach(&master.namesrv.addr);
        let slave = TestBroker::start_in(ns, s.path(), shards, ha_config(BrokerRole::Slave));
        Pair {
            master,
            slave,
            _dirs: (m, s),
        }
    }
}

pub fn message(topic: &str, queue_id: i32, body: &str) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set(KEYS, body);
    OutgoingMessage {
        topic: topic.into(),
        queue_id,
        body: body.as_bytes().to_vec(),
        properties,
        flag: 0,
    }
}

/// The body of the record at the physical offset inside `msg_id`, read from `conn`'s broker.
pub fn view(conn: &mut Connection, msg_id: &str) -> Option<Vec<u8>> {
    let (_, offset) = ringmq::message::decode_offset_msg_id(msg_id).unwrap();
    let cmd = RemotingCommand::request(request::VIEW_MESSAGE_BY_ID)
        .with_ext("offset", offset.to_string());
    let reply = conn.invoke(cmd).unwrap();
    if reply.code != response::SUCCESS {
        return None;
    }
    let found = ringmq::client::broker::decode_messages(&reply.body).unwrap();
    found.into_iter().next().map(|m| m.body)
}

/// Runtime info of a broker as a map.
pub fn runtime_info(conn: &mut Connection) -> std::collections::BTreeMap<String, String> {
    let reply = conn
        .invoke(RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO))
        .unwrap();
    assert_eq!(reply.code, response::SUCCESS);
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    v["table"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Waits until `check` holds (bounded), for state that settles in the background.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the master reports a fully connected slave.
pub fn wait_connected(master: &mut Connection) {
    eventually("the slave to connect", || {
        runtime_info(master)
            .get("haConnectionCount")
            .map(String::as_str)
            == Some("1")
    });
}

#[test]
fn under_sync_master_every_acknowledged_message_is_on_the_slave_when_send_ok_arrives() {
    let pair = Pair::start(BrokerRole::SyncMaster, 2);
    let mut master = pair.master.connection();
    let mut slave = pair.slave.connection();
    wait_connected(&mut master);
    for i in 0..200 {
        let body = format!("sync-{i}");
        let sent = master
            .send_message("pg", &message("HaSync", i % 4, &body))
            .unwrap();
        assert_eq!(sent.code, response::SUCCESS, "send {i}");
        let on_slave = view(&mut slave, &sent.msg_id);
        assert_eq!(
            on_slave.as_deref(),
            Some(body.as_bytes()),
            "message {i} on the slave"
        );
    }
    let info = runtime_info(&mut master);
    assert_eq!(info["haSlaveFallBehindBytes"], "0", "{info:?}");
    let slave_info = runtime_info(&mut slave);
    assert_eq!(slave_info["haConnected"], "true", "{slave_info:?}");
}

#[test]
fn a_slave_refuses_sends_and_transactions_with_javas_codes() {
    let pair = Pair::start(BrokerRole::AsyncMaster, 1);
    let mut slave = pair.slave.connection();
    let err = slave
        .send_message("pg", &message("HaRefused", 0, "x"))
        .unwrap_err();
    assert_eq!(err.code(), Some(response::SERVICE_NOT_AVAILABLE), "{err}");
    let end = RemotingCommand::request(request::END_TRANSACTION)
        .with_ext("producerGroup", "pg")
        .with_ext("tranStateTableOffset", "0")
        .with_ext("commitLogOffset", "0")
        .with_ext("commitOrRollback", "8");
    let reply = slave.invoke(end).unwrap();
    assert_eq!(reply.code, response::SLAVE_NOT_AVAILABLE);
}

#[test]
fn every_layout_pairs_each_slave_with_a_master_and_shares_no_port() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    for layout in ["2m-2s-sync", "2m-2s-async", "2m-noslave"] {
        let mut brokers = Vec::new();
        for entry in std::fs::read_dir(conf.join(layout)).unwrap() {
            let path = entry.unwrap().path();
            let (cfg, warnings) = BrokerConfig::load(&path).unwrap();
            assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
            brokers.push(cfg);
        }
        let masters: Vec<_> = brokers
            .iter()
            .filter(|b| b.broker_role != BrokerRole::Slave)
            .collect();
        assert_eq!(masters.len(), 2, "{layout}");
        let slaves = brokers.len() - masters.len();
        assert_eq!(
            slaves,
            if layout == "2m-noslave" { 0 } else { 2 },
            "{layout}"
        );
        let mut ports = std::collections::BTreeSet::new();
        for b in &brokers {
            let p = b.listen_port;
            for port in [p - 2, p, p + 1] {
                assert!(ports.insert(port), "{layout}: port {port} used twice");
            }
            assert_ne!(b.store_path_root_dir, std::path::PathBuf::new());
            if b.broker_role == BrokerRole::Slave {
                let master = masters
                    .iter()
                    .find(|m| m.broker_name == b.broker_name)
                    .unwrap_or_else(|| panic!("{layout}: no master for {}", b.broker_name));
                assert_eq!(master.shard_count, b.shard_count);
                assert_eq!(
                    master.mapped_file_size_commitlog_bytes,
                    b.mapped_file_size_commitlog_bytes
                );
                let expected = if layout == "2m-2s-sync" {
                    BrokerRole::SyncMaster
                } else {
                    BrokerRole::AsyncMaster
                };
                assert_eq!(master.broker_role, expected, "{layout}");
            }
        }
        let stores: std::collections::BTreeSet<_> =
            brokers.iter().map(|b| &b.store_path_root_dir).collect();
        assert_eq!(stores.len(), brokers.len(), "{layout}: stores shared");
    }
}
