//! Replication with master and slave as separate `ringmq broker` processes on loopback: kill -9
//! of the master (and loss of its store), a paused and a restarted slave, a stopped slave under
//! SYNC_MASTER, and a slave whose log diverged from its restarted master's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ringmq::client::Connection;
use ringmq::remoting::{request, response};

use crate::ha::{eventually, message, runtime_info};
use crate::harness::TestNamesrv;
use crate::process::{RestartableBroker, Rng};

const TOPIC: &str = "HaProcTopic";
const QUEUES: i32 = 4;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One broker of group "ha-p" in its own process.
type Node = RestartableBroker;

/// Writes the properties of an "ha-p" broker (`extra` lines appended; a key set again there
/// wins) under `dir`.
pub(crate) fn node(dir: &Path, rng: &mut Rng, role: &str, extra: &str) -> Node {
    let id = u8::from(role == "SLAVE");
    RestartableBroker::new(dir, rng, |port, store| {
        format!(
            "brokerClusterName=DefaultCluster\n\
             brokerName=ha-p\n\
             brokerId={id}\n\
             brokerRole={role}\n\
             flushDiskType=ASYNC_FLUSH\n\
             brokerIP1=127.0.0.1\n\
             brokerIP2=127.0.0.1\n\
             listenAddress=127.0.0.1\n\
             listenPort={port}\n\
             storePathRootDir={}\n\
             mappedFileSizeCommitLog=67108864\n\
             shardCount=2\n\
             slaveTimeout=1000\n\
             {extra}",
            store.display()
        )
    })
}

/// A client connection to a node.
trait Connect {
    fn conn(&self) -> Connection;
}

impl Connect for Node {
    fn conn(&self) -> Connection {
        Connection::connect(&self.addr(), CALL_TIMEOUT).expect("connect")
    }
}

/// A namesrv, a master and a slave, each broker in its own process.
struct Cluster {
    namesrv: TestNamesrv,
    master: Node,
    slave: Node,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(master_role: &str, master_extra: &str, slave_extra: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("ringmq-hap-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut rng = Rng::seeded();
        let namesrv = TestNamesrv::start();
        let mut master = node(&dir.path().join("m"), &mut rng, master_role, master_extra);
        let mut slave = node(&dir.path().join("s"), &mut rng, "SLAVE", slave_extra);
        master.start(&namesrv.addr);
        slave.start(&namesrv.addr);
        let cluster = Cluster {
            namesrv,
            master,
            slave,
            _dir: dir,
        };
        cluster.wait_connected();
        cluster
    }

    fn wait_connected(&self) {
        let mut conn = self.master.conn();
        eventually("the slave to connect", || {
            runtime_info(&mut conn)
                .get("haConnectionCount")
                .map(String::as_str)
                == Some("1")
        });
    }
}

/// Sends message `i` (body `tag-i`) to queue `i % QUEUES`; returns the answer's code and
/// (queue, offset).
fn send(conn: &mut Connection, tag: &str, i: usize) -> (i32, (i32, i64)) {
    let body = format!("{tag}-{i}");
    let sent = conn
        .send_message("ha_pg", &message(TOPIC, (i as i32) % QUEUES, &body))
        .expect("send");
    (sent.code, (sent.queue_id, sent.queue_offset))
}

/// Every message of every queue on `conn`'s broker, as (queue, offset) → body.
fn all_messages(conn: &mut Connection) -> BTreeMap<(i32, i64), String> {
    let mut out = BTreeMap::new();
    for queue in 0..QUEUES {
        let mut offset = 0;
        loop {
            let pulled = conn
                .pull("ha_cg", TOPIC, queue, offset, 32, "*", 0)
                .unwrap();
            if pulled.code != response::SUCCESS || pulled.messages.is_empty() {
                break;
            }
            for m in &pulled.messages {
                out.insert(
                    (queue, m.queue_offset),
                    String::from_utf8_lossy(&m.body).into(),
                );
            }
            offset = pulled.next_begin_offset;
        }
    }
    out
}

/// The max offset of every queue.
fn max_offsets(conn: &mut Connection) -> Vec<i64> {
    (0..QUEUES)
        .map(|q| {
            let q = q.to_string();
            let fields = [("topic", TOPIC), ("queueId", q.as_str())];
            conn.offset_call(request::GET_MAX_OFFSET, &fields)
                .unwrap_or(-1)
        })
        .collect()
}

fn wait_caught_up(cluster: &Cluster) {
    let (mut m, mut s) = (cluster.master.conn(), cluster.slave.conn());
    eventually("the slave to catch up", || {
        max_offsets(&mut m) == max_offsets(&mut s)
            && runtime_info(&mut m)
                .get("haSlaveFallBehindBytes")
                .map(String::as_str)
                == Some("0")
    });
}

#[test]
fn sync_master_killed_with_its_store_lost_every_acknowledged_message_is_on_the_slave() {
    let mut cluster = Cluster::start("SYNC_MASTER", "", "");
    let mut conn = cluster.master.conn();
    let mut acked = BTreeMap::new();
    for i in 0..400 {
        let (code, at) = send(&mut conn, "k9", i);
        assert_eq!(code, response::SUCCESS, "{}", cluster.master.log());
        acked.insert(at, format!("k9-{i}"));
    }
    cluster.master.process().sigkill();
    std::fs::remove_dir_all(cluster.master.dir.join("store")).unwrap();
    let found = all_messages(&mut cluster.slave.conn());
    assert_eq!(found.len(), acked.len(), "{}", cluster.slave.log());
    assert_eq!(found, acked);
}

#[test]
fn a_stopped_slave_fails_sync_sends_with_the_right_code_and_the_link_heals() {
    let mut cluster = Cluster::start("SYNC_MASTER", "haHousekeepingInterval=2000\n", "");
    let mut conn = cluster.master.conn();
    assert_eq!(send(&mut conn, "a", 0).0, response::SUCCESS);
    // A paused slave keeps its connection: sends time out after slaveTimeout (1 s).
    cluster.slave.process().sigstop();
    let started = Instant::now();
    let (code, _) = send(&mut conn, "a", 1);
    assert_eq!(code, response::FLUSH_SLAVE_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Past haHousekeepingInterval the master drops it: no slave at all.
    eventually("the master to drop the silent slave", || {
        send(&mut conn, "a", 2).0 == response::SLAVE_NOT_AVAILABLE
    });
    // Resumed, it reconnects by itself and sends are acknowledged again.
    cluster.slave.process().sigcont();
    cluster.wait_connected();
    eventually("sends to be acknowledged again", || {
        send(&mut conn, "a", 3).0 == response::SUCCESS
    });
    wait_caught_up(&cluster);
    // A slave that is gone answers at once.
    cluster.slave.process().sigkill();
    eventually("the master to notice the dead slave", || {
        let started = Instant::now();
        let code = send(&mut conn, "a", 4).0;
        code == response::SLAVE_NOT_AVAILABLE && started.elapsed() < Duration::from_millis(500)
    });
}

#[test]
fn an_async_slave_catches_up_after_a_pause_and_a_restart_without_gaps_or_duplicates() {
    let mut cluster = Cluster::start("ASYNC_MASTER", "", "");
    let mut conn = cluster.master.conn();
    for i in 0..300 {
        assert_eq!(send(&mut conn, "p", i).0, response::SUCCESS);
    }
    cluster.slave.process().sigstop();
    for i in 300..1300 {
        assert_eq!(send(&mut conn, "p", i).0, response::SUCCESS);
    }
    cluster.slave.process().sigcont();
    wait_caught_up(&cluster);
    // Killed mid-stream (its unflushed tail is lost) and restarted: it resumes from what it
    // kept, while the producer goes on.
    let sender = {
        let addr = cluster.master.addr();
        std::thread::spawn(move || {
            let mut conn = Connection::connect(&addr, CALL_TIMEOUT).unwrap();
            for i in 1300..3300 {
                assert_eq!(send(&mut conn, "p", i).0, response::SUCCESS);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    cluster.slave.process().sigkill();
    cluster.slave.start(&cluster.namesrv.addr);
    sender.join().unwrap();
    wait_caught_up(&cluster);
    let on_master = all_messages(&mut conn);
    assert_eq!(on_master.len(), 3300);
    assert_eq!(all_messages(&mut cluster.slave.conn()), on_master);
}

#[test]
fn a_slave_holding_bytes_its_restarted_master_lost_cuts_them() {
    // The master flushes only every minute, so a kill -9 loses what it had sent to the slave.
    let master_extra = "flushIntervalCommitLog=60000\n";
    let mut cluster = Cluster::start("ASYNC_MASTER", master_extra, "");
    let mut conn = cluster.master.conn();
    for i in 0..50 {
        assert_eq!(send(&mut conn, "kept", i).0, response::SUCCESS);
    }
    // A graceful restart flushes: these 50 survive what follows.
    assert!(cluster.master.process().sigterm().success());
    cluster.master.start(&cluster.namesrv.addr);
    cluster.wait_connected();
    let mut conn = cluster.master.conn();
    for i in 0..100 {
        assert_eq!(send(&mut conn, "lost", i).0, response::SUCCESS);
    }
    wait_caught_up(&cluster);
    assert_eq!(all_messages(&mut cluster.slave.conn()).len(), 150);
    cluster.master.process().sigkill();
    cluster.master.start(&cluster.namesrv.addr);
    let mut conn = cluster.master.conn();
    for i in 0..30 {
        assert_eq!(send(&mut conn, "new", i).0, response::SUCCESS);
    }
    cluster.wait_connected();
    wait_caught_up(&cluster);
    let on_master = all_messages(&mut conn);
    let count = |prefix: &str| on_master.values().filter(|b| b.starts_with(prefix)).count();
    assert_eq!((count("kept-"), count("lost-"), count("new-")), (50, 0, 30));
    assert_eq!(all_messages(&mut cluster.slave.conn()), on_master);
    let log = std::fs::read_to_string(&cluster.slave.process().log).unwrap();
    assert!(
        log.contains("following the master's history") && log.contains("Truncate"),
        "the slave did not cut its log:\n{}",
        cluster.slave.log()
    );
}
