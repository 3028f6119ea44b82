//! A connection's socket as another thread may write to it: the write lock that keeps frames
//! whole on the stream, and the bound on answers other threads owe the connection.
//!
//! The shard that reads a connection owns it; its writer task ([`super::connection`]) writes
//! batches of frames. Another shard that holds an answer for the connection (the owner of a
//! queue a send was handed to, `crate::broker::put_hop`) may write it straight onto the socket
//! with a non-blocking `send(2)`, sparing the reader a wake-up, when it can do so cleanly:
//!
//! - One state word says who may write: nobody ([`FREE`]), the reader's writer, another
//!   thread (for one non-blocking `send(2)`), a remainder waiting for the reader's writer (a
//!   partial write), or closed. Other threads only try-acquire it; the reader's writer waits
//!   for it (a spin: the other thread holds it for one system call).
//! - A partial write leaves the lock held with the remainder in [`SocketLink`]: the reader's
//!   writer takes both together and writes the remainder before anything else.
//! - The reader's writer marks the link closed before it drops the socket: a descriptor that
//!   may have been reused is never written.
//! - Anything else (lock held, socket full, closed, an error) is not written here: the caller
//!   hands the answer to the reader, which queues it as any other.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::limits::CONNECTION_DIRECT_ANSWERS_MAX;

const FREE: u8 = 0;
/// The reader shard's writer task is writing.
const READER: u8 = 1;
/// Another thread is in its `send(2)`.
const OTHER: u8 = 2;
/// Another thread's write went out in part; the remainder waits in `remainder` and the lock
/// stays held until the reader's writer has taken it.
const REMAINDER: u8 = 3;
/// The socket is gone or going (terminal).
const CLOSED: u8 = 4;

/// What became of a write tried from another thread.
#[derive(Debug, PartialEq, Eq)]
pub enum TryWrite {
    /// Every byte went out.
    Written,
    /// Nothing went out (lock held, socket full, closed, an error): the reader must write it.
    NotWritten,
    /// Some bytes went out; the rest waits for the reader's writer, which must be nudged.
    Partial,
}

/// The socket of one connection, shared with the threads that may answer on it.
pub struct SocketLink {
    fd: RawFd,
    state: AtomicU8,
    remainder: Mutex<Option<Bytes>>,
    /// Answers other threads owe this connection (see [`SocketLink::claim_answer`]).
    owed: AtomicUsize,
}

impl SocketLink {
    /// The link of the open socket `fd`; it must be marked closed ([`SocketLink::close`])
    /// before `fd` is closed.
    pub fn new(fd: RawFd) -> SocketLink {
        SocketLink {
            fd,
            state: AtomicU8::new(FREE),
            remainder: Mutex::new(None),
            owed: AtomicUsize::new(0),
        }
    }

    /// Claims a place for an answer another thread will owe this connection: false when
    /// `CONNECTION_DIRECT_ANSWERS_MAX` are owed already (the request then goes the usual way).
    pub fn claim_answer(&self) -> bool {
        self.owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                (owed < CONNECTION_DIRECT_ANSWERS_MAX).then_some(owed + 1)
            })
            .is_ok()
    }

    /// `count` owed answers were written or queued (or will never be: the connection closed).
    pub fn answered(&self, count: usize) {
        self.owed.fetch_sub(count, Ordering::AcqRel);
    }

    /// Answers owed to this connection by other threads.
    pub fn owed(&self) -> usize {
        self.owed.load(Ordering::Acquire)
    }

    /// From a thread other than the reader's: writes `frames` (whole frames) if the lock is
    /// free and the socket takes them without waiting.
    pub fn try_write(&self, frames: &[u8]) -> TryWrite {
        if frames.is_empty() {
            return TryWrite::Written;
        }
        let taken = self
            .state
            .compare_exchange(FREE, OTHER, Ordering::Acquire, Ordering::Relaxed);
        if taken.is_err() {
            return TryWrite::NotWritten;
        }
        // SAFETY: a non-blocking send on the connection's socket, which is open: the lock is
        // held (OTHER), and the reader's writer marks the link CLOSED, which it can only do
        // from FREE or REMAINDER, before the descriptor is closed. `frames` outlives the call.
        let sent = unsafe {
            libc::send(
                self.fd,
                frames.as_ptr().cast(),
                frames.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == frames.len() => {
                self.state.store(FREE, Ordering::Release);
                TryWrite::Written
            }
            Ok(n) if n > 0 => {
                let rest = Bytes::copy_from_slice(&frames[n..]);
                *self.remainder.lock().unwrap_or_else(|e| e.into_inner()) = Some(rest);
                self.state.store(REMAINDER, Ordering::Release);
                TryWrite::Partial
            }
            // EAGAIN (socket full), an error, or nothing taken: the reader writes it all.
            _ => {
                self.state.store(FREE, Ordering::Release);
                TryWrite::NotWritten
            }
        }
    }

    /// True while another thread's remainder waits for the reader's writer.
    pub fn remainder_waits(&self) -> bool {
        self.state.load(Ordering::Acquire) == REMAINDER
    }

    /// The reader's writer takes the lock before it writes, waiting while another thread is
    /// in its `send(2)`; returns what another thread's partial write left, to be written first.
    /// `None` as the lock: the link is closed (nothing may be written).
    pub fn lock_for_reader(&self) -> Option<Option<Bytes>> {
        let mut spins = 0u32;
        loop {
            match self.state.load(Ordering::Acquire) {
                FREE => {
                    if self
                        .state
                        .compare_exchange(FREE, READER, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Some(None);
                    }
                }
                REMAINDER => {
                    let rest = self
                        .remainder
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    self.state.store(READER, Ordering::Release);
                    return Some(rest);
                }
                CLOSED => return None,
                // OTHER: one non-blocking system call. (READER cannot be seen here: only the
                // reader's writer takes it.)
                _ => wait_a_moment(&mut spins),
            }
        }
    }

    /// The reader's writer is done writing.
    pub fn unlock_for_reader(&self) {
        let _ = self
            .state
            .compare_exchange(READER, FREE, Ordering::Release, Ordering::Relaxed);
    }

    /// Marks the link closed, for good, before the socket is dropped: waits while another
    /// thread is in its `send(2)`; a remainder waiting is dropped with the connection.
    pub fn close(&self) {
        let mut spins = 0u32;
        loop {
            let now = self.state.load(Ordering::Acquire);
            match now {
                CLOSED => return,
                OTHER => wait_a_moment(&mut spins),
                _ => {
                    if self
                        .state
                        .compare_exchange(now, CLOSED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.remainder
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take();
                        return;
                    }
                }
            }
        }
    }
}

/// One turn of waiting for another thread to finish its `send(2)`: a spin, and after a few
/// dozen of them a yield of the CPU (that thread may have been preempted holding the lock).
fn wait_a_moment(spins: &mut u32) {
    const SPINS_BEFORE_YIELD: u32 = 64;
    *spins += 1;
    if *spins % SPINS_BEFORE_YIELD == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    /// A frame: 4-byte length, then `len` copies of `tag`.
    fn frame(tag: u8, len: usize) -> Vec<u8> {
        let mut f = (len as u32).to_be_bytes().to_vec();
        f.extend(std::iter::repeat_n(tag, len));
        f
    }

    /// Reads frames until EOF; panics on a frame whose bytes are not all one tag (interleaved).
    fn read_frames(mut from: UnixStream) -> Vec<(u8, usize)> {
        let mut all = Vec::new();
        from.read_to_end(&mut all).unwrap();
        let mut frames = Vec::new();
        let mut at = 0;
        while at < all.len() {
            let len = u32::from_be_bytes(all[at..at + 4].try_into().unwrap()) as usize;
            let body = &all[at + 4..at + 4 + len];
            assert!(body.iter().all(|b| *b == body[0]), "frames interleaved");
            frames.push((body[0], len));
            at += 4 + len;
        }
        frames
    }

    fn set_send_buffer(fd: RawFd, bytes: libc::c_int) {
        // SAFETY: setsockopt on a socket this test owns, with a c_int that outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                std::ptr::from_ref(&bytes).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    #[test]
    fn two_writers_never_interleave_and_what_is_not_written_goes_to_the_reader() {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        set_send_buffer(ours.as_raw_fd(), 4096);
        let link = Arc::new(SocketLink::new(ours.as_raw_fd()));
        let reading = std::thread::spawn(move || read_frames(peer));
        const EACH: usize = 2000;
        // Another thread: try-writes; what it could not write is counted for the reader.
        let other = {
            let link = Arc::clone(&link);
            std::thread::spawn(move || {
                let mut handed = Vec::new();
                for i in 0..EACH {
                    let f = frame(b'o', 100 + i % 700);
                    match link.try_write(&f) {
                        TryWrite::Written => {}
                        TryWrite::NotWritten => handed.push(f),
                        // The remainder is the reader's to write, before anything else.
                        TryWrite::Partial => {}
                    }
                }
                handed
            })
        };
        // The reader's writer: blocking writes of its own frames, under the lock.
        let mut writer = ours.try_clone().unwrap();
        writer.set_nonblocking(false).unwrap();
        let mut write_locked = |bytes: &[u8]| {
            let rest = link.lock_for_reader().expect("open");
            if let Some(rest) = rest {
                writer.write_all(&rest).unwrap();
            }
            writer.write_all(bytes).unwrap();
            link.unlock_for_reader();
        };
        for i in 0..EACH {
            write_locked(&frame(b'r', 50 + i % 900));
        }
        for f in other.join().unwrap() {
            write_locked(&f);
        }
        // A remainder left by the other thread's last write.
        write_locked(&[]);
        link.close();
        drop(writer);
        drop(ours);
        let frames = read_frames_result(reading);
        let count = |tag| frames.iter().filter(|(t, _)| *t == tag).count();
        assert_eq!(count(b'r'), EACH);
        assert_eq!(count(b'o'), EACH);
    }

    fn read_frames_result(h: std::thread::JoinHandle<Vec<(u8, usize)>>) -> Vec<(u8, usize)> {
        h.join().expect("no frame was interleaved")
    }

    #[test]
    fn a_partial_writes_remainder_is_written_first_and_holds_the_lock_until_then() {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        set_send_buffer(ours.as_raw_fd(), 4096);
        let link = SocketLink::new(ours.as_raw_fd());
        // Far larger than the socket's buffer: it goes out in part.
        let big = frame(b'p', 1 << 20);
        assert_eq!(link.try_write(&big), TryWrite::Partial);
        assert!(link.remainder_waits());
        // Held: no other thread may write now.
        assert_eq!(link.try_write(&frame(b'x', 10)), TryWrite::NotWritten);
        let reading = std::thread::spawn(move || read_frames(peer));
        let rest = link.lock_for_reader().expect("open").expect("a remainder");
        let mut writer = ours.try_clone().unwrap();
        writer.set_nonblocking(false).unwrap();
        writer.write_all(&rest).unwrap();
        writer.write_all(&frame(b'r', 10)).unwrap();
        link.unlock_for_reader();
        assert_eq!(link.try_write(&frame(b'o', 10)), TryWrite::Written);
        link.close();
        drop(writer);
        drop(ours);
        assert_eq!(
            read_frames_result(reading),
            [(b'p', 1 << 20), (b'r', 10), (b'o', 10)]
        );
    }

    #[test]
    fn a_closed_links_descriptor_is_never_written() {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let link = SocketLink::new(ours.as_raw_fd());
        link.close();
        // The descriptor number is reused by another socket: the link must not write to it.
        drop(ours);
        let (reused, reused_peer) = UnixStream::pair().unwrap();
        assert_eq!(link.try_write(&frame(b'x', 10)), TryWrite::NotWritten);
        assert!(link.lock_for_reader().is_none());
        drop(reused);
        let mut got = Vec::new();
        let mut reused_peer = reused_peer;
        reused_peer.read_to_end(&mut got).unwrap();
        assert!(got.is_empty());
        drop(peer);
    }

    #[test]
    fn answers_owed_are_bounded() {
        let link = SocketLink::new(-1);
        for _ in 0..CONNECTION_DIRECT_ANSWERS_MAX {
            assert!(link.claim_answer());
        }
        assert!(!link.claim_answer());
        link.answered(1);
        assert!(link.claim_answer());
        assert_eq!(link.owed(), CONNECTION_DIRECT_ANSWERS_MAX);
    }
}
