//! Sends handed to the other shard are answered by that shard on the client's socket itself
//! (src/broker/put_hop.rs, src/net/socket_link.rs): many connections, each pipelining sends to
//! queues of both shards (one at a time, then pipelined), get every answer whole and right
//! (opaque, queue id, offset), in both header encodings, and every message is stored exactly
//! once.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use ringmq::remoting::{response, RemotingCommand, SerializeType};

use crate::harness::{create_topic, send_request, TestBroker};
use crate::process::{pull_queue, test_body};

const TOPIC: &str = "ShardHandTopic";
const QUEUES: i32 = 8;
const CONNECTIONS: u64 = 6;
const ROUNDS: u64 = 20;
/// Sends written back to back before their answers are read.
const PIPELINED: u64 = 64;

fn body(id: u64) -> Vec<u8> {
    test_body("hand", id, 16, 200)
}

fn send_frame(id: u64, queue: i32, opaque: i32, serialize_type: SerializeType) -> BytesMut {
    let mut cmd = send_request(TOPIC, queue, body(id), opaque);
    cmd.serialize_type = serialize_type;
    let mut frame = BytesMut::new();
    cmd.encode(&mut frame).unwrap();
    frame
}

fn read_answer(conn: &mut TcpStream) -> RemotingCommand {
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).expect("an answer");
    let mut frame = prefix.to_vec();
    frame.resize(4 + u32::from_be_bytes(prefix) as usize, 0);
    conn.read_exact(&mut frame[4..]).expect("a whole answer");
    RemotingCommand::decode(frame.into()).expect("an answer frame that decodes")
}

/// One connection's sends: (queue, offset) → message id of each acknowledged one.
fn produce(addr: String, conn_index: u64) -> BTreeMap<(i32, i64), u64> {
    let serialize_type = match conn_index % 2 {
        0 => SerializeType::Json,
        _ => SerializeType::RocketMq,
    };
    let mut conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut acked = BTreeMap::new();
    for round in 0..ROUNDS {
        // The first round one send at a time (each on a quiet connection: the owning shard
        // answers those itself, `Connection::is_quiet`), the others 64 back to back (the
        // reader answers most of those in batches).
        let in_flight = if round == 0 { 1 } else { PIPELINED };
        for first in (0..PIPELINED).step_by(in_flight as usize) {
            let mut frames = BytesMut::new();
            let mut expected = BTreeMap::new();
            for i in first..first + in_flight {
                let id = (conn_index * ROUNDS + round) * PIPELINED + i;
                let queue = (id % QUEUES as u64) as i32;
                let opaque = (round * PIPELINED + i) as i32;
                frames.extend_from_slice(&send_frame(id, queue, opaque, serialize_type));
                expected.insert(opaque, (id, queue));
            }
            conn.write_all(&frames).unwrap();
            for _ in 0..in_flight {
                let answer = read_answer(&mut conn);
                let (id, queue) = expected.remove(&answer.opaque).unwrap_or_else(|| {
                    panic!("an answer for opaque {} twice or unasked", answer.opaque)
                });
                assert!(answer.is_response());
                assert_eq!(answer.serialize_type, serialize_type);
                assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
                assert_eq!(answer.ext("queueId"), Some(queue.to_string().as_str()));
                assert!(answer.ext("msgId").is_some_and(|m| m.len() == 32));
                let offset: i64 = answer.ext("queueOffset").unwrap().parse().unwrap();
                let before = acked.insert((queue, offset), id);
                assert_eq!(
                    before, None,
                    "queue {queue} offset {offset} acknowledged twice"
                );
            }
        }
    }
    acked
}

#[test]
fn sends_handed_to_the_other_shard_are_answered_whole_and_stored_once() {
    let broker = TestBroker::start(2);
    create_topic(&mut broker.connection(), TOPIC, QUEUES);
    let written_before = ringmq::broker::put_hop::answers_written_by_owners();
    let producers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = broker.addr.clone();
            std::thread::spawn(move || produce(addr, c))
        })
        .collect();
    let mut acked = BTreeMap::new();
    for producer in producers {
        for (at, id) in producer.join().expect("every answer right") {
            assert_eq!(acked.insert(at, id), None, "{at:?} acknowledged twice");
        }
    }
    let total = CONNECTIONS * ROUNDS * PIPELINED;
    assert_eq!(acked.len() as u64, total);
    // Each connection's shard read sends for both shards' queues: some answers were written by
    // the shard that owns the queue, on a socket another shard serves.
    assert!(ringmq::broker::put_hop::answers_written_by_owners() > written_before);
    // Stored once each, where the answers said.
    let mut conn = broker.connection();
    for queue in 0..QUEUES {
        let found = pull_queue(&mut conn, TOPIC, queue, Path::new("/nonexistent"));
        let in_queue: Vec<_> = acked.range((queue, 0)..(queue, i64::MAX)).collect();
        assert_eq!(
            found.len(),
            in_queue.len(),
            "queue {queue} holds each send once"
        );
        for (&(_, offset), &id) in in_queue {
            assert!(
                found[offset as usize].body == body(id),
                "queue {queue} offset {offset}"
            );
        }
    }
}
