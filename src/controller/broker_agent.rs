//! A broker in controller mode (`enableControllerMode=true`): this agent, on the process's main
//! thread, asks the controllers which role the broker has and runs the broker in it.
//!
//! - Identity: the first start asks the leader for the next broker id of the group
//!   (CONTROLLER_GET_NEXT_BROKER_ID), applies for it (CONTROLLER_APPLY_BROKER_ID, with
//!   `address;time` as its register check code) and keeps it in
//!   `<storePathRootDir>/controller/brokerIdentity`; then CONTROLLER_REGISTER_BROKER.
//! - Heartbeats (BROKER_HEARTBEAT, with `controllerHeartBeatTimeoutMills`) go to every
//!   controller every sixth of the timeout, from their own thread.
//! - Every `syncBrokerMetadataPeriod`, and at once when the controller sends
//!   NOTIFY_BROKER_ROLE_CHANGED (`notifyBrokerRoleChanged`), it reads the group's master,
//!   epochs and SyncStateSet (CONTROLLER_GET_SYNC_STATE_DATA). With no master it asks to be
//!   elected (CONTROLLER_ELECT_MASTER).
//!   Elected, it runs `brokerRole`'s master role as brokerId 0 (registering so with the
//!   nameservers); otherwise it runs as a SLAVE of the master's HA port with its own id.
//! - A role change stops the broker's executors (flushing, unregistering) and starts them again
//!   in the new role inside the same process: clients see its ports close for the time of a
//!   store recovery, no process restart. The store's HA history (issue 6) cuts a returning
//!   master's unreplicated tail when it follows the new master.
//! - A master reports its SyncStateSet every `checkSyncStateSetPeriod`: itself plus the slaves
//!   whose HA link is connected and at most `haMaxTimeSlaveNotCatchup` behind
//!   (CONTROLLER_ALTER_SYNC_STATE_SET, at the master and SyncStateSet epochs it knows). A
//!   joining slave enters the master's waits before it is proposed, and is proposed only if it
//!   holds everything acknowledged; a leaving one leaves the waits only once the controller
//!   committed the smaller set (so never while the controllers are unreachable).
//!
//! Fencing a master cut off from the controllers:
//! - SYNC_MASTER with `allAckInSyncStateSet=true` is fenced by its replicas, with no lease:
//!   every SEND_OK needs every member of the SyncStateSet to hold the message, the set shrinks
//!   only through the controller, an election picks only from the set, and the elected member
//!   stops following the old master (its broker restarts as master) before it takes a write.
//!   The controller fences the candidate before it even proposes the election
//!   (RINGMQ_FENCE_REPLICA, see `node`): from then on the old master cannot acknowledge
//!   anything (it answers SLAVE_NOT_AVAILABLE), and whatever it acknowledged before is on the
//!   new master. The agent lifts a fence when it reads a newer state of the group (the
//!   election happened, or can no longer commit). With no controller quorum nothing is
//!   elected and the set cannot change, so the master keeps serving as long as its set's
//!   members follow it.
//! - Any other master (ASYNC_MASTER, or SYNC_MASTER without `allAckInSyncStateSet`, which
//!   acknowledges before every in-sync replica holds the message) keeps a lease: when the
//!   controller leader has not answered its heartbeats for half of
//!   `controllerHeartBeatTimeoutMills` it stops its broker (no more acknowledgements) before
//!   the controller can declare it dead and elect another; it runs again when the controller
//!   confirms it is still master. Losing the controller quorum therefore stops such masters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::broker::{self, BrokerHandle, BrokerOptions};
use crate::client::{ClientError, Connection};
use crate::config::{BrokerConfig, BrokerRole};
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::runtime::Shutdown;

use super::service::SyncStateSetBody;
use crate::ha::{GroupFigures, SyncState, SyncStateView};

/// What the controller said about the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupView {
    master_id: Option<u64>,
    master_addr: Option<String>,
    master_epoch: u32,
    sync_state_set: BTreeSet<u64>,
    sync_state_set_epoch: u32,
    /// Every replica of the group: controller id → broker address.
    replicas: BTreeMap<u64, String>,
}

impl GroupView {
    /// The SyncStateSet the controller committed, as the master's waits see it.
    fn committed(&self, my_id: u64) -> SyncState {
        SyncState {
            others: self.addrs_of(self.sync_state_set.iter().filter(|id| **id != my_id)),
            committed_size: self.sync_state_set.len(),
        }
    }

    fn addrs_of<'a>(&self, ids: impl Iterator<Item = &'a u64>) -> BTreeSet<String> {
        ids.filter_map(|id| self.replicas.get(id).cloned())
            .collect()
    }
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
    fn invoke(&self, addr: &str, request: RemotingCommand) -> Result<RemotingCommand, ClientError> {
        Connection::connect(addr, self.timeout).and_then(|mut c| c.invoke(request))
    }

    /// Finds the leader (asking each controller for the metadata); without one, what each
    /// controller said (or that it does not answer).
    fn find_leader(&mut self) -> Result<String, AgentError> {
        let mut heard = Vec::new();
        for addr in self.addrs.clone() {
            match self.invoke(
                &addr,
                RemotingCommand::request(req::CONTROLLER_GET_METADATA_INFO),
            ) {
                Ok(meta) if meta.ext("isLeader") == Some("true") => {
                    self.leader = Some(addr.clone());
                    return Ok(addr);
                }
                Ok(meta) if meta.code != resp::SUCCESS => heard.push(Heard::Refused {
                    addr,
                    code: meta.code,
                    remark: meta.remark.unwrap_or_default(),
                }),
                Ok(_) => heard.push(Heard::NotLeader(addr)),
                Err(error) => heard.push(Heard::Silent { addr, error }),
            }
        }
        self.leader = None;
        Err(AgentError::NoLeader {
            addrs: self.addrs.join(";"),
            heard,
        })
    }

    /// Sends `request` to the leader, finding it again when it moved.
    fn call(&mut self, request: RemotingCommand) -> Result<RemotingCommand, AgentError> {
        for _ in 0..2 {
            let leader = match self.leader.clone() {
                Some(leader) => leader,
                None => self.find_leader()?,
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
        Err(AgentError::LeaderMoved)
    }
}

fn ok(answer: RemotingCommand, what: &'static str) -> Result<RemotingCommand, AgentError> {
    if answer.code == resp::SUCCESS {
        Ok(answer)
    } else {
        Err(AgentError::Refused {
            what,
            code: answer.code,
            remark: answer.remark.unwrap_or_default(),
        })
    }
}

/// Runs a broker in controller mode until `shutdown`.
pub fn run(options: BrokerOptions, shutdown: Shutdown) -> Result<(), AgentError> {
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
            .map_err(AgentError::Thread)?
    };

    let period = Duration::from_millis(cfg.sync_broker_metadata_period_ms);
    let sss_period = Duration::from_millis(cfg.check_sync_state_set_period_ms);
    let sync_state = Arc::new(SyncStateView::default());
    // Who may fence this replica (RINGMQ_FENCE_REPLICA): the controllers' hosts, resolved
    // here, off the shards.
    let hosts: Vec<std::net::IpAddr> = controllers
        .addrs
        .iter()
        .filter_map(|a| std::net::ToSocketAddrs::to_socket_addrs(a).ok())
        .flatten()
        .map(|a| a.ip())
        .collect();
    sync_state.set_controller_hosts(hosts);
    let fenced_by_replicas =
        cfg.broker_role == BrokerRole::SyncMaster && cfg.all_ack_in_sync_state_set;
    let mut role = Role::Stopped;
    let mut running: Option<BrokerHandle> = None;
    let mut last_sss_check = Instant::now();
    let mut view = GroupView::default();
    loop {
        let notices_seen = sync_state.notices();
        match read_view(&mut controllers, &cfg.broker_name) {
            Ok(v) => {
                view = v;
                // What the controller committed (a report below may raise it before it
                // commits). Only from a fresh read: a stale view could drop a replica the
                // controller has since added.
                sync_state.set(view.committed(my_id));
                adopt(&view, my_id, &sync_state);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the group's master"),
        }
        if view.master_id.is_none() || view.master_addr.is_none() {
            match elect_me(&mut controllers, &cfg, my_id, role == Role::Stopped) {
                Ok(v) => {
                    view = v;
                    sync_state.set(view.committed(my_id));
                    adopt(&view, my_id, &sync_state);
                }
                Err(e) => tracing::debug!(error = %e, "no master and not elected"),
            }
        }
        // Fenced by its replicas, a master needs no lease (see the module's doc).
        let lease_ok = fenced_by_replicas
            || last_leader_ack
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
                sync_state.set_master_epoch(view.master_epoch);
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
        // A master on a lease checks it more often than it reads the controller.
        let wait = if role == Role::Master && !fenced_by_replicas {
            period.min(lease / 4)
        } else {
            period
        };
        if next_round(&shutdown, &sync_state, notices_seen, wait) {
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

/// What the agent keeps of a fresh read of its group: a fence the controller put on for an
/// older state is lifted, the newest master epoch known (the HA handshake's check) is raised,
/// the epoch this broker is master at (its WELCOME says it) follows the controller's, and the
/// figures runtime info shows.
fn adopt(view: &GroupView, my_id: u64, sync_state: &SyncStateView) {
    if let Some((e, s)) =
        sync_state.lift_fence_if_older_than(view.master_epoch, view.sync_state_set_epoch)
    {
        tracing::info!(
            fenced_at_master_epoch = e,
            fenced_at_sync_state_set_epoch = s,
            master_epoch = view.master_epoch,
            sync_state_set_epoch = view.sync_state_set_epoch,
            "the controller's fence is lifted (the group moved on)"
        );
    }
    sync_state.raise_known_epoch(view.master_epoch);
    if view.master_id == Some(my_id) {
        sync_state.set_master_epoch(view.master_epoch);
    }
    sync_state.set_figures(GroupFigures {
        broker_id: my_id,
        master_id: view.master_id,
        master_epoch: view.master_epoch,
        sync_state_set: view.sync_state_set.iter().copied().collect(),
        sync_state_set_epoch: view.sync_state_set_epoch,
    });
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

/// Waits `wait`, or less if `shutdown` fires (true) or a NOTIFY_BROKER_ROLE_CHANGED arrives
/// after the `seen`-th (false, at once).
fn next_round(shutdown: &Shutdown, view: &SyncStateView, seen: u64, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if shutdown.is_triggered() {
            return true;
        }
        let slice = (deadline - Instant::now()).min(Duration::from_millis(50));
        if view.wait_notice(seen, slice) {
            return false;
        }
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
) -> Result<u64, AgentError> {
    let path = identity_path(cfg);
    let (id, check_code) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let words: Vec<&str> = text.split_whitespace().collect();
            let (id, code, group) = match words.as_slice() {
                [id, code] => (*id, *code, None),
                [id, code, group] => (*id, *code, Some(*group)),
                _ => return Err(AgentError::IdentityFormat(path)),
            };
            let Ok(id) = id.parse::<u64>() else {
                return Err(AgentError::BadId {
                    path,
                    id: id.to_string(),
                });
            };
            if let Some(group) = group.filter(|g| *g != cfg.broker_name) {
                return Err(AgentError::OtherGroup {
                    path,
                    id,
                    group: group.to_string(),
                    broker_name: cfg.broker_name.clone(),
                });
            }
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
                    return Err(AgentError::Stopped);
                }
            }
        }
    }
}

enum RegisterError {
    Fatal(AgentError),
    Retry(AgentError),
}
use RegisterError::{Fatal, Retry};

/// What one controller said when no leader was found.
#[derive(Debug)]
pub enum Heard {
    Refused {
        addr: String,
        code: i32,
        remark: String,
    },
    NotLeader(String),
    Silent {
        addr: String,
        error: ClientError,
    },
}

impl std::fmt::Display for Heard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Heard::Refused { addr, code, remark } => {
                write!(f, "{addr} answered code {code}: {remark}")
            }
            Heard::NotLeader(addr) => write!(f, "{addr} is not the leader"),
            Heard::Silent { addr, error } => write!(f, "{addr} does not answer ({error})"),
        }
    }
}

/// Why the agent could not do something: it logs and retries most of these; [`run`] returns
/// the ones that stop the broker (an identity file of another group, a controller that refuses
/// this broker).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("no controller leader among controllerAddr={addrs}: {}", heard.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    NoLeader { addrs: String, heard: Vec<Heard> },
    #[error("the controller leader moved; retrying later")]
    LeaderMoved,
    #[error("{what}: code {code} {remark}")]
    Refused {
        what: &'static str,
        code: i32,
        remark: String,
    },
    #[error("cannot start the controller heartbeat thread: {0}")]
    Thread(std::io::Error),
    #[error("{}: expected \"id checkCode brokerName\"", .0.display())]
    IdentityFormat(PathBuf),
    #[error("{}: bad broker id {id:?}", path.display())]
    BadId { path: PathBuf, id: String },
    #[error(
        "this store ({}) holds replica {id} of broker group {group}, but this broker's brokerName \
         is {broker_name}: a store belongs to one group; start it with brokerName={group}, or \
         give the broker an empty storePathRootDir", path.display()
    )]
    OtherGroup {
        path: PathBuf,
        id: u64,
        group: String,
        broker_name: String,
    },
    #[error("stopped before registering")]
    Stopped,
    #[error("no nextBrokerId in the answer")]
    NoNextId,
    #[error("the controller refused broker {broker_name}: {remark}")]
    BrokerRefused { broker_name: String, remark: String },
    #[error("applying for id {id}: {remark}")]
    ApplyFailed { id: u64, remark: String },
    #[error("{}: {source}", path.display())]
    IdentityWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the controller does not know broker {broker_name} id {id} (kept in {}): {remark}", path.display())]
    UnknownBroker {
        broker_name: String,
        id: u64,
        path: PathBuf,
        remark: String,
    },
    #[error("registering: {0}")]
    RegisterFailed(String),
    #[error("the sync state data does not parse: {0}")]
    BadView(serde_json::Error),
    #[error("the controller has no metadata of {0}")]
    NoMetadata(String),
    #[error("the master address {0:?} is not host:port")]
    BadMasterAddr(String),
    #[error("cannot start the broker as {role}: {source}")]
    CannotStart {
        role: String,
        source: std::io::Error,
    },
    #[error("the runtime info does not parse: {0}")]
    BadRuntimeInfo(crate::protocol::lenient::LenientError),
}

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
                .ok_or(Retry(AgentError::NoNextId))?;
            let applied = controllers
                .call(
                    RemotingCommand::request(req::CONTROLLER_APPLY_BROKER_ID)
                        .with_ext("clusterName", cfg.broker_cluster_name.clone())
                        .with_ext("brokerName", cfg.broker_name.clone())
                        .with_ext("appliedBrokerId", id.to_string())
                        .with_ext("registerCheckCode", check_code),
                )
                .map_err(Retry)?;
            match applied.code {
                resp::SUCCESS => {}
                resp::CONTROLLER_INVALID_REQUEST => {
                    return Err(Fatal(AgentError::BrokerRefused {
                        broker_name: cfg.broker_name.clone(),
                        remark: applied.remark.unwrap_or_default(),
                    }))
                }
                _ => {
                    return Err(Retry(AgentError::ApplyFailed {
                        id,
                        remark: applied.remark.unwrap_or_default(),
                    }))
                }
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| {
                    Fatal(AgentError::IdentityWrite {
                        path: dir.to_path_buf(),
                        source,
                    })
                })?;
            }
            std::fs::write(path, format!("{id} {check_code} {}\n", cfg.broker_name)).map_err(
                |source| {
                    Fatal(AgentError::IdentityWrite {
                        path: path.to_path_buf(),
                        source,
                    })
                },
            )?;
            id
        }
    };
    let answer = controllers
        .call(
            RemotingCommand::request(req::CONTROLLER_REGISTER_BROKER)
                .with_ext("clusterName", cfg.broker_cluster_name.clone())
                .with_ext("brokerName", cfg.broker_name.clone())
                .with_ext("brokerId", id.to_string())
                .with_ext("brokerAddress", my_addr),
        )
        .map_err(Retry)?;
    match answer.code {
        resp::SUCCESS => Ok(id),
        resp::CONTROLLER_INVALID_REQUEST | resp::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED => {
            Err(Fatal(AgentError::UnknownBroker {
                broker_name: cfg.broker_name.clone(),
                id,
                path: path.to_path_buf(),
                remark: answer.remark.unwrap_or_default(),
            }))
        }
        _ => Err(Retry(AgentError::RegisterFailed(
            answer.remark.unwrap_or_default(),
        ))),
    }
}

/// The group `broker_name` in a CONTROLLER_GET_SYNC_STATE_DATA answer.
fn parse_view(body: &[u8], broker_name: &str) -> Result<GroupView, AgentError> {
    let body: serde_json::Value = serde_json::from_slice(body).map_err(AgentError::BadView)?;
    let group = &body["replicasInfoTable"][broker_name];
    if group.is_null() {
        return Err(AgentError::NoMetadata(broker_name.to_string()));
    }
    let mut view = GroupView {
        master_id: group["masterBrokerId"].as_u64(),
        master_addr: group["masterAddress"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(str::to_string),
        master_epoch: group["masterEpoch"].as_u64().unwrap_or(0) as u32,
        sync_state_set_epoch: group["syncStateSetEpoch"].as_u64().unwrap_or(0) as u32,
        ..GroupView::default()
    };
    for (list, in_sync) in [("inSyncReplicas", true), ("notInSyncReplicas", false)] {
        for r in group[list].as_array().into_iter().flatten() {
            let (Some(id), Some(addr)) = (r["brokerId"].as_u64(), r["brokerAddress"].as_str())
            else {
                continue;
            };
            view.replicas.insert(id, addr.to_string());
            if in_sync {
                view.sync_state_set.insert(id);
            }
        }
    }
    Ok(view)
}

/// The group's master, epochs, SyncStateSet and replicas, from the leader.
fn read_view(controllers: &mut Controllers, broker_name: &str) -> Result<GroupView, AgentError> {
    let answer = controllers.call(
        RemotingCommand::request(req::CONTROLLER_GET_SYNC_STATE_DATA)
            .with_body(serde_json::to_vec(&[broker_name]).expect("serializes")),
    )?;
    parse_view(&ok(answer, "sync state data")?.body, broker_name)
}

/// Asks to be elected; `not_following`: this broker runs no broker now (so follows no master
/// and needs no fence before the controller elects it; it starts none while it waits).
fn elect_me(
    controllers: &mut Controllers,
    cfg: &BrokerConfig,
    my_id: u64,
    not_following: bool,
) -> Result<GroupView, AgentError> {
    let answer = controllers.call(
        RemotingCommand::request(req::CONTROLLER_ELECT_MASTER)
            .with_ext("clusterName", cfg.broker_cluster_name.clone())
            .with_ext("brokerName", cfg.broker_name.clone())
            .with_ext("brokerId", my_id.to_string())
            .with_ext(super::service::NOT_FOLLOWING, not_following.to_string()),
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
) -> Result<BrokerHandle, AgentError> {
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
                .ok_or_else(|| AgentError::BadMasterAddr(master.clone()))?;
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
    const ATTEMPTS: u32 = 50;
    let mut attempt = 1;
    loop {
        match broker::start(options.clone(), Shutdown::new()) {
            Ok(handle) => return Ok(handle),
            Err(source) if attempt == ATTEMPTS => {
                return Err(AgentError::CannotStart {
                    role: format!("{role:?}"),
                    source,
                })
            }
            Err(_) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One slave as the master's runtime info shows it (`haSlave.<addr>`).
struct SlaveFigures {
    behind_ms: u64,
    holds_confirmed: bool,
}

/// The master's slaves, from its own GET_BROKER_RUNTIME_INFO.
fn slave_figures(
    my_addr: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, SlaveFigures>, AgentError> {
    let runtime = Connection::connect(my_addr, timeout)
        .and_then(|mut c| c.invoke(RemotingCommand::request(req::GET_BROKER_RUNTIME_INFO)))?;
    let table: crate::protocol::route::KvTable =
        crate::protocol::lenient::from_slice(&runtime.body).map_err(AgentError::BadRuntimeInfo)?;
    Ok(table
        .table
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("haSlave.")?, v)))
        .filter_map(|(addr, v)| {
            let fields: BTreeMap<&str, u64> = v
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                .collect();
            let figures = SlaveFigures {
                behind_ms: *fields.get("behindMillis")?,
                holds_confirmed: fields.get("holdsConfirmed") == Some(&1),
            };
            Some((addr.to_string(), figures))
        })
        .collect())
}

/// The master's SyncStateSet report: itself plus the slaves caught up within
/// `haMaxTimeSlaveNotCatchup`. A slave joins in two steps: the master's waits include it first,
/// then it is proposed only if it holds everything the master acknowledged before (so an
/// elected member never lacks an acknowledged message). One leaving is dropped from the waits
/// only once the controller committed the smaller set.
fn report_sync_state_set(
    controllers: &mut Controllers,
    cfg: &BrokerConfig,
    my_addr: &str,
    my_id: u64,
    view: &GroupView,
    sync_state: &SyncStateView,
) -> Result<(), AgentError> {
    let limit = cfg.ha_max_time_slave_not_catchup_ms;
    let figures = slave_figures(my_addr, controllers.timeout)?;
    let caught_up = |id: &u64| {
        view.replicas
            .get(id)
            .and_then(|addr| figures.get(addr))
            .is_some_and(|f| f.behind_ms <= limit)
    };
    let others = view.replicas.keys().filter(|id| **id != my_id);
    let keep: BTreeSet<u64> = others
        .clone()
        .filter(|id| view.sync_state_set.contains(id) && caught_up(id))
        .copied()
        .collect();
    let mut joining: BTreeSet<u64> = others
        .filter(|id| !view.sync_state_set.contains(id) && caught_up(id))
        .copied()
        .collect();
    let committed = view.committed(my_id);
    if !joining.is_empty() {
        let mut raised = committed.clone();
        raised.others.extend(view.addrs_of(joining.iter()));
        sync_state.set(raised);
        let figures = slave_figures(my_addr, controllers.timeout)?;
        joining.retain(|id| {
            view.replicas
                .get(id)
                .and_then(|addr| figures.get(addr))
                .is_some_and(|f| f.holds_confirmed)
        });
    }
    let mut wanted: BTreeSet<u64> = keep.union(&joining).copied().collect();
    wanted.insert(my_id);
    if wanted == view.sync_state_set {
        sync_state.set(committed);
        return Ok(());
    }
    let mut raised = committed.clone();
    raised.others.extend(view.addrs_of(joining.iter()));
    sync_state.set(raised);
    let body = SyncStateSetBody {
        sync_state_set: wanted.clone(),
        sync_state_set_epoch: view.sync_state_set_epoch,
    };
    let answer = controllers
        .call(
            RemotingCommand::request(req::CONTROLLER_ALTER_SYNC_STATE_SET)
                .with_ext("brokerName", cfg.broker_name.clone())
                .with_ext("masterBrokerId", my_id.to_string())
                .with_ext("masterEpoch", view.master_epoch.to_string())
                .with_body(serde_json::to_vec(&body).expect("serializes")),
        )
        .and_then(|a| ok(a, "alter SyncStateSet"));
    match answer {
        Ok(answer) => {
            sync_state.set(SyncState {
                others: view.addrs_of(wanted.iter().filter(|id| **id != my_id)),
                committed_size: wanted.len(),
            });
            if let (Some(mut figures), Some(epoch)) = (
                sync_state.figures(),
                answer
                    .ext("newSyncStateSetEpoch")
                    .and_then(|e| e.parse().ok()),
            ) {
                figures.sync_state_set = wanted.iter().copied().collect();
                figures.sync_state_set_epoch = epoch;
                sync_state.set_figures(figures);
            }
            tracing::info!(sync_state_set = ?wanted, "SyncStateSet changed");
            Ok(())
        }
        // Not known to be committed (the answer may have been lost): the waits keep the
        // joiners until the next read of the committed set.
        Err(e) => Err(e),
    }
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
