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
    // electMaster: broker 2 is not a real broker, so it cannot be fenced (the controller
    // stops a candidate acknowledging its old master before electing it) and is not
    // elected; the refusal says why. (Switches between real brokers: the failover tests.)
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "admin",
            "electMaster",
            "-a",
            &addr,
            "-c",
            "c",
            "-b",
            "b",
            "-i",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("cannot fence candidate 2"), "{why}");
    let sss = admin(&["getSyncStateSet", "-a", &addr, "-b", "b"]);
    assert!(sss.contains("#MasterBrokerId\t1"), "{sss}");
    let config = admin(&["getControllerConfig", "-a", &addr]);
    assert!(config.contains("controllerDLegerGroup"), "{config}");
    let updated = admin(&[
        "updateControllerConfig",
        "-a",
        &addr,
        "-k",
        "scanNotActiveBrokerInterval",
        "-v",
        "1234",
    ]);
    assert!(
        updated.contains("update controller config success!"),
        "{updated}"
    );
    let config = admin(&["getControllerConfig", "-a", &addr]);
    assert!(
        config
            .lines()
            .any(|l| l.starts_with("scanNotActiveBrokerInterval") && l.ends_with("=  1234")),
        "{config}"
    );
    // A key that needs a restart is refused by name.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["admin", "updateControllerConfig", "-a", &addr])
        .args(["-k", "controllerDLegerPeers", "-v", "n0-127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("controllerDLegerPeers") && why.contains("restart"),
        "{why}"
    );
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

/// A SYNC_MASTER fenced by its replicas: every SEND_OK needs the whole SyncStateSet.
const ALL_ACK: &str = "allAckInSyncStateSet=true\n";
/// A SYNC_MASTER that waits for one slave but not for the whole set: it keeps a lease.
const LEASED: &str = "allAckInSyncStateSet=false\ninSyncReplicas=2\n";

/// The properties of an "fo" broker in controller mode at `ip:port`.
fn fo_properties(
    ip: &str,
    port: u16,
    store: &Path,
    controller: &str,
    heartbeat_ms: u64,
    extra: &str,
) -> String {
    // A broker polls its controller every 200 ms unless `extra` says otherwise.
    let period = match extra.contains("syncBrokerMetadataPeriod") {
        true => "",
        false => "syncBrokerMetadataPeriod=200\n",
    };
    format!(
        "brokerClusterName=FoCluster\nbrokerName=fo\nbrokerRole=SYNC_MASTER\nflushDiskType=SYNC_FLUSH\n\
         brokerIP1={ip}\nbrokerIP2={ip}\nlistenAddress={ip}\nlistenPort={port}\n\
         storePathRootDir={}\nmappedFileSizeCommitLog=67108864\nshardCount=1\nslaveTimeout=2000\n\
         enableControllerMode=true\ncontrollerAddr={controller}\n{period}\
         checkSyncStateSetPeriod=200\nhaMaxTimeSlaveNotCatchup=2000\ncontrollerHeartBeatTimeoutMills={heartbeat_ms}\n{extra}",
        store.display()
    )
}

/// Writes the properties of an "fo" broker in controller mode under `dir`.
fn fo_broker(
    dir: &Path,
    rng: &mut Rng,
    controller: &str,
    heartbeat_ms: u64,
    extra: &str,
) -> FoBroker {
    RestartableBroker::new(dir, rng, |port, store| {
        fo_properties("127.0.0.1", port, store, controller, heartbeat_ms, extra)
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
    let mut found = std::collections::BTreeMap::new();
    for body in history_on(addr, topic).into_iter().flatten() {
        *found.entry(body).or_default() += 1;
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

/// One nameserver with an embedded controller under `dir` (a single controller: no fault
/// tolerance for the controller itself, which the three-controller test covers); its address.
fn controller_namesrv(dir: &Path, rng: &mut Rng) -> (BrokerProcess, String) {
    let port = free_port_triple(rng);
    let ns_config = dir.join("namesrv.properties");
    write_config(
        &ns_config,
        &format!(
            "listenPort={port}\nkvConfigPath={}\nenableControllerInNamesrv=true\ncontrollerDLegerGroup=fo\n\
             controllerDLegerPeers=n0-127.0.0.1:{}\ncontrollerDLegerSelfId=n0\ncontrollerStorePath={}\n\
             scanNotActiveBrokerInterval=200\n",
            dir.join("kv.json").display(),
            port + 1,
            dir.join("controller").display()
        ),
    );
    let args = [
        OsStr::new("namesrv"),
        OsStr::new("-c"),
        ns_config.as_os_str(),
    ];
    let namesrv = BrokerProcess::spawn(&args, dir.join("namesrv.log"));
    (namesrv, format!("127.0.0.1:{port}"))
}

impl FoCluster {
    fn start() -> FoCluster {
        FoCluster::start_with(ALL_ACK)
    }

    fn start_with(extra: &str) -> FoCluster {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let mut rng = Rng::seeded();
        let (namesrv, ns) = controller_namesrv(dir.path(), &mut rng);
        let mut a = fo_broker(&dir.path().join("a"), &mut rng, &ns, 2000, extra);
        let mut b = fo_broker(&dir.path().join("b"), &mut rng, &ns, 2000, extra);
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
    // Brokers read their controller only every 10 s: b learns it was elected from the
    // controller's NOTIFY_BROKER_ROLE_CHANGED.
    let FoCluster {
        dir,
        namesrv: _namesrv,
        ns,
        mut a,
        b,
    } = FoCluster::start_with(&format!("{ALL_ACK}syncBrokerMetadataPeriod=10000\n"));

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
            other => {
                eprintln!("send {i} to {master}: {other:?}");
                false
            }
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
    assert!(
        took < Duration::from_secs(6),
        "failover took {took:?} (a notified broker takes over within a scan and the 2 s \
         heartbeat timeout, not the 10 s metadata period)"
    );
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
        || both_in_sync(&ns, &b.addr()),
    );
    // mqadmin getBrokerEpoch: both replicas hold the same epochs, numbered as the controller's
    // master epochs: a's first (1, from 0), then b's (2).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["admin", "getBrokerEpoch", "-n", &ns, "-b", "fo"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for addr in [a.addr(), b.addr()] {
        assert!(text.contains(&format!("#brokerAddr\t{addr}")), "{text}");
    }
    assert_eq!(
        text.matches("#Epoch: EpochEntry{epoch=1, startOffset=0,")
            .count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("#Epoch: EpochEntry{epoch=2,").count(),
        2,
        "{text}"
    );
    // clusterList and the dashboard's cluster page show the switch: b as BID 0 with master
    // epoch 2 and the SyncStateSet {1,2} at epoch 4 (1: a elected, 2: b joined, 3: b elected
    // alone, 4: a rejoined).
    let row_of_b = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["admin", "clusterList", "-n", &ns])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find(|l| l.contains(&b.addr()))
            .map(str::to_string)
            .unwrap_or_default()
    };
    eventually(
        "clusterList to show b's switch",
        Duration::from_secs(20),
        || {
            let row = row_of_b();
            let cells: Vec<&str> = row.split_whitespace().collect();
            cells.get(2) == Some(&"0") && cells.ends_with(&["2", "{1,2}@4"])
        },
    );
    let dashboard = crate::dashboard::TestDashboard::start(&ns);
    let mut http = crate::dashboard::Http::new(&dashboard.base);
    let cluster = http.get("/api/cluster");
    let brokers = cluster["brokers"].as_array().unwrap();
    let shown = |addr: &str| {
        brokers
            .iter()
            .find(|x| x["addr"] == addr)
            .map(|x| (x["brokerId"].clone(), x["masterEpoch"].clone()))
    };
    assert_eq!(shown(&b.addr()), Some((0.into(), "2".into())), "{cluster}");
    assert_eq!(shown(&a.addr()).map(|s| s.1), Some("2".into()), "{cluster}");
    let (status, _, page) = http.send("GET", "/", None);
    assert_eq!(status, 200);
    assert!(
        page.contains("Master epoch") && page.contains("{1,2}@4"),
        "{page}"
    );
}

/// A SYNC_MASTER without `allAckInSyncStateSet` acknowledges before its whole SyncStateSet holds
/// a message, so its replicas cannot fence it: it keeps a lease.
#[test]
fn a_leased_master_cut_off_from_the_controller_stops_acknowledging_before_another_is_elected() {
    const TOPIC: &str = "LeaseTopic";
    let mut c = FoCluster::start_with(LEASED);
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

/// Sends `{tag}-{i}` from `i = from` to `broker` every 20 ms for `lasting`, asserting that
/// each is acknowledged; returns the next `i`.
fn sends_keep_going(
    broker: &FoBroker,
    topic: &str,
    tag: &str,
    from: usize,
    lasting: Duration,
) -> usize {
    let started = Instant::now();
    let mut i = from;
    while started.elapsed() < lasting {
        assert!(
            send_ok(&broker.addr(), topic, i, &format!("{tag}-{i}")),
            "send {i} at {:?}:\n{}",
            started.elapsed(),
            broker.log()
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    i
}

/// Whether the controller at `controller` names `master` the master of "fo", with both
/// replicas in its SyncStateSet.
fn both_in_sync(controller: &str, master: &str) -> bool {
    replica_info(controller).is_some_and(|i| {
        i.ext("masterAddress") == Some(master)
            && serde_json::from_slice::<serde_json::Value>(&i.body)
                .is_ok_and(|v| v["syncStateSet"] == serde_json::json!([1, 2]))
    })
}

/// Three `ringmq controller`s (`l` leads), a nameserver, and brokers a (master) and b of group
/// "fo" (fenced by their replicas), both in the SyncStateSet. Fields drop in order: processes
/// first, the directory last.
struct TrioCluster {
    trio: Trio,
    a: FoBroker,
    b: FoBroker,
    namesrv: crate::harness::TestNamesrv,
    l: usize,
    dir: tempfile::TempDir,
}

impl TrioCluster {
    fn start(heartbeat_ms: u64) -> TrioCluster {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let mut rng = Rng::seeded();
        let trio = Trio::start(dir.path(), &mut rng);
        let controllers: Vec<String> = trio.addrs.iter().flatten().cloned().collect();
        let namesrv = crate::harness::TestNamesrv::start();
        let mut brokers = ["a", "b"].map(|name| {
            let path = dir.path().join(name);
            fo_broker(
                &path,
                &mut rng,
                &controllers.join(";"),
                heartbeat_ms,
                ALL_ACK,
            )
        });
        for broker in &mut brokers {
            broker.start(&namesrv.addr);
        }
        let [a, b] = brokers;
        let l = leader_of(&trio.addrs, Duration::from_secs(15));
        let leader = trio.addrs[l].clone().unwrap();
        eventually(
            "both replicas in the SyncStateSet",
            Duration::from_secs(20),
            || both_in_sync(&leader, &a.addr()),
        );
        TrioCluster {
            trio,
            a,
            b,
            namesrv,
            l,
            dir,
        }
    }
}

#[test]
fn killing_the_controller_leader_changes_nothing_for_brokers_and_producers() {
    const TOPIC: &str = "CtlTopic";
    // Every field bound: a `..` would drop (stop) the others at once.
    let TrioCluster {
        mut trio,
        a,
        b: _b,
        namesrv: _namesrv,
        l,
        dir: _dir,
    } = TrioCluster::start(10_000);
    for i in 0..20 {
        assert!(send_ok(&a.addr(), TOPIC, i, &format!("c-{i}")), "send {i}");
    }
    trio.procs[l].as_mut().unwrap().sigkill();
    trio.addrs[l] = None;
    // Sends go on, every one acknowledged by the same master, through the controllers' election.
    let i = sends_keep_going(&a, TOPIC, "c", 20, Duration::from_secs(8));
    let l2 = leader_of(&trio.addrs, Duration::from_secs(5));
    let info = replica_info(trio.addrs[l2].as_ref().unwrap()).unwrap();
    assert_eq!(info.ext("masterAddress"), Some(a.addr().as_str()));
    assert_eq!(info.ext("masterEpoch"), Some("1"), "no election happened");
    let found = bodies_on(&a.addr(), TOPIC);
    assert_eq!(found.len(), i, "every send is on the master");
}

/// The failover benchmark (README "Automatic failover"; `loadgen/failover-bench.sh` runs it):
/// 20 SIGKILLs of whichever replica is master, each timed from the kill to the first SEND_OK
/// on the new master (sent to it directly, as soon as it takes writes) and to the first
/// SEND_OK of a client that asks the nameserver for the route before every attempt (as a client
/// refreshing its route does); then the killed replica restarts and the round waits until it
/// is back in the SyncStateSet. Prints min/median/max of both.
/// Run: `cargo test --test it failover::failover_time_over_20_kills -- --ignored --nocapture`
/// (`FAILOVER_KILLS=n` for another count).
#[test]
#[ignore = "a benchmark: 20 kills, a few minutes"]
fn failover_time_over_20_kills() {
    const TOPIC: &str = "BenchTopic";
    let kills: usize = std::env::var("FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
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
    let (mut direct, mut routed) = (Vec::new(), Vec::new());
    for round in 0..kills {
        let old = master;
        let (old_addr, new_addr) = (replicas[old].addr(), replicas[1 - old].addr());
        replicas[old].process().sigkill();
        let killed = Instant::now();
        let (mut to_master, mut via_route) = (None, None);
        while to_master.is_none() || via_route.is_none() {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "round {round}: no new master"
            );
            if to_master.is_none() && send_ok(&new_addr, TOPIC, i, &format!("bench-{i}")) {
                to_master = Some(killed.elapsed());
                i += 1;
            }
            let routed_addr = routed_master(&ns, TOPIC).filter(|a| *a != old_addr);
            if via_route.is_none()
                && routed_addr.is_some_and(|a| send_ok(&a, TOPIC, i, &format!("bench-{i}")))
            {
                via_route = Some(killed.elapsed());
                i += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (d, r) = (to_master.unwrap(), via_route.unwrap());
        eprintln!("round {round}: kill -> first SEND_OK on the new master {d:?}, through a route refresh {r:?}");
        direct.push(d);
        routed.push(r);
        master = 1 - old;
        replicas[old].start(&ns);
        eventually(
            "the killed replica back in the SyncStateSet",
            Duration::from_secs(30),
            || both_in_sync(&ns, &new_addr),
        );
    }
    for (what, times) in [
        ("on the new master", &mut direct),
        ("through a route refresh", &mut routed),
    ] {
        times.sort();
        eprintln!(
            "failover over {} kills, kill -> first SEND_OK {what}: min {:?}, median {:?}, max {:?}",
            times.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

/// Commits `offset` for group `fo_cg` on queue `queue` of `topic` at the broker `addr` and
/// reads it back.
fn commit_and_query(addr: &str, topic: &str, queue: i32, offset: i64) -> i64 {
    let mut conn = Connection::connect(addr, TIMEOUT).unwrap();
    let committed = conn
        .invoke(
            RemotingCommand::request(req::UPDATE_CONSUMER_OFFSET)
                .with_ext("consumerGroup", "fo_cg")
                .with_ext("topic", topic)
                .with_ext("queueId", queue.to_string())
                .with_ext("commitOffset", offset.to_string()),
        )
        .unwrap();
    assert_eq!(committed.code, resp::SUCCESS, "{:?}", committed.remark);
    conn.offset_call(
        req::QUERY_CONSUMER_OFFSET,
        &[
            ("consumerGroup", "fo_cg"),
            ("topic", topic),
            ("queueId", &queue.to_string()),
        ],
    )
    .unwrap()
}

#[test]
fn losing_two_of_three_controllers_stops_elections_but_not_sends_and_consumes() {
    const TOPIC: &str = "QuorumTopic";
    let TrioCluster {
        mut trio,
        mut a,
        b,
        namesrv: _namesrv,
        l,
        dir: _dir,
    } = TrioCluster::start(2000);
    for i in 0..20 {
        assert!(send_ok(&a.addr(), TOPIC, i, &format!("q-{i}")), "send {i}");
    }
    wait_topic_on(&b.addr(), TOPIC);
    // The leader and one follower go: no quorum is left.
    for k in [l, (l + 1) % 3] {
        trio.procs[k].as_mut().unwrap().sigkill();
        trio.addrs[k] = None;
    }
    // Sends go on, every one acknowledged by the same master with its slave, well past the
    // heartbeat timeout (2 s) and what a lease would have been (1 s).
    let i = sends_keep_going(&a, TOPIC, "q", 20, Duration::from_secs(6));
    eprintln!("{i} sends acknowledged, {} after losing the quorum", i - 20);
    // Consumes go on: everything is pulled from the master, offsets commit; the slave (in the
    // SyncStateSet, so holding every acknowledged message) serves the same.
    let on_a = bodies_on(&a.addr(), TOPIC);
    assert_eq!(on_a.len(), i, "every acknowledged send is on the master");
    assert!(on_a.values().all(|n| *n == 1));
    assert_eq!(
        bodies_on(&b.addr(), TOPIC),
        on_a,
        "the slave holds the same"
    );
    assert_eq!(commit_and_query(&a.addr(), TOPIC, 0, 5), 5);
    // Elections stop: with the master killed, nobody takes its place.
    a.process().sigkill();
    let master_gone = Instant::now();
    while master_gone.elapsed() < Duration::from_secs(5) {
        assert!(
            !send_ok(&b.addr(), TOPIC, i, "never"),
            "the slave became master without a controller quorum"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Reads keep working on the slave.
    assert_eq!(bodies_on(&b.addr(), TOPIC), on_a);
}

/// A bridge in the root network namespace and one namespace per server, each with one address
/// on the bridge's subnet (10.213.S.11, .12, …; the test process reaches them all through the
/// bridge at 10.213.S.1). A partition is a pair of blackhole routes. Everything is removed on
/// drop, also when the test fails.
struct Netns {
    bridge: String,
    names: Vec<String>,
    subnet: String,
    created: Vec<Vec<String>>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// `count` namespaces, or why they cannot be made here (not root, no `ip`).
    fn new(count: usize) -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: network namespaces need root".into());
        }
        let pid = std::process::id();
        let mut net = Netns {
            bridge: format!("rfo{}br", pid % 100_000),
            names: Vec::new(),
            subnet: format!("10.213.{}", pid % 250),
            created: Vec::new(),
        };
        let (br, subnet) = (net.bridge.clone(), net.subnet.clone());
        ip(&["link", "add", &br, "type", "bridge"])?;
        net.created
            .push(vec!["link".into(), "del".into(), br.clone()]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..count {
            let name = format!("ringmq-fo-{pid}-{i}");
            let veth = format!("rfo{}v{i}", pid % 100_000);
            ip(&["netns", "add", &name])?;
            net.created
                .push(vec!["netns".into(), "del".into(), name.clone()]);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ])?;
            ip(&["link", "set", &veth, "master", &br])?;
            ip(&["link", "set", &veth, "up"])?;
            let addr = format!("{subnet}.{}/24", 11 + i);
            ip(&["-n", &name, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            net.names.push(name);
        }
        Ok(net)
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    fn ip_of(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 11 + i)
    }

    /// Cuts (or heals) the link between namespaces `i` and `j`, both ways.
    fn cut(&self, i: usize, j: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        for (from, to) in [(i, j), (j, i)] {
            let target = format!("{}/32", self.ip_of(to));
            ip(&["-n", self.name(from), "route", verb, "blackhole", &target]).unwrap();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for undo in self.created.iter().rev() {
            let args: Vec<&str> = undo.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Microseconds since the Unix epoch (what the controller's log lines carry).
fn unix_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The number after `key` in a log line (`committed_at_us=…`).
fn field_us(line: &str, key: &str) -> Option<u128> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Sends a slave's HELLO for shard 0 of a 1-shard store with 64 MiB segments, knowing master
/// epoch `known`, to the HA port (listen port + 1) of the broker at `broker`: the refusal's
/// reason, or `None` when the master would stream.
fn refused_hello(broker: &str, known: u32) -> Option<String> {
    use ringmq::ha::proto::{handshake_len, Hello, Welcome};
    use std::io::{Read, Write};
    let (host, port) = broker.rsplit_once(':').unwrap();
    let ha = format!("{host}:{}", port.parse::<u16>().unwrap() + 1);
    let mut stream = std::net::TcpStream::connect(&ha).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let hello = Hello {
        shard: 0,
        shard_count: 1,
        segment_bytes: 64 << 20,
        lineage: 0,
        offset: 0,
        epochs: Vec::new(),
        slave_addr: "test-slave:1".into(),
        master_epoch: known,
    };
    stream.write_all(&hello.encode()).unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut body = vec![0u8; handshake_len(prefix).unwrap()];
    stream.read_exact(&mut body).unwrap();
    match Welcome::decode(&body).unwrap() {
        Welcome::Refused(why) => Some(why),
        Welcome::Stream { .. } => None,
    }
}

/// Pulls every message of `topic`'s 4 queues from `addr`: per queue, the bodies in offset order.
fn history_on(addr: &str, topic: &str) -> Vec<Vec<String>> {
    let mut conn = Connection::connect(addr, TIMEOUT).unwrap();
    (0..4)
        .map(|queue| {
            let mut bodies = Vec::new();
            let mut offset = 0;
            loop {
                let pulled = conn
                    .pull("fo_cg", topic, queue, offset, 32, "*", 0)
                    .unwrap();
                if pulled.code != resp::SUCCESS || pulled.messages.is_empty() {
                    break bodies;
                }
                for m in &pulled.messages {
                    bodies.push(String::from_utf8_lossy(&m.body).into_owned());
                }
                offset = pulled.next_begin_offset;
            }
        })
        .collect()
}

/// The master (a) is cut off from the controller (embedded in the nameserver, in its own
/// network namespace) while the test's producer and the slave (b) still reach it. It keeps
/// acknowledging until the controller fences b (b acknowledges nothing more to it); only then
/// is b's election proposed and committed, so a's last SEND_OK comes before the commit (the
/// controller logs the commit's time, the test its SEND_OKs', on the same clock) and a
/// acknowledges nothing after. a, now stale, refuses a slave that knows the new master epoch
/// (the HA handshake's epoch check), and b takes the sends. After healing, a follows b, cuts
/// what it stored but never acknowledged, and both hold the same history with every
/// acknowledged message.
#[test]
fn a_master_partitioned_from_the_controllers_stops_acknowledging_once_another_is_elected() {
    const TOPIC: &str = "PartTopic";
    let net = match Netns::new(3) {
        Ok(net) => net,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the partition test cannot run under CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED a_master_partitioned_from_the_controllers…: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    // The controller (with its nameserver) in namespace 2, a in 0, b in 1.
    let ns_addr = format!("{}:9876", net.ip_of(2));
    let ns_config = dir.path().join("namesrv.properties");
    write_config(
        &ns_config,
        &format!(
            "listenPort=9876\nkvConfigPath={}\nenableControllerInNamesrv=true\ncontrollerDLegerGroup=part\n\
             controllerDLegerPeers=n0-{}:9878\ncontrollerDLegerSelfId=n0\ncontrollerStorePath={}\n\
             scanNotActiveBrokerInterval=200\n",
            dir.path().join("kv.json").display(),
            net.ip_of(2),
            dir.path().join("controller").display()
        ),
    );
    let args = [
        OsStr::new("namesrv"),
        OsStr::new("-c"),
        ns_config.as_os_str(),
    ];
    let _namesrv =
        BrokerProcess::spawn_in(Some(net.name(2)), &args, dir.path().join("namesrv.log"));
    let broker = |i: usize, tag: &str| {
        let home = dir.path().join(tag);
        std::fs::create_dir_all(&home).unwrap();
        let config = home.join("broker.properties");
        let text = fo_properties(
            &net.ip_of(i),
            10911,
            &home.join("store"),
            &ns_addr,
            2000,
            ALL_ACK,
        );
        write_config(&config, &text);
        let args = broker_args(&config, &ns_addr);
        BrokerProcess::spawn_in(Some(net.name(i)), &args, home.join("broker.log"))
    };
    let _a = broker(0, "a");
    let _b = broker(1, "b");
    let (a, b) = (
        format!("{}:10911", net.ip_of(0)),
        format!("{}:10911", net.ip_of(1)),
    );
    eventually(
        "both replicas in the SyncStateSet",
        Duration::from_secs(30),
        || both_in_sync(&ns_addr, &a),
    );
    let mut acked: Vec<String> = Vec::new();
    for i in 0..50 {
        let body = format!("p-{i}");
        assert!(send_ok(&a, TOPIC, i, &body), "send {i}");
        acked.push(body);
    }
    wait_topic_on(&b, TOPIC);

    net.cut(0, 2, true);
    let cut = Instant::now();
    // One thread sends to a back to back (a send every millisecond or so, so that a window
    // of a few milliseconds in which a acknowledges after the election would show); this one
    // sends to b every 20 ms until b acknowledged 20.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a_sender = {
        let (a, stop) = (a.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            // Each SEND_OK: when it arrived (since the cut), when its request was sent and when
            // its answer arrived (µs since the Unix epoch, the controller's clock), the body.
            let mut acks: Vec<(Duration, u128, u128, String)> = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let body = format!("pa-{n}");
                let sent_us = unix_us();
                if send_ok(&a, TOPIC, n, &body) {
                    acks.push((cut.elapsed(), sent_us, unix_us(), body));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            acks
        })
    };
    let mut b_acks: Vec<Duration> = Vec::new();
    let mut elected_at = None;
    let mut i = 50;
    while b_acks.len() < 20 {
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "no new master within 30 s of the partition"
        );
        let body = format!("p-{i}");
        i += 1;
        if send_ok(&b, TOPIC, i, &body) {
            b_acks.push(cut.elapsed());
            acked.push(body);
        }
        if elected_at.is_none()
            && replica_info(&ns_addr).is_some_and(|r| r.ext("masterAddress") == Some(b.as_str()))
        {
            elected_at = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let a_sent = a_sender.join().unwrap();
    let a_acks: Vec<Duration> = a_sent.iter().map(|s| s.0).collect();
    let last_a_us = a_sent.last().map(|s| (s.1, s.2));
    acked.extend(a_sent.into_iter().map(|s| s.3));
    let (last_a, first_b) = (a_acks.last().copied(), b_acks[0]);
    eprintln!(
        "after the cut: a acknowledged {} sends, the last at {last_a:?}; the controller named b \
         master by {elected_at:?}; b's first SEND_OK at {first_b:?}",
        a_acks.len()
    );
    assert!(
        last_a.is_none_or(|t| t < first_b),
        "the old master acknowledged after the new one did"
    );
    // The controller fenced b, and only then proposed and committed b's election: the
    // controller's log says when it had b's fence answer and when the election
    // committed. A send that reaches a after b was fenced can never be acknowledged (a needs
    // b's acknowledgement, and b sends none after its fence), so the last send a acknowledged
    // was made before the controller had b's fence answer — before the election was proposed,
    // let alone committed. Its SEND_OK may arrive a little after the fence answer (b's last
    // acknowledgement, sent before it, still travels to a, and a's answer to the client, whose
    // thread records the arrival when it is scheduled): printed, not asserted (once in 8 runs
    // it arrived 4.4 ms after the commit). With the fence disabled this test fails — no fence
    // —, and a's last SEND_OK arrived 2-32 ms after the commit in 4 of 6 such runs.
    let log = std::fs::read_to_string(dir.path().join("namesrv.log")).unwrap();
    let logged_us = |what: &str, key: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .and_then(|l| field_us(l, key))
            .unwrap_or_else(|| panic!("no {what:?} in the controller's log:\n{log}"))
    };
    // (b's election is master epoch 2, or 3 when a loaded machine first saw neither replica
    // heartbeat and recorded the master's loss.)
    let commit_us = log
        .lines()
        .find(|l| l.contains("new master elected") && l.contains(&format!("\"{b}\"")))
        .and_then(|l| field_us(l, "committed_at_us="))
        .unwrap_or_else(|| panic!("no commit of b's election in the controller's log:\n{log}"));
    let us = |t: u128| t as i128;
    if let Some((sent, arrived)) = last_a_us {
        eprintln!(
            "a's last acknowledged send: sent {} µs, its SEND_OK arrived {} µs before the commit",
            us(commit_us) - us(sent),
            us(commit_us) - us(arrived),
        );
    }
    let fenced_us = logged_us("candidate fenced", "fenced_at_us=");
    eprintln!(
        "b's fence answered {} µs before the commit",
        us(commit_us) - us(fenced_us)
    );
    assert!(fenced_us <= commit_us, "committed before the fence");
    assert!(
        last_a_us.is_none_or(|(sent, _)| sent < fenced_us),
        "the old master acknowledged a send made after its slave was fenced ({last_a_us:?} µs, \
         fence {fenced_us} µs, commit {commit_us} µs)"
    );
    // a is stale now: it refuses a slave that knows master epoch 2 (as b does), so it can never
    // make a replica of the new master cut its log.
    let why = refused_hello(&a, 2).expect("a stale master refuses a slave of a newer epoch");
    assert!(why.contains("stale"), "{why}");
    // The cut-off master acknowledges nothing more.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(2) {
        assert!(
            !send_ok(&a, TOPIC, i, &format!("p-{i}")),
            "the cut-off master acknowledged after b took over"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }

    net.cut(0, 2, false);
    eventually(
        "a to follow b and rejoin its SyncStateSet",
        Duration::from_secs(30),
        || both_in_sync(&ns_addr, &b),
    );
    let on_b = history_on(&b, TOPIC);
    eventually("a's history to match b's", Duration::from_secs(20), || {
        history_on(&a, TOPIC) == on_b
    });
    let held: std::collections::BTreeSet<&String> = on_b.iter().flatten().collect();
    let lost: Vec<&String> = acked.iter().filter(|m| !held.contains(m)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    let total: usize = on_b.iter().map(Vec::len).sum();
    assert_eq!(total, held.len(), "no message twice");
}

/// The crates.io `rocketmq-client-rust` producer and push consumer across a failover: the
/// producer retries each message until SEND_OK (its route refresh finds the new master); the
/// consumer, whose offsets the slave copied from the master before the kill, goes on from
/// them on the new master without redelivering what it had consumed.
#[test]
fn the_rust_client_producer_and_push_consumer_keep_working_across_a_failover() {
    use crate::rust_client_support::{collector, new_message, Clients, SEND_MILLIS};
    use rocketmq_client_rust::{
        DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer, SendStatus,
    };
    use std::collections::BTreeMap;
    use std::sync::mpsc;
    const TOPIC: &str = "RustFoTopic";
    const GROUP: &str = "rust-fo-cg";
    const FIRST: usize = 100;
    const TOTAL: usize = 200;
    let FoCluster {
        dir: _dir,
        namesrv: _namesrv,
        ns,
        mut a,
        b,
    } = FoCluster::start();
    // The topic exists before the consumer starts, so its first rebalance finds the route:
    // created by the first send instead, the consumer waited for its next route poll (10 s)
    // and the rebalance after it, and under load missed the 30 s it is given.
    let mut admin = Connection::connect(&a.addr(), TIMEOUT).expect("master reachable");
    crate::harness::create_topic(&mut admin, TOPIC, 4);
    drop(admin);
    let clients = Clients::new("failover", &ns, false);
    // Routes every 10 s, offsets persisted every second (the client's defaults: 30 s, 5 s;
    // its smallest allowed: 10 s, 1 s).
    let config = |instance: &str| {
        let mut config = clients.config(instance);
        config.set_poll_name_server_interval(10_000);
        config.set_persist_consumer_offset_interval(1_000);
        config
    };
    let mut producer = DefaultMQProducer::builder(clients.runtime.clone())
        .client_config(config("rust-fo-pg"))
        .name_server_addr(ns.as_str())
        .producer_group("rust-fo-pg")
        .build();
    clients.block_on(producer.start()).expect("producer starts");
    let send = |i: usize| -> bool {
        let mut msg = new_message!(TOPIC);
        msg.set_keys(format!("k-{i}").into());
        msg.set_body(Some(format!("rust-fo-{i}").into_bytes().into()));
        let sent = clients.block_on(producer.send_with_timeout(msg, SEND_MILLIS));
        matches!(sent, Ok(Some(r)) if r.send_status == SendStatus::SendOk)
    };
    let (tx, rx) = mpsc::channel();
    let consumer = DefaultMQPushConsumer::builder(clients.runtime.clone())
        .client_config(config("rust-fo-c1"))
        .name_server_addr(ns.as_str())
        .consumer_group(GROUP)
        .consume_from_where(crate::rust_client_support::CONSUME_FROM_FIRST_OFFSET.into())
        .build();
    let mut consumer = clients.start_consumer(consumer, TOPIC, "*", |c| {
        c.register_message_listener_concurrently(collector(1, tx))
    });
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    let receive_until = |want: usize, within: Duration, received: &mut BTreeMap<_, _>| {
        let deadline = Instant::now() + within;
        while received.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((_, m)) = rx.recv_timeout(left) else {
                break;
            };
            let body = m.body().map(|b| b.to_vec()).unwrap_or_default();
            *received
                .entry(String::from_utf8_lossy(&body).into_owned())
                .or_insert(0) += 1;
        }
    };
    for i in 0..FIRST {
        assert!(send(i), "send {i} before the kill");
    }
    receive_until(FIRST, Duration::from_secs(30), &mut received);
    assert_eq!(received.len(), FIRST, "consumed before the kill");
    // The group's offsets reach the master, then the slave's copy (metadata sync, 10 s).
    let committed_on = |addr: &str| -> i64 {
        let Ok(mut conn) = Connection::connect(addr, TIMEOUT) else {
            return 0;
        };
        (0..4)
            .map(|q| {
                let queue = q.to_string();
                let fields = [
                    ("consumerGroup", GROUP),
                    ("topic", TOPIC),
                    ("queueId", &queue),
                ];
                conn.offset_call(req::QUERY_CONSUMER_OFFSET, &fields)
                    .unwrap_or(0)
            })
            .sum()
    };
    eventually(
        "the slave to hold the group's offsets",
        Duration::from_secs(40),
        || committed_on(&b.addr()) == FIRST as i64,
    );

    a.process().sigkill();
    let killed = Instant::now();
    let mut first_ok = None;
    let mut attempts = 0;
    for i in FIRST..TOTAL {
        // The producer's own retries failed: send the same message again (a duplicate when an
        // earlier attempt landed).
        while !send(i) {
            attempts += 1;
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no SEND_OK within 60 s of the kill"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        first_ok.get_or_insert(killed.elapsed());
    }
    eprintln!(
        "rust client: kill -> first SEND_OK {:?} ({attempts} failed attempts)",
        first_ok.unwrap()
    );
    receive_until(TOTAL, Duration::from_secs(60), &mut received);
    let missing: Vec<usize> = (0..TOTAL)
        .filter(|i| !received.contains_key(&format!("rust-fo-{i}")))
        .collect();
    assert!(missing.is_empty(), "never consumed: {missing:?}");
    let again: Vec<&String> = received
        .iter()
        .filter(|(body, n)| **n > 1 && body[8..].parse::<usize>().is_ok_and(|i| i < FIRST))
        .map(|(body, _)| body)
        .collect();
    assert!(
        again.is_empty(),
        "consumed before the kill and delivered again: {again:?}"
    );
    eprintln!(
        "rust client: {TOTAL} consumed, {} delivered more than once",
        received.values().filter(|n| **n > 1).count()
    );
    let info = replica_info(&ns).unwrap();
    assert_eq!(info.ext("masterAddress"), Some(b.addr().as_str()));
    clients.block_on(consumer.shutdown());
    clients.block_on(producer.shutdown());
    clients.close();
}

/// `minInSyncReplicas` is honoured: a SyncStateSet of 2 (both replicas in sync) below a minimum
/// of 3 gets no SEND_OK (ringmq answers SLAVE_NOT_AVAILABLE; Java SYSTEM_ERROR).
#[test]
fn a_sync_state_set_below_min_in_sync_replicas_gets_no_send_ok() {
    let c = FoCluster::start_with(&format!("{ALL_ACK}minInSyncReplicas=3\n"));
    let sent = Connection::connect(&c.a.addr(), TIMEOUT)
        .unwrap()
        .send_message("fo_pg", &crate::ha::message("MinIsrTopic", 0, "m"));
    match sent {
        Ok(s) => assert_eq!(s.code, resp::SLAVE_NOT_AVAILABLE, "{s:?}"),
        Err(e) => panic!("{e}"),
    }
}

/// `broker -c CONFIG -n NAMESRV`.
fn broker_args<'a>(config: &'a Path, namesrv: &'a str) -> [&'a OsStr; 5] {
    [
        OsStr::new("broker"),
        OsStr::new("-c"),
        config.as_os_str(),
        OsStr::new("-n"),
        OsStr::new(namesrv),
    ]
}

/// A server process expected not to boot (or not to get far): its stderr in `log`; killed (by
/// its own PID) and reaped on drop.
struct Unbooted {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Unbooted {
    fn spawn(args: &[&OsStr], log: std::path::PathBuf) -> Unbooted {
        let stderr = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("RINGMQ_LOG_DIR", "none")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Unbooted { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status if it exits within `limit`.
    fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Unbooted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker whose `controllerAddr` does not answer says which address and keeps trying (a
/// controller may come up later) instead of starting in a role nobody gave it.
#[test]
fn a_broker_whose_controller_does_not_answer_names_it_and_keeps_trying() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let mut rng = Rng::seeded();
    let dead = format!("127.0.0.1:{}", free_port_triple(&mut rng));
    let port = free_port_triple(&mut rng);
    let config = dir.path().join("broker.properties");
    let text = fo_properties(
        "127.0.0.1",
        port,
        &dir.path().join("store"),
        &dead,
        2000,
        ALL_ACK,
    );
    write_config(&config, &text);
    let args = broker_args(&config, &dead);
    let mut broker = Unbooted::spawn(&args, dir.path().join("broker.log"));
    eventually(
        "the broker to name the controller that does not answer",
        Duration::from_secs(15),
        || {
            let log = broker.log();
            log.contains("cannot register with the controller yet")
                && log.contains(&format!("{dead} does not answer"))
        },
    );
    assert!(
        broker.exited_within(Duration::from_millis(300)).is_none(),
        "it keeps trying:\n{}",
        broker.log()
    );
    assert!(!broker.log().contains("boot success"));
}

/// A replica with another shard count than its master is refused by the master's HA handshake,
/// which names both counts in the replica's log, and never joins the SyncStateSet; a store
/// that holds a replica of group "fo" started with another brokerName is refused at start-up
/// naming both names (it would otherwise register as a new group's replica).
#[test]
fn a_replica_that_does_not_match_its_group_is_refused_naming_what_differs() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let mut rng = Rng::seeded();
    let (_namesrv, ns) = controller_namesrv(dir.path(), &mut rng);
    let mut a = fo_broker(&dir.path().join("a"), &mut rng, &ns, 2000, ALL_ACK);
    a.start(&ns);
    eventually("a to be elected", Duration::from_secs(20), || {
        replica_info(&ns).is_some_and(|i| i.ext("masterAddress") == Some(a.addr().as_str()))
    });
    let mut b = RestartableBroker::new(&dir.path().join("b"), &mut rng, |port, store| {
        fo_properties("127.0.0.1", port, store, &ns, 2000, ALL_ACK)
            .replace("shardCount=1", "shardCount=2")
    });
    b.start(&ns);
    let b_log = b.process().log.clone();
    eventually(
        "b to log the master's refusal",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&b_log)
                .unwrap_or_default()
                .contains("the master runs 1 shard(s), the slave 2: give both the same shardCount")
        },
    );
    let info = replica_info(&ns).unwrap();
    assert_eq!(
        &info.body[..],
        br#"{"syncStateSet":[1],"syncStateSetEpoch":1}"#,
        "b never joins the SyncStateSet"
    );
    // b's store holds replica 2 of "fo": started as brokerName=other, it is refused.
    b.process = None;
    let text = std::fs::read_to_string(&b.config)
        .unwrap()
        .replace("brokerName=fo", "brokerName=other");
    write_config(&b.config, &text);
    let args = broker_args(&b.config, &ns);
    let mut other = Unbooted::spawn(&args, dir.path().join("other.log"));
    let status = other
        .exited_within(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("it did not stop:\n{}", other.log()));
    assert!(!status.success());
    let log = other.log();
    assert!(
        log.contains("replica 2 of broker group fo") && log.contains("brokerName is other"),
        "{log}"
    );
}
