//! The HA stream's wire format (ringmq's own; clients never see it). Big-endian, on a plain
//! TCP connection per shard from the slave to the master's HA port.
//!
//! ```text
//! slave → master   HELLO    u32 length, then: u32 magic "RMHA", u16 version, u16 shard,
//!                           u16 shard count, u64 segment bytes, u64 lineage, u64 offset,
//!                           epochs (u16 count, then u32 epoch + u64 start each),
//!                           u16 length + UTF-8 slave address, u32 controller master epoch
//!                           (version 3; the newest the slave knows, 0 outside controller mode)
//! master → slave   WELCOME  u32 length, then: u32 magic, u8 verdict (0 stream, 1 refused);
//!                           refused: u16 length + UTF-8 reason; stream: u8 action
//!                           (0 continue, 1 truncate, 2 wipe), u64 start, u64 lineage,
//!                           epochs as above, u32 controller master epoch the master was
//!                           elected at (absent from a version 2 master: 0)
//! master → slave   FRAME    u8 kind (1 data, 2 heartbeat), u64 position, u64 master end,
//!                           u32 length, then that many commitlog bytes (whole records)
//! slave → master   ACK      u64 offset the slave holds (durably, under SYNC_FLUSH)
//! ```
//!
//! HELLO and WELCOME are length-prefixed so a reader never takes bytes that follow them.
//!
//! A slave with an account (`aclAccessKey`/`aclSecretKey`) appends to its HELLO body an
//! authentication section: u16 length + access key, u64 time (ms since the epoch), u16 length +
//! signature, the signature being the ACL's (HMAC-SHA1, base64, keyed with the secret) over
//! the HELLO body before the section, the access key and the time in decimal. A master with
//! ACL on requires it (see [`crate::ha::auth`]); a master without ACL ignores it, as an older
//! master ignores any trailing bytes.

use super::error::ProtoError;
use super::history::Epoch;

/// "RMHA".
pub const MAGIC: u32 = 0x524D_4841;
/// 2: the records streamed carry physical offsets with the shard in bits 45–52 (53-bit
/// offsets). Version 1 peers put it in bits 56–63; the two cannot replicate to each other.
/// 3: the HELLO and the WELCOME carry the controller's master epoch (a master refuses a slave
/// that knows a newer one, a slave refuses a master elected before the one it knows). A
/// master reads version 2 HELLOs (epoch 0); a version 2 master refuses a version 3 slave.
pub const VERSION: u16 = 3;
/// The previous version, still read (its HELLO has no master epoch).
const VERSION_NO_MASTER_EPOCH: u16 = 2;
/// The last version of the old offset layout.
const VERSION_OLD_OFFSET_LAYOUT: u16 = 1;
/// Largest HELLO or WELCOME body accepted.
pub const HANDSHAKE_MAX_BYTES: usize = 1 << 20;
/// Bytes of a FRAME header.
pub const FRAME_HEADER_BYTES: usize = 21;
pub const FRAME_DATA: u8 = 1;
pub const FRAME_HEARTBEAT: u8 = 2;

/// The slave's introduction, for one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub shard: u16,
    pub shard_count: u16,
    pub segment_bytes: u64,
    pub lineage: u64,
    /// End of the slave's commitlog for this shard.
    pub offset: u64,
    pub epochs: Vec<Epoch>,
    /// The slave's broker address (status displays).
    pub slave_addr: String,
    /// Controller mode: the newest master epoch of its group the slave knows (0 otherwise).
    pub master_epoch: u32,
}

/// What the slave must do before the stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Its log ends at `start` (or is empty and the log starts there): append from there.
    Continue,
    /// Its log holds bytes the master does not: cut it at `start` first.
    Truncate,
    /// Nothing it holds can be kept (too far behind the master's oldest segment, or no
    /// common history): empty the shard's store, then append from `start`.
    Wipe,
}

/// The master's answer to a HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Welcome {
    Refused(String),
    Stream {
        action: Action,
        start: u64,
        lineage: u64,
        epochs: Vec<Epoch>,
        /// Controller mode: the master epoch this master was elected at (0 otherwise).
        master_epoch: u32,
    },
}

/// A FRAME header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u8,
    pub pos: u64,
    pub master_end: u64,
    pub len: u32,
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![0; 4])
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn text(&mut self, s: &str) -> &mut Self {
        let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.u16(bytes.len() as u16);
        self.0.extend_from_slice(bytes);
        self
    }
    fn epochs(&mut self, epochs: &[Epoch]) -> &mut Self {
        self.u16(epochs.len().min(u16::MAX as usize) as u16);
        for e in epochs.iter().take(u16::MAX as usize) {
            self.u32(e.epoch).u64(e.start);
        }
        self
    }
    /// The bytes with the length prefix filled in.
    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::EndsEarly);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn text(&mut self) -> Result<String, ProtoError> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| ProtoError::NotUtf8)
    }
    fn epochs(&mut self) -> Result<Vec<Epoch>, ProtoError> {
        let n = self.u16()? as usize;
        (0..n)
            .map(|_| {
                Ok(Epoch {
                    epoch: self.u32()?,
                    start: self.u64()?,
                })
            })
            .collect()
    }
    fn magic(&mut self) -> Result<(), ProtoError> {
        match self.u32()? {
            MAGIC => Ok(()),
            other => Err(ProtoError::Magic(other)),
        }
    }
}

impl Hello {
    /// The HELLO message, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC)
            .u16(VERSION)
            .u16(self.shard)
            .u16(self.shard_count)
            .u64(self.segment_bytes)
            .u64(self.lineage)
            .u64(self.offset)
            .epochs(&self.epochs)
            .text(&self.slave_addr)
            .u32(self.master_epoch);
        w.finish()
    }

    /// The HELLO message with the authentication section of `credentials` (none: as
    /// [`Hello::encode`]), signed at `now_ms`.
    pub fn encode_signed(
        &self,
        credentials: Option<&crate::acl::Credentials>,
        now_ms: u64,
    ) -> Vec<u8> {
        let plain = self.encode();
        let Some(c) = credentials else {
            return plain;
        };
        let mut w = Writer(plain);
        let signature = HelloAuth::sign(&w.0[4..], &c.access_key, now_ms, &c.secret_key);
        w.text(&c.access_key).u64(now_ms).text(&signature);
        w.finish()
    }

    /// Parses a HELLO body and its authentication section, if any.
    pub fn decode_signed(body: &[u8]) -> Result<(Hello, Option<HelloAuth>), ProtoError> {
        let mut r = Reader(body);
        let hello = Self::read(&mut r)?;
        if r.0.is_empty() {
            return Ok((hello, None));
        }
        let signed_len = body.len() - r.0.len();
        let access_key = r.text()?;
        let timestamp_ms = r.u64()?;
        let signature = r.text()?;
        let auth = HelloAuth {
            content: HelloAuth::content(&body[..signed_len], &access_key, timestamp_ms),
            access_key,
            timestamp_ms,
            signature,
        };
        Ok((hello, Some(auth)))
    }

    /// Parses a HELLO body (after its length prefix); trailing bytes are ignored.
    pub fn decode(body: &[u8]) -> Result<Hello, ProtoError> {
        Self::read(&mut Reader(body))
    }

    fn read(r: &mut Reader<'_>) -> Result<Hello, ProtoError> {
        r.magic()?;
        let version = r.u16()?;
        if version == VERSION_OLD_OFFSET_LAYOUT {
            return Err(ProtoError::OldOffsetLayout(version));
        }
        if version != VERSION && version != VERSION_NO_MASTER_EPOCH {
            return Err(ProtoError::Version(version));
        }
        Ok(Hello {
            shard: r.u16()?,
            shard_count: r.u16()?,
            segment_bytes: r.u64()?,
            lineage: r.u64()?,
            offset: r.u64()?,
            epochs: r.epochs()?,
            slave_addr: r.text()?,
            master_epoch: match version {
                VERSION_NO_MASTER_EPOCH => 0,
                _ => r.u32()?,
            },
        })
    }
}

/// A master's refusal as the slave reports it: an older master only says which HA version it
/// speaks, so the slave adds what that means.
pub fn explain_refusal(reason: &str) -> String {
    let old = format!("this broker speaks {VERSION_OLD_OFFSET_LAYOUT}");
    if reason.ends_with(&old) {
        return format!(
            "{reason} (the master is a ringmq from before the 53-bit offset layout: its \
             records carry the shard in bits 56-63 of their physical offsets, this slave's in \
             bits 45-52; a master and a slave of different offset layouts cannot replicate: \
             upgrade the master too)"
        );
    }
    if reason.ends_with(&format!("this broker speaks {VERSION_NO_MASTER_EPOCH}")) {
        return format!(
            "{reason} (the master is an older ringmq whose handshake carries no controller \
             master epoch: upgrade the master too)"
        );
    }
    reason.to_string()
}

/// The authentication section of a HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAuth {
    pub access_key: String,
    pub timestamp_ms: u64,
    pub signature: String,
    /// What the signature covers.
    pub content: Vec<u8>,
}

impl HelloAuth {
    fn content(hello_body: &[u8], access_key: &str, timestamp_ms: u64) -> Vec<u8> {
        let mut content = hello_body.to_vec();
        content.extend_from_slice(access_key.as_bytes());
        content.extend_from_slice(timestamp_ms.to_string().as_bytes());
        content
    }

    fn sign(hello_body: &[u8], access_key: &str, timestamp_ms: u64, secret: &str) -> String {
        let content = Self::content(hello_body, access_key, timestamp_ms);
        crate::acl::sign::signature(secret, [&content[..]])
    }

    /// True when the signature is `secret`'s.
    pub fn verify(&self, secret: &str) -> bool {
        let expected = crate::acl::sign::signature(secret, [&self.content[..]]);
        crate::acl::sign::constant_time_eq(&self.signature, &expected)
    }
}

impl Welcome {
    /// The WELCOME message, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC);
        match self {
            Welcome::Refused(reason) => {
                w.u8(1).text(reason);
            }
            Welcome::Stream {
                action,
                start,
                lineage,
                epochs,
                master_epoch,
            } => {
                let action = match action {
                    Action::Continue => 0,
                    Action::Truncate => 1,
                    Action::Wipe => 2,
                };
                w.u8(0)
                    .u8(action)
                    .u64(*start)
                    .u64(*lineage)
                    .epochs(epochs)
                    .u32(*master_epoch);
            }
        }
        w.finish()
    }

    /// Parses a WELCOME body (after its length prefix).
    pub fn decode(body: &[u8]) -> Result<Welcome, ProtoError> {
        let mut r = Reader(body);
        r.magic()?;
        match r.u8()? {
            1 => Ok(Welcome::Refused(r.text()?)),
            0 => {
                let action = match r.u8()? {
                    0 => Action::Continue,
                    1 => Action::Truncate,
                    2 => Action::Wipe,
                    other => return Err(ProtoError::Action(other)),
                };
                Ok(Welcome::Stream {
                    action,
                    start: r.u64()?,
                    lineage: r.u64()?,
                    epochs: r.epochs()?,
                    // A version 2 master's WELCOME ends with its epochs.
                    master_epoch: match r.0.len() {
                        0 => 0,
                        _ => r.u32()?,
                    },
                })
            }
            other => Err(ProtoError::Verdict(other)),
        }
    }
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut out = [0u8; FRAME_HEADER_BYTES];
        out[0] = self.kind;
        out[1..9].copy_from_slice(&self.pos.to_be_bytes());
        out[9..17].copy_from_slice(&self.master_end.to_be_bytes());
        out[17..21].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    pub fn decode(b: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, ProtoError> {
        let header = FrameHeader {
            kind: b[0],
            pos: u64::from_be_bytes(b[1..9].try_into().unwrap()),
            master_end: u64::from_be_bytes(b[9..17].try_into().unwrap()),
            len: u32::from_be_bytes(b[17..21].try_into().unwrap()),
        };
        match header.kind {
            FRAME_DATA | FRAME_HEARTBEAT => Ok(header),
            other => Err(ProtoError::FrameKind(other)),
        }
    }
}

/// The length of a HELLO/WELCOME from its 4-byte prefix, refusing oversized ones.
pub fn handshake_len(prefix: [u8; 4]) -> Result<usize, ProtoError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > HANDSHAKE_MAX_BYTES {
        return Err(ProtoError::HandshakeTooLarge {
            len,
            limit: HANDSHAKE_MAX_BYTES,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs() -> Vec<Epoch> {
        vec![
            Epoch { epoch: 1, start: 0 },
            Epoch {
                epoch: 2,
                start: 4096,
            },
        ]
    }

    #[test]
    fn hello_round_trips() {
        let hello = Hello {
            shard: 3,
            shard_count: 4,
            segment_bytes: 1 << 30,
            lineage: 0xDEAD_BEEF,
            offset: 123_456,
            epochs: epochs(),
            slave_addr: "127.0.0.1:10921".into(),
            master_epoch: 7,
        };
        let bytes = hello.encode();
        let len = handshake_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(Hello::decode(&bytes[4..]).unwrap(), hello);
        assert!(Hello::decode(&bytes[4..bytes.len() - 1]).is_err());
        // A version 2 HELLO (no master epoch) still reads, as epoch 0.
        let mut old = bytes[..bytes.len() - 4].to_vec();
        old[8..10].copy_from_slice(&VERSION_NO_MASTER_EPOCH.to_be_bytes());
        let read = Hello::decode(&old[4..]).unwrap();
        assert_eq!((read.master_epoch, read.slave_addr), (0, hello.slave_addr));
    }

    #[test]
    fn welcomes_round_trip() {
        for welcome in [
            Welcome::Refused("shard count 2, master has 4".into()),
            Welcome::Stream {
                action: Action::Truncate,
                start: 777,
                lineage: 9,
                epochs: epochs(),
                master_epoch: 3,
            },
            Welcome::Stream {
                action: Action::Wipe,
                start: 1 << 30,
                lineage: 9,
                epochs: Vec::new(),
                master_epoch: 0,
            },
        ] {
            let bytes = welcome.encode();
            assert_eq!(Welcome::decode(&bytes[4..]).unwrap(), welcome);
        }
        // A version 2 master's WELCOME ends with its epochs: master epoch 0.
        let bytes = Welcome::Stream {
            action: Action::Continue,
            start: 5,
            lineage: 9,
            epochs: epochs(),
            master_epoch: 4,
        }
        .encode();
        match Welcome::decode(&bytes[4..bytes.len() - 4]).unwrap() {
            Welcome::Stream { master_epoch, .. } => assert_eq!(master_epoch, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peers_of_the_old_offset_layout_are_refused_with_the_reason() {
        let hello = Hello {
            shard: 1,
            shard_count: 2,
            segment_bytes: 1 << 30,
            lineage: 1,
            offset: 0,
            epochs: Vec::new(),
            slave_addr: "127.0.0.1:10921".into(),
            master_epoch: 0,
        };
        let mut bytes = hello.encode();
        bytes[8..10].copy_from_slice(&VERSION_OLD_OFFSET_LAYOUT.to_be_bytes());
        let err = Hello::decode(&bytes[4..]).unwrap_err().to_string();
        assert!(err.contains("53-bit offset layout"), "{err}");
        assert!(err.contains("upgrade the slave"), "{err}");
        // What an older master answers a newer slave, as the slave logs it.
        let from_old_master = "HA protocol version 3, this broker speaks 1";
        let explained = explain_refusal(from_old_master);
        assert!(explained.contains("upgrade the master too"), "{explained}");
        assert_eq!(explain_refusal("segments differ"), "segments differ");
    }

    #[test]
    fn a_foreign_peer_is_named() {
        let err = Hello::decode(b"\x00\x00\x00\x10GET / HTTP/1.1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HA port"), "{err}");
        assert!(handshake_len(*b"GET ").is_err());
    }

    #[test]
    fn frame_headers_round_trip_and_unknown_kinds_fail() {
        let h = FrameHeader {
            kind: FRAME_DATA,
            pos: 1 << 40,
            master_end: (1 << 40) + 99,
            len: 99,
        };
        assert_eq!(FrameHeader::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[0] = 7;
        assert!(FrameHeader::decode(&bad).is_err());
    }
}
