//! The stored record (MESSAGE.md §6): the one byte layout written to the commitlog, served in
//! pull/query/view bodies and shipped to slaves. Encoded once, with the queue offset, physical
//! offset and store timestamp patched in place by the appender; never re-encoded afterwards.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::sysflag;
use crate::limits::{PROPERTIES_MAX_BYTES, TOPIC_NAME_MAX_BYTES};

/// Magic of a message record (`0xDAA320A7`).
pub const MESSAGE_MAGIC_CODE: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic of the end-of-file filler record (`0xCBD43194`).
pub const BLANK_MAGIC_CODE: i32 = 0xCBD4_3194_u32 as i32;
/// Size of the filler record's header (TOTALSIZE + MAGIC).
pub const BLANK_RECORD_BYTES: usize = 8;

/// Offsets of the fixed fields.
const POS_TOTAL_SIZE: usize = 0;
const POS_MAGIC: usize = 4;
const POS_BODY_CRC: usize = 8;
const POS_QUEUE_ID: usize = 12;
const POS_FLAG: usize = 16;
const POS_QUEUE_OFFSET: usize = 20;
const POS_PHYSICAL_OFFSET: usize = 28;
const POS_SYS_FLAG: usize = 36;
const POS_BORN_TIMESTAMP: usize = 40;
const POS_BORN_HOST: usize = 48;

/// A record that cannot be stored or read back.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("record truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad magic code {0:#010x}")]
    BadMagic(u32),
    #[error("record declares {declared} bytes but its fields add up to {computed}")]
    LengthMismatch { declared: usize, computed: usize },
    #[error("topic of {0} bytes exceeds {TOPIC_NAME_MAX_BYTES}")]
    TopicTooLong(usize),
    #[error("properties of {0} bytes exceed {PROPERTIES_MAX_BYTES}")]
    PropertiesTooLong(usize),
    #[error("topic or properties are not UTF-8")]
    BadUtf8,
    /// The store's recovery reads a record whose topic is empty or whose topic or properties
    /// hold a NUL as torn by a power loss ([`tail_fault`]), so none is stored.
    #[error("the topic is empty or holds a NUL byte")]
    TopicWithNul,
    #[error("the properties hold a NUL byte, which a stored record never does (recovery reads one as a write torn by a power loss)")]
    PropertiesWithNul,
    #[error("body CRC {stored:#x} does not match the body ({computed:#x})")]
    BadCrc { stored: u32, computed: u32 },
}

/// What no stored record holds after its body: an empty topic, or a NUL in the topic or the
/// properties. [`RecordInput::encode`] refuses such a record, and the store's recovery reads
/// one as a write torn by a power loss (`store::commitlog::segment::check_record`): a torn
/// write leaves zeros, and there they cannot be mistaken for a record's own bytes.
pub fn tail_fault(topic: &str, properties: &str) -> Option<RecordError> {
    if topic.is_empty() || topic.as_bytes().contains(&0) {
        return Some(RecordError::TopicWithNul);
    }
    properties
        .as_bytes()
        .contains(&0)
        .then_some(RecordError::PropertiesWithNul)
}

/// What a record is built from (the broker fills this from a send request).
#[derive(Debug, Clone)]
pub struct RecordInput<'a> {
    pub topic: &'a str,
    pub queue_id: i32,
    pub flag: i32,
    /// The sender's sysFlag; the host-v6 bits are set here from the addresses.
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: &'a [u8],
    pub properties: &'a str,
}

impl<'a> RecordInput<'a> {
    /// A record the broker writes itself (a transaction op, an offset-moved event): queue 0,
    /// born and stored at `host`, at `now_ms`, no flags.
    pub fn from_broker(
        topic: &'a str,
        host: SocketAddr,
        now_ms: i64,
        body: &'a [u8],
        properties: &'a str,
    ) -> RecordInput<'a> {
        RecordInput {
            topic,
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: now_ms,
            born_host: host,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body,
            properties,
        }
    }
}

fn host_len(addr: &SocketAddr) -> usize {
    match addr.ip() {
        IpAddr::V4(_) => 8,
        IpAddr::V6(_) => 20,
    }
}

fn put_host(dst: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => dst.put_slice(&ip.octets()),
        IpAddr::V6(ip) => dst.put_slice(&ip.octets()),
    }
    dst.put_i32(i32::from(addr.port()));
}

/// The masked body CRC (`UtilAll.crc32`: CRC-32/IEEE with the sign bit cleared).
pub fn body_crc(body: &[u8]) -> u32 {
    crc32fast::hash(body) & 0x7FFF_FFFF
}

/// Where the appender patches a record encoded by [`encode`]; offsets from the record start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSlots {
    pub store_timestamp_at: usize,
}

impl RecordInput<'_> {
    /// sysFlag with the host-v6 bits set from the actual addresses.
    pub fn stored_sys_flag(&self) -> i32 {
        let mut flag = self.sys_flag & !(sysflag::BORNHOST_V6 | sysflag::STOREHOST_V6);
        if self.born_host.is_ipv6() {
            flag |= sysflag::BORNHOST_V6;
        }
        if self.store_host.is_ipv6() {
            flag |= sysflag::STOREHOST_V6;
        }
        flag
    }

    /// Total record size in bytes.
    pub fn encoded_len(&self) -> usize {
        4 + 4
            + 4
            + 4
            + 4
            + 8
            + 8
            + 4
            + 8
            + host_len(&self.born_host)
            + 8
            + host_len(&self.store_host)
            + 4
            + 8
            + 4
            + self.body.len()
            + 1
            + self.topic.len()
            + 2
            + self.properties.len()
    }

    /// Appends the record to `dst` with queue offset, physical offset and store timestamp zero,
    /// to be set with [`patch`]. Checks the limits the layout imposes.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<RecordSlots, RecordError> {
        if self.topic.len() > TOPIC_NAME_MAX_BYTES {
            return Err(RecordError::TopicTooLong(self.topic.len()));
        }
        if self.properties.len() > PROPERTIES_MAX_BYTES {
            return Err(RecordError::PropertiesTooLong(self.properties.len()));
        }
        if let Some(fault) = tail_fault(self.topic, self.properties) {
            return Err(fault);
        }
        let total = self.encoded_len();
        let start = dst.len();
        dst.reserve(total);
        dst.put_i32(total as i32);
        dst.put_i32(MESSAGE_MAGIC_CODE);
        dst.put_u32(body_crc(self.body));
        dst.put_i32(self.queue_id);
        dst.put_i32(self.flag);
        dst.put_i64(0); // queue offset
        dst.put_i64(0); // physical offset
        dst.put_i32(self.stored_sys_flag());
        dst.put_i64(self.born_timestamp);
        put_host(dst, &self.born_host);
        let store_timestamp_at = dst.len() - start;
        dst.put_i64(0); // store timestamp
        put_host(dst, &self.store_host);
        dst.put_i32(self.reconsume_times);
        dst.put_i64(self.prepared_transaction_offset);
        dst.put_i32(self.body.len() as i32);
        dst.put_slice(self.body);
        dst.put_u8(self.topic.len() as u8);
        dst.put_slice(self.topic.as_bytes());
        dst.put_i16(self.properties.len() as i16);
        dst.put_slice(self.properties.as_bytes());
        debug_assert_eq!(dst.len() - start, total);
        Ok(RecordSlots { store_timestamp_at })
    }
}

/// Sets the fields only known at append time.
pub fn patch(
    record: &mut [u8],
    slots: RecordSlots,
    queue_offset: i64,
    physical_offset: i64,
    store_timestamp: i64,
) {
    record[POS_QUEUE_OFFSET..POS_QUEUE_OFFSET + 8].copy_from_slice(&queue_offset.to_be_bytes());
    record[POS_PHYSICAL_OFFSET..POS_PHYSICAL_OFFSET + 8]
        .copy_from_slice(&physical_offset.to_be_bytes());
    let at = slots.store_timestamp_at;
    record[at..at + 8].copy_from_slice(&store_timestamp.to_be_bytes());
}

/// A parsed view of one stored record, borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub total_size: usize,
    pub body_crc: u32,
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: &'a [u8],
    pub topic: &'a str,
    pub properties: &'a str,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self.pos + n;
        if end > self.bytes.len() {
            return Err(RecordError::Truncated {
                need: end,
                have: self.bytes.len(),
            });
        }
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn host(&mut self, v6: bool) -> Result<SocketAddr, RecordError> {
        let ip = if v6 {
            let b: [u8; 16] = self.take(16)?.try_into().unwrap_or_default();
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            let b: [u8; 4] = self.take(4)?.try_into().unwrap_or_default();
            IpAddr::V4(Ipv4Addr::from(b))
        };
        Ok(SocketAddr::new(ip, self.i32()? as u16))
    }
}

/// Reads the TOTALSIZE and MAGIC of the record at the start of `bytes`.
pub fn peek_header(bytes: &[u8]) -> Option<(i32, i32)> {
    let size = i32::from_be_bytes(
        bytes
            .get(POS_TOTAL_SIZE..POS_TOTAL_SIZE + 4)?
            .try_into()
            .ok()?,
    );
    let magic = i32::from_be_bytes(bytes.get(POS_MAGIC..POS_MAGIC + 4)?.try_into().ok()?);
    Some((size, magic))
}

impl<'a> RecordView<'a> {
    /// Parses the message record at the start of `bytes`, checking that its lengths agree.
    /// The body CRC is checked separately ([`RecordView::check_crc`]).
    pub fn parse(bytes: &'a [u8]) -> Result<RecordView<'a>, RecordError> {
        let mut c = Cursor { bytes, pos: 0 };
        let total_size = c.i32()? as u32 as usize;
        let magic = c.i32()?;
        if magic != MESSAGE_MAGIC_CODE {
            return Err(RecordError::BadMagic(magic as u32));
        }
        if total_size > bytes.len() {
            return Err(RecordError::Truncated {
                need: total_size,
                have: bytes.len(),
            });
        }
        c.bytes = &bytes[..total_size];
        let body_crc = c.i32()? as u32;
        let queue_id = c.i32()?;
        let flag = c.i32()?;
        let queue_offset = c.i64()?;
        let physical_offset = c.i64()?;
        let sys_flag = c.i32()?;
        let born_timestamp = c.i64()?;
        let born_host = c.host(sys_flag & sysflag::BORNHOST_V6 != 0)?;
        let store_timestamp = c.i64()?;
        let store_host = c.host(sys_flag & sysflag::STOREHOST_V6 != 0)?;
        let reconsume_times = c.i32()?;
        let prepared_transaction_offset = c.i64()?;
        let body_len = c.i32()?.max(0) as usize;
        let body = c.take(body_len)?;
        let topic_len = usize::from(c.take(1)?[0]);
        let topic = std::str::from_utf8(c.take(topic_len)?).map_err(|_| RecordError::BadUtf8)?;
        let props_len = (c
            .take(2)?
            .iter()
            .fold(0u16, |a, b| (a << 8) | u16::from(*b))) as usize;
        let properties =
            std::str::from_utf8(c.take(props_len)?).map_err(|_| RecordError::BadUtf8)?;
        if c.pos != total_size {
            return Err(RecordError::LengthMismatch {
                declared: total_size,
                computed: c.pos,
            });
        }
        Ok(RecordView {
            total_size,
            body_crc,
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            reconsume_times,
            prepared_transaction_offset,
            body,
            topic,
            properties,
        })
    }

    /// Verifies the stored body CRC.
    pub fn check_crc(&self) -> Result<(), RecordError> {
        let computed = body_crc(self.body);
        if computed == self.body_crc {
            Ok(())
        } else {
            Err(RecordError::BadCrc {
                stored: self.body_crc,
                computed,
            })
        }
    }
}

const _: () = assert!(POS_BODY_CRC == 8 && POS_QUEUE_ID == 12 && POS_FLAG == 16);
const _: () = assert!(POS_SYS_FLAG == 36 && POS_BORN_TIMESTAMP == 40 && POS_BORN_HOST == 48);

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(body: &'a [u8], props: &'a str) -> RecordInput<'a> {
        RecordInput {
            topic: "TopicTest",
            queue_id: 3,
            flag: 7,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_123,
            born_host: "10.0.0.5:53412".parse().unwrap(),
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body,
            properties: props,
        }
    }

    #[test]
    fn layout_matches_the_spec_for_ipv4_hosts() {
        let props = "TAGS\u{1}TagA\u{2}UNIQ_KEY\u{1}ABC";
        let rec = input(b"hello", props);
        let mut buf = BytesMut::new();
        let slots = rec.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), 91 + 5 + 9 + props.len());
        assert_eq!(slots.store_timestamp_at, 56);
        patch(&mut buf, slots, 42, 1000, 1_700_000_000_999);
        assert_eq!(&buf[4..8], &[0xDA, 0xA3, 0x20, 0xA7]);
        assert_eq!(i64::from_be_bytes(buf[20..28].try_into().unwrap()), 42);
        assert_eq!(i64::from_be_bytes(buf[28..36].try_into().unwrap()), 1000);
        assert_eq!(&buf[48..52], &[10, 0, 0, 5]);
        assert_eq!(
            i64::from_be_bytes(buf[56..64].try_into().unwrap()),
            1_700_000_000_999
        );
        assert_eq!(&buf[64..68], &[127, 0, 0, 1]);
        assert_eq!(i32::from_be_bytes(buf[68..72].try_into().unwrap()), 10911);
        assert_eq!(i32::from_be_bytes(buf[84..88].try_into().unwrap()), 5);
        let view = RecordView::parse(&buf).unwrap();
        assert_eq!(view.topic, "TopicTest");
        assert_eq!(view.properties, props);
        assert_eq!(view.body, b"hello");
        assert_eq!(view.queue_offset, 42);
        assert_eq!(view.store_timestamp, 1_700_000_000_999);
        view.check_crc().unwrap();
        assert_eq!(view.body_crc, crc32fast::hash(b"hello") & 0x7FFF_FFFF);
    }

    #[test]
    fn ipv6_hosts_set_their_flags_and_lengths() {
        let mut rec = input(b"x", "");
        rec.born_host = "[::1]:5".parse().unwrap();
        let mut buf = BytesMut::new();
        let slots = rec.encode(&mut buf).unwrap();
        assert_eq!(slots.store_timestamp_at, 68);
        assert_eq!(buf.len(), 103 + 1 + 9);
        let view = RecordView::parse(&buf).unwrap();
        assert_eq!(view.sys_flag & sysflag::BORNHOST_V6, sysflag::BORNHOST_V6);
        assert_eq!(view.born_host, rec.born_host);
    }

    #[test]
    fn corruption_is_detected() {
        let mut buf = BytesMut::new();
        input(b"payload", "").encode(&mut buf).unwrap();
        let len = buf.len();
        assert!(matches!(
            RecordView::parse(&buf[..len - 1]),
            Err(RecordError::Truncated { .. })
        ));
        let mut bad = buf.clone();
        bad[4] = 0;
        assert!(matches!(
            RecordView::parse(&bad),
            Err(RecordError::BadMagic(_))
        ));
        let mut flipped = buf.clone();
        flipped[90] ^= 1;
        assert!(matches!(
            RecordView::parse(&flipped).unwrap().check_crc(),
            Err(RecordError::BadCrc { .. })
        ));
        let mut long = buf.clone();
        long[3] += 1;
        long.put_u8(0);
        assert!(matches!(
            RecordView::parse(&long),
            Err(RecordError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let topic = "t".repeat(128);
        let mut rec = input(b"", "");
        rec.topic = &topic;
        assert_eq!(
            rec.encode(&mut BytesMut::new()),
            Err(RecordError::TopicTooLong(128))
        );
        let props = "p".repeat(32768);
        let mut rec = input(b"", &props);
        rec.topic = "t";
        assert_eq!(
            rec.encode(&mut BytesMut::new()),
            Err(RecordError::PropertiesTooLong(32768))
        );
    }

    #[test]
    fn nothing_recovery_would_read_as_torn_is_stored() {
        let mut rec = input(b"x", "KEY\u{1}v\u{0}w");
        assert_eq!(
            rec.encode(&mut BytesMut::new()),
            Err(RecordError::PropertiesWithNul)
        );
        rec.properties = "KEY\u{1}vw";
        assert!(rec.encode(&mut BytesMut::new()).is_ok());
        rec.topic = "";
        assert_eq!(
            rec.encode(&mut BytesMut::new()),
            Err(RecordError::TopicWithNul)
        );
        rec.topic = "Top\u{0}ic";
        assert_eq!(
            rec.encode(&mut BytesMut::new()),
            Err(RecordError::TopicWithNul)
        );
    }
}
