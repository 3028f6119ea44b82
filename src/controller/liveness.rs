//! Which replicas are alive (RocketMQ 5's `BrokerHeartbeatManager`): each controller keeps the
//! last BROKER_HEARTBEAT of every replica in memory. Not replicated: brokers heartbeat every
//! controller, and a controller that becomes leader first waits one heartbeat timeout before it
//! declares anyone dead ([`Liveness::grace_until`]), so a new leader never elects from an empty
//! table. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::state::CandidateInfo;

/// What the last heartbeat of one replica said.
#[derive(Debug, Clone)]
pub struct LiveInfo {
    pub cluster_name: String,
    pub address: String,
    pub last_seen: Instant,
    /// `heartbeatTimeoutMills` the broker asked for.
    pub timeout: Duration,
    pub candidate: CandidateInfo,
    /// `confirmOffset`: what the replica knows to be replicated.
    pub confirm_offset: u64,
}

/// The heartbeat table, keyed by (brokerName, brokerId).
#[derive(Debug, Default)]
pub struct Liveness {
    table: HashMap<(String, u64), LiveInfo>,
    grace_until: Option<Instant>,
}

impl Liveness {
    /// Records a heartbeat.
    pub fn heartbeat(&mut self, broker_name: &str, broker_id: u64, info: LiveInfo) {
        self.table
            .insert((broker_name.to_string(), broker_id), info);
    }

    /// Until `until`, every replica counts as alive (a new leader's grace period).
    pub fn grace_until(&mut self, until: Instant) {
        self.grace_until = Some(until);
    }

    /// Whether `broker_id` of `broker_name` heartbeated within its timeout at `now`.
    pub fn is_alive(&self, broker_name: &str, broker_id: u64, now: Instant) -> bool {
        if self.grace_until.is_some_and(|g| now < g) {
            return true;
        }
        self.table
            .get(&(broker_name.to_string(), broker_id))
            .is_some_and(|i| now.saturating_duration_since(i.last_seen) <= i.timeout)
    }

    /// What the replica last reported.
    pub fn info(&self, broker_name: &str, broker_id: u64) -> Option<&LiveInfo> {
        self.table.get(&(broker_name.to_string(), broker_id))
    }

    /// Drops and returns the replicas whose heartbeats stopped (Java's
    /// `scanNotActiveBroker`), as (brokerName, brokerId).
    pub fn expire(&mut self, now: Instant) -> Vec<(String, u64)> {
        if self.grace_until.is_some_and(|g| now < g) {
            return Vec::new();
        }
        let dead: Vec<(String, u64)> = self
            .table
            .iter()
            .filter(|(_, i)| now.saturating_duration_since(i.last_seen) > i.timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &dead {
            self.table.remove(key);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(at: Instant) -> LiveInfo {
        LiveInfo {
            cluster_name: "c".into(),
            address: "127.0.0.1:10911".into(),
            last_seen: at,
            timeout: Duration::from_secs(10),
            candidate: CandidateInfo::default(),
            confirm_offset: 0,
        }
    }

    #[test]
    fn heartbeats_expire_after_their_timeout_except_in_grace() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.heartbeat("b", 1, info(t0));
        assert!(l.is_alive("b", 1, t0 + Duration::from_secs(10)));
        assert!(!l.is_alive("b", 1, t0 + Duration::from_secs(11)));
        assert!(!l.is_alive("b", 2, t0));
        l.grace_until(t0 + Duration::from_secs(20));
        assert!(l.is_alive("b", 2, t0 + Duration::from_secs(15)));
        assert!(l.expire(t0 + Duration::from_secs(15)).is_empty());
        assert_eq!(
            l.expire(t0 + Duration::from_secs(21)),
            vec![("b".to_string(), 1)]
        );
        assert!(l.info("b", 1).is_none());
    }
}
