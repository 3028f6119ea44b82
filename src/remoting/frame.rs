//! The frame: `[length u32][serialize type u8 | header length u24][header][body]`, big-endian,
//! where `length` counts everything after itself. Pure: no I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::codes::SerializeType;
use super::command::RemotingCommand;
use super::error::WireError;
use super::header::{decode_binary, decode_json, encode_binary, encode_json};
use crate::limits::{
    FRAME_HEADER_WORD_BYTES, FRAME_LENGTH_PREFIX_BYTES, FRAME_SIZE_MAX_BYTES, HEADER_SIZE_MAX_BYTES,
};

/// Looks at the start of `buf`: `Ok(None)` while the frame is incomplete (not an error: more
/// bytes will come), `Ok(Some(n))` when a whole frame of `n` bytes (prefix included) is there.
/// The declared length is checked against `max_frame_bytes` as soon as the 4-byte prefix is
/// in, so an oversized frame is refused before its body is buffered.
pub fn check_frame(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, WireError> {
    if buf.len() < FRAME_LENGTH_PREFIX_BYTES {
        return Ok(None);
    }
    let declared = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if declared > max_frame_bytes {
        return Err(WireError::FrameTooLarge {
            declared_bytes: declared,
            max_bytes: max_frame_bytes,
        });
    }
    if declared < FRAME_HEADER_WORD_BYTES {
        return Err(WireError::FrameTooSmall {
            declared_bytes: declared,
        });
    }
    if buf.len() >= FRAME_LENGTH_PREFIX_BYTES + FRAME_HEADER_WORD_BYTES {
        let header_bytes =
            (u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) & 0x00FF_FFFF) as usize;
        let available_bytes = declared - FRAME_HEADER_WORD_BYTES;
        if header_bytes > available_bytes {
            return Err(WireError::HeaderTooLong {
                header_bytes,
                available_bytes,
            });
        }
    }
    let total = FRAME_LENGTH_PREFIX_BYTES + declared;
    Ok((buf.len() >= total).then_some(total))
}

/// Splits the next whole frame off the front of `buf`, without copying it.
pub fn next_frame(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Bytes>, WireError> {
    match check_frame(buf, max_frame_bytes)? {
        Some(total) => Ok(Some(buf.split_to(total).freeze())),
        None => Ok(None),
    }
}

/// A frame's length prefix and header word, once both are in `buf`.
fn prefix_and_word(buf: &[u8]) -> Option<(usize, u32)> {
    let start = buf.get(..FRAME_LENGTH_PREFIX_BYTES + FRAME_HEADER_WORD_BYTES)?;
    let declared = u32::from_be_bytes([start[0], start[1], start[2], start[3]]) as usize;
    Some((
        declared,
        u32::from_be_bytes([start[4], start[5], start[6], start[7]]),
    ))
}

/// The body length declared by the frame at the start of `buf` (its length less its header
/// word and header), once its prefix and header word are in; `None` before, or when they do not
/// add up ([`check_frame`] refuses such a frame).
pub fn declared_body_bytes(buf: &[u8]) -> Option<usize> {
    let (declared, word) = prefix_and_word(buf)?;
    declared.checked_sub(FRAME_HEADER_WORD_BYTES + (word & 0x00FF_FFFF) as usize)
}

/// The header of a frame whose start is in `buf`, decoded before the rest of the frame has
/// arrived: the command with its fields and an empty body (whatever of the body is in `buf`),
/// and the frame's whole length
/// (prefix included). `Ok(None)` while the header is not in whole. The prefix is checked as
/// [`check_frame`] checks it, so a frame it refuses is refused here too. This lets a server look
/// at a request before it reads (and buffers) a large body it would refuse anyway.
pub fn decode_head(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<Option<(RemotingCommand, usize)>, WireError> {
    check_frame(buf, max_frame_bytes)?;
    const WORD_END: usize = FRAME_LENGTH_PREFIX_BYTES + FRAME_HEADER_WORD_BYTES;
    let Some((declared, word)) = prefix_and_word(buf) else {
        return Ok(None);
    };
    let header_end = WORD_END + (word & 0x00FF_FFFF) as usize;
    let Some(header) = buf.get(WORD_END..header_end) else {
        return Ok(None);
    };
    let cmd = command_from(serialize_type_of(word)?, header, Bytes::new())?;
    Ok(Some((cmd, FRAME_LENGTH_PREFIX_BYTES + declared)))
}

/// The serialize type in a frame's header word. The high byte is the type; the C++ client does
/// not mask it when reading, so it must be exactly 0 or 1.
fn serialize_type_of(word: u32) -> Result<SerializeType, WireError> {
    match (word >> 24) as u8 {
        0 => Ok(SerializeType::Json),
        1 => Ok(SerializeType::RocketMq),
        other => Err(WireError::UnknownSerializeType(other)),
    }
}

/// A command from its serialize type, header bytes and body.
fn command_from(
    serialize_type: SerializeType,
    header: &[u8],
    body: Bytes,
) -> Result<RemotingCommand, WireError> {
    let fields = match serialize_type {
        SerializeType::Json => decode_json(header)?,
        SerializeType::RocketMq => decode_binary(header)?,
    };
    Ok(fields.into_command(serialize_type, body))
}

/// The parts of a frame before its header is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub serialize_type: SerializeType,
    pub header: Bytes,
    pub body: Bytes,
}

/// Splits a whole frame (prefix included) into serialize type, header bytes and body.
pub fn split_frame(mut frame: Bytes) -> Result<RawFrame, WireError> {
    let Some(total) = check_frame(&frame, usize::MAX)? else {
        return Err(WireError::Truncated {
            offset: 0,
            need: 8,
            have: frame.len(),
        });
    };
    frame.truncate(total);
    frame.advance(FRAME_LENGTH_PREFIX_BYTES);
    let word = frame.get_u32();
    let serialize_type = serialize_type_of(word)?;
    let header_bytes = (word & 0x00FF_FFFF) as usize;
    let header = frame.split_to(header_bytes);
    Ok(RawFrame {
        serialize_type,
        header,
        body: frame,
    })
}

impl RemotingCommand {
    /// Decodes a whole frame (prefix included). The body shares the frame's buffer.
    pub fn decode(frame: Bytes) -> Result<RemotingCommand, WireError> {
        let raw = split_frame(frame)?;
        command_from(raw.serialize_type, &raw.header, raw.body)
    }

    /// Appends this command as a whole frame to `dst`, in its own serialize type. Fails, leaving
    /// `dst` as it was, when the header does not fit the 24-bit header length or the frame the
    /// 16 MiB limit (a decoded header can grow when re-encoded: integers become strings).
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_header(dst, self.body.len())?;
        dst.put_slice(&self.body);
        Ok(())
    }

    /// Appends the frame prefix and header, for a body of `body_len` bytes that the caller
    /// writes next (so a large stored body can be sent without copying it into `dst`).
    pub fn encode_header(&self, dst: &mut BytesMut, body_len: usize) -> Result<(), WireError> {
        let start = dst.len();
        dst.put_u64(0); // length and header word, patched below
        let encoded = match self.serialize_type {
            SerializeType::Json => {
                encode_json(self, dst);
                Ok(())
            }
            SerializeType::RocketMq => encode_binary(self, dst),
        };
        let header_len = dst.len() - start - 8;
        let length = FRAME_HEADER_WORD_BYTES + header_len + body_len;
        let checked = encoded.and_then(|()| check_sizes(header_len, length));
        if let Err(e) = checked {
            dst.truncate(start);
            return Err(e);
        }
        let word = (u32::from(self.serialize_type.byte()) << 24) | header_len as u32;
        dst[start..start + 4].copy_from_slice(&(length as u32).to_be_bytes());
        dst[start + 4..start + 8].copy_from_slice(&word.to_be_bytes());
        Ok(())
    }

    /// The command as one frame.
    pub fn to_frame(&self) -> Result<Bytes, WireError> {
        let mut buf = BytesMut::with_capacity(128 + self.body.len());
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}

fn check_sizes(header_bytes: usize, length: usize) -> Result<(), WireError> {
    if header_bytes > HEADER_SIZE_MAX_BYTES {
        return Err(WireError::HeaderTooLong {
            header_bytes,
            available_bytes: HEADER_SIZE_MAX_BYTES,
        });
    }
    if length > FRAME_SIZE_MAX_BYTES {
        return Err(WireError::FrameTooLarge {
            declared_bytes: length,
            max_bytes: FRAME_SIZE_MAX_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::codes::LanguageCode;

    fn sample(serialize_type: SerializeType) -> RemotingCommand {
        let mut cmd = RemotingCommand::request(310)
            .with_ext("a", "pg")
            .with_ext("i", "TAGS\u{1}a\u{2}KEYS\u{1}k \"q\"")
            .with_body(&b"hello"[..]);
        cmd.opaque = -7;
        cmd.remark = Some("r\u{e9}mark\n".into());
        cmd.language = LanguageCode::Go;
        cmd.serialize_type = serialize_type;
        cmd
    }

    #[test]
    fn round_trip_both_serializations() {
        for st in [SerializeType::Json, SerializeType::RocketMq] {
            let cmd = sample(st);
            let frame = cmd.to_frame().unwrap();
            assert_eq!(RemotingCommand::decode(frame.clone()).unwrap(), cmd);
            let mut again = BytesMut::new();
            RemotingCommand::decode(frame.clone())
                .unwrap()
                .encode(&mut again)
                .unwrap();
            assert_eq!(&again[..], &frame[..]);
        }
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let frame = sample(SerializeType::Json).to_frame().unwrap();
        for cut in 0..frame.len() {
            assert_eq!(check_frame(&frame[..cut], 1 << 20), Ok(None), "cut {cut}");
        }
        assert_eq!(check_frame(&frame, 1 << 20), Ok(Some(frame.len())));
    }

    #[test]
    fn a_head_is_decoded_once_the_header_is_in_whatever_of_the_body_is_missing() {
        for st in [SerializeType::Json, SerializeType::RocketMq] {
            let cmd = sample(st).with_body(vec![b'b'; 1000]);
            let frame = cmd.to_frame().unwrap();
            let header_end = frame.len() - 1000;
            for cut in 0..frame.len() {
                let head = decode_head(&frame[..cut], 1 << 20).unwrap();
                let body = declared_body_bytes(&frame[..cut]);
                assert_eq!(body, (cut >= 8).then_some(1000), "cut {cut}");
                if cut < header_end {
                    assert!(head.is_none(), "cut {cut}");
                    continue;
                }
                let (head, total) = head.unwrap();
                assert_eq!(total, frame.len());
                assert_eq!(head.body.len(), 0);
                assert_eq!(
                    RemotingCommand {
                        body: cmd.body.clone(),
                        ..head
                    },
                    cmd
                );
            }
        }
        // A frame the prefix check refuses is refused here too, as is an unknown serialize type.
        let prefix = (64u32 * 1024 * 1024).to_be_bytes();
        assert!(matches!(
            decode_head(&prefix, 1 << 20),
            Err(WireError::FrameTooLarge { .. })
        ));
        let mut buf = BytesMut::new();
        buf.put_u32(1006);
        buf.put_u32((7 << 24) | 2);
        buf.put_slice(b"{}");
        assert_eq!(
            decode_head(&buf, 1 << 20),
            Err(WireError::UnknownSerializeType(7))
        );
    }

    #[test]
    fn oversized_frame_refused_from_its_prefix_alone() {
        let prefix = (64u32 * 1024 * 1024).to_be_bytes();
        let err = check_frame(&prefix, 16 * 1024 * 1024).unwrap_err();
        assert!(matches!(
            err,
            WireError::FrameTooLarge {
                declared_bytes: 67108864,
                ..
            }
        ));
    }

    #[test]
    fn header_longer_than_frame_refused() {
        let mut buf = BytesMut::new();
        buf.put_u32(10);
        buf.put_u32(100);
        assert!(matches!(
            check_frame(&buf, 1 << 20),
            Err(WireError::HeaderTooLong { .. })
        ));
        buf.clear();
        buf.put_u32(2);
        assert!(matches!(
            check_frame(&buf, 1 << 20),
            Err(WireError::FrameTooSmall { .. })
        ));
    }

    #[test]
    fn unknown_serialize_type_refused() {
        let mut buf = BytesMut::new();
        buf.put_u32(6);
        buf.put_u32((7 << 24) | 2);
        buf.put_slice(b"{}");
        let err = RemotingCommand::decode(buf.freeze()).unwrap_err();
        assert_eq!(err, WireError::UnknownSerializeType(7));
    }

    #[test]
    fn next_frame_splits_pipelined_frames() {
        let mut buf = BytesMut::new();
        sample(SerializeType::Json).encode(&mut buf).unwrap();
        sample(SerializeType::RocketMq).encode(&mut buf).unwrap();
        buf.put_u8(0);
        let a = next_frame(&mut buf, 1 << 20).unwrap().unwrap();
        let b = next_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(next_frame(&mut buf, 1 << 20).unwrap(), None);
        assert_eq!(buf.len(), 1);
        assert_eq!(
            RemotingCommand::decode(a).unwrap().serialize_type,
            SerializeType::Json
        );
        assert_eq!(
            RemotingCommand::decode(b).unwrap().serialize_type,
            SerializeType::RocketMq
        );
    }

    #[test]
    fn oversized_header_is_an_encode_error_not_a_corrupt_frame() {
        let mut cmd = RemotingCommand::request(1);
        cmd.remark = Some("\\".repeat(9 * 1024 * 1024));
        let mut buf = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            cmd.encode(&mut buf),
            Err(WireError::HeaderTooLong { .. })
        ));
        assert_eq!(&buf[..], b"keep");
        let long_key = "k".repeat(40_000);
        let mut bin = RemotingCommand::request(1).with_ext(long_key, "v");
        bin.serialize_type = SerializeType::RocketMq;
        assert!(bin.to_frame().is_err());
    }
}
