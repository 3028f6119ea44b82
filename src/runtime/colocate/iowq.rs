//! Where the calling shard's io_uring worker threads (io-wq) are made, while the shard is
//! restricted to one CPU.
//!
//! io_uring runs what cannot complete at once (the O_DSYNC commitlog writes under
//! SYNC_FLUSH) on worker threads the kernel makes on demand from the submitting thread. Since
//! Linux 6.2 a thread's requested affinity (`sched_setaffinity`, kept as `user_cpus_ptr`) is
//! copied into every thread it makes and intersects every later change of their mask, so a
//! worker made while its shard is restricted to CPU `c` would stay on `c` with both shards,
//! and the disk's waits would queue there. io-wq sets a new worker's mask to the one given
//! with `IORING_REGISTER_IOWQ_AFF`; the scheduler keeps a mask that does not meet the
//! requested one as given (it intersects only when the intersection is not empty). So while
//! the shards share `c`, their workers are made on every other CPU of the shard's own mask:
//! the durable writes run beside the shards, not behind them. Workers made before stay where
//! they were made; io-wq ends an idle one that finds itself outside the mask.
//!
//! The registration is per thread (io-wq belongs to the task, not to a ring), so it is made
//! from the shard's own thread through a throwaway one-entry ring.

use super::Affinity;

/// `IORING_REGISTER_IOWQ_AFF` and `IORING_UNREGISTER_IOWQ_AFF` (Linux 5.14).
const REGISTER_IOWQ_AFF: libc::c_uint = 17;
const UNREGISTER_IOWQ_AFF: libc::c_uint = 18;

/// Makes the calling thread's future io_uring workers on `cpus`; false when the kernel
/// refused (then nothing changed).
pub fn make_workers_on(cpus: &Affinity) -> bool {
    register(
        REGISTER_IOWQ_AFF,
        (&cpus.0 as *const libc::cpu_set_t).cast(),
        std::mem::size_of::<libc::cpu_set_t>(),
    )
}

/// Lets the calling thread's future io_uring workers go wherever the thread's own mask
/// allows again; false when the kernel refused.
pub fn make_workers_anywhere() -> bool {
    register(UNREGISTER_IOWQ_AFF, std::ptr::null(), 0)
}

/// `io_uring_register(opcode, arg, len)` on a one-entry io_uring made for it and closed after;
/// false when the kernel refused either call.
fn register(opcode: libc::c_uint, arg: *const libc::c_void, len: usize) -> bool {
    // struct io_uring_params: 120 bytes, all zero asks for nothing special.
    let mut params = [0u32; 30];
    // SAFETY: `params` is a zeroed io_uring_params of the kernel's size; the kernel writes
    // its offsets into it.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `arg` is null with `len` 0 or points at `len` readable bytes the caller owns
    // for the call; the kernel copies what it reads.
    let done = unsafe { libc::syscall(libc::SYS_io_uring_register, fd, opcode, arg, len) == 0 };
    // SAFETY: closes the descriptor made above.
    unsafe { libc::close(fd as libc::c_int) };
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel takes both calls from a thread that has used io_uring (glommio's rings
    /// are made the same way).
    #[test]
    fn the_kernel_takes_a_worker_mask_and_its_removal() {
        let Some(own) = Affinity::current() else {
            panic!("sched_getaffinity failed");
        };
        assert!(make_workers_on(&own), "IORING_REGISTER_IOWQ_AFF refused");
        assert!(
            make_workers_anywhere(),
            "IORING_UNREGISTER_IOWQ_AFF refused"
        );
    }
}
