//! Per-topic and per-group statistics counted on the shards (VIEW_BROKER_STATS_DATA with Java's
//! stats names, GET_CONSUME_STATS's consumeTps, GET_BROKER_CONSUME_STATS): they count the sends
//! and pulls that really happened, on every shard.

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::protocol::fastjson;
use ringmq::remoting::{request, response, RemotingCommand};
use serde_json::Value;

use crate::harness::TestBroker;

const TOPIC: &str = "StatsTopic";
const GROUP: &str = "stats-cg";

fn stats(conn: &mut Connection, name: &str, key: &str) -> RemotingCommand {
    let cmd = RemotingCommand::request(request::VIEW_BROKER_STATS_DATA)
        .with_ext("statsName", name)
        .with_ext("statsKey", key);
    conn.invoke(cmd).expect("answered")
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(&fastjson::normalize(body))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[test]
fn stats_count_the_sends_and_pulls_that_happened_on_every_shard() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    let mut body_bytes = 0;
    for i in 0..40 {
        let msg = OutgoingMessage {
            topic: TOPIC.into(),
            queue_id: i % 4,
            body: format!("stats-{i}").into_bytes(),
            properties: Properties::default(),
            flag: 0,
        };
        body_bytes += msg.body.len();
        assert_eq!(
            conn.send_message("stats-pg", &msg).unwrap().code,
            response::SUCCESS
        );
    }
    let mut pulled = 0;
    for q in 0..4 {
        // Two pulls per queue: 6 then 4 messages.
        let first = conn.pull(GROUP, TOPIC, q, 0, 6, "*", 0).unwrap();
        let rest = conn.pull(GROUP, TOPIC, q, 6, 32, "*", 0).unwrap();
        pulled += first.messages.len() + rest.messages.len();
        let commit = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", GROUP)
            .with_ext("topic", TOPIC)
            .with_ext("queueId", q.to_string())
            .with_ext("commitOffset", "8");
        conn.call(commit).unwrap();
    }
    assert_eq!(pulled, 40);

    let put = stats(&mut conn, "TOPIC_PUT_NUMS", TOPIC);
    assert_eq!(put.code, response::SUCCESS, "{:?}", put.remark);
    let put = json(&put.body);
    assert_eq!(put["statsMinute"]["sum"], 40, "{put}");
    assert_eq!(
        put["statsMinute"]["avgpt"], 1.0,
        "one message per send: {put}"
    );
    assert!(put["statsMinute"]["tps"].as_f64().unwrap() > 0.0, "{put}");
    assert_eq!(put["statsDay"]["sum"], 40);
    let size = json(&stats(&mut conn, "TOPIC_PUT_SIZE", TOPIC).body);
    assert!(
        size["statsMinute"]["sum"].as_u64().unwrap() > body_bytes as u64,
        "{size}"
    );
    let get = json(&stats(&mut conn, "GROUP_GET_NUMS", &format!("{TOPIC}@{GROUP}")).body);
    assert_eq!(get["statsMinute"]["sum"], 40, "{get}");
    assert_eq!(
        get["statsMinute"]["avgpt"], 5.0,
        "8 pulls found messages: {get}"
    );
    let broker_put = json(&stats(&mut conn, "BROKER_PUT_NUMS", "DefaultCluster").body);
    assert!(
        broker_put["statsMinute"]["sum"].as_u64().unwrap() >= 40,
        "{broker_put}"
    );

    // Nothing counted under this key, or no such name: Java's answer.
    let none = stats(&mut conn, "TOPIC_PUT_NUMS", "NoSuchTopic");
    assert_eq!(none.code, response::SYSTEM_ERROR);
    assert_eq!(
        none.remark.as_deref(),
        Some("The stats <TOPIC_PUT_NUMS> <NoSuchTopic> not exist")
    );
    assert_eq!(
        stats(&mut conn, "NO_SUCH_STATS", TOPIC).code,
        response::SYSTEM_ERROR
    );

    // consumeTps: the group's measured get rate.
    let cmd = RemotingCommand::request(request::GET_CONSUME_STATS).with_ext("consumerGroup", GROUP);
    let consume = conn.call(cmd).unwrap();
    let text = String::from_utf8_lossy(&consume.body).into_owned();
    let tps: f64 = text
        .strip_prefix(r#"{"consumeTps":"#)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(tps > 0.0, "{text}");

    // Over the subscription groups (as Java's): the group made by an admin.
    let group = RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(format!(r#"{{"groupName":"{GROUP}"}}"#).into_bytes());
    conn.call(group).unwrap();
    let cmd =
        RemotingCommand::request(request::GET_BROKER_CONSUME_STATS).with_ext("isOrder", "false");
    let all = conn.call(cmd).unwrap();
    let text = String::from_utf8_lossy(&all.body).into_owned();
    assert!(
        text.contains(&format!(r#"{{"{GROUP}":[{{"consumeTps":"#)),
        "{text}"
    );
    assert!(
        text.ends_with(r#""totalDiff":8}"#),
        "40 stored, 32 committed: {text}"
    );
}
