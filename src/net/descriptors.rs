//! The process's descriptor table, grown before connections come instead of while they do.
//!
//! The kernel grows a process's descriptor table by doubling when a descriptor past its end is
//! allocated, and in a multi-threaded process each growth waits out an RCU grace period
//! (`expand_files` → `synchronize_rcu`) while every other thread that allocates or closes a
//! descriptor waits for it. Measured on the broker (bpftrace, `sched_switch` off-CPU stacks)
//! while 2,200 connections opened: both shards blocked in `accept` for 7.5–12 ms at a time,
//! once per doubling from 64 to 4,096 descriptors: the "unexplained ~10 ms stalls" of the
//! bad-input attack (README "Connections and memory"). A table never shrinks, so growing it
//! once at start to what the listeners may accept removes them for good.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use crate::limits::DESCRIPTOR_TABLE_SPARE;

/// Descriptors reserved so far: the spare plus every listener's connection limit.
static RESERVED: Mutex<usize> = Mutex::new(DESCRIPTOR_TABLE_SPARE);

/// Adds a listener's `connections` to what the process reserves and grows its descriptor table
/// to hold them all, as far as the soft `RLIMIT_NOFILE` allows (no more can be open anyway).
/// Returns the number of descriptors the table now holds at least.
pub fn reserve(connections: usize) -> io::Result<usize> {
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    *reserved = reserved.saturating_add(connections);
    let slots = (*reserved).min(open_files_limit()?);
    grow_to(slots)?;
    Ok(slots)
}

/// The soft `RLIMIT_NOFILE`: descriptors numbered below it can be allocated.
fn open_files_limit() -> io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Makes the table hold at least `slots` descriptors: a descriptor numbered `slots - 1` (or
/// the lowest free one above it) is allocated and closed again.
fn grow_to(slots: usize) -> io::Result<()> {
    let Some(highest) = slots.checked_sub(1) else {
        return Ok(());
    };
    let highest = libc::c_int::try_from(highest).unwrap_or(libc::c_int::MAX);
    let probe = std::fs::File::open("/dev/null")?;
    // SAFETY: duplicates a descriptor this function owns onto the lowest free number at or
    // above `highest`; the duplicate is owned (and closed) right below.
    let dup = unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest) };
    if dup < 0 {
        let error = io::Error::last_os_error();
        // Every number from `highest` to the limit in use: the table holds them already.
        return match error.raw_os_error() {
            Some(libc::EMFILE) => Ok(()),
            _ => Err(error),
        };
    }
    // SAFETY: `dup` was just returned by fcntl and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(dup) });
    Ok(())
}

/// The descriptor slots the kernel has allocated for `pid`'s table (`FDSize` in its status).
pub fn table_slots(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_what_was_reserved_before_any_descriptor_is_opened() {
        let limit = open_files_limit().unwrap();
        let slots = reserve(3_000).unwrap();
        assert!(slots >= (3_000 + DESCRIPTOR_TABLE_SPARE).min(limit));
        assert!(slots <= limit);
        let table = table_slots(std::process::id()).unwrap();
        assert!(table >= slots, "FDSize {table} < {slots}");
        // Reserving more keeps adding up (to the limit), as listeners start one by one.
        let more = reserve(3_000).unwrap();
        assert!(more >= slots && more >= (6_000 + DESCRIPTOR_TABLE_SPARE).min(limit));
        assert!(table_slots(std::process::id()).unwrap() >= more);
    }
}
