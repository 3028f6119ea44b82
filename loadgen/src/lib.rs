//! loadgen: a load generator for RocketMQ 4.x compatible clusters (ringmq or Java RocketMQ),
//! built only on `ringmq::client` (plus the message and protocol codecs the client uses).
//!
//! # Layout
//!
//! | module | owns | runs on |
//! |---|---|---|
//! | [`args`] | the command line and its validation | main thread |
//! | [`setup`] | route lookup (TBW102 fallback) and queue offsets, blocking client | main thread |
//! | [`produce`] | sender tasks: closed or open loop, single or batch sends | producer executors |
//! | [`consume`] | one long-polling puller per queue | consumer executors |
//! | [`churn`] | `loadgen churn`: connection churn and bad input, the server's VmRSS | main thread, plain sockets |
//! | [`null_broker`] | `loadgen null-broker`: answers sends without storing, the CPU floor for `cpu.sh` | one glommio executor, or a thread per connection |
//! | [`timer`] | `loadgen timer`: timers due in one second, delivery lateness, idle CPU, VmRSS | sender threads, plain `client` |
//! | [`body`] | the stamped body (run, sequence, send time) and properties | all |
//! | [`track`] | exactly-once accounting for `--flush-check` | executors, then main |
//! | [`stats`] | per-second counters and hdrhistograms, sent to the main thread | executors |
//! | [`report`] | per-second lines, progress bar, the JSON report | main thread |
//!
//! Producers run on `-x` glommio executors, and consumers on as many more, so a run uses its
//! own threads only; the main thread sets up, merges ticks and prints. Executors share nothing:
//! each owns its connections, counters and sets, and reports over a channel.

pub mod args;
pub mod body;
pub mod churn;
pub mod consume;
pub mod null_broker;
pub mod produce;
pub mod report;
pub mod setup;
pub mod stats;
pub mod timer;
pub mod track;

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use glommio::ExecutorJoinHandle;
use ringmq::client::ClientError;
use ringmq::runtime::{spawn_executor, ExecutorOptions};
use thiserror::Error;

pub use args::{Args, ArgsError, Scenario};
use consume::{ConsumerOutcome, ConsumerPlan, QueueStart, Stop, Targets};
use produce::{ProducerOutcome, ProducerPlan};
use report::Aggregator;
pub use report::Report;
use setup::{End, Topology};
use stats::Event;
use track::{Bits, Deliveries};

/// Why a run could not be done (failed sends are not errors: the report counts them).
#[derive(Debug, Error)]
pub enum LoadgenError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start executor: {0}")]
    Executor(std::io::Error),
    #[error("executor {name} failed: {reason}")]
    Join { name: String, reason: String },
}

/// Pause between spawning the executors and the start of the run, so all start together.
const START_DELAY: Duration = Duration::from_millis(50);

/// How often the main thread redraws the progress bar while waiting for ticks.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Runs one scenario as `args` says, printing a line a second, and returns the report.
pub fn run(args: Args) -> Result<Report, LoadgenError> {
    args.validate()?;
    let args = Arc::new(args);
    let wall_start = Instant::now();
    let main_cpu_start = stats::thread_cpu_seconds();
    let topo = setup::discover(
        &args.namesrv_addrs(),
        &args.topic,
        args.queue_nums,
        args.timeout(),
    )?;
    check_topology(&args, &topo)?;
    let start_offsets = match (topo.exists, args.start_from()) {
        (false, _) => vec![0; topo.read.len()],
        (true, args::StartFrom::Latest) => offsets(&args, &topo, End::Max)?,
        (true, args::StartFrom::Earliest) => offsets(&args, &topo, End::Min)?,
    };
    let mut run = Run::new(Arc::clone(&args), topo, start_offsets);
    let (acked, mut deliveries, mut cpu) = run.load()?;
    if args.scenario == Scenario::Produce && args.flush_check {
        let (drained, drain_cpu) = run.drain()?;
        deliveries.merge(drained);
        cpu += drain_cpu;
    }
    run.agg.finish();
    run.agg.clear_progress();
    let mut report = Report::for_args(&args, run.topo.write.len(), run.topo.read.len());
    report.add_measurements(&run.agg);
    report.duplicates = deliveries.duplicates;
    report.foreign_messages = deliveries.foreign;
    if args.flush_check && args.produces() {
        let (lost, unacknowledged) = deliveries.check(run.run_id, &acked);
        report.lost = Some(lost);
        report.unacknowledged_delivered = Some(unacknowledged);
    }
    let wall = wall_start.elapsed().as_secs_f64();
    report.loadgen_cpu_seconds = cpu + stats::thread_cpu_seconds() - main_cpu_start;
    report.loadgen_cpu_cores = report.loadgen_cpu_seconds / wall;
    let messages = report.sent_messages.max(report.consumed_messages).max(1);
    report.loadgen_cpu_us_per_message = report.loadgen_cpu_seconds * 1e6 / messages as f64;
    report.wall_seconds = wall;
    Ok(report)
}

fn check_topology(args: &Args, topo: &Topology) -> Result<(), LoadgenError> {
    if args.produces() && topo.write.is_empty() {
        return Err(LoadgenError::Setup(format!(
            "topic {} has no writable queue",
            args.topic
        )));
    }
    if args.scenario == Scenario::Consume && !topo.exists {
        return Err(LoadgenError::Setup(format!(
            "topic {} does not exist: nothing to consume",
            args.topic
        )));
    }
    if !args.produces() && topo.read.is_empty() {
        return Err(LoadgenError::Setup(format!(
            "topic {} has no readable queue",
            args.topic
        )));
    }
    Ok(())
}

fn offsets(args: &Args, topo: &Topology, end: End) -> Result<Vec<i64>, LoadgenError> {
    let credentials = args.credentials()?;
    setup::offsets(
        topo,
        &topo.read,
        &args.topic,
        end,
        args.timeout(),
        credentials.as_ref(),
    )
}

/// The state of one run on the main thread.
struct Run {
    args: Arc<Args>,
    topo: Topology,
    start_offsets: Vec<i64>,
    run_id: u64,
    start: Instant,
    end: Instant,
    events: mpsc::Sender<Event>,
    receiver: Receiver<Event>,
    agg: Aggregator,
    /// Executor ids handed out so far.
    next_id: usize,
}

impl Run {
    fn new(args: Arc<Args>, topo: Topology, start_offsets: Vec<i64>) -> Run {
        let (events, receiver) = mpsc::channel();
        let start = Instant::now() + START_DELAY;
        let end = start + Duration::from_secs(args.warmup_seconds + args.duration_seconds);
        let agg = Aggregator::new(&args);
        Run {
            args,
            topo,
            start_offsets,
            run_id: run_id(),
            start,
            end,
            events,
            receiver,
            agg,
            next_id: 0,
        }
    }

    /// The load phase: producers and live consumers until the end (and, for e2e, until the
    /// consumers reach what the producers wrote). Returns the acknowledged sets, the
    /// deliveries and the executors' CPU seconds.
    fn load(&mut self) -> Result<(Vec<Bits>, Deliveries, f64), LoadgenError> {
        let producers = match self.args.produces() {
            true => self.spawn_producers()?,
            false => Vec::new(),
        };
        let producer_ids = 0..producers.len();
        let targets = Arc::new(OnceLock::new());
        let consumers = match self.args.consumes_live() {
            true => {
                let stop = match self.args.scenario {
                    Scenario::Consume => Stop::At(self.end),
                    _ => Stop::Targets(Arc::clone(&targets)),
                };
                self.spawn_consumers(stop, &self.start_offsets.clone())?
            }
            false => Vec::new(),
        };
        let all_ids = 0..self.next_id;
        self.pump(|run| {
            let waiting = targets.get().is_none() && !consumers.is_empty();
            if waiting && run.agg.all_done(producer_ids.clone()) {
                run.publish_targets(&targets)?;
            }
            Ok(run.agg.all_done(all_ids.clone()))
        })?;
        let mut acked = Vec::new();
        let mut cpu = 0.0;
        for handle in producers {
            let outcome: ProducerOutcome = join(handle)?;
            acked.push(outcome.acked);
            cpu += outcome.cpu_seconds;
        }
        let (deliveries, consumer_cpu) = join_consumers(consumers)?;
        Ok((acked, deliveries, cpu + consumer_cpu))
    }

    /// After a produce run with --flush-check: reads every queue from where the run started to
    /// where the producers left it.
    fn drain(&mut self) -> Result<(Deliveries, f64), LoadgenError> {
        let targets = Arc::new(OnceLock::new());
        self.publish_targets(&targets)?;
        let first = self.next_id;
        let consumers =
            self.spawn_consumers(Stop::Targets(targets), &self.start_offsets.clone())?;
        let ids = first..self.next_id;
        self.pump(|run| Ok(run.agg.all_done(ids.clone())))?;
        join_consumers(consumers)
    }

    /// Reads the end of every queue now and lets the consumers stop there.
    fn publish_targets(&self, targets: &OnceLock<Targets>) -> Result<(), LoadgenError> {
        let mut topo = self.topo.clone();
        topo.exists = true;
        let offsets = offsets(&self.args, &topo, End::Max)?;
        let deadline = Instant::now() + Duration::from_secs(self.args.drain_timeout_seconds);
        let _ = targets.set(Targets { offsets, deadline });
        Ok(())
    }

    /// Feeds events to the aggregator until `done` says so.
    fn pump(
        &mut self,
        mut done: impl FnMut(&mut Run) -> Result<bool, LoadgenError>,
    ) -> Result<(), LoadgenError> {
        while !done(self)? {
            match self.receiver.recv_timeout(PROGRESS_INTERVAL) {
                Ok(event) => {
                    self.agg.add(event);
                    while let Ok(event) = self.receiver.try_recv() {
                        self.agg.add(event);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let elapsed = Instant::now().saturating_duration_since(self.start);
            self.agg.progress(elapsed.as_secs_f64());
        }
        Ok(())
    }

    fn options(&self, name: String, index: usize) -> ExecutorOptions {
        let cpus = &self.args.cpus;
        ExecutorOptions {
            name,
            cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
            // Network I/O only: glommio's registered buffers are for file DMA.
            io_memory_bytes: 512 * 1024,
            ring_depth: 512,
            preempt_timer: Duration::from_millis(10),
            // The client keeps the kernel's default policy.
            batch_scheduling: false,
        }
    }

    fn take_id(&mut self) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.agg.register(id);
        id
    }

    fn spawn_producers(
        &mut self,
    ) -> Result<Vec<ExecutorJoinHandle<ProducerOutcome>>, LoadgenError> {
        let executors = self.args.executors;
        let mut handles = Vec::with_capacity(executors);
        for e in 0..executors {
            let id = self.take_id();
            let plan = ProducerPlan {
                executor: e,
                run_id: self.run_id,
                args: Arc::clone(&self.args),
                brokers: self.topo.brokers.clone(),
                queues: rotate(&self.topo.write, e),
                senders: share(self.args.concurrency, executors, e),
                rate_messages_per_second: self
                    .args
                    .rate_messages_per_second
                    .map(|r| r as f64 / executors as f64),
                start: self.start,
                end: self.end,
                events: self.events.clone(),
            };
            debug_assert_eq!(id, e);
            let options = self.options(format!("loadgen-produce-{e}"), id);
            let handle = spawn_executor(&options, move || produce::run(plan))
                .map_err(LoadgenError::Executor)?;
            handles.push(handle);
        }
        Ok(handles)
    }

    fn spawn_consumers(
        &mut self,
        stop: Stop,
        start_offsets: &[i64],
    ) -> Result<Vec<ExecutorJoinHandle<ConsumerOutcome>>, LoadgenError> {
        let executors = self.args.executors.min(self.topo.read.len()).max(1);
        let mut handles = Vec::with_capacity(executors);
        for e in 0..executors {
            let id = self.take_id();
            let queues = (0..self.topo.read.len())
                .filter(|i| i % executors == e)
                .map(|index| QueueStart {
                    index,
                    queue: self.topo.read[index],
                    offset: start_offsets[index],
                })
                .collect();
            let plan = ConsumerPlan {
                executor: id,
                run_id: self.args.produces().then_some(self.run_id),
                args: Arc::clone(&self.args),
                brokers: self.topo.brokers.clone(),
                queues,
                start: self.start,
                stop: stop.clone(),
                events: self.events.clone(),
            };
            let options = self.options(format!("loadgen-consume-{e}"), id);
            let handle = spawn_executor(&options, move || consume::run(plan))
                .map_err(LoadgenError::Executor)?;
            handles.push(handle);
        }
        Ok(handles)
    }
}

/// `total` split over `parts`: part `i`'s share, the remainder going to the first parts.
fn share(total: usize, parts: usize, i: usize) -> usize {
    total / parts + usize::from(i < total % parts)
}

/// The queues rotated so executors start their round-robin at different queues.
fn rotate<T: Clone>(queues: &[T], by: usize) -> Vec<T> {
    let mut out = queues.to_vec();
    if !out.is_empty() {
        let n = by % out.len();
        out.rotate_left(n);
    }
    out
}

fn join<T: Send + 'static>(handle: ExecutorJoinHandle<T>) -> Result<T, LoadgenError> {
    let name = handle.thread().name().unwrap_or("executor").to_string();
    handle.join().map_err(|e| LoadgenError::Join {
        name,
        reason: e.to_string(),
    })
}

fn join_consumers(
    handles: Vec<ExecutorJoinHandle<ConsumerOutcome>>,
) -> Result<(Deliveries, f64), LoadgenError> {
    let mut all: Option<Deliveries> = None;
    let mut cpu = 0.0;
    for handle in handles {
        let outcome = join(handle)?;
        cpu += outcome.cpu_seconds;
        match &mut all {
            Some(d) => d.merge(outcome.deliveries),
            None => all = Some(outcome.deliveries),
        }
    }
    Ok((all.unwrap_or_default(), cpu))
}

/// A run id that differs between runs and processes.
fn run_id() -> u64 {
    let ns = produce::unix_ns();
    let pid = u64::from(std::process::id());
    // splitmix64 of the time and pid.
    let mut z = ns ^ pid.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}
