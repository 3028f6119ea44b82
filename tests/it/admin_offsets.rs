//! `ringmq admin resetOffsetByTime` and `consumerProgress` without `-g`, run as an operator
//! runs them against an in-process 2-shard broker: the offsets really move (on the broker, and
//! in a `rocketmq-client-rust` push consumer that is told to reset), the RESET_CONSUMER_CLIENT_
//! OFFSET frames a client receives, mqadmin's fallback for an offline group, tables, JSON and
//! the error paths.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq::admin::fastjson_mq::parse_mq_table;
use ringmq::client::Connection;
use ringmq::remoting::{request as code, RemotingCommand};
use serde_json::Value;

use crate::admin_cli::{assert_aligned, fails, heartbeat, json, ok, request, run, send, wait_for};
use crate::harness::TestBroker;
use crate::rust_client_support::{collector, wait_registered, Clients};

const TOPIC: &str = "ResetTopic";
const GROUP: &str = "reset_group";

/// `resetOffsetByTime -g group -t topic -s at` and `more`.
fn reset<'a>(group: &'a str, topic: &'a str, at: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let args = ["resetOffsetByTime", "-g", group, "-t", topic, "-s", at];
    [&args[..], more].concat()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn commit(conn: &mut Connection, group: &str, topic: &str, queue: i32, offset: i64) {
    let (q, o) = (queue.to_string(), offset.to_string());
    let fields = [
        ("consumerGroup", group),
        ("topic", topic),
        ("queueId", q.as_str()),
        ("commitOffset", o.as_str()),
    ];
    conn.call(request(code::UPDATE_CONSUMER_OFFSET, &fields))
        .unwrap();
}

/// The group's committed offset of each of the topic's two queues.
fn committed(conn: &mut Connection, group: &str, topic: &str) -> [i64; 2] {
    [0, 1].map(|q: i32| {
        let q = q.to_string();
        let fields = [("consumerGroup", group), ("topic", topic), ("queueId", &q)];
        conn.offset_call(code::QUERY_CONSUMER_OFFSET, &fields)
            .unwrap()
    })
}

/// The next RESET_CONSUMER_CLIENT_OFFSET the broker pushed on `conn`.
fn pushed_reset(conn: &mut Connection) -> RemotingCommand {
    if let Some(at) = conn
        .unsolicited
        .iter()
        .position(|c| c.code == code::RESET_CONSUMER_CLIENT_OFFSET)
    {
        return conn.unsolicited.remove(at);
    }
    loop {
        let frame = conn.read_command().expect("a frame from the broker");
        if frame.code == code::RESET_CONSUMER_CLIENT_OFFSET {
            return frame;
        }
    }
}

/// `updateTopic -b` of `topic` with `queues` read and write queues.
fn create_topic(broker: &TestBroker, topic: &str, queues: u32) {
    let n = queues.to_string();
    let args = [
        "updateTopic",
        "-b",
        &broker.addr,
        "-t",
        topic,
        "-r",
        &n,
        "-w",
        &n,
    ];
    ok(&broker.namesrv.addr, &args);
}

/// ResetTopic with two queues; each holds 3 messages stored before the returned time and 2
/// after it; GROUP committed 5 on both.
fn topic_with_history(broker: &TestBroker, conn: &mut Connection) -> i64 {
    create_topic(broker, TOPIC, 2);
    for q in 0..2 {
        (0..3).for_each(|_| send(conn, TOPIC, q));
    }
    std::thread::sleep(Duration::from_millis(30));
    let middle = now_ms();
    std::thread::sleep(Duration::from_millis(30));
    for q in 0..2 {
        (0..2).for_each(|_| send(conn, TOPIC, q));
        commit(conn, GROUP, TOPIC, q, 5);
    }
    middle
}

#[test]
fn offsets_are_reset_by_time_for_offline_and_online_groups() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let mut conn = broker.connection();
    let middle = topic_with_history(&broker, &mut conn);

    // Offline: mqadmin's old way, offset by offset.
    let at = middle.to_string();
    let out = ok(&ns, &reset(GROUP, TOPIC, &at, &[]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "rollback consumer offset by specified consumerGroup[{GROUP}], topic[{TOPIC}], \
             force[true], timestamp(string)[{at}], timestamp(long)[{at}]"
        )
    );
    let table = lines[1..].join("\n");
    assert!(
        lines[1].starts_with("#brokerName           #queueId"),
        "{out}"
    );
    let titles = [
        "#queueId",
        "#brokerOffset",
        "#consumerOffset",
        "#timestampOffset",
    ];
    assert_aligned(&table, &titles);
    for (q, line) in lines[2..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells, ["broker-it", &q.to_string(), "5", "5", "3", "3"]);
    }
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(committed(&mut conn, GROUP, TOPIC), [3, 3]);

    // Not forced, the end is ahead of the group: nothing moves.
    let not_forced = reset(GROUP, TOPIC, "now", &["-f", "false"]);
    let reset_json = json(&ns, &not_forced);
    assert_eq!(
        (&reset_json["online"], &reset_json["timestamp"]),
        (&false.into(), &(-1).into())
    );
    for q in reset_json["queues"].as_array().unwrap() {
        let offsets = [&q["timestampOffset"], &q["consumerOffset"], &q["offset"]];
        assert_eq!(
            offsets.map(|v| v.as_i64()),
            [5, 3, 3].map(Some),
            "{reset_json}"
        );
    }
    assert_eq!(committed(&mut conn, GROUP, TOPIC), [3, 3]);

    // Online: a client of the group on its own connection is told the new offsets.
    let mut client = broker.connection();
    client.heartbeat(&heartbeat(GROUP, TOPIC)).unwrap();
    let reset_json = json(&ns, &reset(GROUP, TOPIC, "0", &[]));
    assert_eq!(reset_json["online"], true);
    let queues = serde_json::json!([
        {"brokerName": "broker-it", "queueId": 0, "offset": 0},
        {"brokerName": "broker-it", "queueId": 1, "offset": 0},
    ]);
    assert_eq!(reset_json["queues"], queues);
    assert_eq!(committed(&mut conn, GROUP, TOPIC), [0, 0]);
    let push = pushed_reset(&mut client);
    let header = ["topic", "group", "timestamp", "isForce"].map(|k| push.ext(k).unwrap_or(""));
    assert_eq!(header, [TOPIC, GROUP, "0", "true"]);
    let (entries, _) = parse_mq_table(&push.body, "offsetTable").unwrap();
    let pushed: Vec<(i32, i64)> = entries
        .iter()
        .map(|(mq, o)| (mq.queue_id, o.as_i64().unwrap()))
        .collect();
    assert_eq!(pushed, [(0, 0), (1, 0)]);

    // Not forced, towards the end: the group stays where it is; mqadmin's table.
    let out = ok(&ns, &not_forced);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "rollback consumer offset by specified group[{GROUP}], topic[{TOPIC}], \
             force[false], timestamp(string)[now], timestamp(long)[-1]"
        )
    );
    assert!(
        lines[1].starts_with(&format!("{:<42}#queueId", "#brokerName")),
        "{out}"
    );
    assert_aligned(&lines[1..].join("\n"), &["#queueId", "#offset"]);
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["broker-it", "0", "0"]
    );
    assert_eq!(committed(&mut conn, GROUP, TOPIC), [0, 0]);
    pushed_reset(&mut client);

    // -c: the C++ clients' list form, forced to the end.
    ok(&ns, &reset(GROUP, TOPIC, "now", &["-c"]));
    assert_eq!(committed(&mut conn, GROUP, TOPIC), [5, 5]);
    let push = pushed_reset(&mut client);
    let body: Value = serde_json::from_slice(&push.body).unwrap();
    assert_eq!(
        body["offsetTable"][1],
        serde_json::json!({"brokerName": "broker-it", "offset": 5, "queueId": 1, "topic": TOPIC})
    );

    reset_errors(&broker, &ns);
}

/// Unknown topic, a time that does not parse, an online group without offsets.
fn reset_errors(broker: &TestBroker, ns: &str) {
    let err = fails(Some(ns), &reset(GROUP, "NoSuchTopic", "now", &[]));
    assert!(err.contains("TOPIC_NOT_EXIST (17)"), "{err}");
    let err = fails(Some(ns), &reset(GROUP, TOPIC, "yesterday", &[]));
    assert!(
        err.contains("\"yesterday\"") && err.contains("yyyy-MM-dd#HH:mm:ss:SSS"),
        "{err}"
    );
    let mut fresh = broker.connection();
    fresh.heartbeat(&heartbeat("fresh_group", TOPIC)).unwrap();
    let err = fails(Some(ns), &reset("fresh_group", TOPIC, "0", &[]));
    assert!(err.contains("INVOKE_BROKER_TO_RESET_OFFSET (222)"), "{err}");
    assert!(
        err.contains(&broker.addr) && err.contains("SYSTEM_ERROR (1)"),
        "{err}"
    );
    assert!(
        err.contains("THe consumer group <fresh_group> not exist"),
        "{err}"
    );
}

#[test]
fn consumer_progress_without_a_group_lists_every_group() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let mut conn = broker.connection();
    topic_with_history(&broker, &mut conn);
    commit(&mut conn, GROUP, TOPIC, 1, 2);
    // An online push consumer of GROUP, and an offline group with a retry topic.
    let mut client = broker.connection();
    client.heartbeat(&heartbeat(GROUP, TOPIC)).unwrap();
    create_topic(&broker, "%RETRY%gone_group", 1);
    let groups = wait_for("both groups in consumerProgress", || {
        let all = json(&ns, &["consumerProgress"]);
        (all.as_array()?.len() == 2).then_some(all)
    });
    assert_eq!(groups[0]["group"], GROUP);
    assert_eq!(
        (&groups[0]["count"], &groups[0]["diffTotal"]),
        (&1.into(), &3.into())
    );
    assert_eq!(groups[0]["consumeType"], "PUSH");
    assert_eq!(groups[0]["messageModel"], "CLUSTERING");
    assert_eq!(
        (&groups[1]["group"], &groups[1]["count"]),
        (&"gone_group".into(), &0.into())
    );
    assert!(groups[1]["consumeType"].is_null(), "{groups}");

    let out = ok(&ns, &["consumerProgress"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{:<66}#Count  #Version", "#Group")),
        "{out}"
    );
    let titles = [
        "#Count",
        "#Version",
        "#Type",
        "#Model",
        "#TPS",
        "#Diff Total",
    ];
    assert_aligned(&out, &titles[..2]);
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        [GROUP, "1", "V4_9_8", "PUSH", "CLUSTERING", "0", "3"]
    );
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(cells, ["gone_group", "0", "OFFLINE", "0", "0"]);
    assert!(lines[0].ends_with(titles[5]), "{out}");

    let err = fails(Some("127.0.0.1:1"), &["consumerProgress"]);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// A `rocketmq-client-rust` push consumer that consumed a topic is reset to its start while
/// it runs, and receives every message again.
#[test]
fn a_running_rust_consumer_is_reset_and_consumes_again() {
    const RTOPIC: &str = "RustResetTopic";
    const RGROUP: &str = "rc-reset-cg";
    const N: usize = 6;
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let ns = broker.namesrv.addr.clone();
    create_topic(&broker, RTOPIC, 2);
    let mut conn = broker.connection();
    (0..N).for_each(|i| send(&mut conn, RTOPIC, (i % 2) as i32));
    let clients = Clients::new("reset", &ns, false);
    let (tx, rx) = mpsc::channel();
    let mut consumer = clients.consumer(RGROUP, "rc-reset-1", RTOPIC, "*", collector(1, tx));
    let receive = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((_, m)) = rx.recv_timeout(left) else {
                break;
            };
            got.push((m.queue_id(), m.queue_offset()));
        }
        got.sort();
        got
    };
    let expected: Vec<(i32, i64)> = (0..2).flat_map(|q| (0..3).map(move |o| (q, o))).collect();
    assert_eq!(receive(N), expected, "the first pass");
    // The consumer commits what it consumed (every 5 s).
    wait_for("the consumer's offsets at the end", || {
        let r = run(Some(&ns), &["consumerProgress", "-g", RGROUP, "--json"]);
        let progress: Value = serde_json::from_str(&r.out).ok()?;
        let queues = progress["queues"].as_array()?.iter();
        let of_topic = queues.filter(|q| q["topic"] == RTOPIC).count();
        (progress["diffTotal"] == 0 && of_topic == 2).then_some(())
    });
    let reset = json(&ns, &reset(RGROUP, RTOPIC, "0", &[]));
    assert_eq!(reset["online"], true, "{reset}");
    assert_eq!(reset["queues"][1]["offset"], 0, "{reset}");
    assert_eq!(receive(N), expected, "after the reset");
    clients.block_on(consumer.shutdown());
    clients.close();
}
