//! Message bodies and properties. Every body starts with a 32-byte stamp
//! `[magic "LGv1"][run id u64][sequence u64][send time ns since the epoch u64][body len u32]`,
//! big-endian, then filler up to `-s` bytes, so consumers can attribute, deduplicate and time
//! each message. Pure; used on every executor.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use ringmq::message::properties::{
    KEYS, NAME_VALUE_SEPARATOR as NV, PROPERTY_SEPARATOR as PS, TAGS, UNIQ_KEY, WAIT,
};

/// Bytes of the stamp at the start of every body.
pub const BODY_HEADER_BYTES: usize = 32;

const MAGIC: [u8; 4] = *b"LGv1";

/// Bits of a sequence number that count within one producer executor; the executor index sits
/// above them.
pub const SEQUENCE_LOCAL_BITS: u32 = 48;

/// What a body says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub run_id: u64,
    /// `(producer executor << SEQUENCE_LOCAL_BITS) | per-executor counter`.
    pub sequence: u64,
    pub sent_unix_ns: u64,
}

impl Stamp {
    /// The producer executor that sent this message.
    pub fn executor(&self) -> usize {
        (self.sequence >> SEQUENCE_LOCAL_BITS) as usize
    }

    /// The message's number within its executor.
    pub fn local(&self) -> u64 {
        self.sequence & ((1 << SEQUENCE_LOCAL_BITS) - 1)
    }
}

/// Builds the bodies and properties of one producer executor.
pub struct BodyMaker {
    run_id: u64,
    executor: u64,
    size_bytes: usize,
    keys: bool,
    tags: bool,
    /// Filler copied behind every stamp; built once.
    filler: Vec<u8>,
}

impl BodyMaker {
    /// Bodies of `size_bytes` for `executor` of run `run_id`.
    pub fn new(run_id: u64, executor: usize, size_bytes: usize, keys: bool, tags: bool) -> Self {
        assert!(size_bytes >= BODY_HEADER_BYTES);
        let filler = (0..size_bytes - BODY_HEADER_BYTES)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        BodyMaker {
            run_id,
            executor: executor as u64,
            size_bytes,
            keys,
            tags,
            filler,
        }
    }

    /// The global sequence number of this executor's `local`-th message.
    pub fn sequence(&self, local: u64) -> u64 {
        debug_assert!(local < 1 << SEQUENCE_LOCAL_BITS);
        (self.executor << SEQUENCE_LOCAL_BITS) | local
    }

    /// Appends the body of message `local`, stamped now, to `dst`.
    pub fn body_into(&self, local: u64, sent_unix_ns: u64, dst: &mut BytesMut) {
        dst.reserve(self.size_bytes);
        dst.put_slice(&MAGIC);
        dst.put_u64(self.run_id);
        dst.put_u64(self.sequence(local));
        dst.put_u64(sent_unix_ns);
        dst.put_u32(self.size_bytes as u32);
        dst.put_slice(&self.filler);
    }

    /// The body of message `local`, stamped now.
    pub fn body(&self, local: u64, sent_unix_ns: u64) -> Bytes {
        let mut dst = BytesMut::with_capacity(self.size_bytes);
        self.body_into(local, sent_unix_ns, &mut dst);
        dst.freeze()
    }

    /// The properties a Java producer would send with message `local`: KEYS and TAGS when
    /// asked, WAIT=true and a 32-hex-digit UNIQ_KEY (the client-side message id).
    pub fn properties(&self, local: u64) -> String {
        let mut out = String::with_capacity(96);
        let sequence = self.sequence(local);
        if self.keys {
            let _ = write!(out, "{KEYS}{NV}k{sequence}{PS}");
        }
        if self.tags {
            let _ = write!(out, "{TAGS}{NV}TagA{PS}");
        }
        let _ = write!(
            out,
            "{WAIT}{NV}true{PS}{UNIQ_KEY}{NV}{:016X}{sequence:016X}",
            self.run_id
        );
        out
    }
}

/// The properties of a batch request's header (Java's `MessageBatch`: only WAIT).
pub fn batch_header_properties() -> String {
    format!("{WAIT}{NV}true")
}

/// Reads the stamp of a loadgen body; `None` for any other body.
pub fn parse(body: &[u8]) -> Option<Stamp> {
    let head = body.get(..BODY_HEADER_BYTES)?;
    if head[..4] != MAGIC {
        return None;
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Some(Stamp {
        run_id: word(4),
        sequence: word(12),
        sent_unix_ns: word(20),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_other_bodies_are_ignored() {
        let maker = BodyMaker::new(77, 3, 100, true, true);
        let body = maker.body(5, 123_456);
        assert_eq!(body.len(), 100);
        let stamp = parse(&body).expect("stamp");
        assert_eq!((stamp.run_id, stamp.executor(), stamp.local()), (77, 3, 5));
        assert_eq!(stamp.sent_unix_ns, 123_456);
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(&[0u8; 64]), None);
    }

    #[test]
    fn properties_parse_as_the_broker_reads_them() {
        let maker = BodyMaker::new(1, 0, 32, true, true);
        let props = ringmq::message::properties::Properties::parse(&maker.properties(9));
        assert_eq!(props.get(KEYS), Some("k9"));
        assert_eq!(props.get(TAGS), Some("TagA"));
        assert_eq!(props.get(WAIT), Some("true"));
        assert_eq!(props.get(UNIQ_KEY).map(str::len), Some(32));
    }
}
