//! A 2-shard broker whose shards are moved between one CPU and two while it serves
//! (`shardColocation`, README "Co-located shards"): every send is answered, and every message
//! acknowledged reads back whole from its queue, whichever shard owns it. `always` moves the
//! shards at its first window; `auto` tries together about 1 s into a steady load and comes
//! back if that loses, so the load here runs for a few seconds to cross its trials.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::config::ShardColocation;
use ringmq::message::properties::Properties;
use ringmq::remoting::response;

use crate::harness::{create_topic, TestBroker, TestNamesrv};

const QUEUES: i32 = 4;

fn serves_every_send_while_the_shards_move(mode: ShardColocation, load_for: Duration) {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-colocation-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), 2, |cfg| {
        cfg.shard_colocation = mode;
    });
    let topic = format!("Colocation{mode:?}");
    let mut conn = broker.connection();
    create_topic(&mut conn, &topic, QUEUES);
    // (queue, offset) → body, for every send acknowledged.
    let mut acked = BTreeMap::new();
    let start = Instant::now();
    let mut id = 0u64;
    while start.elapsed() < load_for {
        let queue = (id % QUEUES as u64) as i32;
        let body = format!("colocation-{id}").into_bytes();
        let msg = OutgoingMessage {
            topic: topic.clone(),
            queue_id: queue,
            body: body.clone(),
            properties: Properties::default(),
            flag: 0,
        };
        let sent = conn
            .send_message("pg", &msg)
            .unwrap_or_else(|e| panic!("send {id} to queue {queue}: {e}"));
        assert_eq!(sent.code, response::SUCCESS, "send {id}");
        assert!(
            acked.insert((queue, sent.queue_offset), body).is_none(),
            "offset {} of queue {queue} acknowledged twice",
            sent.queue_offset
        );
        id += 1;
    }
    assert!(id > 0, "nothing sent");
    for queue in 0..QUEUES {
        let expected: Vec<_> = acked
            .range((queue, 0)..(queue + 1, 0))
            .map(|((_, offset), body)| (*offset, body.clone()))
            .collect();
        let mut got = Vec::new();
        let mut offset = 0;
        while got.len() < expected.len() {
            let pulled = conn
                .pull("cg", &topic, queue, offset, 32, "*", 0)
                .unwrap_or_else(|e| panic!("pull queue {queue} at {offset}: {e}"));
            assert_eq!(pulled.code, response::SUCCESS, "queue {queue} at {offset}");
            assert!(
                !pulled.messages.is_empty(),
                "queue {queue} ends at {offset}"
            );
            got.extend(
                pulled
                    .messages
                    .into_iter()
                    .map(|m| (m.queue_offset, m.body)),
            );
            offset = pulled.next_begin_offset;
        }
        assert_eq!(got, expected, "queue {queue}");
    }
}

#[test]
fn auto_colocation_serves_every_send_and_reads_each_back() {
    serves_every_send_while_the_shards_move(ShardColocation::Auto, Duration::from_secs(4));
}

#[test]
fn always_colocation_serves_every_send_and_reads_each_back() {
    serves_every_send_while_the_shards_move(ShardColocation::Always, Duration::from_secs(1));
}
