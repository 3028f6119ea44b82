//! The master's side: the slaves of one shard ([`Replicas`]), the stream each one gets, and the
//! SYNC_MASTER wait ([`ReplicaWait`]).
//!
//! One connection per (slave, shard), served on the shard that owns the commitlog: a sender
//! that ships whole records from the slave's position, woken by appends (no polling; a
//! heartbeat only after `haSendHeartbeatInterval` of silence), and an ack reader that moves
//! `acked`, the highest offset any slave holds, which releases every SYNC_MASTER put it covers
//! (acknowledgements are batched like group commit: one ack releases all puts below it).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use glommio::net::TcpStream;

use super::error::{HaError, Peer};
use super::history::{decide, stale_master, Decision, History};
use super::proto::{FrameHeader, Hello, Welcome, FRAME_DATA, FRAME_HEARTBEAT};
use super::{read_handshake, read_within, within, HaOptions};
use crate::runtime::{OffsetWatch, Shutdown};
use crate::store::{DmaStorage, MessageStore, PutStatus, ReplicaWait, Storage};

/// Bytes gathered into one socket write.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// One connected slave of this shard (a handle: [`Replicas::attach`] gives it out for the
/// simulator, which drives a link's steps without a socket).
pub struct Link {
    id: u64,
    addr: String,
    acked: Cell<u64>,
    /// When its acknowledged offset last reached the master's end.
    caught_up_at: Cell<Instant>,
}

/// What the status displays show of one slave of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveLag {
    pub addr: String,
    pub acked: u64,
    pub behind_bytes: u64,
    pub behind_ms: u64,
    /// It holds everything this shard has acknowledged (controller mode: it may join the
    /// SyncStateSet without a gap).
    pub holds_confirmed: bool,
}

/// What a SYNC_MASTER put in controller mode waits for.
enum Need {
    /// Nothing besides the master's own store.
    Nothing,
    /// The committed SyncStateSet is smaller than `minInSyncReplicas`.
    NotEnough,
    /// Every one of these replicas (`allAckInSyncStateSet`).
    All(std::sync::Arc<super::SyncState>),
    /// This many replicas besides the master (`inSyncReplicas` - 1).
    Count(usize),
}

/// The slaves of one master shard, on the store of storage `S` (the broker's is the default;
/// the simulator runs it on `SimStorage`).
pub struct Replicas<S: Storage = DmaStorage> {
    opts: HaOptions,
    store: MessageStore<S>,
    shard: u16,
    history: History,
    /// Highest offset acknowledged by any slave (SYNC_MASTER puts wait on it).
    acked: OffsetWatch,
    links: RefCell<Vec<Rc<Link>>>,
    /// Bumped whenever a slave connects or goes.
    changed: OffsetWatch,
    next_id: Cell<u64>,
    /// Controller mode: the SyncStateSet as the broker's agent knows it.
    sync_state: std::cell::OnceCell<std::sync::Arc<super::SyncStateView>>,
    /// Controller mode: the state last read from `sync_state`, with its version.
    sync_cache: RefCell<(u64, std::sync::Arc<super::SyncState>)>,
    /// Controller mode: the offset up to which the replicas a put waits for hold this shard's
    /// log (the least of them with `allAckInSyncStateSet`); SYNC_MASTER puts wait on it.
    confirmed: OffsetWatch,
}

impl<S: Storage> Replicas<S> {
    /// The replication state of a master shard: begins a new epoch at the store's end and
    /// records it in the shard's history file before anything is sent.
    /// `min_epoch`: the new epoch's number is at least this (controller mode: the controller's
    /// master epoch; 0 otherwise).
    pub fn open(
        opts: HaOptions,
        store: MessageStore<S>,
        root: &std::path::Path,
        shard: usize,
        min_epoch: u32,
    ) -> std::io::Result<Rc<Replicas<S>>> {
        let path: PathBuf = History::path(root, shard);
        let mut history = History::load(&path)?;
        history.begin_epoch_at_least(store.written_offset(), min_epoch);
        history.save(&path)?;
        Ok(Replicas::with_history(opts, store, shard, history))
    }

    /// [`Replicas::open`] with the history already loaded, its new epoch begun and saved by
    /// the caller (the simulator keeps histories in its own model of the disk).
    pub fn with_history(
        opts: HaOptions,
        store: MessageStore<S>,
        shard: usize,
        history: History,
    ) -> Rc<Replicas<S>> {
        Rc::new(Replicas {
            opts,
            store,
            shard: shard as u16,
            history,
            acked: OffsetWatch::new(0),
            links: RefCell::new(Vec::new()),
            changed: OffsetWatch::new(0),
            next_id: Cell::new(1),
            sync_state: std::cell::OnceCell::new(),
            sync_cache: RefCell::new((u64::MAX, Default::default())),
            confirmed: OffsetWatch::new(0),
        })
    }

    /// This shard's lineage and epochs, the current one last.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Highest offset any slave acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked.get()
    }

    /// Controller mode: the SyncStateSet view the SYNC_MASTER wait follows.
    pub fn set_sync_state(&self, view: std::sync::Arc<super::SyncStateView>) {
        let _ = self.sync_state.set(view);
    }

    /// Lag of every connected slave.
    pub fn lags(&self) -> Vec<SlaveLag> {
        let end = self.store.written_offset();
        self.links
            .borrow()
            .iter()
            .map(|l| {
                let acked = l.acked.get();
                let behind_bytes = end.saturating_sub(acked);
                let behind_ms = match behind_bytes {
                    0 => 0,
                    _ => l.caught_up_at.get().elapsed().as_millis() as u64,
                };
                SlaveLag {
                    addr: l.addr.clone(),
                    acked,
                    behind_bytes,
                    behind_ms,
                    holds_confirmed: acked >= self.confirmed.get(),
                }
            })
            .collect()
    }

    /// The answer to `hello`: a refusal, or where the stream starts.
    pub fn welcome(&self, hello: &Hello) -> Welcome {
        // The listener routed the connection here by shard, after checking the shard count.
        let segment = self.store.segment_bytes();
        if hello.segment_bytes != segment {
            return Welcome::Refused(format!(
                "the master's commitlog segments are {segment} bytes, the slave's {}: give \
                 both the same mappedFileSizeCommitLog",
                hello.segment_bytes
            ));
        }
        // Controller mode: the master epoch the agent last confirmed this master at.
        let master_epoch = self.sync_state.get().map_or(0, |v| v.master_epoch());
        if let Some(why) = stale_master(master_epoch, hello.master_epoch) {
            return Welcome::Refused(format!(
                "{why}; it refuses to stream (it must not make the slave cut its log to a \
                 history the new master does not have)"
            ));
        }
        let (min, end) = (
            self.store.commitlog_min_offset(),
            self.store.written_offset(),
        );
        match decide(&self.history, min, end, hello) {
            Decision::Refuse(reason) => Welcome::Refused(reason),
            Decision::Stream { action, start } => Welcome::Stream {
                action,
                start,
                lineage: self.history.lineage,
                epochs: self.history.epochs.clone(),
                master_epoch,
            },
        }
    }

    /// Serves one slave connection for this shard until it breaks or `shutdown` fires.
    pub async fn serve(self: Rc<Self>, stream: TcpStream, hello: Hello, shutdown: Shutdown) {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let welcome = self.welcome(&hello);
        if writer.write_all(&welcome.encode()).await.is_err() {
            return;
        }
        let start = match welcome {
            Welcome::Refused(reason) => {
                tracing::error!(slave = %hello.slave_addr, shard = self.shard, %reason,
                    "slave refused");
                let _ = writer.close().await;
                return;
            }
            Welcome::Stream { action, start, .. } => {
                tracing::info!(slave = %hello.slave_addr, shard = self.shard, ?action, start,
                    "slave connected");
                start
            }
        };
        let link = self.attach(&hello.slave_addr);
        let outcome = future::or(
            future::or(
                self.send_loop(&mut writer, start),
                self.ack_loop(&mut reader, &link),
            ),
            async {
                shutdown.wait().await;
                Ok(())
            },
        )
        .await;
        if let Err(reason) = outcome {
            tracing::warn!(slave = %link.addr, shard = self.shard, %reason, "slave link closed");
        }
        let _ = writer.close().await;
        self.detach(&link);
    }

    /// A slave that was welcomed with a stream: its link counts for SYNC_MASTER from now on.
    pub fn attach(&self, addr: &str) -> Rc<Link> {
        let link = Rc::new(Link {
            id: self.next_id.replace(self.next_id.get() + 1),
            addr: addr.to_string(),
            acked: Cell::new(0),
            caught_up_at: Cell::new(Instant::now()),
        });
        self.links.borrow_mut().push(Rc::clone(&link));
        self.changed.advance(self.changed.get() + 1);
        link
    }

    /// The link ended (waiting puts look again whether any slave is left).
    pub fn detach(&self, link: &Link) {
        self.links.borrow_mut().retain(|l| l.id != link.id);
        self.changed.advance(self.changed.get() + 1);
    }

    /// Appends to `buf` DATA frames of whole records from `*pos` on, until `buf` holds about
    /// a socket write's worth or nothing more is stored; moves `*pos` past them.
    pub async fn fill_frames(&self, pos: &mut u64, buf: &mut Vec<u8>) -> Result<(), HaError> {
        while buf.len() < WRITE_BATCH_BYTES {
            let at = *pos;
            let chunk = self
                .store
                .replication_chunk(at, self.opts.batch_bytes)
                .await
                .map_err(|source| HaError::Commitlog { pos: at, source })?;
            let Some(chunk) = chunk else { break };
            let header = FrameHeader {
                kind: FRAME_DATA,
                pos: chunk.pos,
                master_end: self.store.written_offset(),
                len: chunk.bytes.len() as u32,
            };
            buf.extend_from_slice(&header.encode());
            buf.extend_from_slice(&chunk.bytes);
            *pos = chunk.next;
        }
        Ok(())
    }

    /// Appends a HEARTBEAT frame (the slave is at `pos`) to `buf`.
    pub fn heartbeat(&self, pos: u64, buf: &mut Vec<u8>) {
        let header = FrameHeader {
            kind: FRAME_HEARTBEAT,
            pos,
            master_end: self.store.written_offset(),
            len: 0,
        };
        buf.extend_from_slice(&header.encode());
    }

    /// A report from the slave of `link`: it holds `offset`. Releases the SYNC_MASTER puts
    /// it covers; a report past this master's end ends the link.
    pub fn on_report(&self, link: &Link, offset: u64) -> Result<(), HaError> {
        let end = self.store.written_offset();
        if offset > end {
            return Err(HaError::ReportPastEnd { offset, end });
        }
        link.acked.set(link.acked.get().max(offset));
        if offset == end {
            link.caught_up_at.set(Instant::now());
        }
        self.acked.advance(offset);
        if self.sync_state.get().is_some() {
            self.confirm(&self.need());
        }
        Ok(())
    }

    /// Ships whole records from `pos` as they are appended; a heartbeat after a quiet
    /// `haSendHeartbeatInterval`.
    async fn send_loop<W: futures_lite::AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        mut pos: u64,
    ) -> Result<(), HaError> {
        let watch = self.store.written_watch();
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES + (64 << 10));
        loop {
            self.fill_frames(&mut pos, &mut buf).await?;
            if buf.is_empty() {
                let woken = within(self.opts.heartbeat, watch.wait_for(pos + 1)).await;
                match woken {
                    Some(Ok(())) => continue,
                    Some(Err(())) => return Err(HaError::StoreClosed),
                    None => self.heartbeat(pos, &mut buf),
                }
            }
            writer.write_all(&buf).await.map_err(HaError::Write)?;
            buf.clear();
        }
    }

    /// Reads the slave's reports (8 bytes each: the offset it holds) and releases the puts
    /// they cover. A slave silent for `haHousekeepingInterval` is dropped.
    async fn ack_loop<R: futures_lite::AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        link: &Link,
    ) -> Result<(), HaError> {
        let mut report = [0u8; 8];
        let limit = self.opts.housekeeping;
        loop {
            let silent = || HaError::Silent {
                peer: Peer::Slave,
                ms: limit.as_millis(),
            };
            read_within(reader, &mut report, limit, silent).await?;
            self.on_report(link, u64::from_be_bytes(report))?;
        }
    }

    /// SYNC_MASTER: waits until a slave holds `end`, all slaves go, or `slaveTimeout` passes.
    /// In controller mode the SyncStateSet decides (see [`Replicas::wait_in_controller_mode`]).
    async fn wait_for_slave(&self, end: u64) -> PutStatus {
        if self.sync_state.get().is_some() {
            return self.wait_in_controller_mode(end).await;
        }
        let deadline = Instant::now() + self.opts.slave_timeout;
        loop {
            if self.acked.get() >= end {
                return PutStatus::PutOk;
            }
            let links = self.links.borrow().len();
            if links == 0 || end - self.acked.get().min(end) > self.opts.fallbehind_max {
                return PutStatus::SlaveNotAvailable;
            }
            match self.wait_until(&self.acked, end, deadline).await {
                None => return PutStatus::FlushSlaveTimeout,
                Some(true) => return PutStatus::PutOk,
                Some(false) => {} // a slave came or went: look again
            }
        }
    }

    /// Waits until `watch` reaches `end` (`Some(true)`), a slave comes or goes (`Some(false)`),
    /// or `deadline` passes (`None`).
    async fn wait_until(&self, watch: &OffsetWatch, end: u64, deadline: Instant) -> Option<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = self.changed.get();
        let reached = async { watch.wait_for(end).await.is_ok() };
        let changed = async {
            let _ = self.changed.wait_for(seen + 1).await;
            false
        };
        within(left, future::or(reached, changed)).await
    }

    /// What a put waits for now, from the agent's view of the SyncStateSet.
    fn need(&self) -> Need {
        let Some(view) = self.sync_state.get() else {
            return Need::Nothing;
        };
        let version = view.version();
        if self.sync_cache.borrow().0 != version {
            *self.sync_cache.borrow_mut() = (version, view.get());
        }
        let state = std::sync::Arc::clone(&self.sync_cache.borrow().1);
        let policy = self.opts.ack;
        if state.committed_size < policy.min_in_sync_replicas as usize {
            return Need::NotEnough;
        }
        if policy.all_ack_in_sync_state_set {
            return match state.others.is_empty() {
                true => Need::Nothing,
                false => Need::All(state),
            };
        }
        match policy.in_sync_replicas.saturating_sub(1) as usize {
            0 => Need::Nothing,
            n => Need::Count(n),
        }
    }

    /// The highest offset each replica address holds on this shard.
    fn acked_by_addr(&self) -> std::collections::BTreeMap<String, u64> {
        let mut by_addr = std::collections::BTreeMap::new();
        for l in self.links.borrow().iter() {
            let e = by_addr.entry(l.addr.clone()).or_insert(0);
            *e = (*e).max(l.acked.get());
        }
        by_addr
    }

    /// Moves `confirmed` to what `need`'s replicas hold. Whether a required replica is
    /// connected at all.
    fn confirm(&self, need: &Need) -> bool {
        let acked = self.acked_by_addr();
        let (held, connected) = match need {
            Need::Nothing | Need::NotEnough => return true,
            Need::All(state) => {
                let held = state.others.iter().map(|a| acked.get(a).copied());
                let connected = held.clone().all(|h| h.is_some());
                (
                    held.map(Option::unwrap_or_default).min().unwrap_or(0),
                    connected,
                )
            }
            Need::Count(n) => {
                let mut offsets: Vec<u64> = acked.values().copied().collect();
                offsets.sort_unstable_by(|a, b| b.cmp(a));
                (
                    offsets.get(n - 1).copied().unwrap_or(0),
                    offsets.len() >= *n,
                )
            }
        };
        // Never backward: a replica joining the set holds at least what was confirmed (the
        // agent checks `holds_confirmed` before asking the controller to add it).
        self.confirmed.advance(held);
        connected
    }

    /// Controller mode: with `allAckInSyncStateSet`, every other replica of the SyncStateSet
    /// must hold `end` (none: the master alone acknowledges); otherwise `inSyncReplicas` - 1
    /// replicas. A set smaller than `minInSyncReplicas`, or a required replica not connected,
    /// is SLAVE_NOT_AVAILABLE; no answer within `slaveTimeout`, FLUSH_SLAVE_TIMEOUT. A replica
    /// leaves the set only through the controller, so a master cut off from the controllers
    /// cannot acknowledge once a member of its set stopped following it (as an elected one
    /// does).
    async fn wait_in_controller_mode(&self, end: u64) -> PutStatus {
        let deadline = Instant::now() + self.opts.slave_timeout;
        loop {
            let need = self.need();
            match need {
                Need::Nothing => return PutStatus::PutOk,
                Need::NotEnough => return PutStatus::SlaveNotAvailable,
                Need::All(_) | Need::Count(_) => {}
            }
            let connected = self.confirm(&need);
            let confirmed = self.confirmed.get();
            if confirmed >= end {
                return PutStatus::PutOk;
            }
            if !connected || end - confirmed > self.opts.fallbehind_max {
                return PutStatus::SlaveNotAvailable;
            }
            match self.wait_until(&self.confirmed, end, deadline).await {
                None => return PutStatus::FlushSlaveTimeout,
                Some(true) => return PutStatus::PutOk,
                Some(false) => {} // a slave came or went: look again
            }
        }
    }
}

impl<S: Storage> ReplicaWait for Replicas<S> {
    fn wait_replicated(&self, end: u64) -> Pin<Box<dyn Future<Output = PutStatus> + '_>> {
        Box::pin(self.wait_for_slave(end))
    }
}

/// Reads a slave's HELLO and its authentication section, if any (bounded in size and time).
pub async fn read_hello(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<(Hello, Option<super::proto::HelloAuth>), HaError> {
    Ok(Hello::decode_signed(
        &read_handshake(stream, timeout).await?,
    )?)
}

/// Refuses a connection with `reason` (before it reached its shard).
pub async fn refuse(mut stream: TcpStream, reason: String) {
    let _ = stream.write_all(&Welcome::Refused(reason).encode()).await;
    let _ = stream.close().await;
}
