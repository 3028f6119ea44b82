//! Master/slave replication (HA.md, DESIGN.md "Replication"). The HA stream is ringmq's own
//! (clients never see it): one TCP connection per (slave, shard) to the master's HA port
//! (`listenPort + 1`), carrying that shard's commitlog bytes as they are, whole records at a
//! time, and the slave's acknowledgements back.
//!
//! - `proto`: the wire format (handshake, frames, acks).
//! - `history`: lineage and epochs, and the decision where a slave's stream starts (continue,
//!   cut a diverged log at the common point, or start over).
//! - `master`: the slaves of a master shard, their streams and the SYNC_MASTER wait.
//! - `slave`: the follower of a slave shard.
//!
//! The broker wires these up: the HA listener on the control shard hands each connection to
//! the shard it names; metadata sync (topics, offsets, groups) rides the remoting protocol.

pub mod auth;
pub mod error;
pub mod history;
pub mod master;
pub mod proto;
pub mod slave;

use std::future::Future;
use std::time::Duration;

use futures_lite::future;

use crate::config::BrokerConfig;
pub use error::{HaError, ProtoError};

/// What a master in controller mode knows of its group's SyncStateSet (set by
/// `crate::controller::broker_agent` on its thread, read by the shards' SYNC_MASTER waits):
/// the broker addresses of the replicas besides the master that must hold a message before it
/// is acknowledged, and the size of the set the controller committed. The agent adds a replica
/// before the controller commits a larger set and removes one only after the controller
/// committed a smaller one, so no replica enters the set (and becomes electable) while the
/// master acknowledges without it, and none leaves it (so that the master acknowledges without
/// it) behind the controllers' back.
///
/// It is also the rest of the agent's link with the broker it runs: the controller's master
/// epoch (a new master numbers its HA epoch after it), the newest master epoch the agent has
/// seen (the HA handshake's epoch check), the fence the controller put on this replica before
/// electing it, the figures runtime info shows, and the NOTIFY_BROKER_ROLE_CHANGED notices
/// that wake the agent.
#[derive(Debug, Default)]
pub struct SyncStateView {
    /// Bumped on every change, so that a shard re-reads `state` only when it moved.
    version: std::sync::atomic::AtomicU64,
    state: std::sync::Mutex<std::sync::Arc<SyncState>>,
    master_epoch: std::sync::atomic::AtomicU32,
    known_epoch: std::sync::atomic::AtomicU32,
    /// `Some((master epoch, SyncStateSet epoch))` of the election this replica was fenced
    /// for; `fenced` mirrors `is_some()` for the followers' lock-free check.
    fence: std::sync::Mutex<Option<(u32, u32)>>,
    fenced: std::sync::atomic::AtomicBool,
    figures: std::sync::Mutex<Option<GroupFigures>>,
    /// The hosts of `controllerAddr`, resolved by the agent (who may fence this replica).
    controller_hosts: std::sync::Mutex<Vec<std::net::IpAddr>>,
    notices: std::sync::Mutex<u64>,
    noticed: std::sync::Condvar,
}

/// The group as the agent last read it from the controller (runtime info, clusterList and
/// the dashboard show it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFigures {
    /// This broker's controller-assigned id.
    pub broker_id: u64,
    pub master_id: Option<u64>,
    pub master_epoch: u32,
    pub sync_state_set: Vec<u64>,
    pub sync_state_set_epoch: u32,
}

impl SyncStateView {
    /// The newest master epoch of the group the agent has read from the controller: a slave
    /// follows no master elected before it (the HA handshake refuses one).
    pub fn known_epoch(&self) -> u32 {
        self.known_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn raise_known_epoch(&self, epoch: u32) {
        self.known_epoch
            .fetch_max(epoch, std::sync::atomic::Ordering::AcqRel);
    }

    /// The controller fences this replica before electing it at (`master_epoch`,
    /// `sync_state_set_epoch`): from now on its followers acknowledge nothing to any master
    /// (see `crate::controller::node`'s fencing).
    pub fn fence(&self, master_epoch: u32, sync_state_set_epoch: u32) {
        let mut fence = self.fence.lock().unwrap_or_else(|e| e.into_inner());
        *fence = Some((master_epoch, sync_state_set_epoch));
        self.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a fence is on (the followers check it before every acknowledgement).
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The agent read the group at (`master_epoch`, `sync_state_set_epoch`): a fence put on for
    /// an older state is lifted (the election it was for either happened or can never commit:
    /// an election command is applied only at the epochs it was planned at). A view older than
    /// the fence (from a deposed controller leader) lifts nothing. The fence lifted, if any.
    pub fn lift_fence_if_older_than(
        &self,
        master_epoch: u32,
        sync_state_set_epoch: u32,
    ) -> Option<(u32, u32)> {
        let mut fence = self.fence.lock().unwrap_or_else(|e| e.into_inner());
        let (e, s) = (*fence)?;
        if master_epoch > e || (master_epoch == e && sync_state_set_epoch > s) {
            *fence = None;
            self.fenced
                .store(false, std::sync::atomic::Ordering::SeqCst);
            return Some((e, s));
        }
        None
    }

    /// The agent resolved `controllerAddr` to these hosts.
    pub fn set_controller_hosts(&self, hosts: Vec<std::net::IpAddr>) {
        *self
            .controller_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = hosts;
    }

    /// Whether `ip` is one of the controllers' hosts.
    pub fn is_controller_host(&self, ip: std::net::IpAddr) -> bool {
        self.controller_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
    }

    /// The group as last read (`None` before the first read).
    pub fn figures(&self) -> Option<GroupFigures> {
        self.figures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_figures(&self, figures: GroupFigures) {
        *self.figures.lock().unwrap_or_else(|e| e.into_inner()) = Some(figures);
    }

    /// The controller's master epoch of the group, as last read.
    pub fn master_epoch(&self) -> u32 {
        self.master_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_master_epoch(&self, epoch: u32) {
        self.master_epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
    }

    /// Notices received so far.
    pub fn notices(&self) -> u64 {
        *self.notices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A NOTIFY_BROKER_ROLE_CHANGED arrived: wakes [`SyncStateView::wait_notice`].
    pub fn notify(&self) {
        *self.notices.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.noticed.notify_all();
    }

    /// Waits up to `timeout` for a notice after the `seen`-th; true when one came.
    pub fn wait_notice(&self, seen: u64, timeout: std::time::Duration) -> bool {
        let count = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        let (count, _) = self
            .noticed
            .wait_timeout_while(count, timeout, |n| *n == seen)
            .unwrap_or_else(|e| e.into_inner());
        *count != seen
    }
}

/// One version of [`SyncStateView`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// Addresses (`brokerIP1:listenPort`) of the other replicas in the set.
    pub others: std::collections::BTreeSet<String>,
    /// Replicas in the set the controller committed, the master counted.
    pub committed_size: usize,
}

impl SyncStateView {
    /// The version of the state (changes whenever the state does).
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current state.
    pub fn get(&self) -> std::sync::Arc<SyncState> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        std::sync::Arc::clone(&state)
    }

    /// Replaces the state (no-op when equal).
    pub fn set(&self, next: SyncState) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if **state != next {
            *state = std::sync::Arc::new(next);
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// How a SYNC_MASTER in controller mode acknowledges (`allAckInSyncStateSet`,
/// `inSyncReplicas`, `minInSyncReplicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPolicy {
    pub all_ack_in_sync_state_set: bool,
    pub in_sync_replicas: u32,
    pub min_in_sync_replicas: u32,
}

/// Replication settings, from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct HaOptions {
    /// `haTransferBatchSize`: bytes read from the commitlog per chunk.
    pub batch_bytes: usize,
    /// `haSendHeartbeatInterval`.
    pub heartbeat: Duration,
    /// `haHousekeepingInterval`: a link silent this long is dropped.
    pub housekeeping: Duration,
    /// `slaveTimeout`: SYNC_MASTER wait before FLUSH_SLAVE_TIMEOUT.
    pub slave_timeout: Duration,
    /// `haSlaveFallbehindMax`: a slave further behind is not available to SYNC_MASTER.
    pub fallbehind_max: u64,
    /// Controller mode's acknowledgement keys.
    pub ack: AckPolicy,
}

impl HaOptions {
    pub fn from_broker(cfg: &BrokerConfig) -> HaOptions {
        HaOptions {
            batch_bytes: cfg.ha_transfer_batch_size_bytes.clamp(4096, 64 << 20) as usize,
            heartbeat: Duration::from_millis(cfg.ha_send_heartbeat_interval_ms.max(10)),
            housekeeping: Duration::from_millis(cfg.ha_housekeeping_interval_ms.max(100)),
            slave_timeout: Duration::from_millis(cfg.slave_timeout_ms),
            fallbehind_max: cfg.ha_slave_fallbehind_max_bytes,
            ack: AckPolicy {
                all_ack_in_sync_state_set: cfg.all_ack_in_sync_state_set,
                in_sync_replicas: cfg.in_sync_replicas,
                min_in_sync_replicas: cfg.min_in_sync_replicas,
            },
        }
    }
}

/// Fills `buf` from `reader` within `limit`; when nothing complete came in time the error is
/// `silent()`.
pub(crate) async fn read_within<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    limit: Duration,
    silent: impl FnOnce() -> HaError,
) -> Result<(), HaError> {
    use futures_lite::AsyncReadExt;
    match within(limit, reader.read_exact(buf)).await {
        None => Err(silent()),
        Some(Err(e)) => Err(HaError::Read(e)),
        Some(Ok(())) => Ok(()),
    }
}

/// Reads a HELLO or WELCOME body (after its bounded length prefix) within `limit`.
pub(crate) async fn read_handshake<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> Result<Vec<u8>, HaError> {
    use futures_lite::AsyncReadExt;
    let closed = HaError::Closed;
    let read = async {
        let mut prefix = [0u8; 4];
        reader.read_exact(&mut prefix).await.map_err(closed)?;
        let mut body = vec![0u8; proto::handshake_len(prefix)?];
        reader.read_exact(&mut body).await.map_err(closed)?;
        Ok(body)
    };
    within(limit, read)
        .await
        .unwrap_or(Err(HaError::NoHandshake))
}

/// `Some(output)` if `fut` finishes within `limit`, `None` otherwise.
pub(crate) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::SyncStateView;

    #[test]
    fn a_fence_is_lifted_only_by_a_newer_state_of_the_group() {
        let view = SyncStateView::default();
        assert!(!view.is_fenced());
        view.fence(3, 5);
        assert!(view.is_fenced());
        // The state the election was planned at, or an older one (a deposed controller
        // leader's): the election may still commit, the fence stays.
        assert_eq!(view.lift_fence_if_older_than(3, 5), None);
        assert_eq!(view.lift_fence_if_older_than(3, 4), None);
        assert_eq!(view.lift_fence_if_older_than(2, 9), None);
        assert!(view.is_fenced());
        // The SyncStateSet changed: the election can no longer commit.
        assert_eq!(view.lift_fence_if_older_than(3, 6), Some((3, 5)));
        assert!(!view.is_fenced());
        // The election happened.
        view.fence(3, 6);
        assert_eq!(view.lift_fence_if_older_than(4, 1), Some((3, 6)));
        assert!(!view.is_fenced());
        assert_eq!(view.lift_fence_if_older_than(9, 9), None, "nothing to lift");
    }

    #[test]
    fn the_known_epoch_only_rises() {
        let view = SyncStateView::default();
        view.raise_known_epoch(4);
        view.raise_known_epoch(2);
        assert_eq!(view.known_epoch(), 4);
    }
}
