//! The message model and the stored record layout (MESSAGE.md). Pure: no I/O, no request codes.

pub mod batch;
pub mod properties;
pub mod record;
pub mod trace;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// sysFlag bits (`MessageSysFlag.java`).
pub mod sysflag {
    pub const COMPRESSED: i32 = 0x1;
    pub const MULTI_TAGS: i32 = 0x2;
    pub const TRANSACTION_PREPARED: i32 = 0x4;
    pub const TRANSACTION_COMMIT: i32 = 0x8;
    pub const TRANSACTION_ROLLBACK: i32 = 0xC;
    pub const TRANSACTION_MASK: i32 = 0xC;
    pub const BORNHOST_V6: i32 = 0x10;
    pub const STOREHOST_V6: i32 = 0x20;
}

/// Java `String.hashCode` of a tag over its UTF-16 code units (32-bit wrapping), sign-extended:
/// the consume queue's `tagsCode` (MESSAGE.md §9). Go hashes UTF-8 bytes instead, which agrees
/// only for ASCII; the broker recomputes codes itself.
pub fn tags_hash_code(tags: &str) -> i64 {
    i64::from(java_string_hash(tags))
}

/// Java `String.hashCode`.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The offsetMsgId: store host IP + port + physical offset as uppercase hex (MESSAGE.md §7).
pub fn offset_msg_id(store_host: SocketAddr, physical_offset: i64) -> String {
    let mut bytes = Vec::with_capacity(28);
    match store_host.ip() {
        IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
    }
    bytes.extend_from_slice(&i32::from(store_host.port()).to_be_bytes());
    bytes.extend_from_slice(&physical_offset.to_be_bytes());
    // Uppercase hex (UtilAll.bytes2string); one allocation, no formatting machinery: a batch
    // response builds one of these per message.
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut id = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    id
}

/// Decodes an offsetMsgId (32 hex chars = IPv4, 56 = IPv6).
pub fn decode_offset_msg_id(id: &str) -> Option<(SocketAddr, i64)> {
    let bytes: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| {
            id.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()?;
    let (ip, rest): (IpAddr, &[u8]) = match bytes.len() {
        16 => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&bytes[..4]).ok()?)),
            &bytes[4..],
        ),
        28 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..16]).ok()?)),
            &bytes[16..],
        ),
        _ => return None,
    };
    let port = i32::from_be_bytes(rest[..4].try_into().ok()?);
    let offset = i64::from_be_bytes(rest[4..12].try_into().ok()?);
    Some((SocketAddr::new(ip, u16::try_from(port).ok()?), offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_hash_matches_java() {
        // Values of "TagA".hashCode() and friends computed by Java.
        assert_eq!(tags_hash_code("TagA"), 2598919);
        assert_eq!(tags_hash_code(""), 0);
        assert_eq!(
            java_string_hash("hello world, a longer tag"),
            -1_130_731_654
        );
        // A supplementary character hashes as two UTF-16 units.
        assert_eq!(java_string_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
    }

    #[test]
    fn offset_msg_id_matches_the_golden_capture() {
        // java/0014: msgId 7F00000100002A9F0000000000000000 for 127.0.0.1:10911 offset 0.
        let addr: SocketAddr = "127.0.0.1:10911".parse().unwrap();
        assert_eq!(offset_msg_id(addr, 0), "7F00000100002A9F0000000000000000");
        assert_eq!(
            offset_msg_id(addr, 0x34B52),
            "7F00000100002A9F0000000000034B52"
        );
        assert_eq!(
            decode_offset_msg_id("7F00000100002A9F0000000000034B52"),
            Some((addr, 0x34B52))
        );
        let v6: SocketAddr = "[fe80::1]:10911".parse().unwrap();
        let id = offset_msg_id(v6, 5);
        assert_eq!(id.len(), 56);
        assert_eq!(decode_offset_msg_id(&id), Some((v6, 5)));
        assert_eq!(decode_offset_msg_id("XYZ"), None);
    }
}
