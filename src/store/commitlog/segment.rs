//! The record-level format of commitlog segments (STORE.md §2, MESSAGE.md §6): the 8-byte
//! END-OF-FILE blank record, and the checks a stored record must pass to count as valid
//! (magic, size inside the segment with room for a blank after it, fields adding up, body
//! CRC, the PHYSICALOFFSET field naming the position it sits at, and no NUL where a torn
//! write leaves zeros after the body). Pure functions.

use crate::message::record::{
    tail_fault, RecordError, RecordView, BLANK_MAGIC_CODE, BLANK_RECORD_BYTES,
};

/// The blank record closing a segment whose last `remaining` bytes are unused.
pub(crate) fn blank_record(remaining: u64) -> [u8; BLANK_RECORD_BYTES] {
    assert!(remaining >= BLANK_RECORD_BYTES as u64 && remaining <= i32::MAX as u64);
    let mut out = [0u8; BLANK_RECORD_BYTES];
    out[..4].copy_from_slice(&(remaining as i32).to_be_bytes());
    out[4..].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
    out
}

/// Whether a record of `len` bytes at `pos` must go to the next segment (a record never
/// spans segments and always leaves room for the blank record after it).
pub(crate) fn needs_rollover(pos: u64, len: usize, segment_bytes: u64) -> bool {
    let remaining = segment_bytes - pos % segment_bytes;
    len as u64 + BLANK_RECORD_BYTES as u64 > remaining
}

/// Why a stored record is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalid {
    Parse(String),
    Crc,
    Misplaced {
        field: i64,
        expected: i64,
    },
    /// Zeros where the record's tail (topic, properties) can hold none: a write torn after
    /// the body.
    Torn(RecordError),
}

// What a torn write leaves after a record's body. Writes reach the disk in whole sectors; a
// sector of a torn write that did not, or that an older write of the same partial page left
// behind, reads back as zeros (segments are preallocated and written ahead with zeros), so what
// a torn write leaves inside a record is a run of zeros. In the body the CRC sees it; before the
// body it reaches the body or, for an empty one, the topic; after the body it lands in the
// topic or the properties, which never hold a NUL in a stored record (`tail_fault`, which
// `RecordInput::encode` applies to every record), or in a length field, whose sum then misses
// the record's size.

/// Checks the record in `bytes` (exactly one record) stored at physical offset `physical`;
/// returns its parsed view.
pub(crate) fn check_record(
    bytes: &[u8],
    physical: i64,
    check_crc: bool,
) -> Result<RecordView<'_>, Invalid> {
    let view = RecordView::parse(bytes).map_err(|e| Invalid::Parse(e.to_string()))?;
    if view.total_size != bytes.len() {
        return Err(Invalid::Parse(format!(
            "size {} in {}",
            view.total_size,
            bytes.len()
        )));
    }
    if check_crc && view.check_crc().is_err() {
        return Err(Invalid::Crc);
    }
    if let Some(fault) = tail_fault(view.topic, view.properties) {
        return Err(Invalid::Torn(fault));
    }
    if view.physical_offset != physical {
        return Err(Invalid::Misplaced {
            field: view.physical_offset,
            expected: physical,
        });
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::record::{patch, peek_header, RecordInput};
    use bytes::BytesMut;

    #[test]
    fn blank_record_names_the_remaining_bytes() {
        let blank = blank_record(300);
        assert_eq!(peek_header(&blank), Some((300, BLANK_MAGIC_CODE)));
    }

    /// A record at physical offset 4096 as the store writes it.
    fn stored(props: &str) -> Vec<u8> {
        let input = RecordInput {
            topic: "TopicTest",
            queue_id: 1,
            flag: 0,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: "10.0.0.5:53412".parse().unwrap(),
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: b"the body",
            properties: props,
        };
        let mut buf = BytesMut::new();
        let slots = input.encode(&mut buf).unwrap();
        patch(&mut buf, slots, 7, 4096, 1_700_000_000_001);
        buf.to_vec()
    }

    #[test]
    fn zeros_anywhere_from_the_body_on_are_not_a_record() {
        for props in ["", "TAGS\u{1}a\u{2}UNIQ_KEY\u{1}0A0B"] {
            let whole = stored(props);
            assert!(check_record(&whole, 4096, true).is_ok());
            let body_start = 88;
            // A run of zeros of any length anywhere from the body on: what a lost sector, or
            // the unwritten rest of a torn write, leaves inside a record.
            for start in body_start..whole.len() {
                for end in start + 1..=whole.len() {
                    let mut torn = whole.clone();
                    torn[start..end].fill(0);
                    if torn == whole {
                        continue; // the zeros were there already (a length's high byte)
                    }
                    let got = check_record(&torn, 4096, true);
                    assert!(
                        got.is_err(),
                        "props {props:?}, zeros over {start}..{end} of {}",
                        whole.len()
                    );
                }
            }
        }
    }

    #[test]
    fn rollover_leaves_room_for_a_blank() {
        assert!(!needs_rollover(0, 92, 100));
        assert!(needs_rollover(0, 93, 100));
        assert!(needs_rollover(150, 43, 100));
        assert!(!needs_rollover(150, 42, 100));
    }
}
