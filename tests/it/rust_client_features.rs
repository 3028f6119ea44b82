//! Broker features driven through `rocketmq-client-rust` 1.0.0's public API on a 2-shard
//! broker: ordered messages (queue selector + orderly push consumer), delay levels (and
//! QUERY_MESSAGE / VIEW_MESSAGE_BY_ID of the delivered record), consume failure → retry topic
//! → DLQ, broadcasting, and transactions (commit, rollback, UNKNOWN → check-back → commit).
//! Types the crate does not export are reached through inference: see `rust_client_support`.
//!
//! The transaction test needs `rocketmq-model = "1"` among our dev-dependencies: see
//! `mod transactions`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyStatus, ConsumeOrderlyContext, ConsumeOrderlyStatus,
    DefaultMQProducer, MQPushConsumer, MessageQuery, ProducerQueryRequest, ProducerQueryResponse,
    SendStatus,
};

use crate::harness::TestBroker;
use crate::rust_client_support::{
    chain, collector, collector_answering, new_message, wait_registered, Clients, SEND_MILLIS,
};

const SHARDS: usize = 2;

/// A 2-shard broker, registered with its nameserver.
fn start_broker() -> TestBroker {
    let broker = TestBroker::start(SHARDS);
    wait_registered(&broker);
    broker
}
/// Bound on any single wait for a delivery.
const WAIT: Duration = Duration::from_secs(40);

/// What the tests check of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    consumer: u8,
    topic: String,
    key: String,
    body: String,
    queue: i32,
    reconsume: i32,
    at: Instant,
}

/// Receives from `$rx` (of `(u8, MessageExt)`) until `$until(&[Got])` holds or `$wait`
/// passed; yields everything received.
macro_rules! receive_until {
    ($rx:expr, $wait:expr, $until:expr) => {{
        let rx = &$rx;
        let until = $until;
        let deadline = std::time::Instant::now() + $wait;
        let mut all: Vec<Got> = Vec::new();
        while !until(&all) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok((consumer, m)) = rx.recv_timeout(left) else {
                break;
            };
            all.push(Got {
                consumer,
                topic: m.topic().to_string(),
                key: m.keys().unwrap_or_default().join(" "),
                body: String::from_utf8_lossy(&m.body().map(|b| b.to_vec()).unwrap_or_default())
                    .into_owned(),
                queue: m.queue_id(),
                reconsume: m.reconsume_times(),
                at: std::time::Instant::now(),
            });
        }
        all
    }};
}

/// Nothing more arrives on `rx` for `quiet`.
fn assert_quiet<T>(rx: &Receiver<T>, quiet: Duration, what: &str) {
    if let Ok(_extra) = rx.recv_timeout(quiet) {
        panic!("{what}: an unexpected extra delivery");
    }
}

/// Sends one message `key`/`body` to `topic` (delay level `delay` if non-zero); asserts
/// SEND_OK; returns its (unique) msgId.
fn send(
    clients: &Clients,
    producer: &DefaultMQProducer,
    topic: &str,
    key: &str,
    delay: i32,
) -> String {
    clients.block_on(async {
        let mut msg = new_message!(topic);
        msg.set_keys(key.into());
        msg.set_body(Some(format!("body of {key}").into_bytes().into()));
        if delay > 0 {
            msg.set_delay_time_level(delay);
        }
        let sent = producer.send_with_timeout(msg, SEND_MILLIS).await;
        let sent = sent.unwrap_or_else(|e| panic!("send {key} to {topic}: {}", chain(&e)));
        let sent = sent.expect("a SendResult for a sync send");
        assert_eq!(sent.send_status, SendStatus::SendOk, "send {key}: {sent:?}");
        sent.msg_id.expect("msgId").to_string()
    })
}

/// Java's `String.hashCode`, the usual order-id → queue hash.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// A listener forwarding each message, then answering SUCCESS (auto-commit).
fn orderly_collector<M: Clone + Send + 'static>(
    tx: mpsc::Sender<(u8, M)>,
) -> impl Fn(&[&M], &mut ConsumeOrderlyContext) -> ClientResult<ConsumeOrderlyStatus>
       + Send
       + Sync
       + 'static {
    move |msgs, _| {
        for m in msgs {
            let _ = tx.send((1, (*m).clone()));
        }
        Ok(ConsumeOrderlyStatus::Success)
    }
}

#[test]
fn rust_client_orderly_consumer_receives_each_order_in_sequence() {
    const TOPIC: &str = "RustClientOrderTopic";
    const ORDERS: usize = 5;
    const STEPS: usize = 20;
    let broker = start_broker();
    let clients = Clients::new("order", &broker.namesrv.addr, false);
    let mut producer = clients.producer("rc-order-pg");
    // Creates the topic: the queue list the selector sees is then the topic's own.
    send(&clients, &producer, TOPIC, "warm-up", 0);

    let mut queue_of: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    clients.block_on(async {
        for step in 0..STEPS {
            for order in 0..ORDERS {
                let order_id = format!("order-{order}");
                let mut msg = new_message!(TOPIC);
                msg.set_keys(order_id.as_str().into());
                msg.set_body(Some(format!("{order_id}:{step:02}").into_bytes().into()));
                let sent = producer
                    .send_with_selector_timeout(
                        msg,
                        |mqs, _msg, id: &String| {
                            let n = mqs.len() as i32;
                            mqs.get((java_hash(id) % n).unsigned_abs() as usize)
                                .cloned()
                        },
                        order_id.clone(),
                        SEND_MILLIS,
                    )
                    .await;
                let why = |e| panic!("send {order_id}:{step}: {}", chain(&e));
                let sent = sent.unwrap_or_else(why).expect("a SendResult");
                assert_eq!(sent.send_status, SendStatus::SendOk, "{sent:?}");
                let queue = sent.message_queue.as_ref().expect("queue").queue_id();
                queue_of.entry(order_id).or_default().insert(queue);
            }
        }
    });
    for (order, queues) in &queue_of {
        assert_eq!(queues.len(), 1, "{order} was sent to queues {queues:?}");
    }

    let (tx, rx) = mpsc::channel();
    let consumer = clients.push_builder("rc-order-cg", "rc-order").build();
    let mut consumer = clients.start_consumer(consumer, TOPIC, "*", |c| {
        c.register_message_listener_orderly(orderly_collector(tx))
    });
    let got = receive_until!(rx, WAIT, |all: &[Got]| all
        .iter()
        .filter(|g| g.key != "warm-up")
        .count()
        >= ORDERS * STEPS);
    assert_quiet(&rx, Duration::from_secs(1), "orderly consumer");
    clients.block_on(consumer.shutdown());
    clients.block_on(producer.shutdown());
    clients.close();

    let mut steps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in got.iter().filter(|g| g.key != "warm-up") {
        let (order, step) = g.body.split_once(':').expect("order:step");
        assert_eq!(order, g.key);
        assert_eq!(Some(&BTreeSet::from([g.queue])), queue_of.get(order));
        steps.entry(order).or_default().push(step);
    }
    let expected: Vec<String> = (0..STEPS).map(|s| format!("{s:02}")).collect();
    assert_eq!(steps.len(), ORDERS, "orders received: {steps:?}");
    for (order, got) in &steps {
        assert_eq!(got, &expected, "{order}: steps out of order or missing");
    }
}

#[test]
fn rust_client_delay_level_2_arrives_after_5_seconds() {
    const TOPIC: &str = "RustClientDelayTopic";
    let broker = start_broker();
    let clients = Clients::new("delay", &broker.namesrv.addr, false);
    let mut producer = clients.producer("rc-delay-pg");
    send(&clients, &producer, TOPIC, "warm-up", 0);
    let (tx, rx) = mpsc::channel();
    let mut consumer = clients.consumer("rc-delay-cg", "rc-delay", TOPIC, "*", collector(1, tx));
    let warm = receive_until!(rx, WAIT, |all: &[Got]| !all.is_empty());
    assert_eq!(warm.len(), 1, "the warm-up message: {warm:?}");

    let sent = Instant::now();
    let id = send(&clients, &producer, TOPIC, "delayed", 2);
    send(&clients, &producer, TOPIC, "control", 0);
    let got = receive_until!(rx, Duration::from_secs(30), |all: &[Got]| all
        .iter()
        .any(|g| g.key == "delayed"));
    assert_quiet(&rx, Duration::from_secs(1), "delay consumer");
    clients.block_on(consumer.shutdown());
    // QUERY_MESSAGE by key and VIEW_MESSAGE_BY_ID (by the unique id, through QUERY_MESSAGE) find
    // the delivered record only: the scheduled one is indexed under SCHEDULE_TOPIC_XXXX.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let query = ProducerQueryRequest::QueryMessages {
        topic: TOPIC.into(),
        key: "delayed".into(),
        max_count: 32,
        begin_timestamp: 0,
        end_timestamp: now + 60_000,
    };
    let view = ProducerQueryRequest::ViewMessage {
        topic: TOPIC.into(),
        message_id: id,
    };
    let (found, viewed) =
        clients.block_on(async { (producer.query(query).await, producer.query(view).await) });
    let found: Vec<_> = match found {
        Ok(ProducerQueryResponse::Query(found)) => found.message_list().to_vec(),
        Ok(_) => panic!("QueryMessages answered with something else"),
        Err(e) => panic!("query by key: {}", chain(&e)),
    };
    let viewed = match viewed {
        Ok(ProducerQueryResponse::Message(viewed)) => viewed,
        Ok(_) => panic!("ViewMessage answered with something else"),
        Err(e) => panic!("view by id: {}", chain(&e)),
    };
    clients.block_on(producer.shutdown());
    clients.close();
    assert_eq!(found.len(), 1, "query by key: {found:?}");
    for m in [&found[0], &*viewed] {
        assert_eq!(m.topic().as_str(), TOPIC, "{m:?}");
        assert_eq!(
            m.body().map(|b| b.to_vec()),
            Some(b"body of delayed".to_vec())
        );
    }

    let at = |key: &str| {
        let g = got.iter().find(|g| g.key == key);
        g.unwrap_or_else(|| panic!("{key} never arrived: {got:?}"))
            .at
            - sent
    };
    let (delayed, control) = (at("delayed"), at("control"));
    eprintln!("control after {control:?}, delayed after {delayed:?}");
    assert!(
        control < Duration::from_secs(4),
        "control after {control:?}"
    );
    assert!(
        delayed >= Duration::from_millis(4_500),
        "delayed too early: {delayed:?}"
    );
    let delayed = got.iter().find(|g| g.key == "delayed").unwrap();
    assert_eq!(delayed.topic, TOPIC);
    assert_eq!(delayed.body, "body of delayed");
}

#[test]
fn rust_client_failed_consume_is_retried_then_dead_lettered() {
    const TOPIC: &str = "RustClientRetryTopic";
    const GROUP: &str = "rc-retry-cg";
    let broker = start_broker();
    let clients = Clients::new("retry", &broker.namesrv.addr, false);
    let mut producer = clients.producer("rc-retry-pg");
    send(&clients, &producer, TOPIC, "doomed", 0);

    // Always RECONSUME_LATER; one redelivery (via %RETRY%, delay level 3 = 10 s), then DLQ.
    let (tx, rx) = mpsc::channel();
    let consumer = clients
        .push_builder(GROUP, "rc-retry")
        .max_reconsume_times(1)
        .build();
    let mut consumer = clients.start_consumer(consumer, TOPIC, "*", |c| {
        c.register_message_listener_concurrently(collector_answering(1, tx, || {
            ConsumeConcurrentlyStatus::ReconsumeLater
        }))
    });
    let got = receive_until!(rx, WAIT, |all: &[Got]| all.len() >= 2);
    eprintln!("deliveries: {got:?}");
    assert_eq!(got.len(), 2, "first delivery and one redelivery: {got:?}");
    assert_eq!(
        (got[0].reconsume, got[1].reconsume),
        (0, 1),
        "reconsumeTimes: {got:?}"
    );
    for g in &got {
        assert_eq!((g.topic.as_str(), g.key.as_str()), (TOPIC, "doomed"));
        assert_eq!(g.body, "body of doomed");
    }
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(8), "redelivered after {gap:?}");
    assert_quiet(&rx, Duration::from_secs(2), "after maxReconsumeTimes");
    clients.block_on(consumer.shutdown());

    let dlq = format!("%DLQ%{GROUP}");
    let (tx, rx) = mpsc::channel();
    let mut reader = clients.consumer("rc-dlq-cg", "rc-dlq", &dlq, "*", collector(2, tx));
    let dead = receive_until!(rx, WAIT, |all: &[Got]| !all.is_empty());
    assert_quiet(&rx, Duration::from_secs(1), "DLQ reader");
    clients.block_on(reader.shutdown());
    clients.block_on(producer.shutdown());
    clients.close();
    assert_eq!(dead.len(), 1, "the DLQ holds the message once: {dead:?}");
    assert_eq!(dead[0].key, "doomed");
    assert_eq!(dead[0].body, "body of doomed");
    assert_eq!(dead[0].topic, dlq);
}

#[test]
fn rust_client_broadcasting_consumers_each_receive_everything() {
    const TOPIC: &str = "RustClientBroadcastTopic";
    const N: usize = 50;
    let broker = start_broker();
    let clients = Clients::new("bcast", &broker.namesrv.addr, false);
    let mut producer = clients.producer("rc-bcast-pg");
    send(&clients, &producer, TOPIC, "warm-up", 0);

    // Broadcasting consumers keep offsets in ~/.rocketmq_offsets/<client id>/ (or would: the
    // client never creates that directory): unique names, never another run's offsets.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let run = format!("{}-{now}", std::process::id());
    let instances = [format!("rc-bcast-1-{run}"), format!("rc-bcast-2-{run}")];
    let (tx, rx) = mpsc::channel();
    let mut consumers: Vec<_> = instances
        .iter()
        .zip(1u8..)
        .map(|(instance, id)| {
            let broadcasting = serde_json::from_str("\"BROADCASTING\"").expect("MessageModel");
            let consumer = clients
                .push_builder("rc-bcast-cg", instance)
                .message_model(broadcasting)
                .build();
            clients.start_consumer(consumer, TOPIC, "*", |c| {
                c.register_message_listener_concurrently(collector(id, tx.clone()))
            })
        })
        .collect();
    drop(tx);
    for i in 0..N {
        send(&clients, &producer, TOPIC, &format!("key-{i:03}"), 0);
    }
    let got = receive_until!(rx, WAIT, |all: &[Got]| all.len() >= 2 * (N + 1));
    assert_quiet(&rx, Duration::from_secs(1), "broadcasting consumers");
    clients.block_on(async {
        for c in &mut consumers {
            c.shutdown().await;
        }
    });
    clients.block_on(producer.shutdown());
    clients.close();

    let mut expected: Vec<String> = (0..N).map(|i| format!("key-{i:03}")).collect();
    expected.push("warm-up".into());
    for id in [1u8, 2] {
        let mut keys: Vec<String> = got
            .iter()
            .filter(|g| g.consumer == id)
            .map(|g| g.key.clone())
            .collect();
        keys.sort();
        assert_eq!(keys, expected, "consumer {id}");
    }
}

/// Transactions. `TransactionListener`'s methods take `&dyn MessageTrait`, a `rocketmq-model`
/// trait the client does not re-export (and it has no closure impl), hence the
/// `rocketmq-model` dev-dependency.
mod transactions {
    use std::any::Any;
    use std::sync::mpsc::{self, Sender};
    use std::time::Duration;

    use rocketmq_client_rust::{
        LocalTransactionState, SendStatus, TransactionListener, TransactionMQProducer,
    };
    use rocketmq_model::common::message::message_ext::MessageExt;
    use rocketmq_model::common::message::MessageTrait;

    use super::{assert_quiet, send, Got, SHARDS, WAIT};
    use crate::harness::{TestBroker, TestNamesrv};
    use crate::rust_client_support::{chain, collector, new_message, wait_registered, Clients};

    /// Decides by the message's key: `commit`, `rollback`, or `unknown` (COMMIT when checked).
    struct Listener {
        checked: Sender<String>,
    }

    fn key(msg: &dyn MessageTrait) -> String {
        msg.get_keys().map(|k| k.to_string()).unwrap_or_default()
    }

    impl TransactionListener for Listener {
        fn execute_local_transaction(
            &self,
            msg: &dyn MessageTrait,
            _arg: Option<&(dyn Any + Send + Sync)>,
        ) -> LocalTransactionState {
            match key(msg).as_str() {
                "commit" => LocalTransactionState::CommitMessage,
                "rollback" => LocalTransactionState::RollbackMessage,
                _ => LocalTransactionState::Unknown,
            }
        }

        fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
            let key = key(msg);
            let _ = self.checked.send(key.clone());
            match key.as_str() {
                "unknown" => LocalTransactionState::CommitMessage,
                _ => LocalTransactionState::RollbackMessage,
            }
        }
    }

    #[test]
    fn rust_client_transactions_commit_rollback_and_check_back() {
        const TOPIC: &str = "RustClientTxTopic";
        let dir = tempfile::Builder::new()
            .prefix("ringmq-it-")
            .tempdir_in("/tmp")
            .unwrap();
        let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), SHARDS, |cfg| {
            cfg.transaction_check_interval_ms = 500;
            cfg.transaction_timeout_ms = 1_000;
        });
        wait_registered(&broker);
        let clients = Clients::new("tx", &broker.namesrv.addr, false);
        let mut plain = clients.producer("rc-tx-plain-pg");
        send(&clients, &plain, TOPIC, "warm-up", 0);
        let (tx, rx) = mpsc::channel();
        let mut consumer = clients.consumer("rc-tx-cg", "rc-tx-c", TOPIC, "*", collector(1, tx));

        let (checked_tx, checked) = mpsc::channel();
        let mut producer = TransactionMQProducer::builder(clients.runtime.clone())
            .client_config(clients.config("rc-tx-pg"))
            .name_server_addr(clients.namesrv.as_str())
            .producer_group("rc-tx-pg")
            .topics(vec![TOPIC])
            .transaction_listener(Listener {
                checked: checked_tx,
            })
            .build();
        clients.block_on(producer.start()).expect("producer starts");
        for (k, state) in [
            ("commit", LocalTransactionState::CommitMessage),
            ("rollback", LocalTransactionState::RollbackMessage),
            ("unknown", LocalTransactionState::Unknown),
        ] {
            let mut msg = new_message!(TOPIC);
            msg.set_keys(k.into());
            msg.set_body(Some(format!("body of {k}").into_bytes().into()));
            let sent = clients.block_on(producer.send_message_in_transaction::<(), _>(msg, None));
            let sent = sent.unwrap_or_else(|e| panic!("transactional send {k}: {}", chain(&e)));
            eprintln!("{k}: {sent}");
            let status = sent.send_result.as_ref().map(|r| r.send_status);
            assert_eq!(status, Some(SendStatus::SendOk), "{k}: {sent}");
            assert_eq!(sent.local_transaction_state, Some(state), "{k}");
        }

        let got = receive_until!(rx, WAIT, |all: &[Got]| ["warm-up", "commit", "unknown"]
            .iter()
            .all(|k| all.iter().any(|g| g.key == *k)));
        assert_quiet(
            &rx,
            Duration::from_secs(3),
            "after the commits (the rollback?)",
        );
        clients.block_on(async {
            consumer.shutdown().await;
            producer.shutdown().await;
            plain.shutdown().await;
        });
        clients.close();
        let mut keys: Vec<&str> = got.iter().map(|g| g.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["commit", "unknown", "warm-up"], "{got:?}");
        // The check-back comes before the UNKNOWN one is delivered; once, or more if the
        // checker ran again before END_TRANSACTION landed; never for the decided ones.
        let checked: Vec<String> = checked.try_iter().collect();
        eprintln!("checked back: {checked:?}");
        assert!(
            checked.iter().all(|k| k == "unknown"),
            "checked {checked:?}"
        );
        assert!(!checked.is_empty(), "the UNKNOWN one was never checked");
    }
}
