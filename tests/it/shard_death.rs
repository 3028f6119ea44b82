//! A shard that dies mid-request (issue 17): the client whose send was being handed to it is
//! answered at once with an error and a remark naming the shard, not left to time out; the
//! broker then stops and exits non-zero, and after a restart everything it acknowledged is
//! there. The shard is killed by the `shard-put-many` fail point (the owner panics when a
//! batch of records is handed to it), armed through FAILPOINTS in the broker's environment.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::time::Duration;

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::remoting::response;

use crate::harness::TestNamesrv;
use crate::process::{
    free_port_triple, log_tail, verify_acked, write_broker_config, BrokerProcess, Rng,
};

const TOPIC: &str = "ShardDeathTopic";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn body(id: u64) -> Vec<u8> {
    format!("shard-death-{id}").into_bytes()
}

#[test]
fn a_send_to_a_shard_that_dies_mid_request_is_answered_and_the_broker_restarts_whole() {
    let namesrv = TestNamesrv::start();
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-shard-death-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut rng = Rng::seeded();
    let port = free_port_triple(&mut rng);
    let store = dir.path().join("store");
    // shardCount=2: queues 0 and 1 of a topic live on different shards, so one of the two
    // sends below is handed from the connection's shard to the other one.
    let config = write_broker_config(dir.path(), "shard-death", port, &store, "");
    let args = [
        OsStr::new("broker"),
        OsStr::new("-c"),
        config.as_os_str(),
        OsStr::new("-n"),
        OsStr::new(&namesrv.addr),
    ];
    let log = dir.path().join("broker-1.log");
    let mut broker = BrokerProcess::spawn_with_env(
        None,
        &args,
        log.clone(),
        &[("FAILPOINTS", OsStr::new("shard-put-many=panic"))],
    );
    let addr = format!("127.0.0.1:{port}");
    let mut conn = Connection::connect(&addr, CALL_TIMEOUT).expect("connect");
    let mut acked = BTreeMap::new();
    let mut refused = Vec::new();
    for (id, queue) in [(0u64, 0i32), (1, 1)] {
        let msg = OutgoingMessage {
            topic: TOPIC.into(),
            queue_id: queue,
            body: body(id),
            properties: Properties::default(),
            flag: 0,
        };
        // Answered either way: a timeout here (Err) is the failure this test is about.
        let reply = conn
            .send_raw(ringmq::remoting::request::SEND_MESSAGE_V2, "pg", &msg)
            .unwrap_or_else(|e| {
                panic!(
                    "send to queue {queue} not answered: {e}\n{}",
                    log_tail(&log)
                )
            });
        if reply.code == response::SUCCESS {
            let offset: i64 = reply.ext("queueOffset").unwrap().parse().unwrap();
            acked.insert((queue, offset), id);
        } else {
            refused.push((queue, reply.code, reply.remark.clone().unwrap_or_default()));
        }
    }
    assert_eq!(
        acked.len(),
        1,
        "the send on the connection's own shard is stored"
    );
    assert_eq!(
        refused.len(),
        1,
        "the send handed to the dying shard is refused"
    );
    let (queue, code, remark) = &refused[0];
    assert_eq!(
        *code,
        response::SERVICE_NOT_AVAILABLE,
        "queue {queue}: {remark}"
    );
    assert!(
        remark.contains("gone"),
        "the remark says the shard is gone: {remark:?}"
    );
    // The broker does not limp on without a shard: it stops, non-zero.
    let status = broker
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| {
            panic!(
                "the broker kept running without a shard\n{}",
                log_tail(&log)
            )
        });
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}\n{}",
        log_tail(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("broker shard failed"),
        "the log says why it stopped:\n{}",
        log_tail(&log)
    );
    // Restarted without the fail point: what was acknowledged is there.
    let log2 = dir.path().join("broker-2.log");
    let _broker = BrokerProcess::spawn_with_env(None, &args, log2.clone(), &[]);
    let found = verify_acked(&addr, TOPIC, 2, &acked, body, &log2);
    assert_eq!(found, 1, "exactly the acknowledged message is stored");
}
