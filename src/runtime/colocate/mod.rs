//! Shards that share one CPU or run apart, whichever the load does better with (broker key
//! `shardColocation`: `auto`, the default, `off` or `always`; README "Co-located shards").
//!
//! A record handed to another shard costs two cross-thread wake-ups when both shards sleep
//! between requests, as they do at ordinary load: the owner's, and the reader's for the
//! answer. What a wake-up costs depends on where the sleeper sleeps. On the 2-vCPU VM the
//! project benchmarks on, two threads bouncing an eventfd spend ~40 µs of CPU (almost all
//! system time) per round trip when they sit on different vCPUs and ~5 µs when they share one
//! (README "Co-located shards"): waking another vCPU means an inter-processor interrupt into a
//! halted vCPU and a context switch there, both hypervisor work on this VM. Whether that
//! saving beats a second CPU's cycles depends on the load (a latency-bound client gains, a
//! CPU-bound closed loop loses), so `auto` measures: each shard counts the messages it puts
//! ([`count_puts`], a thread-local add per stored send) and, per window of [`WINDOW`], reads
//! the CPU time it used (`/proc/thread-self/schedstat`); shard 0 sums them and decides for
//! all ([`policy::Policy`], pure and unit-tested: light shards go together, together shards
//! that fill their CPU go apart, and in between it now and then tries the other placement,
//! keeping the one with more messages per second, or at the same rate less CPU per message);
//! every shard applies the decision at its next window. Together goes to the
//! idlest CPU (`/proc/stat`, [`probe::CpuIdle`]). A shard whose thread was placed on one CPU
//! already (pinned layouts) is left alone and keeps the others apart.
//!
//! Only a shard's own background task runs this (one timer per shard per window); no request
//! waits on it.

pub mod iowq;
pub mod policy;
pub mod probe;

use std::cell::Cell;
use std::rc::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ShardColocation;
use policy::{Placement, Policy, Window};
use probe::{CpuIdle, SchedStat, ThreadClock};

/// How often each shard measures itself and applies the decision.
pub const WINDOW: Duration = Duration::from_millis(25);

/// Where shard 0 learns how idle the CPUs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleSource {
    /// `/proc/stat`.
    ProcStat,
    /// Every CPU taken as idle (the policy then spreads on demand alone): for tests that
    /// must not depend on what else the machine runs.
    AssumeIdle,
}

thread_local! {
    /// Messages the calling shard put so far ([`count_puts`]); its window sampler reads it.
    static PUTS: Cell<u64> = const { Cell::new(0) };
}

/// Counts `messages` stored by a send the calling shard took (one thread-local add; called
/// once per stored send by the broker's stats, whatever the shard's co-location mode).
#[inline]
pub fn count_puts(messages: usize) {
    PUTS.with(|p| p.set(p.get().wrapping_add(messages as u64)));
}

/// Messages the calling shard put so far.
fn puts_so_far() -> u64 {
    PUTS.with(Cell::get)
}

/// One shard's last window, as it published it.
struct Published {
    ran_ns: AtomicU64,
    puts: AtomicU64,
}

/// Marks a shard that takes no part (pinned, gone, no schedstat).
const ABSENT: u64 = u64::MAX;

/// The state the shards of one mesh share.
pub struct Colocation {
    mode: ShardColocation,
    idle_source: IdleSource,
    /// Per shard: its last window; `ran_ns` is [`ABSENT`] when it takes no part.
    windows: Vec<Published>,
    /// The decision ([`Placement::encode`]), written by shard 0.
    placement: AtomicU64,
}

impl Colocation {
    /// Shared state for `shards` shards in `mode` (not `off`: then make none).
    pub fn new(shards: usize, mode: ShardColocation, idle_source: IdleSource) -> Arc<Self> {
        assert_ne!(mode, ShardColocation::Off, "off means no co-location state");
        Arc::new(Colocation {
            mode,
            idle_source,
            windows: (0..shards)
                .map(|_| Published {
                    ran_ns: AtomicU64::new(0),
                    puts: AtomicU64::new(0),
                })
                .collect(),
            placement: AtomicU64::new(Placement::Apart.encode()),
        })
    }

    /// Where the shards are told to run now.
    pub fn placement(&self) -> Placement {
        Placement::decode(self.placement.load(Ordering::Relaxed))
    }

    /// Publishes shard `me`'s last window: its CPU time and the messages it put (`None`:
    /// it takes no part).
    fn publish(&self, me: usize, window: Option<(SchedStat, u64)>) {
        let w = &self.windows[me];
        match window {
            Some((s, puts)) => {
                w.puts.store(puts, Ordering::Relaxed);
                w.ran_ns.store(s.ran_ns, Ordering::Relaxed);
            }
            None => w.ran_ns.store(ABSENT, Ordering::Relaxed),
        }
    }

    /// The shards' last windows summed, over `span_ns`.
    fn summed(&self, span_ns: u64) -> Window {
        let mut sum = Window {
            span_ns,
            ran_ns: 0,
            puts: 0,
            complete: true,
        };
        for w in &self.windows {
            let ran = w.ran_ns.load(Ordering::Relaxed);
            if ran == ABSENT {
                sum.complete = false;
                continue;
            }
            sum.ran_ns = sum.ran_ns.saturating_add(ran);
            sum.puts = sum.puts.saturating_add(w.puts.load(Ordering::Relaxed));
        }
        sum
    }

    /// Starts shard `me`'s part on its own executor; it ends when `alive` can no longer be
    /// upgraded (the shard's mesh is gone), giving the thread its affinity back.
    pub fn start<T: 'static>(self: &Arc<Self>, me: usize, alive: Weak<T>) {
        let own = Affinity::current().filter(|a| a.count() >= 2);
        let clock = ThreadClock::open();
        let (Some(own), Some(clock)) = (own, clock) else {
            // Placed on one CPU already (not ours to move), or nothing to measure with.
            self.publish(me, None);
            return;
        };
        let mut decider = (me == 0).then(|| {
            let cpus = own.cpus();
            let idle = match self.idle_source {
                IdleSource::ProcStat => CpuIdle::open(&cpus),
                IdleSource::AssumeIdle => None,
            };
            (Policy::new(self.mode, cpus), idle)
        });
        let this = Arc::clone(self);
        glommio::spawn_local(async move {
            let mut last = clock.read();
            let mut last_puts = puts_so_far();
            let mut last_at = Instant::now();
            let mut on: Option<usize> = None;
            loop {
                glommio::timer::sleep(WINDOW).await;
                if alive.upgrade().is_none() {
                    break;
                }
                let now = clock.read();
                let puts = puts_so_far();
                let put = puts.wrapping_sub(last_puts);
                this.publish(me, now.zip(last).map(|(b, a)| (b.since(a), put)));
                last = now;
                last_puts = puts;
                if let Some((policy, idle)) = &mut decider {
                    let at = Instant::now();
                    let span_ns = at.duration_since(last_at).as_nanos() as u64;
                    last_at = at;
                    let window = this.summed(span_ns);
                    let shares = match idle.as_mut().and_then(CpuIdle::sample) {
                        Some(shares) => shares,
                        None => vec![1.0; own.count()],
                    };
                    let before = policy.placement();
                    let placement = policy.step(&window, &shares);
                    if placement != before {
                        tracing::debug!(
                            ?before,
                            ?placement,
                            trial = policy.trying(),
                            trials = policy.trials(),
                            trial_every = policy.trial_every(),
                            verdict = ?policy.verdict(),
                            ?window,
                            ?shares,
                            "shard co-location changed"
                        );
                    }
                    this.placement.store(placement.encode(), Ordering::Relaxed);
                }
                let want = match this.placement() {
                    Placement::Together(cpu) => Some(cpu),
                    Placement::Apart => None,
                };
                restrict(want, &mut on, &own);
            }
            restrict(None, &mut on, &own);
            this.publish(me, None);
        })
        .detach();
    }
}

/// Restricts the calling thread to `want` (`None`: its own affinity `own`), tracking where it
/// is in `on`. While restricted, the io_uring workers it makes go to the other CPUs of `own`
/// ([`iowq`]).
fn restrict(want: Option<usize>, on: &mut Option<usize>, own: &Affinity) {
    if want == *on {
        return;
    }
    let applied = match want {
        Some(cpu) => Affinity::only(cpu).apply(),
        None => own.apply(),
    };
    if !applied {
        return;
    }
    let workers_placed = match want {
        Some(cpu) => iowq::make_workers_on(&own.without(cpu)),
        None => iowq::make_workers_anywhere(),
    };
    if !workers_placed {
        tracing::debug!(?want, "the kernel refused where io_uring workers are made");
    }
    *on = want;
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

    /// This mask less `cpu`.
    pub fn without(&self, cpu: usize) -> Self {
        let mut less = self.clone();
        // SAFETY: CPU_CLR writes within the set.
        unsafe { libc::CPU_CLR(cpu, &mut less.0) };
        less
    }

    /// How many CPUs the mask holds.
    pub fn count(&self) -> usize {
        // SAFETY: reads the set.
        unsafe { libc::CPU_COUNT(&self.0) as usize }
    }

    /// The CPUs in the mask, lowest first.
    pub fn cpus(&self) -> Vec<usize> {
        // SAFETY: reads the set within its size.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &self.0) })
            .collect()
    }

    /// The lowest CPU in the mask.
    pub fn first(&self) -> Option<usize> {
        self.cpus().first().copied()
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

    /// Two shards putting messages at a steady, light rate (they hardly use the CPU) go
    /// together on one CPU, the same one, within a few seconds (the first move may come 1 s
    /// after the start).
    #[test]
    fn a_steady_light_load_puts_both_shards_on_one_cpu() {
        let Some(mask) = Affinity::current() else {
            panic!("sched_getaffinity failed");
        };
        if mask.count() < 2 {
            eprintln!("this machine gives the test one CPU: nothing to co-locate");
            return;
        }
        let limit = Duration::from_secs(20);
        // Idle assumed: which CPU is idlest does not matter here.
        let builder = builder::<u64, u64>(2, 8)
            .with_colocation(ShardColocation::Auto, IdleSource::AssumeIdle);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let builder = builder.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(128 * 1024)
                    .spawn(move || async move {
                        let mesh = ShardMesh::join(builder, |_from, x: u64| async move { Some(x) })
                            .await
                            .expect("joined");
                        let colocation = Arc::clone(mesh.colocation().expect("co-location on"));
                        let on_shared = || match colocation.placement() {
                            policy::Placement::Together(cpu) => Affinity::current()
                                .is_some_and(|a| a.count() == 1 && a.first() == Some(cpu)),
                            policy::Placement::Apart => false,
                        };
                        // A steady load: 20 messages a millisecond.
                        let start = Instant::now();
                        let mut cpu = None;
                        while start.elapsed() < limit {
                            count_puts(20);
                            if on_shared() {
                                cpu = Affinity::current().and_then(|a| a.first());
                                break;
                            }
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                        // Keep the load on until the other one saw it too.
                        let until = Instant::now() + Duration::from_millis(100);
                        while Instant::now() < until {
                            count_puts(20);
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                        cpu
                    })
                    .expect("executor")
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("shard finished"))
            .collect();
        for (shard, cpu) in results.iter().enumerate() {
            assert!(
                cpu.is_some(),
                "shard {shard} was never restricted to one CPU"
            );
        }
        assert_eq!(results[0], results[1], "the shards went to different CPUs");
        let cpu = results[0].expect("a CPU");
        assert!(mask.cpus().contains(&cpu), "CPU {cpu} is not the process's");
    }

    /// The CPU masks (`Cpus_allowed_list`) of the io_uring workers the thread `tid` made.
    fn io_workers_of(tid: i32) -> Vec<String> {
        let name = format!("iou-wrk-{tid}");
        let mut masks = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let path = task.expect("a task").path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
            let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
            if let Some(mask) = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            {
                masks.push(mask.trim().to_string());
            }
        }
        masks
    }

    /// A shard restricted to one CPU makes its io_uring workers on its other CPUs: an
    /// fdatasync (which io_uring always hands to a worker) issued while restricted runs on a
    /// worker whose mask is not the shard's one CPU. Without [`iowq`] the worker inherits the
    /// shard's requested mask (Linux 6.2 and later) and this fails.
    #[test]
    fn io_workers_made_while_restricted_stay_off_the_shared_cpu() {
        let own = Affinity::current().expect("sched_getaffinity");
        if own.count() < 2 {
            eprintln!("this machine gives the test one CPU: nothing to keep off");
            return;
        }
        let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
        let path = dir.path().join("synced");
        let masks = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let shared = own.first().expect("a CPU");
                let mut on = None;
                restrict(Some(shared), &mut on, &own);
                assert_eq!(on, Some(shared), "the thread was not restricted");
                let file = glommio::io::BufferedFile::create(&path)
                    .await
                    .expect("create");
                file.write_at(vec![7u8; 4096], 0).await.expect("write");
                file.fdatasync().await.expect("fdatasync");
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let masks = io_workers_of(tid);
                file.close().await.expect("close");
                restrict(None, &mut on, &own);
                (shared, masks)
            })
            .expect("executor")
            .join()
            .expect("executor ran");
        let (shared, masks) = masks;
        assert!(!masks.is_empty(), "the fdatasync made no io_uring worker");
        for mask in &masks {
            assert_ne!(
                mask,
                &shared.to_string(),
                "an io_uring worker is confined to the shard's shared CPU {shared}: {masks:?}"
            );
        }
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
