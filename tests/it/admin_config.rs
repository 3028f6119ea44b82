//! `ringmq admin updateBrokerConfig` against a `ringmq broker -c <file>` child process: a key
//! that can change at runtime takes effect at once (sends refused past a lower maxMessageSize,
//! or by a read-only brokerPermission, which also reaches the nameserver's route), shows in
//! getBrokerConfig, is written to the config file and so survives a restart; other keys, unknown
//! keys and bad values are refused by name and change nothing.

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::remoting::response;
use serde_json::Value;

use crate::admin_cli::{fails, json, ok, wait_for};
use crate::harness::{TestNamesrv, TIMEOUT};
use crate::process::{free_port_triple, BrokerProcess, Rng};

fn send(addr: &str, body_len: usize) -> Result<(), i32> {
    let mut conn = Connection::connect(addr, TIMEOUT).unwrap();
    let msg = OutgoingMessage {
        topic: "ConfigTopic".into(),
        queue_id: 0,
        body: vec![b'x'; body_len],
        ..Default::default()
    };
    conn.send_message("config_pg", &msg)
        .map(drop)
        .map_err(|e| e.code().unwrap_or(-1))
}

fn broker_config(ns: &str, addr: &str) -> Value {
    json(ns, &["getBrokerConfig", "-b", addr])[addr].clone()
}

#[test]
fn runtime_keys_change_at_once_and_persist_others_are_refused() {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-config-")
        .tempdir_in("/tmp")
        .unwrap();
    let namesrv = TestNamesrv::start();
    let ns = namesrv.addr.clone();
    let port = free_port_triple(&mut Rng::seeded());
    let addr = format!("127.0.0.1:{port}");
    let file = dir.path().join("broker.properties");
    let text = format!(
        "# a broker for updateBrokerConfig\nbrokerName=broker-cfg\nbrokerIP1=127.0.0.1\n\
         listenAddress=127.0.0.1\nlistenPort={port}\nshardCount=2\n\
         storePathRootDir={store}\nmappedFileSizeCommitLog=67108864\n\
         # lowered below\nmaxMessageSize=65536\n",
        store = dir.path().join("store").display()
    );
    std::fs::write(&file, &text).unwrap();
    let mut broker = BrokerProcess::start(&file, &ns, dir.path().join("broker-1.log"));
    assert_eq!(send(&addr, 2000), Ok(()));

    // maxMessageSize: lowered, sends above it are refused at once.
    let set = [
        "updateBrokerConfig",
        "-b",
        &addr,
        "-k",
        "maxMessageSize",
        "-v",
        "1024",
    ];
    assert_eq!(
        ok(&ns, &set),
        format!("update broker config success, {addr}\n")
    );
    assert_eq!(send(&addr, 2000), Err(response::MESSAGE_ILLEGAL));
    assert_eq!(send(&addr, 1000), Ok(()));
    assert_eq!(broker_config(&ns, &addr)["maxMessageSize"], "1024");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        saved.starts_with("# a broker for updateBrokerConfig\n"),
        "{saved}"
    );
    assert!(
        saved.ends_with("# lowered below\nmaxMessageSize=1024\n"),
        "{saved}"
    );

    // brokerPermission on every master of the cluster: read-only, in the route too.
    let set = [
        "updateBrokerConfig",
        "-c",
        "DefaultCluster",
        "-k",
        "brokerPermission",
        "-v",
        "4",
    ];
    let updated = json(&ns, &set);
    assert_eq!(updated[0]["brokerAddr"], addr.as_str());
    assert!(updated[0]["error"].is_null(), "{updated}");
    assert_eq!(send(&addr, 10), Err(response::SERVICE_NOT_AVAILABLE));
    wait_for("the read-only route", || {
        let route = json(&ns, &["topicRoute", "-t", "ConfigTopic"]);
        (route["queueDatas"][0]["perm"] == 4).then_some(())
    });

    refused_updates(&ns, &addr);

    // A restart reads the file the updates were written to.
    broker.sigterm();
    let _broker = BrokerProcess::start(&file, &ns, dir.path().join("broker-2.log"));
    let config = broker_config(&ns, &addr);
    assert_eq!(config["maxMessageSize"], "1024");
    assert_eq!(config["brokerPermission"], "4");
    assert_eq!(send(&addr, 10), Err(response::SERVICE_NOT_AVAILABLE));
    let set = [
        "updateBrokerConfig",
        "-b",
        &addr,
        "-k",
        "brokerPermission",
        "-v",
        "6",
    ];
    ok(&ns, &set);
    assert_eq!(send(&addr, 10), Ok(()));
}

/// Keys that cannot change at runtime, unknown keys, bad values and a value past what the store
/// holds: refused by name, nothing changes.
fn refused_updates(ns: &str, addr: &str) {
    let update = |key: &str, value: &str| {
        let args = ["updateBrokerConfig", "-b", addr, "-k", key, "-v", value];
        fails(Some(ns), &args)
    };
    let err = update("brokerName", "other");
    assert!(err.contains("UPDATE_BROKER_CONFIG (25)"), "{err}");
    assert!(
        err.contains(addr) && err.contains("SYSTEM_ERROR (1)"),
        "{err}"
    );
    assert!(
        err.contains("brokerName cannot change while the broker runs"),
        "{err}"
    );
    assert!(err.contains("keys that can: brokerPermission"), "{err}");
    let err = update("flushIntervalCommitLog", "100");
    assert!(
        err.contains("flushIntervalCommitLog cannot change"),
        "{err}"
    );
    let err = update("noSuchKey", "1");
    assert!(
        err.contains("noSuchKey is not a broker config key"),
        "{err}"
    );
    let err = update("brokerPermission", "5");
    assert!(
        err.contains("brokerPermission") && err.contains('5'),
        "{err}"
    );
    let err = update("maxMessageSize", "1048576");
    assert!(err.contains("the store was opened with"), "{err}");
    let config = broker_config(ns, addr);
    assert_eq!(config["brokerName"], "broker-cfg");
    assert_eq!(config["brokerPermission"], "4");
    assert_eq!(config["maxMessageSize"], "1024");
    let err = fails(
        Some("127.0.0.1:1"),
        &[
            "updateBrokerConfig",
            "-c",
            "DefaultCluster",
            "-k",
            "a",
            "-v",
            "b",
        ],
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
