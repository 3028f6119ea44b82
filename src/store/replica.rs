//! The store's side of master/slave replication (HA.md, DESIGN.md "Replication"): the master
//! reads its commitlog in chunks of whole records ([`MessageStore::replication_chunk`]); the
//! slave appends those bytes at the same offsets ([`MessageStore::append_replicated`]) after
//! checking every record, and dispatches them to its own consume queues and index, so its
//! commitlog is a byte-identical copy of the master's (same segment files, same physical
//! offsets, so offsetMsgIds and queue offsets match).
//!
//! Chunks never cut a record and never cross a segment: a chunk that reaches a segment's
//! END-OF-FILE blank record carries only its 8 bytes and the next chunk starts at the next
//! segment. A slave store is made to follow its master with [`StoreConfig::truncate_to`]
//! (reopen) when their histories diverged.

use bytes::Bytes;

use super::commitlog::segment::{check_record, needs_rollover, Invalid};
use super::commitlog::to_physical;
use super::dispatch::{dispatch, Targets};
use super::error::{StoreError, StoreResult};
use super::io::Storage;
use super::MessageStore;
use crate::message::record::{
    peek_header, RecordError, RecordView, BLANK_MAGIC_CODE, BLANK_RECORD_BYTES, MESSAGE_MAGIC_CODE,
};
use crate::runtime::OffsetWatch;

/// One chunk of a master's commitlog: whole records starting at `pos`.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Offset in the shard's commitlog of the first byte.
    pub pos: u64,
    pub bytes: Bytes,
    /// Where the next chunk starts (`pos + bytes.len()`, or the next segment after a blank).
    pub next: u64,
}

impl<S: Storage> MessageStore<S> {
    /// Commitlog bytes appended, as an offset in this shard's commitlog.
    pub fn written_offset(&self) -> u64 {
        self.inner.commitlog.written()
    }

    /// Commitlog bytes durable, as an offset in this shard's commitlog.
    pub fn flushed_offset(&self) -> u64 {
        self.inner.commitlog.flushed()
    }

    /// First stored commitlog byte, as an offset in this shard's commitlog.
    pub fn commitlog_min_offset(&self) -> u64 {
        self.inner.commitlog.min_offset()
    }

    /// Advanced by every append (the HA sender waits on it).
    pub fn written_watch(&self) -> OffsetWatch {
        self.inner.commitlog.written_watch.clone()
    }

    /// Advanced by every flush (a SYNC_FLUSH slave acknowledges what is durable).
    pub fn flushed_watch(&self) -> OffsetWatch {
        self.inner.commitlog.flushed_watch.clone()
    }

    /// Bytes of `mappedFileSizeCommitLog`.
    pub fn segment_bytes(&self) -> u64 {
        self.inner.cfg.segment_bytes
    }

    /// Master: whole records from `pos` (a record boundary), about `max_bytes` of them (at
    /// least one record), never past a segment. `None` when nothing is stored at `pos` yet.
    pub async fn replication_chunk(
        &self,
        pos: u64,
        max_bytes: usize,
    ) -> StoreResult<Option<Chunk>> {
        let cl = &*self.inner.commitlog;
        let written = cl.written();
        if pos >= written {
            return Ok(None);
        }
        if pos < cl.min_offset() {
            return Err(StoreError::OffsetOutOfRange {
                offset: to_physical(self.inner.cfg.shard, pos),
            });
        }
        let seg_bytes = cl.log.segment_bytes();
        let seg_end = cl.log.segment_of(pos) + seg_bytes;
        let avail = (written.min(seg_end) - pos) as usize;
        let dir = cl.log.dir().to_path_buf();
        let read = |at: u64, len: usize| {
            let dir = dir.clone();
            async move {
                cl.read(at, len)
                    .await
                    .map_err(|e| StoreError::io("reading for replication", dir, e))
            }
        };
        let head = read(pos, BLANK_RECORD_BYTES.min(avail)).await?;
        let corrupt = |reason: String| StoreError::Corrupt {
            offset: pos,
            reason,
        };
        let (size, magic) = peek_header(&head).ok_or_else(|| corrupt("short header".into()))?;
        if magic == BLANK_MAGIC_CODE {
            return Ok(Some(Chunk {
                pos,
                bytes: head,
                next: seg_end,
            }));
        }
        if magic != MESSAGE_MAGIC_CODE || size <= 0 || size as usize > avail {
            return Err(corrupt(format!("magic {magic:#x}, size {size}")));
        }
        let want = (size as usize).max(max_bytes.min(avail));
        let bytes = read(pos, want).await?;
        let (cut, next) = whole_records(&bytes, pos, seg_end);
        Ok(Some(Chunk {
            pos,
            bytes: bytes.slice(..cut),
            next,
        }))
    }

    /// Slave: appends `bytes` (whole records from a master chunk) at `pos` and dispatches
    /// them. `pos` must be this commitlog's end; an empty commitlog may start at any segment
    /// boundary (the master's oldest segment). Returns the new end. Nothing is appended if
    /// any record fails its checks.
    pub fn append_replicated(&self, pos: u64, bytes: &[u8]) -> StoreResult<u64> {
        let inner = &*self.inner;
        let cl = &*inner.commitlog;
        cl.check_writable()?;
        let seg_bytes = cl.log.segment_bytes();
        let written = cl.written();
        let empty = written == 0 && cl.log.segment_starts().is_empty();
        let misplaced = |reason: String| StoreError::Corrupt {
            offset: pos,
            reason,
        };
        if pos != written && !(empty && pos % seg_bytes == 0) {
            return Err(misplaced(format!(
                "replicated bytes start at {pos} but this commitlog ends at {written}"
            )));
        }
        let records = split_records(bytes, pos, seg_bytes, inner.cfg.shard)
            .map_err(|e| misplaced(e.to_string()))?;
        if pos != written {
            cl.log.skip_to(pos);
        }
        let targets = Targets {
            queues: &inner.queues,
            index: inner.cfg.message_index_enable.then_some(&inner.index),
            to_queue: true,
            delay_levels_ms: &inner.cfg.delay_levels_ms,
        };
        let mut end = pos;
        for record in records {
            match record {
                Piece::Blank { at, seg_end } => {
                    cl.log
                        .append(at, &bytes[(at - pos) as usize..][..BLANK_RECORD_BYTES]);
                    cl.log.skip_to(seg_end);
                    end = seg_end;
                }
                Piece::Record { at, view } => {
                    let from = (at - pos) as usize;
                    cl.log.append(at, &bytes[from..from + view.total_size]);
                    end = at + view.total_size as u64;
                    let ts = cl.last_store_timestamp.get().max(view.store_timestamp);
                    cl.last_store_timestamp.set(ts);
                    dispatch(&targets, &view, end);
                }
            }
        }
        cl.written_watch.advance(end);
        Ok(end)
    }
}

/// A validated piece of a replicated chunk.
enum Piece<'a> {
    Blank { at: u64, seg_end: u64 },
    Record { at: u64, view: RecordView<'a> },
}

/// Splits a replicated chunk into records, checking each one (magic, size, CRC, position,
/// segment fit) before anything is appended.
/// Why a replicated chunk is refused (nothing of it is appended).
#[derive(Debug, thiserror::Error)]
enum ChunkError {
    #[error("a record header is cut off")]
    HeaderCut,
    #[error("a blank record at {at} of size {size} does not end segment {seg_end}")]
    MisplacedBlank { at: u64, size: i32, seg_end: u64 },
    #[error("record size {size} at {at}")]
    BadSize { size: i32, at: u64 },
    #[error("record of {size} bytes at {at} does not fit")]
    DoesNotFit { size: i32, at: u64 },
    #[error("record at {at}: {reason}")]
    Unparsable { at: u64, reason: String },
    #[error("record at {at}: body CRC mismatch")]
    Crc { at: u64 },
    #[error("record at {at} says it belongs at physical offset {field}")]
    Misplaced { at: u64, field: i64 },
    #[error("record at {at}: {what} (a torn write)")]
    Torn { at: u64, what: RecordError },
}

fn split_records(
    bytes: &[u8],
    pos: u64,
    seg_bytes: u64,
    shard: u8,
) -> Result<Vec<Piece<'_>>, ChunkError> {
    let mut pieces = Vec::new();
    let mut at = pos;
    let mut rest = bytes;
    while !rest.is_empty() {
        let seg_end = at - at % seg_bytes + seg_bytes;
        let (size, magic) = peek_header(rest).ok_or(ChunkError::HeaderCut)?;
        if magic == BLANK_MAGIC_CODE {
            if size as u64 != seg_end - at || rest.len() != BLANK_RECORD_BYTES {
                return Err(ChunkError::MisplacedBlank { at, size, seg_end });
            }
            pieces.push(Piece::Blank { at, seg_end });
            break;
        }
        let len = usize::try_from(size).map_err(|_| ChunkError::BadSize { size, at })?;
        if len > rest.len() || len < BLANK_RECORD_BYTES || needs_rollover(at, len, seg_bytes) {
            return Err(ChunkError::DoesNotFit { size, at });
        }
        let view =
            check_record(&rest[..len], to_physical(shard, at), true).map_err(|e| match e {
                Invalid::Parse(reason) => ChunkError::Unparsable { at, reason },
                Invalid::Crc => ChunkError::Crc { at },
                Invalid::Misplaced { field, .. } => ChunkError::Misplaced { at, field },
                Invalid::Torn(what) => ChunkError::Torn { at, what },
            })?;
        pieces.push(Piece::Record { at, view });
        at += len as u64;
        rest = &rest[len..];
    }
    Ok(pieces)
}

/// How many leading bytes of `bytes` (read at `pos`) are whole records, and where the next
/// chunk starts. A blank record ends the chunk (its 8 bytes included).
fn whole_records(bytes: &[u8], pos: u64, seg_end: u64) -> (usize, u64) {
    let mut cut = 0usize;
    while let Some((size, magic)) = peek_header(&bytes[cut..]) {
        if magic == BLANK_MAGIC_CODE {
            return (cut + BLANK_RECORD_BYTES, seg_end);
        }
        let len = size.max(0) as usize;
        if magic != MESSAGE_MAGIC_CODE || len == 0 || cut + len > bytes.len() {
            break;
        }
        cut += len;
    }
    (cut, pos + cut as u64)
}
