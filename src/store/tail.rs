//! `Tail`: the in-memory end of an append-only log (commitlog or consume queue), as a deque of
//! chunks holding the bytes `[start, end)` of the log. Appends copy into the open chunk (the
//! one copy of the write path); the flusher copies aligned ranges out of it into DMA buffers;
//! readers of the hot tail are served from it. A full chunk is frozen into `Bytes`, so reads
//! that fall inside one are refcounted slices, not copies.
//!
//! Chunks need not be contiguous: after the commitlog's end-of-segment blank record the next
//! append starts a new chunk at the next segment's start. Owned by one log on one shard.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

enum Data {
    Open(BytesMut),
    Sealed(Bytes),
}

struct Chunk {
    start: u64,
    data: Data,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Open(b) => b,
            Data::Sealed(b) => b,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.bytes().len() as u64
    }
}

/// The in-memory tail of a log.
pub(crate) struct Tail {
    chunks: VecDeque<Chunk>,
    chunk_bytes: usize,
    held_bytes: usize,
}

impl Tail {
    /// An empty tail whose chunks hold `chunk_bytes` each.
    pub(crate) fn new(chunk_bytes: usize) -> Tail {
        assert!(chunk_bytes > 0);
        Tail {
            chunks: VecDeque::new(),
            chunk_bytes,
            held_bytes: 0,
        }
    }

    /// First offset held in memory.
    pub(crate) fn start(&self) -> Option<u64> {
        self.chunks.front().map(|c| c.start)
    }

    /// Offset after the last byte held.
    pub(crate) fn end(&self) -> Option<u64> {
        self.chunks.back().map(Chunk::end)
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Appends `bytes` at offset `at`, which is the current end or (after a skip) beyond it.
    pub(crate) fn append(&mut self, at: u64, mut bytes: &[u8]) {
        if let Some(end) = self.end() {
            assert!(at >= end, "append at {at} behind the tail end {end}");
            if at > end {
                self.seal_last();
            }
        }
        let mut at = at;
        while !bytes.is_empty() {
            let need_new = match self.chunks.back() {
                Some(Chunk {
                    data: Data::Open(b),
                    start,
                }) => start + b.len() as u64 != at || b.len() == b.capacity(),
                _ => true,
            };
            if need_new {
                self.seal_last();
                let data = Data::Open(BytesMut::with_capacity(self.chunk_bytes));
                self.chunks.push_back(Chunk { start: at, data });
            }
            let Some(Chunk {
                data: Data::Open(buf),
                ..
            }) = self.chunks.back_mut()
            else {
                unreachable!("an open chunk was just ensured");
            };
            let n = (buf.capacity() - buf.len()).min(bytes.len());
            buf.put_slice(&bytes[..n]);
            bytes = &bytes[n..];
            at += n as u64;
            self.held_bytes += n;
            if buf.len() == buf.capacity() {
                self.seal_last();
            }
        }
    }

    fn seal_last(&mut self) {
        if let Some(chunk) = self.chunks.back_mut() {
            if let Data::Open(buf) = &mut chunk.data {
                let frozen = std::mem::take(buf).freeze();
                chunk.data = Data::Sealed(frozen);
            }
        }
    }

    fn chunk_index(&self, pos: u64) -> Option<usize> {
        let i = self.chunks.partition_point(|c| c.end() <= pos);
        let chunk = self.chunks.get(i)?;
        (chunk.start <= pos).then_some(i)
    }

    /// The bytes `[pos, pos + len)` if memory holds all of them: a slice of a sealed chunk, or
    /// a copy when they span chunks or lie in the open one.
    pub(crate) fn read(&self, pos: u64, len: usize) -> Option<Bytes> {
        let i = self.chunk_index(pos)?;
        let chunk = &self.chunks[i];
        let from = (pos - chunk.start) as usize;
        if let Data::Sealed(b) = &chunk.data {
            if from + len <= b.len() {
                return Some(b.slice(from..from + len));
            }
        }
        let mut out = BytesMut::with_capacity(len);
        (self.copy_out(pos, len, &mut out) == len).then(|| out.freeze())
    }

    /// Copies the contiguous bytes from `pos` (at most `len`) into `out`; returns how many.
    fn copy_out(&self, pos: u64, len: usize, out: &mut BytesMut) -> usize {
        let Some(mut i) = self.chunk_index(pos) else {
            return 0;
        };
        let mut at = pos;
        let mut left = len;
        while left > 0 {
            let Some(chunk) = self.chunks.get(i) else {
                break;
            };
            if chunk.start > at {
                break;
            }
            let bytes = chunk.bytes();
            let from = (at - chunk.start) as usize;
            let n = (bytes.len() - from).min(left);
            out.put_slice(&bytes[from..from + n]);
            at += n as u64;
            left -= n;
            i += 1;
        }
        len - left
    }

    /// Copies the bytes memory holds in `[pos, pos + dst.len())` into `dst` at the same
    /// relative positions, leaving the rest of `dst` as it is. Returns how many bytes came
    /// from memory.
    pub(crate) fn copy_range_into(&self, pos: u64, dst: &mut [u8]) -> usize {
        let end = pos + dst.len() as u64;
        let mut copied = 0;
        for chunk in &self.chunks {
            let (lo, hi) = (chunk.start.max(pos), chunk.end().min(end));
            if lo >= hi {
                continue;
            }
            let src = &chunk.bytes()[(lo - chunk.start) as usize..(hi - chunk.start) as usize];
            dst[(lo - pos) as usize..(hi - pos) as usize].copy_from_slice(src);
            copied += src.len();
        }
        copied
    }

    /// End of the data held in `[from, to)`: the end of the last chunk starting before `to`,
    /// capped at `to`.
    pub(crate) fn data_end_before(&self, from: u64, to: u64) -> Option<u64> {
        self.chunks
            .iter()
            .rev()
            .find(|c| c.start < to && c.end() > from)
            .map(|c| c.end().min(to))
    }

    /// Drops leading chunks that end at or before `durable` while more than `keep_bytes`
    /// are held.
    pub(crate) fn evict(&mut self, durable: u64, keep_bytes: usize) {
        while self.held_bytes > keep_bytes {
            match self.chunks.front() {
                Some(c) if c.end() <= durable && self.chunks.len() > 1 => {
                    self.held_bytes -= c.bytes().len();
                    self.chunks.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.held_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_span_chunks_and_skips_leave_gaps() {
        let mut tail = Tail::new(8);
        tail.append(100, b"0123456789abc");
        assert_eq!(tail.start(), Some(100));
        assert_eq!(tail.end(), Some(113));
        assert_eq!(&tail.read(100, 8).unwrap()[..], b"01234567");
        assert_eq!(&tail.read(106, 5).unwrap()[..], b"6789a");
        assert!(tail.read(110, 4).is_none());
        tail.append(200, b"xyz");
        assert_eq!(&tail.read(200, 3).unwrap()[..], b"xyz");
        assert!(tail.read(112, 2).is_none());
        assert_eq!(tail.data_end_before(100, 150), Some(113));
        let mut dst = [b'.'; 16];
        assert_eq!(tail.copy_range_into(96, &mut dst), 12);
        assert_eq!(&dst, b"....0123456789ab");
    }

    #[test]
    fn eviction_keeps_undurable_bytes() {
        let mut tail = Tail::new(4);
        tail.append(0, b"aaaabbbbcccc");
        tail.evict(5, 0);
        assert_eq!(tail.start(), Some(4));
        tail.evict(100, 0);
        assert_eq!(tail.start(), Some(8), "the last chunk always stays");
        assert_eq!(tail.held_bytes(), 4);
    }

    #[test]
    #[should_panic(expected = "behind the tail end")]
    fn appending_behind_the_end_is_a_bug() {
        let mut tail = Tail::new(4);
        tail.append(10, b"abc");
        tail.append(11, b"x");
    }
}
