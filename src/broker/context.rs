//! What every shard of a broker knows and never changes while it runs: its configuration and
//! identity. Built once at start-up and copied into each shard.

use std::net::SocketAddr;

use crate::broker::live_config::LiveConfig;
use crate::config::{BrokerConfig, BrokerRole};

/// A broker's identity and settings.
#[derive(Debug, Clone)]
pub struct BrokerContext {
    pub cfg: BrokerConfig,
    /// `brokerIP1:listenPort`: the address clients reach, written into every stored record and
    /// offsetMsgId.
    pub store_host: SocketAddr,
    /// `store_host` as text (registration, routes).
    pub broker_addr: String,
    /// Number of shards.
    pub shards: usize,
    /// The HA port (`listenPort + 1`; another one when the broker listens on a free port).
    pub ha_port: u16,
    /// Nameservers to register with.
    pub namesrv_addrs: Vec<String>,
    /// The settings UPDATE_BROKER_CONFIG changes at runtime (`cfg` keeps the start-up values).
    pub live: LiveConfig,
    /// The plain ACL every request passes (`aclEnable=true`), shared by all shards.
    pub acl: Option<std::sync::Arc<crate::acl::Acl>>,
    /// Controller mode: the SyncStateSet view of the broker's agent.
    pub sync_state: Option<std::sync::Arc<crate::ha::SyncStateView>>,
}

impl BrokerContext {
    /// True when this broker accepts writes (not a slave, write permission set).
    pub fn writable(&self) -> bool {
        self.cfg.broker_role != BrokerRole::Slave && self.live.broker_permission() & 2 != 0
    }

    /// True when this broker serves reads.
    pub fn readable(&self) -> bool {
        self.live.broker_permission() & 4 != 0
    }

    /// The broker's own account (`aclAccessKey`/`aclSecretKey`), signing its requests to the
    /// nameservers and, on a slave, to its master.
    pub fn credentials(&self) -> Option<crate::acl::Credentials> {
        let (ak, sk) = (
            self.cfg.acl_access_key.as_ref()?,
            self.cfg.acl_secret_key.as_ref()?,
        );
        Some(crate::acl::Credentials::new(ak.as_str(), sk.as_str()))
    }

    /// The broker's permission as Java's `PermName` bits.
    pub fn permission(&self) -> i32 {
        i32::from(self.live.broker_permission())
    }
}
