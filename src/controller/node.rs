//! One controller: a raft-rs `RawNode` driven by one dedicated thread, which also owns the
//! state machine ([`ReplicasInfo`]), the heartbeat table and every controller request. Requests
//! arrive through a [`ControllerHandle`] (from the nameserver's or the standalone controller's
//! remoting server) and are answered through a one-shot channel: reads at once, changes once
//! their command is committed and applied.
//!
//! The loop: wait for a request, a peer message or the next tick (100 ms, Raft's clock), then
//! handle raft-rs's `Ready`: persist entries and hard state (synced) before sending the
//! messages that depend on them, install a snapshot, apply committed commands, answer their
//! proposers. The leader also scans heartbeats every `scanNotActiveBrokerInterval` and elects a
//! new master for every group whose master stopped heartbeating. Every election in a group that
//! has had a master first fences its candidate ([`Node::elect`]), from a short-lived thread
//! whose answer comes back as an [`Op`]: the Raft thread never waits on a broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use raft::prelude::{Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};

use super::liveness::Liveness;
use super::log_store::{LogStore, StoreError};
use super::service;
use super::state::{Applied, Command, Refused, ReplicasInfo};
use super::transport::{Inbound, Sink, Transport};
use crate::remoting::{response as resp, RemotingCommand};

/// Raft's clock.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a leader's heartbeat before a follower campaigns (raft-rs randomizes it
/// between this and twice this).
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 2;
/// Applied commands between snapshots (the log is then cut to what follows).
const SNAPSHOT_EVERY: u64 = 1000;
/// A proposal not applied within this is answered CONTROLLER_NOT_LEADER.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// One member of the controller group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its name in `controllerDLegerPeers` (`n0`).
    pub name: String,
    /// Where it listens for Raft traffic.
    pub addr: SocketAddr,
}

/// Everything a controller needs.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `controllerDLegerGroup`.
    pub group: String,
    /// `controllerDLegerPeers`, in their configured order (Raft ids are positions + 1).
    pub peers: Vec<Peer>,
    /// `controllerDLegerSelfId`.
    pub self_name: String,
    /// `controllerStorePath`.
    pub store_path: PathBuf,
    /// `enableElectUncleanMaster`.
    pub elect_unclean_master: bool,
    /// `notifyBrokerRoleChanged`: tell a group's replicas when its master changes.
    pub notify_broker_role_changed: bool,
    /// `scanNotActiveBrokerInterval`.
    pub scan_not_active_broker_interval: Duration,
    /// The address brokers reach this controller's remoting server on (reported as the
    /// leader's address by CONTROLLER_GET_METADATA_INFO).
    pub remoting_addr: String,
    /// `key=value` lines GET_CONTROLLER_CONFIG answers with.
    pub config_properties: Vec<(String, String)>,
}

impl ControllerOptions {
    /// This controller's Raft id.
    pub fn self_raft_id(&self) -> Option<u64> {
        self.peers
            .iter()
            .position(|p| p.name == self.self_name)
            .map(|i| i as u64 + 1)
    }

    /// The options of `config`, for a controller whose remoting server is reached at
    /// `remoting_addr`.
    pub fn from_config(
        config: &crate::config::ControllerConfig,
        remoting_addr: String,
    ) -> Result<ControllerOptions, PeersError> {
        let peers = Self::parse_peers(&config.peers)?;
        let mut config_properties: Vec<(String, String)> = config
            .to_properties()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config_properties.sort();
        Ok(ControllerOptions {
            group: config.group.clone(),
            peers,
            self_name: config.self_id.clone(),
            store_path: config.store_path.clone(),
            elect_unclean_master: config.elect_unclean_master,
            notify_broker_role_changed: config.notify_broker_role_changed,
            scan_not_active_broker_interval: Duration::from_millis(
                config.scan_not_active_broker_interval_ms,
            ),
            remoting_addr,
            config_properties,
        })
    }

    /// Parses `controllerDLegerPeers` (`n0-127.0.0.1:9878;n1-127.0.0.1:9879`).
    pub fn parse_peers(text: &str) -> Result<Vec<Peer>, PeersError> {
        let mut peers: Vec<Peer> = Vec::new();
        for item in crate::config::addr_list(text) {
            let (name, addr) = item
                .split_once('-')
                .ok_or_else(|| PeersError::NotNameAddr(item.to_string()))?;
            let resolved = std::net::ToSocketAddrs::to_socket_addrs(addr)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| PeersError::BadAddr {
                    name: name.to_string(),
                    addr: addr.to_string(),
                })?;
            let addr = resolved;
            if peers.iter().any(|p| p.name == name) {
                return Err(PeersError::Twice(name.to_string()));
            }
            peers.push(Peer {
                name: name.to_string(),
                addr,
            });
        }
        if peers.is_empty() {
            return Err(PeersError::NoPeers);
        }
        Ok(peers)
    }
}

/// Why a controller cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("controllerDLegerSelfId {0:?} is not one of controllerDLegerPeers")]
    NotAPeer(String),
    #[error("cannot listen for controller peers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the controller log in {path} does not replay: {reason}")]
    Replay { path: PathBuf, reason: ReplayError },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("cannot start the controller thread: {0}")]
    Thread(std::io::Error),
}

/// What is wrong with `controllerDLegerPeers`.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    #[error("controllerDLegerPeers: peer {0:?} is not name-host:port")]
    NotNameAddr(String),
    #[error("controllerDLegerPeers: peer {name}: {addr:?} is not host:port")]
    BadAddr { name: String, addr: String },
    #[error("controllerDLegerPeers: peer {0} is listed twice")]
    Twice(String),
    #[error("controllerDLegerPeers: no peers")]
    NoPeers,
}

/// A snapshot or log entry of the controller's log that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("snapshot at {index}: {source}")]
    Snapshot {
        index: u64,
        source: serde_json::Error,
    },
    #[error("entry {index}: {source}")]
    Entry {
        index: u64,
        source: serde_json::Error,
    },
}

/// Why a candidate could not be fenced before its election.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("cannot reach it at {address}: {source}")]
    Unreachable {
        address: String,
        source: crate::client::ClientError,
    },
    #[error("it answered code {code}: {remark}")]
    Refused { code: i32, remark: String },
}

pub(super) enum Op {
    Peer(Inbound),
    Request(RemotingCommand, flume::Sender<RemotingCommand>),
    /// A fence of a candidate ([`Node::elect`]) was answered (`Err`: why not).
    Fenced(u64, Result<(), FenceError>),
    Stop,
}

/// An election waiting for its candidate to be fenced.
struct FenceAttempt {
    broker_name: String,
    candidate: u64,
    command: Command,
    request: RemotingCommand,
    reply: Option<flume::Sender<RemotingCommand>>,
    respond: Respond,
}

/// How long the leader waits for a candidate to answer its fence.
const FENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Microseconds since the Unix epoch (log lines a test lines up with its own clock).
pub(super) fn unix_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Sends requests to a running controller.
#[derive(Clone)]
pub struct ControllerHandle {
    tx: flume::Sender<Op>,
}

impl std::fmt::Debug for ControllerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControllerHandle")
    }
}

impl ControllerHandle {
    /// Whether `code` is a controller request (RIP-44's 904 and 1001..=1013).
    pub fn serves(code: i32) -> bool {
        code == crate::remoting::request::BROKER_HEARTBEAT || (1001..=1013).contains(&code)
    }

    /// Hands `request` to the controller; the answer arrives on the returned channel (a closed
    /// channel means the controller has stopped).
    pub fn call(&self, request: RemotingCommand) -> flume::Receiver<RemotingCommand> {
        let (tx, rx) = flume::bounded(1);
        let _ = self.tx.send(Op::Request(request, tx));
        rx
    }

    /// The answer to `request` when the controller stopped before answering.
    pub fn stopped_answer(request: &RemotingCommand) -> RemotingCommand {
        request.error_to(resp::SYSTEM_ERROR, "the controller has stopped")
    }
}

/// A running controller.
pub struct Controller {
    handle: ControllerHandle,
    join: Option<JoinHandle<()>>,
    /// Where it listens for peers.
    pub peer_addr: SocketAddr,
}

impl Controller {
    /// Opens the store, replays it and starts the Raft thread and the peer transport.
    pub fn start(options: ControllerOptions) -> Result<Controller, ControllerError> {
        let self_id = options
            .self_raft_id()
            .ok_or_else(|| ControllerError::NotAPeer(options.self_name.clone()))?;
        let voters: Vec<u64> = (1..=options.peers.len() as u64).collect();
        let store = LogStore::open(
            &options.store_path,
            &options.group,
            &options.self_name,
            &voters,
        )?;
        let (state, applied) = replay(&store).map_err(|reason| ControllerError::Replay {
            path: options.store_path.clone(),
            reason,
        })?;
        let config = raft::Config {
            id: self_id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!("controller" => self_id));
        let mut raw = RawNode::new(&config, store, &logger)?;
        if options.peers.len() == 1 {
            raw.campaign()?;
        }
        let (tx, rx) = flume::unbounded::<Op>();
        let peer_addr = options.peers[(self_id - 1) as usize].addr;
        let others: HashMap<u64, SocketAddr> = options
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64 + 1, p.addr))
            .filter(|(id, _)| *id != self_id)
            .collect();
        let sink_tx = tx.clone();
        let sink: Sink = Arc::new(move |inbound| sink_tx.send(Op::Peer(inbound)).is_ok());
        let transport = Transport::start(
            &options.group,
            self_id,
            peer_addr,
            options.remoting_addr.clone(),
            &others,
            sink,
        )
        .map_err(|source| ControllerError::Listen {
            addr: peer_addr,
            source,
        })?;
        let mut peer_remoting = HashMap::new();
        peer_remoting.insert(self_id, options.remoting_addr.clone());
        let node = Node {
            ops: tx.clone(),
            fencing: HashMap::new(),
            raw,
            state,
            applied,
            liveness: Liveness::default(),
            transport,
            pending: HashMap::new(),
            next_proposal: 1,
            options: Arc::new(options),
            peer_remoting,
            last_scan: Instant::now(),
            role: StateRole::Follower,
        };
        let join = thread::Builder::new()
            .name("controller-raft".into())
            .spawn(move || node.run(rx))
            .map_err(ControllerError::Thread)?;
        Ok(Controller {
            handle: ControllerHandle { tx },
            join: Some(join),
            peer_addr,
        })
    }

    /// A handle to send requests with.
    pub fn handle(&self) -> ControllerHandle {
        self.handle.clone()
    }

    /// Stops the Raft thread and the transport.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let _ = self.handle.tx.send(Op::Stop);
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The state machine rebuilt from the snapshot and the committed entries after it.
fn replay(store: &LogStore) -> Result<(ReplicasInfo, u64), ReplayError> {
    let snapshot = store.snapshot_held();
    let mut state = decode_snapshot(snapshot)?;
    let mut applied = snapshot.get_metadata().index;
    let commit = store.hard_state().commit;
    for entry in store.entries_between(applied + 1, commit + 1) {
        if let Some(command) = decode_command(&entry)? {
            let _ = state.apply(&command);
        }
        applied = entry.index;
    }
    Ok((state, applied))
}

fn decode_snapshot(snapshot: &Snapshot) -> Result<ReplicasInfo, ReplayError> {
    if snapshot.get_data().is_empty() {
        return Ok(ReplicasInfo::default());
    }
    serde_json::from_slice(snapshot.get_data()).map_err(|source| ReplayError::Snapshot {
        index: snapshot.get_metadata().index,
        source,
    })
}

fn decode_command(entry: &Entry) -> Result<Option<Command>, ReplayError> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.get_data().is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(entry.get_data())
        .map(Some)
        .map_err(|source| ReplayError::Entry {
            index: entry.index,
            source,
        })
}

/// Builds the response to a proposal once its command is applied.
pub(super) type Respond =
    Box<dyn FnOnce(&ReplicasInfo, Result<Applied, Refused>) -> RemotingCommand + Send>;

struct Pending {
    reply: Option<flume::Sender<RemotingCommand>>,
    request: RemotingCommand,
    respond: Respond,
    deadline: Instant,
}

pub(super) struct Node {
    /// Its own queue (fence answers come back through it).
    ops: flume::Sender<Op>,
    /// Elections waiting for their candidate's fence, by proposal number.
    fencing: HashMap<u64, FenceAttempt>,
    raw: RawNode<LogStore>,
    pub(super) state: ReplicasInfo,
    applied: u64,
    pub(super) liveness: Liveness,
    transport: Transport,
    pending: HashMap<u64, Pending>,
    next_proposal: u64,
    pub(super) options: Arc<ControllerOptions>,
    peer_remoting: HashMap<u64, String>,
    last_scan: Instant,
    role: StateRole,
}

impl Node {
    fn run(mut self, rx: flume::Receiver<Op>) {
        let mut last_tick = Instant::now();
        loop {
            let wait = TICK.saturating_sub(last_tick.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Op::Stop) | Err(flume::RecvTimeoutError::Disconnected) => break,
                Ok(op) => {
                    self.handle_op(op);
                    // Take what else is queued before the next ready (one fsync for many).
                    while let Ok(op) = rx.try_recv() {
                        if matches!(op, Op::Stop) {
                            self.transport.stop();
                            return;
                        }
                        self.handle_op(op);
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.raw.tick();
                self.housekeeping(last_tick);
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "the controller cannot write its log; stopping this controller");
                break;
            }
        }
        self.transport.stop();
    }

    fn handle_op(&mut self, op: Op) {
        match op {
            Op::Peer(Inbound::Message(m)) => {
                let _ = self.raw.step(m);
            }
            Op::Peer(Inbound::Peer { id, remoting_addr }) => {
                self.peer_remoting.insert(id, remoting_addr);
            }
            Op::Peer(Inbound::Unreachable(id)) => self.raw.report_unreachable(id),
            Op::Request(request, reply) => {
                if let Some(answer) = service::handle(self, request, &reply) {
                    let _ = reply.send(answer);
                }
            }
            Op::Fenced(id, result) => self.fenced(id, result),
            Op::Stop => {}
        }
    }

    /// Whether this controller is the Raft leader.
    pub(super) fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader's Raft id (0: none known).
    pub(super) fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub(super) fn self_id(&self) -> u64 {
        self.raw.raft.id
    }

    /// The remoting address of controller `id`, if known.
    pub(super) fn remoting_addr_of(&self, id: u64) -> Option<&str> {
        self.peer_remoting.get(&id).map(String::as_str)
    }

    /// Proposes `command`; `respond` builds the answer once it is applied (sent on `reply`,
    /// if any).
    pub(super) fn propose(
        &mut self,
        command: &Command,
        request: RemotingCommand,
        reply: Option<flume::Sender<RemotingCommand>>,
        respond: Respond,
    ) -> Option<RemotingCommand> {
        let id = self.next_proposal;
        self.next_proposal += 1;
        let mut context = self.self_id().to_le_bytes().to_vec();
        context.extend_from_slice(&id.to_le_bytes());
        let data = serde_json::to_vec(command).expect("commands serialize");
        match self.raw.propose(context, data) {
            Ok(()) => {
                self.pending.insert(
                    id,
                    Pending {
                        reply,
                        request,
                        respond,
                        deadline: Instant::now() + PROPOSAL_TIMEOUT,
                    },
                );
                None
            }
            Err(e) => {
                Some(request.error_to(resp::CONTROLLER_NOT_LEADER, format!("cannot propose: {e}")))
            }
        }
    }

    /// Whether an election of `broker_name` waits for its candidate's fence.
    pub(super) fn electing(&self, broker_name: &str) -> bool {
        self.fencing.values().any(|a| a.broker_name == broker_name)
    }

    /// Proposes the election `command` — after fencing its candidate when the group has had
    /// a master (which may still be acknowledging writes, cut off from the controllers).
    ///
    /// Why: a SYNC_MASTER with `allAckInSyncStateSet` acknowledges a write only once every
    /// member of its SyncStateSet holds it, and the candidate is a member. Fenced
    /// (RINGMQ_FENCE_REPLICA), the candidate acknowledges nothing more to anyone, so the old
    /// master's last SEND_OK happens before the election is even proposed, and everything it
    /// acknowledged is on the candidate. The fence is lifted by the candidate's agent once it
    /// reads a newer state of the group: the election happened, or it can never commit (the
    /// command is applied only at the master and SyncStateSet epochs it was planned at).
    /// `not_following`: the candidate itself asked and said it follows no master (its broker
    /// is stopped), so it needs no fence.
    pub(super) fn elect(
        &mut self,
        command: Command,
        not_following: bool,
        request: RemotingCommand,
        reply: Option<flume::Sender<RemotingCommand>>,
        respond: Respond,
    ) -> Option<RemotingCommand> {
        let Command::ElectMaster {
            broker_name,
            master_epoch,
            sync_state_set_epoch,
            new_master: Some(candidate),
        } = &command
        else {
            return self.propose(&command, request, reply, respond);
        };
        let target = self
            .state
            .group(broker_name)
            .filter(|g| g.master_epoch > 0 && !not_following)
            .and_then(|g| g.replicas.get(candidate))
            .map(|r| r.address.clone());
        let Some(address) = target else {
            return self.propose(&command, request, reply, respond);
        };
        if self.electing(broker_name) {
            return Some(request.error_to(
                resp::CONTROLLER_ELECT_MASTER_FAILED,
                format!("an election of {broker_name} is already under way"),
            ));
        }
        let id = self.next_proposal;
        self.next_proposal += 1;
        let fence = RemotingCommand::request(crate::remoting::request::RINGMQ_FENCE_REPLICA)
            .with_ext("brokerName", broker_name.clone())
            .with_ext("brokerId", candidate.to_string())
            .with_ext("masterEpoch", master_epoch.to_string())
            .with_ext(
                "syncStateSetEpoch",
                sync_state_set_epoch.unwrap_or_default().to_string(),
            );
        let ops = self.ops.clone();
        let spawned = thread::Builder::new()
            .name("controller-fence".into())
            .spawn(move || {
                let answer = crate::client::Connection::connect(&address, FENCE_TIMEOUT)
                    .and_then(|mut c| c.invoke(fence))
                    .map_err(|source| FenceError::Unreachable {
                        address: address.clone(),
                        source,
                    })
                    .and_then(|a| match a.code {
                        resp::SUCCESS => Ok(()),
                        code => Err(FenceError::Refused {
                            code,
                            remark: a.remark.unwrap_or_default(),
                        }),
                    });
                let _ = ops.send(Op::Fenced(id, answer));
            });
        if let Err(e) = spawned {
            return Some(request.error_to(
                resp::SYSTEM_ERROR,
                format!("cannot start the fence thread: {e}"),
            ));
        }
        tracing::info!(broker = %broker_name, candidate, master_epoch, "fencing the candidate before electing it");
        self.fencing.insert(
            id,
            FenceAttempt {
                broker_name: broker_name.clone(),
                candidate: *candidate,
                command,
                request,
                reply,
                respond,
            },
        );
        None
    }

    /// The candidate of election `id` answered its fence: propose the election (if this
    /// controller still leads), or give up with the reason.
    fn fenced(&mut self, id: u64, result: Result<(), FenceError>) {
        let Some(attempt) = self.fencing.remove(&id) else {
            return;
        };
        let FenceAttempt {
            broker_name,
            candidate,
            command,
            request,
            reply,
            respond,
        } = attempt;
        let answer = match result {
            Err(why) if !self.is_leader() => Some(request.error_to(
                resp::CONTROLLER_NOT_LEADER,
                format!("leadership lost while fencing the candidate ({why})"),
            )),
            Err(why) => {
                tracing::warn!(broker = %broker_name, candidate, %why, "cannot fence the candidate; not electing it");
                Some(request.error_to(
                    resp::CONTROLLER_ELECT_MASTER_FAILED,
                    format!("cannot fence candidate {candidate} of {broker_name} before electing it: {why}"),
                ))
            }
            Ok(()) if !self.is_leader() => Some(request.error_to(
                resp::CONTROLLER_NOT_LEADER,
                "leadership lost while fencing the candidate",
            )),
            Ok(()) => {
                tracing::info!(broker = %broker_name, candidate, fenced_at_us = unix_us(), "candidate fenced; proposing the election");
                self.propose(&command, request, reply.clone(), respond)
            }
        };
        if let (Some(answer), Some(reply)) = (answer, reply) {
            let _ = reply.send(answer);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                if let Some(reply) = p.reply {
                    let _ = reply.send(p.request.error_to(
                        resp::CONTROLLER_NOT_LEADER,
                        "the change was not committed in time (controller leadership lost?); it may or may not take effect, retry",
                    ));
                }
            }
        }
        if self.is_leader()
            && now.duration_since(self.last_scan) >= self.options.scan_not_active_broker_interval
        {
            self.last_scan = now;
            let dead = self.liveness.expire(now);
            for (broker_name, id) in &dead {
                tracing::info!(broker = %broker_name, broker_id = id, "broker stopped heartbeating");
            }
            service::elect_for_dead_masters(self, now);
        }
    }

    fn on_ready(&mut self) -> Result<(), StoreError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_role(ss.raft_state);
        }
        for m in ready.take_messages() {
            self.send(m);
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.raw.mut_store().install_snapshot(&snapshot)?;
            match decode_snapshot(&snapshot) {
                Ok(state) => {
                    self.state = state;
                    self.applied = snapshot.get_metadata().index;
                }
                Err(e) => tracing::error!(error = %e, "undecodable snapshot from the leader"),
            }
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed);
        let hs = ready.hs().cloned();
        self.raw.mut_store().persist(ready.entries(), hs.as_ref())?;
        for m in ready.take_persisted_messages() {
            self.send(m);
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        for m in light.take_messages() {
            self.send(m);
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed);
        self.raw.advance_apply();
        if self.applied >= self.raw.store().snapshot_held().get_metadata().index + SNAPSHOT_EVERY {
            let data = serde_json::to_vec(&self.state).expect("state serializes");
            let applied = self.applied;
            self.raw.mut_store().compact(applied, data)?;
        }
        Ok(())
    }

    fn on_role(&mut self, role: StateRole) {
        if role == self.role {
            return;
        }
        tracing::info!(controller = %self.options.self_name, role = ?role, leader = self.leader_id(), "controller role changed");
        if role == StateRole::Leader {
            // Brokers heartbeat every controller, but one that just started knows no one:
            // nobody is declared dead before a scan interval plus a heartbeat timeout passed.
            let grace =
                self.options.scan_not_active_broker_interval + service::DEFAULT_HEARTBEAT_TIMEOUT;
            self.liveness.grace_until(Instant::now() + grace);
            self.last_scan = Instant::now();
        }
        self.role = role;
    }

    fn send(&self, message: Message) {
        self.transport.send(message);
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            let command = match decode_command(&entry) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable committed command; skipped on every controller alike");
                    continue;
                }
            };
            let result = self.state.apply(&command);
            if let (Command::ElectMaster { broker_name, .. }, Ok(Applied::Master(_))) =
                (&command, &result)
            {
                tracing::info!(broker = %broker_name, view = ?self.state.master_view(broker_name), committed_at_us = unix_us(), "new master elected");
                if self.is_leader() && self.options.notify_broker_role_changed {
                    service::notify_role_changed(&self.state, broker_name);
                }
            }
            let context = entry.get_context();
            if context.len() == 16
                && u64::from_le_bytes(context[..8].try_into().expect("8")) == self.self_id()
            {
                let id = u64::from_le_bytes(context[8..].try_into().expect("8"));
                if let Some(p) = self.pending.remove(&id) {
                    let answer = (p.respond)(&self.state, result);
                    if let Some(reply) = p.reply {
                        let _ = reply.send(answer);
                    }
                }
            }
        }
    }
}

/// raft-rs logs through slog; this forwards its lines to tracing (info and below as debug:
/// raft-rs narrates every election at info).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        _values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!("raft: {}", record.msg()),
            slog::Level::Warning => tracing::warn!("raft: {}", record.msg()),
            slog::Level::Info | slog::Level::Debug => tracing::debug!("raft: {}", record.msg()),
            slog::Level::Trace => tracing::trace!("raft: {}", record.msg()),
        }
        Ok(())
    }
}
