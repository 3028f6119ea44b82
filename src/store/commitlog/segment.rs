//! The record-level format of commitlog segments (STORE.md §2, MESSAGE.md §6): the 8-byte
//! END-OF-FILE blank record, and the checks a stored record must pass to count as valid
//! (magic, size inside the segment with room for a blank after it, fields adding up, body
//! CRC, and the PHYSICALOFFSET field naming the position it sits at). Pure functions.

use crate::message::record::{RecordView, BLANK_MAGIC_CODE, BLANK_RECORD_BYTES};

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
    Misplaced { field: i64, expected: i64 },
}

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
    use crate::message::record::peek_header;

    #[test]
    fn blank_record_names_the_remaining_bytes() {
        let blank = blank_record(300);
        assert_eq!(peek_header(&blank), Some((300, BLANK_MAGIC_CODE)));
    }

    #[test]
    fn rollover_leaves_room_for_a_blank() {
        assert!(!needs_rollover(0, 92, 100));
        assert!(needs_rollover(0, 93, 100));
        assert!(needs_rollover(150, 43, 100));
        assert!(!needs_rollover(150, 42, 100));
    }
}
