//! The broker: N shards, one glommio executor each, every one accepting connections on the
//! broker port (and the fast port, `listenPort - 2`) with SO_REUSEPORT and owning the queues
//! [`placement`] gives it. Shard 0 is also the control shard (topic table, client registry,
//! nameserver registration). Started by `ringmq broker` and `ringmq standalone`.
//!
//! Layers, one way: request processors ([`processor`]) take a shard's services
//! ([`services`]), which sit on the store, ha and runtime; shards speak [`mesh_proto`]'s
//! messages to each other; [`shard`] wires it together (builds the services, routes each
//! request, answers the mesh) and this module starts the shards and their background tasks.
//! `import_graph.rs`'s test checks the direction and that the graph has no cycle.

pub mod consumer_groups;
pub mod context;
pub mod control;
#[cfg(test)]
mod import_graph;
pub mod live_config;
pub mod mesh_proto;
pub mod placement;
pub mod processor;
pub mod put_hop;
pub mod replication;
pub mod schedule;
pub mod services;
pub mod shard;
pub mod stats;
pub mod timer;
pub mod topic_config;

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::ExecutorJoinHandle;

use crate::config::{self, BrokerConfig, ShardScheduling};
use crate::log_limit::{LogLimiter, Verdict};
use crate::net::{bind, reserve_addr, serve, ServerOptions};
use crate::protocol::register::TopicConfig;
use crate::runtime::colocate::IdleSource;
use crate::runtime::mesh::{self, ShardMesh};
use crate::runtime::{spawn_executor, ExecutorOptions, Shutdown};
use crate::store::metadata::{self, ConsumerOffsetTable, SubscriptionGroupTable};
use crate::store::{DmaStorage, MessageStore, StoreConfig, SystemClock};
use consumer_groups::ClientRegistry;
use context::BrokerContext;
use mesh_proto::{MeshRequest, MeshResponse};
use processor::admin::{RuntimeSamples, ShardStats};
use services::group_book::GroupBook;
use services::mesh_client::MeshClient;
use services::offsets::OffsetBook;
use services::replication::SlaveStore;
use services::store::ShardStore;
use services::topic_book::TopicBook;
use services::topics::TopicReplica;
use shard::{Control, Shard};
use topic_config::TopicConfigManager;

use crate::limits::MESH_INBOX_CAPACITY;

/// Everything needed to run a broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub cfg: BrokerConfig,
    /// Nameservers to register with.
    pub namesrv_addrs: Vec<String>,
    /// Listen on this port instead of `listenPort` (0: any free port; tests).
    pub port_override: Option<u16>,
    /// Shards (0 = one per available core, capped by the config's `shardCount`).
    pub shards: usize,
    /// The `-c` file the config was read from: UPDATE_BROKER_CONFIG writes changes there.
    pub config_file: Option<std::path::PathBuf>,
    /// Controller mode: the SyncStateSet view the master's SYNC_MASTER wait follows (see
    /// [`crate::ha::SyncStateView`]); `None` outside controller mode.
    pub sync_state: Option<std::sync::Arc<crate::ha::SyncStateView>>,
}

/// A running broker.
pub struct BrokerHandle {
    /// The main port's address.
    pub local_addr: SocketAddr,
    /// The fast ("VIP") port's address.
    pub fast_addr: SocketAddr,
    /// The HA port's address (`listenPort + 1`; masters only listen there).
    pub ha_addr: SocketAddr,
    /// The address clients are given (`brokerIP1:port`).
    pub broker_addr: String,
    shutdown: Shutdown,
    joins: Vec<ExecutorJoinHandle<()>>,
}

impl BrokerHandle {
    /// Asks the broker to stop and waits until every shard has flushed and exited.
    pub fn stop(self) {
        self.shutdown.trigger();
        let _ = self.wait();
    }

    /// Waits until the broker has stopped; false when a shard failed (panicked) rather than
    /// stopping when asked.
    pub fn wait(self) -> bool {
        let mut clean = true;
        for join in self.joins {
            if let Err(e) = join.join() {
                tracing::error!(error = %e, "broker shard failed; the broker stopped");
                clean = false;
            }
        }
        clean
    }
}

fn shard_count(options: &BrokerOptions) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let configured = options.cfg.shard_count as usize;
    match (options.shards, configured) {
        (0, 0) => cores,
        (0, n) => n,
        (n, _) => n,
    }
    .clamp(1, 64)
}

/// Starts a broker. Returns once every shard is listening.
pub fn start(options: BrokerOptions, shutdown: Shutdown) -> io::Result<BrokerHandle> {
    let shards = shard_count(&options);
    // Shards wake each other by posting into the sleeper's io_uring (vendor/glommio
    // PATCHES.md item 5); RINGMQ_EVENTFD_WAKES=1 restores glommio's eventfd wake-ups, to
    // measure one against the other with one binary.
    if std::env::var_os("RINGMQ_EVENTFD_WAKES").is_some_and(|v| v == "1") {
        glommio::set_msg_ring_wakes(false);
    }
    let mut cfg = options.cfg.clone();
    // glommio resolves some file paths against the process directory and others against an
    // open directory: give it absolute paths only.
    std::fs::create_dir_all(&cfg.store_path_root_dir)?;
    cfg.store_path_root_dir = std::path::absolute(&cfg.store_path_root_dir)?;
    cfg.store_path_commitlog = std::path::absolute(&cfg.store_path_commitlog)?;
    let port = options.port_override.unwrap_or(cfg.listen_port);
    let local_addr = reserve_addr(SocketAddr::new(cfg.listen_addr, port))?;
    let fast_port = if port == 0 { 0 } else { port.saturating_sub(2) };
    let fast_addr = reserve_addr(SocketAddr::new(cfg.listen_addr, fast_port))?;
    let ha_port = if port == 0 { 0 } else { port.saturating_add(1) };
    let ha_addr = match cfg.broker_role {
        config::BrokerRole::Slave => SocketAddr::new(cfg.listen_addr, ha_port),
        _ => reserve_addr(SocketAddr::new(cfg.listen_addr, ha_port))?,
    };
    let store_host = SocketAddr::new(cfg.broker_ip1, local_addr.port());
    let ctx = BrokerContext {
        broker_addr: store_host.to_string(),
        store_host,
        shards,
        ha_port: ha_addr.port(),
        namesrv_addrs: options.namesrv_addrs.clone(),
        live: live_config::LiveConfig::new(&cfg, options.config_file.clone()),
        acl: crate::acl::Acl::for_broker(&cfg).map_err(io::Error::other)?,
        sync_state: options.sync_state.clone(),
        cfg,
    };
    let topics = TopicConfigManager::open(&ctx.cfg, true).map_err(io::Error::other)?;
    let initial_topics: Vec<TopicConfig> = topics.topics().cloned().collect();
    let groups: SubscriptionGroupTable = metadata::load(
        &metadata::MetadataPaths::new(&ctx.cfg.store_path_root_dir).subscription_group,
    )
    .map_err(io::Error::other)?;
    let mesh_builder = mesh::builder::<MeshRequest, MeshResponse>(shards, MESH_INBOX_CAPACITY)
        .with_colocation(
            ctx.cfg.shard_colocation.under(ctx.cfg.flush_disk_type),
            IdleSource::ProcStat,
        );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut control = Some((topics, groups));
    let mut joins = Vec::new();
    for id in 0..shards {
        let seed = ShardSeed {
            id,
            ctx: ctx.clone(),
            topics: initial_topics.clone(),
            control: control.take().filter(|_| id == 0),
            mesh: mesh_builder.clone(),
            addrs: (local_addr, fast_addr),
            ha_addr,
            ready: ready_tx.clone(),
            shutdown: shutdown.clone(),
        };
        let mut exec = ExecutorOptions::control_plane(&format!("shard-{id}"));
        exec.io_memory_bytes = 8 << 20;
        exec.ring_depth = ctx.cfg.io_depth.max(32) as usize;
        exec.cpu = (ctx.cfg.pin_shards && shards > 1).then_some(id % num_cpus());
        exec.batch_scheduling = ctx.cfg.shard_scheduling == ShardScheduling::Batch;

        joins.push(spawn_executor(&exec, move || run_shard(seed))?);
    }
    drop(ready_tx);
    for _ in 0..shards {
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("a broker shard exited during start-up"))??;
    }
    tracing::info!(%local_addr, %fast_addr, %ha_addr, shards, role = ?ctx.cfg.broker_role,
        broker = %ctx.broker_addr, "broker listening");
    Ok(BrokerHandle {
        local_addr,
        fast_addr,
        ha_addr,
        broker_addr: ctx.broker_addr,
        shutdown,
        joins,
    })
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What a shard's executor starts from.
struct ShardSeed {
    id: usize,
    ctx: BrokerContext,
    topics: Vec<TopicConfig>,
    control: Option<(TopicConfigManager, SubscriptionGroupTable)>,
    mesh: mesh::Builder<MeshRequest, MeshResponse>,
    addrs: (SocketAddr, SocketAddr),
    /// The HA port (the control shard of a master listens there).
    ha_addr: SocketAddr,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
    shutdown: Shutdown,
}

/// Stops the whole broker when one of its shard threads ends without being asked (a panic): a
/// broker missing a shard would keep registering queues nobody serves. Armed on the shard's
/// thread as a thread-local (its destructor runs however the thread ends, after a panic's
/// unwinding too) and disarmed when the shard returns normally. The other shards stop as on a
/// shutdown (flushing what they acknowledged) and answer calls to the dead shard with an error
/// ([`crate::runtime::mesh`]); the process exits non-zero for its supervisor to restart it.
struct StopBrokerOnPanic {
    shutdown: Shutdown,
    armed: bool,
}

impl Drop for StopBrokerOnPanic {
    fn drop(&mut self) {
        // No logging here: this runs among the thread's thread-local destructors, where
        // tracing's own may be gone. `BrokerHandle::wait` logs the failed shard.
        if self.armed {
            self.shutdown.trigger();
        }
    }
}

thread_local! {
    static STOP_ON_PANIC: std::cell::RefCell<Option<StopBrokerOnPanic>> =
        const { std::cell::RefCell::new(None) };
}

async fn run_shard(seed: ShardSeed) {
    let ready = seed.ready.clone();
    let shutdown = seed.shutdown.clone();
    STOP_ON_PANIC.with(|armed| {
        *armed.borrow_mut() = Some(StopBrokerOnPanic {
            shutdown: shutdown.clone(),
            armed: true,
        })
    });
    let (shard, listeners, ha_listener) = match open_shard(seed).await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e));
            disarm_stop_on_panic();
            return;
        }
    };
    let mut tasks = Vec::new();
    if shard.control.is_some() {
        // The control shard is ready once it has registered with the nameservers (as Java's
        // BrokerController.start does), so clients can route to it as soon as start returns.
        let topics = shard.control.as_ref().map(|c| Rc::clone(&c.topics));
        let learner = Rc::clone(&shard);
        let registration = control::run_registration(
            Rc::clone(&shard.ctx),
            topics.expect("the control shard has the topic table"),
            Rc::clone(&shard.registration),
            move |ha, remoting| {
                replication::master_addr_learned(&learner.ha, &learner.mesh, ha, remoting)
            },
            shutdown.clone(),
            ready,
        );
        tasks.push(glommio::spawn_local(registration));
    } else {
        let _ = ready.send(Ok(()));
        drop(ready);
    }
    tasks.push(glommio::spawn_local(persist_offsets(
        Rc::clone(&shard),
        shutdown.clone(),
    )));
    if shard.ctx.cfg.broker_role == config::BrokerRole::Slave {
        // A slave delivers no delayed messages and checks no transactions (its master does);
        // it follows the master's commitlog and copies its metadata.
        let store_cfg =
            StoreConfig::from_broker(&shard.ctx.cfg, shard.id as u8, shard.ctx.shards as u32);
        let store = SlaveStore::new(Rc::clone(&shard.store), store_cfg);
        let follower = replication::run_follower(shard.ha.clone(), store, shutdown.clone());
        tasks.push(glommio::spawn_local(follower));
        if shard.control.is_some() {
            let (syncing, stop) = (Rc::clone(&shard), shutdown.clone());
            tasks.push(glommio::spawn_local(async move {
                let Some(control) = &syncing.control else {
                    return;
                };
                let sync = replication::MetadataSync {
                    ctx: &syncing.ctx,
                    replication: &syncing.ha,
                    topic_book: &control.topics,
                    groups: &control.groups,
                    topics: &syncing.topics,
                    subscriptions: &syncing.subscriptions,
                    offsets: &syncing.offsets,
                    mesh: &syncing.mesh,
                    all: syncing.all_shards(),
                };
                replication::run_metadata_sync(&sync, stop).await
            }));
        }
    } else {
        for level in schedule::levels_of(&shard.ctx, shard.id) {
            let (delivering, stop) = (Rc::clone(&shard), shutdown.clone());
            tasks.push(glommio::spawn_local(async move {
                let scheduler = schedule::Scheduler {
                    ctx: &delivering.ctx,
                    offsets: &delivering.offsets,
                    puts: delivering.puts(),
                };
                schedule::run_level(&scheduler, level, stop).await
            }));
        }
        let (checking, stop) = (Rc::clone(&shard), shutdown.clone());
        let checks = async move {
            let checker = processor::transaction::Checker {
                ctx: &checking.ctx,
                store: &checking.store,
                offsets: &checking.offsets,
                checks: &checking.transactions,
                clients: checking.control.as_ref().map(|c| &c.clients),
                mesh: &checking.mesh,
                connections: &checking.connections,
            };
            processor::transaction::run_checks(&checker, stop).await
        };
        tasks.push(glommio::spawn_local(checks));
        let (timing, stop) = (Rc::clone(&shard), shutdown.clone());
        tasks.push(glommio::spawn_local(async move {
            let parts = timer::service::TimerShard {
                id: timing.id,
                ctx: &timing.ctx,
                puts: timing.puts(),
            };
            timer::service::run(parts, stop).await
        }));
    }
    if let Some(acl) = shard.ctx.acl.clone().filter(|_| shard.control.is_some()) {
        tasks.push(glommio::spawn_local(watch_acl(acl, shutdown.clone())));
    }
    if let Some(listener) = ha_listener {
        let parts = replication::HaListener {
            ctx: Rc::clone(&shard.ctx),
            replication: shard.ha.clone(),
            mesh: shard.mesh.get().cloned(),
            shutdown: shutdown.clone(),
        };
        let ha = replication::serve_ha(listener, parts);
        tasks.push(glommio::spawn_local(ha));
    }
    let servers = listeners
        .into_iter()
        .map(|l| {
            glommio::spawn_local(serve(
                l,
                Rc::clone(&shard),
                ServerOptions::default()
                    .idle_seconds(shard.ctx.cfg.server_channel_max_idle_seconds),
                shutdown.clone(),
            ))
        })
        .collect::<Vec<_>>();
    for server in servers {
        server.await;
    }
    for task in tasks {
        task.await;
    }
    if let Err(e) = shard.store.get().close().await {
        tracing::error!(shard = shard.id, error = %e, "closing the store failed");
    }
    tracing::info!(shard = shard.id, "shard stopped");
    disarm_stop_on_panic();
}

/// The shard ended as asked: its thread's exit stops nothing.
fn disarm_stop_on_panic() {
    STOP_ON_PANIC.with(|armed| {
        if let Some(mut guard) = armed.borrow_mut().take() {
            guard.armed = false;
        }
    });
}

type Listeners = (
    Rc<Shard>,
    Vec<glommio::net::TcpListener>,
    Option<glommio::net::TcpListener>,
);

async fn open_shard(seed: ShardSeed) -> io::Result<Listeners> {
    let store_cfg = StoreConfig::from_broker(&seed.ctx.cfg, seed.id as u8, seed.ctx.shards as u32);
    let store = MessageStore::open(DmaStorage, Rc::new(SystemClock), store_cfg)
        .await
        .map_err(io::Error::other)?;
    let ha = replication::open(&seed.ctx, seed.id, &store)?;
    let offsets: ConsumerOffsetTable =
        metadata::load(&shard_file(&seed.ctx, seed.id, Kind::ConsumerOffset))
            .map_err(io::Error::other)?;
    let delay_offsets: metadata::DelayOffsetTable =
        metadata::load(&shard_file(&seed.ctx, seed.id, Kind::DelayOffset))
            .map_err(io::Error::other)?;
    let stats = ShardStats::default();
    let boot_ms = stats.boot_ms();
    let control = seed.control.map(|(topics, groups)| Control {
        topics: Rc::new(TopicBook::new(topics)),
        clients: RefCell::new(ClientRegistry::default()),
        groups: GroupBook::new(
            groups,
            metadata::MetadataPaths::new(&seed.ctx.cfg.store_path_root_dir).subscription_group,
        ),
        locks: Default::default(),
        runtime: RuntimeSamples::new(boot_ms),
    });
    let shard = Rc::new(Shard {
        id: seed.id,
        mesh: MeshClient::new(seed.id, seed.ctx.shards),
        ctx: Rc::new(seed.ctx),
        store: Rc::new(ShardStore::new(store)),
        topics: TopicReplica::new(seed.topics),
        subscriptions: Default::default(),
        offsets: OffsetBook::new(offsets, delay_offsets),
        connections: Default::default(),
        control,
        registration: Default::default(),
        stats,
        refusals: Default::default(),
        transactions: Default::default(),
        ha,
        shutdown: seed.shutdown.clone(),
        put_hop: Default::default(),
    });
    let weak = Rc::downgrade(&shard);
    let mesh = ShardMesh::join(seed.mesh, move |_from, request| {
        let shard = weak.upgrade();
        async move {
            match shard {
                Some(shard) => shard.on_mesh(request).await,
                None => None,
            }
        }
    })
    .await
    .map_err(io::Error::other)?;
    // Sends handed to a shard that goes away are answered from here (put_hop).
    let handed = Rc::clone(shard.put_hop.handed());
    mesh.on_gone(move |peer| {
        let handed = Rc::clone(&handed);
        glommio::spawn_local(async move {
            let reason = format!("shard {peer} is gone (shutting down)");
            let error = processor::send::handed_error;
            crate::broker::services::puts::fail_handed(&handed, peer, &reason, error).await;
        })
        .detach();
    });
    shard.mesh.join(mesh);
    let listeners = vec![bind(seed.addrs.0)?, bind(seed.addrs.1)?];
    let is_master = shard.ctx.cfg.broker_role != config::BrokerRole::Slave;
    let ha_listener = match is_master && shard.id == 0 {
        true => Some(bind(seed.ha_addr)?),
        false => None,
    };
    Ok((shard, listeners, ha_listener))
}

/// The per-shard metadata files.
#[derive(Clone, Copy)]
enum Kind {
    ConsumerOffset,
    DelayOffset,
}

/// Where shard `id` keeps a per-shard metadata file: Java's name for shard 0
/// (`config/consumerOffset.json`), `<name>.<id>.json` for the others.
fn shard_file(ctx: &BrokerContext, id: usize, kind: Kind) -> std::path::PathBuf {
    let paths = metadata::MetadataPaths::new(&ctx.cfg.store_path_root_dir);
    let (base, stem) = match kind {
        Kind::ConsumerOffset => (paths.consumer_offset, "consumerOffset"),
        Kind::DelayOffset => (paths.delay_offset, "delayOffset"),
    };
    match id {
        0 => base,
        n => base.with_file_name(format!("{stem}.{n}.json")),
    }
}

/// Persists the shard's consumer and delay offsets every `flushConsumerOffsetInterval` and at
/// shutdown.
async fn persist_offsets(shard: Rc<Shard>, shutdown: Shutdown) {
    let path = shard_file(&shard.ctx, shard.id, Kind::ConsumerOffset);
    let delay_path = shard_file(&shard.ctx, shard.id, Kind::DelayOffset);
    let interval = Duration::from_millis(shard.ctx.cfg.flush_consumer_offset_interval_ms.max(100));
    let log = LogLimiter::new(crate::refusal::REFUSAL_LOG_INTERVAL, 2);
    loop {
        let stopping = future::or(
            async {
                glommio::timer::sleep(interval).await;
                false
            },
            async {
                shutdown.wait().await;
                true
            },
        )
        .await;
        // Encoded here (bounded by the (group, queue) pairs this shard owns), written and
        // fsynced on a blocking thread: the shard keeps serving while the disk works.
        let (offsets, delay) = shard.offsets.encode_for_persist(&path, &delay_path);
        let (p, d) = (path.clone(), delay_path.clone());
        let written = glommio::executor()
            .spawn_blocking(move || {
                (
                    offsets.and_then(|bytes| metadata::persist_encoded(&p, &bytes)),
                    delay.and_then(|bytes| metadata::persist_encoded(&d, &bytes)),
                )
            })
            .await;
        // A failure (a full disk) keeps the offsets in memory and is retried next round;
        // logged once per 10 s with a count.
        if let Err(e) = written.0 {
            if let Verdict::Log { suppressed } = log.check("consumer") {
                tracing::error!(error = %e, suppressed, "cannot persist consumer offsets");
            }
        }
        if let Err(e) = written.1 {
            if let Verdict::Log { suppressed } = log.check("delay") {
                tracing::error!(error = %e, suppressed, "cannot persist delay offsets");
            }
        }
        if stopping {
            return;
        }
    }
}

/// Reloads the ACL files when they change (a stat per file every second, on the control shard;
/// a file that no longer parses is refused and the rules in force stay).
async fn watch_acl(acl: std::sync::Arc<crate::acl::Acl>, shutdown: Shutdown) {
    while shutdown
        .sleep(crate::acl::manager::RELOAD_CHECK_INTERVAL)
        .await
    {
        match acl.poll() {
            None => {}
            Some(Ok(files)) => tracing::info!(files, "ACL reloaded"),
            Some(Err(e)) => {
                tracing::error!(error = %e, "ACL file refused; the previous rules stay in force")
            }
        }
    }
}
