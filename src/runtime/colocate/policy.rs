//! The decision of shard co-location, pure: fed one [`Window`] of what the shards did and how
//! idle each CPU was, it says where the shards should run ([`Placement`]). No clock, no
//! files: the unit tests feed it synthetic windows.
//!
//! - **Together → apart** as soon as one window shows the shards queueing on their shared CPU
//!   (they ask for more than [`APART_ABOVE`] of it, or a run waited [`WAIT_PER_RUN_MAX`] on
//!   average) **and** the other CPUs have at least [`SPREAD_IDLE_MIN`] of a CPU idle to give.
//!   A busy other CPU (a client on the same machine) is no place to spread to: two shards
//!   competing with the client on both CPUs, waking each other across them (~8x the CPU of a
//!   same-CPU wake-up on a VM), do worse than the pinned one-CPU layout they share now.
//! - **Apart → together** after `together_after` windows in a row that are *light* (the
//!   shards ask for less than [`TOGETHER_BELOW`] of one CPU), or as many in a row that are
//!   *busy* (the CPUs the shards may use have less than [`BUSY_IDLE_MAX`] of a CPU idle in
//!   all: spreading buys no idle CPU, only dearer wake-ups). `together_after` starts at
//!   [`TOGETHER_AFTER`]; a together undone within [`QUICK_UNDO`] windows doubles it, up to
//!   [`TOGETHER_AFTER_MAX`], and a together that lasts [`LASTING`] windows resets it: no
//!   flapping every few windows when the shards turn out to need the other CPU's idle time,
//!   or another process keeps queueing them on the shared CPU.
//!
//! Together goes to the CPU that was idlest over the last windows, so the shards leave a
//! client's CPU to the client.

use crate::config::ShardColocation;

/// Apart when the shards' summed demand in one window (CPU time used plus run-queue wait)
/// is over this share of one CPU ...
pub const APART_ABOVE: f64 = 0.85;
/// ... or their mean run-queue wait per time they were put on a CPU is over this (ns): the
/// shared CPU queues them (p99 latency), whatever their total.
pub const WAIT_PER_RUN_MAX_NS: u64 = 300_000;
/// ... and the other CPUs were idle at least this share of one CPU (smoothed).
pub const SPREAD_IDLE_MIN: f64 = 0.5;
/// A light window: the shards' summed demand under this share of one CPU.
pub const TOGETHER_BELOW: f64 = 0.6;
/// Light (or busy) windows in a row before the shards go together, at first.
pub const TOGETHER_AFTER: u32 = 4;
/// A busy window: the CPUs the shards may use were idle less than this share of one CPU in
/// all.
pub const BUSY_IDLE_MAX: f64 = 0.25;
/// A together undone within this many windows doubles the windows in a row needed next
/// time ...
pub const QUICK_UNDO: u32 = 8;
/// ... up to this many (6.4 s of 25 ms windows).
pub const TOGETHER_AFTER_MAX: u32 = 256;
/// A together that lasts this many windows (1 s) resets the windows needed.
pub const LASTING: u32 = 40;

/// Where the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Each shard thread with the affinity it started with; the kernel places them.
    Apart,
    /// Every shard thread restricted to this CPU.
    Together(usize),
}

impl Placement {
    /// One word for an atomic: 0 apart, `cpu + 1` together.
    pub fn encode(self) -> u64 {
        match self {
            Placement::Apart => 0,
            Placement::Together(cpu) => cpu as u64 + 1,
        }
    }

    /// The inverse of [`Placement::encode`].
    pub fn decode(word: u64) -> Self {
        match word {
            0 => Placement::Apart,
            n => Placement::Together((n - 1) as usize),
        }
    }
}

/// What the shards of a mesh did over one window, summed over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// How long the window was (ns).
    pub span_ns: u64,
    /// CPU time the shards used (ns).
    pub ran_ns: u64,
    /// Time they waited runnable for a CPU (ns).
    pub waited_ns: u64,
    /// How many times they were put on a CPU.
    pub runs: u64,
    /// Whether every shard reported; one that takes no part (pinned, gone, no schedstat)
    /// keeps the shards apart.
    pub complete: bool,
}

impl Window {
    /// CPU time used plus waited for, as a share of one CPU.
    fn demand(&self) -> f64 {
        self.ran_ns.saturating_add(self.waited_ns) as f64 / self.span_ns.max(1) as f64
    }

    /// Mean run-queue wait per time a shard was put on a CPU (ns).
    fn wait_per_run_ns(&self) -> u64 {
        self.waited_ns / self.runs.max(1)
    }
}

/// The decision's state (shard 0 keeps it).
#[derive(Debug)]
pub struct Policy {
    mode: ShardColocation,
    /// The CPUs the shards may use, in the order the idle shares come in.
    cpus: Vec<usize>,
    placement: Placement,
    /// Windows since the placement last changed.
    held: u32,
    /// Light windows in a row (while apart).
    light_run: u32,
    /// Busy windows in a row (while apart).
    busy_run: u32,
    /// Light or busy windows in a row needed to go together.
    together_after: u32,
}

impl Policy {
    /// Starts apart, deciding for shards that may use `cpus` (at least two).
    pub fn new(mode: ShardColocation, cpus: Vec<usize>) -> Self {
        assert!(cpus.len() >= 2, "co-location needs two CPUs to choose from");
        Policy {
            mode,
            cpus,
            placement: Placement::Apart,
            held: 0,
            light_run: 0,
            busy_run: 0,
            together_after: TOGETHER_AFTER,
        }
    }

    /// The current decision.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Takes one window and the smoothed idle share of each CPU (0.0..=1.0, in the order of
    /// the CPUs given to [`Policy::new`]; unknown idle is best given as 1.0, which makes the
    /// policy spread on demand alone and never count a window busy); returns the placement.
    pub fn step(&mut self, window: &Window, idle: &[f64]) -> Placement {
        assert_eq!(idle.len(), self.cpus.len(), "one idle share per CPU");
        self.held = self.held.saturating_add(1);
        let next = match (self.mode, window.complete) {
            (ShardColocation::Off, _) | (_, false) => Placement::Apart,
            (ShardColocation::Always, true) => match self.placement {
                Placement::Apart => Placement::Together(self.idlest(idle)),
                together => together,
            },
            (ShardColocation::Auto, true) => self.auto(window, idle),
        };
        if next != self.placement {
            self.change(next);
        }
        self.placement
    }

    fn auto(&mut self, window: &Window, idle: &[f64]) -> Placement {
        match self.placement {
            Placement::Together(cpu) => {
                if self.held >= LASTING {
                    self.together_after = TOGETHER_AFTER;
                }
                let elsewhere: f64 = self
                    .cpus
                    .iter()
                    .zip(idle)
                    .filter(|(c, _)| **c != cpu)
                    .map(|(_, i)| i)
                    .sum();
                let queued =
                    window.demand() > APART_ABOVE || window.wait_per_run_ns() > WAIT_PER_RUN_MAX_NS;
                if queued && elsewhere >= SPREAD_IDLE_MIN {
                    Placement::Apart
                } else {
                    self.placement
                }
            }
            Placement::Apart => {
                let light = window.demand() < TOGETHER_BELOW;
                let busy = idle.iter().sum::<f64>() < BUSY_IDLE_MAX;
                self.light_run = if light { self.light_run + 1 } else { 0 };
                self.busy_run = if busy { self.busy_run + 1 } else { 0 };
                if self.light_run.max(self.busy_run) >= self.together_after {
                    Placement::Together(self.idlest(idle))
                } else {
                    Placement::Apart
                }
            }
        }
    }

    fn change(&mut self, next: Placement) {
        if next == Placement::Apart && self.held < QUICK_UNDO {
            self.together_after = (self.together_after * 2).min(TOGETHER_AFTER_MAX);
        }
        self.placement = next;
        self.held = 0;
        self.light_run = 0;
        self.busy_run = 0;
    }

    /// The CPU with the largest idle share (the lowest of equals).
    fn idlest(&self, idle: &[f64]) -> usize {
        let mut best = (self.cpus[0], idle[0]);
        for (&cpu, &share) in self.cpus.iter().zip(idle).skip(1) {
            if share > best.1 {
                best = (cpu, share);
            }
        }
        best.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: u64 = 25_000_000;

    /// A complete window in which the shards used `ran` and waited `waited` of one CPU,
    /// scheduled `runs` times.
    fn window(ran: f64, waited: f64, runs: u64) -> Window {
        Window {
            span_ns: SPAN,
            ran_ns: (ran * SPAN as f64) as u64,
            waited_ns: (waited * SPAN as f64) as u64,
            runs,
            complete: true,
        }
    }

    fn auto() -> Policy {
        Policy::new(ShardColocation::Auto, vec![0, 1])
    }

    /// Feeds `n` copies of one window; returns the placement after each.
    fn feed(policy: &mut Policy, n: u32, w: Window, idle: &[f64]) -> Vec<Placement> {
        (0..n).map(|_| policy.step(&w, idle)).collect()
    }

    const LIGHT: f64 = 0.3;
    const BOTH_IDLE: [f64; 2] = [0.8, 0.8];

    #[test]
    fn light_windows_bring_the_shards_together_after_four_in_a_row() {
        let mut p = auto();
        let light = window(LIGHT, 0.01, 500);
        let got = feed(&mut p, TOGETHER_AFTER - 1, light, &BOTH_IDLE);
        assert!(got.iter().all(|&pl| pl == Placement::Apart), "{got:?}");
        // A heavier window in between starts the count again.
        p.step(&window(0.7, 0.0, 500), &BOTH_IDLE);
        let got = feed(&mut p, TOGETHER_AFTER - 1, light, &BOTH_IDLE);
        assert!(got.iter().all(|&pl| pl == Placement::Apart), "{got:?}");
        assert_eq!(p.step(&light, &BOTH_IDLE), Placement::Together(0));
    }

    #[test]
    fn together_goes_to_the_idlest_cpu() {
        let mut p = Policy::new(ShardColocation::Auto, vec![2, 5, 7]);
        let got = feed(
            &mut p,
            TOGETHER_AFTER,
            window(LIGHT, 0.0, 100),
            &[0.2, 0.9, 0.4],
        );
        assert_eq!(got.last(), Some(&Placement::Together(5)));
    }

    /// Together, then one window that asks for more than the shared CPU.
    fn together_then_demand(idle_other: f64) -> Placement {
        let mut p = auto();
        feed(&mut p, TOGETHER_AFTER, window(LIGHT, 0.0, 100), &BOTH_IDLE);
        assert_eq!(p.placement(), Placement::Together(0));
        p.step(&window(0.8, 0.3, 1_000), &[0.0, idle_other])
    }

    #[test]
    fn demand_spreads_the_shards_when_another_cpu_is_idle() {
        assert_eq!(together_then_demand(0.9), Placement::Apart);
    }

    #[test]
    fn demand_keeps_them_together_when_the_other_cpu_is_busy_with_a_client() {
        assert_eq!(together_then_demand(0.1), Placement::Together(0));
    }

    #[test]
    fn a_long_run_queue_wait_spreads_them_even_at_low_demand() {
        let mut p = auto();
        feed(&mut p, TOGETHER_AFTER, window(LIGHT, 0.0, 100), &BOTH_IDLE);
        // 0.3 of a CPU used, 0.1 waited (2.5 ms) over 5 runs: 0.5 ms per run.
        let queued = window(0.3, 0.1, 5);
        assert_eq!(p.step(&queued, &[0.0, 0.2]), Placement::Together(0));
        assert_eq!(p.step(&queued, &[0.0, 0.7]), Placement::Apart);
        // The same wait spread over many short runs is not queueing.
        let mut p = auto();
        feed(&mut p, TOGETHER_AFTER, window(LIGHT, 0.0, 100), &BOTH_IDLE);
        assert_eq!(
            p.step(&window(0.3, 0.1, 5_000), &[0.0, 0.7]),
            Placement::Together(0)
        );
    }

    #[test]
    fn a_saturated_machine_brings_busy_shards_together() {
        let mut p = auto();
        let heavy = window(1.1, 0.4, 5_000);
        let busy = [0.05, 0.1];
        let got = feed(&mut p, TOGETHER_AFTER, heavy, &busy);
        assert_eq!(got[..3], [Placement::Apart; 3]);
        // The client keeps the other CPU busy: they stay together, however heavy.
        assert_eq!(got[3], Placement::Together(1));
        let got = feed(&mut p, 100, window(1.0, 1.0, 5_000), &[0.0, 0.05]);
        assert!(got.iter().all(|&pl| pl == Placement::Together(1)));
    }

    #[test]
    fn a_together_undone_at_once_waits_twice_as_long_next_time() {
        let mut p = auto();
        let heavy = window(1.2, 0.5, 5_000);
        let busy = [0.05, 0.05];
        let mut needed = Vec::new();
        for _ in 0..8 {
            let mut n = 0;
            while p.step(&heavy, &busy) == Placement::Apart {
                n += 1;
                assert!(n <= TOGETHER_AFTER_MAX, "never together");
            }
            needed.push(n + 1);
            // Together, the other CPU turns out idle: apart again at once.
            assert_eq!(p.step(&heavy, &[0.0, 0.9]), Placement::Apart);
        }
        assert_eq!(needed, [4, 8, 16, 32, 64, 128, 256, 256]);
        // Light windows wait as long, and a light together undone at once doubles too.
        let light = window(LIGHT, 0.0, 100);
        let got = feed(&mut p, 256, light, &BOTH_IDLE);
        assert_eq!(got[254], Placement::Apart);
        assert_eq!(got[255], Placement::Together(0));
    }

    #[test]
    fn a_together_that_lasts_resets_the_wait() {
        let mut p = auto();
        let heavy = window(1.2, 0.5, 5_000);
        let busy = [0.05, 0.05];
        feed(&mut p, TOGETHER_AFTER, heavy, &busy);
        p.step(&heavy, &[0.0, 0.9]);
        let got = feed(&mut p, 2 * TOGETHER_AFTER, heavy, &busy);
        assert_eq!(got.last(), Some(&Placement::Together(0)), "{got:?}");
        assert_eq!(got[2 * TOGETHER_AFTER as usize - 2], Placement::Apart);
        feed(&mut p, LASTING, heavy, &[0.0, 0.0]);
        assert_eq!(p.step(&heavy, &[0.0, 0.9]), Placement::Apart);
        let got = feed(&mut p, TOGETHER_AFTER, window(LIGHT, 0.0, 100), &BOTH_IDLE);
        assert_eq!(got.last(), Some(&Placement::Together(0)), "{got:?}");
    }

    #[test]
    fn heavy_shards_on_an_idle_machine_stay_apart() {
        let mut p = auto();
        let got = feed(&mut p, 1_000, window(1.4, 0.1, 5_000), &[0.3, 0.3]);
        assert!(got.iter().all(|&pl| pl == Placement::Apart));
    }

    #[test]
    fn a_shard_that_takes_no_part_keeps_them_apart() {
        for mode in [ShardColocation::Auto, ShardColocation::Always] {
            let mut p = Policy::new(mode, vec![0, 1]);
            feed(&mut p, TOGETHER_AFTER, window(LIGHT, 0.0, 100), &BOTH_IDLE);
            assert_eq!(p.placement(), Placement::Together(0), "{mode:?}");
            let incomplete = Window {
                complete: false,
                ..window(LIGHT, 0.0, 100)
            };
            assert_eq!(
                p.step(&incomplete, &BOTH_IDLE),
                Placement::Apart,
                "{mode:?}"
            );
        }
    }

    #[test]
    fn always_is_together_whatever_the_load_and_off_never() {
        let mut p = Policy::new(ShardColocation::Always, vec![0, 1]);
        assert_eq!(
            p.step(&window(1.9, 1.0, 10), &[0.1, 0.9]),
            Placement::Together(1)
        );
        let got = feed(&mut p, 50, window(2.0, 1.0, 10), &[0.0, 1.0]);
        assert!(got.iter().all(|&pl| pl == Placement::Together(1)));
        let mut p = Policy::new(ShardColocation::Off, vec![0, 1]);
        let got = feed(&mut p, 50, window(0.01, 0.0, 10), &BOTH_IDLE);
        assert!(got.iter().all(|&pl| pl == Placement::Apart));
    }

    #[test]
    fn placements_survive_the_atomic_word() {
        for pl in [
            Placement::Apart,
            Placement::Together(0),
            Placement::Together(63),
        ] {
            assert_eq!(Placement::decode(pl.encode()), pl);
        }
    }
}
