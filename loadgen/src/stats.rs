//! Per-second counters and latency histograms. Each executor fills its own [`Interval`] (no
//! locks on the hot path) and sends it to the main thread once a second as a [`Event::Tick`];
//! the main thread merges them (`report`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Largest latency a histogram tells apart (longer ones are recorded as this): one hour.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low 1, high ≥ 2 × low, 3 digits).
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// What happened on one executor during one second (or its last partial second).
#[derive(Debug, Clone)]
pub struct Interval {
    /// Messages acknowledged with SUCCESS.
    pub sent: u64,
    /// Of `sent`, the messages whose send was issued (open loop: was due) inside the measured
    /// window, whenever their acknowledgement arrived (see `Report::window_sent_messages`).
    pub sent_issued_in_window: u64,
    /// Messages whose send was issued inside the measured window, whatever became of them.
    pub issued_in_window: u64,
    /// Messages whose send failed: any other response code, or no response.
    pub failed: u64,
    /// Failed messages by the broker's response code.
    pub errors_by_code: BTreeMap<i32, u64>,
    /// Failed messages by client-side cause (timeout, connect, closed).
    pub client_errors: BTreeMap<&'static str, u64>,
    /// Send latency of successful requests, µs (from the intended send time in open loop).
    pub send_latency_us: Histogram<u64>,
    /// Messages of this run delivered to consumers (duplicates included).
    pub consumed: u64,
    /// Send time (stamped in the body) to delivery, µs.
    pub e2e_latency_us: Histogram<u64>,
    /// Pulls answered with a code other than SUCCESS / NOT_FOUND / RETRY_IMMEDIATELY.
    pub pull_errors_by_code: BTreeMap<i32, u64>,
    /// Pulls that got no response, by cause.
    pub pull_client_errors: BTreeMap<&'static str, u64>,
}

impl Default for Interval {
    fn default() -> Self {
        Interval {
            sent: 0,
            sent_issued_in_window: 0,
            issued_in_window: 0,
            failed: 0,
            errors_by_code: BTreeMap::new(),
            client_errors: BTreeMap::new(),
            send_latency_us: histogram(),
            consumed: 0,
            e2e_latency_us: histogram(),
            pull_errors_by_code: BTreeMap::new(),
            pull_client_errors: BTreeMap::new(),
        }
    }
}

impl Interval {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Interval) {
        self.sent += other.sent;
        self.sent_issued_in_window += other.sent_issued_in_window;
        self.issued_in_window += other.issued_in_window;
        self.failed += other.failed;
        self.consumed += other.consumed;
        add_counts(&mut self.errors_by_code, &other.errors_by_code);
        add_counts(&mut self.client_errors, &other.client_errors);
        add_counts(&mut self.pull_errors_by_code, &other.pull_errors_by_code);
        add_counts(&mut self.pull_client_errors, &other.pull_client_errors);
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.send_latency_us.add(&other.send_latency_us);
        let _ = self.e2e_latency_us.add(&other.e2e_latency_us);
    }

    /// Records a latency, clamped into the histogram's range.
    pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        histogram.saturating_record(us);
    }
}

fn add_counts<K: Ord + Copy>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(*k).or_default() += v;
    }
}

/// From an executor to the main thread.
#[derive(Debug)]
pub enum Event {
    /// Executor `executor`'s counts for second `index` (1 = the first second after the start).
    /// The last tick of an executor may repeat an index; the main thread adds them up.
    Tick {
        executor: usize,
        index: u64,
        interval: Box<Interval>,
    },
    /// Executor `executor` has stopped and will send nothing more.
    Done { executor: usize },
}

/// The second `at` falls in, counting from `start` (1-based).
pub fn tick_index(start: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(start).as_secs() + 1
}

/// Sends the executor's interval at every whole second after `start` until `finished` is set,
/// then returns (the executor sends its last partial interval itself, with [`flush`]).
pub async fn ticker(
    executor: usize,
    start: Instant,
    current: Rc<RefCell<Interval>>,
    events: Sender<Event>,
    finished: Rc<std::cell::Cell<bool>>,
) {
    let mut index = tick_index(start, Instant::now());
    loop {
        let due = start + Duration::from_secs(index);
        glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
        if finished.get() {
            return;
        }
        let interval = std::mem::take(&mut *current.borrow_mut());
        let _ = events.send(Event::Tick {
            executor,
            index,
            interval: Box::new(interval),
        });
        index += 1;
    }
}

/// Sends what is left in `current` and says this executor is done.
pub fn flush(executor: usize, start: Instant, current: &RefCell<Interval>, events: &Sender<Event>) {
    let interval = std::mem::take(&mut *current.borrow_mut());
    let _ = events.send(Event::Tick {
        executor,
        index: tick_index(start, Instant::now()),
        interval: Box::new(interval),
    });
    let _ = events.send(Event::Done { executor });
}

/// CPU seconds (user + system) the calling thread has used so far.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; RUSAGE_THREAD asks only about
    // the calling thread.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
