//! Message trace: a broker with `traceTopicEnable=true` registers RMQ_SYS_TRACE_TOPIC; a
//! producer and a push consumer of rocketmq-client-rust with trace on store their records
//! there; `ringmq admin queryMsgTraceById` and the dashboard's message page decode them (Pub,
//! SubBefore, SubAfter); records that do not decode are shown as such beside the others.

use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::message::properties::Properties;
use rocketmq_client_rust::{DefaultMQProducer, SendStatus};
use serde_json::Value;

use crate::admin_cli::{json, run};
use crate::dashboard::{Http, TestDashboard};
use crate::harness::{TestBroker, TestNamesrv};
use crate::rust_client_support::{chain, new_message, wait_registered, Clients};

const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";

/// A 2-shard broker with the trace topic, and its store's directory (to drop after it).
fn traced_broker() -> (tempfile::TempDir, TestBroker) {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-trace-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), 2, |cfg| {
        cfg.trace_topic_enable = true;
    });
    wait_registered(&broker);
    (dir, broker)
}

/// The rows of `queryMsgTraceById -i msg_id --json` once `done` holds for them (30 s).
fn trace_rows(namesrv: &str, msg_id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run(
            Some(namesrv),
            &["queryMsgTraceById", "-i", msg_id, "--json"],
        );
        if r.ok {
            let rows: Vec<Value> = serde_json::from_str(&r.out).expect("JSON rows");
            if done(&rows) {
                return rows;
            }
        }
        if Instant::now() >= deadline {
            panic!("no complete trace of {msg_id}: {}{}", r.out, r.err);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn row<'a>(rows: &'a [Value], trace_type: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["traceType"] == trace_type)
        .unwrap_or_else(|| panic!("no {trace_type} row in {rows:#?}"))
}

#[test]
fn rust_client_traces_are_stored_and_decoded() {
    const TOPIC: &str = "TracedTopic";
    let (_dir, broker) = traced_broker();
    let namesrv = broker.namesrv.addr.clone();
    let route = json(&namesrv, &["topicRoute", "-t", TRACE_TOPIC]);
    assert_eq!(route["brokerDatas"][0]["brokerName"], "broker-it");

    let clients = Clients::new("trace", &namesrv, false);
    let mut config = clients.config("trace-producer");
    config.set_enable_trace(true);
    let mut producer = DefaultMQProducer::builder(clients.runtime.clone())
        .client_config(config)
        .name_server_addr(namesrv.as_str())
        .producer_group("trace-pg")
        .build();
    clients.block_on(producer.start()).expect("producer starts");

    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let msg_id = clients.block_on(async {
        let mut msg = new_message!(TOPIC);
        msg.set_keys("order-7".into());
        msg.set_tags("TagA".into());
        msg.set_body(Some(b"traced".to_vec().into()));
        let sent = producer.send_with_timeout(msg, 10_000).await;
        let sent = sent.unwrap_or_else(|e| panic!("send: {}", chain(&e)));
        let sent = sent.expect("a SendResult");
        assert_eq!(sent.send_status, SendStatus::SendOk);
        sent.msg_id.expect("msgId").to_string()
    });

    // The client sends its trace records every 5 s.
    let rows = trace_rows(&namesrv, &msg_id, |rows| {
        rows.iter().any(|r| r["traceType"] == "Pub")
    });
    let publish = row(&rows, "Pub");
    assert_eq!(publish["group"], "trace-pg");
    assert_eq!(publish["status"], "success");
    assert_eq!(publish["topic"], TOPIC);
    assert_eq!(publish["keys"], "order-7");
    assert!(publish["costMs"].as_i64().is_some());
    assert!(publish["timestamp"].as_i64().unwrap() >= sent_at - 1_000);
    assert!(!publish["clientHost"].as_str().unwrap().is_empty());
    assert!(
        rows.iter().all(|r| r["traceType"] != "Invalid"),
        "{rows:#?}"
    );

    let text = run(Some(&namesrv), &["queryMsgTraceById", "-i", &msg_id]);
    assert!(text.ok, "{}", text.err);
    let lines: Vec<&str> = text.out.lines().collect();
    assert!(lines[0].starts_with("#Type"), "{}", text.out);
    assert!(lines[1].starts_with("Pub "), "{}", text.out);

    // The dashboard's message detail shows the same trace.
    let offset_msg_id = json(
        &namesrv,
        &["queryMsgByUniqueKey", "-t", TOPIC, "-i", &msg_id],
    );
    let offset_msg_id = offset_msg_id["offsetMsgId"].as_str().expect("offsetMsgId");
    let dashboard = TestDashboard::start(&namesrv);
    let mut http = Http::new(&dashboard.base);
    let shown = http.get(&format!("/api/messages/{offset_msg_id}"));
    let trace = shown["trace"].as_array().expect("trace rows");
    assert!(trace.iter().any(|r| r["traceType"] == "Pub"), "{shown:#}");
    assert_eq!(shown["traceError"], Value::Null);
    let (status, _, page) = http.send("GET", &format!("/messages/{offset_msg_id}"), None);
    assert_eq!(status, 200);
    assert!(
        page.contains("<h2>Trace</h2>") && page.contains("trace-pg"),
        "{page}"
    );

    clients.block_on(producer.shutdown());
    clients.close();
}

#[test]
fn trace_records_that_do_not_decode_are_shown_as_such() {
    let (_dir, broker) = traced_broker();
    let namesrv = broker.namesrv.addr.clone();
    let id = "7F00000100002A9F0000000000ABCDEF";
    let pub_record = format!(
        "Pub\u{1}1700000000000\u{1}DefaultRegion\u{1}pg\u{1}T\u{1}{id}\u{1}tag\u{1}k\u{1}\
         127.0.0.1:10911\u{1}5\u{1}3\u{1}0\u{1}0A\u{1}true\u{2}"
    );
    let bad_time = format!("Pub\u{1}yesterday\u{1}r\u{1}pg\u{1}T\u{1}{id}\u{2}");
    let unknown = format!("Weird\u{1}{id}\u{2}");
    // A consume as Java's ConsumeMessageTraceHookImpl writes it (an older client's SubAfter,
    // without its time), and a transaction's end.
    let sub_before = format!(
        "SubBefore\u{1}1700000000100\u{1}DefaultRegion\u{1}cg\u{1}req-1\u{1}{id}\u{1}0\u{1}k\u{2}"
    );
    let sub_after = format!("SubAfter\u{1}req-1\u{1}{id}\u{1}7\u{1}true\u{1}k\u{2}");
    let end = format!(
        "EndTransaction\u{1}1700000000200\u{1}DefaultRegion\u{1}pg\u{1}T\u{1}{id}\u{1}tag\u{1}k\u{1}\
         127.0.0.1:10911\u{1}1\u{1}tx-1\u{1}COMMIT_MESSAGE\u{1}false\u{2}"
    );
    let mut conn = broker.connection();
    let mut send = |body: Vec<u8>| {
        let mut properties = Properties::default();
        properties.set("KEYS", &format!("{id} k"));
        let msg = OutgoingMessage {
            topic: TRACE_TOPIC.into(),
            queue_id: 0,
            body,
            properties,
            flag: 0,
        };
        conn.send_message("trace-writer", &msg).expect("stored");
    };
    send(format!("{pub_record}{bad_time}{unknown}").into_bytes());
    send(vec![0xff, 0xfe, 0x01, 0x02]);
    send(format!("{sub_before}{sub_after}{end}").into_bytes());
    let rows = trace_rows(&namesrv, id, |rows| rows.len() >= 7);
    let kinds: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["traceType"].as_str())
        .filter(|t| *t != "Invalid")
        .collect();
    assert_eq!(
        kinds,
        ["Pub", "SubBefore", "SubAfter", "EndTransaction"],
        "oldest first"
    );
    let publish = row(&rows, "Pub");
    assert_eq!(
        (&publish["status"], &publish["costMs"]),
        (&"success".into(), &3.into())
    );
    assert_eq!(
        publish["clientHost"], "127.0.0.1",
        "the trace message's born host"
    );
    let after = row(&rows, "SubAfter");
    assert_eq!(after["group"], "cg", "joined to its SubBefore");
    assert_eq!(after["timestamp"], 1700000000100i64, "its SubBefore's time");
    assert_eq!(
        (&after["status"], &after["costMs"]),
        (&"success".into(), &7.into())
    );
    assert_eq!(row(&rows, "EndTransaction")["status"], "COMMIT_MESSAGE");
    let invalid: Vec<&Value> = rows
        .iter()
        .filter(|r| r["traceType"] == "Invalid")
        .collect();
    let reasons: Vec<&str> = invalid
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(invalid.len(), 3, "{rows:#?}");
    assert!(
        reasons.iter().any(|r| r.contains("timestamp")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unknown trace type")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("UTF-8")), "{reasons:?}");
    assert!(invalid.iter().all(|r| r["invalidText"].is_string()));

    let text = run(Some(&namesrv), &["queryMsgTraceById", "-i", id]);
    assert!(text.ok, "{}", text.err);
    assert!(
        text.out.contains("invalid trace record in trace message"),
        "{}",
        text.out
    );

    // No trace at all: said so, non-zero exit.
    let none = run(Some(&namesrv), &["queryMsgTraceById", "-i", "NO-SUCH-ID"]);
    assert_eq!(none.code, Some(1), "{}", none.out);
    assert!(
        none.err.contains("no trace of message NO-SUCH-ID"),
        "{}",
        none.err
    );
}
