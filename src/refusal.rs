//! Requests refused by the broker or the nameserver, made visible to the operator: each refusal
//! is counted per peer (the dashboard's "refused" column, through the connection answers) and
//! logged at WARN with the peer, the client id when known, the request and response codes and
//! the remark, at most one line per (peer host, request code) per interval with the count of
//! those not logged ([`LogLimiter`]). The host, not host and port: a client that reconnects for
//! every request must not get a line per connection.
//!
//! One [`Refusals`] per executor (a broker shard, the nameserver); `!Sync` like the limiter.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::log_limit::{LogLimiter, Verdict};
use crate::remoting::{request as req, response as resp};

/// One WARN line per (peer host, request code) per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// (peer host, request code) keys the limiter tracks before they share one overflow line.
pub const REFUSAL_LOG_KEYS_MAX: usize = 1024;
/// Peers whose refusals are counted; when full, the peer with the fewest is forgotten.
pub const REFUSAL_PEERS_MAX: usize = 4096;

/// True when an error answer is a refusal worth the operator's attention, false for answers
/// that only say "nothing there" (an offset or KV key not found, a group with no client online,
/// a route lookup for a topic that does not exist: clients and the dashboard ask those
/// routinely, and Java does not log them either).
pub fn is_refusal(request_code: i32, response_code: i32) -> bool {
    match response_code {
        resp::SUCCESS | resp::QUERY_NOT_FOUND | resp::CONSUMER_NOT_ONLINE => false,
        resp::TOPIC_NOT_EXIST => request_code != req::GET_ROUTEINFO_BY_TOPIC,
        _ => true,
    }
}

/// What was refused.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    pub peer: SocketAddr,
    pub request_code: i32,
    pub response_code: i32,
    pub remark: &'a str,
}

/// Refusal counts per peer and the limiter of their WARN lines.
#[derive(Debug)]
pub struct Refusals {
    limiter: LogLimiter<(IpAddr, i32)>,
    by_peer: RefCell<HashMap<SocketAddr, u64>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            limiter: LogLimiter::new(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_KEYS_MAX),
            by_peer: RefCell::new(HashMap::new()),
        }
    }
}

impl Refusals {
    /// Counts `refusal` and logs it unless its (peer, request code) was logged within the
    /// interval; `client_id` is asked only for a line that is written. True when logged.
    pub fn record(&self, refusal: Refusal<'_>, client_id: impl FnOnce() -> Option<String>) -> bool {
        self.record_at(refusal, client_id, Instant::now())
    }

    /// [`Refusals::record`] at `now` (tests pass their own clock).
    pub fn record_at(
        &self,
        refusal: Refusal<'_>,
        client_id: impl FnOnce() -> Option<String>,
        now: Instant,
    ) -> bool {
        self.count(refusal.peer);
        let key = (refusal.peer.ip(), refusal.request_code);
        let Verdict::Log { suppressed } = self.limiter.check_at(key, now) else {
            return false;
        };
        let client_id = client_id();
        tracing::warn!(
            peer = %refusal.peer,
            client_id = client_id.as_deref().unwrap_or("-"),
            request = req::name(refusal.request_code).unwrap_or("?"),
            request_code = refusal.request_code,
            response_code = refusal.response_code,
            remark = refusal.remark,
            suppressed,
            "request refused"
        );
        true
    }

    fn count(&self, peer: SocketAddr) {
        let mut by_peer = self.by_peer.borrow_mut();
        if !by_peer.contains_key(&peer) && by_peer.len() >= REFUSAL_PEERS_MAX {
            let fewest = by_peer.iter().min_by_key(|(_, n)| **n).map(|(p, _)| *p);
            if let Some(fewest) = fewest {
                by_peer.remove(&fewest);
            }
        }
        *by_peer.entry(peer).or_insert(0) += 1;
    }

    /// Refusals counted for `peer`.
    pub fn of(&self, peer: SocketAddr) -> u64 {
        self.by_peer.borrow().get(&peer).copied().unwrap_or(0)
    }

    /// Every peer's count.
    pub fn counts(&self) -> HashMap<SocketAddr, u64> {
        self.by_peer.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(peer: &str, request_code: i32) -> Refusal<'static> {
        Refusal {
            peer: peer.parse().unwrap(),
            request_code,
            response_code: resp::SYSTEM_ERROR,
            remark: "the heartbeat body does not parse",
        }
    }

    #[test]
    fn a_burst_from_one_peer_logs_one_line_and_counts_all() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        let mut asked = 0;
        let mut lines = 0;
        for i in 0..1000 {
            let at = t0 + Duration::from_millis(i);
            let logged = refusals.record_at(
                refusal("10.0.0.1:4000", req::HEART_BEAT),
                || {
                    asked += 1;
                    Some("c1".into())
                },
                at,
            );
            lines += usize::from(logged);
        }
        assert_eq!((lines, asked), (1, 1));
        assert_eq!(refusals.of("10.0.0.1:4000".parse().unwrap()), 1000);
        // Another request code of the same peer is its own line; the next interval logs again.
        assert!(refusals.record_at(refusal("10.0.0.1:4000", req::PULL_MESSAGE), || None, t0));
        let later = t0 + REFUSAL_LOG_INTERVAL;
        assert!(refusals.record_at(refusal("10.0.0.1:4000", req::HEART_BEAT), || None, later));
    }

    #[test]
    fn not_found_answers_are_not_refusals() {
        assert!(!is_refusal(
            req::QUERY_CONSUMER_OFFSET,
            resp::QUERY_NOT_FOUND
        ));
        assert!(!is_refusal(
            req::GET_ROUTEINFO_BY_TOPIC,
            resp::TOPIC_NOT_EXIST
        ));
        assert!(is_refusal(req::SEND_MESSAGE, resp::TOPIC_NOT_EXIST));
        assert!(!is_refusal(
            req::GET_CONSUMER_CONNECTION_LIST,
            resp::CONSUMER_NOT_ONLINE
        ));
        assert!(is_refusal(req::HEART_BEAT, resp::SYSTEM_ERROR));
    }

    #[test]
    fn a_client_reconnecting_for_every_request_gets_one_line() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        let lines = (0..1000u16)
            .filter(|port| {
                let peer = format!("10.0.0.3:{}", 20_000 + port);
                refusals.record_at(refusal(&peer, req::HEART_BEAT), || None, t0)
            })
            .count();
        assert_eq!(lines, 1);
        assert_eq!(refusals.counts().len(), 1000, "counted per connection");
    }

    #[test]
    fn peers_are_bounded() {
        let refusals = Refusals::default();
        for port in 0..(REFUSAL_PEERS_MAX as u16 + 10) {
            let peer = SocketAddr::from(([10, 0, 0, 2], port));
            refusals.count(peer);
        }
        assert_eq!(refusals.counts().len(), REFUSAL_PEERS_MAX);
    }
}
