//! Our broker driven only through `rocketmq-client-rust` 1.0.0's `DefaultMQProducer` and
//! `DefaultMQPushConsumer` (clustering, CONSUME_FROM_FIRST_OFFSET, concurrently listener).
//!
//! (How the client's unexported model types are reached: see `rust_client_support`.)
//!
//! Every scenario runs on a 1-shard and a 2-shard broker with the client's defaults; the first
//! also runs with `postSubscriptionWhenPull` (the pull carries its own subscription). The
//! 2-shard runs cover a gap the first version of this test found: after its first rebalance the
//! client raises its subscriptions' subVersion and heartbeats; the shards that own queues must
//! learn the newer version (or ask the control shard) instead of answering every pull with
//! SUBSCRIPTION_NOT_LATEST.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rocketmq_client_rust::{DefaultMQProducer, MessageUtil, SendStatus};

use crate::harness::TestBroker;
use crate::rust_client_support::{collector, Clients, SEND_MILLIS};

/// Bound on waiting for a consumer to receive what it should.
const RECEIVE_WAIT: Duration = Duration::from_secs(30);
/// How long a consumer that received everything is watched for extra deliveries.
const QUIET: Duration = Duration::from_millis(1_500);
const USER_PROP: &str = "idx";

/// What the tests check of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    key: String,
    tags: Option<String>,
    prop: Option<String>,
    body: Vec<u8>,
    queue: i32,
    reconsume: i32,
}

/// Receives from `$rx` until `$expected` distinct keys arrived (bounded by `RECEIVE_WAIT`),
/// then for `QUIET` more; yields every `(consumer, message)` received, duplicates included.
macro_rules! receive {
    ($rx:expr, $expected:expr) => {{
        let rx = &$rx;
        let mut all: Vec<(u8, Got)> = Vec::new();
        let mut keys = BTreeSet::new();
        let started = Instant::now();
        let mut deadline = started + RECEIVE_WAIT;
        let mut quiet = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((consumer, m)) = rx.recv_timeout(left) else {
                break;
            };
            let got = Got {
                key: m.keys().unwrap_or_default().join(" "),
                tags: m.tags().map(str::to_string),
                prop: m.property(USER_PROP).map(str::to_string),
                body: m.body().map(|b| b.to_vec()).unwrap_or_default(),
                queue: m.queue_id(),
                reconsume: m.reconsume_times(),
            };
            keys.insert(got.key.clone());
            all.push((consumer, got));
            if !quiet && keys.len() >= $expected {
                quiet = true;
                deadline = Instant::now() + QUIET;
            }
        }
        let elapsed = started.elapsed();
        eprintln!(
            "received {} ({} keys) in {elapsed:?}",
            all.len(),
            keys.len()
        );
        all
    }};
}

fn strip(got: &[(u8, Got)]) -> Vec<Got> {
    got.iter().map(|(_, g)| g.clone()).collect()
}

fn key(i: usize) -> String {
    format!("key-{i:05}")
}

fn tag(i: usize) -> &'static str {
    if i % 2 == 0 {
        "TagA"
    } else {
        "TagB"
    }
}

fn body(i: usize) -> Vec<u8> {
    format!("body-{i}-{}", "x".repeat(i % 50)).into_bytes()
}

/// Sends messages `range` to `topic`, each synchronously; asserts SEND_OK.
fn send_range(
    clients: &Clients,
    producer: &DefaultMQProducer,
    topic: &str,
    range: std::ops::Range<usize>,
) {
    clients.block_on(async {
        for i in range {
            let mut msg = Default::default();
            let _ = MessageUtil::get_reply_to_client(&msg); // makes `msg` a `Message`
            msg.set_topic(topic.into());
            msg.set_tags(tag(i).into());
            msg.set_keys(key(i).into());
            msg.set_body(Some(body(i).into()));
            msg.properties_mut()
                .as_map_mut()
                .insert(USER_PROP.into(), i.to_string().into());
            let sent = producer.send_with_timeout(msg, SEND_MILLIS).await;
            let sent = sent.unwrap_or_else(|e| panic!("send #{i} to {topic}: {e}"));
            let sent = sent.expect("a SendResult for a sync send");
            assert_eq!(sent.send_status, SendStatus::SendOk, "send #{i}: {sent:?}");
        }
    });
}

/// Asserts `got` is exactly messages `range` (each once) with body, tags and property intact.
fn assert_exactly(got: &[Got], range: impl Iterator<Item = usize>, what: &str) {
    let mut by_key: BTreeMap<&str, Vec<&Got>> = BTreeMap::new();
    for g in got {
        by_key.entry(g.key.as_str()).or_default().push(g);
    }
    let dups: Vec<_> = by_key.values().filter(|v| v.len() > 1).collect();
    assert!(
        dups.is_empty(),
        "{what}: delivered more than once: {dups:?}"
    );
    let expected: BTreeMap<String, usize> = range.map(|i| (key(i), i)).collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !by_key.contains_key(k.as_str()))
        .collect();
    let extra: Vec<_> = by_key
        .keys()
        .filter(|k| !expected.contains_key(**k))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(extra.is_empty(), "{what}: unexpected: {extra:?}");
    for (k, &i) in &expected {
        let g = by_key[k.as_str()][0];
        let want = Got {
            key: k.clone(),
            tags: Some(tag(i).into()),
            prop: Some(i.to_string()),
            body: body(i),
            queue: g.queue,
            reconsume: 0,
        };
        assert_eq!(*g, want, "{what}");
    }
}

fn produce_then_consume_all_and_by_tag(shards: usize, post_subscription: bool) {
    const N: usize = 1000;
    const TOPIC: &str = "RustClientBrokerTopic";
    let broker = TestBroker::start(shards);
    let clients = Clients::new("pc", &broker.namesrv.addr, post_subscription);
    let mut producer = clients.producer("rc-pg");
    send_range(&clients, &producer, TOPIC, 0..N);

    let (tx, rx) = mpsc::channel();
    let mut all = clients.consumer("rc-cg-all", "rc-all", TOPIC, "*", collector(1, tx));
    let got = strip(&receive!(rx, N));
    clients.block_on(all.shutdown());
    assert_exactly(&got, 0..N, "subscription *");
    let queues: BTreeSet<i32> = got.iter().map(|g| g.queue).collect();
    assert_eq!(queues.len(), 4, "queues {queues:?}");

    // A new group: filtered by tag (the client filters by tag again after the broker did).
    let (tx, rx) = mpsc::channel();
    let mut tag_a = clients.consumer("rc-cg-taga", "rc-taga", TOPIC, "TagA", collector(1, tx));
    let got = strip(&receive!(rx, N / 2));
    clients.block_on(tag_a.shutdown());
    assert_exactly(&got, (0..N).step_by(2), "subscription TagA");

    clients.block_on(producer.shutdown());
    clients.close();
}

fn two_consumers_of_one_group_split_the_queues(shards: usize, post_subscription: bool) {
    const N: usize = 400;
    const TOPIC: &str = "RustClientSplitTopic";
    let broker = TestBroker::start(shards);
    let clients = Clients::new("split", &broker.namesrv.addr, post_subscription);
    let mut producer = clients.producer("rc-split-pg");
    // Creates the topic (and its route) so that both consumers find it when they start.
    send_range(&clients, &producer, TOPIC, 0..1);

    let (tx, rx) = mpsc::channel();
    let mut c1 = clients.consumer(
        "rc-split",
        "rc-split-1",
        TOPIC,
        "*",
        collector(1, tx.clone()),
    );
    let mut c2 = clients.consumer("rc-split", "rc-split-2", TOPIC, "*", collector(2, tx));
    // Message 0 reaches whichever consumer owned its queue first. Then one settling pause for
    // c1 to drop the queues c2 took (NOTIFY_CONSUMER_IDS_CHANGED → rebalance): messages
    // produced while both pulled one queue could legitimately be delivered twice.
    let first = receive!(rx, 1);
    assert_exactly(&strip(&first), 0..1, "warm-up");
    std::thread::sleep(Duration::from_secs(3));
    send_range(&clients, &producer, TOPIC, 1..N);

    let got = receive!(rx, N - 1);
    clients.block_on(async {
        c1.shutdown().await;
        c2.shutdown().await;
    });
    assert_exactly(&strip(&got), 1..N, "union of the group");
    let queues =
        |c: u8| -> BTreeSet<i32> { got.iter().filter(|g| g.0 == c).map(|g| g.1.queue).collect() };
    let (q1, q2) = (queues(1), queues(2));
    assert!(!q1.is_empty() && !q2.is_empty(), "queues {q1:?} / {q2:?}");
    assert!(q1.is_disjoint(&q2), "queues {q1:?} / {q2:?}");
    assert_eq!(q1.len() + q2.len(), 4, "queues {q1:?} / {q2:?}");

    clients.block_on(producer.shutdown());
    clients.close();
}

fn group_restart_resumes_from_committed_offsets(shards: usize, post_subscription: bool) {
    const TOPIC: &str = "RustClientResumeTopic";
    const FIRST: usize = 200;
    const SECOND: usize = 150;
    let broker = TestBroker::start(shards);
    let clients = Clients::new("resume", &broker.namesrv.addr, post_subscription);
    let mut producer = clients.producer("rc-resume-pg");
    send_range(&clients, &producer, TOPIC, 0..FIRST);

    let (tx, rx) = mpsc::channel();
    let mut first = clients.consumer("rc-resume", "rc-resume-1", TOPIC, "*", collector(1, tx));
    let got = strip(&receive!(rx, FIRST));
    // A clean shutdown persists every queue's offset (oneway UPDATE_CONSUMER_OFFSET), then
    // unregisters the client (UNREGISTER_CLIENT).
    clients.block_on(first.shutdown());
    assert_exactly(&got, 0..FIRST, "first consumer");

    send_range(&clients, &producer, TOPIC, FIRST..FIRST + SECOND);
    // Same group, new client id: from the committed offsets (QUERY_CONSUMER_OFFSET), not from
    // the first offset. Every message was acknowledged before the shutdown, so the client's
    // at-least-once semantics allow no redelivery here.
    let (tx, rx) = mpsc::channel();
    let mut second = clients.consumer("rc-resume", "rc-resume-2", TOPIC, "*", collector(1, tx));
    let got = strip(&receive!(rx, SECOND));
    clients.block_on(second.shutdown());
    assert_exactly(&got, FIRST..FIRST + SECOND, "restarted group");

    clients.block_on(producer.shutdown());
    clients.close();
}

/// Per scenario: a 1-shard and a 2-shard broker, with the client's defaults.
macro_rules! on_brokers {
    ($scenario:ident: $one:ident, $two:ident) => {
        #[test]
        fn $one() {
            $scenario(1, false);
        }

        #[test]
        fn $two() {
            $scenario(2, false);
        }
    };
}

on_brokers!(produce_then_consume_all_and_by_tag:
    rust_client_produces_then_consumes_all_and_by_tag,
    rust_client_produces_then_consumes_all_and_by_tag_two_shards);
on_brokers!(two_consumers_of_one_group_split_the_queues:
    rust_client_consumers_of_one_group_split_the_queues,
    rust_client_consumers_of_one_group_split_the_queues_two_shards);
on_brokers!(group_restart_resumes_from_committed_offsets:
    rust_client_group_restart_resumes_from_committed_offsets,
    rust_client_group_restart_resumes_from_committed_offsets_two_shards);

#[test]
fn rust_client_consumes_with_subscriptions_posted_on_pulls() {
    produce_then_consume_all_and_by_tag(2, true);
}
