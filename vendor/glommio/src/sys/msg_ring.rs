// ringmq patch (PATCHES.md item 5): cross-executor wake-ups posted into the sleeper's ring
// with IORING_OP_MSG_RING instead of written to its eventfd.
//
// Upstream wakes a sleeping executor by writing its eventfd. The sleeper has a read of that
// eventfd pending in its latency ring, and sleeps in its main ring with a poll on the latency
// ring's fd: the write completes the read (kernel task work in the sleeper), which posts a CQE
// in the latency ring, which fires the poll (more task work), which posts a CQE in the main
// ring and ends the wait; then the sleeper submits a new eventfd read in an `io_uring_enter`
// of its own. Here the waker posts one CQE (user_data `WAKE_USER_DATA`) straight into the
// sleeper's main ring: the wait ends, the eventfd read stays armed (nothing to re-submit).
// The CQ is level-triggered like the eventfd counter: a wake posted after the sleeper's last
// look at its channels and before it entered the kernel ends the wait at once.
//
// The waker needs a ring to submit from: each thread that wakes another executor gets a small
// one of its own (its SQE asks for nothing back on success). Any failure (no ring, an old
// kernel, a target ring already closed) falls back to the eventfd write.

use crate::iou;
use std::{
    cell::RefCell,
    os::unix::io::RawFd,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

/// The user_data of a wake-up CQE. No source has it (source ids are small; liburing keeps
/// `u64::MAX` for itself).
pub(crate) const WAKE_USER_DATA: u64 = u64::MAX - 1;

const IORING_OP_MSG_RING: u8 = 40;
const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;

static ENABLED: AtomicBool = AtomicBool::new(true);
static POSTED: AtomicU64 = AtomicU64::new(0);

/// How many wake-ups this process posted with IORING_OP_MSG_RING (the others, if any, went
/// through eventfds).
pub fn msg_ring_wakes_posted() -> u64 {
    POSTED.load(Ordering::Relaxed)
}

/// Whether cross-executor wake-ups go through IORING_OP_MSG_RING (the default) or, as
/// upstream, through the sleeper's eventfd. For measuring one against the other; a kernel
/// without IORING_OP_MSG_RING (before 5.18) turns it off by itself on the first try.
pub fn set_msg_ring_wakes(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// See [`set_msg_ring_wakes`].
pub fn msg_ring_wakes() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

thread_local! {
    // `None`: not tried yet on this thread; `Some(None)`: no ring could be made.
    static WAKE_RING: RefCell<Option<Option<iou::IoUring>>> = const { RefCell::new(None) };
}

/// Posts a wake-up into the io_uring whose fd is `target`. False when it was not posted (the
/// caller then writes the eventfd).
pub(crate) fn post_wake(target: RawFd) -> bool {
    if target < 0 || !ENABLED.load(Ordering::Relaxed) {
        return false;
    }
    WAKE_RING
        .try_with(|slot| {
            let Ok(mut slot) = slot.try_borrow_mut() else {
                return false;
            };
            let Some(ring) = slot.get_or_insert_with(|| iou::IoUring::new(4).ok()) else {
                return false;
            };
            // An earlier wake that failed after it was submitted left its CQE here.
            while let Some(cqe) = ring.peek_for_cqe() {
                drop(cqe);
            }
            {
                let mut sq = ring.sq();
                let Some(mut sqe) = sq.prepare_sqe() else {
                    return false;
                };
                // SAFETY: a plain SQE of this ring, filled before it is submitted.
                unsafe {
                    let raw = sqe.raw_mut();
                    std::ptr::write_bytes(raw as *mut crate::uring_sys::io_uring_sqe, 0, 1);
                    raw.opcode = IORING_OP_MSG_RING;
                    raw.flags = IOSQE_CQE_SKIP_SUCCESS;
                    raw.fd = target;
                    // addr = IORING_MSG_DATA (0); len: the CQE's res (0); off: its user_data.
                    raw.off_addr2.off = WAKE_USER_DATA;
                }
            }
            match ring.submit_sqes() {
                Ok(1) => {}
                _ => return false,
            }
            // The op runs inline during the submit for a ring like ours (no IOPOLL target):
            // a failure is already in our CQ. A success posts nothing here.
            match ring.peek_for_cqe() {
                None => {
                    POSTED.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Some(cqe) => {
                    if cqe.raw_result() == -libc::EINVAL {
                        // No IORING_OP_MSG_RING in this kernel.
                        ENABLED.store(false, Ordering::Relaxed);
                    }
                    false
                }
            }
        })
        .unwrap_or(false)
}
