//! The broker through our own client: send, pull, long polling, tags, offsets, heartbeats,
//! bad input, several shards, restart.

use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::message::properties::{Properties, KEYS, TAGS};
use ringmq::protocol::heartbeat::{
    parse_tag_expression, ConsumeType, ConsumerData, HeartbeatData, MessageModel,
};
use ringmq::remoting::{request, response, RemotingCommand};

use crate::harness::TestBroker;

fn message(topic: &str, queue_id: i32, body: &str, tag: &str, keys: &str) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set(TAGS, tag);
    properties.set(KEYS, keys);
    properties.set("userProp", "v1");
    OutgoingMessage {
        topic: topic.into(),
        queue_id,
        body: body.as_bytes().to_vec(),
        properties,
        flag: 7,
    }
}

#[test]
fn sent_messages_pull_back_with_body_tags_keys_and_properties() {
    let broker = TestBroker::start(1);
    let mut conn = broker.connection();
    for i in 0..10 {
        let sent = conn
            .send_message(
                "pg",
                &message(
                    "RoundTrip",
                    1,
                    &format!("body-{i}"),
                    "TagA",
                    &format!("k{i}"),
                ),
            )
            .unwrap();
        assert_eq!(sent.code, response::SUCCESS);
        assert_eq!((sent.queue_id, sent.queue_offset), (1, i));
        assert_eq!(sent.msg_id.len(), 32);
    }
    let pulled = conn.pull("cg", "RoundTrip", 1, 0, 32, "*", 0).unwrap();
    assert_eq!(pulled.code, response::SUCCESS);
    assert_eq!(pulled.next_begin_offset, 10);
    assert_eq!(pulled.messages.len(), 10);
    for (i, m) in pulled.messages.iter().enumerate() {
        assert_eq!(m.body, format!("body-{i}").as_bytes());
        assert_eq!(m.queue_offset, i as i64);
        assert_eq!(m.properties.get(TAGS), Some("TagA"));
        assert_eq!(m.properties.get(KEYS), Some(format!("k{i}").as_str()));
        assert_eq!(m.properties.get("userProp"), Some("v1"));
        assert_eq!(m.properties.get("CLUSTER"), Some("DefaultCluster"));
        assert_eq!(m.properties.get("WAIT"), None);
    }
    let empty = conn.pull("cg", "RoundTrip", 1, 10, 32, "*", 0).unwrap();
    assert_eq!(empty.code, response::PULL_NOT_FOUND);
    // Past the end: OFFSET_MOVED, and (as Java, since the queue starts at 0) back to its start.
    let moved = conn.pull("cg", "RoundTrip", 1, 50, 32, "*", 0).unwrap();
    assert_eq!(
        (moved.code, moved.next_begin_offset),
        (response::PULL_OFFSET_MOVED, 0)
    );
}

#[test]
fn an_auto_created_topic_is_routed_by_the_nameserver() {
    let broker = TestBroker::start(1);
    broker
        .connection()
        .send_message("pg", &message("AutoTopic", 0, "x", "t", "k"))
        .unwrap();
    let mut ns = broker.namesrv.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let route = loop {
        match ns.route("AutoTopic") {
            Ok(route) => break route,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("no route: {e}"),
        }
    };
    assert_eq!(route.queue_datas[0].write_queue_nums, 4);
    assert_eq!(route.broker_datas[0].broker_addrs[&0], broker.addr);
}

#[test]
fn a_parked_pull_is_woken_by_the_send() {
    let broker = TestBroker::start(1);
    broker
        .connection()
        .send_message("pg", &message("Parked", 0, "first", "t", "k"))
        .unwrap();
    let mut puller = broker.connection();
    puller.timeout = Duration::from_secs(30);
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let result = puller.pull("cg", "Parked", 0, 1, 32, "*", 20_000).unwrap();
        (result, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    broker
        .connection()
        .send_message("pg", &message("Parked", 0, "second", "t", "k"))
        .unwrap();
    let (result, waited) = waiter.join().unwrap();
    assert_eq!(result.code, response::SUCCESS);
    assert_eq!(result.messages[0].body, b"second");
    // Woken by the append, not by the 20 s deadline.
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}

#[test]
fn tag_filtering_returns_only_matching_tags() {
    let broker = TestBroker::start(1);
    let mut conn = broker.connection();
    for (i, tag) in ["A", "B", "C", "A", "B"].iter().enumerate() {
        conn.send_message("pg", &message("Tags", 0, &i.to_string(), tag, "k"))
            .unwrap();
    }
    let pulled = conn.pull("cg", "Tags", 0, 0, 32, "A || C", 0).unwrap();
    let bodies: Vec<String> = pulled
        .messages
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect();
    assert_eq!(bodies, ["0", "2", "3"]);
    assert_eq!(pulled.next_begin_offset, 5);
}

#[test]
fn consumer_offsets_commit_query_and_queue_bounds() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    for _ in 0..3 {
        conn.send_message("pg", &message("Offsets", 2, "x", "t", "k"))
            .unwrap();
    }
    let q = [
        ("consumerGroup", "cg"),
        ("topic", "Offsets"),
        ("queueId", "2"),
    ];
    assert_eq!(
        conn.offset_call(request::QUERY_CONSUMER_OFFSET, &q)
            .unwrap(),
        0
    );
    let update = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "cg")
        .with_ext("topic", "Offsets")
        .with_ext("queueId", "2")
        .with_ext("commitOffset", "2");
    conn.call(update).unwrap();
    assert_eq!(
        conn.offset_call(request::QUERY_CONSUMER_OFFSET, &q)
            .unwrap(),
        2
    );
    let bounds = [("topic", "Offsets"), ("queueId", "2")];
    assert_eq!(
        conn.offset_call(request::GET_MAX_OFFSET, &bounds).unwrap(),
        3
    );
    assert_eq!(
        conn.offset_call(request::GET_MIN_OFFSET, &bounds).unwrap(),
        0
    );
}

pub(crate) fn heartbeat(client_id: &str, group: &str, topic: &str) -> HeartbeatData {
    HeartbeatData {
        client_id: client_id.into(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            consume_type: ConsumeType::Passively,
            group_name: group.into(),
            message_model: MessageModel::Clustering,
            subscription_data_set: vec![parse_tag_expression(topic, "*", 1)],
            unit_mode: false,
        }],
        producer_data_set: vec![],
    }
}

#[test]
fn heartbeats_build_the_group_and_a_new_member_notifies_the_others() {
    let broker = TestBroker::start(2);
    let mut first = broker.connection();
    first
        .heartbeat(&heartbeat("c1", "group-h", "HbTopic"))
        .unwrap();
    let mut second = broker.connection();
    second
        .heartbeat(&heartbeat("c2", "group-h", "HbTopic"))
        .unwrap();
    let list = first
        .call(
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", "group-h"),
        )
        .unwrap();
    assert_eq!(&list.body[..], br#"{"consumerIdList":["c1","c2"]}"#);
    // The first member is told to rebalance.
    let notify = match first.unsolicited.pop() {
        Some(frame) => frame,
        None => first.read_command().expect("NOTIFY_CONSUMER_IDS_CHANGED"),
    };
    assert_eq!(notify.code, request::NOTIFY_CONSUMER_IDS_CHANGED);
    assert_eq!(notify.ext("consumerGroup"), Some("group-h"));
    // A pull without its own subscription uses the heartbeat's (on every shard).
    first
        .send_message("pg", &message("HbTopic", 3, "x", "t", "k"))
        .unwrap();
    let pull = RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", "group-h")
        .with_ext("topic", "HbTopic")
        .with_ext("queueId", "3")
        .with_ext("queueOffset", "0")
        .with_ext("maxMsgNums", "32")
        .with_ext("sysFlag", "0")
        .with_ext("commitOffset", "0")
        .with_ext("suspendTimeoutMillis", "0")
        .with_ext("subVersion", "1");
    assert_eq!(first.invoke(pull).unwrap().code, response::SUCCESS);
    drop(second);
    let list = loop {
        let list = first
            .invoke(
                RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                    .with_ext("consumerGroup", "group-h"),
            )
            .unwrap();
        if &list.body[..] == br#"{"consumerIdList":["c1"]}"# {
            break list;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(list.code, response::SUCCESS);
}

#[test]
fn bad_requests_get_clear_answers() {
    let broker = TestBroker::start(1);
    let mut conn = broker.connection();
    let mut big = message("Big", 0, "", "t", "k");
    big.body = vec![b'x'; 4 * 1024 * 1024 + 1];
    let err = conn.send_message("pg", &big).unwrap_err();
    assert_eq!(err.code(), Some(response::MESSAGE_ILLEGAL));
    assert!(err.to_string().contains("4194304"), "{err}");
    let err = conn
        .send_message("pg", &message("bad topic", 0, "x", "t", "k"))
        .unwrap_err();
    assert_eq!(err.code(), Some(response::SYSTEM_ERROR));
    let err = conn
        .send_message("pg", &message("Queues", 99, "x", "t", "k"))
        .unwrap_err();
    assert!(err.to_string().contains("queueId[99] is illegal"), "{err}");
    let answer = conn.invoke(RemotingCommand::request(9999)).unwrap();
    assert_eq!(answer.code, response::REQUEST_CODE_NOT_SUPPORTED);
    let missing = conn
        .invoke(RemotingCommand::request(request::PULL_MESSAGE).with_ext("topic", "T"))
        .unwrap();
    assert_eq!(missing.code, response::SYSTEM_ERROR);
    assert!(missing.remark.unwrap().contains("consumerGroup"));
}

/// A send over maxMessageSize is answered from its header, before its body is even sent, and
/// the body is dropped as it arrives: the connection goes on serving (Java reads the whole
/// frame first; the answer is the same).
#[test]
fn an_oversize_send_is_refused_before_its_body_is_read_and_the_connection_goes_on() {
    use std::io::{Read, Write};
    let broker = TestBroker::start(1);
    let body_bytes = loadgen::churn::OVERSIZE_BODY_BYTES;
    let send = loadgen::churn::oversize_send("Big", body_bytes);
    let frame = send.to_frame().unwrap();
    let head = frame.len() - body_bytes;
    let mut next = RemotingCommand::request(9999);
    next.opaque = 77;
    let read_answer = |conn: &mut std::net::TcpStream| {
        let mut prefix = [0u8; 4];
        conn.read_exact(&mut prefix).unwrap();
        let mut whole = prefix.to_vec();
        whole.resize(4 + u32::from_be_bytes(prefix) as usize, 0);
        conn.read_exact(&mut whole[4..]).unwrap();
        RemotingCommand::decode(whole.into()).unwrap()
    };
    let mut conn = std::net::TcpStream::connect(&broker.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(&frame[..head]).unwrap();
    let refused = read_answer(&mut conn);
    assert_eq!(refused.code, response::MESSAGE_ILLEGAL);
    assert_eq!(refused.opaque, send.opaque);
    let remark = refused.remark.unwrap_or_default();
    assert!(
        remark.contains("5242880") && remark.contains("4194304"),
        "{remark}"
    );
    // The body, then another request on the same connection.
    conn.write_all(&frame[head..]).unwrap();
    conn.write_all(&next.to_frame().unwrap()).unwrap();
    let answered = read_answer(&mut conn);
    assert_eq!(answered.opaque, 77);
    assert_eq!(answered.code, response::REQUEST_CODE_NOT_SUPPORTED);
}

#[test]
fn several_shards_serve_every_queue() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    for q in 0..4 {
        for i in 0..5 {
            let sent = conn
                .send_message("pg", &message("Sharded", q, &format!("{q}-{i}"), "t", "k"))
                .unwrap();
            assert_eq!(sent.queue_offset, i);
        }
    }
    for q in 0..4 {
        let pulled = conn.pull("cg", "Sharded", q, 0, 32, "*", 0).unwrap();
        let bodies: Vec<String> = pulled
            .messages
            .iter()
            .map(|m| String::from_utf8(m.body.clone()).unwrap())
            .collect();
        assert_eq!(
            bodies,
            (0..5).map(|i| format!("{q}-{i}")).collect::<Vec<_>>()
        );
    }
}

#[test]
fn pipelined_sends_to_queues_of_both_shards_keep_each_queues_order() {
    // One connection lands on one shard; the records for the other shard's queues are handed
    // over in batches (several per mesh message when pipelined). Each queue must still get its
    // messages in send order, with consecutive offsets, and every send its own answer.
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    conn.send_message("pg", &message("Piped", 0, "first", "t", "k"))
        .unwrap();
    let mut frames = bytes::BytesMut::new();
    for i in 0..200i32 {
        let body = i.to_string().into_bytes();
        let cmd = crate::harness::send_request("Piped", i % 4, body, 1000 + i);
        cmd.encode(&mut frames).unwrap();
    }
    conn.write_all(&frames).unwrap();
    let mut offsets = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let answer = conn.read_command().unwrap();
        assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
        let offset: i64 = answer.ext("queueOffset").unwrap().parse().unwrap();
        offsets.insert(answer.opaque - 1000, offset);
    }
    assert_eq!(offsets.len(), 200, "every send answered once");
    for q in 0..4 {
        let first = i64::from(q == 0);
        let got: Vec<i64> = (0..200)
            .filter(|i| i % 4 == q)
            .map(|i| offsets[&i])
            .collect();
        assert_eq!(got, (first..first + 50).collect::<Vec<_>>(), "queue {q}");
        let (mut bodies, mut next) = (Vec::new(), first);
        while bodies.len() < 50 {
            let pulled = conn.pull("cg", "Piped", q, next, 32, "*", 0).unwrap();
            assert!(!pulled.messages.is_empty(), "queue {q} ends at {next}");
            bodies.extend(
                pulled
                    .messages
                    .iter()
                    .map(|m| String::from_utf8(m.body.clone()).unwrap()),
            );
            next = pulled.next_begin_offset;
        }
        let sent: Vec<String> = (0..200)
            .filter(|i| i % 4 == q)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(bodies, sent, "queue {q} in send order");
    }
}

#[test]
fn a_graceful_restart_keeps_messages_and_offsets() {
    let broker = TestBroker::start(2);
    let store = broker.store.clone();
    let mut conn = broker.connection();
    for i in 0..20 {
        conn.send_message("pg", &message("Restart", i % 4, &i.to_string(), "t", "k"))
            .unwrap();
    }
    let update = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "cg")
        .with_ext("topic", "Restart")
        .with_ext("queueId", "1")
        .with_ext("commitOffset", "3");
    conn.call(update).unwrap();
    drop(conn);
    let (namesrv, dir) = broker.stop();
    let broker = TestBroker::start_in(namesrv, &store, 2, |_| {});
    let mut conn = broker.connection();
    let q = [
        ("consumerGroup", "cg"),
        ("topic", "Restart"),
        ("queueId", "1"),
    ];
    assert_eq!(
        conn.offset_call(request::QUERY_CONSUMER_OFFSET, &q)
            .unwrap(),
        3
    );
    let total: usize = (0..4)
        .map(|q| {
            conn.pull("cg", "Restart", q, 0, 32, "*", 0)
                .unwrap()
                .messages
                .len()
        })
        .sum();
    assert_eq!(total, 20);
    drop(broker);
    drop(dir);
}

#[test]
fn messages_are_found_by_key_unique_key_and_offset_msg_id() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    let mut ids = Vec::new();
    for q in 0..4 {
        let mut msg = message(
            "Lookup",
            q,
            &format!("body-{q}"),
            "t",
            &format!("order-{q} shared"),
        );
        msg.properties.set("UNIQ_KEY", &format!("UNIQ{q:04}"));
        ids.push(conn.send_message("pg", &msg).unwrap().msg_id);
    }
    let query = |conn: &mut ringmq::client::Connection, key: &str, unique: bool| {
        let cmd = RemotingCommand::request(request::QUERY_MESSAGE)
            .with_ext("topic", "Lookup")
            .with_ext("key", key)
            .with_ext("maxNum", "32")
            .with_ext("beginTimestamp", "0")
            .with_ext("endTimestamp", i64::MAX.to_string())
            .with_ext("_UNIQUE_KEY_QUERY", unique.to_string());
        let reply = conn.invoke(cmd).unwrap();
        let found = ringmq::client::broker::decode_messages(&reply.body).unwrap();
        let mut bodies: Vec<String> = found
            .iter()
            .map(|m| String::from_utf8(m.body.clone()).unwrap())
            .collect();
        bodies.sort();
        (reply.code, bodies)
    };
    assert_eq!(
        query(&mut conn, "order-2", false),
        (response::SUCCESS, vec!["body-2".to_string()])
    );
    assert_eq!(
        query(&mut conn, "shared", false).1.len(),
        4,
        "found on every shard"
    );
    assert_eq!(query(&mut conn, "UNIQ0003", true).1, ["body-3"]);
    assert_eq!(
        query(&mut conn, "nothing", false).0,
        response::QUERY_NOT_FOUND
    );
    for (q, id) in ids.iter().enumerate() {
        let (_, offset) = ringmq::message::decode_offset_msg_id(id).unwrap();
        let view = conn
            .invoke(
                RemotingCommand::request(request::VIEW_MESSAGE_BY_ID)
                    .with_ext("offset", offset.to_string()),
            )
            .unwrap();
        assert_eq!(view.code, response::SUCCESS);
        let found = ringmq::client::broker::decode_messages(&view.body).unwrap();
        assert_eq!(found[0].body, format!("body-{q}").as_bytes());
    }
}

#[test]
fn orderly_consumers_lock_queues_exclusively() {
    let broker = TestBroker::start(1);
    let mut conn = broker.connection();
    let lock = |conn: &mut ringmq::client::Connection, code: i32, client: &str, queues: &[i32]| {
        let mq: Vec<String> = queues
            .iter()
            .map(|q| format!(r#"{{"brokerName":"broker-it","queueId":{q},"topic":"Ordered"}}"#))
            .collect();
        let body = format!(
            r#"{{"clientId":"{client}","consumerGroup":"og","mqSet":[{}]}}"#,
            mq.join(",")
        );
        let reply = conn
            .call(RemotingCommand::request(code).with_body(body.into_bytes()))
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        // Java's (and the C++ client's) key, checked on the raw JSON.
        let set = body
            .get("lockOKMQSet")
            .cloned()
            .unwrap_or_else(|| serde_json::json!([]));
        let ok: ringmq::protocol::heartbeat::LockBatchResponse =
            serde_json::from_value(serde_json::json!({ "lockOKMQSet": set })).unwrap();
        ok.lock_ok_mq_set
            .iter()
            .map(|m| m.queue_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lock(&mut conn, request::LOCK_BATCH_MQ, "c1", &[0, 1]),
        [0, 1]
    );
    assert_eq!(lock(&mut conn, request::LOCK_BATCH_MQ, "c2", &[1, 2]), [2]);
    lock(&mut conn, request::UNLOCK_BATCH_MQ, "c1", &[1]);
    assert_eq!(lock(&mut conn, request::LOCK_BATCH_MQ, "c2", &[1]), [1]);
}

#[test]
fn too_many_requests_in_flight_on_one_connection_are_answered_system_busy() {
    use bytes::BytesMut;
    use ringmq::limits::CONNECTION_INFLIGHT_MAX;
    let broker = TestBroker::start(1);
    let mut conn = broker.connection();
    conn.send_message("pg", &message("Busy", 0, "x", "t", "k"))
        .unwrap();
    // Long polls park on the broker and stay in flight; one more than the limit is refused.
    let extra = 8;
    let mut frames = BytesMut::new();
    for opaque in 0..(CONNECTION_INFLIGHT_MAX + extra) as i32 {
        let mut pull = RemotingCommand::request(request::PULL_MESSAGE)
            .with_ext("consumerGroup", "cg")
            .with_ext("topic", "Busy")
            .with_ext("queueId", "0")
            .with_ext("queueOffset", "1")
            .with_ext("maxMsgNums", "1")
            .with_ext("sysFlag", "6")
            .with_ext("commitOffset", "0")
            .with_ext("suspendTimeoutMillis", "20000")
            .with_ext("subscription", "*")
            .with_ext("subVersion", "1");
        pull.opaque = opaque;
        pull.encode(&mut frames).unwrap();
    }
    conn.write_all(&frames).unwrap();
    let mut busy = 0;
    while busy < extra {
        let answer = conn
            .read_command()
            .expect("SYSTEM_BUSY answers come at once");
        assert_eq!(answer.code, response::SYSTEM_BUSY, "{:?}", answer.remark);
        assert!(answer.remark.unwrap_or_default().starts_with("[OVERLOAD]"));
        busy += 1;
    }
}

#[test]
fn ten_thousand_messages_are_consumed_with_every_key_exactly_once() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    const N: usize = 10_000;
    for i in 0..N {
        let msg = message(
            "TenThousand",
            (i % 4) as i32,
            &i.to_string(),
            "t",
            &format!("key-{i}"),
        );
        assert_eq!(
            conn.send_message("pg", &msg).unwrap().code,
            response::SUCCESS
        );
    }
    let mut seen = vec![0u8; N];
    for queue in 0..4 {
        let mut offset = 0;
        loop {
            let pulled = conn
                .pull("cg", "TenThousand", queue, offset, 32, "*", 0)
                .unwrap();
            if pulled.messages.is_empty() {
                break;
            }
            for m in &pulled.messages {
                let key = m.properties.get(KEYS).unwrap();
                let i: usize = key.trim_start_matches("key-").parse().unwrap();
                assert_eq!(m.body, i.to_string().as_bytes());
                seen[i] += 1;
            }
            offset = pulled.next_begin_offset;
        }
    }
    let wrong: Vec<usize> = (0..N).filter(|i| seen[*i] != 1).collect();
    assert!(
        wrong.is_empty(),
        "{} keys not seen exactly once, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
