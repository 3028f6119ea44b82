//! Owns the facts about the machine that RocketMQ's defaults depend on: the advertised IP
//! (`brokerIP1`), the host name (`brokerName`), `$HOME` (store and KV paths), `ROCKETMQ_HOME`
//! and the CPU count (thread-pool defaults). Read once at startup, on the calling thread, and
//! passed by value ([`HostInfo`]) so tests and callers can substitute their own.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::PathBuf;

/// Host-dependent inputs of the default configs. Build one with [`HostInfo::detect`] or by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Default `brokerIP1`/`brokerIP2`; see [`detect_broker_ip`].
    pub ip: IpAddr,
    /// Default `brokerName`; see [`detect_host_name`].
    pub name: String,
    /// `$HOME`, the parent of the default store root and namesrv KV file (`.` if unset).
    pub home: PathBuf,
    /// `$ROCKETMQ_HOME`, if set.
    pub rocketmq_home: Option<PathBuf>,
    /// Available CPUs (Java's `Runtime.availableProcessors()`), at least 1.
    pub cpus: u32,
}

impl HostInfo {
    /// Reads the environment, the host name and the routing table (no packet is sent).
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        HostInfo {
            ip: detect_broker_ip(),
            name: detect_host_name(),
            home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from),
            rocketmq_home: std::env::var_os("ROCKETMQ_HOME").map(PathBuf::from),
            cpus,
        }
    }
}

/// The address other hosts reach this one by, as Java's `RemotingUtil.getLocalAddress` picks it:
/// a non-loopback IPv4, else `127.0.0.1`.
///
/// Java walks every interface and prefers an address not starting with `127.0` or `192.168`,
/// falling back to the last IPv4 (which may well be `192.168.x.y`). std cannot list interfaces,
/// so this asks the kernel which source address it would use towards a TEST-NET address
/// (`connect` on a UDP socket sends nothing): that is the primary interface's address, and a
/// `192.168` one is kept because it is then what Java would fall back to as well.
pub fn detect_broker_ip() -> IpAddr {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
        return loopback;
    };
    if socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).is_err() {
        return loopback;
    }
    match socket.local_addr().map(|a| a.ip()) {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip,
        _ => loopback,
    }
}

/// The kernel host name (Java: `InetAddress.getLocalHost().getHostName()`), or `DEFAULT_BROKER`
/// as Java falls back to when it cannot be read.
pub fn detect_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "DEFAULT_BROKER".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_never_fails() {
        let host = HostInfo::detect();
        assert!(host.cpus >= 1);
        assert!(!host.name.is_empty());
        assert!(!host.ip.is_unspecified());
    }
}
