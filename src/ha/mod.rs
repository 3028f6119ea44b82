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

pub mod history;
pub mod master;
pub mod proto;
pub mod slave;

use std::future::Future;
use std::time::Duration;

use futures_lite::future;

use crate::config::BrokerConfig;

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
}

impl HaOptions {
    pub fn from_broker(cfg: &BrokerConfig) -> HaOptions {
        HaOptions {
            batch_bytes: cfg.ha_transfer_batch_size_bytes.clamp(4096, 64 << 20) as usize,
            heartbeat: Duration::from_millis(cfg.ha_send_heartbeat_interval_ms.max(10)),
            housekeeping: Duration::from_millis(cfg.ha_housekeeping_interval_ms.max(100)),
            slave_timeout: Duration::from_millis(cfg.slave_timeout_ms),
            fallbehind_max: cfg.ha_slave_fallbehind_max_bytes,
        }
    }
}

/// `Some(output)` if `fut` finishes within `limit`, `None` otherwise.
pub(crate) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}
