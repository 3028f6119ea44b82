//! DELETE_TOPIC_IN_BROKER drops the topic's consume queues and every group's offsets of it on
//! every shard, not only its config: a topic made again under the name starts at offset 0 with
//! no consumer offsets, also after a restart (the old records are not queued again).

use std::time::Duration;

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::remoting::{request, response, RemotingCommand};

use crate::harness::TestBroker;

const TOPIC: &str = "DeleteMeTopic";
const GROUP: &str = "delete-cg";

fn send_to(conn: &mut Connection, queue_id: i32, body: &str) {
    let msg = OutgoingMessage {
        topic: TOPIC.into(),
        queue_id,
        body: body.as_bytes().to_vec(),
        properties: Properties::default(),
        flag: 0,
    };
    let sent = conn.send_message("delete-pg", &msg).expect("send");
    assert_eq!(sent.code, response::SUCCESS);
}

fn max_offset(conn: &mut Connection, queue_id: i32) -> i64 {
    let q = queue_id.to_string();
    conn.offset_call(
        request::GET_MAX_OFFSET,
        &[("topic", TOPIC), ("queueId", &q)],
    )
    .expect("max offset")
}

/// The group's committed offset of the queue as QUERY_CONSUMER_OFFSET answers it (Java answers
/// 0 for a queue with no commit whose messages start at 0, QUERY_NOT_FOUND otherwise).
fn committed(conn: &mut Connection, queue_id: i32) -> Option<i64> {
    let q = queue_id.to_string();
    let cmd = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
        .with_ext("consumerGroup", GROUP)
        .with_ext("topic", TOPIC)
        .with_ext("queueId", q.as_str());
    let answer = conn.invoke(cmd).expect("answered");
    match answer.code {
        response::SUCCESS => answer.ext("offset").and_then(|o| o.parse().ok()),
        _ => None,
    }
}

fn create(conn: &mut Connection) {
    crate::harness::create_topic(conn, TOPIC, 4);
}

/// The bodies of the messages of queue `q` from offset 0.
fn bodies(conn: &mut Connection, q: i32) -> Vec<String> {
    let pulled = conn.pull(GROUP, TOPIC, q, 0, 32, "*", 0).expect("pull");
    pulled
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

fn queue_dirs(store: &std::path::Path) -> Vec<std::path::PathBuf> {
    (0..2)
        .map(|shard| store.join(format!("consumequeue/{shard}/{TOPIC}")))
        .filter(|d| d.exists())
        .collect()
}

#[test]
fn deleting_a_topic_drops_its_queues_and_offsets_and_a_new_one_starts_clean() {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-")
        .tempdir_in("/tmp")
        .unwrap();
    // Queues flushed every 100 ms whatever their size, so their files are there to delete.
    let tweak = |cfg: &mut ringmq::config::BrokerConfig| {
        cfg.flush_interval_consume_queue_ms = 100;
        cfg.flush_consume_queue_least_pages = 0;
    };
    let namesrv = crate::harness::TestNamesrv::start();
    let broker = TestBroker::start_in(namesrv, dir.path(), 2, tweak);
    let mut conn = broker.connection();
    create(&mut conn);
    for i in 0..40 {
        send_to(&mut conn, i % 4, &format!("old-{i}"));
    }
    for q in 0..4 {
        assert_eq!(max_offset(&mut conn, q), 10);
        let fields = [
            ("consumerGroup", GROUP),
            ("topic", TOPIC),
            ("queueId", &q.to_string()),
            ("commitOffset", "7"),
        ];
        let mut cmd = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET);
        for (k, v) in fields {
            cmd.set_ext(k, v);
        }
        conn.call(cmd).expect("commit");
        assert_eq!(committed(&mut conn, q), Some(7));
    }
    // The queues reach the disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue_dirs(&broker.store).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "queues never flushed");
        std::thread::sleep(Duration::from_millis(100));
    }

    let delete = RemotingCommand::request(request::DELETE_TOPIC_IN_BROKER).with_ext("topic", TOPIC);
    conn.call(delete).expect("deleted");
    assert_eq!(queue_dirs(&broker.store), Vec::<std::path::PathBuf>::new());
    for q in 0..4 {
        assert_eq!(max_offset(&mut conn, q), 0, "queue {q}");
        assert!(committed(&mut conn, q).is_none_or(|o| o == 0), "queue {q}");
    }

    // Made again: offsets from 0, only the new messages.
    create(&mut conn);
    for q in 0..4 {
        send_to(&mut conn, q, &format!("new-{q}"));
    }
    let check = |conn: &mut Connection| {
        for q in 0..4 {
            assert_eq!(max_offset(conn, q), 1, "queue {q}");
            assert!(committed(conn, q).is_none_or(|o| o == 0), "queue {q}");
            assert_eq!(bodies(conn, q), vec![format!("new-{q}")], "queue {q}");
        }
    };
    check(&mut conn);
    drop(conn);

    // After a restart: the old records are not queued again.
    let store = broker.store.clone();
    let (namesrv, _) = broker.stop();
    let broker = TestBroker::start_in(namesrv, &store, 2, tweak);
    let mut conn = broker.connection();
    check(&mut conn);
    drop(conn);
    drop(broker);
    drop(dir);
}

/// A slave follows its master's deletion: its metadata sync (Java's `SlaveSynchronize`, every
/// 10 s) finds the topic gone from the master's table and drops the config, the consume
/// queues and the offsets here too, so the slave stops serving the topic and, made again on
/// the master, the topic starts at offset 0 on the slave as well.
#[test]
fn a_topic_deleted_on_the_master_is_deleted_on_its_slave() {
    use crate::ha::{wait_connected, Pair};
    use ringmq::config::BrokerRole;

    let pair = Pair::start(BrokerRole::SyncMaster, 2);
    let mut master = pair.master.connection();
    let mut slave = pair.slave.connection();
    wait_connected(&mut master);
    create(&mut master);
    for i in 0..40 {
        send_to(&mut master, i % 4, &format!("old-{i}"));
    }
    let wait = |what: &str, check: &mut dyn FnMut() -> bool| {
        // Up to two metadata sync rounds.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let slave_has_topic = |conn: &mut Connection| {
        let all = conn
            .call(RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG))
            .expect("topics");
        let table: serde_json::Value = serde_json::from_slice(&all.body).expect("json");
        table["topicConfigTable"][TOPIC].is_object()
    };
    wait("the slave to copy the topic", &mut || {
        slave_has_topic(&mut slave)
    });
    for q in 0..4 {
        wait("the slave to hold every message", &mut || {
            max_offset(&mut slave, q) == 10
        });
    }

    let delete = RemotingCommand::request(request::DELETE_TOPIC_IN_BROKER).with_ext("topic", TOPIC);
    master.call(delete).expect("deleted");
    wait("the slave to drop the topic", &mut || {
        !slave_has_topic(&mut slave) && (0..4).all(|q| max_offset(&mut slave, q) == 0)
    });
    let pulled = slave
        .invoke(ringmq::client::broker::pull_command(
            GROUP, TOPIC, 1, 0, 32, "*", 0,
        ))
        .expect("pull answered");
    assert_eq!(
        pulled.code,
        response::TOPIC_NOT_EXIST,
        "{:?}",
        pulled.remark
    );

    // Made again on the master: the slave queues the new messages from offset 0.
    create(&mut master);
    for q in 0..4 {
        send_to(&mut master, q, &format!("new-{q}"));
    }
    for q in 0..4 {
        wait("the slave to queue the new topic", &mut || {
            max_offset(&mut slave, q) == 1
        });
        assert_eq!(bodies(&mut slave, q), vec![format!("new-{q}")], "queue {q}");
    }
}
