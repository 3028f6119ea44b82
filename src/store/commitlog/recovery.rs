//! The recovery scan: walks the commitlog forward from a known record boundary, checking each
//! record (magic, sizes, body CRC, position, no zeros of a torn write) and following blank records to the next
//! segment, until the first thing that is not a valid record. That point is the end of the
//! log; the caller truncates there and re-dispatches the records the scan returned.
//!
//! Runs on the shard's executor during open, before any append. Reads through its own
//! read-ahead buffer, straight from the files.

use bytes::Bytes;

use super::segment::{check_record, Invalid};
use super::{to_physical, CommitLog, OLD_SHARD_SHIFT};
use crate::message::record::MESSAGE_MAGIC_CODE;
use crate::message::record::{peek_header, BLANK_MAGIC_CODE, BLANK_RECORD_BYTES};
use crate::store::error::{StoreError, StoreResult};
use crate::store::io::{Storage, StorageFile};

/// Bytes read at once while scanning.
const READ_AHEAD_BYTES: u64 = 1 << 20;
/// The smallest possible record (IPv4 hosts, empty body, topic and properties).
const RECORD_MIN_BYTES: usize = 91;

/// One step of the scan.
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid record at `pos` (offset in the shard).
    Record { pos: u64, bytes: Bytes },
    /// The log ends at `pos`; `reason` says what was found there.
    End { pos: u64, reason: String },
}

/// A forward scan over one commitlog.
pub(crate) struct Scanner<'a, S: Storage> {
    log: &'a CommitLog<S>,
    pos: u64,
    check_crc: bool,
    buf: Bytes,
    buf_pos: u64,
}

impl<'a, S: Storage> Scanner<'a, S> {
    /// A scan starting at `pos`, which must be a record boundary or a segment start.
    pub(crate) fn new(log: &'a CommitLog<S>, pos: u64, check_crc: bool) -> Scanner<'a, S> {
        Scanner {
            log,
            pos,
            check_crc,
            buf: Bytes::new(),
            buf_pos: pos,
        }
    }

    /// The next valid record, or the end.
    pub(crate) async fn next(&mut self) -> StoreResult<Step> {
        loop {
            let seg_bytes = self.log.log.segment_bytes();
            let seg = self.log.log.segment_of(self.pos);
            let remaining = seg + seg_bytes - self.pos;
            if self.log.log.file(seg).is_none() {
                return Ok(self.end("no segment file"));
            }
            let Some(header) = self.bytes_at(self.pos, BLANK_RECORD_BYTES).await? else {
                return Ok(self.end("short segment file"));
            };
            let Some((size, magic)) = peek_header(&header) else {
                return Ok(self.end("short header"));
            };
            if magic == BLANK_MAGIC_CODE && size as u64 == remaining {
                self.pos = seg + seg_bytes;
                continue;
            }
            if magic != MESSAGE_MAGIC_CODE {
                return Ok(self.end(&format!("magic {:#010x}", magic as u32)));
            }
            let len = size as usize;
            let fits = len as u64 + BLANK_RECORD_BYTES as u64 <= remaining;
            // No check against maxMessageSize: a lowered limit must not cut off older records.
            if size < 0 || len < RECORD_MIN_BYTES || !fits {
                return Ok(self.end(&format!("record size {size}")));
            }
            let Some(bytes) = self.bytes_at(self.pos, len).await? else {
                return Ok(self.end("record cut by the end of the file"));
            };
            let physical = to_physical(self.log.shard, self.pos);
            if let Err(invalid) = check_record(&bytes, physical, self.check_crc) {
                if is_old_layout(&invalid, self.log.shard, self.pos) {
                    // Written before the 53-bit layout (a store copied in behind its format
                    // line): refuse rather than cut it off as a stale tail.
                    return Err(StoreError::OldOffsetLayout {
                        root: self.log.log.dir().to_path_buf(),
                        shards: vec![u32::from(self.log.shard)],
                    });
                }
                return Ok(self.end(&describe(&invalid)));
            }
            let pos = self.pos;
            self.pos += len as u64;
            return Ok(Step::Record { pos, bytes });
        }
    }

    fn end(&self, reason: &str) -> Step {
        Step::End {
            pos: self.pos,
            reason: reason.to_string(),
        }
    }

    /// `len` bytes at `pos` from the read-ahead buffer, refilled as needed; `None` when the
    /// file is shorter.
    async fn bytes_at(&mut self, pos: u64, len: usize) -> StoreResult<Option<Bytes>> {
        let end = pos + len as u64;
        if pos >= self.buf_pos && end <= self.buf_pos + self.buf.len() as u64 {
            let from = (pos - self.buf_pos) as usize;
            return Ok(Some(self.buf.slice(from..from + len)));
        }
        let log = &self.log.log;
        let seg = log.segment_of(pos);
        let want = READ_AHEAD_BYTES
            .max(len as u64)
            .min(seg + log.segment_bytes() - pos);
        let Some(file) = log.file(seg) else {
            return Ok(None);
        };
        let path = log.path_of(seg);
        let bytes = file
            .read_at(pos - seg, want as usize)
            .await
            .map_err(|e| StoreError::io("reading", path, e))?;
        self.buf = bytes;
        self.buf_pos = pos;
        if self.buf.len() < len {
            return Ok(None);
        }
        Ok(Some(self.buf.slice(0..len)))
    }
}

/// A record of shard `shard` at `pos` whose offset field has the old layout's shard bits.
fn is_old_layout(invalid: &Invalid, shard: u8, pos: u64) -> bool {
    let old = (u64::from(shard) << OLD_SHARD_SHIFT) | pos;
    matches!(invalid, Invalid::Misplaced { field, .. } if shard > 0 && *field as u64 == old)
}

fn describe(invalid: &Invalid) -> String {
    match invalid {
        Invalid::Parse(e) => format!("unparsable record: {e}"),
        Invalid::Crc => "body CRC mismatch".to_string(),
        Invalid::Torn(what) => format!("torn write: {what}"),
        Invalid::Misplaced { field, expected } => {
            format!("record says it is at {field}, found at {expected} (stale data)")
        }
    }
}
