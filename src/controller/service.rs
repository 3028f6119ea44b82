//! The controller's request codes (RocketMQ 5's `ControllerRequestProcessor`), run on the
//! Raft thread: header fields and bodies as Java's 5.x broker and mqadmin send them.
//!
//! Reads and changes go to the leader; a follower answers CONTROLLER_NOT_LEADER naming the
//! leader. Heartbeats and CONTROLLER_GET_METADATA_INFO are answered by every controller (brokers
//! heartbeat them all, so a new leader knows who is alive). Reads are served from the leader's
//! applied state without a Raft round (a leader that was just deposed may answer one stale
//! read; every change is checked against the epochs when applied, so no stale read can make a
//! wrong change).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::liveness::LiveInfo;
use super::node::Node;
use super::state::{
    Applied, CandidateInfo, Command, ElectPlan, ElectRequest, MasterView, Refused, ReplicasInfo,
};
use crate::remoting::{request as req, response as resp, RemotingCommand};

/// A broker's heartbeat timeout when its heartbeat does not say (Java's
/// `controllerHeartBeatTimeoutMills`).
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

type Answer = Option<RemotingCommand>;

/// ringmq's own field of CONTROLLER_ELECT_MASTER: `true` when the broker asking for itself
/// runs no broker (so follows no master and needs no fence before it is elected).
pub const NOT_FOLLOWING: &str = "ringmqNotFollowing";

/// The SyncStateSet body (`SyncStateSet.java`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStateSetBody {
    pub sync_state_set: BTreeSet<u64>,
    pub sync_state_set_epoch: u32,
}

/// Answers `request`, or returns `None` when the answer goes out later on `reply`.
pub(super) fn handle(
    node: &mut Node,
    request: RemotingCommand,
    reply: &flume::Sender<RemotingCommand>,
) -> Answer {
    let now = Instant::now();
    match request.code {
        req::BROKER_HEARTBEAT => Some(heartbeat(node, &request, now)),
        req::CONTROLLER_GET_METADATA_INFO => Some(metadata(node, &request)),
        req::GET_CONTROLLER_CONFIG => {
            let text: String = node
                .options
                .config_properties
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect();
            Some(request.success_to().with_body(text.into_bytes()))
        }
        req::UPDATE_CONTROLLER_CONFIG => Some(update_config(node, &request)),
        _ if !node.is_leader() => Some(not_leader(node, &request)),
        req::CONTROLLER_GET_NEXT_BROKER_ID => Some(match field(&request, "brokerName") {
            Ok(name) => {
                let next = node.state.next_broker_id(name);
                request
                    .success_to()
                    .with_ext("nextBrokerId", next.to_string())
            }
            Err(e) => e,
        }),
        req::CONTROLLER_APPLY_BROKER_ID => apply_broker_id(node, request, reply),
        req::CONTROLLER_REGISTER_BROKER => register(node, request, reply, now),
        req::CONTROLLER_ELECT_MASTER => elect(node, request, reply, now),
        req::CONTROLLER_ALTER_SYNC_STATE_SET => alter(node, request, reply, now),
        req::CONTROLLER_GET_REPLICA_INFO => Some(replica_info(node, &request)),
        req::CONTROLLER_GET_SYNC_STATE_DATA => Some(sync_state_data(node, &request, now)),
        req::CLEAN_BROKER_DATA => clean(node, request, reply, now),
        code => Some(request.error_to(
            resp::REQUEST_CODE_NOT_SUPPORTED,
            format!(" request type {code} not supported by the controller"),
        )),
    }
}

/// A setting a running controller changes.
enum LiveSetting {
    ElectUnclean(bool),
    NotifyRoleChanged(bool),
    ScanInterval(u64),
}

/// UPDATE_CONTROLLER_CONFIG (mqadmin updateControllerConfig): `key=value` lines in the body.
/// `enableElectUncleanMaster`, `notifyBrokerRoleChanged` and `scanNotActiveBrokerInterval`
/// apply at once on this controller (all or none of the lines); its other keys need a
/// restart and are refused by name. The properties file is not rewritten: a restart goes back
/// to it (the success remark says so).
fn update_config(node: &mut Node, request: &RemotingCommand) -> RemotingCommand {
    use crate::config::units::{parse_bool, parse_u64, DAY_MS};
    let text = String::from_utf8_lossy(&request.body);
    let mut changes = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) else {
            return request.error_to(resp::SYSTEM_ERROR, format!("{line:?} is not key=value"));
        };
        let change = match key {
            "enableElectUncleanMaster" => parse_bool(value).map(LiveSetting::ElectUnclean),
            "notifyBrokerRoleChanged" => parse_bool(value).map(LiveSetting::NotifyRoleChanged),
            "scanNotActiveBrokerInterval" => parse_u64(value).and_then(|ms| match ms {
                100..=DAY_MS => Ok(LiveSetting::ScanInterval(ms)),
                _ => Err("must be 100..=86400000 (ms)".to_string()),
            }),
            _ if node.options.config_properties.iter().any(|(k, _)| k == key) => Err(
                "cannot change while the controller runs; edit its properties and restart it"
                    .to_string(),
            ),
            _ => Err("is not a key of ringmq's controller".to_string()),
        };
        match change {
            Ok(c) => changes.push((key.to_string(), value.to_string(), c)),
            Err(reason) => {
                return request.error_to(resp::SYSTEM_ERROR, format!("{key}={value}: {reason}"))
            }
        }
    }
    if changes.is_empty() {
        return request.error_to(resp::SYSTEM_ERROR, "no key=value line in the body");
    }
    // The Raft thread reads its options from here (a shared copy, if any, keeps the old ones).
    let options = std::sync::Arc::make_mut(&mut node.options);
    for (key, value, change) in changes {
        match change {
            LiveSetting::ElectUnclean(on) => options.elect_unclean_master = on,
            LiveSetting::NotifyRoleChanged(on) => options.notify_broker_role_changed = on,
            LiveSetting::ScanInterval(ms) => {
                options.scan_not_active_broker_interval = Duration::from_millis(ms)
            }
        }
        if let Some(entry) = options
            .config_properties
            .iter_mut()
            .find(|(k, _)| *k == key)
        {
            entry.1 = value.clone();
        }
        tracing::info!(%key, %value, "controller setting changed at runtime");
    }
    let mut answer = request.success_to();
    answer.remark = Some(
        "applied until this controller restarts (its properties file is not rewritten)".into(),
    );
    answer
}

fn field<'a>(request: &'a RemotingCommand, name: &str) -> Result<&'a str, RemotingCommand> {
    match request.ext(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(request.error_to(
            resp::CONTROLLER_INVALID_REQUEST,
            format!("the header lacks {name}"),
        )),
    }
}

fn number<T: std::str::FromStr>(
    request: &RemotingCommand,
    name: &str,
) -> Result<Option<T>, RemotingCommand> {
    match request.ext(name) {
        None | Some("") | Some("null") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            request.error_to(
                resp::CONTROLLER_INVALID_REQUEST,
                format!("{name}={v:?} is not a number"),
            )
        }),
    }
}

fn required<T: std::str::FromStr>(
    request: &RemotingCommand,
    name: &str,
) -> Result<T, RemotingCommand> {
    number(request, name)?.ok_or_else(|| {
        request.error_to(
            resp::CONTROLLER_INVALID_REQUEST,
            format!("the header lacks {name}"),
        )
    })
}

fn not_leader(node: &Node, request: &RemotingCommand) -> RemotingCommand {
    let leader = node.leader_id();
    let remark = match (leader, node.remoting_addr_of(leader)) {
        (0, _) => "this controller is not the leader and no leader is elected now".to_string(),
        (id, Some(addr)) => format!(
            "this controller is not the leader; the leader is {} at {addr}",
            peer_name(node, id)
        ),
        (id, None) => format!(
            "this controller is not the leader; the leader is {}",
            peer_name(node, id)
        ),
    };
    request.error_to(resp::CONTROLLER_NOT_LEADER, remark)
}

fn peer_name(node: &Node, id: u64) -> String {
    node.options
        .peers
        .get(id.wrapping_sub(1) as usize)
        .map_or_else(|| format!("#{id}"), |p| p.name.clone())
}

fn metadata(node: &Node, request: &RemotingCommand) -> RemotingCommand {
    let leader = node.leader_id();
    let peers: Vec<String> = node
        .options
        .peers
        .iter()
        .map(|p| format!("{}-{}", p.name, p.addr))
        .collect();
    let mut answer = request
        .success_to()
        .with_ext("group", node.options.group.clone())
        .with_ext("isLeader", node.is_leader().to_string())
        .with_ext("peers", peers.join(";"));
    if leader != 0 {
        answer = answer.with_ext("controllerLeaderId", peer_name(node, leader));
        if let Some(addr) = node.remoting_addr_of(leader) {
            answer = answer.with_ext("controllerLeaderAddress", addr);
        }
    }
    answer
}

fn heartbeat(node: &mut Node, request: &RemotingCommand, now: Instant) -> RemotingCommand {
    let parsed = (|| {
        let name = field(request, "brokerName")?.to_string();
        let id: u64 = required(request, "brokerId")?;
        let timeout: Option<u64> = number(request, "heartbeatTimeoutMills")?;
        Ok::<_, RemotingCommand>((
            name,
            id,
            LiveInfo {
                cluster_name: request.ext("clusterName").unwrap_or_default().to_string(),
                address: request.ext("brokerAddr").unwrap_or_default().to_string(),
                last_seen: now,
                timeout: timeout.map_or(DEFAULT_HEARTBEAT_TIMEOUT, Duration::from_millis),
                candidate: CandidateInfo {
                    epoch: number(request, "epoch")?.unwrap_or(0),
                    max_offset: number(request, "maxOffset")?.unwrap_or(0),
                    election_priority: number(request, "electionPriority")?.unwrap_or(0),
                },
                confirm_offset: number(request, "confirmOffset")?.unwrap_or(0),
            },
        ))
    })();
    match parsed {
        Ok((name, id, info)) => {
            node.liveness.heartbeat(&name, id, info);
            request.success_to()
        }
        Err(e) => e,
    }
}

fn master_fields(answer: RemotingCommand, view: &MasterView) -> RemotingCommand {
    let mut answer = answer
        .with_ext("masterEpoch", view.master_epoch.to_string())
        .with_ext("syncStateSetEpoch", view.sync_state_set_epoch.to_string());
    if let Some(id) = view.master {
        answer = answer.with_ext("masterBrokerId", id.to_string());
    }
    if let Some(addr) = &view.address {
        answer = answer.with_ext("masterAddress", addr.clone());
    }
    answer
}

fn apply_broker_id(
    node: &mut Node,
    request: RemotingCommand,
    reply: &flume::Sender<RemotingCommand>,
) -> Answer {
    let parsed = (|| {
        let check_code = field(&request, "registerCheckCode")?.to_string();
        Ok::<_, RemotingCommand>(Command::ApplyBrokerId {
            cluster_name: field(&request, "clusterName")?.to_string(),
            broker_name: field(&request, "brokerName")?.to_string(),
            broker_id: required(&request, "appliedBrokerId")?,
            address: check_code.split(';').next().unwrap_or_default().to_string(),
            register_check_code: check_code,
        })
    })();
    let command = match parsed {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    if let Err(r) = node.state.check_apply_broker_id(&command) {
        return Some(request.error_to(r.code, r.remark));
    }
    let echo = request.clone();
    let respond = Box::new(
        move |_: &ReplicasInfo, result: Result<Applied, Refused>| match result {
            Ok(_) => {
                let (cluster, name) = (request.ext("clusterName"), request.ext("brokerName"));
                let (cluster, name) = (
                    cluster.unwrap_or_default().to_string(),
                    name.unwrap_or_default().to_string(),
                );
                request
                    .success_to()
                    .with_ext("clusterName", cluster)
                    .with_ext("brokerName", name)
            }
            Err(r) => request.error_to(r.code, r.remark),
        },
    );
    node.propose(&command, echo, Some(reply.clone()), respond)
}

fn register(
    node: &mut Node,
    request: RemotingCommand,
    reply: &flume::Sender<RemotingCommand>,
    now: Instant,
) -> Answer {
    let parsed = (|| {
        Ok::<_, RemotingCommand>((
            field(&request, "brokerName")?.to_string(),
            required::<u64>(&request, "brokerId")?,
            field(&request, "brokerAddress")?.to_string(),
        ))
    })();
    let (name, id, address) = match parsed {
        Ok(p) => p,
        Err(e) => return Some(e),
    };
    let Some(group) = node.state.group(&name) else {
        return Some(request.error_to(
            resp::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
            format!("broker group {name} has not been registered (apply for a broker id first)"),
        ));
    };
    let Some(replica) = group.replicas.get(&id) else {
        return Some(request.error_to(
            resp::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
            format!("broker id {id} of {name} has not been registered"),
        ));
    };
    if let Some(cluster) = request.ext("clusterName") {
        if !cluster.is_empty() && cluster != group.cluster_name {
            return Some(request.error_to(
                resp::CONTROLLER_INVALID_REQUEST,
                format!(
                    "broker group {name} belongs to cluster {}, not {cluster}",
                    group.cluster_name
                ),
            ));
        }
    }
    let address_changed = replica.address != address;
    let master_alive = group
        .master
        .is_some_and(|m| node.liveness.is_alive(&name, m, now));
    let build = move |state: &ReplicasInfo, request: &RemotingCommand| {
        let mut answer = request.success_to();
        if let Some(view) = state.master_view(&name).filter(|_| master_alive) {
            answer = master_fields(answer, &view);
        }
        answer
    };
    if !address_changed {
        return Some(build(&node.state, &request));
    }
    let command = Command::UpdateBrokerAddress {
        broker_name: group.broker_name.clone(),
        broker_id: id,
        address,
    };
    let echo = request.clone();
    let respond = Box::new(
        move |state: &ReplicasInfo, result: Result<Applied, Refused>| match result {
            Ok(_) => build(state, &request),
            Err(r) => request.error_to(r.code, r.remark),
        },
    );
    node.propose(&command, echo, Some(reply.clone()), respond)
}

fn plan_elect(node: &Node, request: &ElectRequest, now: Instant) -> Result<ElectPlan, Refused> {
    let name = request.broker_name.clone();
    let liveness = &node.liveness;
    node.state.plan_elect(
        request,
        node.options.elect_unclean_master,
        &|id| liveness.is_alive(&name, id, now),
        &|id| liveness.info(&name, id).map(|i| i.candidate),
    )
}

fn member_group_body(state: &ReplicasInfo, name: &str) -> Vec<u8> {
    let Some(group) = state.group(name) else {
        return Vec::new();
    };
    let addrs: serde_json::Map<String, serde_json::Value> = group
        .replicas
        .iter()
        .map(|(id, r)| (id.to_string(), json!(r.address)))
        .collect();
    serde_json::to_vec(
        &json!({"cluster": group.cluster_name, "brokerName": name, "brokerAddrs": addrs}),
    )
    .expect("serializes")
}

fn elect(
    node: &mut Node,
    request: RemotingCommand,
    reply: &flume::Sender<RemotingCommand>,
    now: Instant,
) -> Answer {
    let parsed = (|| {
        Ok::<_, RemotingCommand>(ElectRequest {
            broker_name: field(&request, "brokerName")?.to_string(),
            broker_id: number(&request, "brokerId")?,
            designate: request.ext("designateElect") == Some("true"),
        })
    })();
    let elect_request = match parsed {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    match plan_elect(node, &elect_request, now) {
        Err(r) => Some(request.error_to(r.code, r.remark)),
        Ok(ElectPlan::MasterStillExists(view)) => Some(master_fields(
            request.error_to(
                resp::CONTROLLER_MASTER_STILL_EXIST,
                format!(
                    "the master {:?} of {} is still alive",
                    view.master, elect_request.broker_name
                ),
            ),
            &view,
        )),
        Ok(ElectPlan::Propose(command)) => {
            let name = elect_request.broker_name.clone();
            // A broker asking for itself says whether it follows no master (its broker is
            // stopped): then it needs no fence.
            let not_following = request.ext(NOT_FOLLOWING) == Some("true")
                && matches!(&command, Command::ElectMaster { new_master: Some(c), .. }
                    if Some(*c) == elect_request.broker_id);
            let echo = request.clone();
            let respond = Box::new(
                move |state: &ReplicasInfo, result: Result<Applied, Refused>| match result {
                    Ok(Applied::Master(view)) => master_fields(request.success_to(), &view)
                        .with_body(member_group_body(state, &name)),
                    Ok(_) => request.error_to(resp::SYSTEM_ERROR, "unexpected result"),
                    Err(r) => request.error_to(r.code, r.remark),
                },
            );
            node.elect(command, not_following, echo, Some(reply.clone()), respond)
        }
    }
}

/// The leader's scan: elects a new master for every group whose master stopped heartbeating.
pub(super) fn elect_for_dead_masters(node: &mut Node, now: Instant) {
    let orphaned: Vec<String> = node
        .state
        .groups
        .values()
        .filter(|g| {
            g.master
                .is_some_and(|m| !node.liveness.is_alive(&g.broker_name, m, now))
                && !node.electing(&g.broker_name)
        })
        .map(|g| g.broker_name.clone())
        .collect();
    for name in orphaned {
        let request = ElectRequest {
            broker_name: name.clone(),
            broker_id: None,
            designate: false,
        };
        match plan_elect(node, &request, now) {
            Ok(ElectPlan::Propose(command)) => {
                tracing::info!(broker = %name, ?command, "the master stopped heartbeating; electing");
                let respond = Box::new(|_: &ReplicasInfo, result: Result<Applied, Refused>| {
                    if let Err(r) = result {
                        tracing::warn!(code = r.code, remark = %r.remark, "controller-triggered election");
                    }
                    RemotingCommand::request(0)
                });
                if let Some(refused) =
                    node.elect(command, false, RemotingCommand::request(0), None, respond)
                {
                    tracing::warn!(broker = %name, remark = ?refused.remark, "controller-triggered election");
                }
            }
            Ok(ElectPlan::MasterStillExists(_)) => {}
            Err(r) => {
                tracing::warn!(broker = %name, remark = %r.remark, "cannot elect a new master")
            }
        }
    }
}

fn alter(
    node: &mut Node,
    request: RemotingCommand,
    reply: &flume::Sender<RemotingCommand>,
    now: Instant,
) -> Answer {
    let parsed = (|| {
        let body: SyncStateSetBody = serde_json::from_slice(&request.body).map_err(|e| {
            request.error_to(
                resp::CONTROLLER_INVALID_REQUEST,
                format!("the body is not a SyncStateSet: {e}"),
            )
        })?;
        Ok::<_, RemotingCommand>(Command::AlterSyncStateSet {
            broker_name: field(&request, "brokerName")?.to_string(),
            master: required(&request, "masterBrokerId")?,
            master_epoch: required(&request, "masterEpoch")?,
            sync_state_set_epoch: body.sync_state_set_epoch,
            new_set: body.sync_state_set,
        })
    })();
    let command = match parsed {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let Command::AlterSyncStateSet {
        broker_name,
        new_set,
        ..
    } = &command
    else {
        unreachable!("built above")
    };
    if let Some(dead) = new_set
        .iter()
        .find(|id| !node.liveness.is_alive(broker_name, **id, now))
    {
        return Some(request.error_to(
            resp::CONTROLLER_BROKER_NOT_ALIVE,
            format!("replica {dead} of {broker_name} is not alive"),
        ));
    }
    let new_set = new_set.clone();
    let echo = request.clone();
    let respond = Box::new(
        move |_: &ReplicasInfo, result: Result<Applied, Refused>| match result {
            Ok(Applied::SyncStateSet { epoch }) => {
                let body = SyncStateSetBody {
                    sync_state_set: new_set,
                    sync_state_set_epoch: epoch,
                };
                request
                    .success_to()
                    .with_ext("newSyncStateSetEpoch", epoch.to_string())
                    .with_body(serde_json::to_vec(&body).expect("serializes"))
            }
            Ok(_) => request.error_to(resp::SYSTEM_ERROR, "unexpected result"),
            Err(r) => request.error_to(r.code, r.remark),
        },
    );
    node.propose(&command, echo, Some(reply.clone()), respond)
}

fn replica_info(node: &Node, request: &RemotingCommand) -> RemotingCommand {
    let name = match field(request, "brokerName") {
        Ok(n) => n,
        Err(e) => return e,
    };
    let Some(group) = node.state.group(name) else {
        return request.error_to(
            resp::CONTROLLER_BROKER_METADATA_NOT_EXIST,
            format!("broker group {name} has no metadata"),
        );
    };
    let view = node.state.master_view(name).unwrap_or_default();
    let body = SyncStateSetBody {
        sync_state_set: group.sync_state_set.clone(),
        sync_state_set_epoch: group.sync_state_set_epoch,
    };
    master_fields(request.success_to(), &view)
        .with_body(serde_json::to_vec(&body).expect("serializes"))
}

fn sync_state_data(node: &Node, request: &RemotingCommand, now: Instant) -> RemotingCommand {
    let names: Vec<String> = match serde_json::from_slice(&request.body) {
        Ok(n) => n,
        Err(e) => {
            return request.error_to(
                resp::CONTROLLER_INVALID_REQUEST,
                format!("the body is not a JSON list of broker names: {e}"),
            )
        }
    };
    let mut table = serde_json::Map::new();
    for name in names {
        let Some(group) = node.state.group(&name) else {
            continue;
        };
        let replica = |id: &u64, addr: &str| {
            json!({"brokerName": name, "brokerId": id, "brokerAddress": addr,
                   "alive": node.liveness.is_alive(&name, *id, now)})
        };
        let (mut in_sync, mut not_in_sync) = (Vec::new(), Vec::new());
        for (id, r) in &group.replicas {
            if group.sync_state_set.contains(id) {
                in_sync.push(replica(id, &r.address));
            } else {
                not_in_sync.push(replica(id, &r.address));
            }
        }
        table.insert(
            name.clone(),
            json!({
                "masterBrokerId": group.master,
                "masterAddress": group.master_address(),
                "masterEpoch": group.master_epoch,
                "syncStateSetEpoch": group.sync_state_set_epoch,
                "inSyncReplicas": in_sync,
                "notInSyncReplicas": not_in_sync,
            }),
        );
    }
    let body = json!({ "replicasInfoTable": table });
    request
        .success_to()
        .with_body(serde_json::to_vec(&body).expect("serializes"))
}

fn clean(
    node: &mut Node,
    request: RemotingCommand,
    reply: &flume::Sender<RemotingCommand>,
    now: Instant,
) -> Answer {
    let name = match field(&request, "brokerName") {
        Ok(n) => n.to_string(),
        Err(e) => return Some(e),
    };
    let mut ids = BTreeSet::new();
    for part in request
        .ext("brokerControllerIdsToClean")
        .unwrap_or_default()
        .split(';')
    {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match part.parse::<u64>() {
            Ok(id) => {
                ids.insert(id);
            }
            Err(_) => {
                return Some(request.error_to(
                    resp::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
                    format!("broker id {part:?} is not a number"),
                ))
            }
        }
    }
    let clean_living = request.ext("isCleanLivingBroker") == Some("true");
    if !clean_living {
        let group = node.state.group(&name);
        let alive: Vec<u64> = match group {
            Some(g) if ids.is_empty() => g.replicas.keys().copied().collect::<Vec<u64>>(),
            _ => ids.iter().copied().collect(),
        }
        .into_iter()
        .filter(|id| node.liveness.is_alive(&name, *id, now))
        .collect();
        if !alive.is_empty() {
            return Some(request.error_to(
                resp::CONTROLLER_INVALID_CLEAN_BROKER_METADATA,
                format!("replicas {alive:?} of {name} are alive; stop them first or set isCleanLivingBroker"),
            ));
        }
    }
    let command = Command::CleanBrokerData {
        broker_name: name,
        broker_ids: ids,
    };
    let echo = request.clone();
    let respond = Box::new(
        move |_: &ReplicasInfo, result: Result<Applied, Refused>| match result {
            Ok(_) => request.success_to(),
            Err(r) => request.error_to(r.code, r.remark),
        },
    );
    node.propose(&command, echo, Some(reply.clone()), respond)
}

/// NOTIFY_BROKER_ROLE_CHANGED to every replica of `broker_name` (oneway, from a short-lived
/// thread: the Raft thread never waits on a broker).
pub(super) fn notify_role_changed(state: &ReplicasInfo, broker_name: &str) {
    let (Some(group), Some(view)) = (state.group(broker_name), state.master_view(broker_name))
    else {
        return;
    };
    let body = serde_json::to_vec(&SyncStateSetBody {
        sync_state_set: group.sync_state_set.clone(),
        sync_state_set_epoch: group.sync_state_set_epoch,
    })
    .expect("serializes");
    let addrs: Vec<String> = group.replicas.values().map(|r| r.address.clone()).collect();
    let notice = master_fields(
        RemotingCommand::request(req::NOTIFY_BROKER_ROLE_CHANGED),
        &view,
    )
    .with_body(body);
    let _ = std::thread::Builder::new()
        .name("controller-notify".into())
        .spawn(move || {
            for addr in addrs {
                let sent = crate::client::Connection::connect(&addr, Duration::from_secs(1))
                    .and_then(|mut c| c.invoke_oneway(notice.clone()));
                if let Err(e) = sent {
                    tracing::debug!(%addr, error = %e, "cannot notify a broker of its group's new master");
                }
            }
        });
}
