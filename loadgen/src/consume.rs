//! The consumers of one executor: one task per queue, each long-polling PULL_MESSAGE with the
//! subscription in the request (no heartbeat, no consumer offsets: loadgen keeps its own), one
//! pull in flight per queue. Every delivered body is attributed and timed (`body`, `track`).
//! Runs on its own glommio executor.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_lite::future;
use ringmq::client::pipelined::{PipelinedClient, PullOutcome, PullRequest};
use ringmq::remoting::response;

use crate::args::Args;
use crate::body;
use crate::produce::unix_ns;
use crate::setup::QueueRef;
use crate::stats::{self, Event, Interval};
use crate::track::Deliveries;

/// How long the broker may hold a pull that finds nothing new.
const PULL_SUSPEND_MS: i64 = 1000;

/// Pause after a pull the broker refused or that got no response.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Pause after a NOT_FOUND that came back without being held (a broker without long polling).
const EMPTY_BACKOFF: Duration = Duration::from_millis(10);

/// Where every queue must be read up to, and by when; published once the producers stop.
#[derive(Debug)]
pub struct Targets {
    /// Indexed like the run's read queues.
    pub offsets: Vec<i64>,
    pub deadline: Instant,
}

/// When consumers stop.
#[derive(Debug, Clone)]
pub enum Stop {
    /// At this instant, wherever they are (consume scenario).
    At(Instant),
    /// Once each queue reaches its target offset or the deadline passes (e2e, flush check).
    Targets(Arc<OnceLock<Targets>>),
}

/// One queue to read: its index among the run's read queues, where it is, where to start.
#[derive(Debug, Clone, Copy)]
pub struct QueueStart {
    pub index: usize,
    pub queue: QueueRef,
    pub offset: i64,
}

/// Everything one consumer executor needs; built on the main thread.
pub struct ConsumerPlan {
    /// Executor id in events (after the producers' ids).
    pub executor: usize,
    /// Count only this run's messages (`None`: every loadgen message, consume scenario).
    pub run_id: Option<u64>,
    pub args: Arc<Args>,
    pub brokers: Vec<String>,
    pub queues: Vec<QueueStart>,
    pub start: Instant,
    pub stop: Stop,
    pub events: Sender<Event>,
}

/// What a consumer executor hands back.
pub struct ConsumerOutcome {
    pub deliveries: Deliveries,
    pub cpu_seconds: f64,
}

struct Shared {
    plan: ConsumerPlan,
    /// One connection per broker: pulls of all its queues share it.
    clients: Vec<PipelinedClient>,
    deliveries: RefCell<Deliveries>,
    stats: Rc<RefCell<Interval>>,
}

/// Runs this executor's consumers until `plan.stop` says so.
pub async fn run(plan: ConsumerPlan) -> ConsumerOutcome {
    let cpu_at_start = stats::thread_cpu_seconds();
    let timeout = plan.args.timeout() + Duration::from_millis(PULL_SUSPEND_MS as u64);
    let clients = plan
        .brokers
        .iter()
        .map(|addr| {
            PipelinedClient::new(addr, timeout)
                .with_serialize_type(plan.args.serialize_type())
                .with_credentials(plan.args.credentials().ok().flatten())
        })
        .collect();
    let finished = Rc::new(Cell::new(false));
    let stats = Rc::new(RefCell::new(Interval::default()));
    glommio::spawn_local(stats::ticker(
        plan.executor,
        plan.start,
        Rc::clone(&stats),
        plan.events.clone(),
        Rc::clone(&finished),
    ))
    .detach();
    let shared = Rc::new(Shared {
        deliveries: RefCell::new(Deliveries::new(plan.run_id)),
        plan,
        clients,
        stats,
    });
    // Everyone starts at the same instant (the executors were spawned one after another).
    glommio::timer::sleep(shared.plan.start.saturating_duration_since(Instant::now())).await;
    let tasks: Vec<_> = (0..shared.plan.queues.len())
        .map(|slot| glommio::spawn_local(puller(Rc::clone(&shared), slot)))
        .collect();
    for task in tasks {
        task.await;
    }
    finished.set(true);
    let plan = &shared.plan;
    stats::flush(plan.executor, plan.start, &shared.stats, &plan.events);
    ConsumerOutcome {
        deliveries: shared.deliveries.take(),
        cpu_seconds: stats::thread_cpu_seconds() - cpu_at_start,
    }
}

/// What the stop rule says before the next pull.
enum Next {
    Stop,
    /// Pull, giving up on the pull at this instant if there is one.
    Pull(Option<Instant>),
}

async fn puller(shared: Rc<Shared>, slot: usize) {
    let QueueStart {
        index,
        queue,
        mut offset,
    } = shared.plan.queues[slot];
    let args = &shared.plan.args;
    let client = &shared.clients[queue.broker];
    loop {
        let deadline = match shared.next(index, offset) {
            Next::Stop => break,
            Next::Pull(deadline) => deadline,
        };
        let request = PullRequest {
            group: &args.group,
            topic: &args.topic,
            queue_id: queue.queue_id,
            offset,
            max_messages: args.pull_batch_messages,
            expression: "*",
            suspend_ms: PULL_SUSPEND_MS,
        };
        let asked = Instant::now();
        let pull = client.pull(&request);
        let result = match deadline {
            None => Some(pull.await),
            Some(at) => {
                let give_up = async {
                    glommio::timer::sleep(at.saturating_duration_since(asked)).await;
                    None
                };
                future::or(async { Some(pull.await) }, give_up).await
            }
        };
        let Some(result) = result else { break };
        let pause = match result {
            Ok(outcome) => shared.handle(&outcome, &mut offset, asked.elapsed()),
            Err(e) => {
                let mut stats = shared.stats.borrow_mut();
                *stats.pull_client_errors.entry(e.kind()).or_default() += 1;
                Some(ERROR_BACKOFF)
            }
        };
        if let Some(pause) = pause {
            glommio::timer::sleep(pause).await;
        }
    }
}

impl Shared {
    fn next(&self, index: usize, offset: i64) -> Next {
        let now = Instant::now();
        match &self.plan.stop {
            Stop::At(at) if now >= *at => Next::Stop,
            Stop::At(at) => Next::Pull(Some(*at)),
            Stop::Targets(targets) => match targets.get() {
                None => Next::Pull(None),
                Some(t) if offset >= t.offsets[index] || now >= t.deadline => Next::Stop,
                Some(t) => Next::Pull(Some(t.deadline)),
            },
        }
    }

    /// Takes in a pull's answer and moves `offset`; returns how long to pause, if at all.
    fn handle(&self, outcome: &PullOutcome, offset: &mut i64, took: Duration) -> Option<Duration> {
        if outcome.next_begin_offset >= 0 {
            *offset = outcome.next_begin_offset;
        }
        match outcome.code {
            response::SUCCESS => {
                self.deliver(outcome);
                None
            }
            response::PULL_RETRY_IMMEDIATELY => None,
            response::PULL_NOT_FOUND => (took < EMPTY_BACKOFF).then_some(EMPTY_BACKOFF),
            code => {
                let mut stats = self.stats.borrow_mut();
                *stats.pull_errors_by_code.entry(code).or_default() += 1;
                (code != response::PULL_OFFSET_MOVED).then_some(ERROR_BACKOFF)
            }
        }
    }

    fn deliver(&self, outcome: &PullOutcome) {
        let now_ns = unix_ns();
        let mut stats = self.stats.borrow_mut();
        let mut deliveries = self.deliveries.borrow_mut();
        for record in outcome.records() {
            let Ok(record) = record else {
                *stats.pull_client_errors.entry("record").or_default() += 1;
                break;
            };
            let stamp = body::parse(record.body);
            if !deliveries.record(stamp) {
                continue;
            }
            stats.consumed += 1;
            if let Some(stamp) = stamp {
                let e2e = Duration::from_nanos(now_ns.saturating_sub(stamp.sent_unix_ns));
                Interval::record(&mut stats.e2e_latency_us, e2e);
            }
        }
    }
}
