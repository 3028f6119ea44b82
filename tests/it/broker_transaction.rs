//! Transactional messages: half messages stay invisible until committed, rolled-back ones never
//! appear, and an open one is checked back with its producer.

use std::time::Duration;

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::decode_offset_msg_id;
use ringmq::message::properties::Properties;
use ringmq::protocol::heartbeat::{HeartbeatData, ProducerData};
use ringmq::remoting::{request, response, RemotingCommand};

use crate::harness::{wait_for_message, TestBroker, TestNamesrv};

fn half(topic: &str, body: &str) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set("TRAN_MSG", "true");
    properties.set("PGROUP", "tx-pg");
    properties.set("UNIQ_KEY", &format!("UNIQ-{body}"));
    OutgoingMessage {
        topic: topic.into(),
        queue_id: 0,
        body: body.as_bytes().to_vec(),
        properties,
        flag: 0,
    }
}

fn end(conn: &mut Connection, queue_offset: i64, msg_id: &str, decision: i32, from_check: bool) {
    let (_, physical) = decode_offset_msg_id(msg_id).expect("offsetMsgId");
    let cmd = RemotingCommand::request(request::END_TRANSACTION)
        .with_ext("producerGroup", "tx-pg")
        .with_ext("tranStateTableOffset", queue_offset.to_string())
        .with_ext("commitLogOffset", physical.to_string())
        .with_ext("commitOrRollback", decision.to_string())
        .with_ext("fromTransactionCheck", from_check.to_string());
    conn.invoke_oneway(cmd).unwrap();
}

#[test]
fn a_committed_half_message_is_delivered_and_a_rolled_back_one_never() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    conn.send_message(
        "pg",
        &OutgoingMessage {
            topic: "TxTopic".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let a = conn
        .send_message("tx-pg", &half("TxTopic", "rolled-back"))
        .unwrap();
    let b = conn
        .send_message("tx-pg", &half("TxTopic", "committed"))
        .unwrap();
    assert_eq!(a.code, response::SUCCESS);
    assert!(
        wait_for_message(&mut conn, "TxTopic", 1, Duration::from_millis(300)).is_none(),
        "half visible"
    );
    end(&mut conn, a.queue_offset, &a.msg_id, 12, false);
    end(&mut conn, b.queue_offset, &b.msg_id, 8, false);
    let delivered =
        wait_for_message(&mut conn, "TxTopic", 1, Duration::from_secs(10)).expect("committed");
    assert_eq!(delivered.body, b"committed");
    assert_eq!(delivered.properties.get("TRAN_MSG"), None);
    assert_eq!(delivered.properties.get("PGROUP"), Some("tx-pg"));
    assert!(
        wait_for_message(&mut conn, "TxTopic", 2, Duration::from_millis(500)).is_none(),
        "rollback delivered"
    );
}

#[test]
fn an_open_transaction_is_checked_back_with_its_producer() {
    let namesrv = TestNamesrv::start();
    let dir = tempfile::Builder::new()
        .prefix("ringmq-tx-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(namesrv, dir.path(), 2, |cfg| {
        cfg.transaction_check_interval_ms = 200;
        cfg.transaction_timeout_ms = 300;
    });
    let mut producer = broker.connection();
    let beat = HeartbeatData {
        client_id: "tx-producer".into(),
        consumer_data_set: vec![],
        producer_data_set: vec![ProducerData {
            group_name: "tx-pg".into(),
        }],
    };
    producer.heartbeat(&beat).unwrap();
    let sent = producer
        .send_message("tx-pg", &half("TxChecked", "unknown-at-first"))
        .unwrap();
    end(&mut producer, sent.queue_offset, &sent.msg_id, 0, false);
    producer.timeout = Duration::from_secs(10);
    let check = match producer.unsolicited.pop() {
        Some(frame) => frame,
        None => producer.read_command().expect("CHECK_TRANSACTION_STATE"),
    };
    assert_eq!(check.code, request::CHECK_TRANSACTION_STATE);
    assert_eq!(check.ext("transactionId"), Some("UNIQ-unknown-at-first"));
    assert_eq!(check.ext("offsetMsgId"), Some(sent.msg_id.as_str()));
    let body = ringmq::client::broker::decode_messages(&check.body).unwrap();
    assert_eq!(body[0].topic, "TxChecked");
    assert_eq!(body[0].body, b"unknown-at-first");
    end(&mut producer, sent.queue_offset, &sent.msg_id, 8, true);
    let mut reader = broker.connection();
    let delivered = wait_for_message(&mut reader, "TxChecked", 0, Duration::from_secs(10))
        .expect("committed after check");
    assert_eq!(delivered.body, b"unknown-at-first");
    drop(broker);
}
