//! Admin requests the broker relays to a consumer over the consumer's own connection
//! (GET_CONSUMER_RUNNING_INFO, CONSUME_MESSAGE_DIRECTLY, INVOKE_BROKER_TO_GET_CONSUMER_STATUS →
//! GET_CONSUMER_STATUS_FROM_CLIENT), through `ringmq admin` (consumerStatus, queryMsgById -g -d,
//! getConsumerStatus): with rocketmq-client-rust's push consumer, which answers all three, and
//! with hand-driven consumers on several connections (so that relays cross shards), one that
//! closes its connection while asked and one that never answers.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::protocol::heartbeat::{
    parse_tag_expression, ConsumeType, ConsumerData, HeartbeatData, MessageModel,
};
use ringmq::remoting::{request, response, RemotingCommand};

use crate::admin_cli::{json, ok, run};
use crate::harness::TestBroker;
use crate::rust_client_support::{collector, wait_registered, Clients};

const TOPIC: &str = "RelayTopic";

fn send(broker: &TestBroker, topic: &str, body: &str) -> String {
    let mut conn = broker.connection();
    let msg = OutgoingMessage {
        topic: topic.into(),
        queue_id: -1,
        body: body.as_bytes().to_vec(),
        properties: Properties::default(),
        flag: 0,
    };
    let sent = conn.send_message("relay-pg", &msg).expect("send");
    assert_eq!(sent.code, response::SUCCESS);
    sent.msg_id
}

#[test]
fn a_rust_push_consumer_answers_running_info_direct_consumption_and_status_through_the_broker() {
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let ns = broker.namesrv.addr.clone();
    let ids: Vec<String> = (0..4)
        .map(|i| send(&broker, TOPIC, &format!("m{i}")))
        .collect();
    let clients = Clients::new("relay", &ns, false);
    let (tx, rx) = mpsc::channel();
    let mut consumer = clients.consumer("relay-cg", "relay-1", TOPIC, "*", collector(1, tx));
    let mut got = 0;
    while got < 4 {
        let (_, m) = rx.recv_timeout(Duration::from_secs(30)).expect("consumed");
        assert!(m.body().is_some());
        got += 1;
    }
    let connection = json(&ns, &["consumerConnection", "-g", "relay-cg"]);
    let client_id = connection["connectionSet"][0]["clientId"]
        .as_str()
        .expect("a client id")
        .to_string();

    // GET_CONSUMER_RUNNING_INFO: the client's own view, relayed.
    let info = json(&ns, &["consumerStatus", "-g", "relay-cg", "-i", &client_id]);
    assert_eq!(
        info["properties"]["PROP_CONSUME_TYPE"], "CONSUME_PASSIVELY",
        "{info}"
    );
    let topics: Vec<&str> = info["subscriptionSet"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .filter_map(|s| s["topic"].as_str())
        .collect();
    assert!(topics.contains(&TOPIC), "{info}");
    assert!(
        info["mqTable"]
            .as_array()
            .is_some_and(|q| q.iter().any(|q| q["topic"] == TOPIC)),
        "{info}"
    );
    let text = ok(&ns, &["consumerStatus", "-g", "relay-cg", "-i", &client_id]);
    assert!(text.contains("#Consumer Properties#") && text.contains("#Consumer Offset#"));
    let all = ok(&ns, &["consumerStatus", "-g", "relay-cg"]);
    assert!(all.contains(&client_id), "{all}");
    assert!(
        all.contains("Same subscription in the same group of consumer"),
        "{all}"
    );

    // CONSUME_MESSAGE_DIRECTLY: the stored message goes to the client, which consumes it again.
    let direct = ok(
        &ns,
        &[
            "queryMsgById",
            "-i",
            &ids[2],
            "-g",
            "relay-cg",
            "-d",
            &client_id,
        ],
    );
    assert!(direct.contains("consumeResult=CR_SUCCESS"), "{direct}");
    let (_, again) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("consumed again");
    assert_eq!(again.body().map(|b| b.to_vec()), Some(b"m2".to_vec()));

    // GET_CONSUMER_STATUS_FROM_CLIENT through INVOKE_BROKER_TO_GET_CONSUMER_STATUS.
    let status = ok(&ns, &["getConsumerStatus", "-g", "relay-cg", "-t", TOPIC]);
    assert!(
        status.contains(&format!("ClientId={client_id}")),
        "{status}"
    );
    assert!(status.contains(TOPIC), "{status}");

    // A client id that is not there.
    let r = run(
        Some(&ns),
        &["consumerStatus", "-g", "relay-cg", "-i", "nobody@0"],
    );
    assert!(
        !r.ok
            && r.err
                .contains("The Consumer <relay-cg> <nobody@0> not online"),
        "{}",
        r.err
    );

    clients.block_on(consumer.shutdown());
    clients.close();
}

/// How a hand-driven consumer answers what the broker relays.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answer,
    CloseWhenAsked,
    NeverAnswer,
}

fn heartbeat(client_id: &str, group: &str) -> HeartbeatData {
    HeartbeatData {
        client_id: client_id.into(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            consume_type: ConsumeType::Passively,
            group_name: group.into(),
            message_model: MessageModel::Clustering,
            subscription_data_set: vec![parse_tag_expression(TOPIC, "*", 1)],
            unit_mode: false,
        }],
        producer_data_set: Vec::new(),
    }
}

/// A consumer on its own connection answering relays as `behaviour` says; returns when its
/// connection ends (or `stop` says so).
fn fake_consumer(
    addr: &str,
    client_id: String,
    group: &'static str,
    behaviour: Behaviour,
    ready: mpsc::Sender<()>,
) -> thread::JoinHandle<()> {
    let mut conn = Connection::connect(addr, Duration::from_secs(5)).expect("connect");
    thread::spawn(move || {
        conn.heartbeat(&heartbeat(&client_id, group))
            .expect("heartbeat");
        let _ = ready.send(());
        conn.timeout = Duration::from_secs(60);
        while let Ok(asked) = conn.read_command() {
            if asked.is_response() {
                continue;
            }
            match behaviour {
                Behaviour::CloseWhenAsked => return,
                Behaviour::NeverAnswer => continue,
                Behaviour::Answer => {}
            }
            let body = match asked.code {
                request::GET_CONSUMER_RUNNING_INFO => format!(
                    concat!(
                        r#"{{"jstack":null,"mqTable":{{{{"brokerName":"broker-it","queueId":1,"#,
                        r#""topic":"{t}"}}:{{"commitOffset":7}}}},"properties":{{"#,
                        r#""PROP_CONSUME_TYPE":"CONSUME_PASSIVELY","me":"{id}"}},"#,
                        r#""statusTable":{{}},"subscriptionSet":[{{"topic":"{t}","subString":"*"}}]}}"#
                    ),
                    t = TOPIC,
                    id = client_id
                ),
                _ => String::new(),
            };
            let answer = asked.response_to(response::SUCCESS, None).with_body(body);
            conn.write_all(&answer.to_frame().expect("frame"))
                .expect("answer");
        }
    })
}

#[test]
fn relays_reach_consumers_on_every_shard_and_gone_or_silent_ones_get_a_clear_answer() {
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let ns = broker.namesrv.addr.clone();
    let (ready_tx, ready) = mpsc::channel();
    // Several connections: SO_REUSEPORT spreads them over both shards, and the admin's own
    // connection lands on either, so relays cross shards both ways.
    let ids: Vec<String> = (0..6).map(|i| format!("127.0.0.1@fake-{i}")).collect();
    let answering: Vec<_> = ids
        .iter()
        .map(|id| {
            fake_consumer(
                &broker.addr,
                id.clone(),
                "relay-fake",
                Behaviour::Answer,
                ready_tx.clone(),
            )
        })
        .collect();
    let closing = fake_consumer(
        &broker.addr,
        "127.0.0.1@closing".into(),
        "relay-gone",
        Behaviour::CloseWhenAsked,
        ready_tx.clone(),
    );
    let _silent = fake_consumer(
        &broker.addr,
        "127.0.0.1@silent".into(),
        "relay-silent",
        Behaviour::NeverAnswer,
        ready_tx,
    );
    for _ in 0..8 {
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("registered");
    }
    for _ in 0..3 {
        for id in &ids {
            let info = json(&ns, &["consumerStatus", "-g", "relay-fake", "-i", id]);
            assert_eq!(info["properties"]["me"], id.as_str(), "{info}");
            assert_eq!(info["mqTable"][0]["processQueue"]["commitOffset"], 7);
        }
    }

    // The dashboard's consumer detail: the client's running info through a broker.
    let dashboard = crate::dashboard::TestDashboard::start(&ns);
    let mut http = crate::dashboard::Http::new(&dashboard.base);
    let info = http.get(&format!("/api/groups/relay-fake/clients/{}", ids[1]));
    assert_eq!(info["properties"]["me"], ids[1].as_str(), "{info}");
    let (status, _, page) = http.send(
        "GET",
        &format!("/groups/relay-fake?client={}", ids[1]),
        None,
    );
    assert_eq!(status, 200);
    assert!(page.contains(&format!("Client {}", ids[1])), "{page}");
    assert!(
        page.contains("client-queues") && page.contains(TOPIC),
        "{page}"
    );
    drop(dashboard);

    // A raw relay: the client's answer comes back under the admin's opaque.
    let mut admin = broker.connection();
    let asked = RemotingCommand::request(request::GET_CONSUMER_RUNNING_INFO)
        .with_ext("consumerGroup", "relay-fake")
        .with_ext("clientId", ids[0].as_str())
        .with_ext("jstackEnable", "false");
    let answer = admin.invoke(asked).expect("answered");
    assert_eq!(answer.code, response::SUCCESS);
    assert!(String::from_utf8_lossy(&answer.body).contains(&ids[0]));

    // The client closes its connection when asked: at once, a clear SYSTEM_ERROR.
    let asked = RemotingCommand::request(request::GET_CONSUMER_RUNNING_INFO)
        .with_ext("consumerGroup", "relay-gone")
        .with_ext("clientId", "127.0.0.1@closing");
    let started = Instant::now();
    let answer = admin.invoke(asked.clone()).expect("answered");
    assert_eq!(answer.code, response::SYSTEM_ERROR, "{:?}", answer.remark);
    let remark = answer.remark.unwrap_or_default();
    assert!(
        remark.contains("<relay-gone> <127.0.0.1@closing>"),
        "{remark}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    closing.join().unwrap();
    // Gone: no longer online.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = admin.invoke(asked.clone()).expect("answered");
        let remark = answer.remark.clone().unwrap_or_default();
        if remark.contains("not online") {
            assert_eq!(answer.code, response::SYSTEM_ERROR);
            break;
        }
        assert!(Instant::now() < deadline, "still online: {remark}");
        thread::sleep(Duration::from_millis(50));
    }

    // A client that never answers: CONSUME_MSG_TIMEOUT after Java's 10 s.
    admin.timeout = Duration::from_secs(20);
    let asked = RemotingCommand::request(request::GET_CONSUMER_RUNNING_INFO)
        .with_ext("consumerGroup", "relay-silent")
        .with_ext("clientId", "127.0.0.1@silent");
    let answer = admin.invoke(asked).expect("answered");
    assert_eq!(
        answer.code,
        response::CONSUME_MSG_TIMEOUT,
        "{:?}",
        answer.remark
    );
    assert!(answer.remark.unwrap_or_default().contains("Timeout"));

    drop(admin);
    drop(broker);
    for t in answering {
        t.join().unwrap();
    }
}
