//! The controller of issue 13 as real processes on loopback: three `ringmq controller`s lose
//! their leader to SIGKILL and keep their state; a nameserver with an embedded controller
//! serves both protocols; a corrupted controller log is refused at start-up.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringmq::client::Connection;
use ringmq::remoting::{request as req, response as resp, RemotingCommand};

use crate::process::{free_port_triple, BrokerProcess, RestartableBroker, Rng};

const TIMEOUT: Duration = Duration::from_secs(5);

fn invoke(addr: &str, request: RemotingCommand) -> Option<RemotingCommand> {
    Connection::connect(addr, TIMEOUT)
        .ok()?
        .invoke(request)
        .ok()
}

fn must(addr: &str, request: RemotingCommand) -> RemotingCommand {
    let answer = invoke(addr, request).expect("the controller answers");
    assert_eq!(answer.code, resp::SUCCESS, "{addr}: {:?}", answer.remark);
    answer
}

/// The index of the controller that says it leads, waiting up to `within`.
fn leader_of(addrs: &[Option<String>], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for (i, addr) in addrs.iter().enumerate() {
            let Some(addr) = addr else { continue };
            let meta = invoke(
                addr,
                RemotingCommand::request(req::CONTROLLER_GET_METADATA_INFO),
            );
            if meta.is_some_and(|m| m.ext("isLeader") == Some("true")) {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no controller leader within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the config");
}

/// Registers brokers 1 and 2 of group `b` through the leader at `addr`, heartbeats them to
/// every controller, elects 1 and puts both in the SyncStateSet.
fn register_group(addr: &str, all: &[Option<String>]) {
    for id in 1..=2u64 {
        let broker = format!("127.0.0.1:{}", 30910 + id);
        must(
            addr,
            RemotingCommand::request(req::CONTROLLER_APPLY_BROKER_ID)
                .with_ext("clusterName", "c")
                .with_ext("brokerName", "b")
                .with_ext("appliedBrokerId", id.to_string())
                .with_ext("registerCheckCode", format!("{broker};1")),
        );
        for a in all.iter().flatten() {
            must(
                a,
                RemotingCommand::request(req::BROKER_HEARTBEAT)
                    .with_ext("clusterName", "c")
                    .with_ext("brokerName", "b")
                    .with_ext("brokerId", id.to_string())
                    .with_ext("brokerAddr", broker.clone()),
            );
        }
    }
    let elected = must(
        addr,
        RemotingCommand::request(req::CONTROLLER_ELECT_MASTER)
            .with_ext("clusterName", "c")
            .with_ext("brokerName", "b")
            .with_ext("brokerId", "1"),
    );
    assert_eq!(elected.ext("masterBrokerId"), Some("1"));
    let altered = must(
        addr,
        RemotingCommand::request(req::CONTROLLER_ALTER_SYNC_STATE_SET)
            .with_ext("brokerName", "b")
            .with_ext("masterBrokerId", "1")
            .with_ext("masterEpoch", "1")
            .with_body(br#"{"syncStateSet":[1,2],"syncStateSetEpoch":1}"#.to_vec()),
    );
    assert_eq!(altered.ext("newSyncStateSetEpoch"), Some("2"));
}

/// Three `ringmq controller` processes (group "it") with their stores under a directory.
struct Trio {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    procs: Vec<Option<BrokerProcess>>,
    addrs: Vec<Option<String>>,
}

impl Trio {
    fn start(dir: &Path, rng: &mut Rng) -> Trio {
        let ports: Vec<u16> = (0..3).map(|_| free_port_triple(rng)).collect();
        let mut trio = Trio {
            dir: dir.to_path_buf(),
            addrs: ports
                .iter()
                .map(|p| Some(format!("127.0.0.1:{p}")))
                .collect(),
            ports,
            procs: Vec::new(),
        };
        for i in 0..3 {
            let path = trio.config(i);
            let args = [OsStr::new("controller"), OsStr::new("-c"), path.as_os_str()];
            let log = dir.join(format!("controller-{i}.log"));
            trio.procs.push(Some(BrokerProcess::spawn(&args, log)));
        }
        trio
    }

    /// Writes controller `i`'s properties; returns the file.
    fn config(&self, i: usize) -> std::path::PathBuf {
        let peers: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("n{i}-127.0.0.1:{}", p + 1))
            .collect();
        let path = self.dir.join(format!("controller-{i}.properties"));
        write_config(
            &path,
            &format!(
                "listenPort={}\nlistenAddress=127.0.0.1\ncontrollerDLegerGroup=it\ncontrollerDLegerPeers={}\n\
                 controllerDLegerSelfId=n{i}\ncontrollerStorePath={}\nscanNotActiveBrokerInterval=500\n",
                self.ports[i],
                peers.join(";"),
                self.dir.join(format!("store-{i}")).display()
            ),
        );
        path
    }
}

#[test]
fn three_controllers_lose_their_leader_to_sigkill_and_keep_their_state() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let mut rng = Rng::seeded();
    let mut trio = Trio::start(dir.path(), &mut rng);
    let mut procs = std::mem::take(&mut trio.procs);
    let mut addrs = trio.addrs.clone();
    let config = |i: usize| trio.config(i);
    let l = leader_of(&addrs, Duration::from_secs(15));
    let leader_addr = addrs[l].clone().unwrap();
    register_group(&leader_addr, &addrs);

    // A follower refuses changes and names the leader's remoting address.
    let follower = addrs[(l + 1) % 3].clone().unwrap();
    let refused = invoke(
        &follower,
        RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "b"),
    )
    .unwrap();
    assert_eq!(refused.code, resp::CONTROLLER_NOT_LEADER);
    assert!(
        refused
            .remark
            .as_deref()
            .unwrap_or_default()
            .contains(&leader_addr),
        "{:?}",
        refused.remark
    );

    // SIGKILL the leader: a new one within a few seconds, with the state.
    let killed_at = Instant::now();
    procs[l].as_mut().unwrap().sigkill();
    procs[l] = None;
    addrs[l] = None;
    let l2 = leader_of(&addrs, Duration::from_secs(10));
    eprintln!(
        "new controller leader n{l2} after {:?}",
        killed_at.elapsed()
    );
    let info = must(
        addrs[l2].as_ref().unwrap(),
        RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "b"),
    );
    assert_eq!(info.ext("masterBrokerId"), Some("1"));
    assert_eq!(info.ext("masterEpoch"), Some("1"));
    assert_eq!(
        &info.body[..],
        br#"{"syncStateSet":[1,2],"syncStateSetEpoch":2}"#
    );
    // And it still takes changes (two of three are up).
    let next = must(
        addrs[l2].as_ref().unwrap(),
        RemotingCommand::request(req::CONTROLLER_GET_NEXT_BROKER_ID)
            .with_ext("clusterName", "c")
            .with_ext("brokerName", "b"),
    );
    assert_eq!(next.ext("nextBrokerId"), Some("3"));

    // The killed controller's log, corrupted on disk, is refused with the file and offset.
    let log = dir.path().join(format!("store-{l}")).join("raft.log");
    let mut bytes = std::fs::read(&log).unwrap();
    assert!(bytes.len() > 16, "the killed leader had written its log");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&log, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .env("RINGMQ_LOG_DIR", "none")
        .args([
            OsStr::new("controller"),
            OsStr::new("-c"),
            config(l).as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("raft.log") && stderr.contains("corrupted at offset"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "the log is left as it was"
    );
}

#[test]
fn a_nameserver_with_an_embedded_controller_serves_routes_and_controller_codes() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let mut rng = Rng::seeded();
    let port = free_port_triple(&mut rng);
    let path = dir.path().join("namesrv.properties");
    write_config(
        &path,
        &format!(
            "listenPort={port}\nkvConfigPath={}\nenableControllerInNamesrv=true\ncontrollerDLegerGroup=solo\n\
             controllerDLegerPeers=n0-127.0.0.1:{}\ncontrollerDLegerSelfId=n0\ncontrollerStorePath={}\n",
            dir.path().join("kv.json").display(),
            port + 1,
            dir.path().join("controller").display()
        ),
    );
    let args = [OsStr::new("namesrv"), OsStr::new("-c"), path.as_os_str()];
    let _namesrv = BrokerProcess::spawn(&args, dir.path().join("namesrv.log"));
    let addr = format!("127.0.0.1:{port}");
    let addrs = vec![Some(addr.clone())];
    assert_eq!(leader_of(&addrs, Duration::from_secs(10)), 0);
    register_group(&addr, &addrs);
    let data = must(
        &addr,
        RemotingCommand::request(req::CONTROLLER_GET_SYNC_STATE_DATA)
            .with_body(br#"["b"]"#.to_vec()),
    );
    let body: serde_json::Value = serde_json::from_slice(&data.body).unwrap();
    let group = &body["replicasInfoTable"]["b"];
    assert_eq!(group["masterBrokerId"], 1);
    assert_eq!(group["inSyncReplicas"].as_array().unwrap().len(), 2);
    // mqadmin's controller commands.
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .arg("admin")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let meta = admin(&["getControllerMetaData", "-a", &addr]);
    assert!(
        meta.contains("ControllerGroup\tsolo") && meta.contains("ControllerLeaderId\tn0"),
        "{meta}"
    );
    let sss = admin(&["getSyncStateSet", "-a", &addr, "-b", "b"]);
    assert!(
        sss.contains("#MasterBrokerId\t1") && sss.contains("#SyncStateSetNums\t2"),
        "{sss}"
    );
    let elected = admin(&["electMaster", "-a", &addr, "-c", "c", "-b", "b", "-i", "2"]);
    assert!(
        elected.contains("#MasterBrokerId\t2") && elected.contains("#MasterEpoch\t2"),
        "{elected}"
    );
    let config = admin(&["getControllerConfig", "-a", &addr]);
    assert!(config.contains("controllerDLegerGroup"), "{config}");
    // The nameserver's own codes still work on the same port.
    must(
        &addr,
        RemotingCommand::request(req::GET_BROKER_CLUSTER_INFO),
    );
    // Bad input: a clear refusal.
    let bad = invoke(
        &addr,
        RemotingCommand::request(req::CONTROLLER_ELECT_MASTER),
    )
    .unwrap();
    assert_eq!(bad.code, resp::CONTROLLER_INVALID_REQUEST);
    assert!(bad.remark.unwrap().contains("brokerName"));
}

/// One broker of group "fo" in controller mode.
type FoBroker = RestartableBroker;

/// Writes the properties of an "fo" broker in controller mode under `dir`.
fn fo_broker(dir: &Path, rng: &mut Rng, controller: &str, heartbeat_ms: u64) -> FoBroker {
    RestartableBroker::new(dir, rng, |port, store| {
        format!(
            "brokerClusterName=FoCluster\nbrokerName=fo\nbrokerRole=SYNC_MASTER\nflushDiskType=SYNC_FLUSH\n\
             brokerIP1=127.0.0.1\nbrokerIP2=127.0.0.1\nlistenAddress=127.0.0.1\nlistenPort={port}\n\
             storePathRootDir={}\nmappedFileSizeCommitLog=67108864\nshardCount=1\nslaveTimeout=2000\n\
             enableControllerMode=true\ncontrollerAddr={controller}\nsyncBrokerMetadataPeriod=200\n\
             checkSyncStateSetPeriod=200\nhaMaxTimeSlaveNotCatchup=2000\ncontrollerHeartBeatTimeoutMills={heartbeat_ms}\n",
            store.display()
        )
    })
}

fn replica_info(controller: &str) -> Option<RemotingCommand> {
    invoke(
        controller,
        RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "fo"),
    )
    .filter(|a| a.code == resp::SUCCESS)
}

fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The master's address in the nameserver's route of `topic` (what a client finds).
fn routed_master(namesrv: &str, topic: &str) -> Option<String> {
    let mut ns = ringmq::client::NamesrvClient::connect(namesrv, TIMEOUT).ok()?;
    let route = ns.route(topic).ok()?;
    route
        .broker_datas
        .iter()
        .find_map(|b| b.broker_addrs.get(&0).cloned())
}

/// Every message body of `topic`'s 4 queues on the broker at `addr`, with its count.
fn bodies_on(addr: &str, topic: &str) -> std::collections::BTreeMap<String, usize> {
    let mut conn = Connection::connect(addr, TIMEOUT).unwrap();
    let mut found = std::collections::BTreeMap::new();
    for queue in 0..4 {
        let mut offset = 0;
        loop {
            let pulled = conn
                .pull("fo_cg", topic, queue, offset, 32, "*", 0)
                .unwrap();
            if pulled.code != resp::SUCCESS || pulled.messages.is_empty() {
                break;
            }
            for m in &pulled.messages {
                *found
                    .entry(String::from_utf8_lossy(&m.body).into())
                    .or_default() += 1;
            }
            offset = pulled.next_begin_offset;
        }
    }
    found
}

/// Sends `body` to queue `i % 4` of `topic` on the broker at `addr`: true on SEND_OK.
fn send_ok(addr: &str, topic: &str, i: usize, body: &str) -> bool {
    Connection::connect(addr, Duration::from_secs(2))
        .and_then(|mut c| c.send_message("fo_pg", &crate::ha::message(topic, (i % 4) as i32, body)))
        .is_ok_and(|s| s.code == resp::SUCCESS)
}

fn wait_topic_on(addr: &str, topic: &str) {
    eventually(
        "the slave to sync the topic",
        Duration::from_secs(15),
        || {
            invoke(addr, RemotingCommand::request(req::GET_ALL_TOPIC_CONFIG))
                .is_some_and(|t| String::from_utf8_lossy(&t.body).contains(topic))
        },
    );
}

/// A nameserver with an embedded controller (a single controller: no fault tolerance for the
/// controller itself, which the three-controller test covers) and brokers a (master) and b
/// (its slave) of group "fo", both in the SyncStateSet.
struct FoCluster {
    dir: tempfile::TempDir,
    namesrv: BrokerProcess,
    ns: String,
    a: FoBroker,
    b: FoBroker,
}

impl FoCluster {
    fn start() -> FoCluster {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let mut rng = Rng::seeded();
        // One nameserver with an embedded controller (a single controller: no fault tolerance for
        // the controller itself, which the three-controller test covers).
        let port = free_port_triple(&mut rng);
        let ns_config = dir.path().join("namesrv.properties");
        write_config(
            &ns_config,
            &format!(
                "listenPort={port}\nkvConfigPath={}\nenableControllerInNamesrv=true\ncontrollerDLegerGroup=fo\n\
                 controllerDLegerPeers=n0-127.0.0.1:{}\ncontrollerDLegerSelfId=n0\ncontrollerStorePath={}\n\
                 scanNotActiveBrokerInterval=200\n",
                dir.path().join("kv.json").display(),
                port + 1,
                dir.path().join("controller").display()
            ),
        );
        let args = [
            OsStr::new("namesrv"),
            OsStr::new("-c"),
            ns_config.as_os_str(),
        ];
        let namesrv = BrokerProcess::spawn(&args, dir.path().join("namesrv.log"));
        let ns = format!("127.0.0.1:{port}");
        let mut a = fo_broker(&dir.path().join("a"), &mut rng, &ns, 2000);
        let mut b = fo_broker(&dir.path().join("b"), &mut rng, &ns, 2000);
        a.start(&ns);
        b.start(&ns);
        // a applied first: it is master; b follows; once b caught up both are in the SyncStateSet.
        eventually(
            "both replicas in the SyncStateSet",
            Duration::from_secs(20),
            || {
                replica_info(&ns).is_some_and(|i| {
                    i.ext("masterAddress") == Some(a.addr().as_str())
                        && &i.body[..] == br#"{"syncStateSet":[1,2],"syncStateSetEpoch":2}"#
                })
            },
        );

        FoCluster {
            dir,
            namesrv,
            ns,
            a,
            b,
        }
    }
}

#[test]
fn a_sync_master_killed_under_load_fails_over_to_its_in_sync_slave_losing_nothing() {
    use std::collections::BTreeMap;
    const TOPIC: &str = "FoTopic";
    let FoCluster {
        dir,
        namesrv: _namesrv,
        ns,
        mut a,
        b,
    } = FoCluster::start();

    // The producer: synchronous sends to the master the route names; on any failure it asks
    // the route again and resends the same message (a duplicate when the first had landed).
    let mut acked: BTreeMap<String, ()> = BTreeMap::new();
    let mut attempts = 0usize;
    let first_master = a.addr();
    let mut send_one = |i: usize, acked: &mut BTreeMap<String, ()>| -> bool {
        attempts += 1;
        let master = routed_master(&ns, TOPIC).unwrap_or_else(|| first_master.clone());
        let body = format!("fo-{i}");
        let sent = Connection::connect(&master, TIMEOUT).and_then(|mut c| {
            c.send_message("fo_pg", &crate::ha::message(TOPIC, (i % 4) as i32, &body))
        });
        match sent {
            Ok(s) if s.code == resp::SUCCESS => {
                acked.insert(body, ());
                true
            }
            _ => false,
        }
    };
    for i in 0..200 {
        assert!(send_one(i, &mut acked), "send {i} before the kill");
    }
    // b has the topic (metadata sync) before the kill, as a client expects of a slave.
    wait_topic_on(&b.addr(), TOPIC);
    a.process.as_mut().unwrap().sigkill();
    let killed = Instant::now();
    let mut first_ok_after_kill = None;
    let mut i = 200;
    while i < 400 {
        if send_one(i, &mut acked) {
            if first_ok_after_kill.is_none() {
                first_ok_after_kill = Some(killed.elapsed());
            }
            i += 1;
        } else {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no new master takes sends; controller: {:?}\nnamesrv:\n{}\nb:\n{}",
                replica_info(&ns).map(|i| i.ext_fields),
                crate::process::log_tail(&dir.path().join("namesrv.log")),
                crate::process::log_tail(&dir.path().join("b").join("broker.1.log"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let took = first_ok_after_kill.unwrap();
    eprintln!(
        "kill -> first SEND_OK on the new master: {took:?} ({attempts} attempts for 400 messages)"
    );
    assert!(took < Duration::from_secs(10), "failover took {took:?}");
    let info = replica_info(&ns).unwrap();
    assert_eq!(info.ext("masterAddress"), Some(b.addr().as_str()));
    assert_eq!(info.ext("masterEpoch"), Some("2"));

    // Every acknowledged message is on the new master.
    let found = bodies_on(&b.addr(), TOPIC);
    let lost: Vec<&String> = acked.keys().filter(|k| !found.contains_key(*k)).collect();
    let duplicates = found.values().filter(|n| **n > 1).count();
    eprintln!(
        "acknowledged {}, found {}, duplicates {duplicates}",
        acked.len(),
        found.len()
    );
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");

    // The old master returns and follows the new one.
    a.start(&ns);
    eventually(
        "the old master to rejoin as an in-sync slave",
        Duration::from_secs(20),
        || {
            replica_info(&ns).is_some_and(|i| {
                i.ext("masterAddress") == Some(b.addr().as_str())
                    && serde_json::from_slice::<serde_json::Value>(&i.body)
                        .is_ok_and(|v| v["syncStateSet"] == serde_json::json!([1, 2]))
            })
        },
    );
}

#[test]
fn a_master_cut_off_from_the_controller_stops_acknowledging_before_another_is_elected() {
    const TOPIC: &str = "LeaseTopic";
    let mut c = FoCluster::start();
    let mut acked = Vec::new();
    for i in 0..50 {
        let body = format!("l-{i}");
        assert!(send_ok(&c.a.addr(), TOPIC, i, &body), "send {i}");
        acked.push(body);
    }
    wait_topic_on(&c.b.addr(), TOPIC);
    // The controller (in the nameserver's process) freezes: the master is cut off from it.
    c.namesrv.sigstop();
    let frozen = Instant::now();
    let mut last_ack = frozen;
    let mut i = 50;
    while frozen.elapsed() < Duration::from_secs(4) {
        let body = format!("l-{i}");
        if send_ok(&c.a.addr(), TOPIC, i, &body) {
            acked.push(body);
            last_ack = Instant::now();
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its lease is half of controllerHeartBeatTimeoutMills (2 s): it stopped acknowledging
    // well before the controller could have declared it dead (2 s plus a scan).
    let acking_for = last_ack.duration_since(frozen);
    eprintln!("the cut-off master acknowledged for {acking_for:?} after the freeze");
    assert!(
        acking_for < Duration::from_millis(1900),
        "acknowledged for {acking_for:?}"
    );
    c.namesrv.sigcont();
    // Healed: whichever replica the controller keeps or elects takes sends again.
    let healed = Instant::now();
    let mut master = None;
    while master.is_none() {
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "no master after the partition healed"
        );
        let body = format!("l-{i}");
        for addr in [c.a.addr(), c.b.addr()] {
            if send_ok(&addr, TOPIC, i, &body) {
                acked.push(body.clone());
                master = Some(addr);
                break;
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let master = master.unwrap();
    let found = bodies_on(&master, TOPIC);
    let lost: Vec<&String> = acked.iter().filter(|b| !found.contains_key(*b)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
}

#[test]
fn killing_the_controller_leader_changes_nothing_for_brokers_and_producers() {
    const TOPIC: &str = "CtlTopic";
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let mut rng = Rng::seeded();
    let mut trio = Trio::start(dir.path(), &mut rng);
    let controllers: Vec<String> = trio.addrs.iter().flatten().cloned().collect();
    let namesrv = crate::harness::TestNamesrv::start();
    // The default heartbeat timeout (10 s): a lease of 5 s outlasts a controller election.
    let mut a = fo_broker(
        &dir.path().join("a"),
        &mut rng,
        &controllers.join(";"),
        10_000,
    );
    let mut b = fo_broker(
        &dir.path().join("b"),
        &mut rng,
        &controllers.join(";"),
        10_000,
    );
    a.start(&namesrv.addr);
    b.start(&namesrv.addr);
    let l = leader_of(&trio.addrs, Duration::from_secs(15));
    let leader = trio.addrs[l].clone().unwrap();
    eventually(
        "both replicas in the SyncStateSet",
        Duration::from_secs(20),
        || {
            replica_info(&leader).is_some_and(|i| {
                i.ext("masterAddress") == Some(a.addr().as_str())
                    && serde_json::from_slice::<serde_json::Value>(&i.body)
                        .is_ok_and(|v| v["syncStateSet"] == serde_json::json!([1, 2]))
            })
        },
    );
    for i in 0..20 {
        assert!(send_ok(&a.addr(), TOPIC, i, &format!("c-{i}")), "send {i}");
    }
    trio.procs[l].as_mut().unwrap().sigkill();
    trio.addrs[l] = None;
    let killed = Instant::now();
    // Sends go on, every one acknowledged by the same master, through the controllers' election.
    let mut i = 20;
    while killed.elapsed() < Duration::from_secs(8) {
        assert!(
            send_ok(&a.addr(), TOPIC, i, &format!("c-{i}")),
            "send {i} at {:?} after the kill",
            killed.elapsed()
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let l2 = leader_of(&trio.addrs, Duration::from_secs(5));
    let info = replica_info(trio.addrs[l2].as_ref().unwrap()).unwrap();
    assert_eq!(info.ext("masterAddress"), Some(a.addr().as_str()));
    assert_eq!(info.ext("masterEpoch"), Some("1"), "no election happened");
    let found = bodies_on(&a.addr(), TOPIC);
    assert_eq!(found.len(), i, "every send is on the master");
}

/// The failover benchmark (README "Automatic failover"): 20 SIGKILLs of whichever replica is
/// master, each measuring kill → first SEND_OK on the new master (sending to the master the
/// nameserver's route names, as a client that refreshes its route does), then restarting the
/// killed replica and waiting until it is back in the SyncStateSet. Prints min/median/max.
/// Run: `cargo test --test it failover::failover_time_over_20_kills -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: 20 kills, a few minutes"]
fn failover_time_over_20_kills() {
    const TOPIC: &str = "BenchTopic";
    let FoCluster {
        dir: _dir,
        namesrv: _namesrv,
        ns,
        a,
        b,
    } = FoCluster::start();
    let mut replicas = [a, b];
    let mut master = 0;
    let mut i = 0;
    for _ in 0..20 {
        assert!(send_ok(
            &replicas[master].addr(),
            TOPIC,
            i,
            &format!("bench-{i}")
        ));
        i += 1;
        wait_topic_on(&replicas[1 - master].addr(), TOPIC);
    }
    let mut times = Vec::new();
    for round in 0..20 {
        let old = master;
        replicas[old].process.as_mut().unwrap().sigkill();
        let killed = Instant::now();
        loop {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "round {round}: no new master"
            );
            let routed = routed_master(&ns, TOPIC);
            if let Some(addr) = routed.filter(|a| *a != replicas[old].addr()) {
                if send_ok(&addr, TOPIC, i, &format!("bench-{i}")) {
                    i += 1;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = killed.elapsed();
        eprintln!("round {round}: kill -> first SEND_OK through a route refresh: {took:?}");
        times.push(took);
        master = 1 - old;
        replicas[old].start(&ns);
        eventually(
            "the killed replica back in the SyncStateSet",
            Duration::from_secs(30),
            || {
                replica_info(&ns).is_some_and(|info| {
                    serde_json::from_slice::<serde_json::Value>(&info.body)
                        .is_ok_and(|v| v["syncStateSet"].as_array().is_some_and(|s| s.len() == 2))
                })
            },
        );
    }
    times.sort();
    eprintln!(
        "failover over {} kills: min {:?}, median {:?}, max {:?}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
