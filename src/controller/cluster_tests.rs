//! Controllers in one process on loopback: election, replication, leader loss, restart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::node::{Controller, ControllerOptions, Peer};
use crate::remoting::{request as req, response as resp, RemotingCommand};

/// A broker's remoting port as far as the controller's fence goes: answers every request
/// SUCCESS and counts the RINGMQ_FENCE_REPLICA requests. Its threads end with the test
/// process.
fn fake_broker() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fences = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&fences);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || loop {
                let mut prefix = [0u8; 4];
                if stream.read_exact(&mut prefix).is_err() {
                    return;
                }
                let mut frame = prefix.to_vec();
                frame.resize(4 + u32::from_be_bytes(prefix) as usize, 0);
                if stream.read_exact(&mut frame[4..]).is_err() {
                    return;
                }
                let Ok(cmd) = RemotingCommand::decode(bytes::Bytes::from(frame)) else {
                    return;
                };
                if cmd.code == req::RINGMQ_FENCE_REPLICA {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                let _ = stream.write_all(&cmd.success_to().to_frame().unwrap());
            });
        }
    });
    (addr, fences)
}

/// An address nothing listens on.
fn dead_addr() -> String {
    free_addr().to_string()
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn options(dir: &Path, peers: &[Peer], me: usize) -> ControllerOptions {
    ControllerOptions {
        group: "g".into(),
        peers: peers.to_vec(),
        self_name: peers[me].name.clone(),
        store_path: dir.join(&peers[me].name),
        elect_unclean_master: false,
        notify_broker_role_changed: false,
        scan_not_active_broker_interval: Duration::from_millis(200),
        remoting_addr: format!("remoting-{me}"),
        config_properties: Vec::new(),
    }
}

fn call(c: &Controller, request: RemotingCommand) -> RemotingCommand {
    c.handle()
        .call(request)
        .recv_timeout(Duration::from_secs(10))
        .expect("answered")
}

fn leader(controllers: &[Option<Controller>]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for (i, c) in controllers.iter().enumerate() {
            if let Some(c) = c {
                let meta = call(
                    c,
                    RemotingCommand::request(req::CONTROLLER_GET_METADATA_INFO),
                );
                if meta.ext("isLeader") == Some("true") {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn heartbeat(c: &Controller, id: u64) {
    let hb = RemotingCommand::request(req::BROKER_HEARTBEAT)
        .with_ext("clusterName", "c")
        .with_ext("brokerName", "b")
        .with_ext("brokerId", id.to_string())
        .with_ext("brokerAddr", format!("127.0.0.1:{}", 10910 + id))
        .with_ext("heartbeatTimeoutMills", "600");
    assert_eq!(call(c, hb).code, resp::SUCCESS);
}

fn register(c: &Controller, id: u64) {
    register_at(c, id, &format!("127.0.0.1:{}", 10910 + id));
}

/// Registers broker `id` of group "b" with its remoting address `addr`.
fn register_at(c: &Controller, id: u64, addr: &str) {
    let apply = RemotingCommand::request(req::CONTROLLER_APPLY_BROKER_ID)
        .with_ext("clusterName", "c")
        .with_ext("brokerName", "b")
        .with_ext("appliedBrokerId", id.to_string())
        .with_ext("registerCheckCode", format!("{addr};1"));
    let answer = call(c, apply);
    assert_eq!(answer.code, resp::SUCCESS, "{:?}", answer.remark);
}

#[test]
fn three_controllers_elect_replicate_and_survive_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<Peer> = (0..3)
        .map(|i| Peer {
            name: format!("n{i}"),
            addr: free_addr(),
        })
        .collect();
    let mut cs: Vec<Option<Controller>> = (0..3)
        .map(|i| Some(Controller::start(options(dir.path(), &peers, i)).unwrap()))
        .collect();
    let l = leader(&cs);
    let follower = (l + 1) % 3;
    // A follower refuses and names the leader (once it has heard from it).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let nl = call(
            cs[follower].as_ref().unwrap(),
            RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "b"),
        );
        assert_eq!(nl.code, resp::CONTROLLER_NOT_LEADER);
        if nl
            .remark
            .as_deref()
            .unwrap()
            .contains(&format!("n{l} at remoting-{l}"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", nl.remark);
        std::thread::sleep(Duration::from_millis(50));
    }
    let lc = cs[l].as_ref().unwrap();
    // Broker 2, elected below when 1 stops heartbeating, answers the leader's fence first.
    let (fake, fences) = fake_broker();
    for id in 1..=2 {
        match id {
            2 => register_at(lc, id, &fake),
            _ => register(lc, id),
        }
        for c in cs.iter().flatten() {
            heartbeat(c, id);
        }
    }
    let elect = RemotingCommand::request(req::CONTROLLER_ELECT_MASTER)
        .with_ext("clusterName", "c")
        .with_ext("brokerName", "b")
        .with_ext("brokerId", "1");
    let answer = call(lc, elect);
    assert_eq!(answer.code, resp::SUCCESS, "{:?}", answer.remark);
    assert_eq!(answer.ext("masterBrokerId"), Some("1"));
    assert_eq!(answer.ext("masterEpoch"), Some("1"));
    let alter = RemotingCommand::request(req::CONTROLLER_ALTER_SYNC_STATE_SET)
        .with_ext("brokerName", "b")
        .with_ext("masterBrokerId", "1")
        .with_ext("masterEpoch", "1")
        .with_body(br#"{"syncStateSet":[1,2],"syncStateSetEpoch":1}"#.to_vec());
    let answer = call(lc, alter);
    assert_eq!(answer.code, resp::SUCCESS, "{:?}", answer.remark);
    assert_eq!(answer.ext("newSyncStateSetEpoch"), Some("2"));

    // The leader goes; the others elect a new one that has the state.
    cs[l].take().unwrap().stop();
    let l2 = leader(&cs);
    assert_ne!(l2, l);
    let info = call(
        cs[l2].as_ref().unwrap(),
        RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "b"),
    );
    assert_eq!(info.code, resp::SUCCESS, "{:?}", info.remark);
    assert_eq!(info.ext("masterBrokerId"), Some("1"));
    assert_eq!(
        &info.body[..],
        br#"{"syncStateSet":[1,2],"syncStateSetEpoch":2}"#
    );

    // Broker 1 (the master) stops heartbeating, 2 keeps on: the new leader elects 2 once its
    // grace period is over.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for c in cs.iter().flatten() {
            heartbeat(c, 2);
        }
        let info = call(
            cs[l2].as_ref().unwrap(),
            RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "b"),
        );
        if info.ext("masterBrokerId") == Some("2") {
            assert_eq!(info.ext("masterEpoch"), Some("2"));
            assert!(
                fences.load(Ordering::SeqCst) >= 1,
                "elected without being fenced"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failover: {:?}",
            info.ext_fields
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The old leader restarts from its store and catches up.
    cs[l] = Some(Controller::start(options(dir.path(), &peers, l)).unwrap());
    drop(cs);
    let restarted: Vec<Option<Controller>> = (0..3)
        .map(|i| Some(Controller::start(options(dir.path(), &peers, i)).unwrap()))
        .collect();
    let l3 = leader(&restarted);
    let info = call(
        restarted[l3].as_ref().unwrap(),
        RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "b"),
    );
    assert_eq!(
        info.ext("masterBrokerId"),
        Some("2"),
        "state kept across restarts"
    );
}

/// Master 1 (at master epoch 1 and SyncStateSet epoch 1) asks for the SyncStateSet `set`
/// (a JSON list).
fn alter_from_master_1(c: &Controller, set: &str) -> RemotingCommand {
    let body = format!(r#"{{"syncStateSet":{set},"syncStateSetEpoch":1}}"#);
    let alter = RemotingCommand::request(req::CONTROLLER_ALTER_SYNC_STATE_SET)
        .with_ext("brokerName", "b")
        .with_ext("masterBrokerId", "1")
        .with_ext("masterEpoch", "1")
        .with_body(body.into_bytes());
    call(c, alter)
}

/// One controller (its own leader) with its store under `dir`.
fn single_controller(dir: &Path) -> Vec<Option<Controller>> {
    let peers = vec![Peer {
        name: "n0".into(),
        addr: free_addr(),
    }];
    let cs = vec![Some(Controller::start(options(dir, &peers, 0)).unwrap())];
    assert_eq!(leader(&cs), 0);
    cs
}

#[test]
fn a_single_controller_works_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cs = single_controller(dir.path());
    let c = cs[0].as_ref().unwrap();
    register(c, 1);
    let next = call(
        c,
        RemotingCommand::request(req::CONTROLLER_GET_NEXT_BROKER_ID)
            .with_ext("clusterName", "c")
            .with_ext("brokerName", "b"),
    );
    assert_eq!(next.ext("nextBrokerId"), Some("2"));
}

/// A candidate is elected only once it answered the leader's fence (so that the master it
/// followed can acknowledge nothing more by then): one that cannot be reached is not elected,
/// and the refusal says why; the first election of a group needs no fence.
#[test]
fn a_candidate_that_cannot_be_fenced_is_not_elected() {
    let dir = tempfile::tempdir().unwrap();
    let cs = single_controller(dir.path());
    let c = cs[0].as_ref().unwrap();
    let (fake, fences) = fake_broker();
    register_at(c, 1, &dead_addr());
    register_at(c, 2, &dead_addr());
    register_at(c, 3, &fake);
    for id in 1..=3 {
        heartbeat(c, id);
    }
    let elect = |id: u64| {
        RemotingCommand::request(req::CONTROLLER_ELECT_MASTER)
            .with_ext("clusterName", "c")
            .with_ext("brokerName", "b")
            .with_ext("brokerId", id.to_string())
            .with_ext("designateElect", "true")
    };
    // The first master: nobody to fence (1's address does not answer).
    let first = call(c, elect(1));
    assert_eq!(first.code, resp::SUCCESS, "{:?}", first.remark);
    assert_eq!(alter_from_master_1(c, "[1,2,3]").code, resp::SUCCESS);
    // 2 does not answer its fence: not elected, and the remark says why.
    for id in 1..=3 {
        heartbeat(c, id);
    }
    let refused = call(c, elect(2));
    assert_eq!(refused.code, resp::CONTROLLER_ELECT_MASTER_FAILED);
    let why = refused.remark.unwrap_or_default();
    assert!(why.contains("cannot fence candidate 2"), "{why}");
    let info = call(
        c,
        RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO).with_ext("brokerName", "b"),
    );
    assert_eq!(
        (info.ext("masterBrokerId"), info.ext("masterEpoch")),
        (Some("1"), Some("1"))
    );
    assert_eq!(fences.load(Ordering::SeqCst), 0);
    // 3 answers: fenced once, then elected.
    for id in 1..=3 {
        heartbeat(c, id);
    }
    let elected = call(c, elect(3));
    assert_eq!(elected.code, resp::SUCCESS, "{:?}", elected.remark);
    assert_eq!(
        (elected.ext("masterBrokerId"), elected.ext("masterEpoch")),
        (Some("3"), Some("2"))
    );
    assert_eq!(fences.load(Ordering::SeqCst), 1);
}

/// A broker that asks to be elected for itself and says it runs no broker (ringmqNotFollowing:
/// its agent has stopped it, so it follows no master) needs no fence; without saying so it is
/// fenced like any candidate.
#[test]
fn a_candidate_that_runs_no_broker_is_elected_without_a_fence() {
    let dir = tempfile::tempdir().unwrap();
    let cs = single_controller(dir.path());
    let c = cs[0].as_ref().unwrap();
    register_at(c, 1, &dead_addr());
    register_at(c, 2, &dead_addr());
    heartbeat(c, 1);
    heartbeat(c, 2);
    let elect = |id: u64, not_following: bool| {
        RemotingCommand::request(req::CONTROLLER_ELECT_MASTER)
            .with_ext("clusterName", "c")
            .with_ext("brokerName", "b")
            .with_ext("brokerId", id.to_string())
            .with_ext(super::service::NOT_FOLLOWING, not_following.to_string())
    };
    assert_eq!(call(c, elect(1, false)).code, resp::SUCCESS);
    assert_eq!(alter_from_master_1(c, "[1,2]").code, resp::SUCCESS);
    // 1 stops heartbeating; 2 keeps on. Asking as a running broker: fenced, and its address
    // does not answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        heartbeat(c, 2);
        let answer = call(c, elect(2, false));
        assert_ne!(answer.code, resp::SUCCESS, "elected without a fence");
        if answer
            .remark
            .as_deref()
            .is_some_and(|r| r.contains("cannot fence candidate 2"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", answer.remark);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Asking as a broker that runs none: elected.
    loop {
        heartbeat(c, 2);
        let answer = call(c, elect(2, true));
        if answer.code == resp::SUCCESS {
            assert_eq!(answer.ext("masterBrokerId"), Some("2"));
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", answer.remark);
        std::thread::sleep(Duration::from_millis(100));
    }
}
