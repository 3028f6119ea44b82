//! Plain ACL on a broker (`aclEnable=true`), driven by our client and by the crates.io
//! `rocketmq-client-rust` with its `AclClientRPCHook`: the right credentials send and consume;
//! a wrong secret, an unknown access key, an unsigned request, a DENY or SUB-only topic and a
//! non-admin topic creation are refused with NO_PERMISSION and store nothing; white-listed
//! addresses pass unsigned; edits of the file take effect within seconds; a malformed file
//! keeps the rules in force; the admin ACL commands rewrite the file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::{ClientError, Connection, Credentials};
use ringmq::remoting::{request, response, RemotingCommand};
use rocketmq_client_rust::{
    AclClientRPCHook, MQPushConsumer, MessageUtil, SendStatus, SessionCredentials,
};

use crate::harness::{TestBroker, TestNamesrv};
use crate::rust_client_support::{collector, wait_registered, Clients, SEND_MILLIS};

const RULES: &str = "\
globalWhiteRemoteAddresses:
accounts:
  - accessKey: producerAK
    secretKey: producerSK1
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms: [AclTopic=PUB, SubOnly=SUB, Denied=DENY, RustAclTopic=PUB]
  - accessKey: consumerAK
    secretKey: consumerSK1
    defaultTopicPerm: SUB
    defaultGroupPerm: SUB
  - accessKey: adminAK1
    secretKey: adminSK1
    admin: true
";

fn producer() -> Credentials {
    Credentials::new("producerAK", "producerSK1")
}

fn consumer() -> Credentials {
    Credentials::new("consumerAK", "consumerSK1")
}

fn admin() -> Credentials {
    Credentials::new("adminAK1", "adminSK1")
}

/// A broker with ACL on, its rules in `<dir>/acl/plain_acl.yml`. Bind the three in this order
/// (`let (_dir, file, broker)`): the broker is dropped, and stopped, before its directory goes,
/// also when a test fails.
fn acl_broker(rules: &str) -> (tempfile::TempDir, PathBuf, TestBroker) {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-acl-")
        .tempdir_in("/tmp")
        .unwrap();
    let file = dir.path().join("acl/plain_acl.yml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, rules).unwrap();
    let store = dir.path().join("store");
    let acl_file = file.clone();
    let broker = TestBroker::start_in(TestNamesrv::start(), &store, 2, move |cfg| {
        cfg.acl_enable = true;
        cfg.acl_plain_file = Some(acl_file);
    });
    (dir, file, broker)
}

fn connect(broker: &TestBroker, credentials: Option<Credentials>) -> Connection {
    let mut conn = broker.connection();
    conn.set_credentials(credentials);
    conn
}

fn message(topic: &str) -> OutgoingMessage {
    OutgoingMessage {
        topic: topic.into(),
        queue_id: 0,
        body: b"acl".to_vec(),
        ..Default::default()
    }
}

/// The send's error code (NO_PERMISSION expected) and remark.
fn refused(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Server { code, remark, .. }) => {
            assert_eq!(code, response::NO_PERMISSION, "{remark:?}");
            remark.unwrap_or_default()
        }
        other => panic!("expected NO_PERMISSION, got {other:?}"),
    }
}

fn create_topic(conn: &mut Connection, topic: &str) -> Result<RemotingCommand, ClientError> {
    let cmd = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", topic)
        .with_ext("defaultTopic", "TBW102")
        .with_ext("readQueueNums", "1")
        .with_ext("writeQueueNums", "1")
        .with_ext("perm", "6")
        .with_ext("topicFilterType", "SINGLE_TAG")
        .with_ext("topicSysFlag", "0")
        .with_ext("order", "false");
    conn.call(cmd)
}

/// Queue 0's max offset (messages stored), asked as the admin.
fn stored(broker: &TestBroker, topic: &str) -> i64 {
    connect(broker, Some(admin()))
        .offset_call(
            request::GET_MAX_OFFSET,
            &[("topic", topic), ("queueId", "0")],
        )
        .unwrap_or(0)
}

fn topic_exists(broker: &TestBroker, topic: &str) -> bool {
    let reply = connect(broker, Some(admin()))
        .call(RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG))
        .expect("admin reads the topics");
    String::from_utf8_lossy(&reply.body).contains(&format!("\"{topic}\""))
}

/// Polls `check` every 50 ms for up to 10 s (the broker looks at the file every second).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn our_client_is_checked_on_every_request() {
    let (_dir, _file, broker) = acl_broker(RULES);
    // The admin creates topics; a non-admin may not.
    let mut admin_conn = connect(&broker, Some(admin()));
    for topic in ["AclTopic", "SubOnly", "Denied"] {
        create_topic(&mut admin_conn, topic).expect("the admin creates a topic");
    }
    let remark = refused(create_topic(
        &mut connect(&broker, Some(producer())),
        "NotAdmins",
    ));
    assert_eq!(
        remark,
        "Need admin permission for request code=17, but accessKey=producerAK is not"
    );
    assert!(!topic_exists(&broker, "NotAdmins") && topic_exists(&broker, "AclTopic"));

    // The right credentials send.
    let mut p = connect(&broker, Some(producer()));
    p.send_message("acl_pg", &message("AclTopic"))
        .expect("producer sends to its topic");
    assert_eq!(stored(&broker, "AclTopic"), 1);

    // Refusals, each storing nothing.
    let wrong_secret = Some(Credentials::new("producerAK", "not-the-secret"));
    let remark =
        refused(connect(&broker, wrong_secret).send_message("acl_pg", &message("AclTopic")));
    assert_eq!(remark, "Check signature failed for accessKey=producerAK");
    let stranger = Some(Credentials::new("strangerAK", "whatever1"));
    let remark = refused(connect(&broker, stranger).send_message("acl_pg", &message("AclTopic")));
    assert_eq!(remark, "No acl config for strangerAK");
    let remark = refused(connect(&broker, None).send_message("acl_pg", &message("AclTopic")));
    assert!(remark.starts_with("No accessKey is configured"), "{remark}");
    let remark = refused(p.send_message("acl_pg", &message("SubOnly")));
    assert!(
        remark.contains("topic:SubOnly") && remark.contains("has SUB"),
        "{remark}"
    );
    let remark = refused(p.send_message("acl_pg", &message("Denied")));
    assert!(
        remark.contains("topic:Denied") && remark.contains("has DENY"),
        "{remark}"
    );
    assert_eq!(stored(&broker, "AclTopic"), 1);
    assert_eq!(stored(&broker, "SubOnly"), 0);
    assert_eq!(stored(&broker, "Denied"), 0);

    // The consumer reads; the producer may not.
    let mut c = connect(&broker, Some(consumer()));
    let pulled = c
        .pull("acl_cg", "AclTopic", 0, 0, 32, "*", 0)
        .expect("consumer pulls");
    assert_eq!(pulled.messages.len(), 1);
    assert_eq!(pulled.messages[0].body, b"acl");
    refused(p.pull("acl_cg", "AclTopic", 0, 0, 32, "*", 0));
    broker.stop();
}

#[test]
fn file_edits_apply_within_seconds_and_a_broken_file_keeps_the_rules() {
    let (_dir, file, broker) = acl_broker(RULES);
    let unsigned_send = || {
        connect(&broker, None)
            .send_message("acl_pg", &message("AclTopic"))
            .is_ok()
    };
    assert!(!unsigned_send());
    // White-listing this address lets unsigned requests through.
    let white = RULES.replace(
        "globalWhiteRemoteAddresses:\n",
        "globalWhiteRemoteAddresses:\n  - 127.0.0.*\n",
    );
    std::fs::write(&file, &white).unwrap();
    eventually("the white list", unsigned_send);
    // A file that does not parse is refused: the white list stays in force.
    std::fs::write(&file, "accounts:\n  - accessKey: [broken\n").unwrap();
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(unsigned_send(), "the rules in force were kept");
    // A valid file without the white list takes effect again.
    std::fs::write(&file, RULES).unwrap();
    eventually("the white list's removal", || !unsigned_send());
    broker.stop();
}

#[test]
fn an_accounts_own_white_address_needs_no_signature() {
    let rules = RULES.replace(
        "    admin: true\n",
        "    admin: true\n  - accessKey: trustedAK\n    secretKey: trustedSK1\n    whiteRemoteAddress: 127.0.0.1\n    defaultTopicPerm: PUB\n",
    );
    let (_dir, _file, broker) = acl_broker(&rules);
    let mut cmd_conn = connect(&broker, None);
    let send = RemotingCommand::request(request::SEND_MESSAGE_V2)
        .with_ext("a", "acl_pg")
        .with_ext("b", "AnyTopic")
        .with_ext("c", "TBW102")
        .with_ext("d", "4")
        .with_ext("e", "0")
        .with_ext("f", "0")
        .with_ext("g", "0")
        .with_ext("h", "0")
        .with_ext("i", "")
        .with_ext("j", "0")
        .with_ext("k", "false")
        .with_ext("AccessKey", "trustedAK")
        .with_body(&b"unsigned"[..]);
    let reply = cmd_conn
        .call(send)
        .expect("a white-listed account needs no signature");
    assert_eq!(reply.code, response::SUCCESS);
    broker.stop();
}

fn ringmq_admin(broker: &TestBroker, args: &[&str], creds: Option<&Credentials>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    cmd.arg("admin")
        .args(args)
        .env("NAMESRV_ADDR", &broker.namesrv.addr)
        .env_remove("ROCKETMQ_ACCESS_KEY")
        .env_remove("ROCKETMQ_SECRET_KEY")
        .env_remove("ROCKETMQ_HOME");
    if let Some(c) = creds {
        cmd.args(["--access-key", &c.access_key, "--secret-key", &c.secret_key]);
    }
    let out = cmd.output().expect("ringmq admin runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn file_text(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap()
}

#[test]
fn admin_commands_rewrite_the_file() {
    let (_dir, file, broker) = acl_broker(RULES);
    let b = broker.addr.clone();
    let (ok, out) = ringmq_admin(
        &broker,
        &[
            "updateAclConfig",
            "-b",
            &b,
            "-a",
            "newAccount1",
            "-s",
            "newSecret1",
            "-i",
            "PUB",
            "-t",
            "OtherTopic=DENY",
        ],
        Some(&admin()),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("create or update plain access config to"),
        "{out}"
    );
    assert!(file_text(&file).contains("newAccount1"));
    // The new account works at once.
    let new = Some(Credentials::new("newAccount1", "newSecret1"));
    connect(&broker, new.clone())
        .send_message("acl_pg", &message("AclTopic"))
        .expect("the new account sends");
    refused(connect(&broker, new.clone()).send_message("acl_pg", &message("OtherTopic")));
    // A non-admin may not change the ACL.
    let (ok, out) = ringmq_admin(
        &broker,
        &["deleteAclConfig", "-b", &b, "-a", "newAccount1"],
        Some(&producer()),
    );
    assert!(!ok && out.contains("NO_PERMISSION"), "{out}");
    let (ok, out) = ringmq_admin(
        &broker,
        &["deleteAclConfig", "-b", &b, "-a", "newAccount1"],
        Some(&admin()),
    );
    assert!(ok, "{out}");
    assert!(!file_text(&file).contains("newAccount1"));
    refused(connect(&broker, new).send_message("acl_pg", &message("AclTopic")));

    let (ok, out) = ringmq_admin(
        &broker,
        &[
            "updateGlobalWhiteAddr",
            "-b",
            &b,
            "-g",
            "10.1.1.*,192.168.0.1",
        ],
        Some(&admin()),
    );
    assert!(ok, "{out}");
    assert!(file_text(&file).contains("10.1.1.*"));
    let (ok, out) = ringmq_admin(
        &broker,
        &["clusterAclConfigVersion", "-b", &b],
        Some(&admin()),
    );
    assert!(
        ok && out.contains("#AclFilePath") && out.contains("plain_acl.yml"),
        "{out}"
    );
    let (ok, out) = ringmq_admin(
        &broker,
        &["getAclConfig", "-b", &b, "--json"],
        Some(&admin()),
    );
    assert!(ok, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let accounts = json[&b]["plainAccessConfigs"]
        .as_array()
        .expect("accounts")
        .clone();
    assert_eq!(accounts.len(), 3, "{json}");
    assert_eq!(json[&b]["globalWhiteAddrs"][0], "10.1.1.*");
    // Without credentials the CLI is refused like any client.
    let (ok, out) = ringmq_admin(&broker, &["getAclConfig", "-b", &b], None);
    assert!(!ok && out.contains("NO_PERMISSION"), "{out}");
    broker.stop();
}

fn hook(ak: &str, sk: &str) -> std::sync::Arc<AclClientRPCHook> {
    std::sync::Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(ak, sk)))
}

#[test]
fn rust_client_with_its_acl_hook_sends_and_consumes() {
    const TOPIC: &str = "RustAclTopic";
    const N: usize = 20;
    let (_dir, _file, broker) = acl_broker(RULES);
    wait_registered(&broker);
    let clients = Clients::new("acl", &broker.namesrv.addr, false);
    let mut producer = rocketmq_client_rust::DefaultMQProducer::builder(clients.runtime.clone())
        .client_config(clients.config("acl-pg"))
        .name_server_addr(clients.namesrv.as_str())
        .producer_group("acl-pg")
        .rpc_hook(hook("producerAK", "producerSK1"))
        .build();
    clients.block_on(producer.start()).expect("producer starts");
    let send = |producer: &rocketmq_client_rust::DefaultMQProducer, topic: &str| {
        clients.block_on(async {
            let mut msg = Default::default();
            let _ = MessageUtil::get_reply_to_client(&msg); // makes `msg` a `Message`
            msg.set_topic(topic.into());
            msg.set_body(Some(b"rust-acl".to_vec().into()));
            producer.send_with_timeout(msg, SEND_MILLIS).await
        })
    };
    for i in 0..N {
        let sent = send(&producer, TOPIC).unwrap_or_else(|e| panic!("send #{i}: {e}"));
        assert_eq!(sent.expect("a result").send_status, SendStatus::SendOk);
    }
    // SUB only: the send is refused and nothing is stored.
    assert!(send(&producer, "SubOnly").is_err());

    // A wrong secret: refused, nothing stored.
    let mut bad = rocketmq_client_rust::DefaultMQProducer::builder(clients.runtime.clone())
        .client_config(clients.config("acl-pg-bad"))
        .name_server_addr(clients.namesrv.as_str())
        .producer_group("acl-pg-bad")
        .rpc_hook(hook("producerAK", "wrongSecret"))
        .build();
    clients.block_on(bad.start()).expect("producer starts");
    assert!(send(&bad, TOPIC).is_err(), "a wrong secret is refused");
    clients.block_on(bad.shutdown());
    let total: i64 = (0..4)
        .map(|q| {
            connect(&broker, Some(admin()))
                .offset_call(
                    request::GET_MAX_OFFSET,
                    &[("topic", TOPIC), ("queueId", &q.to_string())],
                )
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(total, N as i64);
    assert_eq!(stored(&broker, "SubOnly"), 0);

    let (tx, rx) = mpsc::channel();
    let consumer = clients
        .push_builder("acl-cg", "acl-cg")
        .rpc_hook(Some(hook("consumerAK", "consumerSK1")))
        .build();
    let mut consumer = clients.start_consumer(consumer, TOPIC, "*", |c| {
        c.register_message_listener_concurrently(collector(1, tx))
    });
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, m) = rx.recv_timeout(left).expect("every message arrives");
        let body = m.body().map(|b| b.to_vec()).unwrap_or_default();
        assert_eq!(body, b"rust-acl");
        got += 1;
    }
    clients.block_on(consumer.shutdown());
    clients.block_on(producer.shutdown());
    clients.close();
    broker.stop();
}

#[test]
fn a_slave_replicates_from_an_acl_master_only_with_an_admin_account() {
    use crate::ha::{ha_config, message as ha_message, runtime_info, view, wait_connected};
    use ringmq::config::BrokerRole;

    let rules = RULES.replace(
        "    admin: true\n",
        "    admin: true\n  - accessKey: replicator\n    secretKey: replSecret1\n    admin: true\n",
    );
    let (dir, slave_dir) = (
        tempfile::Builder::new()
            .prefix("ringmq-it-acl-")
            .tempdir_in("/tmp")
            .unwrap(),
        tempfile::Builder::new()
            .prefix("ringmq-it-acl-")
            .tempdir_in("/tmp")
            .unwrap(),
    );
    let file = dir.path().join("plain_acl.yml");
    std::fs::write(&file, rules).unwrap();
    let master = TestBroker::start_in(TestNamesrv::start(), &dir.path().join("store"), 1, |cfg| {
        ha_config(BrokerRole::SyncMaster)(cfg);
        cfg.acl_enable = true;
        cfg.acl_plain_file = Some(file);
    });
    let mut master_conn = connect(&master, Some(admin()));
    // A slave whose account is not an admin is refused: it never connects.
    let ns = TestNamesrv::attach(&master.namesrv.addr);
    let refused_slave = TestBroker::start_in(ns, &slave_dir.path().join("a"), 1, |cfg| {
        ha_config(BrokerRole::Slave)(cfg);
        cfg.acl_access_key = Some("producerAK".into());
        cfg.acl_secret_key = Some("producerSK1".into());
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runtime_info(&mut master_conn)["haConnectionCount"], "0");
    refused_slave.stop();
    // With the replicator's account it connects and every acknowledged message is on it.
    let ns = TestNamesrv::attach(&master.namesrv.addr);
    let slave = TestBroker::start_in(ns, &slave_dir.path().join("b"), 1, |cfg| {
        ha_config(BrokerRole::Slave)(cfg);
        cfg.acl_access_key = Some("replicator".into());
        cfg.acl_secret_key = Some("replSecret1".into());
    });
    wait_connected(&mut master_conn);
    let sent = connect(&master, Some(producer()))
        .send_message("pg", &ha_message("AclTopic", 0, "replicated"))
        .expect("send");
    assert_eq!(sent.code, response::SUCCESS);
    assert_eq!(
        view(&mut slave.connection(), &sent.msg_id).as_deref(),
        Some(&b"replicated"[..])
    );
    slave.stop();
    master.stop();
}

#[test]
fn loadgen_signs_its_sends_and_pulls() {
    let rules = RULES.replace(
        "    admin: true\n",
        "    admin: true\n  - accessKey: loadgenAK\n    secretKey: loadgenSK1\n    defaultTopicPerm: PUB|SUB\n    defaultGroupPerm: SUB\n",
    );
    let (_dir, _file, broker) = acl_broker(&rules);
    wait_registered(&broker);
    let args = |signed: bool| {
        let mut args =
            ::loadgen::Args::defaults(::loadgen::Scenario::E2e, &broker.namesrv.addr, "AclLoadgen");
        args.duration_seconds = 1;
        args.warmup_seconds = 0;
        args.concurrency = 8;
        args.quiet = true;
        args.drain_timeout_seconds = 10;
        if signed {
            args.access_key = Some("loadgenAK".into());
            args.secret_key = Some("loadgenSK1".into());
        }
        args
    };
    let report = ::loadgen::run(args(true)).expect("loadgen runs with credentials");
    assert!(report.sent_messages > 0);
    assert_eq!(report.failed_messages, 0);
    assert_eq!(report.consumed_messages, report.sent_messages);
    // Unsigned, every send is refused (NO_PERMISSION, 16) and none is acknowledged.
    let report = ::loadgen::run(args(false)).expect("loadgen reports refusals");
    assert_eq!(report.sent_messages, 0);
    assert!(report.failed_messages > 0);
    assert!(
        report.errors_by_code.keys().any(|k| k.contains("16")),
        "{:?}",
        report.errors_by_code
    );
    broker.stop();
}
