//! Request-reply (RocketMQ 4.6+): a responder's SEND_REPLY_MESSAGE (324) / _V2 (325) is pushed
//! to the requesting producer (PUSH_REPLY_MESSAGE_TO_CLIENT, 326) found by the REPLY_TO_CLIENT
//! property, on whichever shard holds its connection, and stored on `<cluster>_REPLY_TOPIC`;
//! a requester that is gone, refuses, or is not named is answered SYSTEM_ERROR with Java's
//! remark. With our client (every wire detail) and with rocketmq-client-rust's
//! `DefaultMQProducer::request`.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringmq::client::broker::{reply_to, OutgoingMessage, PulledMessage};
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::protocol::heartbeat::{HeartbeatData, ProducerData};
use ringmq::remoting::{request, response, RemotingCommand};
use rocketmq_client_rust::MessageUtil;

use crate::harness::{wait_for_message, TestBroker};
use crate::rust_client_support::{chain, collector, new_message, wait_registered, Clients};

const REPLY_TOPIC: &str = "DefaultCluster_REPLY_TOPIC";

/// A producer heartbeat: the broker now knows `client_id` on this connection.
fn beat(conn: &mut Connection, client_id: &str) {
    let data = HeartbeatData {
        client_id: client_id.into(),
        consumer_data_set: vec![],
        producer_data_set: vec![ProducerData {
            group_name: "rpc-requesters".into(),
        }],
    };
    conn.heartbeat(&data).expect("heartbeat");
}

/// A request message as `DefaultMQProducer.request` prepares it.
fn request_message(topic: &str, requester: &str, correlation: &str) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set("CORRELATION_ID", correlation);
    properties.set("REPLY_TO_CLIENT", requester);
    properties.set("TTL", "5000");
    OutgoingMessage {
        topic: topic.into(),
        queue_id: 0,
        body: format!("request {correlation}").into_bytes(),
        properties,
        flag: 0,
    }
}

/// Sends a request through `requester` and reads it back as the responder's consumer would.
fn requested(broker: &TestBroker, requester: &mut Connection, topic: &str) -> PulledMessage {
    requester
        .send_message("rpc-requesters", &request_message(topic, "unused", "c-0"))
        .expect("request sent");
    let mut reader = broker.connection();
    wait_for_message(&mut reader, topic, 0, Duration::from_secs(10)).expect("request stored")
}

fn remark(reply: &RemotingCommand) -> &str {
    reply.remark.as_deref().unwrap_or_default()
}

#[test]
fn replies_reach_the_requester_whichever_shard_reads_them() {
    const REPLIES: usize = 8;
    let broker = TestBroker::start(4);
    let mut requester = broker.connection();
    beat(&mut requester, "rpc-requester@1");
    let request = requested(&broker, &mut requester, "RpcTopic");
    assert_eq!(request.properties.get("CLUSTER"), Some("DefaultCluster"));
    requester.timeout = Duration::from_secs(10);
    std::thread::scope(|scope| {
        let pushes = scope.spawn(move || {
            (0..REPLIES)
                .map(|_| {
                    let push = requester.read_command().expect("a pushed reply");
                    requester
                        .answer(&push, response::SUCCESS)
                        .expect("answered");
                    push
                })
                .collect::<Vec<_>>()
        });
        // Connections land on the shards by the kernel's SO_REUSEPORT hash: over 8 of them,
        // replies are read on shards other than the requester's and the control shard's.
        let mut offsets = Vec::new();
        for i in 0..REPLIES {
            let mut reply = reply_to(&request, format!("reply {i}").into_bytes()).unwrap();
            assert_eq!(reply.topic, REPLY_TOPIC);
            reply.properties.set("REPLY_TO_CLIENT", "rpc-requester@1");
            reply.properties.set("CORRELATION_ID", &format!("c-{i}"));
            let code = [request::SEND_REPLY_MESSAGE, request::SEND_REPLY_MESSAGE_V2][i % 2];
            let mut responder = broker.connection();
            let answer = responder
                .send_raw(code, "rpc-responders", &reply)
                .expect("reply sent");
            assert_eq!(
                answer.code,
                response::SUCCESS,
                "reply {i}: {}",
                remark(&answer)
            );
            assert_ne!(answer.ext("msgId"), Some("0"), "stored");
            offsets.push(answer.ext("queueOffset").unwrap().parse::<i64>().unwrap());
        }
        assert_eq!(offsets, (0..REPLIES as i64).collect::<Vec<_>>());
        let pushes = pushes.join().unwrap();
        for (i, push) in pushes.iter().enumerate() {
            assert_eq!(push.code, request::PUSH_REPLY_MESSAGE_TO_CLIENT);
            assert_eq!(push.ext("topic"), Some(REPLY_TOPIC));
            assert_eq!(push.ext("producerGroup"), Some("rpc-responders"));
            let props = Properties::parse(push.ext("properties").unwrap_or_default());
            assert_eq!(props.get("CORRELATION_ID"), Some(format!("c-{i}").as_str()));
            assert_eq!(props.get("MSG_TYPE"), Some("reply"));
            assert!(props.get("PUSH_REPLY_TIME").is_some());
            assert_eq!(push.body.as_ref(), format!("reply {i}").as_bytes());
            for host in ["bornHost", "storeHost"] {
                let addr = push.ext(host).unwrap_or_default();
                addr.parse::<SocketAddr>()
                    .unwrap_or_else(|_| panic!("{host} {addr:?} is not ip:port"));
            }
            assert!(push.ext("storeTimestamp").unwrap().parse::<i64>().unwrap() > 0);
        }
    });
    let mut reader = broker.connection();
    let stored = reader
        .pull("reader", REPLY_TOPIC, 0, 0, 32, "*", 0)
        .expect("pull the reply topic");
    assert_eq!(stored.messages.len(), REPLIES);
    assert_eq!(stored.messages[3].body, b"reply 3");
    // Stored as sent: no PUSH_REPLY_TIME.
    assert_eq!(stored.messages[3].properties.get("PUSH_REPLY_TIME"), None);
}

#[test]
fn a_reply_to_a_requester_that_left_refused_or_is_not_named_is_refused() {
    let broker = TestBroker::start(2);
    let mut requester = broker.connection();
    beat(&mut requester, "left-requester@1");
    let request = requested(&broker, &mut requester, "RpcLeftTopic");
    drop(requester);
    let mut responder = broker.connection();
    let reply = reply_to(&request, b"too late".to_vec()).unwrap();
    let mut to = |client: Option<&str>| {
        let mut reply = reply.clone();
        reply.properties.remove("REPLY_TO_CLIENT");
        if let Some(client) = client {
            reply.properties.set("REPLY_TO_CLIENT", client);
        }
        responder
            .send_raw(request::SEND_REPLY_MESSAGE_V2, "rpc-responders", &reply)
            .expect("answered")
    };
    // The broker learns of the closed connection a moment after the client closed it; until
    // then the push itself fails on the closing connection.
    let gone = "push reply message fail, channel of <left-requester@1> not found.";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = to(Some("left-requester@1"));
        assert_eq!(answer.code, response::SYSTEM_ERROR);
        if remark(&answer) == gone {
            // Stored all the same, as Java does.
            assert!(answer.ext("msgId").is_some_and(|id| id != "0"));
            break;
        }
        assert_eq!(
            remark(&answer),
            "push reply message to left-requester@1fail."
        );
        assert!(
            Instant::now() < deadline,
            "the closed connection was never forgotten"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = to(Some("never-seen@9"));
    assert_eq!(
        (answer.code, remark(&answer)),
        (
            response::SYSTEM_ERROR,
            "push reply message fail, channel of <never-seen@9> not found."
        )
    );
    let answer = to(None);
    assert_eq!(
        (answer.code, remark(&answer)),
        (
            response::SYSTEM_ERROR,
            "reply message properties[REPLY_TO_CLIENT] is null"
        )
    );
    // A requester that answers the push with an error.
    let mut refusing = broker.connection();
    beat(&mut refusing, "refusing@1");
    refusing.timeout = Duration::from_secs(10);
    let refused = std::thread::scope(|scope| {
        scope.spawn(move || {
            let push = refusing.read_command().expect("pushed");
            refusing.answer(&push, response::SYSTEM_ERROR).unwrap();
        });
        to(Some("refusing@1"))
    });
    assert_eq!(
        (refused.code, remark(&refused)),
        (
            response::SYSTEM_ERROR,
            "push reply message to refusing@1fail."
        )
    );
    // A reply to a topic that may not be sent to is refused as a send would be.
    let mut bad = reply.clone();
    bad.topic = "SCHEDULE_TOPIC_XXXX".into();
    let answer = responder
        .send_raw(request::SEND_REPLY_MESSAGE, "rpc-responders", &bad)
        .unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    assert!(
        remark(&answer).contains("SCHEDULE_TOPIC_XXXX"),
        "{}",
        remark(&answer)
    );
}

#[test]
fn rust_client_request_gets_its_reply() {
    const TOPIC: &str = "RustRpcTopic";
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let clients = Clients::new("rpc", &broker.namesrv.addr, false);
    let requester = clients.producer("rpc-requester");
    let responder = clients.producer("rpc-responder");
    // The topic exists (and is routed) before the consumer starts, so that it is given its
    // queue at once rather than at its next rebalance.
    broker
        .connection()
        .send_message("rpc-warmup", &request_message(TOPIC, "nobody", "warm-up"))
        .expect("topic created");
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.namesrv.client().route(TOPIC).is_err() {
        assert!(Instant::now() < deadline, "{TOPIC} never routed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (tx, rx) = mpsc::channel();
    let consumer = clients.consumer("rpc-cg", "rpc-consumer", TOPIC, "*", collector(1, tx));
    let reply = std::thread::scope(|scope| {
        let asked = scope.spawn(|| {
            let mut msg = new_message!(TOPIC);
            msg.set_body(Some(b"ping".to_vec().into()));
            clients
                .block_on(requester.request(msg, 30_000))
                .map_err(|e| chain(&e))
        });
        let request = loop {
            let (_, m) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the request reached the responder");
            if m.body().is_some_and(|b| b.as_ref() == b"ping") {
                break m;
            }
        };
        let reply = MessageUtil::create_reply_message(&request.message, b"pong")
            .expect("a reply (the broker set CLUSTER)");
        let sent = clients.block_on(responder.send_with_timeout(reply, 10_000));
        sent.unwrap_or_else(|e| panic!("reply send: {}", chain(&e)));
        asked.join().unwrap()
    });
    let reply = reply.expect("request answered");
    assert_eq!(reply.get_body().map(|b| b.to_vec()), Some(b"pong".to_vec()));
    let (mut consumer, mut requester, mut responder) = (consumer, requester, responder);
    clients.block_on(consumer.shutdown());
    clients.block_on(requester.shutdown());
    clients.block_on(responder.shutdown());
    clients.close();
}

/// Round trips of SEND_REPLY_MESSAGE_V2 (push to the requester and its answer included) on a
/// 4-shard broker; prints min / median / p99 / max. By hand:
/// `cargo test --test it request_reply::round_trip_times -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, by hand: prints round-trip times, asserts no timing"]
fn round_trip_times() {
    const REPLIES: usize = 2_000;
    let broker = TestBroker::start(4);
    let mut requester = broker.connection();
    beat(&mut requester, "timed-requester@1");
    let request = requested(&broker, &mut requester, "RpcTimedTopic");
    requester.timeout = Duration::from_secs(10);
    let mut times = std::thread::scope(|scope| {
        scope.spawn(move || {
            for _ in 0..REPLIES {
                let push = requester.read_command().expect("a pushed reply");
                requester.answer(&push, response::SUCCESS).unwrap();
            }
        });
        let mut reply = reply_to(&request, vec![b'r'; 128]).unwrap();
        reply.properties.set("REPLY_TO_CLIENT", "timed-requester@1");
        let mut responder = broker.connection();
        let mut time = |code: i32, msg: &OutgoingMessage| {
            (0..REPLIES)
                .map(|_| {
                    let t = Instant::now();
                    let answer = responder.send_raw(code, "rpc-responders", msg).unwrap();
                    assert_eq!(answer.code, response::SUCCESS, "{}", remark(&answer));
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        };
        let replies = time(request::SEND_REPLY_MESSAGE_V2, &reply);
        // The same message as a plain send to the reply topic, for comparison.
        reply.properties.remove("REPLY_TO_CLIENT");
        [replies, time(request::SEND_MESSAGE_V2, &reply)]
    });
    for (what, times) in ["replies", "plain sends"].iter().zip(times.iter_mut()) {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        eprintln!(
            "{REPLIES} {what}: min {:?} median {:?} p99 {:?} max {:?}",
            times[0],
            at(0.5),
            at(0.99),
            times[times.len() - 1]
        );
    }
}
