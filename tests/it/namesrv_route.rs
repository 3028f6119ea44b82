//! The nameserver over TCP: registration, routes, cluster info, expiry, connection loss, KV
//! config, bad input.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use ringmq::client::ClientError;
use ringmq::protocol::route::TopicRouteData;
use ringmq::remoting::{request, response, RemotingCommand, SerializeType};

use crate::harness::{broker, topic, TestNamesrv};

/// Retries `check` until it holds or `limit` passes (the server acts on a closed connection or
/// an expiry asynchronously).
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn route_code(ns: &TestNamesrv, t: &str) -> Option<i32> {
    match ns.client().route(t) {
        Ok(_) => Some(0),
        Err(e) => e.code(),
    }
}

#[test]
fn register_then_route_then_expire_then_route_gone() {
    let ns = TestNamesrv::start_with(|o| {
        o.processor.broker_expiry = Duration::from_millis(600);
        o.broker_scan_interval = Duration::from_millis(100);
    });
    let mut b = ns.client();
    b.register_broker(&broker(
        "c1",
        "broker-a",
        0,
        "10.0.0.1:10911",
        &[topic("T", 4, 6)],
    ))
    .unwrap();
    let route: TopicRouteData = ns.client().route("T").unwrap();
    assert_eq!(route.broker_datas.len(), 1);
    assert_eq!(route.broker_datas[0].broker_addrs[&0], "10.0.0.1:10911");
    assert_eq!(route.broker_datas[0].cluster, "c1");
    assert_eq!(route.queue_datas[0].write_queue_nums, 4);
    assert_eq!(route.queue_datas[0].perm, 6);
    // The broker stays connected but stops registering: it expires.
    assert!(eventually(Duration::from_secs(5), || route_code(&ns, "T")
        == Some(response::TOPIC_NOT_EXIST)));
    assert!(ns
        .client()
        .cluster_info()
        .unwrap()
        .broker_addr_table
        .is_empty());
    drop(b);
}

#[test]
fn closed_broker_connection_removes_the_broker_at_once() {
    let ns = TestNamesrv::start();
    let mut b = ns.client();
    b.register_broker(&broker(
        "c1",
        "broker-a",
        0,
        "10.0.0.1:10911",
        &[topic("T", 4, 6)],
    ))
    .unwrap();
    assert_eq!(route_code(&ns, "T"), Some(0));
    drop(b);
    assert!(eventually(Duration::from_secs(5), || route_code(&ns, "T")
        == Some(response::TOPIC_NOT_EXIST)));
}

#[test]
fn unknown_topic_is_topic_not_exist_with_a_remark() {
    let ns = TestNamesrv::start();
    let err = ns.client().route("Nope").unwrap_err();
    assert_eq!(err.code(), Some(response::TOPIC_NOT_EXIST));
    assert!(
        err.to_string()
            .contains("No topic route info in name server for the topic: Nope"),
        "{err}"
    );
}

#[test]
fn two_brokers_in_one_cluster_and_a_topic_on_both() {
    let ns = TestNamesrv::start();
    let mut a = ns.client();
    let mut b = ns.client();
    a.register_broker(&broker(
        "c1",
        "broker-a",
        0,
        "10.0.0.1:10911",
        &[topic("Both", 4, 6), topic("OnlyA", 2, 6)],
    ))
    .unwrap();
    b.register_broker(&broker(
        "c1",
        "broker-b",
        0,
        "10.0.0.2:10911",
        &[topic("Both", 8, 6)],
    ))
    .unwrap();
    let info = ns.client().cluster_info().unwrap();
    let names: Vec<&String> = info.cluster_addr_table["c1"].iter().collect();
    assert_eq!(names, ["broker-a", "broker-b"]);
    assert_eq!(
        info.broker_addr_table["broker-b"].broker_addrs[&0],
        "10.0.0.2:10911"
    );
    let route = ns.client().route("Both").unwrap();
    assert_eq!(route.broker_datas.len(), 2);
    let nums: Vec<(String, i32)> = route
        .queue_datas
        .iter()
        .map(|q| (q.broker_name.clone(), q.write_queue_nums))
        .collect();
    assert_eq!(
        nums,
        [("broker-a".to_string(), 4), ("broker-b".to_string(), 8)]
    );
    assert_eq!(ns.client().route("OnlyA").unwrap().broker_datas.len(), 1);
    let topics = ns.client().topics().unwrap().topic_list;
    assert!(topics.contains("Both") && topics.contains("OnlyA"));
    // Unregistering broker-b leaves Both served by broker-a only.
    b.unregister_broker(&broker("c1", "broker-b", 0, "10.0.0.2:10911", &[]))
        .unwrap();
    assert_eq!(ns.client().route("Both").unwrap().broker_datas.len(), 1);
}

#[test]
fn slave_learns_its_master_and_shares_the_route() {
    let ns = TestNamesrv::start();
    let mut master = ns.client();
    let mut slave = ns.client();
    master
        .register_broker(&broker(
            "c1",
            "broker-a",
            0,
            "10.0.0.1:10911",
            &[topic("T", 4, 6)],
        ))
        .unwrap();
    let answer = slave
        .register_broker(&broker("c1", "broker-a", 1, "10.0.0.2:10911", &[]))
        .unwrap();
    assert_eq!(answer.master_addr.as_deref(), Some("10.0.0.1:10911"));
    assert_eq!(answer.ha_server_addr.as_deref(), Some("10.0.0.1:10912"));
    let route = ns.client().route("T").unwrap();
    let addrs: Vec<(i64, String)> = route.broker_datas[0]
        .broker_addrs
        .clone()
        .into_iter()
        .collect();
    assert_eq!(
        addrs,
        [
            (0, "10.0.0.1:10911".to_string()),
            (1, "10.0.0.2:10911".to_string())
        ]
    );
}

#[test]
fn nameservers_side_by_side_share_nothing() {
    let one = TestNamesrv::start();
    let two = TestNamesrv::start();
    let mut b = one.client();
    b.register_broker(&broker(
        "c1",
        "broker-a",
        0,
        "10.0.0.1:10911",
        &[topic("T", 4, 6)],
    ))
    .unwrap();
    assert_eq!(route_code(&one, "T"), Some(0));
    assert_eq!(route_code(&two, "T"), Some(response::TOPIC_NOT_EXIST));
}

#[test]
fn delete_topic_and_write_perm_and_topics_by_cluster() {
    let ns = TestNamesrv::start();
    let mut b = ns.client();
    b.register_broker(&broker(
        "c1",
        "broker-a",
        0,
        "10.0.0.1:10911",
        &[topic("T", 4, 6), topic("U", 1, 6)],
    ))
    .unwrap();
    let mut conn = ns.connection();
    let wipe = RemotingCommand::request(request::WIPE_WRITE_PERM_OF_BROKER)
        .with_ext("brokerName", "broker-a");
    assert_eq!(conn.call(wipe).unwrap().ext("wipeTopicCount"), Some("2"));
    assert_eq!(ns.client().route("T").unwrap().queue_datas[0].perm, 4);
    let add = RemotingCommand::request(request::ADD_WRITE_PERM_OF_BROKER)
        .with_ext("brokerName", "broker-a");
    assert_eq!(conn.call(add).unwrap().ext("addTopicCount"), Some("2"));
    assert_eq!(ns.client().route("T").unwrap().queue_datas[0].perm, 6);
    let by_cluster =
        RemotingCommand::request(request::GET_TOPICS_BY_CLUSTER).with_ext("cluster", "c1");
    let body = conn.call(by_cluster).unwrap().body;
    assert_eq!(&body[..], br#"{"topicList":["T","U"]}"#);
    ns.client().delete_topic("T", None).unwrap();
    assert_eq!(route_code(&ns, "T"), Some(response::TOPIC_NOT_EXIST));
    assert_eq!(route_code(&ns, "U"), Some(0));
}

#[test]
fn kv_config_and_order_topic_conf_in_routes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvConfig.json");
    let p = path.clone();
    let ns = TestNamesrv::start_with(move |o| {
        o.kv_config_path = Some(p);
        o.processor.order_message_enable = true;
    });
    let mut c = ns.client();
    c.put_kv("ORDER_TOPIC_CONFIG", "T", "broker-a:4").unwrap();
    c.put_kv("ns", "k", "v").unwrap();
    assert_eq!(c.get_kv("ns", "k").unwrap().as_deref(), Some("v"));
    assert_eq!(c.kv_namespace("ns").unwrap().table["k"], "v");
    let mut conn = ns.connection();
    let del = RemotingCommand::request(request::DELETE_KV_CONFIG)
        .with_ext("namespace", "ns")
        .with_ext("key", "k");
    conn.call(del).unwrap();
    assert_eq!(c.get_kv("ns", "k").unwrap(), None);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("broker-a:4"));
    let mut b = ns.client();
    b.register_broker(&broker(
        "c1",
        "broker-a",
        0,
        "10.0.0.1:10911",
        &[topic("T", 4, 6)],
    ))
    .unwrap();
    assert_eq!(
        c.route("T").unwrap().order_topic_conf.as_deref(),
        Some("broker-a:4")
    );
}

#[test]
fn unknown_code_is_answered_not_supported() {
    let ns = TestNamesrv::start();
    let answer = ns
        .connection()
        .invoke(RemotingCommand::request(9999))
        .unwrap();
    assert_eq!(answer.code, response::REQUEST_CODE_NOT_SUPPORTED);
    assert_eq!(
        answer.remark.as_deref(),
        Some(" request type 9999 not supported")
    );
}

#[test]
fn missing_field_and_bad_crc_are_errors_naming_the_problem() {
    let ns = TestNamesrv::start();
    let mut conn = ns.connection();
    let answer = conn
        .invoke(RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC))
        .unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(answer.remark.unwrap().contains("topic"));
    let bad_crc = RemotingCommand::request(request::REGISTER_BROKER)
        .with_ext("brokerName", "b")
        .with_ext("brokerAddr", "1.2.3.4:5")
        .with_ext("clusterName", "c")
        .with_ext("brokerId", "0")
        .with_ext("bodyCrc32", "12345")
        .with_body(&b"{}"[..]);
    let answer = conn.invoke(bad_crc).unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(answer.remark.unwrap().starts_with("crc32 not match"));
    let bad_id = RemotingCommand::request(request::UNREGISTER_BROKER)
        .with_ext("brokerName", "b")
        .with_ext("brokerAddr", "a")
        .with_ext("clusterName", "c")
        .with_ext("brokerId", "zero");
    let answer = conn.invoke(bad_id).unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(answer.remark.unwrap().contains("brokerId"));
}

fn assert_closed(conn: &mut ringmq::client::Connection) {
    match conn.read_command() {
        Err(ClientError::Closed { .. }) | Err(ClientError::Io { .. }) => {}
        other => panic!("connection should be closed, got {other:?}"),
    }
}

#[test]
fn malformed_header_closes_only_that_connection() {
    let ns = TestNamesrv::start();
    let mut good = ns.connection();
    let mut bad = ns.connection();
    let mut frame = BytesMut::new();
    frame.put_u32(4 + 9);
    frame.put_u32(9);
    frame.put_slice(b"{\"code\":1");
    bad.write_all(&frame).unwrap();
    assert_closed(&mut bad);
    assert_eq!(
        good.invoke(RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO))
            .unwrap()
            .code,
        0
    );
}

#[test]
fn oversized_frame_is_refused_from_its_length_prefix() {
    let ns = TestNamesrv::start();
    let mut good = ns.connection();
    let mut big = ns.connection();
    // Declare 64 MiB and send nothing more: the server must close without waiting for the body.
    big.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
    assert_closed(&mut big);
    assert_eq!(
        good.invoke(RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO))
            .unwrap()
            .code,
        0
    );
}

#[test]
fn pipelined_requests_are_all_answered_in_the_request_serialization() {
    let ns = TestNamesrv::start();
    let mut conn = ns.connection();
    let mut batch = BytesMut::new();
    for opaque in 0..200 {
        let mut cmd =
            RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "none");
        cmd.opaque = opaque;
        cmd.serialize_type = if opaque % 2 == 0 {
            SerializeType::Json
        } else {
            SerializeType::RocketMq
        };
        cmd.encode(&mut batch).unwrap();
    }
    conn.write_all(&batch).unwrap();
    let mut seen = [false; 200];
    for _ in 0..200 {
        let answer = conn.read_command().unwrap();
        assert_eq!(answer.code, response::TOPIC_NOT_EXIST);
        let expected = if answer.opaque % 2 == 0 {
            SerializeType::Json
        } else {
            SerializeType::RocketMq
        };
        assert_eq!(answer.serialize_type, expected);
        seen[answer.opaque as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
}

#[test]
fn twenty_thousand_pipelined_requests_are_all_answered() {
    use std::io::{Read, Write};
    let ns = TestNamesrv::start();
    let stream = std::net::TcpStream::connect(&ns.addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    const N: i32 = 20_000;
    let sender = std::thread::spawn(move || {
        let mut batch = BytesMut::new();
        for opaque in 0..N {
            let mut cmd =
                RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "none");
            cmd.opaque = opaque;
            cmd.encode(&mut batch).unwrap();
        }
        writer.write_all(&batch).unwrap();
    });
    let mut reader = stream;
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = BytesMut::new();
    let mut answered = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while answered < N {
        let n = reader
            .read(&mut chunk)
            .expect("every request answered before the timeout");
        assert!(n > 0, "closed after {answered} answers");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(frame) = ringmq::remoting::next_frame(&mut buf, 1 << 24).unwrap() {
            assert_eq!(
                RemotingCommand::decode(frame).unwrap().code,
                response::TOPIC_NOT_EXIST
            );
            answered += 1;
        }
    }
    sender.join().unwrap();
}

#[test]
fn a_second_nameserver_on_a_taken_port_refuses_to_start() {
    let first = TestNamesrv::start();
    let taken: std::net::SocketAddr = first.addr.parse().unwrap();
    let options = ringmq::namesrv::NamesrvOptions::new(taken);
    let err = ringmq::namesrv::start(options, ringmq::runtime::Shutdown::new())
        .err()
        .expect("the port is taken");
    assert!(err.to_string().contains(&first.addr), "{err}");
    assert_eq!(route_code(&first, "T"), Some(response::TOPIC_NOT_EXIST));
}
