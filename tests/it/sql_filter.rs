//! SQL92 property filters (issue 15, item 2) on a broker with `enablePropertyFilter=true`:
//! pulls carrying their own SQL92 subscription and pulls using the one a heartbeat registered
//! get exactly the matching messages (numbers, strings, BETWEEN, IN, IS NULL, AND/OR/NOT,
//! RocketMQ's type rules); bad expressions are refused with the reason; without the setting
//! SQL92 is refused as Java refuses it; TAG pulls on the same broker are unchanged; and the
//! crates.io `rocketmq-client-rust` push consumer with `MessageSelector::by_sql` receives only
//! what matches.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringmq::client::broker::{pull_command, OutgoingMessage, PullResult};
use ringmq::client::Connection;
use ringmq::message::properties::{Properties, TAGS};
use ringmq::protocol::heartbeat::{
    ConsumeType, ConsumerData, HeartbeatData, MessageModel, SubscriptionData,
};
use ringmq::remoting::response;
use rocketmq_client_rust::{MQPushConsumer, MessageSelector, SendStatus};

use crate::harness::{TestBroker, TestNamesrv};
use crate::rust_client_support::{collector, new_message, wait_registered, Clients, SEND_MILLIS};

const TOPIC: &str = "SqlTopic";
const N: usize = 300;

fn filtering_broker(shards: usize) -> (tempfile::TempDir, TestBroker) {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), shards, |c| {
        c.enable_property_filter = true
    });
    (dir, broker)
}

fn region(i: usize) -> &'static str {
    ["hz", "bj", "sh"][i % 3]
}

/// Message `i`: `a` = i, `region`, `price` = i.5, tag TagA/TagB, `b` only on every 10th.
fn send_all(conn: &mut Connection, queues: i32) {
    for i in 0..N {
        let mut properties = Properties::default();
        properties.set("a", &i.to_string());
        properties.set("region", region(i));
        properties.set("price", &format!("{i}.5"));
        properties.set(TAGS, if i % 2 == 0 { "TagA" } else { "TagB" });
        if i % 10 == 0 {
            properties.set("b", "yes");
        }
        let msg = OutgoingMessage {
            topic: TOPIC.into(),
            queue_id: i as i32 % queues,
            body: format!("m{i}").into_bytes(),
            properties,
            flag: 0,
        };
        conn.send_message("sql_pg", &msg).expect("sent");
    }
}

/// Every message of every queue a pull made by `pull(queue, offset)` returns, by its `a`.
fn pull_all(queues: i32, mut pull: impl FnMut(i32, i64) -> PullResult) -> BTreeSet<usize> {
    let mut got = BTreeSet::new();
    for q in 0..queues {
        let mut offset = 0;
        loop {
            let r = pull(q, offset);
            match r.code {
                response::SUCCESS | response::PULL_RETRY_IMMEDIATELY => {}
                response::PULL_NOT_FOUND => break,
                other => panic!("pull answered {other}"),
            }
            for m in &r.messages {
                let a: usize = m.properties.get("a").unwrap().parse().unwrap();
                assert!(got.insert(a), "{a} delivered twice");
            }
            assert!(r.next_begin_offset > offset || r.code == response::SUCCESS);
            offset = r.next_begin_offset;
        }
    }
    got
}

fn expected(pred: impl Fn(usize) -> bool) -> BTreeSet<usize> {
    (0..N).filter(|i| pred(*i)).collect()
}

fn sql_pulls(conn: &mut Connection, sql: &str) -> BTreeSet<usize> {
    pull_all(4, |q, offset| {
        conn.pull_sql("sql_cg", TOPIC, q, offset, 32, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

#[test]
fn sql92_pulls_get_exactly_the_matching_messages() {
    let (_dir, broker) = filtering_broker(2);
    let mut conn = broker.connection();
    send_all(&mut conn, 4);
    let cases: [(&str, &dyn Fn(usize) -> bool); 10] = [
        ("a >= 100 AND region = 'hz'", &|i| {
            i >= 100 && region(i) == "hz"
        }),
        ("a BETWEEN 10 AND 19 OR b IS NOT NULL", &|i| {
            (10..=19).contains(&i) || i % 10 == 0
        }),
        ("region IN ('bj', 'sh') AND a < 30", &|i| {
            region(i) != "hz" && i < 30
        }),
        ("NOT (region = 'hz') AND a NOT BETWEEN 3 AND 296", &|i| {
            region(i) != "hz" && !(3..=296).contains(&i)
        }),
        ("b IS NULL AND a < 12", &|i| i % 10 != 0 && i < 12),
        // `price` is "i.5": an integer comparison cannot convert it (no match), a decimal can.
        ("price > 100", &|_| false),
        ("price > 100.0 AND price < 103.0", &|i| {
            (100..=102).contains(&i)
        }),
        // Missing property: unknown, never a match, also under NOT.
        ("NOT (missing = 1)", &|_| false),
        ("TAGS = 'TagA' AND a < 7", &|i| i % 2 == 0 && i < 7),
        ("a = 299", &|i| i == 299),
    ];
    for (sql, pred) in cases {
        assert_eq!(sql_pulls(&mut conn, sql), expected(pred), "{sql}");
    }
    // A rare match far down the queue is found by one pull (up to 800 units are scanned).
    let q = 299 % 4;
    let r = conn.pull_sql("sql_cg", TOPIC, q, 0, 32, "a = 299").unwrap();
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(r.messages.len(), 1);
    assert_eq!(r.next_begin_offset, r.max_offset);
    // TAG pulls on the same broker are unchanged.
    let tags = pull_all(4, |q, offset| {
        conn.pull("tag_cg", TOPIC, q, offset, 32, "TagB", 0)
            .unwrap()
    });
    assert_eq!(tags, expected(|i| i % 2 == 1));
}

/// A heartbeat of `group` subscribing TOPIC with `sql` (SQL92) at `version`.
fn sql_heartbeat(group: &str, sql: &str, version: i64) -> HeartbeatData {
    let subscription = SubscriptionData {
        class_filter_mode: false,
        code_set: BTreeSet::new(),
        expression_type: "SQL92".into(),
        sub_string: sql.into(),
        sub_version: version,
        tags_set: BTreeSet::new(),
        topic: TOPIC.into(),
    };
    HeartbeatData {
        client_id: format!("{group}-client"),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            consume_type: ConsumeType::Passively,
            group_name: group.into(),
            message_model: MessageModel::Clustering,
            subscription_data_set: vec![subscription],
            unit_mode: false,
        }],
        producer_data_set: vec![],
    }
}

/// A pull without its own subscription (the heartbeat's is used), `subVersion` = `version`.
fn registry_pull(
    conn: &mut Connection,
    group: &str,
    q: i32,
    offset: i64,
    version: i64,
) -> PullResult {
    let mut cmd = pull_command(group, TOPIC, q, offset, 32, "", 0);
    cmd.set_ext("sysFlag", "0");
    cmd.set_ext("subVersion", version.to_string());
    conn.pull_with(cmd).expect("pull answered")
}

#[test]
fn pulls_use_the_sql92_subscription_a_heartbeat_registered() {
    let (_dir, broker) = filtering_broker(2);
    let mut conn = broker.connection();
    send_all(&mut conn, 4);
    let sql = "region = 'sh' AND (a < 50 OR a > 280)";
    conn.heartbeat(&sql_heartbeat("hb_cg", sql, 5)).unwrap();
    let got = pull_all(4, |q, offset| {
        registry_pull(&mut conn, "hb_cg", q, offset, 5)
    });
    assert_eq!(
        got,
        expected(|i| region(i) == "sh" && !(50..=280).contains(&i))
    );

    // A newer version of the subscription with another expression replaces it.
    conn.heartbeat(&sql_heartbeat("hb_cg", "a = 7", 6)).unwrap();
    let got = pull_all(4, |q, offset| {
        registry_pull(&mut conn, "hb_cg", q, offset, 6)
    });
    assert_eq!(got, expected(|i| i == 7));

    // A heartbeat with an expression that does not compile is answered (as Java does: a
    // failed heartbeat makes Java clients refuse every SQL92 pull), its pulls are refused.
    conn.heartbeat(&sql_heartbeat("bad_cg", "a > > 1", 1))
        .expect("the heartbeat itself is answered SUCCESS");
    let err = conn
        .pull_with({
            let mut cmd = pull_command("bad_cg", TOPIC, 0, 0, 32, "", 0);
            cmd.set_ext("sysFlag", "0");
            cmd.set_ext("subVersion", "1");
            cmd
        })
        .unwrap_err();
    assert_eq!(err.code(), Some(response::FILTER_DATA_NOT_EXIST));
    let text = err.to_string();
    assert!(
        text.contains("\"a > > 1\" does not parse: expected a value at column 5"),
        "{text}"
    );
}

#[test]
fn bad_sql92_is_refused_with_the_reason_and_without_the_setting_as_java() {
    let (_dir, broker) = filtering_broker(1);
    let mut conn = broker.connection();
    send_all(&mut conn, 4);
    for (sql, reason) in [
        ("a >", "expected a value, found the end"),
        ("a = 'x", "string at column 5 is not closed"),
        ("region > 'hz'", "cannot be compared with >, >=, < or <="),
        ("a BETWEEN 5 AND 1", "lower bound"),
        ("a = NULL", "use IS NULL"),
        ("a != 1", "unexpected character '!' at column 3"),
    ] {
        let err = conn.pull_sql("sql_cg", TOPIC, 0, 0, 32, sql).unwrap_err();
        assert_eq!(
            err.code(),
            Some(response::SUBSCRIPTION_PARSE_FAILED),
            "{sql}"
        );
        let text = err.to_string();
        assert!(text.contains(reason), "{sql}: {text}");
        assert!(
            text.contains(&format!("\"{sql}\" does not parse")),
            "{text}"
        );
    }

    // Without enablePropertyFilter (the default): Java's refusal.
    let plain = TestBroker::start(1);
    let mut conn = plain.connection();
    send_all(&mut conn, 4);
    let err = conn
        .pull_sql("sql_cg", TOPIC, 0, 0, 32, "a > 1")
        .unwrap_err();
    assert_eq!(err.code(), Some(response::SYSTEM_ERROR));
    let text = err.to_string();
    assert!(
        text.contains("The broker does not support consumer to filter message by SQL92"),
        "{text}"
    );
}

#[test]
fn rust_client_push_consumer_with_an_sql_selector_gets_only_matches() {
    const TOPIC_RC: &str = "RustSqlTopic";
    const COUNT: usize = 100;
    let (_dir, broker) = filtering_broker(2);
    wait_registered(&broker);
    let clients = Clients::new("sql", &broker.namesrv.addr, false);
    let mut producer = clients.producer("rc-sql-pg");
    let send = |range: std::ops::Range<usize>| {
        clients.block_on(async {
            for i in range {
                let mut msg = new_message!(TOPIC_RC);
                msg.set_keys(format!("k{i}").into());
                msg.set_body(Some(format!("b{i}").into_bytes().into()));
                msg.properties_mut()
                    .as_map_mut()
                    .insert("a".into(), i.to_string().into());
                let sent = producer.send_with_timeout(msg, SEND_MILLIS).await;
                let sent = sent.expect("sent").expect("a SendResult");
                assert_eq!(sent.send_status, SendStatus::SendOk);
            }
        })
    };
    // The topic (and its route) exists before the consumer checks its expression.
    send(0..COUNT);
    let (tx, rx) = mpsc::channel();
    let mut consumer = clients.push_builder("rc-sql-cg", "rc-sql").build();
    let selector = Some(MessageSelector::by_sql("a >= 60"));
    clients
        .block_on(consumer.subscribe_with_selector(TOPIC_RC, selector))
        .expect("subscribe with an SQL selector");
    consumer.register_message_listener_concurrently(collector(1, tx));
    clients.block_on(consumer.start()).expect("consumer starts");
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_until = None;
    loop {
        let until = quiet_until.unwrap_or(deadline);
        let Ok((_, m)) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) else {
            break;
        };
        let a: usize = m.property("a").expect("property a").parse().unwrap();
        assert!(got.insert(a), "{a} twice");
        if got.len() >= COUNT - 60 && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(1_500));
        }
    }
    assert_eq!(got, (60..COUNT).collect::<BTreeSet<_>>());
    clients.block_on(consumer.shutdown());
    clients.block_on(producer.shutdown());
    clients.close();
}
