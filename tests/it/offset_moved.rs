//! OFFSET_MOVED_EVENT: a pull whose offset the queue does not have is moved
//! (PULL_OFFSET_MOVED) and the master stores Java's `OffsetMovedEvent` in the
//! `OFFSET_MOVED_EVENT` topic, tagged and keyed with the group.

use ringmq::client::broker::OutgoingMessage;
use ringmq::message::properties::{Properties, TAGS};
use ringmq::remoting::response;
use serde_json::Value;

use crate::harness::TestBroker;

#[test]
fn a_moved_pull_offset_leaves_an_offset_moved_event() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    for i in 0..5 {
        let msg = OutgoingMessage {
            topic: "MovedTopic".into(),
            queue_id: 1,
            body: format!("m{i}").into_bytes(),
            properties: Properties::default(),
            flag: 0,
        };
        assert_eq!(
            conn.send_message("moved-pg", &msg).unwrap().code,
            response::SUCCESS
        );
    }
    let moved = conn
        .pull("moved-cg", "MovedTopic", 1, 100, 32, "*", 0)
        .unwrap();
    assert_eq!(moved.code, response::PULL_OFFSET_MOVED);
    let events = conn
        .pull("watcher", "OFFSET_MOVED_EVENT", 0, 0, 32, "*", 0)
        .unwrap();
    assert_eq!(events.code, response::SUCCESS);
    assert_eq!(events.messages.len(), 1);
    let event = &events.messages[0];
    assert_eq!(event.properties.get(TAGS), Some("moved-cg"));
    let body: Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(body["consumerGroup"], "moved-cg");
    assert_eq!(body["messageQueue"]["topic"], "MovedTopic");
    assert_eq!(body["messageQueue"]["queueId"], 1);
    assert_eq!(body["messageQueue"]["brokerName"], "broker-it");
    assert_eq!(body["offsetRequest"], 100);
    assert_eq!(body["offsetNew"], moved.next_begin_offset);
    // A pull that is not moved leaves none.
    let fine = conn
        .pull("moved-cg", "MovedTopic", 1, 0, 32, "*", 0)
        .unwrap();
    assert_eq!(fine.code, response::SUCCESS);
    let again = conn
        .pull("watcher", "OFFSET_MOVED_EVENT", 0, 1, 32, "*", 0)
        .unwrap();
    assert!(again.messages.is_empty());
}
