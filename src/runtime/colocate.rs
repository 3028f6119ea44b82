//! Shards that share one CPU while they are lightly loaded, and spread out again when they
//! are not (off by default: `RINGMQ_COLOCATE_SHARDS=1` turns it on).
//!
//! A record handed to another shard costs two cross-thread wake-ups when both shards sleep
//! between requests, as they do at ordinary load: the owner's, and the reader's for the
//! answer. What a wake-up costs depends on where the sleeper sleeps. On the 2-vCPU VM the
//! project benchmarks on, two threads bouncing an eventfd spend ~40 µs of CPU (almost all
//! system time) per round trip when they sit on different vCPUs and ~5 µs when they share one
//! (README "Co-located shards"): waking another vCPU means an inter-processor interrupt into a
//! halted vCPU and a context switch there, both hypervisor work on this VM. So while the
//! shards of a mesh together need less than one CPU, they are restricted to one CPU (the
//! first one the process may use) and hand each other work with cheap same-CPU switches; as
//! soon as they need more, each gets its own affinity back and the scheduler spreads them.
//!
//! Each shard measures what it asked of the CPU over a window of [`WINDOW`]: the CPU time it
//! used plus the time it waited to run (`/proc/thread-self/schedstat`), so shards queued
//! behind each other on the shared CPU, or behind other processes, count as demand. Shard 0
//! decides for all: together after [`TOGETHER_AFTER`] windows in a row under
//! [`TOGETHER_BELOW`] of one CPU, apart after one window over [`APART_ABOVE`]. A shard whose
//! thread was placed on one CPU already (pinned layouts) is left alone and keeps the others
//! apart.
//!
//! Only a shard's own background task runs this (one timer per window); no request waits on
//! it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::rc::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often each shard measures its demand and applies the decision.
pub const WINDOW: Duration = Duration::from_millis(25);
/// Together when the shards' summed demand stays under this share of one CPU ...
pub const TOGETHER_BELOW: f64 = 0.6;
/// ... for this many windows in a row.
pub const TOGETHER_AFTER: u32 = 4;
/// Apart as soon as the summed demand of one window is over this share of one CPU.
pub const APART_ABOVE: f64 = 0.85;

/// Whether `RINGMQ_COLOCATE_SHARDS=1` asks for co-location.
pub fn enabled_by_env() -> bool {
    std::env::var_os("RINGMQ_COLOCATE_SHARDS").is_some_and(|v| v == "1")
}

/// The state the shards of one mesh share.
pub struct Colocation {
    /// Per shard: nanoseconds of CPU used plus waited for in its last window; `u64::MAX`
    /// when the shard takes no part (pinned, or gone).
    demand: Vec<AtomicU64>,
    /// Whether the shards should share one CPU now.
    together: AtomicBool,
    /// How many shards currently run restricted to the shared CPU.
    restricted: AtomicU64,
}

impl Colocation {
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Colocation {
            demand: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            together: AtomicBool::new(false),
            restricted: AtomicU64::new(0),
        })
    }

    /// Whether the shards are told to share one CPU now.
    pub fn together(&self) -> bool {
        self.together.load(Ordering::Relaxed)
    }

    /// How many shards run restricted to the shared CPU now.
    pub fn restricted(&self) -> u64 {
        self.restricted.load(Ordering::Relaxed)
    }

    /// Starts shard `me`'s part on its own executor; it ends when `alive` can no longer be
    /// upgraded (the shard's mesh is gone), giving the thread its affinity back.
    pub fn start<T: 'static>(self: &Arc<Self>, me: usize, alive: Weak<T>) {
        let Some(own) = Affinity::current() else {
            self.demand[me].store(u64::MAX, Ordering::Relaxed);
            return;
        };
        let Some(shared_cpu) = own.first() else {
            return;
        };
        if own.count() < 2 {
            // Placed on one CPU already: not ours to move.
            self.demand[me].store(u64::MAX, Ordering::Relaxed);
            return;
        }
        let Ok(schedstat) = File::open("/proc/thread-self/schedstat") else {
            self.demand[me].store(u64::MAX, Ordering::Relaxed);
            return;
        };
        let this = Arc::clone(self);
        glommio::spawn_local(async move {
            let mut last = read_schedstat(&schedstat);
            let mut quiet_windows = 0u32;
            let mut restricted = false;
            let restrict = |on: bool, restricted: &mut bool| {
                if on == *restricted {
                    return;
                }
                let applied = if on {
                    Affinity::only(shared_cpu).apply()
                } else {
                    own.apply()
                };
                if applied {
                    *restricted = on;
                    if on {
                        this.restricted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        this.restricted.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            };
            loop {
                glommio::timer::sleep(WINDOW).await;
                if alive.upgrade().is_none() {
                    break;
                }
                let now = read_schedstat(&schedstat);
                let demand = match (last, now) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => u64::MAX,
                };
                last = now;
                this.demand[me].store(demand, Ordering::Relaxed);
                if me == 0 {
                    let demands: Vec<u64> = this
                        .demand
                        .iter()
                        .map(|d| d.load(Ordering::Relaxed))
                        .collect();
                    let share = if demands.contains(&u64::MAX) {
                        f64::INFINITY
                    } else {
                        demands.iter().sum::<u64>() as f64 / WINDOW.as_nanos() as f64
                    };
                    if share > APART_ABOVE {
                        quiet_windows = 0;
                        this.together.store(false, Ordering::Relaxed);
                    } else if share < TOGETHER_BELOW {
                        quiet_windows = quiet_windows.saturating_add(1);
                        if quiet_windows >= TOGETHER_AFTER {
                            this.together.store(true, Ordering::Relaxed);
                        }
                    } else {
                        quiet_windows = 0;
                    }
                }
                restrict(this.together(), &mut restricted);
            }
            restrict(false, &mut restricted);
            this.demand[me].store(u64::MAX, Ordering::Relaxed);
        })
        .detach();
    }
}

/// CPU time plus run-queue wait of the calling thread so far (ns), from its schedstat file.
fn read_schedstat(file: &File) -> Option<u64> {
    let mut buf = [0u8; 128];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let ran = fields.next()??;
    let waited = fields.next()??;
    Some(ran.saturating_add(waited))
}

/// A thread's CPU affinity mask.
#[derive(Clone)]
pub struct Affinity(libc::cpu_set_t);

impl Affinity {
    /// The calling thread's mask.
    pub fn current() -> Option<Self> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the call fills it.
        unsafe {
            let mut set = std::mem::zeroed::<libc::cpu_set_t>();
            (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
                .then_some(Affinity(set))
        }
    }

    /// A mask with `cpu` only.
    pub fn only(cpu: usize) -> Self {
        // SAFETY: as above; CPU_SET writes within the set.
        unsafe {
            let mut set = std::mem::zeroed::<libc::cpu_set_t>();
            libc::CPU_SET(cpu, &mut set);
            Affinity(set)
        }
    }

    /// How many CPUs the mask holds.
    pub fn count(&self) -> usize {
        // SAFETY: reads the set.
        unsafe { libc::CPU_COUNT(&self.0) as usize }
    }

    /// The lowest CPU in the mask.
    pub fn first(&self) -> Option<usize> {
        // SAFETY: reads the set within its size.
        (0..libc::CPU_SETSIZE as usize).find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &self.0) })
    }

    /// Makes this the calling thread's mask; false when the kernel refused.
    pub fn apply(&self) -> bool {
        // SAFETY: passes a valid set of the size given.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::mesh::{builder, ShardMesh};
    use glommio::{LocalExecutorBuilder, Placement};
    use std::time::Instant;

    /// Polls `done` every few milliseconds until it holds or `limit` passed.
    async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > limit {
                return false;
            }
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Two idle shards end up restricted to one CPU, the same one; when one of them keeps
    /// its CPU busy both get their whole affinity back.
    #[test]
    fn idle_shards_share_a_cpu_and_a_busy_one_spreads_them_again() {
        let Some(mask) = Affinity::current() else {
            panic!("sched_getaffinity failed");
        };
        if mask.count() < 2 {
            eprintln!("this machine gives the test one CPU: nothing to co-locate");
            return;
        }
        let limit = Duration::from_secs(20);
        let builder = builder::<u64, u64>(2, 8).colocated();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let builder = builder.clone();
                let whole = mask.count();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(128 * 1024)
                    .spawn(move || async move {
                        let mesh = ShardMesh::join(builder, |_from, x: u64| async move { Some(x) })
                            .await
                            .expect("joined");
                        let colocation = Arc::clone(mesh.colocation().expect("co-location on"));
                        let one_cpu = || Affinity::current().map(|a| a.count()) == Some(1);
                        let together =
                            wait_until(limit, || one_cpu() && colocation.restricted() == 2).await;
                        let cpu = Affinity::current().and_then(|a| a.first());
                        let apart = if mesh.shard() == 1 {
                            // Busy: burn CPU in 2 ms slices until the shards part.
                            let start = Instant::now();
                            loop {
                                if colocation.restricted() == 0
                                    && Affinity::current().map(|a| a.count()) == Some(whole)
                                {
                                    break true;
                                }
                                if start.elapsed() > limit {
                                    break false;
                                }
                                let slice = Instant::now();
                                while slice.elapsed() < Duration::from_millis(2) {
                                    std::hint::spin_loop();
                                }
                                glommio::timer::sleep(Duration::from_micros(1)).await;
                            }
                        } else {
                            wait_until(limit, || {
                                !colocation.together()
                                    && Affinity::current().map(|a| a.count()) == Some(whole)
                            })
                            .await
                        };
                        // Keep serving until the other one saw it too.
                        glommio::timer::sleep(Duration::from_millis(100)).await;
                        (together, cpu, apart)
                    })
                    .expect("executor")
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("shard finished"))
            .collect();
        for (shard, (together, _, apart)) in results.iter().enumerate() {
            assert!(together, "shard {shard} was never restricted to one CPU");
            assert!(
                apart,
                "shard {shard} did not get its affinity back under load"
            );
        }
        assert_eq!(
            results[0].1, results[1].1,
            "the shards went to different CPUs"
        );
        assert_eq!(results[0].1, mask.first());
    }

    #[test]
    fn schedstat_is_read_for_the_calling_thread() {
        let file = File::open("/proc/thread-self/schedstat").expect("schedstat");
        let before = read_schedstat(&file).expect("parsed");
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let after = read_schedstat(&file).expect("parsed");
        assert!(after - before >= 10_000_000, "{before} → {after}");
    }

    /// Process CPU time (user, system) so far.
    fn cpu_times() -> (Duration, Duration) {
        // SAFETY: getrusage fills the struct it is given.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let d = |t: libc::timeval| {
            Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64)
        };
        (d(usage.ru_utime), d(usage.ru_stime))
    }

    /// Two threads bouncing a counter over two eventfds `rounds` times, pinned to `cpus`
    /// (caller, peer); returns (user, system, wall) per round trip.
    fn eventfd_ping_pong(rounds: u32, cpus: (usize, usize)) -> (Duration, Duration, Duration) {
        // SAFETY: plain eventfd calls on descriptors this function owns and closes.
        let (there, back) = unsafe { (libc::eventfd(0, 0), libc::eventfd(0, 0)) };
        assert!(there >= 0 && back >= 0);
        // SAFETY (both): 8-byte reads and writes of a u64, as eventfd wants.
        let take = |fd: i32| unsafe {
            let mut value = 0u64;
            libc::read(fd, &mut value as *mut u64 as *mut libc::c_void, 8);
        };
        let give = |fd: i32| unsafe {
            let value = 1u64;
            libc::write(fd, &value as *const u64 as *const libc::c_void, 8);
        };
        let peer = std::thread::spawn(move || {
            Affinity::only(cpus.1).apply();
            for _ in 0..rounds {
                take(there);
                give(back);
            }
        });
        let me = Affinity::current().expect("mask");
        Affinity::only(cpus.0).apply();
        std::thread::sleep(Duration::from_millis(20));
        let (u0, s0, t0) = {
            let (u, s) = cpu_times();
            (u, s, Instant::now())
        };
        for _ in 0..rounds {
            give(there);
            take(back);
        }
        let wall = t0.elapsed();
        let (u1, s1) = cpu_times();
        me.apply();
        peer.join().expect("peer");
        // SAFETY: closes the descriptors made above.
        unsafe {
            libc::close(there);
            libc::close(back);
        }
        ((u1 - u0) / rounds, (s1 - s0) / rounds, wall / rounds)
    }

    /// Measures, not asserts: what a round trip of two cross-thread wake-ups costs with both
    /// threads on one CPU and on two, alternated. Run alone:
    /// `cargo test --lib runtime::colocate::tests::wake_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run alone"]
    fn wake_cost_same_cpu_against_two_cpus() {
        let mask = Affinity::current().expect("mask");
        let first = mask.first().expect("a CPU");
        let Some(second) = (first + 1..libc::CPU_SETSIZE as usize)
            .find(|&c| unsafe { libc::CPU_ISSET(c, &mask.0) })
        else {
            eprintln!("one CPU only");
            return;
        };
        for round in 0..3 {
            for (name, cpus) in [("same CPU", (first, first)), ("two CPUs", (first, second))] {
                let (user, system, wall) = eventfd_ping_pong(20_000, cpus);
                println!(
                    "round {round} {name}: {:.2} us user + {:.2} us system CPU, {:.2} us wall per round trip",
                    user.as_secs_f64() * 1e6,
                    system.as_secs_f64() * 1e6,
                    wall.as_secs_f64() * 1e6
                );
            }
        }
    }
}
