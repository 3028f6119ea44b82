//! `ringmq admin` message queries as an operator runs them: the real binary against an
//! in-process 2-shard broker holding messages sent with keys and UNIQ_KEYs. queryMsgById,
//! queryMsgByKey, queryMsgByUniqueKey and queryMsgByOffset are checked in mqadmin's text and
//! with `--json`, and their error paths name the broker, code and remark.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::{Properties, KEYS, TAGS, UNIQ_KEY};
use serde_json::Value;

use crate::harness::TestBroker;

const TOPIC: &str = "QueryTopic";

/// What one run of `ringmq admin` did: exit code, stdout, stderr.
fn run(namesrv: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("admin")
        .args(args)
        .env("NAMESRV_ADDR", namesrv)
        .output()
        .expect("ringmq runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// Runs a command that must succeed; its stdout.
fn ok(namesrv: &str, args: &[&str]) -> String {
    let (code, out, err) = run(namesrv, args);
    assert_eq!(code, Some(0), "{args:?} failed: {err}{out}");
    out
}

/// Runs a command with `--json` that must succeed; its stdout parsed.
fn json(namesrv: &str, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let out = ok(namesrv, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs a command that must fail with exit code 1; its stderr.
fn fails(namesrv: &str, args: &[&str]) -> String {
    let (code, out, err) = run(namesrv, args);
    assert_eq!(code, Some(1), "{args:?}: {out}{err}");
    assert!(err.starts_with("ringmq admin: "), "{err}");
    err
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A message sent: its offsetMsgId, UNIQ_KEY and queue offset.
struct Sent {
    offset_msg_id: String,
    uniq: String,
    queue_offset: i64,
}

/// Sends `body` to queue `queue_id` of TOPIC with these keys and tag, and a fresh UNIQ_KEY.
fn send(conn: &mut Connection, queue_id: i32, keys: &str, tags: &str, body: &str) -> Sent {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let uniq = format!("{:08X}{:024X}", std::process::id(), nanos);
    let mut properties = Properties::default();
    properties.set(KEYS, keys);
    properties.set(TAGS, tags);
    properties.set(UNIQ_KEY, &uniq);
    let msg = OutgoingMessage {
        topic: TOPIC.into(),
        queue_id,
        body: body.as_bytes().to_vec(),
        properties,
        flag: 0,
    };
    let sent = conn.send_message("query_pg", &msg).unwrap();
    Sent {
        offset_msg_id: sent.msg_id,
        uniq,
        queue_offset: sent.queue_offset,
    }
}

/// The value of `title` in a printMsg block (`%-20s %s`).
fn field<'a>(block: &'a str, title: &str) -> &'a str {
    let line = block
        .lines()
        .find(|l| l.starts_with(title))
        .unwrap_or_else(|| panic!("no {title} in {block}"));
    assert_eq!(
        &line[title.len()..21],
        &" ".repeat(21 - title.len()),
        "{line}"
    );
    &line[21..]
}

/// A broker with three messages of TOPIC: two share the key `shared` (queues 0 and 1).
fn broker_with_messages() -> (TestBroker, [Sent; 3]) {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    let sent = [
        send(&mut conn, 0, "order-1 shared", "TagA", "first"),
        send(&mut conn, 1, "order-2 shared", "TagB", "second"),
        send(&mut conn, 0, "other", "TagA", "third"),
    ];
    let ns = broker.namesrv.addr.clone();
    wait_for("the route of the topic", || {
        let (code, _, _) = run(&ns, &["topicRoute", "-t", TOPIC]);
        (code == Some(0)).then_some(())
    });
    (broker, sent)
}

#[test]
fn messages_are_found_by_id_key_unique_key_and_offset() {
    let (broker, sent) = broker_with_messages();
    let ns = broker.namesrv.addr.clone();
    assert_by_key(&ns, &sent);
    assert_by_id(&ns, &broker.addr, &sent);
    assert_by_unique_key(&ns, &sent);
    assert_by_offset(&ns, &sent);
    for s in &sent {
        let _ = std::fs::remove_file(format!("/tmp/rocketmq/msgbodys/{}", s.uniq));
    }
}

fn assert_by_key(ns: &str, sent: &[Sent; 3]) {
    let args = ["queryMsgByKey", "-t", TOPIC, "-k", "shared"];
    // The index is written as messages are dispatched: wait until both are there.
    let out = wait_for("both messages in the index", || {
        let (code, out, _) = run(ns, &args);
        (code == Some(0) && out.lines().count() == 3).then_some(out)
    });
    let lines: Vec<&str> = out.lines().collect();
    // mqadmin: "%-50s %4s %40s".
    let header = format!("{:<50} {:>4} {:>40}", "#Message ID", "#QID", "#Offset");
    assert_eq!(lines[0], header);
    let row = |s: &Sent, qid: i32| format!("{:<50} {qid:>4} {:>40}", s.uniq, s.queue_offset);
    assert!(lines.contains(&row(&sent[0], 0).as_str()), "{out}");
    assert!(lines.contains(&row(&sent[1], 1).as_str()), "{out}");

    let rows = json(ns, &args);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let first = rows
        .iter()
        .find(|r| r["msgId"] == sent[0].uniq.as_str())
        .unwrap();
    assert_eq!(first["offsetMsgId"], sent[0].offset_msg_id.as_str());
    assert_eq!(
        (&first["brokerName"], &first["queueId"]),
        (&"broker-it".into(), &0.into())
    );
    assert_eq!(
        (&first["keys"], &first["tags"]),
        (&"order-1 shared".into(), &"TagA".into())
    );

    let one = json(ns, &["queryMsgByKey", "-t", TOPIC, "-k", "other"]);
    assert_eq!(one.as_array().unwrap().len(), 1);
    // A time range after every message finds none.
    let later = (SystemTime::now() + Duration::from_secs(3600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let err = fails(
        ns,
        &["queryMsgByKey", "-t", TOPIC, "-k", "shared", "-b", &later],
    );
    assert!(err.contains("QUERY_NOT_FOUND (22)"), "{err}");
}

fn assert_by_id(ns: &str, broker_addr: &str, sent: &[Sent; 3]) {
    let out = ok(ns, &["queryMsgById", "-i", &sent[0].offset_msg_id]);
    assert!(out.starts_with("OffsetID:"), "{out}");
    assert_eq!(field(&out, "OffsetID:"), sent[0].offset_msg_id);
    assert_eq!(field(&out, "Topic:"), TOPIC);
    assert_eq!(field(&out, "Tags:"), "[TagA]");
    assert_eq!(field(&out, "Keys:"), "[order-1 shared]");
    assert_eq!(field(&out, "Queue ID:"), "0");
    assert_eq!(
        field(&out, "Queue Offset:"),
        sent[0].queue_offset.to_string()
    );
    assert_eq!(field(&out, "Reconsume Times:"), "0");
    assert_eq!(field(&out, "Store Host:"), broker_addr);
    assert_eq!(field(&out, "System Flag:"), "0");
    assert_eq!(field(&out, "Born Timestamp:").len(), 23, "{out}");
    // Java's HashMap order of these keys.
    let props = field(&out, "Properties:");
    let uniq = &sent[0].uniq;
    let expected = format!("{{KEYS=order-1 shared, UNIQ_KEY={uniq}, TAGS=TagA}}");
    let expected_cluster =
        format!("{{KEYS=order-1 shared, UNIQ_KEY={uniq}, CLUSTER=DefaultCluster, TAGS=TagA}}");
    assert!(props == expected || props == expected_cluster, "{props}");
    let path = field(&out, "Message Body Path:");
    assert_eq!(path, format!("/tmp/rocketmq/msgbodys/{uniq}"));
    assert_eq!(std::fs::read(path).unwrap(), b"first");
    assert!(!out.contains("Message Body:"));

    // Two ids, comma separated, and the body printed.
    let ids = format!("{}, {}", sent[0].offset_msg_id, sent[2].offset_msg_id);
    let out = ok(ns, &["queryMsgById", "-i", &ids, "--printBody"]);
    let blocks: Vec<&str> = out.split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{out}");
    assert_eq!(field(blocks[1], "Message Body:"), "third");
    let found = json(ns, &["queryMsgById", "-i", &ids]);
    assert_eq!(found.as_array().unwrap().len(), 2);
    assert_eq!(found[1]["body"], "third");
    assert_eq!(found[1]["offsetMsgId"], sent[2].offset_msg_id.as_str());
    assert_eq!(found[0]["properties"]["KEYS"], "order-1 shared");
    assert_eq!(found[0]["storeHost"], broker_addr);
}

fn assert_by_unique_key(ns: &str, sent: &[Sent; 3]) {
    let out = ok(
        ns,
        &["queryMsgByUniqueKey", "-t", TOPIC, "-i", &sent[1].uniq],
    );
    assert!(out.starts_with("Topic:"), "{out}");
    assert_eq!(field(&out, "Queue ID:"), "1");
    assert_eq!(field(&out, "Tags:"), "[TagB]");
    let path = field(&out, "Message Body Path:");
    assert_eq!(std::fs::read(path).unwrap(), b"second");
    let found = json(
        ns,
        &["queryMsgByUniqueKey", "-t", TOPIC, "-i", &sent[1].uniq],
    );
    assert_eq!(found["msgId"], sent[1].uniq.as_str());
    assert_eq!(found["offsetMsgId"], sent[1].offset_msg_id.as_str());
    assert_eq!(
        (&found["body"], &found["queueId"]),
        (&"second".into(), &1.into())
    );
}

fn assert_by_offset(ns: &str, sent: &[Sent; 3]) {
    let offset = sent[2].queue_offset.to_string();
    let args = [
        "queryMsgByOffset",
        "-t",
        TOPIC,
        "-b",
        "broker-it",
        "-i",
        "0",
        "-o",
        &offset,
    ];
    let out = ok(ns, &args);
    assert_eq!(field(&out, "OffsetID:"), sent[2].offset_msg_id);
    assert_eq!(field(&out, "Keys:"), "[other]");
    // A pull consumer adds the queue's offsets to the properties.
    let props = field(&out, "Properties:");
    assert!(
        props.starts_with("{MIN_OFFSET=0, MAX_OFFSET=2, "),
        "{props}"
    );
    let found = json(ns, &args);
    assert_eq!(found["queueOffset"], sent[2].queue_offset);
    assert_eq!(
        (&found["body"], &found["msgId"]),
        (&"third".into(), &sent[2].uniq.as_str().into())
    );
}

#[test]
fn query_errors_name_the_broker_code_and_remark() {
    let (broker, sent) = broker_with_messages();
    let ns = broker.namesrv.addr.clone();
    // An offsetMsgId of this broker past its commit log.
    let addr: std::net::SocketAddr = broker.addr.parse().unwrap();
    let unknown = ringmq::message::offset_msg_id(addr, 1 << 40);
    let err = fails(&ns, &["queryMsgById", "-i", &unknown]);
    assert!(err.contains("VIEW_MESSAGE_BY_ID (33)"), "{err}");
    assert!(
        err.contains(&broker.addr) && err.contains("SYSTEM_ERROR (1)"),
        "{err}"
    );
    assert!(err.contains("can not find message"), "{err}");
    // One id found, one not: the found one is printed, the command fails.
    let ids = format!("{},{unknown}", sent[0].offset_msg_id);
    let (code, out, err) = run(&ns, &["queryMsgById", "-i", &ids]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        out.starts_with("OffsetID:") && err.contains("SYSTEM_ERROR (1)"),
        "{out}{err}"
    );

    let err = fails(&ns, &["queryMsgById", "-i", "not-an-id"]);
    assert!(err.contains("not-an-id is not an offsetMsgId"), "{err}");
    let gone = ringmq::message::offset_msg_id("127.0.0.1:1".parse().unwrap(), 0);
    let err = fails(&ns, &["queryMsgById", "-i", &gone, "--json"]);
    assert!(err.contains("connecting to broker 127.0.0.1:1"), "{err}");

    let err = fails(&ns, &["queryMsgByKey", "-t", TOPIC, "-k", "nokey"]);
    assert!(
        err.contains("broker-it") && err.contains(&broker.addr),
        "{err}"
    );
    assert!(
        err.contains("QUERY_MESSAGE (12)") && err.contains("QUERY_NOT_FOUND (22)"),
        "{err}"
    );
    let err = fails(
        &ns,
        &["queryMsgByUniqueKey", "-t", TOPIC, "-i", "NOSUCHKEY"],
    );
    assert!(
        err.contains("unique key NOSUCHKEY") && err.contains("QUERY_NOT_FOUND"),
        "{err}"
    );
    let err = fails(&ns, &["queryMsgByKey", "-t", "NoSuchTopic", "-k", "k"]);
    assert!(err.contains("TOPIC_NOT_EXIST (17)"), "{err}");

    let past = [
        "queryMsgByOffset",
        "-t",
        TOPIC,
        "-b",
        "broker-it",
        "-i",
        "1",
        "-o",
        "99",
    ];
    let err = fails(&ns, &past);
    assert!(
        err.contains("no message at offset 99") && err.contains(&broker.addr),
        "{err}"
    );
    assert!(err.contains("PULL_"), "{err}");
    let other = [
        "queryMsgByOffset",
        "-t",
        TOPIC,
        "-b",
        "nobroker",
        "-i",
        "0",
        "-o",
        "0",
    ];
    let err = fails(&ns, &other);
    assert!(err.contains("broker nobroker is not in the route") && err.contains("broker-it"));
}

#[test]
fn query_commands_have_help() {
    let commands = [
        ("queryMsgById", "--msgId"),
        ("queryMsgByKey", "--msgKey"),
        ("queryMsgByUniqueKey", "--msgId"),
        ("queryMsgByOffset", "--brokerName"),
    ];
    let (_, overview, _) = run("127.0.0.1:1", &["--help"]);
    for (command, flag) in commands {
        assert!(overview.contains(command), "{overview}");
        let (code, help, err) = run("127.0.0.1:1", &[command, "--help"]);
        assert_eq!(code, Some(0), "{err}");
        let usage = format!("Usage: ringmq admin {command}");
        assert!(help.contains(&usage) && help.contains(flag), "{help}");
        assert!(help.contains("--json"), "{help}");
    }
}
