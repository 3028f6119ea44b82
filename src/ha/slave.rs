//! The slave's side: one follower per shard, connecting to the master's HA port, saying where
//! its commitlog ends and what history it holds, obeying the master's verdict (continue, cut
//! its log at the common point, or start over), then appending every chunk it receives and
//! reporting the offset it holds. Reconnects with backoff (100 ms doubling to 5 s) and needs no
//! operator: a link cut by a stopped process, a restarted master or a network hiccup heals.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::error::{HaError, Peer};
use super::history::{stale_master, History};
use super::proto::{Action, FrameHeader, Hello, Welcome, FRAME_DATA, FRAME_HEADER_BYTES};
use super::{read_handshake, read_within, within, HaOptions};
use crate::runtime::{OffsetWatch, Shutdown};
use crate::store::{MessageStore, Storage};

/// Reconnection backoff: from `BACKOFF_MIN`, doubling to `BACKOFF_MAX` while attempts
/// stream nothing.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
use crate::limits::{HA_CONNECT_TIMEOUT as CONNECT_TIMEOUT, HA_FRAME_MAX_BYTES as FRAME_MAX_BYTES};

/// Where the master is: its HA address (from `haMasterAddress` or the nameserver's answer to
/// our registration) and its remoting address (metadata sync). Shared by a slave's shards.
#[derive(Default)]
pub struct MasterAddr {
    ha: RefCell<Option<String>>,
    remoting: RefCell<Option<String>>,
    /// Bumped when either changes.
    changed: OffsetWatch,
}

impl MasterAddr {
    /// The master's HA address, if known.
    pub fn ha(&self) -> Option<String> {
        self.ha.borrow().clone()
    }

    /// The master's remoting address, if known.
    pub fn remoting(&self) -> Option<String> {
        self.remoting.borrow().clone()
    }

    /// How many times the addresses changed.
    pub fn changed_count(&self) -> u64 {
        self.changed.get()
    }

    /// Resolves once the addresses changed after `seen` changes.
    pub async fn wait_changed(&self, seen: u64) {
        let _ = self.changed.wait_for(seen + 1).await;
    }

    /// Records the addresses; `true` if anything changed.
    pub fn set(&self, ha: Option<String>, remoting: Option<String>) -> bool {
        let changed = *self.ha.borrow() != ha || *self.remoting.borrow() != remoting;
        if changed {
            *self.ha.borrow_mut() = ha;
            *self.remoting.borrow_mut() = remoting;
            self.changed.advance(self.changed.get() + 1);
        }
        changed
    }
}

/// What a follower needs from the shard that owns the store.
pub trait FollowerHost {
    /// The shard's current store.
    fn store(&self) -> MessageStore;
    /// Reopens the store cut at `start` (`Truncate`) or emptied (`Wipe`); returns the new one.
    fn reopen(
        &self,
        action: Action,
        start: u64,
    ) -> Pin<Box<dyn Future<Output = Result<MessageStore, HaError>> + '_>>;
}

/// What the status displays show of a slave shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    pub master: Option<String>,
    pub connected: bool,
    pub behind_bytes: u64,
    pub behind_ms: u64,
}

/// The follower of one slave shard.
pub struct Follower {
    opts: HaOptions,
    shard: u16,
    shard_count: u16,
    history_path: PathBuf,
    slave_addr: String,
    /// Acknowledge only durable bytes (the slave runs SYNC_FLUSH).
    ack_durable: bool,
    pub master: Rc<MasterAddr>,
    connected: Cell<bool>,
    master_end: Cell<u64>,
    caught_up_at: Cell<Instant>,
    last_error: RefCell<Option<String>>,
    /// Signs the HELLO when set (a master with ACL on requires it; see `ha::auth`).
    credentials: Option<crate::acl::Credentials>,
    /// Controller mode: the agent's view (the newest master epoch it knows, and the fence the
    /// controller puts on a replica before electing it).
    controller: Option<std::sync::Arc<super::SyncStateView>>,
}

impl Follower {
    /// Signs every HELLO with `credentials` (the broker's `aclAccessKey`/`aclSecretKey`).
    pub fn with_credentials(self, credentials: Option<crate::acl::Credentials>) -> Follower {
        Follower {
            credentials,
            ..self
        }
    }

    /// Controller mode: follows no master older than the newest master epoch `view` knows,
    /// and acknowledges nothing while the controller has fenced this replica.
    pub fn with_controller(self, view: Option<std::sync::Arc<super::SyncStateView>>) -> Follower {
        Follower {
            controller: view,
            ..self
        }
    }

    /// Whether the controller fenced this replica (it is about to be elected).
    fn fenced(&self) -> bool {
        self.controller.as_ref().is_some_and(|v| v.is_fenced())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: HaOptions,
        root: &std::path::Path,
        shard: usize,
        shard_count: usize,
        slave_addr: String,
        ack_durable: bool,
        master: Rc<MasterAddr>,
    ) -> Follower {
        Follower {
            opts,
            shard: shard as u16,
            shard_count: shard_count as u16,
            history_path: History::path(root, shard),
            slave_addr,
            ack_durable,
            master,
            connected: Cell::new(false),
            master_end: Cell::new(0),
            caught_up_at: Cell::new(Instant::now()),
            last_error: RefCell::new(None),
            credentials: None,
            controller: None,
        }
    }

    /// This shard's link to its master.
    pub fn status(&self, store: &MessageStore) -> FollowerStatus {
        let behind_bytes = self.master_end.get().saturating_sub(store.written_offset());
        FollowerStatus {
            master: self.master.ha(),
            connected: self.connected.get(),
            behind_bytes,
            behind_ms: match behind_bytes {
                0 if self.connected.get() => 0,
                _ => self.caught_up_at.get().elapsed().as_millis() as u64,
            },
        }
    }

    /// Follows the master until `shutdown` fires.
    pub async fn run(self: Rc<Self>, host: Rc<dyn FollowerHost>, shutdown: Shutdown) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let Some(addr) = self.wait_for_master(&shutdown).await else {
                return;
            };
            // Fenced for an election: no link (nothing to acknowledge) until the agent lifts
            // the fence (the election happened, or can no longer commit).
            if self.fenced() {
                self.note_error(&addr, "fenced by the controller for an election".into());
                if !shutdown.sleep(BACKOFF_MIN).await {
                    return;
                }
                continue;
            }
            let session = self.session(&addr, &*host);
            let ended = future::or(async { Some(session.await) }, async {
                shutdown.wait().await;
                None
            })
            .await;
            self.connected.set(false);
            let streamed = match ended {
                None => return,
                Some(Ok(streamed)) => streamed,
                Some(Err((reason, streamed))) => {
                    self.note_error(&addr, reason.to_string());
                    streamed
                }
            };
            backoff = if streamed {
                BACKOFF_MIN
            } else {
                (backoff * 2).min(BACKOFF_MAX)
            };
            if !shutdown.sleep(backoff).await {
                return;
            }
        }
    }

    /// Logs a link failure once per distinct reason (a master down for an hour is one line).
    fn note_error(&self, addr: &str, reason: String) {
        let mut last = self.last_error.borrow_mut();
        if last.as_deref() != Some(reason.as_str()) {
            tracing::warn!(master = addr, shard = self.shard, %reason, "HA link to the master");
            *last = Some(reason);
        }
    }

    /// The master's HA address, waiting until it is known; `None` on shutdown.
    async fn wait_for_master(&self, shutdown: &Shutdown) -> Option<String> {
        loop {
            if shutdown.is_triggered() {
                return None;
            }
            if let Some(addr) = self.master.ha() {
                return Some(addr);
            }
            let seen = self.master.changed_count();
            let changed = async {
                self.master.wait_changed(seen).await;
                true
            };
            let stop = async {
                shutdown.wait().await;
                false
            };
            if !future::or(changed, stop).await {
                return None;
            }
        }
    }

    /// One connection: handshake, then stream until it breaks. `Ok(true)`/`Err((_, true))`
    /// when data flowed (the next attempt need not back off).
    async fn session(&self, addr: &str, host: &dyn FollowerHost) -> Result<bool, (HaError, bool)> {
        let fail = |reason: HaError| (reason, false);
        let target = addr
            .to_socket_addrs()
            .map_err(|source| {
                fail(HaError::Resolve {
                    addr: addr.to_string(),
                    source,
                })
            })?
            .next()
            .ok_or_else(|| fail(HaError::NoAddress(addr.to_string())))?;
        let stream = TcpStream::connect_timeout(target, CONNECT_TIMEOUT)
            .await
            .map_err(|e| fail(HaError::Connect(e.into())))?;
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let mut store = host.store();
        let history =
            History::load(&self.history_path).map_err(|e| fail(HaError::LoadHistory(e)))?;
        let hello = self.hello(&store, history);
        writer
            .write_all(&hello.encode_signed(self.credentials.as_ref(), wall_clock_ms()))
            .await
            .map_err(|e| fail(HaError::Write(e)))?;
        let welcome = read_handshake(&mut reader, self.opts.housekeeping)
            .await
            .and_then(|body| Ok(Welcome::decode(&body)?))
            .map_err(fail)?;
        let (action, start, history) = self.accept_welcome(addr, welcome).map_err(fail)?;
        if action != Action::Continue {
            tracing::warn!(
                master = addr,
                shard = self.shard,
                ?action,
                start,
                from = store.written_offset(),
                "following the master's history"
            );
            store = host.reopen(action, start).await.map_err(fail)?;
        }
        check_start(start, store.written_offset()).map_err(fail)?;
        // Written and fsynced on a blocking thread: the shard keeps serving its readers.
        let path = self.history_path.clone();
        glommio::executor()
            .spawn_blocking(move || history.save(&path))
            .await
            .map_err(|e| fail(HaError::SaveHistory(e)))?;
        self.streaming(addr, start);
        let streamed = Cell::new(false);
        let outcome = future::or(
            self.receive(&mut reader, &store, &streamed),
            self.report(&mut writer, &store),
        )
        .await;
        let _ = writer.close().await;
        outcome
            .map(|()| streamed.get())
            .map_err(|e| (e, streamed.get()))
    }

    /// The HELLO of this shard, whose store is `store` and history `history`.
    pub fn hello<S: Storage>(&self, store: &MessageStore<S>, history: History) -> Hello {
        Hello {
            shard: self.shard,
            shard_count: self.shard_count,
            segment_bytes: store.segment_bytes(),
            lineage: history.lineage,
            offset: store.written_offset(),
            epochs: history.epochs,
            slave_addr: self.slave_addr.clone(),
            master_epoch: self.known_epoch(),
        }
    }

    /// The master's WELCOME: what to do to the log, where the stream starts, and the history
    /// to record before streaming; or why this slave does not follow it.
    pub fn accept_welcome(
        &self,
        addr: &str,
        welcome: Welcome,
    ) -> Result<(Action, u64, History), HaError> {
        match welcome {
            Welcome::Refused(reason) => {
                let reason = super::proto::explain_refusal(&reason);
                tracing::error!(master = addr, shard = self.shard, %reason,
                    "the master refuses this slave");
                Err(HaError::Refused(reason))
            }
            Welcome::Stream {
                action,
                start,
                lineage,
                epochs,
                master_epoch,
            } => {
                // Controller mode: a master elected before the newest epoch this slave knows
                // was replaced; obeying it (above all a cut of this log) would follow a
                // history the new master does not have.
                if let Some(why) = stale_master(master_epoch, self.known_epoch()) {
                    return Err(HaError::StaleMaster(why));
                }
                Ok((action, start, History { lineage, epochs }))
            }
        }
    }

    /// The handshake is done and the history saved: the stream starts at `start`.
    pub fn streaming(&self, addr: &str, start: u64) {
        self.connected.set(true);
        self.master_end.set(start);
        *self.last_error.borrow_mut() = None;
        tracing::info!(master = addr, shard = self.shard, start, "replicating");
    }

    /// The link ended.
    pub fn disconnected(&self) {
        self.connected.set(false);
    }

    /// A FRAME header arrived: records the master's end and checks the frame's size.
    pub fn on_frame_header(&self, frame: &FrameHeader) -> Result<(), HaError> {
        self.master_end.set(frame.master_end);
        if frame.len > FRAME_MAX_BYTES {
            return Err(HaError::FrameTooLarge(frame.len));
        }
        Ok(())
    }

    /// A DATA frame's payload (whole records at `pos`): appended to `store` and dispatched.
    pub async fn apply<S: Storage>(
        &self,
        pos: u64,
        payload: &[u8],
        store: &MessageStore<S>,
    ) -> Result<(), HaError> {
        store
            .wait_for_room(payload.len())
            .await
            .map_err(HaError::NoRoom)?;
        store
            .append_replicated(pos, payload)
            .map_err(HaError::Append)?;
        self.note_caught_up(store);
        Ok(())
    }

    /// A HEARTBEAT frame arrived.
    pub fn on_heartbeat<S: Storage>(&self, store: &MessageStore<S>) {
        self.note_caught_up(store);
    }

    /// Appends every chunk the master sends.
    async fn receive<R: futures_lite::AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        store: &MessageStore,
        streamed: &Cell<bool>,
    ) -> Result<(), HaError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        let mut payload = Vec::new();
        let limit = self.opts.housekeeping;
        loop {
            let silent = || HaError::Silent {
                peer: Peer::Master,
                ms: limit.as_millis(),
            };
            read_within(reader, &mut header, limit, silent).await?;
            let frame = FrameHeader::decode(&header)?;
            self.on_frame_header(&frame)?;
            if frame.kind != FRAME_DATA {
                self.on_heartbeat(store);
                continue;
            }
            payload.resize(frame.len as usize, 0);
            reader
                .read_exact(&mut payload)
                .await
                .map_err(HaError::Read)?;
            self.apply(frame.pos, &payload, store).await?;
            streamed.set(true);
        }
    }

    fn note_caught_up<S: Storage>(&self, store: &MessageStore<S>) {
        if store.written_offset() >= self.master_end.get() {
            self.caught_up_at.set(Instant::now());
        }
    }

    /// What this shard reports to its master: the offset it holds, durably when the slave
    /// runs SYNC_FLUSH (the report loop waits on it).
    pub fn report_watch<S: Storage>(&self, store: &MessageStore<S>) -> OffsetWatch {
        // The simulator's planted bug (cargo feature `sim-bug-unflushed-ack`, which needs the
        // `sim` feature; no broker build turns it on): report bytes the slave has appended
        // but not made durable, so a SYNC_MASTER put can be acknowledged with its record
        // only in the slave's memory. `ringmq-sim` finds it (README, "Simulator").
        let durable = self.ack_durable && !cfg!(feature = "sim-bug-unflushed-ack");
        match durable {
            true => store.flushed_watch(),
            false => store.written_watch(),
        }
    }

    /// Checked before every report: a fenced replica acknowledges nothing.
    pub fn may_report(&self) -> Result<(), HaError> {
        // Checked on this shard's thread: once the broker answered the controller's fence
        // (after every shard ran past it), no acknowledgement leaves.
        match self.fenced() {
            true => Err(HaError::Fenced),
            false => Ok(()),
        }
    }

    /// Reports the offset this shard holds (durably under SYNC_FLUSH) whenever it moves, and
    /// at least every `haSendHeartbeatInterval`.
    async fn report<W: futures_lite::AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        store: &MessageStore,
    ) -> Result<(), HaError> {
        let watch = self.report_watch(store);
        let mut sent = None;
        loop {
            let now = watch.get();
            self.may_report()?;
            if sent != Some(now) {
                writer
                    .write_all(&now.to_be_bytes())
                    .await
                    .map_err(HaError::Write)?;
                sent = Some(now);
            }
            match within(self.opts.heartbeat, watch.wait_for(now + 1)).await {
                Some(Err(())) => return Err(HaError::StoreClosed),
                Some(Ok(())) => {}
                None => sent = None, // heartbeat: report again
            }
        }
    }
}

/// A stream starting at `start` fits a log that ends at `end` (or an empty one).
pub fn check_start(start: u64, end: u64) -> Result<(), HaError> {
    match end != start && end != 0 {
        true => Err(HaError::StartMismatch { start, end }),
        false => Ok(()),
    }
}

impl Follower {
    /// The newest master epoch the agent knows (0 outside controller mode).
    fn known_epoch(&self) -> u32 {
        self.controller.as_ref().map_or(0, |v| v.known_epoch())
    }
}

/// Milliseconds since the epoch (the HELLO's signing time).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
