//! Delayed messages, retries and dead letters through our own client.

use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::remoting::{request, response, RemotingCommand};

use crate::harness::{wait_for_message, TestBroker};

fn delayed(topic: &str, body: &str, level: u32) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set("TAGS", "t");
    if level > 0 {
        properties.set("DELAY", &level.to_string());
    }
    OutgoingMessage {
        topic: topic.into(),
        queue_id: 0,
        body: body.as_bytes().to_vec(),
        properties,
        flag: 0,
    }
}

#[test]
fn a_level_one_delay_arrives_after_a_second_and_not_before() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    conn.send_message("pg", &delayed("Delayed", "warm-up", 0))
        .unwrap();
    let sent_at = Instant::now();
    conn.send_message("pg", &delayed("Delayed", "late", 1))
        .unwrap();
    let early = conn.pull("cg", "Delayed", 0, 1, 32, "*", 0).unwrap();
    assert_eq!(
        early.code,
        response::PULL_NOT_FOUND,
        "delivered before its delay"
    );
    let arrived =
        wait_for_message(&mut conn, "Delayed", 1, Duration::from_secs(15)).expect("delivered");
    let waited = sent_at.elapsed();
    assert_eq!(arrived.body, b"late");
    assert!(
        waited >= Duration::from_millis(900),
        "arrived after {waited:?}"
    );
    assert_eq!(arrived.properties.get("DELAY"), None);
    assert_eq!(arrived.properties.get("REAL_TOPIC"), Some("Delayed"));
}

fn send_back(
    conn: &mut Connection,
    offset: i64,
    group: &str,
    delay_level: i32,
    max: i32,
) -> RemotingCommand {
    let cmd = RemotingCommand::request(request::CONSUMER_SEND_MSG_BACK)
        .with_ext("offset", offset.to_string())
        .with_ext("group", group)
        .with_ext("delayLevel", delay_level.to_string())
        .with_ext("originTopic", "Failing")
        .with_ext("maxReconsumeTimes", max.to_string());
    conn.invoke(cmd).unwrap()
}

#[test]
fn a_failed_message_is_retried_and_then_dead_lettered() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    conn.send_message("pg", &delayed("Failing", "payload", 0))
        .unwrap();
    let original = conn
        .pull("cg", "Failing", 0, 0, 1, "*", 0)
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(
        send_back(&mut conn, original.physical_offset, "fg", 1, 16).code,
        response::SUCCESS
    );
    let retried =
        wait_for_message(&mut conn, "%RETRY%fg", 0, Duration::from_secs(15)).expect("retried");
    assert_eq!(retried.body, b"payload");
    assert_eq!(retried.properties.get("RETRY_TOPIC"), Some("Failing"));
    assert!(retried.properties.get("ORIGIN_MESSAGE_ID").is_some());
    // It has been reconsumed once; with a maximum of 1 the next failure is final.
    assert_eq!(
        send_back(&mut conn, retried.physical_offset, "fg", 0, 1).code,
        response::SUCCESS
    );
    let dead =
        wait_for_message(&mut conn, "%DLQ%fg", 0, Duration::from_secs(15)).expect("dead-lettered");
    assert_eq!(dead.body, b"payload");
    let bad = send_back(&mut conn, 1 << 40, "fg", 0, 16);
    assert_eq!(bad.code, response::SYSTEM_ERROR);
}

#[test]
fn delayed_delivery_resumes_after_a_restart() {
    let broker = TestBroker::start(1);
    let store = broker.store.clone();
    let mut conn = broker.connection();
    conn.send_message("pg", &delayed("AfterRestart", "x", 1))
        .unwrap();
    drop(conn);
    let (namesrv, dir) = broker.stop();
    let broker = TestBroker::start_in(namesrv, &store, 1, |_| {});
    let mut conn = broker.connection();
    let arrived =
        wait_for_message(&mut conn, "AfterRestart", 0, Duration::from_secs(15)).expect("delivered");
    assert_eq!(arrived.body, b"x");
    drop(broker);
    drop(dir);
}
