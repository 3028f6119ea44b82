//! The official Apache RocketMQ Go client (rocketmq-client-go v2.1.2), stood in for by its golden
//! frames (tests/golden/go): its push consumer subscribes to a tag and writes the subscription's
//! `codeSet` as JSON strings (`["2598919"]`), and its pulls carry no subscription (sysFlag 2,
//! `subscription` ""), so the broker filters by the subscription the heartbeat registered. The
//! heartbeat must be accepted as Java accepts it, and the pulls must return exactly the tagged
//! messages.

use ringmq::client::broker::{decode_messages, OutgoingMessage};
use ringmq::message::properties::{Properties, TAGS};
use ringmq::remoting::{request, response, RemotingCommand};

use crate::golden::frame as golden;
use crate::harness::TestBroker;

/// The group and topic of the captured push consumer (go/0022).
const GROUP: &str = "GID_GoAccG5C_f1fug5k4";
const TOPIC: &str = "GoAccG5_f1fug5k4";
const CLIENT_ID: &str = "192.0.2.2@c1-f1fug5k4";
/// Tags sent to every queue; the consumer subscribes to TagA ("" is a message with no tag).
const TAGS_SENT: [&str; 6] = ["TagA", "TagB", "", "TagA", "TagC", "TagA"];

/// Writes a golden request byte for byte and reads its answer.
fn replay(conn: &mut ringmq::client::Connection, file: &str) -> RemotingCommand {
    conn.write_all(&golden(file)).unwrap();
    loop {
        let answer = conn.read_command().unwrap();
        if answer.is_response() {
            return answer;
        }
    }
}

/// The Go client's own pull (go/0016: sysFlag 2, empty subscription, subVersion 0), aimed at
/// the captured consumer's group and topic.
fn go_pull(queue: i32) -> RemotingCommand {
    let mut pull = RemotingCommand::decode(golden("go/0016-c2s-11-pull.bin")).unwrap();
    assert_eq!(pull.ext("subscription"), Some(""));
    assert_eq!(pull.ext("sysFlag"), Some("2"));
    pull.set_ext("consumerGroup", GROUP);
    pull.set_ext("topic", TOPIC);
    pull.set_ext("queueId", queue.to_string());
    pull
}

#[test]
fn go_push_consumer_with_a_tag_subscription_gets_exactly_the_tagged_messages() {
    let broker = TestBroker::start(2);
    let mut producer = broker.connection();
    for queue in 0..4 {
        for (i, tag) in TAGS_SENT.iter().enumerate() {
            let mut properties = Properties::default();
            if !tag.is_empty() {
                properties.set(TAGS, tag);
            }
            let message = OutgoingMessage {
                topic: TOPIC.into(),
                queue_id: queue,
                body: format!("{queue}-{i}-{tag}").into_bytes(),
                properties,
                flag: 0,
            };
            producer.send_message("go_pg", &message).unwrap();
        }
    }
    // The Go client's heartbeats, byte for byte: producer only, the tagged push consumer, and a
    // pull consumer (CONSUME_ACTIVELY); every one is accepted.
    let mut go = broker.connection();
    for file in [
        "go/0018-c2s-34-heartbeat.bin",
        "go/0022-c2s-34-heartbeat.bin",
        "go/0038-c2s-34-heartbeat.bin",
    ] {
        let answer = replay(&mut go, file);
        assert_eq!(
            answer.code,
            response::SUCCESS,
            "{file}: {:?}",
            answer.remark
        );
    }
    let list = go
        .call(
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", GROUP),
        )
        .unwrap();
    let ids: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(ids["consumerIdList"], serde_json::json!([CLIENT_ID]));
    // Its pulls, on every queue (both shards): exactly the TagA messages, in order.
    for queue in 0..4 {
        let answer = go.invoke(go_pull(queue)).unwrap();
        assert_eq!(
            answer.code,
            response::SUCCESS,
            "queue {queue}: {:?}",
            answer.remark
        );
        assert_eq!(answer.ext("nextBeginOffset"), Some("6"), "queue {queue}");
        let bodies: Vec<String> = decode_messages(&answer.body)
            .unwrap()
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        let expected: Vec<String> = TAGS_SENT
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == "TagA")
            .map(|(i, t)| format!("{queue}-{i}-{t}"))
            .collect();
        assert_eq!(bodies, expected, "queue {queue}");
    }
}
