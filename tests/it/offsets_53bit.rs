//! Offsets every client can hold exactly (issue 15, item 1): on a 4-shard broker every offset
//! the broker hands out — send results, pulled messages' commit log and queue offsets, the
//! offset inside an offsetMsgId, views by id, consumer/min/max offsets, the admin tool's JSON —
//! is below 2^53 and survives a round trip through an IEEE double (what every JavaScript client
//! does to it), and the message found by that msgId is the one sent. Then stores written with
//! the old layout (shard in bits 56-63): refused with the migration message when shards 1 and
//! up hold data, opened as they are when everything is on shard 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringmq::client::broker::{decode_messages, OutgoingMessage};
use ringmq::client::Connection;
use ringmq::message::properties::{Properties, KEYS, UNIQ_KEY};
use ringmq::message::{decode_offset_msg_id, offset_msg_id};
use ringmq::remoting::{request, response, RemotingCommand};
use rocketmq_client_rust::SendStatus;

use crate::harness::{TestBroker, TestNamesrv};
use crate::rust_client_support::{collector, new_message, wait_registered, Clients, SEND_MILLIS};

const SHARD_BIT: u32 = 45;
const EXACT: u64 = 1 << 53;

/// `v` is below 2^53 and comes back unchanged from a double (signed and unsigned).
fn assert_exact(v: i64, what: &str) {
    assert!(
        (0..EXACT as i64).contains(&v),
        "{what} {v} is not a 53-bit offset"
    );
    assert_eq!(v as f64 as i64, v, "{what} {v} changes as a double");
    assert_eq!(
        v as u64 as f64 as u64, v as u64,
        "{what} {v} changes as a double"
    );
}

/// The offset inside an offsetMsgId, checked exact.
fn msg_id_offset(id: &str) -> i64 {
    let (_, offset) = decode_offset_msg_id(id).unwrap_or_else(|| panic!("{id} is no offsetMsgId"));
    assert_exact(offset, "msgId offset");
    offset
}

struct Sent {
    key: String,
    queue_id: i32,
    queue_offset: i64,
    msg_id: String,
}

fn body(i: usize) -> Vec<u8> {
    format!("offsets-{i}-{}", "y".repeat(i % 40)).into_bytes()
}

/// The record VIEW_MESSAGE_BY_ID answers for `offset` (after its trip through a double),
/// or the answer's code.
fn view(conn: &mut Connection, offset: i64) -> Result<ringmq::client::broker::PulledMessage, i32> {
    let through_double = offset as f64 as i64;
    let cmd = RemotingCommand::request(request::VIEW_MESSAGE_BY_ID)
        .with_ext("offset", through_double.to_string());
    let reply = conn.invoke(cmd).expect("view answered");
    if reply.code != response::SUCCESS {
        return Err(reply.code);
    }
    let mut found = decode_messages(&reply.body).expect("a record");
    assert_eq!(found.len(), 1);
    Ok(found.remove(0))
}

#[test]
fn every_offset_handed_out_by_a_4_shard_broker_survives_a_double() {
    const N: usize = 10_000;
    const TOPIC: &str = "OffsetsTopic";
    const QUEUES: i32 = 4;
    let broker = TestBroker::start(4);
    let mut conn = broker.connection();
    let store_host: std::net::SocketAddr = broker.addr.parse().unwrap();
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        let key = format!("off-{i:05}");
        let mut properties = Properties::default();
        properties.set(KEYS, &key);
        properties.set(UNIQ_KEY, &format!("UNIQ{i:028}"));
        let msg = OutgoingMessage {
            topic: TOPIC.into(),
            queue_id: i as i32 % QUEUES,
            body: body(i),
            properties,
            flag: 0,
        };
        let r = conn.send_message("offsets_pg", &msg).expect("sent");
        assert_eq!(r.code, response::SUCCESS);
        assert_exact(r.queue_offset, "send queueOffset");
        msg_id_offset(&r.msg_id);
        sent.push(Sent {
            key,
            queue_id: r.queue_id,
            queue_offset: r.queue_offset,
            msg_id: r.msg_id,
        });
    }
    // Every shard took messages, and those past shard 0 carry the shard in bits 45-52.
    let shards: BTreeSet<i64> = sent
        .iter()
        .map(|s| msg_id_offset(&s.msg_id) >> SHARD_BIT)
        .collect();
    assert_eq!(shards, (0..4).collect(), "shards used");

    // Pulled messages: commit log offset, queue offset and the msgId they make.
    let by_queue_offset: BTreeMap<(i32, i64), &Sent> = sent
        .iter()
        .map(|s| ((s.queue_id, s.queue_offset), s))
        .collect();
    let mut pulled = 0;
    for q in 0..QUEUES {
        let mut offset = 0;
        loop {
            let r = conn
                .pull("offsets_cg", TOPIC, q, offset, 32, "*", 0)
                .expect("pull");
            for n in [r.next_begin_offset, r.min_offset, r.max_offset] {
                assert_exact(n, "pull header offset");
            }
            if r.code != response::SUCCESS {
                break;
            }
            for m in &r.messages {
                assert_exact(m.physical_offset, "commitLogOffset");
                assert_exact(m.queue_offset, "queueOffset");
                let s = by_queue_offset[&(q, m.queue_offset)];
                assert_eq!(m.properties.get(KEYS), Some(s.key.as_str()));
                let id = offset_msg_id(store_host, m.physical_offset as f64 as i64);
                assert_eq!(id, s.msg_id, "msgId from the pulled commitLogOffset");
                pulled += 1;
            }
            offset = r.next_begin_offset;
        }
        // Consumer offsets and the queue's min/max offsets, through a double and back.
        let qs = q.to_string();
        let fields = [("topic", TOPIC), ("queueId", qs.as_str())];
        let max = conn.offset_call(request::GET_MAX_OFFSET, &fields).unwrap();
        let min = conn.offset_call(request::GET_MIN_OFFSET, &fields).unwrap();
        assert_exact(max, "max offset");
        assert_exact(min, "min offset");
        let commit = (max as f64 as i64).to_string();
        let update = [
            ("consumerGroup", "offsets_cg"),
            ("topic", TOPIC),
            ("queueId", qs.as_str()),
            ("commitOffset", commit.as_str()),
        ];
        conn.offset_call(request::UPDATE_CONSUMER_OFFSET, &update)
            .unwrap();
        let query = [
            ("consumerGroup", "offsets_cg"),
            ("topic", TOPIC),
            ("queueId", qs.as_str()),
        ];
        let held = conn
            .offset_call(request::QUERY_CONSUMER_OFFSET, &query)
            .unwrap();
        assert_exact(held, "consumer offset");
        assert_eq!(held, max);
    }
    assert_eq!(pulled, N);

    // The message fetched by each msgId's offset (as a double) is the one sent.
    for s in sent.iter().step_by(7) {
        let offset = msg_id_offset(&s.msg_id);
        let m = view(&mut conn, offset).expect("found by msgId");
        assert_eq!(m.properties.get(KEYS), Some(s.key.as_str()));
        assert_eq!(m.physical_offset, offset);
        assert_eq!((m.queue_id, m.queue_offset), (s.queue_id, s.queue_offset));
    }
    // An offset of shard 1 as the old layout made it names nothing (never shard 0's record).
    let on_shard_1 = sent
        .iter()
        .find(|s| msg_id_offset(&s.msg_id) >> SHARD_BIT == 1)
        .unwrap();
    let in_shard = msg_id_offset(&on_shard_1.msg_id) & ((1 << SHARD_BIT) - 1);
    let old = (1i64 << 56) | in_shard;
    assert!(
        view(&mut conn, old).is_err(),
        "an old-layout offset must not be found"
    );

    assert_admin_json_is_exact(&broker, &sent, TOPIC);
}

/// `ringmq admin queryMsgById --json` and `topicStatus --json`, numbers read as doubles.
fn assert_admin_json_is_exact(broker: &TestBroker, sent: &[Sent], topic: &str) {
    let run = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .arg("admin")
            .args(args)
            .arg("--json")
            .env("NAMESRV_ADDR", &broker.namesrv.addr)
            .output()
            .expect("ringmq runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let high = sent
        .iter()
        .rev()
        .find(|s| msg_id_offset(&s.msg_id) >> SHARD_BIT == 3)
        .unwrap();
    let found = run(&["queryMsgById", "-i", &high.msg_id]);
    let found = &found[0];
    let as_double = found["commitLogOffset"].as_f64().expect("a number");
    assert_eq!(as_double as i64, msg_id_offset(&high.msg_id));
    assert_eq!(
        found["queueOffset"].as_f64().unwrap() as i64,
        high.queue_offset
    );
    assert_eq!(found["offsetMsgId"], high.msg_id.as_str());
    if let Some(uniq) = found["msgId"].as_str() {
        let _ = std::fs::remove_file(format!("/tmp/rocketmq/msgbodys/{uniq}"));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["admin", "topicStatus", "-t", topic, "--json"])
            .env("NAMESRV_ADDR", &broker.namesrv.addr)
            .output()
            .expect("ringmq runs");
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON");
        }
        assert!(Instant::now() < deadline, "topicStatus never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = status.to_string();
    for n in text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| n.len() > 15)
    {
        let v: u64 = n.parse().unwrap();
        assert!(v < EXACT, "topicStatus holds {v}");
    }
}

#[test]
fn rust_client_offsets_and_msg_ids_survive_a_double_on_4_shards() {
    const N: usize = 400;
    const TOPIC: &str = "RustOffsetsTopic";
    let broker = TestBroker::start(4);
    wait_registered(&broker);
    let clients = Clients::new("offsets", &broker.namesrv.addr, false);
    let mut producer = clients.producer("rc-offsets-pg");
    let mut by_key: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    clients.block_on(async {
        for i in 0..N {
            let mut msg = new_message!(TOPIC);
            let key = format!("rk-{i:04}");
            msg.set_keys(key.clone().into());
            msg.set_body(Some(body(i).into()));
            let sent = producer.send_with_timeout(msg, SEND_MILLIS).await;
            let sent = sent.expect("sent").expect("a SendResult");
            assert_eq!(sent.send_status, SendStatus::SendOk);
            let id = sent.offset_msg_id.clone().expect("offsetMsgId");
            assert_exact(sent.queue_offset as i64, "send queueOffset");
            by_key.insert(key, (msg_id_offset(&id), sent.queue_offset));
        }
    });
    let shards: BTreeSet<i64> = by_key.values().map(|(o, _)| o >> SHARD_BIT).collect();
    assert_eq!(shards.len(), 4, "shards used: {shards:?}");

    let (tx, rx) = mpsc::channel();
    let mut consumer =
        clients.consumer("rc-offsets-cg", "rc-offsets", TOPIC, "*", collector(1, tx));
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((_, m)) = rx.recv_timeout(left) else {
            break;
        };
        let key = m.keys().unwrap_or_default().join(" ");
        let (offset, queue_offset) = by_key[&key];
        assert_exact(m.commit_log_offset, "consumed commitLogOffset");
        assert_exact(m.queue_offset, "consumed queueOffset");
        assert_eq!(m.commit_log_offset as f64 as i64, offset, "{key}");
        assert_eq!(m.queue_offset as u64, queue_offset, "{key}");
        let id = m.msg_id.to_string();
        if decode_offset_msg_id(&id).is_some() {
            assert_eq!(msg_id_offset(&id), offset, "{key}");
        }
        seen.insert(key);
    }
    assert_eq!(seen.len(), N, "consumed");
    clients.block_on(consumer.shutdown());
    clients.block_on(producer.shutdown());
    clients.close();
}

/// Rewrites shard `shard`'s commitlog records and consume-queue units of the store under
/// `root` to the old layout (shard in bits 56-63), and drops the format line: a store as the
/// ringmq before the 53-bit layout left it.
fn make_old_layout(root: &Path, shard: u32, shard_count: u32) {
    let to_old = |v: i64| -> i64 {
        let (s, pos) = (v >> SHARD_BIT, v & ((1 << SHARD_BIT) - 1));
        assert_eq!(s, i64::from(shard));
        (s << 56) | pos
    };
    let seg = root.join(format!("commitlog/{shard}/00000000000000000000"));
    let mut bytes = std::fs::read(&seg).unwrap();
    let mut pos = 0usize;
    let mut records = 0;
    while pos + 8 <= bytes.len() {
        let size = i32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap());
        let magic = i32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        if size <= 0 || magic != ringmq::message::record::MESSAGE_MAGIC_CODE {
            break;
        }
        let field = pos + 28;
        let phys = i64::from_be_bytes(bytes[field..field + 8].try_into().unwrap());
        bytes[field..field + 8].copy_from_slice(&to_old(phys).to_be_bytes());
        pos += size as usize;
        records += 1;
    }
    assert!(records > 0, "shard {shard} holds records");
    std::fs::write(&seg, &bytes).unwrap();
    let cq_root = root.join(format!("consumequeue/{shard}"));
    for topic in std::fs::read_dir(&cq_root).unwrap() {
        for queue in std::fs::read_dir(topic.unwrap().path()).unwrap() {
            for file in std::fs::read_dir(queue.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                let mut units = std::fs::read(&path).unwrap();
                for unit in units.chunks_mut(20) {
                    let phys = i64::from_be_bytes(unit[..8].try_into().unwrap());
                    if unit.len() == 20 && phys > 0 && unit[8..12] != [0; 4] {
                        unit[..8].copy_from_slice(&to_old(phys).to_be_bytes());
                    }
                }
                std::fs::write(&path, &units).unwrap();
            }
        }
    }
    std::fs::write(root.join("shard_count"), format!("{shard_count}\n")).unwrap();
}

fn start_on(store: &Path, shards: usize) -> std::io::Result<ringmq::broker::BrokerHandle> {
    let cfg = ringmq::config::BrokerConfig {
        broker_name: "broker-it".into(),
        broker_ip1: "127.0.0.1".parse().unwrap(),
        listen_addr: "127.0.0.1".parse().unwrap(),
        store_path_root_dir: store.to_path_buf(),
        store_path_commitlog: store.join("commitlog"),
        mapped_file_size_commitlog_bytes: 64 << 20,
        ..Default::default()
    };
    let options = ringmq::broker::BrokerOptions {
        cfg,
        namesrv_addrs: vec![],
        port_override: Some(0),
        shards,
        config_file: None,
        sync_state: None,
    };
    ringmq::broker::start(options, ringmq::runtime::Shutdown::new())
}

/// Sends one message to each of `queues` of `topic`; returns (queue, msgId).
fn send_to(broker: &TestBroker, topic: &str, queues: &[i32]) -> Vec<(i32, String)> {
    let mut conn = broker.connection();
    queues
        .iter()
        .map(|q| {
            let msg = OutgoingMessage {
                topic: topic.into(),
                queue_id: *q,
                body: format!("old-{q}").into_bytes(),
                ..Default::default()
            };
            (*q, conn.send_message("old_pg", &msg).expect("sent").msg_id)
        })
        .collect()
}

#[test]
fn a_store_of_the_old_layout_is_refused_with_how_to_migrate() {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), 2, |_| {});
    let sent = send_to(&broker, "OldTopic", &[0, 1, 2, 3]);
    let on_1: Vec<_> = sent
        .iter()
        .filter(|(_, id)| msg_id_offset(id) >> SHARD_BIT == 1)
        .collect();
    assert!(!on_1.is_empty(), "a queue on shard 1");
    let (_namesrv, _) = broker.stop();
    make_old_layout(dir.path(), 1, 2);
    let before = std::fs::read(dir.path().join("commitlog/1/00000000000000000000")).unwrap();
    let err = start_on(dir.path(), 2)
        .err()
        .expect("the old store is refused")
        .to_string();
    assert!(err.contains("bits 56-63"), "{err}");
    assert!(err.contains("To migrate"), "{err}");
    assert!(err.contains("shard(s) [1]"), "{err}");
    // Refused without touching it.
    let after = std::fs::read(dir.path().join("commitlog/1/00000000000000000000")).unwrap();
    assert!(before == after, "the old store was changed");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("shard_count")).unwrap(),
        "2\n"
    );
}

#[test]
fn a_store_of_the_old_layout_with_data_only_on_shard_0_opens_as_it_is() {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), 2, |_| {});
    // Queues of one topic owned by shard 0 only (the offsets are the same in both layouts).
    let topic = "OldTopicShard0";
    let queues: Vec<i32> = (0..4)
        .filter(|q| ringmq::broker::placement::owner_shard(topic, *q, 2) == 0)
        .collect();
    let sent = send_to(&broker, topic, &queues);
    assert!(sent
        .iter()
        .all(|(_, id)| msg_id_offset(id) >> SHARD_BIT == 0));
    let (namesrv, _) = broker.stop();
    std::fs::write(dir.path().join("shard_count"), "2\n").unwrap();
    let broker = TestBroker::start_in(namesrv, dir.path(), 2, |_| {});
    let mut conn = broker.connection();
    for (q, id) in &sent {
        let m = view(&mut conn, msg_id_offset(id)).expect("found by msgId");
        assert_eq!(m.body, format!("old-{q}").into_bytes());
        assert_eq!(m.queue_id, *q);
    }
    let marker = std::fs::read_to_string(dir.path().join("shard_count")).unwrap();
    assert!(marker.starts_with("2\nstore-format "), "{marker}");
}
