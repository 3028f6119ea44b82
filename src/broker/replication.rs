//! Replication in the broker (HA.md): every master shard has its [`Replicas`] (and, on a
//! SYNC_MASTER, puts that wait also wait for a slave); every slave shard runs a [`Follower`].
//! The master's HA listener runs on the control shard and hands each connection to the shard it
//! names; a slave learns where its master is from the nameserver's answer to its registration
//! (or `haMasterAddress`) and its control shard copies the master's topics, consumer offsets,
//! delay offsets and subscription groups every 10 s, as Java's `SlaveSynchronize` does.
//!
//! Functions over the services they need: each shard's part is its
//! [`crate::broker::services::replication::Replication`]; the wiring (`mod.rs`) starts the
//! tasks below with the parts they take.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};

use super::context::BrokerContext;
use super::mesh_proto::{HaRole, HaStatus, MeshRequest};
use super::placement::owner_shard;
use super::processor::admin::AllShards;
use super::services::group_book::GroupBook;
use super::services::mesh_client::{BrokerMesh, MeshClient};
use super::services::offsets::OffsetBook;
use super::services::replication::{gather_status, Replication, SlaveStore};
use super::services::subscriptions::SubscriptionReplica;
use super::services::topic_book::TopicBook;
use super::services::topics::TopicReplica;
use crate::config::{BrokerRole, FlushDiskType};
use crate::ha::master::{self, Replicas};
use crate::ha::proto::Hello;
use crate::ha::slave::{Follower, MasterAddr};
use crate::ha::{HaError, HaOptions};
use crate::net::{RpcClient, RpcError};
use crate::protocol::lenient;
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::runtime::Shutdown;
use crate::store::dispatch::SCHEDULE_TOPIC;
use crate::store::metadata::{
    ConsumerOffsetTable, DelayOffsetTable, MetadataError, SubscriptionGroupTable, TopicTable,
};
use crate::store::{MessageStore, SystemClock};

/// How long a new HA connection may take to say which shard it wants.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Java's `SlaveSynchronize` period, and the timeout of each of its requests.
const METADATA_SYNC_PERIOD: Duration = Duration::from_secs(10);
const METADATA_SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// Sets up replication for shard `id` around its freshly opened store.
pub(super) fn open(
    ctx: &BrokerContext,
    id: usize,
    store: &MessageStore,
) -> io::Result<Replication> {
    let cfg = &ctx.cfg;
    let opts = HaOptions::from_broker(cfg);
    let root = &cfg.store_path_root_dir;
    if cfg.broker_role == BrokerRole::Slave {
        let durable = cfg.flush_disk_type == FlushDiskType::SyncFlush;
        let follower = Follower::new(
            opts,
            root,
            id,
            ctx.shards,
            ctx.broker_addr.clone(),
            durable,
            Rc::new(MasterAddr::default()),
        );
        let follower = follower
            .with_credentials(ctx.credentials())
            .with_controller(ctx.sync_state.clone());
        let fixed = cfg.ha_master_address.clone();
        return Ok(Replication::slave(id, Rc::new(follower), fixed));
    }
    // In controller mode a master's epoch is numbered after the controller's master epoch (so
    // getBrokerEpoch shows the controller's numbers), never below the history's next.
    let controller_epoch = ctx.sync_state.as_ref().map_or(0, |v| v.master_epoch());
    let replicas = Replicas::open(opts, store.clone(), root, id, controller_epoch)?;
    if let Some(view) = &ctx.sync_state {
        replicas.set_sync_state(std::sync::Arc::clone(view));
    }
    if cfg.broker_role == BrokerRole::SyncMaster {
        store.set_replica_wait(replicas.clone());
    }
    Ok(Replication::master(id, replicas))
}

/// GET_BROKER_RUNTIME_INFO's replication entries, from this shard's figures (`here`) and the
/// other shards'. A master: `haConnectionCount` (slaves), `haSlaveAckOffset` (bytes
/// acknowledged, all shards), `haSlaveFallBehindBytes` and `haSlaveFallBehindMillis` (the
/// furthest slave), and `haSlave.<addr>` per slave
/// (`ackOffset=…,behindBytes=…,behindMillis=…,holdsConfirmed=0|1`, the last: on every
/// shard it holds what the master acknowledged in controller mode). A slave: `haMasterAddr`, `haConnected`,
/// `haFallBehindBytes`, `haFallBehindMillis`.
///
/// Controller mode adds the group as the broker's agent last read it from the controller:
/// `controllerBrokerId`, `controllerMasterBrokerId`, `controllerMasterEpoch`,
/// `controllerSyncStateSet` (ids, comma-separated) and `controllerSyncStateSetEpoch`.
pub async fn ha_entries(
    ctx: &BrokerContext,
    here: HaStatus,
    mesh: &MeshClient,
    table: &mut BTreeMap<String, String>,
) {
    if let Some(f) = ctx.sync_state.as_ref().and_then(|v| v.figures()) {
        let set: Vec<String> = f.sync_state_set.iter().map(u64::to_string).collect();
        for (k, v) in [
            ("controllerBrokerId", f.broker_id.to_string()),
            (
                "controllerMasterBrokerId",
                f.master_id.map_or_else(String::new, |m| m.to_string()),
            ),
            ("controllerMasterEpoch", f.master_epoch.to_string()),
            ("controllerSyncStateSet", set.join(",")),
            (
                "controllerSyncStateSetEpoch",
                f.sync_state_set_epoch.to_string(),
            ),
        ] {
            table.insert(k.to_string(), v);
        }
    }
    let statuses = gather_status(here, mesh).await;
    // Per slave: acked, behind bytes, behind ms, shards linked, shards where it holds what
    // the master confirmed.
    let mut slaves: BTreeMap<String, (u64, u64, u64, usize, usize)> = BTreeMap::new();
    let (mut is_slave, mut connected, mut behind, mut behind_ms) = (false, true, 0, 0);
    let mut master_addr = None;
    for status in statuses {
        match status.role {
            HaRole::Master(lags) => {
                for lag in lags {
                    let e = slaves.entry(lag.addr).or_default();
                    e.0 += lag.acked;
                    e.1 += lag.behind_bytes;
                    e.2 = e.2.max(lag.behind_ms);
                    e.3 += 1;
                    e.4 += usize::from(lag.holds_confirmed);
                }
            }
            HaRole::Slave(s) => {
                is_slave = true;
                connected &= s.connected;
                behind += s.behind_bytes;
                behind_ms = behind_ms.max(s.behind_ms);
                master_addr = master_addr.or(s.master);
            }
        }
    }
    let mut put = |k: &str, v: String| {
        table.insert(k.to_string(), v);
    };
    if is_slave {
        put("haMasterAddr", master_addr.unwrap_or_default());
        put("haConnected", connected.to_string());
        put("haFallBehindBytes", behind.to_string());
        put("haFallBehindMillis", behind_ms.to_string());
        return;
    }
    // A slave counts once its every shard is connected.
    let shards = ctx.shards;
    let full = slaves.values().filter(|s| s.3 >= shards).count();
    put("haConnectionCount", full.to_string());
    let acked = slaves.values().map(|s| s.0).max().unwrap_or(0);
    put("haSlaveAckOffset", acked.to_string());
    let (bytes, ms) = slaves
        .values()
        .fold((0, 0), |(b, m), s| (b.max(s.1), m.max(s.2)));
    put("haSlaveFallBehindBytes", bytes.to_string());
    put("haSlaveFallBehindMillis", ms.to_string());
    for (addr, (acked, bytes, ms, linked, holding)) in slaves {
        let holds = linked >= shards && holding >= shards;
        put(
            &format!("haSlave.{addr}"),
            format!(
                "ackOffset={acked},behindBytes={bytes},behindMillis={ms},holdsConfirmed={}",
                u8::from(holds)
            ),
        );
    }
}

/// On the control shard of a slave, after a registration answered with the master's
/// addresses: tell every shard.
pub fn master_addr_learned(
    replication: &Replication,
    mesh: &MeshClient,
    ha: Option<String>,
    remoting: Option<String>,
) {
    let Some(follower) = replication.follower() else {
        return;
    };
    // Java keeps the last HA address when the answer has none (the master is down).
    let ha = ha.or_else(|| follower.master.ha());
    replication.set_master_addr(ha.clone(), remoting.clone());
    mesh.spawn_broadcast(move || MeshRequest::MasterAddr {
        ha: ha.clone(),
        remoting: remoting.clone(),
    });
}

/// What a master's HA listener (on the control shard) needs: handles it shares with its
/// shard, so each connection's task owns what it uses.
#[derive(Clone)]
pub struct HaListener {
    pub ctx: Rc<BrokerContext>,
    /// The control shard's replication (links for it are served there).
    pub replication: Replication,
    /// The joined mesh (links for other shards are handed to them over it).
    pub mesh: Option<Rc<BrokerMesh>>,
    pub shutdown: Shutdown,
}

/// A master's HA listener (control shard): reads each connection's HELLO and hands the
/// connection to the shard it names.
pub(super) async fn serve_ha(listener: TcpListener, parts: HaListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            parts.shutdown.wait().await;
            None
        })
        .await;
        let mut stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "HA accept failed");
                continue;
            }
        };
        let parts = parts.clone();
        glommio::spawn_local(async move {
            let (hello, auth) = match master::read_hello(&mut stream, HELLO_TIMEOUT).await {
                Ok(hello) => hello,
                Err(reason) => {
                    tracing::warn!(peer = ?stream.peer_addr().ok(), %reason, "bad HA handshake");
                    return master::refuse(stream, reason.to_string()).await;
                }
            };
            if let Some(acl) = &parts.ctx.acl {
                let peer = stream.peer_addr().map(|a| a.ip());
                let now = crate::store::Clock::now_ms(&SystemClock) as u64;
                let checked = peer
                    .map_err(|e| HaError::PeerAddr(e.into()))
                    .and_then(|ip| Ok(crate::ha::auth::check_hello(acl, ip, auth.as_ref(), now)?));
                if let Err(reason) = checked {
                    tracing::warn!(peer = ?stream.peer_addr().ok(), %reason, "HA link refused by the ACL");
                    return master::refuse(stream, reason.to_string()).await;
                }
            }
            let shards = parts.ctx.shards;
            let target = usize::from(hello.shard);
            if target >= shards || usize::from(hello.shard_count) != shards {
                let reason = format!(
                    "the master runs {} shard(s), the slave {}: give both the same shardCount",
                    shards, hello.shard_count
                );
                return master::refuse(stream, reason).await;
            }
            if target == parts.replication.shard() {
                return parts.replication.serve_link(stream, hello, &parts.shutdown);
            }
            hand_over(parts.mesh.as_deref(), stream, target, hello).await;
        })
        .detach();
    }
}

/// Passes a connection to another shard's executor (as a duplicated descriptor).
async fn hand_over(mesh: Option<&BrokerMesh>, stream: TcpStream, target: usize, hello: Hello) {
    // SAFETY: dup of a descriptor we own; the copy goes to exactly one new owner below.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    drop(stream);
    if fd < 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot hand an HA link over");
        return;
    }
    let Some(mesh) = mesh else {
        // SAFETY: fd is ours and unused.
        unsafe { libc::close(fd) };
        return;
    };
    if mesh
        .tell(target, MeshRequest::HaLink { fd, hello })
        .await
        .is_err()
    {
        // SAFETY: the message (and with it the descriptor) never reached the other shard.
        unsafe { libc::close(fd) };
    }
}

/// On the receiving shard: the connection from [`hand_over`].
pub(super) fn adopt_ha_link(replication: &Replication, fd: i32, hello: Hello, shutdown: &Shutdown) {
    // SAFETY: `fd` was duplicated for this shard alone by `hand_over`.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    replication.serve_link(stream, hello, shutdown);
}

/// A slave shard's follower, reopening `store` when the master's history says so.
pub(super) async fn run_follower(replication: Replication, store: SlaveStore, shutdown: Shutdown) {
    let Some(follower) = replication.follower() else {
        return;
    };
    Rc::clone(follower).run(Rc::new(store), shutdown).await;
}

/// What a slave's metadata sync (on its control shard) reads and writes: the control shard's
/// topic table and subscription groups, and the replicas every shard keeps of them.
pub struct MetadataSync<'a> {
    pub ctx: &'a BrokerContext,
    pub replication: &'a Replication,
    /// The control shard's topic table.
    pub topic_book: &'a TopicBook,
    /// The control shard's subscription groups.
    pub groups: &'a GroupBook,
    /// This shard's replicas of the topic table and of subscriptions.
    pub topics: &'a TopicReplica,
    pub subscriptions: &'a SubscriptionReplica,
    /// This shard's consumer and delay offsets.
    pub offsets: &'a OffsetBook,
    pub mesh: &'a MeshClient,
    /// Every shard's data (a topic deleted on the master is deleted here).
    pub all: AllShards<'a>,
}

/// A slave's control shard: copies the master's metadata every 10 s (first as soon as the
/// master is known).
pub(super) async fn run_metadata_sync(sync: &MetadataSync<'_>, shutdown: Shutdown) {
    let Some(follower) = sync.replication.follower() else {
        return;
    };
    let master = Rc::clone(&follower.master);
    let mut client: Option<RpcClient> = None;
    loop {
        let addr = master.remoting().filter(|a| *a != sync.ctx.broker_addr);
        if let Some(addr) = addr {
            if client.as_ref().is_none_or(|c| c.addr() != addr) {
                client = Some(RpcClient::new(addr, METADATA_SYNC_TIMEOUT));
            }
            if let Some(c) = &client {
                if let Err(e) = sync.sync_metadata(c).await {
                    tracing::warn!(master = c.addr(), error = %e, "metadata sync failed");
                }
            }
        }
        // The next round: after the period, or at once when the master moves.
        let seen = master.changed_count();
        let moved = async {
            master.wait_changed(seen).await;
            true
        };
        if !future::or(moved, shutdown.sleep(METADATA_SYNC_PERIOD)).await {
            return;
        }
    }
}

/// Why a round of the slave's metadata sync failed (logged; the next round tries again).
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("request {code} answered {answer}: {remark}")]
    Refused {
        code: i32,
        answer: i32,
        remark: String,
    },
    #[error("the master's {what}: {source}")]
    Decode {
        what: &'static str,
        source: lenient::LenientError,
    },
    #[error(transparent)]
    Persist(#[from] MetadataError),
}

async fn fetch(
    client: &RpcClient,
    code: i32,
    credentials: Option<&crate::acl::Credentials>,
) -> Result<bytes::Bytes, SyncError> {
    let mut cmd = RemotingCommand::request(code);
    if let Some(credentials) = credentials {
        crate::acl::sign(&mut cmd, credentials);
    }
    let reply = client.invoke(cmd).await?;
    if reply.code != resp::SUCCESS {
        return Err(SyncError::Refused {
            code,
            answer: reply.code,
            remark: reply.remark.unwrap_or_default(),
        });
    }
    Ok(reply.body)
}

impl MetadataSync<'_> {
    /// One round of `SlaveSynchronize.syncAll`.
    async fn sync_metadata(&self, client: &RpcClient) -> Result<(), SyncError> {
        let bad = |what: &'static str, source| SyncError::Decode { what, source };
        let creds = self.ctx.credentials();
        let topics: TopicTable =
            lenient::from_slice(&fetch(client, req::GET_ALL_TOPIC_CONFIG, creds.as_ref()).await?)
                .map_err(|e| bad("topics", e))?;
        if topics.data_version() != self.topic_book.data_version() {
            let (changes, job) = self.topic_book.replace(topics)?;
            job.run().await?;
            tracing::info!(changed = changes.len(), "topics synced from the master");
            for (name, config) in changes {
                self.topics.apply(&name, config.clone());
                self.mesh
                    .broadcast(|| MeshRequest::TopicChanged {
                        name: name.clone(),
                        config: config.clone(),
                    })
                    .await;
                if config.is_none() {
                    // Deleted on the master (DELETE_TOPIC_IN_BROKER): its queues, offsets and
                    // statistics go here too, so the slave stops serving it and a topic made
                    // again under the name starts at offset 0 here as on the master.
                    match self.all.delete_topic_data(&name).await {
                        Ok(()) => tracing::info!(topic = name, "topic deleted on the master"),
                        Err(e) => tracing::warn!(topic = name, error = %e,
                            "the master deleted a topic; its data here is not all deleted"),
                    }
                }
            }
        }
        let offsets: ConsumerOffsetTable = lenient::from_slice(
            &fetch(client, req::GET_ALL_CONSUMER_OFFSET, creds.as_ref()).await?,
        )
        .map_err(|e| bad("consumer offsets", e))?;
        let delays: DelayOffsetTable =
            lenient::from_slice(&fetch(client, req::GET_ALL_DELAY_OFFSET, creds.as_ref()).await?)
                .map_err(|e| bad("delay offsets", e))?;
        self.spread_offsets(&offsets, &delays).await;
        let groups: SubscriptionGroupTable = lenient::from_slice(
            &fetch(
                client,
                req::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
                creds.as_ref(),
            )
            .await?,
        )
        .map_err(|e| bad("subscription groups", e))?;
        if groups.data_version() != self.groups.data_version() {
            self.groups.replace(groups);
            super::control::groups_changed(self.subscriptions, self.mesh).await;
            let job = self.groups.persist_job();
            job?.run().await?;
        }
        Ok(())
    }

    /// Sends each shard the master's offsets of the queues it owns.
    async fn spread_offsets(&self, offsets: &ConsumerOffsetTable, delays: &DelayOffsetTable) {
        let shards = self.ctx.shards;
        let here = self.replication.shard();
        let mut consumer: Vec<Vec<(String, i32, i64)>> = vec![Vec::new(); shards];
        for (key, queues) in offsets.table() {
            let topic = key.split('@').next().unwrap_or(key);
            for (queue, offset) in queues {
                consumer[owner_shard(topic, *queue, shards)].push((key.clone(), *queue, *offset));
            }
        }
        let mut delay: Vec<Vec<(i32, i64)>> = vec![Vec::new(); shards];
        for (level, offset) in delays.table() {
            delay[owner_shard(SCHEDULE_TOPIC, level - 1, shards)].push((*level, *offset));
        }
        for (shard, (consumer, delay)) in consumer.into_iter().zip(delay).enumerate() {
            if shard == here {
                self.offsets.apply_synced(consumer, delay);
            } else if let Some(mesh) = self.mesh.get() {
                let _ = mesh
                    .tell(shard, MeshRequest::SyncedOffsets { consumer, delay })
                    .await;
            }
        }
    }
}
