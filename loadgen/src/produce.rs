//! The producers of one executor: `-w / -x` sender tasks sharing `-c` pipelined connections to
//! each broker, each looping claim → (open loop: wait for the intended time) → send → record.
//! Queues are taken round-robin, as the Java producer does. Runs on its own glommio executor.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use ringmq::client::pipelined::{CallError, PipelinedClient, SendOutcome};
use ringmq::message::batch::{self, BatchElement};
use ringmq::protocol::send::SendRequest;
use ringmq::remoting::response;

use crate::args::Args;
use crate::body::{self, BodyMaker};
use crate::setup::QueueRef;
use crate::stats::{self, Event, Interval};
use crate::track::Bits;

/// Pause after a send that could not reach the broker, so a dead broker is not spun on.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Everything one producer executor needs; built on the main thread.
pub struct ProducerPlan {
    pub executor: usize,
    pub run_id: u64,
    pub args: Arc<Args>,
    pub brokers: Vec<String>,
    pub queues: Vec<QueueRef>,
    /// Sender tasks on this executor.
    pub senders: usize,
    /// Open loop: this executor's share of `--rate`.
    pub rate_messages_per_second: Option<f64>,
    pub start: Instant,
    pub end: Instant,
    pub events: Sender<Event>,
}

/// What a producer executor hands back.
pub struct ProducerOutcome {
    /// Local numbers of the messages acknowledged with SUCCESS (kept only with --flush-check).
    pub acked: Bits,
    pub cpu_seconds: f64,
}

/// State the sender tasks of one executor share.
struct Shared {
    plan: ProducerPlan,
    /// `clients[broker][connection]`.
    clients: Vec<Vec<PipelinedClient>>,
    maker: BodyMaker,
    next_request: Cell<u64>,
    next_queue: Cell<usize>,
    acked: RefCell<Bits>,
    stats: Rc<RefCell<Interval>>,
}

/// Runs this executor's producers until `plan.end`, then waits for the requests in flight.
pub async fn run(plan: ProducerPlan) -> ProducerOutcome {
    let cpu_at_start = stats::thread_cpu_seconds();
    let args = &plan.args;
    let serialize = args.serialize_type();
    let clients = plan
        .brokers
        .iter()
        .map(|addr| {
            (0..args.connections)
                .map(|_| {
                    PipelinedClient::new(addr, args.timeout())
                        .with_serialize_type(serialize)
                        .with_credentials(args.credentials().ok().flatten())
                })
                .collect()
        })
        .collect();
    let maker = BodyMaker::new(
        plan.run_id,
        plan.executor,
        args.size_bytes,
        args.keys,
        args.tags,
    );
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
        plan,
        clients,
        maker,
        next_request: Cell::new(0),
        next_queue: Cell::new(0),
        acked: RefCell::new(Bits::default()),
        stats,
    });
    // Everyone starts at the same instant (the executors were spawned one after another).
    glommio::timer::sleep(shared.plan.start.saturating_duration_since(Instant::now())).await;
    let tasks: Vec<_> = (0..shared.plan.senders)
        .map(|task| glommio::spawn_local(sender(Rc::clone(&shared), task)))
        .collect();
    for task in tasks {
        task.await;
    }
    finished.set(true);
    let plan = &shared.plan;
    stats::flush(plan.executor, plan.start, &shared.stats, &plan.events);
    ProducerOutcome {
        acked: shared.acked.take(),
        cpu_seconds: stats::thread_cpu_seconds() - cpu_at_start,
    }
}

async fn sender(shared: Rc<Shared>, task: usize) {
    let connection = task % shared.plan.args.connections;
    let batch = shared.plan.args.batch_messages as u64;
    loop {
        let request = shared.next_request.get();
        shared.next_request.set(request + 1);
        let Some(intended) = shared.intended(request) else {
            break;
        };
        let now = Instant::now();
        if intended > now {
            glommio::timer::sleep(shared.release_at(intended) - now).await;
        }
        let queue = shared.next_queue();
        let client = &shared.clients[queue.broker][connection];
        let first = request * batch;
        let result = shared.send(client, queue.queue_id, first, batch).await;
        let latency = Instant::now().saturating_duration_since(intended);
        let unreachable = matches!(result, Err(CallError::Connect { .. }));
        let in_window = shared.in_window(intended);
        shared.record(first, batch, result, latency, in_window);
        if unreachable {
            glommio::timer::sleep(CONNECT_BACKOFF).await;
        }
    }
}

impl Shared {
    /// When request `request` should go out: its slot in the open-loop schedule, or now in a
    /// closed loop. `None` once that is past the end of the run.
    fn intended(&self, request: u64) -> Option<Instant> {
        let at = match self.plan.rate_messages_per_second {
            Some(rate) => {
                let messages = request as f64 * self.plan.args.batch_messages as f64;
                self.plan.start + Duration::from_secs_f64(messages / rate)
            }
            None => Instant::now(),
        };
        (at < self.plan.end).then_some(at)
    }

    /// True when a send issued (open loop: due) at `intended` falls in the measured window,
    /// the seconds after the warm-up: its acknowledgement counts towards
    /// `Report::window_sent_messages` whenever it arrives.
    fn in_window(&self, intended: Instant) -> bool {
        let from = self.plan.start + Duration::from_secs(self.plan.args.warmup_seconds);
        intended >= from && intended < self.plan.end
    }

    /// The first tick of the open-loop grid at or after `intended`: tasks due within one tick
    /// wake together, on one timer.
    fn release_at(&self, intended: Instant) -> Instant {
        let tick_ns = u128::from(self.plan.args.tick_us.max(1)) * 1000;
        let since_ns = intended
            .saturating_duration_since(self.plan.start)
            .as_nanos();
        let ticks = since_ns.div_ceil(tick_ns);
        self.plan.start + Duration::from_nanos((ticks * tick_ns) as u64)
    }

    fn next_queue(&self) -> QueueRef {
        let i = self.next_queue.get();
        self.next_queue.set((i + 1) % self.plan.queues.len());
        self.plan.queues[i]
    }

    fn header(&self, queue_id: i32, properties: String, batch: bool) -> SendRequest {
        let args = &self.plan.args;
        SendRequest {
            producer_group: args.producer_group.clone(),
            topic: args.topic.clone(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: args.queue_nums,
            queue_id,
            sys_flag: 0,
            born_timestamp: (unix_ns() / 1_000_000) as i64,
            flag: 0,
            properties,
            reconsume_times: 0,
            unit_mode: false,
            max_reconsume_times: None,
            batch,
        }
    }

    async fn send(
        &self,
        client: &PipelinedClient,
        queue_id: i32,
        first: u64,
        count: u64,
    ) -> Result<SendOutcome, CallError> {
        let now_ns = unix_ns();
        if count == 1 {
            let header = self.header(queue_id, self.maker.properties(first), false);
            client.send(&header, self.maker.body(first, now_ns)).await
        } else {
            let header = self.header(queue_id, body::batch_header_properties(), true);
            let body = self.batch_body(first, count, now_ns);
            client.send_batch(&header, body).await
        }
    }

    /// The SEND_BATCH_MESSAGE body of messages `first..first + count`, each with its own
    /// properties (UNIQ_KEY and, when asked, KEYS and TAGS) as Java's `MessageBatch` encodes.
    fn batch_body(&self, first: u64, count: u64, now_ns: u64) -> Bytes {
        let size = self.plan.args.size_bytes;
        let mut bodies = BytesMut::with_capacity(size * count as usize);
        let properties: Vec<String> = (first..first + count)
            .map(|local| {
                self.maker.body_into(local, now_ns, &mut bodies);
                self.maker.properties(local)
            })
            .collect();
        let elements: Vec<BatchElement<'_>> = properties
            .iter()
            .enumerate()
            .map(|(j, properties)| BatchElement {
                flag: 0,
                body: &bodies[j * size..(j + 1) * size],
                properties,
            })
            .collect();
        Bytes::from(batch::encode(&elements))
    }

    fn record(
        &self,
        first: u64,
        count: u64,
        result: Result<SendOutcome, CallError>,
        latency: Duration,
        in_window: bool,
    ) {
        let mut stats = self.stats.borrow_mut();
        if in_window {
            stats.issued_in_window += count;
        }
        match result {
            Ok(outcome) if outcome.code == response::SUCCESS => {
                stats.sent += count;
                if in_window {
                    stats.sent_issued_in_window += count;
                }
                Interval::record(&mut stats.send_latency_us, latency);
                if self.plan.args.flush_check {
                    let mut acked = self.acked.borrow_mut();
                    for local in first..first + count {
                        acked.insert(local);
                    }
                }
            }
            Ok(outcome) => {
                stats.failed += count;
                *stats.errors_by_code.entry(outcome.code).or_default() += count;
            }
            Err(e) => {
                stats.failed += count;
                *stats.client_errors.entry(e.kind()).or_default() += count;
            }
        }
    }
}

/// Wall-clock time in ns since the Unix epoch (consumers on other hosts compare against it).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
