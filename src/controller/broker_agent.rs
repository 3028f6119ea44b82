//! A broker in controller mode (`enableControllerMode=true`): this agent, on the process's main
//! thread, asks the controllers which role the broker has and runs the broker in it.
//!
//! - Identity: the first start asks the leader for the next broker id of the group
//!   (CONTROLLER_GET_NEXT_BROKER_ID), applies for it (CONTROLLER_APPLY_BROKER_ID, with
//!   `address;time` as its register check code) and keeps it in
//!   `<storePathRootDir>/controller/brokerIdentity`; then CONTROLLER_REGISTER_BROKER.
//! - Heartbeats (BROKER_HEARTBEAT, with `controllerHeartBeatTimeoutMills`) go to every
//!   controller every sixth of the timeout, from their own thread.
//! - Every `syncBrokerMetadataPeriod` it reads the group's master (CONTROLLER_GET_REPLICA_INFO;
//!   NOTIFY_BROKER_ROLE_CHANGED is not listened for, so this period bounds how late a broker
//!   learns of a new master). With no master it asks to be elected (CONTROLLER_ELECT_MASTER).
//!   Elected, it runs `brokerRole`'s master role as brokerId 0 (registering so with the
//!   nameservers); otherwise it runs as a SLAVE of the master's HA port with its own id.
//! - A role change stops the broker's executors (flushing, unregistering) and starts them again
//!   in the new role inside the same process: clients see its ports close for the time of a
//!   store recovery, no process restart. The store's HA history (issue 6) cuts a returning
//!   master's unreplicated tail when it follows the new master.
//! - A master reports its SyncStateSet every `checkSyncStateSetPeriod`: itself plus the slaves
//!   whose HA link is connected and at most `haMaxTimeSlaveNotCatchup` behind
//!   (CONTROLLER_ALTER_SYNC_STATE_SET, at the master and SyncStateSet epochs it knows).
//! - Lease: a master whose heartbeats the controller leader has not answered for half of
//!   `controllerHeartBeatTimeoutMills` stops its broker (no more acknowledgements) before the
//!   controller can declare it dead and elect another; it runs again when the controller
//!   confirms it is still master.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::broker::{self, BrokerHandle, BrokerOptions};
use crate::client::Connection;
use crate::config::{BrokerConfig, BrokerRole};
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::runtime::Shutdown;

use super::service::SyncStateSetBody;
use crate::ha::SyncStateView;

/// What the controller said about the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupView {
    master_id: Option<u64>,
    master_addr: Option<String>,
    master_epoch: u32,
    sync_state_set: BTreeSet<u64>,
    sync_state_set_epoch: u32,
}

/// The role the broker runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// Not running (no master known, or a master whose lease ran out).
    Stopped,
    Master,
    /// Following the master at this remoting address.
    Slave(String),
}

struct Controllers {
    addrs: Vec<String>,
    leader: Option<String>,
    /// Bounds every call, so that the agent's loop (which enforces the lease) never waits on
    /// a controller for long.
    timeout: Duration,
}

impl Controllers {
    fn invoke(&self, addr: &str, request: RemotingCommand) -> Result<RemotingCommand, String> {
        Connection::connect(addr, self.timeout)
            .and_then(|mut c| c.invoke(request))
            .map_err(|e| e.to_string())
    }

    /// Finds the leader (asking each controller for the metadata).
    fn find_leader(&mut self) -> Option<String> {
        for addr in self.addrs.clone() {
            let Ok(meta) = self.invoke(
                &addr,
                RemotingCommand::request(req::CONTROLLER_GET_METADATA_INFO),
            ) else {
                continue;
            };
            if meta.ext("isLeader") == Some("true") {
                self.leader = Some(addr);
                return self.leader.clone();
            }
        }
        self.leader = None;
        None
    }

    /// Sends `request` to the leader, finding it again when it moved.
    fn call(&mut self, request: RemotingCommand) -> Result<RemotingCommand, String> {
        for _ in 0..2 {
            let Some(leader) = self.leader.clone().or_else(|| self.find_leader()) else {
                return Err(format!(
                    "no controller leader among {}",
                    self.addrs.join(";")
                ));
            };
            match self.invoke(&leader, request.clone()) {
                Ok(answer) if answer.code == resp::CONTROLLER_NOT_LEADER => self.leader = None,
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    self.leader = None;
                    tracing::debug!(controller = %leader, error = %e, "controller call failed");
                }
            }
        }
        Err("the controller leader moved; retrying later".to_string())
    }
}

fn ok(answer: RemotingCommand, what: &str) -> Result<RemotingCommand, String> {
    if answer.code == resp::SUCCESS {
        Ok(answer)
    } else {
        Err(format!(
            "{what}: code {} {}",
            answer.code,
            answer.remark.unwrap_or_default()
        ))
    }
}

/// Runs a broker in controller mode until `shutdown`.
pub fn run(options: BrokerOptions, shutdown: Shutdown) -> Result<(), String> {
    let cfg = options.cfg.clone();
    let addrs: Vec<String> =
        crate::config::addr_list(cfg.controller_addr.as_deref().unwrap_or_default())
            .map(str::to_string)
            .collect();
    let timeout = Duration::from_millis(cfg.controller_heartbeat_timeout_ms);
    let lease = timeout / 2;
    let mut controllers = Controllers {
        addrs,
        leader: None,
        timeout: (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(3)),
    };
    let my_addr = format!(
        "{}:{}",
        cfg.broker_ip1,
        options.port_override.unwrap_or(cfg.listen_port)
    );
    let my_id = identity(&cfg, &my_addr, &mut controllers, &shutdown)?;
    tracing::info!(broker_id = my_id, addr = %my_addr, "registered with the controller");

    let last_leader_ack = Arc::new(Mutex::new(Instant::now()));
    let stop_heartbeats = Arc::new(AtomicBool::new(false));
    let heartbeats = {
        let (addrs, cfg, my_addr) = (controllers.addrs.clone(), cfg.clone(), my_addr.clone());
        let (ack, stop) = (Arc::clone(&last_leader_ack), Arc::clone(&stop_heartbeats));
        std::thread::Builder::new()
            .name("controller-heartbeat".into())
            .spawn(move || heartbeat_loop(addrs, cfg, my_addr, my_id, timeout, ack, stop))
            .map_err(|e| e.to_string())?
    };

    let period = Duration::from_millis(cfg.sync_broker_metadata_period_ms);
    let sss_period = Duration::from_millis(cfg.check_sync_state_set_period_ms);
    let sync_state = Arc::new(SyncStateView::default());
    let mut role = Role::Stopped;
    let mut running: Option<BrokerHandle> = None;
    let mut last_sss_check = Instant::now();
    let mut view = GroupView::default();
    loop {
        match read_view(&mut controllers, &cfg.broker_name) {
            Ok(v) => view = v,
            Err(e) => tracing::debug!(error = %e, "cannot read the group's master"),
        }
        if view.master_id.is_none() || view.master_addr.is_none() {
            match elect_me(&mut controllers, &cfg, my_id) {
                Ok(v) => view = v,
                Err(e) => tracing::debug!(error = %e, "no master and not elected"),
            }
        }
        // What the controller committed (a report below may raise it before it commits).
        sync_state.set_others(
            view.sync_state_set
                .iter()
                .filter(|id| **id != my_id)
                .count(),
        );
        let lease_ok = last_leader_ack
            .lock()
            .map(|t| t.elapsed() < lease)
            .unwrap_or(false);
        let wanted = match (&view.master_id, &view.master_addr) {
            (Some(id), _) if *id == my_id && lease_ok => Role::Master,
            (Some(id), _) if *id == my_id => Role::Stopped,
            (Some(_), Some(addr)) => Role::Slave(addr.clone()),
            _ => role.clone(),
        };
        if wanted != role {
            tracing::info!(from = ?role, to = ?wanted, master_epoch = view.master_epoch, "changing role");
            if let Some(handle) = running.take() {
                handle.stop();
            }
            if wanted != Role::Stopped {
                running = Some(start_in_role(&options, &wanted, my_id, &sync_state)?);
                println!(
                    "The broker[{}, {my_addr}] boot success. role {:?}, controller mode, master epoch {}",
                    cfg.broker_name, wanted, view.master_epoch
                );
            }
            role = wanted;
        }
        if role == Role::Master && last_sss_check.elapsed() >= sss_period {
            last_sss_check = Instant::now();
            if let Err(e) =
                report_sync_state_set(&mut controllers, &cfg, &my_addr, my_id, &view, &sync_state)
            {
                tracing::debug!(error = %e, "SyncStateSet report");
            }
        }
        // A master checks its lease more often than it reads the controller.
        let wait = if role == Role::Master {
            period.min(lease / 4)
        } else {
            period
        };
        if shutdown_within(&shutdown, wait) {
            break;
        }
    }
    stop_heartbeats.store(true, Ordering::SeqCst);
    if let Some(handle) = running.take() {
        handle.stop();
    }
    let _ = heartbeats.join();
    Ok(())
}

/// Waits `wait`, or less if `shutdown` fires; true when it fired. (The agent's own loop, not a
/// request path.)
fn shutdown_within(shutdown: &Shutdown, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if shutdown.is_triggered() {
            return true;
        }
        std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(50)));
    }
    shutdown.is_triggered()
}

fn identity_path(cfg: &BrokerConfig) -> PathBuf {
    cfg.store_path_root_dir
        .join("controller")
        .join("brokerIdentity")
}

/// This broker's controller id: kept from an earlier start, or applied for now.
fn identity(
    cfg: &BrokerConfig,
    my_addr: &str,
    controllers: &mut Controllers,
    shutdown: &Shutdown,
) -> Result<u64, String> {
    let path = identity_path(cfg);
    let (id, check_code) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (id, code) = text
                .trim()
                .split_once(' ')
                .ok_or_else(|| format!("{}: expected \"id checkCode\"", path.display()))?;
            let id = id
                .parse::<u64>()
                .map_err(|_| format!("{}: bad broker id {id:?}", path.display()))?;
            (Some(id), code.to_string())
        }
        Err(_) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            (None, format!("{my_addr};{now}"))
        }
    };
    loop {
        match register(cfg, my_addr, id, &check_code, controllers, &path) {
            Ok(id) => return Ok(id),
            Err(Fatal(e)) => return Err(e),
            Err(Retry(e)) => {
                tracing::warn!(error = %e, "cannot register with the controller yet");
                if shutdown_within(shutdown, Duration::from_secs(1)) {
                    return Err("stopped before registering".to_string());
                }
            }
        }
    }
}

enum RegisterError {
    Fatal(String),
    Retry(String),
}
use RegisterError::{Fatal, Retry};

fn register(
    cfg: &BrokerConfig,
    my_addr: &str,
    known: Option<u64>,
    check_code: &str,
    controllers: &mut Controllers,
    path: &std::path::Path,
) -> Result<u64, RegisterError> {
    let id = match known {
        Some(id) => id,
        None => {
            let next = controllers
                .call(
                    RemotingCommand::request(req::CONTROLLER_GET_NEXT_BROKER_ID)
                        .with_ext("clusterName", cfg.broker_cluster_name.clone())
                        .with_ext("brokerName", cfg.broker_name.clone()),
                )
                .and_then(|a| ok(a, "next broker id"))
                .map_err(Retry)?;
            let id: u64 = next
                .ext("nextBrokerId")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Retry("no nextBrokerId in the answer".into()))?;
            let applied = controllers
                .call(
                    RemotingCommand::request(req::CONTROLLER_APPLY_BROKER_ID)
                        .with_ext("clusterName", cfg.broker_cluster_name.clone())
                        .with_ext("brokerName", cfg.broker_name.clone())
                        .with_ext("appliedBrokerId", id.to_string())
                        .with_ext("registerCheckCode", check_code.to_string()),
                )
                .map_err(Retry)?;
            match applied.code {
                resp::SUCCESS => {}
                resp::CONTROLLER_INVALID_REQUEST => {
                    return Err(Fatal(format!(
                        "the controller refused broker {}: {}",
                        cfg.broker_name,
                        applied.remark.unwrap_or_default()
                    )))
                }
                _ => {
                    return Err(Retry(format!(
                        "applying for id {id}: {}",
                        applied.remark.unwrap_or_default()
                    )))
                }
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Fatal(format!("{}: {e}", dir.display())))?;
            }
            std::fs::write(path, format!("{id} {check_code}\n"))
                .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
            id
        }
    };
    let answer = controllers
        .call(
            RemotingCommand::request(req::CONTROLLER_REGISTER_BROKER)
                .with_ext("clusterName", cfg.broker_cluster_name.clone())
                .with_ext("brokerName", cfg.broker_name.clone())
                .with_ext("brokerId", id.to_string())
                .with_ext("brokerAddress", my_addr.to_string()),
        )
        .map_err(Retry)?;
    match answer.code {
        resp::SUCCESS => Ok(id),
        resp::CONTROLLER_INVALID_REQUEST | resp::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED => {
            Err(Fatal(format!(
                "the controller does not know broker {} id {id} (kept in {}): {}",
                cfg.broker_name,
                path.display(),
                answer.remark.unwrap_or_default()
            )))
        }
        _ => Err(Retry(answer.remark.unwrap_or_default())),
    }
}

fn parse_view(answer: &RemotingCommand) -> GroupView {
    let sss: Option<SyncStateSetBody> = serde_json::from_slice(&answer.body).ok();
    GroupView {
        master_id: answer.ext("masterBrokerId").and_then(|v| v.parse().ok()),
        master_addr: answer
            .ext("masterAddress")
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        master_epoch: answer
            .ext("masterEpoch")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        sync_state_set_epoch: sss
            .as_ref()
            .map(|s| s.sync_state_set_epoch)
            .or_else(|| answer.ext("syncStateSetEpoch").and_then(|v| v.parse().ok()))
            .unwrap_or(0),
        sync_state_set: sss.map(|s| s.sync_state_set).unwrap_or_default(),
    }
}

fn read_view(controllers: &mut Controllers, broker_name: &str) -> Result<GroupView, String> {
    let answer = controllers.call(
        RemotingCommand::request(req::CONTROLLER_GET_REPLICA_INFO)
            .with_ext("brokerName", broker_name.to_string()),
    )?;
    Ok(parse_view(&ok(answer, "replica info")?))
}

fn elect_me(
    controllers: &mut Controllers,
    cfg: &BrokerConfig,
    my_id: u64,
) -> Result<GroupView, String> {
    let answer = controllers.call(
        RemotingCommand::request(req::CONTROLLER_ELECT_MASTER)
            .with_ext("clusterName", cfg.broker_cluster_name.clone())
            .with_ext("brokerName", cfg.broker_name.clone())
            .with_ext("brokerId", my_id.to_string()),
    )?;
    if answer.code == resp::CONTROLLER_MASTER_STILL_EXIST {
        return read_view(controllers, &cfg.broker_name);
    }
    ok(answer, "elect")?;
    read_view(controllers, &cfg.broker_name)
}

fn start_in_role(
    options: &BrokerOptions,
    role: &Role,
    my_id: u64,
    sync_state: &Arc<SyncStateView>,
) -> Result<BrokerHandle, String> {
    let mut cfg = options.cfg.clone();
    match role {
        Role::Master => {
            cfg.broker_id = 0;
            cfg.ha_master_address = None;
        }
        Role::Slave(master) => {
            let ha = master
                .rsplit_once(':')
                .and_then(|(host, port)| {
                    Some(format!(
                        "{host}:{}",
                        port.parse::<u16>().ok()?.checked_add(1)?
                    ))
                })
                .ok_or_else(|| format!("the master address {master:?} is not host:port"))?;
            cfg.broker_role = BrokerRole::Slave;
            cfg.broker_id = my_id;
            cfg.ha_master_address = Some(ha);
        }
        Role::Stopped => unreachable!("a stopped broker is not started"),
    }
    let options = BrokerOptions {
        cfg,
        namesrv_addrs: options.namesrv_addrs.clone(),
        port_override: options.port_override,
        shards: options.shards,
        config_file: options.config_file.clone(),
        sync_state: Some(Arc::clone(sync_state)),
    };
    // The previous incarnation's ports may take a moment to be free again.
    let mut last = String::new();
    for _ in 0..50 {
        match broker::start(options.clone(), Shutdown::new()) {
            Ok(handle) => return Ok(handle),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("cannot start the broker as {role:?}: {last}"))
}

/// The master's SyncStateSet report: itself plus the slaves caught up within
/// `haMaxTimeSlaveNotCatchup`.
fn report_sync_state_set(
    controllers: &mut Controllers,
    cfg: &BrokerConfig,
    my_addr: &str,
    my_id: u64,
    view: &GroupView,
    sync_state: &SyncStateView,
) -> Result<(), String> {
    let runtime = Connection::connect(my_addr, controllers.timeout)
        .and_then(|mut c| c.invoke(RemotingCommand::request(req::GET_BROKER_RUNTIME_INFO)))
        .map_err(|e| e.to_string())?;
    let table: crate::protocol::route::KvTable =
        crate::protocol::lenient::from_slice(&runtime.body).map_err(|e| e.to_string())?;
    let caught_up: BTreeSet<String> = table
        .table
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("haSlave.")?, v)))
        .filter(|(_, v)| {
            let fields: BTreeMap<&str, u64> = v
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                .collect();
            fields
                .get("behindMillis")
                .is_some_and(|ms| *ms <= cfg.ha_max_time_slave_not_catchup_ms)
        })
        .map(|(addr, _)| addr.to_string())
        .collect();
    let data = ok(
        controllers.call(
            RemotingCommand::request(req::CONTROLLER_GET_SYNC_STATE_DATA)
                .with_body(serde_json::to_vec(&[&cfg.broker_name]).expect("serializes")),
        )?,
        "sync state data",
    )?;
    let body: serde_json::Value = serde_json::from_slice(&data.body).map_err(|e| e.to_string())?;
    let group = &body["replicasInfoTable"][&cfg.broker_name];
    let mut wanted = BTreeSet::from([my_id]);
    for list in ["inSyncReplicas", "notInSyncReplicas"] {
        for r in group[list].as_array().into_iter().flatten() {
            let (Some(id), Some(addr)) = (r["brokerId"].as_u64(), r["brokerAddress"].as_str())
            else {
                continue;
            };
            if caught_up.contains(addr) {
                wanted.insert(id);
            }
        }
    }
    if wanted == view.sync_state_set {
        return Ok(());
    }
    // A replica joining: the master waits for it from now on, before the controller makes it
    // electable. One leaving: only once the controller committed (the next read of the view).
    let others = wanted.iter().filter(|id| **id != my_id).count();
    if others > sync_state.others() {
        sync_state.set_others(others);
    }
    let body = SyncStateSetBody {
        sync_state_set: wanted.clone(),
        sync_state_set_epoch: view.sync_state_set_epoch,
    };
    let answer = controllers.call(
        RemotingCommand::request(req::CONTROLLER_ALTER_SYNC_STATE_SET)
            .with_ext("brokerName", cfg.broker_name.clone())
            .with_ext("masterBrokerId", my_id.to_string())
            .with_ext("masterEpoch", view.master_epoch.to_string())
            .with_body(serde_json::to_vec(&body).expect("serializes")),
    )?;
    ok(answer, "alter SyncStateSet")?;
    tracing::info!(sync_state_set = ?wanted, "SyncStateSet changed");
    Ok(())
}

fn heartbeat_loop(
    addrs: Vec<String>,
    cfg: BrokerConfig,
    my_addr: String,
    my_id: u64,
    timeout: Duration,
    last_leader_ack: Arc<Mutex<Instant>>,
    stop: Arc<AtomicBool>,
) {
    // Several heartbeats per lease (half the timeout): one slow answer does not fence a master.
    let interval = (timeout / 6).max(Duration::from_millis(100));
    let mut conns: BTreeMap<String, Connection> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let round = Instant::now();
        let mut leader_answered = false;
        for addr in &addrs {
            let hb = RemotingCommand::request(req::BROKER_HEARTBEAT)
                .with_ext("clusterName", cfg.broker_cluster_name.clone())
                .with_ext("brokerName", cfg.broker_name.clone())
                .with_ext("brokerId", my_id.to_string())
                .with_ext("brokerAddr", my_addr.clone())
                .with_ext(
                    "heartbeatTimeoutMills",
                    cfg.controller_heartbeat_timeout_ms.to_string(),
                );
            if !conns.contains_key(addr) {
                match Connection::connect(addr, interval) {
                    Ok(c) => {
                        conns.insert(addr.clone(), c);
                    }
                    Err(_) => continue,
                }
            }
            let conn = conns.get_mut(addr).expect("inserted above");
            match conn.invoke(hb) {
                Ok(answer) if answer.code == resp::SUCCESS => {
                    // The leader's answer renews the lease; a follower's does not.
                    let is_leader = conn
                        .invoke(RemotingCommand::request(req::CONTROLLER_GET_METADATA_INFO))
                        .is_ok_and(|m| m.ext("isLeader") == Some("true"));
                    if is_leader {
                        leader_answered = true;
                        if let Ok(mut t) = last_leader_ack.lock() {
                            *t = round;
                        }
                    }
                }
                _ => {
                    conns.remove(addr);
                }
            }
        }
        // No leader answered (the controllers are electing one): ask again soon, so that the
        // lease is renewed as soon as there is a new leader.
        let pause = if leader_answered {
            interval
        } else {
            interval.min(Duration::from_millis(200))
        };
        let spent = round.elapsed();
        if spent < pause {
            std::thread::sleep(pause - spent);
        }
    }
}
