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
pub mod history;
pub mod master;
pub mod proto;
pub mod slave;

use std::future::Future;
use std::time::Duration;

use futures_lite::future;

use crate::config::BrokerConfig;

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
/// epoch (a new master numbers its HA epoch after it) and the NOTIFY_BROKER_ROLE_CHANGED
/// notices that wake the agent.
#[derive(Debug, Default)]
pub struct SyncStateView {
    /// Bumped on every change, so that a shard re-reads `state` only when it moved.
    version: std::sync::atomic::AtomicU64,
    state: std::sync::Mutex<std::sync::Arc<SyncState>>,
    master_epoch: std::sync::atomic::AtomicU32,
    notices: std::sync::Mutex<u64>,
    noticed: std::sync::Condvar,
}

impl SyncStateView {
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
    silent: impl FnOnce() -> String,
) -> Result<(), String> {
    use futures_lite::AsyncReadExt;
    match within(limit, reader.read_exact(buf)).await {
        None => Err(silent()),
        Some(Err(e)) => Err(format!("read failed: {e}")),
        Some(Ok(())) => Ok(()),
    }
}

/// Reads a HELLO or WELCOME body (after its bounded length prefix) within `limit`.
pub(crate) async fn read_handshake<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    use futures_lite::AsyncReadExt;
    let closed = |e: std::io::Error| format!("the peer closed the link: {e}");
    let read = async {
        let mut prefix = [0u8; 4];
        reader.read_exact(&mut prefix).await.map_err(closed)?;
        let mut body = vec![0u8; proto::handshake_len(prefix)?];
        reader.read_exact(&mut body).await.map_err(closed)?;
        Ok(body)
    };
    within(limit, read)
        .await
        .unwrap_or_else(|| Err("no handshake in time".into()))
}

/// `Some(output)` if `fut` finishes within `limit`, `None` otherwise.
pub(crate) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
