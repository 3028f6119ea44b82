//! The address patterns of plain_acl.yml (`globalWhiteRemoteAddresses`, an account's
//! `whiteRemoteAddress`), with the forms RocketMQ's `RemoteAddressStrategyFactory` accepts:
//!
//! | pattern | matches |
//! |---|---|
//! | blank | nothing |
//! | `*`, `*.*.*.*`, `*:*:*:*:*:*:*:*` | every address |
//! | `192.168.0.1`, `::1` | that address |
//! | `192.168.0.1,10.0.0.2` | any address of the list (IPv4 or IPv6) |
//! | `192.168.1.{1,2,5}` | `192.168.1.1`, `.2` and `.5` |
//! | `192.168.*.*`, `192.168.1.*` | the addresses under the fixed octets |
//! | `192.168.1-5.*`, `192.168.0.10-20` | the fixed octets, then one octet in the range |
//!
//! IPv6 ranges and brace lists (`fe80::*`, `…:{1,2}`) are refused with an error rather than
//! guessed at: the file is rejected and says which pattern. An IPv4-mapped IPv6 peer
//! (`::ffff:10.0.0.1`) is matched as its IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::{AclError, AddressProblem};

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    /// Blank: matches nothing.
    Nothing,
    /// `*` and friends.
    Any,
    /// A list (one element for a single address).
    List(Vec<IpAddr>),
    /// The first `fixed.len()` octets equal `fixed`, the next one in `low..=high`, the rest
    /// anything.
    Range { fixed: Vec<u8>, low: u8, high: u8 },
}

/// Canonical form of a peer: IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bad(pattern: &str, problem: AddressProblem) -> AclError {
    AclError::Address {
        pattern: pattern.to_string(),
        problem,
    }
}

fn parse_ip(text: &str, pattern: &str) -> Result<IpAddr, AclError> {
    let text = text.trim();
    match text.parse::<Ipv4Addr>() {
        Ok(v4) => Ok(IpAddr::V4(v4)),
        Err(_) => text
            .parse::<Ipv6Addr>()
            .map(|v6| canonical(IpAddr::V6(v6)))
            .map_err(|_| bad(pattern, AddressProblem::NotAnIp(text.to_string()))),
    }
}

fn octet(text: &str, pattern: &str) -> Result<u8, AclError> {
    text.trim()
        .parse::<u8>()
        .map_err(|_| bad(pattern, AddressProblem::NotAnOctet(text.to_string())))
}

impl AddressPattern {
    /// Parses a pattern; the error names the pattern and what is wrong with it.
    pub fn parse(pattern: &str) -> Result<AddressPattern, AclError> {
        let p = pattern.trim();
        if p.is_empty() {
            return Ok(AddressPattern::Nothing);
        }
        if matches!(p, "*" | "*.*.*.*" | "*:*:*:*:*:*:*:*") {
            return Ok(AddressPattern::Any);
        }
        let ipv6 = p.contains(':');
        if p.ends_with('}') {
            if ipv6 {
                return Err(bad(p, AddressProblem::Ipv6Range));
            }
            return Self::parse_braces(p);
        }
        if p.contains(',') {
            let list: Result<Vec<IpAddr>, AclError> = p
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_ip(s, p))
                .collect();
            return Ok(AddressPattern::List(list?));
        }
        if p.contains('*') || p.contains('-') {
            if ipv6 {
                return Err(bad(p, AddressProblem::Ipv6Range));
            }
            return Self::parse_range(p);
        }
        Ok(AddressPattern::List(vec![parse_ip(p, p)?]))
    }

    /// `a.b.c.{x,y}`.
    fn parse_braces(p: &str) -> Result<AddressPattern, AclError> {
        let (head, rest) = p
            .split_once('{')
            .ok_or_else(|| bad(p, AddressProblem::BraceWithoutOpen))?;
        let fixed: Vec<&str> = head.trim_end_matches('.').split('.').collect();
        if !head.ends_with('.') || fixed.len() != 3 {
            return Err(bad(p, AddressProblem::BraceNotFourth));
        }
        let items = rest.trim_end_matches('}');
        let list: Result<Vec<IpAddr>, AclError> = items
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|last| parse_ip(&format!("{head}{}", last.trim()), p))
            .collect();
        Ok(AddressPattern::List(list?))
    }

    /// `a.b.*.*`, `a.b.c.*`, `a.b.x-y.*`, `a.b.c.x-y`.
    fn parse_range(p: &str) -> Result<AddressPattern, AclError> {
        let parts: Vec<&str> = p.split('.').map(str::trim).collect();
        if parts.len() != 4 {
            return Err(bad(p, AddressProblem::NotFourOctets));
        }
        let at = (1..4)
            .find(|&i| parts[i] == "*" || parts[i].contains('-'))
            .ok_or_else(|| bad(p, AddressProblem::WildcardFirst))?;
        let fixed = parts[..at]
            .iter()
            .map(|o| octet(o, p))
            .collect::<Result<Vec<u8>, AclError>>()?;
        let (low, high) = match parts[at] {
            "*" => (0, 255),
            range => {
                let (low, high) = range
                    .split_once('-')
                    .ok_or_else(|| bad(p, AddressProblem::BadRange(range.to_string())))?;
                let (low, high) = (octet(low, p)?, octet(high, p)?);
                if low > high {
                    return Err(bad(p, AddressProblem::EmptyRange(low, high)));
                }
                (low, high)
            }
        };
        if parts[at + 1..].iter().any(|o| *o != "*") {
            return Err(bad(p, AddressProblem::AfterWildcard));
        }
        Ok(AddressPattern::Range { fixed, low, high })
    }

    /// True when `peer` matches.
    pub fn matches(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        match self {
            AddressPattern::Nothing => false,
            AddressPattern::Any => true,
            AddressPattern::List(list) => list.contains(&peer),
            AddressPattern::Range { fixed, low, high } => match peer {
                IpAddr::V4(v4) => {
                    let o = v4.octets();
                    o[..fixed.len()] == fixed[..] && (*low..=*high).contains(&o[fixed.len()])
                }
                IpAddr::V6(_) => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn matches(pattern: &str, peer: &str) -> bool {
        AddressPattern::parse(pattern)
            .expect(pattern)
            .matches(ip(peer))
    }

    #[test]
    fn the_forms_rocketmq_accepts() {
        assert!(!matches("", "10.0.0.1"));
        for any in ["*", "*.*.*.*", "*:*:*:*:*:*:*:*"] {
            assert!(matches(any, "10.0.0.1") && matches(any, "::1"), "{any}");
        }
        assert!(matches("192.168.0.1", "192.168.0.1"));
        assert!(!matches("192.168.0.1", "192.168.0.2"));
        assert!(matches("192.168.0.1,10.0.0.2", "10.0.0.2"));
        assert!(matches("192.168.1.{1,2,5}", "192.168.1.5"));
        assert!(!matches("192.168.1.{1,2,5}", "192.168.1.3"));
        assert!(matches("192.168.*.*", "192.168.200.7"));
        assert!(!matches("192.168.*.*", "192.169.0.1"));
        assert!(matches("192.168.1.*", "192.168.1.9"));
        assert!(matches("192.168.1-5.*", "192.168.3.1"));
        assert!(!matches("192.168.1-5.*", "192.168.6.1"));
        assert!(matches("10.0.0.10-20", "10.0.0.20"));
        assert!(!matches("10.0.0.10-20", "10.0.0.21"));
        assert!(matches("::1", "::1"));
        assert!(matches("127.0.0.1", "::ffff:127.0.0.1"));
        assert!(matches("127.0.0.*", "::ffff:127.0.0.1"));
    }

    #[test]
    fn bad_patterns_are_refused_by_name() {
        for bad in [
            "192.168.0.256",
            "192.168.0",
            "192.168.0.x",
            "192.168.5-1.*",
            "*.168.0.1",
            "192.168.*.1",
            "192.168.{1,2}.3",
            "fe80::*",
            "fe80::{1,2}",
            "10.0.0.1,nonsense",
        ] {
            let err = AddressPattern::parse(bad).expect_err(bad).to_string();
            assert!(
                err.contains(bad) || err.contains("nonsense"),
                "{bad}: {err}"
            );
        }
    }
}
