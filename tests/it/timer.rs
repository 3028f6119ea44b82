//! Timer messages (RocketMQ 5's TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS) through
//! our client: delivered at their time and in time order, bad values and delays past
//! timerMaxDelaySec refused with Java's code, delivered once after a restart, and — with a
//! real `ringmq broker` process SIGKILLed while timers are pending and coming due — nothing
//! acknowledged lost and nothing delivered twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq::client::broker::{OutgoingMessage, PulledMessage};
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::remoting::response;

use crate::harness::{TestBroker, TestNamesrv};
use crate::process::{log_tail, pull_queue, test_body, RestartableBroker, Rng};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn timer(topic: &str, queue_id: i32, body: &[u8], props: &[(&str, String)]) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set("TAGS", "t");
    for (k, v) in props {
        properties.set(k, v);
    }
    OutgoingMessage {
        topic: topic.into(),
        queue_id,
        body: body.to_vec(),
        properties,
        flag: 0,
    }
}

/// Pulls queue `queue` of `topic` from 0 until `count` messages came or `limit` passed.
fn collect(
    conn: &mut Connection,
    topic: &str,
    queue: i32,
    count: usize,
    limit: Duration,
) -> Vec<PulledMessage> {
    let deadline = Instant::now() + limit;
    let mut got: Vec<PulledMessage> = Vec::new();
    conn.timeout = Duration::from_secs(10);
    while got.len() < count && Instant::now() < deadline {
        match conn.pull("timer-it", topic, queue, got.len() as i64, 32, "*", 1_000) {
            Ok(r) if r.code == response::SUCCESS => got.extend(r.messages),
            Ok(_) => {}
            Err(e) if e.code() == Some(response::TOPIC_NOT_EXIST) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("pull failed: {e}"),
        }
    }
    got
}

fn prop(m: &PulledMessage, key: &str) -> Option<i64> {
    m.properties.get(key).and_then(|v| v.parse().ok())
}

#[test]
fn timers_arrive_at_their_time_in_time_order() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    let topic = "Timers";
    conn.send_message("pg", &timer(topic, 0, b"warm-up", &[]))
        .unwrap();
    conn.send_message("pg", &timer(topic, 1, b"warm-up", &[]))
        .unwrap();
    let base = now_ms();
    // (body, property, value, asked delivery time); both queues (two shards).
    let asks: Vec<(&str, &str, String, i64)> = vec![
        ("c", "TIMER_DELAY_MS", "2600".into(), base + 2_600),
        ("a", "TIMER_DELAY_SEC", "1".into(), base + 1_000),
        (
            "d",
            "TIMER_DELIVER_MS",
            (base + 2_600).to_string(),
            base + 2_600,
        ),
        ("b", "TIMER_DELAY_MS", "1700".into(), base + 1_700),
    ];
    for queue in 0..2 {
        for (body, key, value, _) in &asks {
            let sent = conn
                .send_message(
                    "pg",
                    &timer(topic, queue, body.as_bytes(), &[(key, value.clone())]),
                )
                .unwrap();
            assert_eq!(sent.queue_id, queue);
        }
        let early = conn.pull("early", topic, queue, 1, 32, "*", 0).unwrap();
        assert_eq!(early.code, response::PULL_NOT_FOUND, "a timer came at once");
    }
    for queue in 0..2 {
        let got = collect(&mut conn, topic, queue, 5, Duration::from_secs(20));
        let bodies: Vec<&[u8]> = got[1..].iter().map(|m| &m.body[..]).collect();
        // In time order, those due in the same slot in send order (c, a, d, b). The slots
        // are the broker's: on a quiet machine a, b, c, d, but sends slowed by a loaded
        // machine can move b's into c's.
        let sent = |m: &PulledMessage| asks.iter().position(|a| a.0.as_bytes() == &m.body[..]);
        let mut order: Vec<_> = got[1..]
            .iter()
            .map(|m| (prop(m, "TIMER_OUT_MS"), sent(m), &m.body[..]))
            .collect();
        order.sort();
        let expected: Vec<&[u8]> = order.iter().map(|o| o.2).collect();
        assert_eq!(bodies, expected, "queue {queue}");
        let mut all = bodies.clone();
        all.sort();
        assert_eq!(all, vec![&b"a"[..], b"b", b"c", b"d"], "queue {queue}");
        for m in &got[1..] {
            let body = std::str::from_utf8(&m.body).unwrap();
            let asked = asks.iter().find(|a| a.0 == body).unwrap().3;
            assert!(
                m.store_timestamp >= asked,
                "{body} stored at {} before its time {asked}",
                m.store_timestamp
            );
            let out = prop(m, "TIMER_OUT_MS").expect("TIMER_OUT_MS");
            // The asked time is the test's clock before the send: a lower bound of the
            // broker's, exact for TIMER_DELIVER_MS ("d").
            assert!(out + 1_000 >= asked, "{body}: out {out}, asked {asked}");
            if body == "d" {
                assert!(out < asked, "{body}: out {out}, asked {asked}");
            }
            assert!(prop(m, "TIMER_ENQUEUE_MS").is_some_and(|e| e >= base));
            // Taken off the wheel when due, at the append (copies are built ahead).
            let dequeued = prop(m, "TIMER_DEQUEUE_MS").expect("TIMER_DEQUEUE_MS");
            assert!(
                dequeued >= out + 1_000 && dequeued <= m.store_timestamp,
                "{body}"
            );
            assert_eq!(m.properties.get("REAL_TOPIC"), None);
            assert_eq!(m.properties.get("REAL_QID"), None);
            assert_eq!((m.topic.as_str(), m.queue_id), (topic, queue));
        }
    }
    // Nothing more comes (each timer delivered once).
    std::thread::sleep(Duration::from_millis(1_500));
    for queue in 0..2 {
        let more = conn.pull("late", topic, queue, 5, 32, "*", 0).unwrap();
        assert_eq!(more.code, response::PULL_NOT_FOUND, "queue {queue}");
    }
}

#[test]
fn bad_timer_values_and_delays_past_the_maximum_are_refused() {
    let namesrv = TestNamesrv::start();
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-timer-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(namesrv, dir.path(), 2, |c| c.timer_max_delay_sec = 60);
    let mut conn = broker.connection();
    let topic = "TimerBad";
    conn.send_message("pg", &timer(topic, 0, b"warm-up", &[]))
        .unwrap();
    let refused = |conn: &mut Connection, props: &[(&str, String)], code: i32, says: &str| {
        let err = conn
            .send_message("pg", &timer(topic, 0, b"x", props))
            .expect_err("refused");
        assert_eq!(err.code(), Some(code), "{props:?}: {err}");
        assert!(err.to_string().contains(says), "{props:?}: {err}");
    };
    for (key, value) in [
        ("TIMER_DELAY_SEC", "abc"),
        ("TIMER_DELAY_MS", "1.5"),
        ("TIMER_DELIVER_MS", "tomorrow"),
    ] {
        refused(
            &mut conn,
            &[(key, value.into())],
            response::MESSAGE_ILLEGAL,
            key,
        );
    }
    refused(
        &mut conn,
        &[("TIMER_DELAY_SEC", "61".into())],
        response::MESSAGE_ILLEGAL,
        "max delay 60000ms",
    );
    refused(
        &mut conn,
        &[("TIMER_DELIVER_MS", (now_ms() + 3_600_000).to_string())],
        response::MESSAGE_ILLEGAL,
        "timerMaxDelaySec=60",
    );
    refused(
        &mut conn,
        &[("TIMER_DELAY_SEC", "9223372036854775807".into())],
        response::MESSAGE_ILLEGAL,
        "max delay",
    );
    refused(
        &mut conn,
        &[
            ("TIMER_DELAY_SEC", "5".into()),
            ("TIMER_DEL_UNIQKEY", "k".into()),
        ],
        response::MESSAGE_ILLEGAL,
        "TIMER_DEL_UNIQKEY",
    );
    let direct = conn
        .send_message("pg", &timer("rmq_sys_wheel_timer", 0, b"x", &[]))
        .expect_err("refused");
    assert!(direct.to_string().contains("forbidden"), "{direct}");
    // A delay that is not in the future (negative, zero, a past time) is an ordinary message.
    for (i, (key, value)) in [
        ("TIMER_DELAY_MS", "-5000".to_string()),
        ("TIMER_DELAY_SEC", "0".into()),
        ("TIMER_DELIVER_MS", "1".into()),
    ]
    .into_iter()
    .enumerate()
    {
        conn.send_message("pg", &timer(topic, 0, b"now", &[(key, value.clone())]))
            .unwrap();
        let m = conn.pull("now", topic, 0, 1 + i as i64, 1, "*", 0).unwrap();
        assert_eq!(
            m.code,
            response::SUCCESS,
            "{key}={value} not stored at once"
        );
        assert_eq!(m.messages[0].properties.get("TIMER_OUT_MS"), None);
    }
    // A delay level wins over the timer properties (Java drops them).
    conn.send_message(
        "pg",
        &timer(
            topic,
            0,
            b"level",
            &[("DELAY", "1".into()), ("TIMER_DELAY_SEC", "50".into())],
        ),
    )
    .unwrap();
    let leveled = collect(&mut conn, topic, 0, 5, Duration::from_secs(15));
    let last = leveled.last().expect("delivered");
    assert_eq!(last.body, b"level");
    assert_eq!(last.properties.get("TIMER_DELAY_SEC"), None);
    drop(broker);
    // timerWheelEnable=false refuses timers with Java's code and remark.
    let off = TestBroker::start_in(TestNamesrv::start(), dir.path(), 2, |c| {
        c.timer_wheel_enable = false
    });
    let mut conn = off.connection();
    let err = conn
        .send_message(
            "pg",
            &timer(topic, 0, b"x", &[("TIMER_DELAY_SEC", "5".into())]),
        )
        .expect_err("refused");
    assert_eq!(err.code(), Some(response::SYSTEM_ERROR), "{err}");
    assert!(err.to_string().contains("timerWheelEnable"), "{err}");
}

#[test]
fn timers_due_while_the_broker_was_down_are_delivered_once_after_it_restarts() {
    let namesrv = TestNamesrv::start();
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-timer-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(namesrv, dir.path(), 2, |_| {});
    let mut conn = broker.connection();
    let topic = "TimerRestart";
    for (i, ms) in [1_500, 2_000, 120_000].iter().enumerate() {
        let body = format!("m{i}");
        conn.send_message(
            "pg",
            &timer(
                topic,
                0,
                body.as_bytes(),
                &[("TIMER_DELAY_MS", ms.to_string())],
            ),
        )
        .unwrap();
    }
    drop(conn);
    let (namesrv, _) = broker.stop();
    std::thread::sleep(Duration::from_millis(2_500));
    let broker = TestBroker::start_in(namesrv, dir.path(), 2, |_| {});
    let mut conn = broker.connection();
    let got = collect(&mut conn, topic, 0, 2, Duration::from_secs(15));
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"m0"[..], b"m1"]);
    // Restart once more: the delivered ones do not come again, the 2-minute one still waits.
    drop(conn);
    std::thread::sleep(Duration::from_millis(1_200)); // a checkpoint interval
    let (namesrv, _) = broker.stop();
    let broker = TestBroker::start_in(namesrv, dir.path(), 2, |_| {});
    let mut conn = broker.connection();
    std::thread::sleep(Duration::from_millis(1_500));
    let more = conn.pull("again", topic, 0, 2, 32, "*", 0).unwrap();
    assert_eq!(more.code, response::PULL_NOT_FOUND, "delivered twice");
}

const KILL_TOPIC: &str = "TimerKill";
const KILL_QUEUES: i32 = 4;

/// SYNC_FLUSH broker process, 2 shards; timers due over the next seconds; SIGKILLed three
/// times at random moments while they come due, restarted each time on the same store. Every
/// acknowledged timer is delivered exactly once; none is delivered before its time.
#[test]
fn a_kill_9_with_timers_pending_loses_nothing_and_delivers_nothing_twice() {
    let namesrv = TestNamesrv::start();
    let mut rng = Rng::seeded();
    let tmp = tempfile::Builder::new()
        .prefix("ringmq-it-timerkill-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut broker = RestartableBroker::new(tmp.path(), &mut rng, |port, store| {
        format!(
            "brokerClusterName=DefaultCluster\nbrokerName=timer-kill\nbrokerId=0\n\
             brokerRole=ASYNC_MASTER\nflushDiskType=SYNC_FLUSH\nbrokerIP1=127.0.0.1\n\
             listenAddress=127.0.0.1\nlistenPort={port}\nstorePathRootDir={}\nshardCount=2\n\
             mappedFileSizeCommitLog=67108864\nautoCreateTopicEnable=true\n\
             autoCreateSubscriptionGroup=true\ntimerPrecisionMs=100\n",
            store.display()
        )
    });
    broker.start(&namesrv.addr);
    let mut conn = Connection::connect(&broker.addr(), Duration::from_secs(5)).unwrap();
    // Create the topic with its queues before the timers name them.
    for q in 0..KILL_QUEUES {
        conn.send_message("pg", &timer(KILL_TOPIC, q, b"first", &[]))
            .unwrap();
    }
    let total: u64 = 1_200;
    let spread_ms: u64 = 6_000;
    let mut acked: BTreeMap<u64, i64> = BTreeMap::new(); // id -> asked time
    let start = now_ms();
    for id in 0..total {
        let at = start + 1_000 + (id * 7_919 % spread_ms) as i64;
        let body = test_body("timer", id, 8, 64);
        let m = timer(
            KILL_TOPIC,
            (id % KILL_QUEUES as u64) as i32,
            &body,
            &[("TIMER_DELIVER_MS", at.to_string())],
        );
        if let Ok(r) = conn.send_message("pg", &m) {
            if r.code == response::SUCCESS {
                acked.insert(id, at);
            }
        }
    }
    drop(conn);
    assert_eq!(
        acked.len() as u64,
        total,
        "a quiet broker acknowledges every send"
    );
    for _ in 0..3 {
        std::thread::sleep(rng.millis(300, 2_000));
        broker.process().sigkill();
        broker.start(&namesrv.addr);
    }
    let last_due = acked.values().max().copied().unwrap();
    let wait = (last_due - now_ms()).max(0) as u64 + 3_000;
    std::thread::sleep(Duration::from_millis(wait));
    let mut conn = Connection::connect(&broker.addr(), Duration::from_secs(5)).unwrap();
    let log = broker.process().log.clone();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut copies: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for q in 0..KILL_QUEUES {
        for m in pull_queue(&mut conn, KILL_TOPIC, q, &log)
            .into_iter()
            .skip(1)
        {
            let text = String::from_utf8_lossy(&m.body).to_string();
            let id: u64 = text
                .split('-')
                .nth(1)
                .and_then(|i| i.parse().ok())
                .unwrap_or_else(|| panic!("unexpected body {text:?}"));
            assert_eq!(m.body, test_body("timer", id, 8, 64), "body of {id}");
            let asked = acked[&id];
            assert!(
                m.store_timestamp >= asked,
                "timer {id} delivered at {} before its time {asked}",
                m.store_timestamp
            );
            *seen.entry(id).or_default() += 1;
            copies.entry(id).or_default().push(format!(
                "q{q}@{} out={:?} qo={:?} deq={:?} stored={}",
                m.queue_offset,
                m.properties.get("TIMER_OUT_MS"),
                m.properties.get("RINGMQ_TIMER_QO"),
                m.properties.get("TIMER_DEQUEUE_MS"),
                m.store_timestamp
            ));
        }
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| n.len() > 1).collect();
    if !twice.is_empty() {
        let mut logs = String::new();
        for run in 1..=4 {
            let text = std::fs::read_to_string(tmp.path().join(format!("broker.{run}.log")))
                .unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("timer")) {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        panic!("delivered more than once: {twice:?}\n{logs}");
    }
    let lost: Vec<_> = acked.keys().filter(|id| !seen.contains_key(id)).collect();
    assert!(
        lost.is_empty(),
        "{} lost: {lost:?}\n{}",
        lost.len(),
        log_tail(&log)
    );
    broker.process().sigterm();
}

/// The crates.io `rocketmq-client-rust` 1.0.0's own timer setters (`set_delay_time_sec`,
/// `set_delay_time_ms`, `set_deliver_time_ms`) and a push consumer: each message arrives no
/// earlier than asked, in time order; a delay past the maximum is refused.
#[test]
fn rust_client_timer_messages_arrive_at_their_time() {
    use crate::rust_client_support::{
        chain, collector, new_message, wait_registered, Clients, SEND_MILLIS,
    };
    use rocketmq_client_rust::SendStatus;
    use rocketmq_model::common::message::MessageTrait;
    use std::sync::mpsc;

    const TOPIC: &str = "RustClientTimerTopic";
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let clients = Clients::new("timer", &broker.namesrv.addr, false);
    let mut producer = clients.producer("rc-timer-pg");
    macro_rules! send {
        ($key:expr, |$m:ident| $set:expr) => {
            clients.block_on(async {
                let mut $m = new_message!(TOPIC);
                $m.set_keys(($key).into());
                $m.set_body(Some(($key).as_bytes().to_vec().into()));
                let _ = $set;
                producer.send_with_timeout($m, SEND_MILLIS).await
            })
        };
    }
    let sent = send!("warm-up", |m| ()).unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(sent.expect("a result").send_status, SendStatus::SendOk);
    let (tx, rx) = mpsc::channel();
    let mut consumer = clients.consumer("rc-timer-cg", "rc-timer", TOPIC, "*", collector(1, tx));
    let warm = rx
        .recv_timeout(Duration::from_secs(40))
        .expect("the warm-up message");
    assert_eq!(warm.1.keys().unwrap_or_default().join(" "), "warm-up");

    let base = now_ms();
    let asks: [(&str, i64); 3] = [("sec", 2_000), ("at", 3_000), ("ms", 1_000)];
    for (key, after) in asks {
        let result = match key {
            "sec" => send!(key, |m| m.set_delay_time_sec(after as u64 / 1_000)),
            "ms" => send!(key, |m| m.set_delay_time_ms(after as u64)),
            _ => send!(key, |m| m.set_deliver_time_ms((base + after) as u64)),
        };
        let sent = result.unwrap_or_else(|e| panic!("send {key}: {}", chain(&e)));
        assert_eq!(sent.expect("a result").send_status, SendStatus::SendOk);
    }
    let refused = send!("too-far", |m| m.set_delay_time_sec(4 * 24 * 3_600));
    // The crate reports "Broker operation failed" (the code and remark are checked with our
    // client above).
    assert!(refused.is_err(), "a delay past timerMaxDelaySec is refused");

    let mut got: Vec<(String, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 3 && Instant::now() < deadline {
        if let Ok((_, m)) = rx.recv_timeout(Duration::from_millis(500)) {
            got.push((m.keys().unwrap_or_default().join(" "), now_ms()));
        }
    }
    clients.block_on(consumer.shutdown());
    clients.block_on(producer.shutdown());
    clients.close();
    let keys: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(keys, vec!["ms", "sec", "at"], "{got:?}");
    for (key, at) in &got {
        let after = asks.iter().find(|a| a.0 == key).unwrap().1;
        assert!(
            *at >= base + after,
            "{key} arrived {} ms after the send",
            at - base
        );
    }
}
