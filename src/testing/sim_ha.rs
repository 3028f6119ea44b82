//! The deterministic simulator of one master shard and its slave (issue 17, item 4), in the
//! spirit of TigerBeetle's VOPR: one seed decides everything — the workload, the network, the
//! disks, the crashes, and the order things happen in — so a failing seed replays exactly.
//! One run is single-threaded on one glommio executor, on simulated storage
//! ([`SimStorage`]), a simulated clock ([`SimClock`]) and a simulated network, and checks the
//! invariants after every step.
//!
//! # What is real and what is modelled
//!
//! Real (the production code, unchanged):
//! - both stores: puts (SYNC_FLUSH group commit, O_DSYNC or fdatasync rounds, chosen per
//!   seed), the flusher task, consume queues and index, recovery after a crash, the replicated
//!   append of the slave (record checks, dispatch) and its cut of a diverged log
//!   (`truncate_to` at reopen);
//! - HA's state machines: the master's [`Replicas`] (the WELCOME decision from
//!   [`crate::ha::history`], the frames it ships from the commitlog, the acknowledgement
//!   tracking and the SYNC_MASTER wait the store's puts go through), the slave's [`Follower`]
//!   steps (HELLO, WELCOME checks, frame checks, apply, what it reports — flushed bytes under
//!   SYNC_FLUSH), and every HELLO, WELCOME, FRAME and report encoded and decoded by
//!   [`crate::ha::proto`] on the way through the simulated network.
//!
//! Modelled here:
//! - the socket loops around those steps (`Replicas::serve`'s send and ack loops,
//!   `Follower::session`'s receive and report loops): the simulator calls the same steps they
//!   call, when bytes arrive and when simulated time says a heartbeat is due or a link has
//!   been silent for `haHousekeepingInterval`; the reconnection backoff follows the
//!   follower's constants;
//! - the network: per connection two byte pipes that keep order (TCP), with random delays,
//!   partitions (nothing crosses until they heal), resets (in-flight bytes lost, RST both
//!   ways), and independent connections whose bytes interleave in any order — an old
//!   connection's reports may arrive after a new one's HELLO; a crashed host sends nothing,
//!   its peer learns from silence or from the RST its restarted kernel answers with;
//! - the disk's speed: [`SimStorage::hold_durability`] stops a disk completing flushes for a
//!   while of simulated time, and each step gives the executor a random number of turns
//!   (0–3), so flushes, puts and reports race in seed-chosen orders; power loss is
//!   [`SimStorage::crash`] (unsynced writes kept, lost or torn);
//! - the history files (`ha/<shard>`): written atomically by the real code, kept by the
//!   simulator as durable values; a master restart begins a new epoch as `Replicas::open`
//!   does;
//! - time: the stores' clock is a [`SimClock`]; the real code's own timers (the SYNC_MASTER
//!   wait's `slaveTimeout`, `syncFlushTimeout`, the queue flush interval) are set beyond any
//!   run so that none fires (a client giving up is not modelled: an unanswered put is simply
//!   not acknowledged).
//!
//! Not covered: controller mode (SyncStateSet acknowledgements, fences, stale-master
//! refusals), the HA link's ACL, more than one slave or shard, retention (so no slave is ever
//! wiped: its history always shares the master's first epoch), and the real timers named
//! above.
//!
//! # Invariants (checked after every step; a violation fails the seed)
//!
//! - An acknowledged put is durable on the master's disk when the acknowledgement leaves
//!   (its bytes in the durable image of the segment file parse to its record), and under
//!   SYNC_MASTER durable on the slave's disk at the same offset.
//! - The slave's epochs are a prefix of the master's, and its log holds the master's bytes
//!   up to their common point (history.rs's `common_point`), record by record.
//! - Queue offsets are dense: every read (random pulls on both sides, full scans after every
//!   restart) returns consecutive offsets; no message id appears twice in a queue; every
//!   acknowledged message is at its queue offset on the master after any crash, and a
//!   SYNC_MASTER-acknowledged one on the slave too.
//! - Recovery succeeds after every crash.
//!
//! # Running it
//!
//! `cargo test --lib testing::sim_ha` sweeps a few seeds; `ringmq-sim` (feature `sim`) runs
//! long sweeps and replays one seed with its event trace (README, "Simulator"). The planted
//! bug: feature `sim-bug-unflushed-ack` makes a SYNC_FLUSH slave report bytes it has not made
//! durable (`Follower::report_watch`); the sweep finds it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;

use super::{SimClock, SimStorage};
use crate::config::FlushDiskType;
use crate::ha::history::{common_point, History};
use crate::ha::master::{Link, Replicas};
use crate::ha::proto::{
    handshake_len, FrameHeader, Hello, Welcome, FRAME_DATA, FRAME_HEADER_BYTES,
};
use crate::ha::slave::{check_start, Follower, MasterAddr, BACKOFF_MAX, BACKOFF_MIN};
use crate::ha::{AckPolicy, HaOptions};
use crate::message::record::{
    peek_header, RecordInput, RecordView, BLANK_MAGIC_CODE, BLANK_RECORD_BYTES,
};
use crate::store::io::Storage;
use crate::store::{MessageStore, PutStatus, Reader, StoreConfig};

const TOPIC: &str = "SimTopic";
const QUEUES: i32 = 2;
/// Simulated `haSendHeartbeatInterval` and `haHousekeepingInterval`, in ms.
const HEARTBEAT_MS: u64 = 500;
const HOUSEKEEPING_MS: u64 = 3_000;
/// Real-time limits of the real code, set beyond any run (see the module doc).
const NEVER: Duration = Duration::from_secs(86_400);
const SEGMENT_BYTES: u64 = 64 << 10;
const EVENTS_KEPT: usize = 60;

/// How one seed ended well.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub steps: u64,
    pub sim_ms: u64,
    pub puts: u64,
    /// Acknowledged under SYNC_FLUSH only, and under SYNC_MASTER.
    pub acked_flush: u64,
    pub acked_master: u64,
    pub master_crashes: u64,
    pub slave_crashes: u64,
    pub sessions: u64,
    /// Slave reopens cutting a diverged log, or starting over.
    pub truncations: u64,
    pub wipes: u64,
    pub pulls: u64,
    /// Bytes of the slave's log compared with the master's, record by record.
    pub compared_bytes: u64,
    /// A hash of the whole event trace: two runs of a seed give the same one.
    pub digest: u64,
}

/// A seed that broke an invariant.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub what: String,
    /// The last events before it, oldest first.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {}: {}",
            self.seed, self.step, self.what
        )?;
        writeln!(f, "last events:")?;
        for e in &self.trace {
            writeln!(f, "  {e}")?;
        }
        write!(
            f,
            "replay: cargo run --release --features sim --bin ringmq-sim -- --replay {} \
             --steps {}",
            self.seed,
            self.step + 1
        )
    }
}

/// Runs `seeds` of `steps` each, each on a glommio executor of its own on this thread (a
/// dead store leaves a task queue behind in its executor; thousands of them slowed a long
/// sweep down); stops at the first failure when `stop_at_first`. `on_seed` sees each seed's
/// result as it ends.
pub fn sweep(
    seeds: impl IntoIterator<Item = u64>,
    steps: u64,
    stop_at_first: bool,
    mut on_seed: impl FnMut(u64, &Result<SimStats, SimFailure>),
) -> Vec<Result<SimStats, SimFailure>> {
    let mut out = Vec::new();
    for seed in seeds {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .ring_depth(64)
            .make()
            .expect("cannot start a glommio executor");
        let result = ex.run(run_seed(seed, steps, false));
        on_seed(seed, &result);
        let failed = result.is_err();
        out.push(result);
        if failed && stop_at_first {
            break;
        }
    }
    out
}

/// One seed, `steps` steps (on a glommio executor). `verbose`: every event goes to stderr.
pub async fn run_seed(seed: u64, steps: u64, verbose: bool) -> Result<SimStats, SimFailure> {
    let mut world = World::new(seed, verbose).await;
    let result = world.run(steps).await;
    world.shutdown().await;
    result
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    SyncFlush,
    SyncMaster,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pending,
    Acked { queue_offset: i64 },
    NotAcked,
}

struct Sent {
    queue: i32,
    body: Vec<u8>,
    mode: Mode,
    outcome: Outcome,
}

/// What the put tasks share with the simulator.
struct Shared {
    sent: BTreeMap<u64, Sent>,
    violations: Vec<String>,
    master_disk: SimStorage,
    slave_disk: SimStorage,
    master_dir: PathBuf,
    slave_dir: PathBuf,
    events: Vec<String>,
    /// FNV-1a over every event (the run's fingerprint).
    digest: u64,
    verbose: bool,
}

enum Seg {
    Data(Vec<u8>),
    Fin,
    Rst,
}

#[derive(Default)]
struct Pipe {
    queue: VecDeque<(u64, Seg)>,
    last_at: u64,
}

struct MasterEnd {
    rx: Vec<u8>,
    link: Option<Rc<Link>>,
    pos: u64,
    last_rx: u64,
    last_tx: u64,
}

#[derive(PartialEq, Eq)]
enum Phase {
    AwaitWelcome,
    Streaming,
}

struct SlaveEnd {
    rx: Vec<u8>,
    phase: Phase,
    last_rx: u64,
    last_tx: u64,
    sent: Option<u64>,
    streamed: bool,
}

struct Conn {
    id: u64,
    to_master: Pipe,
    to_slave: Pipe,
    master: Option<MasterEnd>,
    slave: Option<SlaveEnd>,
}

struct MasterNode {
    store: MessageStore<SimStorage>,
    replicas: Rc<Replicas<SimStorage>>,
    mode: Mode,
    /// The put tasks (dropped, so cancelled, when the master dies) and whether each ended.
    puts: Vec<(Rc<std::cell::Cell<bool>>, glommio::Task<()>)>,
}

struct SlaveNode {
    store: MessageStore<SimStorage>,
    follower: Rc<Follower>,
}

/// How often each action is picked (per seed: swarm testing, every seed its own mix).
struct Weights {
    put: u64,
    tick: u64,
    deliver: u64,
    pull: u64,
    hold: u64,
    partition: u64,
    reset: u64,
    crash_master: u64,
    crash_slave: u64,
}

struct World {
    seed: u64,
    step: u64,
    rng: Rng,
    clock: SimClock,
    now: u64,
    shared: Rc<RefCell<Shared>>,
    m_disk: SimStorage,
    s_disk: SimStorage,
    m_cfg: StoreConfig,
    s_cfg: StoreConfig,
    opts: HaOptions,
    master: Option<MasterNode>,
    slave: Option<SlaveNode>,
    m_history: History,
    s_history: History,
    m_down_until: u64,
    s_down_until: u64,
    m_hold_until: u64,
    s_hold_until: u64,
    partition_until: u64,
    conns: Vec<Conn>,
    next_conn: u64,
    next_connect_at: u64,
    backoff: Duration,
    next_id: u64,
    /// The log prefix already compared between the two sides.
    verified: u64,
    weights: Weights,
    stats: SimStats,
}

fn store_config(root: &str, rng: &mut Rng) -> StoreConfig {
    let mut cfg = StoreConfig::for_dir(root);
    cfg.segment_bytes = SEGMENT_BYTES;
    cfg.max_message_bytes = 4096;
    cfg.consume_queue_file_bytes = 20 * 1024;
    cfg.flush_disk_type = FlushDiskType::SyncFlush;
    cfg.sync_flush_timeout_ms = NEVER.as_millis() as u64;
    cfg.flush_interval_consume_queue_ms = NEVER.as_millis() as u64;
    cfg.flush_consume_queue_thorough_interval_ms = NEVER.as_millis() as u64;
    cfg.retention.clean_resource_interval_ms = NEVER.as_millis() as u64;
    cfg.index_active_entries_max = 64;
    cfg.sync_flush_dsync = rng.chance(500);
    cfg.hot_tail_bytes = match rng.chance(500) {
        true => 4096,
        false => 8 << 20,
    };
    cfg
}

/// `disk`'s bytes `[pos, pos + len)` of the commitlog in `dir` (durable image or current).
fn log_bytes(disk: &SimStorage, dir: &Path, pos: u64, len: u64, durable: bool) -> Option<Vec<u8>> {
    let seg = pos - pos % SEGMENT_BYTES;
    let path = dir.join(format!("{seg:020}"));
    let file = match durable {
        true => disk.durable_bytes(&path)?,
        false => disk.file_bytes(&path)?,
    };
    let from = (pos - seg) as usize;
    file.get(from..from + len as usize).map(<[u8]>::to_vec)
}

/// Whether `bytes` parse to a record of `body`.
fn holds_body(bytes: Option<Vec<u8>>, body: &[u8]) -> bool {
    bytes.is_some_and(|b| RecordView::parse(&b).is_ok_and(|v| v.body == body))
}

fn id_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body.get(4..14)?).ok()?;
    text.parse().ok()
}

impl Shared {
    fn event(&mut self, text: String) {
        if self.verbose {
            eprintln!("{text}");
        }
        for b in text.bytes() {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        self.events.push(text);
        if self.events.len() > 4 * EVENTS_KEPT {
            self.events.drain(..self.events.len() - EVENTS_KEPT);
        }
    }

    /// A put's answer is leaving for the client: checks what it promises.
    fn answered(&mut self, id: u64, result: &crate::store::StoreResult<crate::store::PutResult>) {
        let Some(sent) = self.sent.get(&id) else {
            return;
        };
        let (mode, body) = (sent.mode, sent.body.clone());
        let outcome = match result {
            Ok(put) if put.status == PutStatus::PutOk => {
                let (pos, len) = (put.physical_offset as u64, put.wrote_bytes as u64);
                let on_master = log_bytes(&self.master_disk, &self.master_dir, pos, len, true);
                if !holds_body(on_master, &body) {
                    self.violations.push(format!(
                        "put {id} acknowledged (SYNC_FLUSH) but its record at {pos} is not \
                         durable on the master"
                    ));
                }
                if mode == Mode::SyncMaster {
                    let on_slave = log_bytes(&self.slave_disk, &self.slave_dir, pos, len, true);
                    if !holds_body(on_slave, &body) {
                        self.violations.push(format!(
                            "put {id} acknowledged under SYNC_MASTER but its record at {pos} \
                             is not durable on the slave"
                        ));
                    }
                }
                Outcome::Acked {
                    queue_offset: put.queue_offset,
                }
            }
            _ => Outcome::NotAcked,
        };
        self.event(format!("  put {id} answered {outcome:?}"));
        if let Some(sent) = self.sent.get_mut(&id) {
            sent.outcome = outcome;
        }
    }
}

fn record(queue: i32, body: &[u8], now_ms: i64) -> (BytesMut, crate::message::record::RecordSlots) {
    let input = RecordInput {
        topic: TOPIC,
        queue_id: queue,
        flag: 0,
        sys_flag: 0,
        born_timestamp: now_ms,
        born_host: "10.0.0.1:4000".parse().expect("an address"),
        store_host: "10.0.0.2:10911".parse().expect("an address"),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        properties: "",
    };
    let mut buf = BytesMut::new();
    let slots = input.encode(&mut buf).expect("a record encodes");
    (buf, slots)
}

impl Pipe {
    fn push(&mut self, at: u64, seg: Seg) {
        let at = at.max(self.last_at);
        self.last_at = at;
        self.queue.push_back((at, seg));
    }
}

impl World {
    async fn new(seed: u64, verbose: bool) -> World {
        let mut rng = Rng(seed ^ 0x005E_ED0F_7E57);
        let m_disk = SimStorage::new(rng.next());
        let s_disk = SimStorage::new(rng.next());
        let m_cfg = store_config("/master", &mut rng);
        let s_cfg = store_config("/slave", &mut rng);
        let mut w = |scale: u64| rng.range(0, scale);
        let weights = Weights {
            put: 10 + w(40),
            tick: 10 + w(40),
            deliver: 5 + w(30),
            pull: 1 + w(6),
            hold: w(6),
            partition: w(2),
            reset: w(2),
            crash_master: w(2),
            crash_slave: w(2),
        };
        let opts = HaOptions {
            batch_bytes: [4096, 16 << 10, 256 << 10][(rng.next() % 3) as usize],
            heartbeat: Duration::from_millis(HEARTBEAT_MS),
            housekeeping: Duration::from_millis(HOUSEKEEPING_MS),
            slave_timeout: NEVER,
            fallbehind_max: u64::MAX / 4,
            ack: AckPolicy {
                all_ack_in_sync_state_set: false,
                in_sync_replicas: 1,
                min_in_sync_replicas: 1,
            },
        };
        let shared = Rc::new(RefCell::new(Shared {
            sent: BTreeMap::new(),
            violations: Vec::new(),
            master_disk: m_disk.clone(),
            slave_disk: s_disk.clone(),
            master_dir: m_cfg.commitlog_dir.join("0"),
            slave_dir: s_cfg.commitlog_dir.join("0"),
            events: Vec::new(),
            digest: 0xCBF2_9CE4_8422_2325,
            verbose,
        }));
        let clock = SimClock::new(1_700_000_000_000);
        m_disk.set_clock(&clock);
        s_disk.set_clock(&clock);
        let lineage = rng.next() | 1;
        World {
            seed,
            step: 0,
            rng,
            clock,
            now: 0,
            shared,
            m_disk,
            s_disk,
            m_cfg,
            s_cfg,
            opts,
            master: None,
            slave: None,
            m_history: History {
                lineage,
                epochs: Vec::new(),
            },
            s_history: History::default(),
            m_down_until: 0,
            s_down_until: 0,
            m_hold_until: 0,
            s_hold_until: 0,
            partition_until: 0,
            conns: Vec::new(),
            next_conn: 1,
            next_connect_at: 0,
            backoff: BACKOFF_MIN,
            next_id: 1,
            verified: 0,
            weights,
            stats: SimStats::default(),
        }
    }

    fn event(&mut self, text: impl Into<String>) {
        let text = format!("[{} t={}] {}", self.step, self.now, text.into());
        self.shared.borrow_mut().event(text);
    }

    fn fail(&self, what: String) -> SimFailure {
        let shared = self.shared.borrow();
        let from = shared.events.len().saturating_sub(EVENTS_KEPT);
        SimFailure {
            seed: self.seed,
            step: self.step,
            what,
            trace: shared.events[from..].to_vec(),
        }
    }

    async fn run(&mut self, steps: u64) -> Result<SimStats, SimFailure> {
        self.start_master().await?;
        self.start_slave().await?;
        for step in 0..steps {
            self.step = step;
            self.act().await?;
            self.pump().await?;
            for _ in 0..self.rng.range(0, 3) {
                futures_lite::future::yield_now().await;
            }
            self.check().await?;
        }
        self.stats.steps = steps;
        self.stats.sim_ms = self.now;
        let shared = self.shared.borrow();
        self.stats.digest = shared.digest;
        self.stats.puts = shared.sent.len() as u64;
        for s in shared.sent.values() {
            if let Outcome::Acked { .. } = s.outcome {
                match s.mode {
                    Mode::SyncFlush => self.stats.acked_flush += 1,
                    Mode::SyncMaster => self.stats.acked_master += 1,
                }
            }
        }
        Ok(self.stats.clone())
    }

    async fn shutdown(&mut self) {
        if let Some(m) = self.master.take() {
            self.m_disk.kill();
            bury(&self.m_disk, m.store, m.puts).await;
        }
        if let Some(s) = self.slave.take() {
            self.s_disk.kill();
            bury(&self.s_disk, s.store, Vec::new()).await;
        }
        self.conns.clear();
    }

    async fn act(&mut self) -> Result<(), SimFailure> {
        let w = &self.weights;
        let table = [
            w.put,
            w.tick,
            w.deliver,
            w.pull,
            w.hold,
            w.partition,
            w.reset,
            w.crash_master,
            w.crash_slave,
        ];
        let mut pick = self.rng.next() % table.iter().sum::<u64>();
        let mut action = 0;
        while pick >= table[action] {
            pick -= table[action];
            action += 1;
        }
        match action {
            0 => self.put(),
            1 => {
                let dt = match self.rng.chance(30) {
                    true => self.rng.range(300, 4_000),
                    false => self.rng.range(1, 40),
                };
                self.now += dt;
                self.clock.advance(dt as i64);
                self.deliver(usize::MAX).await?;
            }
            2 => self.deliver(1).await?,
            3 => self.pull().await?,
            4 => {
                let until = self.now + self.rng.range(5, 800);
                match self.rng.chance(500) {
                    true if self.master.is_some() => {
                        self.m_disk.hold_durability(true);
                        self.m_hold_until = until;
                        self.event(format!("master disk holds flushes until {until}"));
                    }
                    false if self.slave.is_some() => {
                        self.s_disk.hold_durability(true);
                        self.s_hold_until = until;
                        self.event(format!("slave disk holds flushes until {until}"));
                    }
                    _ => {}
                }
            }
            5 if self.now >= self.partition_until && self.rng.chance(300) => {
                self.partition_until = self.now + self.rng.range(50, 2 * HOUSEKEEPING_MS);
                let until = self.partition_until;
                self.event(format!("network partitioned until {until}"));
            }
            6 => self.reset_conn(),
            // Crashes are rarer than their weight says: a link needs time to do anything.
            7 if self.master.is_some() && self.rng.chance(250) => self.crash_master().await,
            8 if self.slave.is_some() && self.rng.chance(250) => self.crash_slave().await,
            _ => {}
        }
        Ok(())
    }

    fn put(&mut self) {
        let Some(m) = &mut self.master else { return };
        let id = self.next_id;
        self.next_id += 1;
        let queue = (self.rng.next() % QUEUES as u64) as i32;
        let len = self.rng.range(16, 700) as usize;
        let mut body = format!("sim-{id:010}-").into_bytes();
        let fill = b'a' + (id % 26) as u8;
        body.resize(len.max(body.len()), fill);
        let mode = m.mode;
        self.shared.borrow_mut().sent.insert(
            id,
            Sent {
                queue,
                body: body.clone(),
                mode,
                outcome: Outcome::Pending,
            },
        );
        let (rec, slots) = record(queue, &body, crate::store::Clock::now_ms(&self.clock));
        let store = m.store.clone();
        let shared = Rc::clone(&self.shared);
        m.puts.retain(|(done, _)| !done.get());
        let done = Rc::new(std::cell::Cell::new(false));
        let finished = Rc::clone(&done);
        let task = glommio::spawn_local(async move {
            let result = store.put(rec, slots, true).await;
            shared.borrow_mut().answered(id, &result);
            finished.set(true);
        });
        m.puts.push((done, task));
        self.event(format!("put {id} queue {queue} {len} B ({mode:?})"));
    }

    fn delay(&mut self) -> u64 {
        match self.rng.chance(20) {
            true => self.rng.range(100, 1_500),
            false => self.rng.range(0, 20),
        }
    }

    fn send_to_master(&mut self, conn: usize, seg: Seg) {
        let at = self.now + self.delay();
        self.conns[conn].to_master.push(at, seg);
    }

    fn send_to_slave(&mut self, conn: usize, seg: Seg) {
        let at = self.now + self.delay();
        self.conns[conn].to_slave.push(at, seg);
    }

    /// Delivers up to `max` segments due by now, earliest first (ties: connection, then
    /// direction), unless the network is partitioned.
    async fn deliver(&mut self, max: usize) -> Result<(), SimFailure> {
        for _ in 0..max {
            if self.now < self.partition_until {
                return Ok(());
            }
            let mut best: Option<(u64, usize, bool)> = None;
            for (i, c) in self.conns.iter().enumerate() {
                for (to_master, pipe) in [(true, &c.to_master), (false, &c.to_slave)] {
                    if let Some((at, _)) = pipe.queue.front() {
                        if *at <= self.now && best.is_none_or(|(b, _, _)| *at < b) {
                            best = Some((*at, i, to_master));
                        }
                    }
                }
            }
            let Some((_, i, to_master)) = best else {
                return Ok(());
            };
            let seg = match to_master {
                true => self.conns[i].to_master.queue.pop_front(),
                false => self.conns[i].to_slave.queue.pop_front(),
            };
            let Some((_, seg)) = seg else { continue };
            match to_master {
                true => self.at_master(i, seg).await?,
                false => self.at_slave(i, seg).await?,
            }
            self.conns
                .retain(|c| c.master.is_some() || c.slave.is_some() || !c.is_drained());
        }
        Ok(())
    }

    /// A segment reaches the master's end of connection `i`.
    async fn at_master(&mut self, i: usize, seg: Seg) -> Result<(), SimFailure> {
        let id = self.conns[i].id;
        if self.conns[i].master.is_none() || self.master.is_none() {
            // A closed socket, or a host that restarted since: data is answered with RST.
            if let Seg::Data(_) = seg {
                if self.master.is_some() && self.conns[i].slave.is_some() {
                    self.send_to_slave(i, Seg::Rst);
                }
            }
            self.conns[i].master = None;
            return Ok(());
        }
        let data = match seg {
            Seg::Data(data) => data,
            Seg::Fin | Seg::Rst => {
                self.event(format!("conn {id}: master sees the link closed"));
                self.close_master_end(i, false);
                return Ok(());
            }
        };
        let now = self.now;
        let end = self.conns[i].master.as_mut().expect("open");
        end.rx.extend_from_slice(&data);
        end.last_rx = now;
        loop {
            let end = self.conns[i].master.as_mut().expect("open");
            if end.link.is_none() {
                if end.rx.len() < 4 {
                    return Ok(());
                }
                let prefix: [u8; 4] = end.rx[..4].try_into().expect("4 bytes");
                let len = match handshake_len(prefix) {
                    Ok(len) => len,
                    Err(e) => return Err(self.fail(format!("the simulated slave's HELLO: {e}"))),
                };
                if end.rx.len() < 4 + len {
                    return Ok(());
                }
                let body: Vec<u8> = end.rx.drain(..4 + len).skip(4).collect();
                let hello = match Hello::decode_signed(&body) {
                    Ok((hello, _)) => hello,
                    Err(e) => return Err(self.fail(format!("a HELLO does not decode: {e}"))),
                };
                let replicas = Rc::clone(&self.master.as_ref().expect("alive").replicas);
                let welcome = replicas.welcome(&hello);
                self.event(format!(
                    "conn {id}: master welcomes offset {} epochs {:?}: {welcome:?}",
                    hello.offset, hello.epochs
                ));
                self.send_to_slave(i, Seg::Data(welcome.encode()));
                match welcome {
                    Welcome::Refused(_) => {
                        self.send_to_slave(i, Seg::Fin);
                        self.conns[i].master = None;
                        return Ok(());
                    }
                    Welcome::Stream { start, .. } => {
                        let end = self.conns[i].master.as_mut().expect("open");
                        end.link = Some(replicas.attach(&hello.slave_addr));
                        end.pos = start;
                        end.last_tx = now;
                    }
                }
                continue;
            }
            if end.rx.len() < 8 {
                return Ok(());
            }
            let report: Vec<u8> = end.rx.drain(..8).collect();
            let offset = u64::from_be_bytes(report.try_into().expect("8 bytes"));
            let link = Rc::clone(end.link.as_ref().expect("linked"));
            let replicas = Rc::clone(&self.master.as_ref().expect("alive").replicas);
            if let Err(e) = replicas.on_report(&link, offset) {
                self.event(format!("conn {id}: master ends the link: {e}"));
                self.close_master_end(i, true);
                return Ok(());
            }
        }
    }

    fn close_master_end(&mut self, i: usize, send_fin: bool) {
        if let Some(end) = self.conns[i].master.take() {
            if let (Some(link), Some(m)) = (end.link, &self.master) {
                m.replicas.detach(&link);
            }
            if send_fin {
                self.send_to_slave(i, Seg::Fin);
            }
        }
    }

    /// A segment reaches the slave's end of connection `i`.
    async fn at_slave(&mut self, i: usize, seg: Seg) -> Result<(), SimFailure> {
        let id = self.conns[i].id;
        if self.conns[i].slave.is_none() || self.slave.is_none() {
            if let Seg::Data(_) = seg {
                if self.slave.is_some() && self.conns[i].master.is_some() {
                    self.send_to_master(i, Seg::Rst);
                }
            }
            self.conns[i].slave = None;
            return Ok(());
        }
        let data = match seg {
            Seg::Data(data) => data,
            Seg::Fin | Seg::Rst => {
                self.end_session(i, "the master closed the link".into(), false);
                return Ok(());
            }
        };
        let now = self.now;
        let end = self.conns[i].slave.as_mut().expect("open");
        end.rx.extend_from_slice(&data);
        end.last_rx = now;
        loop {
            let end = self.conns[i].slave.as_mut().expect("open");
            if end.phase == Phase::AwaitWelcome {
                if end.rx.len() < 4 {
                    return Ok(());
                }
                let prefix: [u8; 4] = end.rx[..4].try_into().expect("4 bytes");
                let len = match handshake_len(prefix) {
                    Ok(len) => len,
                    Err(e) => return Err(self.fail(format!("a WELCOME's length: {e}"))),
                };
                if end.rx.len() < 4 + len {
                    return Ok(());
                }
                let body: Vec<u8> = end.rx.drain(..4 + len).skip(4).collect();
                let welcome = match Welcome::decode(&body) {
                    Ok(w) => w,
                    Err(e) => return Err(self.fail(format!("a WELCOME does not decode: {e}"))),
                };
                let follower = Rc::clone(&self.slave.as_ref().expect("alive").follower);
                let (action, start, history) = match follower.accept_welcome("master", welcome) {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        self.end_session(i, e.to_string(), true);
                        return Ok(());
                    }
                };
                if action != crate::ha::proto::Action::Continue {
                    self.reopen_slave(action, start).await?;
                }
                let store = self.slave.as_ref().expect("alive").store.clone();
                if let Err(e) = check_start(start, store.written_offset()) {
                    self.end_session(i, e.to_string(), true);
                    return Ok(());
                }
                // The history file is written atomically before streaming (modelled).
                self.s_history = history;
                follower.streaming("master", start);
                self.conns[i].slave.as_mut().expect("open").phase = Phase::Streaming;
                self.stats.sessions += 1;
                self.event(format!(
                    "conn {id}: slave streams from {start} ({action:?})"
                ));
                continue;
            }
            if end.rx.len() < FRAME_HEADER_BYTES {
                return Ok(());
            }
            let header: [u8; FRAME_HEADER_BYTES] =
                end.rx[..FRAME_HEADER_BYTES].try_into().expect("a header");
            let frame = match FrameHeader::decode(&header) {
                Ok(frame) => frame,
                Err(e) => return Err(self.fail(format!("a FRAME does not decode: {e}"))),
            };
            let follower = Rc::clone(&self.slave.as_ref().expect("alive").follower);
            if let Err(e) = follower.on_frame_header(&frame) {
                self.end_session(i, e.to_string(), true);
                return Ok(());
            }
            let store = self.slave.as_ref().expect("alive").store.clone();
            if frame.kind != FRAME_DATA {
                end.rx.drain(..FRAME_HEADER_BYTES);
                follower.on_heartbeat(&store);
                continue;
            }
            let total = FRAME_HEADER_BYTES + frame.len as usize;
            if end.rx.len() < total {
                return Ok(());
            }
            let payload: Vec<u8> = end.rx.drain(..total).skip(FRAME_HEADER_BYTES).collect();
            end.streamed = true;
            if let Err(e) = follower.apply(frame.pos, &payload, &store).await {
                self.end_session(i, e.to_string(), true);
                return Ok(());
            }
        }
    }

    /// The slave's session on connection `i` ends (`send_fin`: it closes the socket).
    fn end_session(&mut self, i: usize, reason: String, send_fin: bool) {
        let id = self.conns[i].id;
        let Some(end) = self.conns[i].slave.take() else {
            return;
        };
        if let Some(s) = &self.slave {
            s.follower.disconnected();
        }
        if send_fin {
            self.send_to_master(i, Seg::Fin);
        }
        self.backoff = match end.streamed {
            true => BACKOFF_MIN,
            false => (self.backoff * 2).min(BACKOFF_MAX),
        };
        self.next_connect_at = self.now + self.backoff.as_millis() as u64;
        self.event(format!("conn {id}: slave session ends: {reason}"));
    }

    /// The slave obeys a Truncate or Wipe (as the broker's `FollowerHost::reopen` does).
    async fn reopen_slave(
        &mut self,
        action: crate::ha::proto::Action,
        start: u64,
    ) -> Result<(), SimFailure> {
        let Some(s) = self.slave.take() else {
            return Ok(());
        };
        self.s_disk.hold_durability(false);
        if let Err(e) = s.store.close().await {
            return Err(self.fail(format!("closing the slave's store: {e}")));
        }
        let mut cfg = self.s_cfg.clone();
        match action {
            crate::ha::proto::Action::Truncate => {
                cfg.truncate_to = Some(start);
                self.stats.truncations += 1;
            }
            crate::ha::proto::Action::Wipe => {
                // As `store::remove_shard_files`: the shard's commitlog, queues, index and
                // checkpoint.
                self.stats.wipes += 1;
                let doomed = [
                    cfg.commitlog_dir.join("0"),
                    cfg.root_dir.join("consumequeue").join("0"),
                    cfg.root_dir.join("index").join("0"),
                    cfg.root_dir.join("checkpoint").join("0"),
                ];
                for path in self.s_disk.paths() {
                    if doomed.iter().any(|d| path.starts_with(d)) {
                        if let Err(e) = self.s_disk.remove(&path).await {
                            return Err(self.fail(format!("wiping the slave: {e}")));
                        }
                    }
                }
            }
            crate::ha::proto::Action::Continue => {}
        }
        let store =
            match MessageStore::open(self.s_disk.clone(), Rc::new(self.clock.clone()), cfg).await {
                Ok(store) => store,
                Err(e) => return Err(self.fail(format!("reopening the slave's store: {e}"))),
            };
        self.event(format!(
            "slave reopened ({action:?} at {start}): ends at {}",
            store.written_offset()
        ));
        self.verified = 0;
        self.slave = Some(SlaveNode {
            store,
            follower: s.follower,
        });
        Ok(())
    }

    /// Timers, connections, frames and reports: what the real loops do between arrivals.
    async fn pump(&mut self) -> Result<(), SimFailure> {
        let now = self.now;
        if self.m_hold_until <= now && self.m_disk.durability_held() {
            self.m_disk.hold_durability(false);
        }
        if self.s_hold_until <= now && self.s_disk.durability_held() {
            self.s_disk.hold_durability(false);
        }
        if self.master.is_none() && self.m_down_until <= now {
            self.start_master().await?;
        }
        if self.slave.is_none() && self.s_down_until <= now {
            self.start_slave().await?;
        }
        self.connect();
        for i in 0..self.conns.len() {
            self.pump_master_end(i).await?;
            self.pump_slave_end(i);
        }
        Ok(())
    }

    fn connect(&mut self) {
        let streaming = self.conns.iter().any(|c| c.slave.is_some());
        if streaming || self.slave.is_none() || self.now < self.next_connect_at {
            return;
        }
        if self.master.is_none() || self.now < self.partition_until {
            // Refused, or the SYN is lost until the connect timeout: back off.
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            self.next_connect_at = self.now + self.backoff.as_millis() as u64;
            self.event("slave cannot connect");
            return;
        }
        let s = self.slave.as_ref().expect("alive");
        let hello = s.follower.hello(&s.store, self.s_history.clone());
        let id = self.next_conn;
        self.next_conn += 1;
        let now = self.now;
        self.conns.push(Conn {
            id,
            to_master: Pipe::default(),
            to_slave: Pipe::default(),
            master: Some(MasterEnd {
                rx: Vec::new(),
                link: None,
                pos: 0,
                last_rx: now,
                last_tx: now,
            }),
            slave: Some(SlaveEnd {
                rx: Vec::new(),
                phase: Phase::AwaitWelcome,
                last_rx: now,
                last_tx: now,
                sent: None,
                streamed: false,
            }),
        });
        let i = self.conns.len() - 1;
        self.event(format!(
            "conn {id}: slave connects at {} epochs {:?}",
            hello.offset, hello.epochs
        ));
        self.send_to_master(i, Seg::Data(hello.encode()));
    }

    async fn pump_master_end(&mut self, i: usize) -> Result<(), SimFailure> {
        let now = self.now;
        let Some(m) = &self.master else { return Ok(()) };
        let replicas = Rc::clone(&m.replicas);
        let Some(end) = self.conns[i].master.as_mut() else {
            return Ok(());
        };
        if now.saturating_sub(end.last_rx) > HOUSEKEEPING_MS {
            let id = self.conns[i].id;
            self.event(format!("conn {id}: master drops a silent slave"));
            self.close_master_end(i, true);
            return Ok(());
        }
        if end.link.is_none() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut pos = end.pos;
        if let Err(e) = replicas.fill_frames(&mut pos, &mut buf).await {
            return Err(self.fail(format!("the master cannot read its log: {e}")));
        }
        let end = self.conns[i].master.as_mut().expect("open");
        end.pos = pos;
        if buf.is_empty() && now.saturating_sub(end.last_tx) >= HEARTBEAT_MS {
            replicas.heartbeat(pos, &mut buf);
        }
        if !buf.is_empty() {
            end.last_tx = now;
            self.send_to_slave(i, Seg::Data(buf));
        }
        Ok(())
    }

    fn pump_slave_end(&mut self, i: usize) {
        let now = self.now;
        let Some(s) = &self.slave else { return };
        let Some(end) = self.conns[i].slave.as_mut() else {
            return;
        };
        if now.saturating_sub(end.last_rx) > HOUSEKEEPING_MS {
            self.end_session(i, "nothing from the master".into(), true);
            return;
        }
        if end.phase != Phase::Streaming {
            return;
        }
        if let Err(e) = s.follower.may_report() {
            self.end_session(i, e.to_string(), true);
            return;
        }
        let holds = s.follower.report_watch(&s.store).get();
        if end.sent != Some(holds) || now.saturating_sub(end.last_tx) >= HEARTBEAT_MS {
            end.sent = Some(holds);
            end.last_tx = now;
            self.send_to_master(i, Seg::Data(holds.to_be_bytes().to_vec()));
        }
    }

    fn reset_conn(&mut self) {
        let open: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].master.is_some() || self.conns[i].slave.is_some())
            .collect();
        if open.is_empty() {
            return;
        }
        let i = open[(self.rng.next() % open.len() as u64) as usize];
        let id = self.conns[i].id;
        self.conns[i].to_master.queue.clear();
        self.conns[i].to_slave.queue.clear();
        if self.conns[i].master.is_some() {
            self.send_to_master(i, Seg::Rst);
        }
        if self.conns[i].slave.is_some() {
            self.send_to_slave(i, Seg::Rst);
        }
        self.event(format!("conn {id}: reset"));
    }

    async fn crash_master(&mut self) {
        let Some(m) = self.master.take() else { return };
        self.m_disk.crash();
        bury(&self.m_disk, m.store, m.puts).await;
        for c in &mut self.conns {
            c.master = None;
        }
        self.m_down_until = self.now + self.rng.range(0, 2_000);
        self.stats.master_crashes += 1;
        self.verified = 0;
        let until = self.m_down_until;
        self.event(format!("master crashes (power loss), back at {until}"));
    }

    async fn crash_slave(&mut self) {
        let Some(s) = self.slave.take() else { return };
        self.s_disk.crash();
        bury(&self.s_disk, s.store, Vec::new()).await;
        for c in &mut self.conns {
            c.slave = None;
        }
        self.s_down_until = self.now + self.rng.range(0, 2_000);
        self.stats.slave_crashes += 1;
        self.verified = 0;
        let until = self.s_down_until;
        self.event(format!("slave crashes (power loss), back at {until}"));
    }

    async fn start_master(&mut self) -> Result<(), SimFailure> {
        self.m_disk.hold_durability(false);
        let clock = Rc::new(self.clock.clone());
        let store = match MessageStore::open(self.m_disk.clone(), clock, self.m_cfg.clone()).await {
            Ok(store) => store,
            Err(e) => return Err(self.fail(format!("the master's recovery failed: {e}"))),
        };
        // As `Replicas::open`: a new epoch at the recovered end, saved before anything is sent.
        self.m_history.begin_epoch(store.written_offset());
        let replicas = Replicas::with_history(self.opts, store.clone(), 0, self.m_history.clone());
        let mode = match self.rng.chance(600) {
            true => Mode::SyncMaster,
            false => Mode::SyncFlush,
        };
        if mode == Mode::SyncMaster {
            store.set_replica_wait(replicas.clone());
        }
        self.event(format!(
            "master starts at {} ({mode:?}), epochs {:?}",
            store.written_offset(),
            self.m_history.epochs
        ));
        self.master = Some(MasterNode {
            store,
            replicas,
            mode,
            puts: Vec::new(),
        });
        self.scan(true).await
    }

    async fn start_slave(&mut self) -> Result<(), SimFailure> {
        self.s_disk.hold_durability(false);
        let clock = Rc::new(self.clock.clone());
        let store = match MessageStore::open(self.s_disk.clone(), clock, self.s_cfg.clone()).await {
            Ok(store) => store,
            Err(e) => return Err(self.fail(format!("the slave's recovery failed: {e}"))),
        };
        let follower = Follower::new(
            self.opts,
            Path::new("/slave"),
            0,
            1,
            "10.0.0.3:10911".into(),
            true,
            Rc::new(MasterAddr::default()),
        );
        self.event(format!("slave starts at {}", store.written_offset()));
        self.slave = Some(SlaveNode {
            store,
            follower: Rc::new(follower),
        });
        self.next_connect_at = self.now;
        self.scan(false).await
    }

    /// A pull: a random queue of a random side from a random offset.
    async fn pull(&mut self) -> Result<(), SimFailure> {
        let on_master = self.rng.chance(500);
        let store = match on_master {
            true => self.master.as_ref().map(|m| m.store.clone()),
            false => self.slave.as_ref().map(|s| s.store.clone()),
        };
        let Some(store) = store else { return Ok(()) };
        let queue = (self.rng.next() % QUEUES as u64) as i32;
        let (min, max) = (
            store.min_offset(TOPIC, queue),
            store.max_offset(TOPIC, queue),
        );
        let from = min + (self.rng.next() % ((max - min + 1) as u64)) as i64;
        let reader = match self.rng.chance(500) {
            true => Reader::Consumer,
            false => Reader::Broker,
        };
        self.stats.pulls += 1;
        let got = match store
            .get_messages(reader, TOPIC, queue, from, 16, 1 << 20, None)
            .await
        {
            Ok(got) => got,
            Err(e) => return Err(self.fail(format!("a pull failed: {e}"))),
        };
        let side = if on_master { "master" } else { "slave" };
        for (next, m) in (from..).zip(got.messages.iter()) {
            let Ok(v) = RecordView::parse(m) else {
                return Err(self.fail(format!("the {side} served an unparsable record")));
            };
            if v.queue_offset != next {
                return Err(self.fail(format!(
                    "the {side} served queue {queue} offset {} where {next} was due (dense \
                     offsets)",
                    v.queue_offset
                )));
            }
            self.check_record(side, queue, &v)?;
        }
        Ok(())
    }

    /// A record read from a queue is one that was sent, whole, and where it was acknowledged.
    fn check_record(&self, side: &str, queue: i32, v: &RecordView<'_>) -> Result<(), SimFailure> {
        let shared = self.shared.borrow();
        let sent = id_of(v.body).and_then(|id| Some((id, shared.sent.get(&id)?)));
        let Some((id, sent)) = sent else {
            return Err(self.fail(format!(
                "the {side} holds a record nobody sent at queue {queue} offset {}",
                v.queue_offset
            )));
        };
        if sent.body != v.body || sent.queue != queue {
            return Err(self.fail(format!("the {side} holds put {id} altered")));
        }
        if let Outcome::Acked { queue_offset } = sent.outcome {
            if queue_offset != v.queue_offset {
                return Err(self.fail(format!(
                    "the {side} holds acknowledged put {id} at queue offset {} instead of \
                     {queue_offset} (duplicated or moved)",
                    v.queue_offset
                )));
            }
        }
        Ok(())
    }

    /// After a restart: every queue of that side read whole (dense, no id twice), and every
    /// acknowledged put present (on the slave: those acknowledged under SYNC_MASTER).
    async fn scan(&mut self, on_master: bool) -> Result<(), SimFailure> {
        let store = match on_master {
            true => self.master.as_ref().map(|m| m.store.clone()),
            false => self.slave.as_ref().map(|s| s.store.clone()),
        };
        let Some(store) = store else { return Ok(()) };
        let side = if on_master { "master" } else { "slave" };
        let mut seen: HashSet<u64> = HashSet::new();
        let mut at: BTreeMap<(i32, i64), u64> = BTreeMap::new();
        for queue in 0..QUEUES {
            let mut next = store.min_offset(TOPIC, queue);
            let max = store.max_offset(TOPIC, queue);
            while next < max {
                let got = match store
                    .get_messages(Reader::Broker, TOPIC, queue, next, 64, 4 << 20, None)
                    .await
                {
                    Ok(got) => got,
                    Err(e) => return Err(self.fail(format!("reading the {side}: {e}"))),
                };
                if got.messages.is_empty() {
                    return Err(self.fail(format!(
                        "the {side}'s queue {queue} ends at {next}, its max offset is {max}"
                    )));
                }
                for m in &got.messages {
                    let Ok(v) = RecordView::parse(m) else {
                        return Err(self.fail(format!("the {side} holds an unparsable record")));
                    };
                    if v.queue_offset != next {
                        return Err(self.fail(format!(
                            "the {side}'s queue {queue} has offset {} where {next} was due",
                            v.queue_offset
                        )));
                    }
                    self.check_record(side, queue, &v)?;
                    let id = id_of(v.body).unwrap_or_default();
                    if !seen.insert(id) {
                        return Err(self.fail(format!("the {side} holds put {id} twice")));
                    }
                    at.insert((queue, next), id);
                    next += 1;
                }
            }
        }
        let shared = self.shared.borrow();
        for (id, sent) in &shared.sent {
            let Outcome::Acked { queue_offset } = sent.outcome else {
                continue;
            };
            if !on_master && sent.mode != Mode::SyncMaster {
                continue;
            }
            if at.get(&(sent.queue, queue_offset)) != Some(id) {
                let what = format!(
                    "acknowledged put {id} ({:?}) is lost on the {side}: queue {} offset \
                     {queue_offset} holds {:?}",
                    sent.mode,
                    sent.queue,
                    at.get(&(sent.queue, queue_offset))
                );
                drop(shared);
                return Err(self.fail(what));
            }
        }
        drop(shared);
        let what = format!("{side} scanned: {} records", seen.len());
        self.event(what);
        Ok(())
    }

    /// The invariants of every step.
    async fn check(&mut self) -> Result<(), SimFailure> {
        let violation = self.shared.borrow_mut().violations.pop();
        if let Some(what) = violation {
            return Err(self.fail(what));
        }
        let (Some(m), Some(s)) = (&self.master, &self.slave) else {
            return Ok(());
        };
        if self.s_history.lineage == 0 {
            return Ok(());
        }
        if self.s_history.lineage != self.m_history.lineage {
            return Err(self.fail("the slave adopted another lineage".into()));
        }
        let (me, se) = (&self.m_history.epochs, &self.s_history.epochs);
        if se.len() > me.len() || me[..se.len()] != se[..] {
            return Err(self.fail(format!(
                "the slave's epochs {se:?} are not a prefix of the master's {me:?}"
            )));
        }
        // Record by record, the slave's log equals the master's up to their common point
        // (only bytes both sides have written to their files).
        let common = common_point(me, m.store.written_offset(), se, s.store.written_offset());
        let limit = common
            .min(m.store.flushed_offset())
            .min(s.store.flushed_offset());
        let (m_dir, s_dir) = {
            let shared = self.shared.borrow();
            (shared.master_dir.clone(), shared.slave_dir.clone())
        };
        let mut pos = self.verified.max(s.store.commitlog_min_offset());
        while pos < limit {
            let seg_end = pos - pos % SEGMENT_BYTES + SEGMENT_BYTES;
            let len = (limit.min(seg_end) - pos).min(SEGMENT_BYTES);
            let mb = log_bytes(&self.m_disk, &m_dir, pos, len, false);
            let sb = log_bytes(&self.s_disk, &s_dir, pos, len, false);
            let (Some(mb), Some(sb)) = (mb, sb) else {
                return Err(self.fail(format!("a log lacks the bytes at {pos}")));
            };
            let mut at = 0usize;
            while at < mb.len() {
                let Some((size, magic)) = peek_header(&mb[at..]) else {
                    break;
                };
                let n = match magic {
                    BLANK_MAGIC_CODE => BLANK_RECORD_BYTES,
                    _ => size.max(0) as usize,
                };
                if n == 0 || at + n > mb.len() {
                    break;
                }
                if mb[at..at + n] != sb[at..at + n] {
                    let off = pos + at as u64;
                    let show = |b: &[u8]| match RecordView::parse(b) {
                        Ok(v) => format!(
                            "put {:?} queue {} offset {} ({} B)",
                            id_of(v.body),
                            v.queue_id,
                            v.queue_offset,
                            v.total_size
                        ),
                        Err(e) => format!("no record ({e})"),
                    };
                    return Err(self.fail(format!(
                        "the slave's log differs from the master's at {off}, below their \
                         common point {common} (first at byte {:?} of the record; master {}; \
                         slave {}; the slave's epochs {se:?}, ends at {})",
                        (0..n).find(|k| mb[at + k] != sb[at + k]).map(|k| (
                            k,
                            mb[at + k],
                            sb[at + k]
                        )),
                        show(&mb[at..]),
                        show(&sb[at..]),
                        s.store.written_offset()
                    )));
                }
                if magic == BLANK_MAGIC_CODE {
                    at = mb.len();
                    pos = seg_end;
                    break;
                }
                at += n;
            }
            if at < mb.len() {
                // A record crosses `limit`: compare it next time.
                pos += at as u64;
                break;
            }
            if pos < seg_end {
                pos += at as u64;
            }
        }
        let verified = self.verified.max(pos.min(limit));
        self.stats.compared_bytes += verified - self.verified;
        self.verified = verified;
        Ok(())
    }
}

/// What is left of a process that died (its storage already crashed or killed): its put
/// tasks are cancelled (unanswered puts stay unacknowledged) and its store's background tasks
/// are stopped, as the process's end would; nothing reaches the disk (every handle of the dead
/// process fails with EIO). Without this a long run would keep every dead store in memory.
async fn bury(
    disk: &SimStorage,
    store: MessageStore<SimStorage>,
    puts: Vec<(Rc<std::cell::Cell<bool>>, glommio::Task<()>)>,
) {
    drop(puts);
    // Woken flushes of the dead process fail at once instead of waiting for the disk.
    disk.hold_durability(false);
    let _ = store.close().await;
}

impl Conn {
    fn is_drained(&self) -> bool {
        self.to_master.queue.is_empty() && self.to_slave.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds and steps of the `cargo test` sweep (a few seconds in a debug build).
    const SWEEP_SEEDS: u64 = 12;
    const SWEEP_STEPS: u64 = 1_500;

    fn failures(results: &[Result<SimStats, SimFailure>]) -> Vec<&SimFailure> {
        results.iter().filter_map(|r| r.as_ref().err()).collect()
    }

    #[cfg(not(feature = "sim-bug-unflushed-ack"))]
    #[test]
    fn the_sweep_keeps_every_invariant() {
        let results = sweep(0..SWEEP_SEEDS, SWEEP_STEPS, true, |_, _| {});
        if let Some(f) = failures(&results).first() {
            panic!("{f}");
        }
        let stats: Vec<&SimStats> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let sum = |f: fn(&SimStats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
        // The sweep reaches what it is there for.
        assert!(
            sum(|s| s.acked_master) > 0,
            "nothing acknowledged under SYNC_MASTER"
        );
        assert!(
            sum(|s| s.acked_flush) > 0,
            "nothing acknowledged under SYNC_FLUSH"
        );
        assert!(sum(|s| s.master_crashes) > 0 && sum(|s| s.slave_crashes) > 0);
        assert!(
            sum(|s| s.truncations) > 0,
            "no slave ever cut a diverged log"
        );
    }

    #[test]
    fn a_seed_replays_exactly() {
        // The same events, to the last byte, and the same end (with the planted bug on, the
        // same failure at the same step).
        let outcome = |r: &[Result<SimStats, SimFailure>]| match &r[0] {
            Ok(s) => format!("ok, digest {:016x}", s.digest),
            Err(f) => format!("{f}"),
        };
        let a = sweep([7], 600, true, |_, _| {});
        let b = sweep([7], 600, true, |_, _| {});
        assert_eq!(outcome(&a), outcome(&b));
    }

    /// With the planted bug on, the sweep finds it within its seed budget.
    #[cfg(feature = "sim-bug-unflushed-ack")]
    #[test]
    fn the_sweep_finds_the_planted_bug() {
        let results = sweep(0..SWEEP_SEEDS, SWEEP_STEPS, true, |_, _| {});
        let found = failures(&results);
        assert!(!found.is_empty(), "the planted bug went unnoticed");
        eprintln!("{}", found[0]);
    }
}
