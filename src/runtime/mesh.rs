//! The shard mesh: typed request/response messages between the shards of one process, over
//! glommio's bounded channel mesh (DESIGN.md "Threads and ownership": nothing is shared between
//! shards except through bounded channels). A shard calls another and awaits the answer; the
//! callee runs each request as its own task, so a slow request does not hold up the inbox.
//! When an inbox is full the sender waits (back-pressure), it never grows.
//!
//! A peer that goes away (its thread exits, a panic included) fails every call waiting on it
//! with [`MeshError::ShardGone`] at once, and every later call too: the callers answer their
//! clients instead of waiting forever for a reply that cannot come. The shards of a mesh share
//! a [`Liveness`]: each shard's thread marks itself gone on exit (a thread-local guard, so it
//! holds however the thread ends) and wakes the others, which sweep their waiting calls.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::local_channel::{self, LocalSender};
use thiserror::Error;

/// A message on the mesh.
pub enum Envelope<Req, Resp> {
    /// `id` is 0 for requests that expect no answer.
    Request { id: u64, body: Req },
    /// `body` is `None` when the handler had no answer (the caller gets `NoAnswer`).
    Response { id: u64, body: Option<Resp> },
}

/// A call that could not complete.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum MeshError {
    #[error("shard {0} does not exist")]
    NoSuchShard(usize),
    #[error("shard {0} is gone (shutting down)")]
    ShardGone(usize),
    #[error("shard {0} had no answer to that request")]
    NoAnswer(usize),
}

/// Builds the mesh for `shards` executors; every shard must call [`ShardMesh::join`] on a
/// clone of it.
pub fn builder<Req: Send + 'static, Resp: Send + 'static>(
    shards: usize,
    inbox_capacity: usize,
) -> Builder<Req, Resp> {
    Builder {
        colocation: None,
        mesh: MeshBuilder::full(shards, inbox_capacity),
        liveness: Arc::new(Liveness {
            gone: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            wake: (0..shards).map(|_| flume::bounded(1)).collect(),
        }),
    }
}

/// What a shard joins the mesh with (clone it once per shard).
pub struct Builder<Req: Send + 'static, Resp: Send + 'static> {
    mesh: MeshBuilder<Envelope<Req, Resp>, Full>,
    liveness: Arc<Liveness>,
    /// Lightly loaded shards share one CPU (`super::colocate`); `None`: off.
    colocation: Option<Arc<super::colocate::Colocation>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Clone for Builder<Req, Resp> {
    fn clone(&self) -> Self {
        Builder {
            mesh: self.mesh.clone(),
            liveness: Arc::clone(&self.liveness),
            colocation: self.colocation.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Builder<Req, Resp> {
    /// Sets shard co-location (`super::colocate`, off unless set here; nothing with fewer
    /// than two shards); call before cloning the builder for the shards.
    pub fn with_colocation(
        mut self,
        mode: crate::config::ShardColocation,
        idle: super::colocate::IdleSource,
    ) -> Self {
        let shards = self.liveness.gone.len();
        self.colocation = (shards >= 2 && mode != crate::config::ShardColocation::Off)
            .then(|| super::colocate::Colocation::new(shards, mode, idle));
        self
    }
}

/// Which shards of a mesh have exited, shared by all of them, with one wake-up channel per
/// shard (capacity 1: a pending wake-up covers any number of exits, the sweep reads the flags).
pub struct Liveness {
    gone: Vec<AtomicBool>,
    wake: Vec<(flume::Sender<()>, flume::Receiver<()>)>,
}

impl Liveness {
    fn mark_gone(&self, shard: usize) {
        self.gone[shard].store(true, Ordering::SeqCst);
        for (other, (tx, _)) in self.wake.iter().enumerate() {
            if other != shard {
                let _ = tx.try_send(());
            }
        }
    }
}

/// Marks its shard gone when its thread exits (thread-local destructors run however the
/// thread ends, after a panic's unwinding too).
struct ExitMark {
    shard: usize,
    liveness: Arc<Liveness>,
}

impl Drop for ExitMark {
    fn drop(&mut self) {
        self.liveness.mark_gone(self.shard);
    }
}

thread_local! {
    static EXIT_MARKS: RefCell<Vec<ExitMark>> = const { RefCell::new(Vec::new()) };
}

/// A call waiting for its answer: the shard called, and where the answer goes.
type Waiting<Resp> = (usize, LocalSender<Option<Resp>>);

/// One shard's end of the mesh.
pub struct ShardMesh<Req: Send + 'static, Resp: Send + 'static> {
    senders: Senders<Envelope<Req, Resp>>,
    /// Calls waiting for their answer: id → (the shard called, where the answer goes).
    pending: RefCell<HashMap<u64, Waiting<Resp>>>,
    /// Which shards have exited (shared by the whole mesh).
    liveness: Arc<Liveness>,
    next_id: Cell<u64>,
    /// Shard co-location, when on (shared by the mesh's shards).
    colocation: Option<Arc<super::colocate::Colocation>>,
    /// Told of each peer found gone, after its calls were failed ([`ShardMesh::on_gone`]).
    gone_hooks: RefCell<Vec<GoneHook>>,
}

/// What a shard does when a peer is found gone.
type GoneHook = Box<dyn Fn(usize)>;

impl<Req: Send + 'static, Resp: Send + 'static> ShardMesh<Req, Resp> {
    /// Joins the mesh (waits for every shard to join) and starts serving requests addressed to
    /// this shard with `handler(from_shard, request)`; `None` answers nothing.
    pub async fn join<H, F>(builder: Builder<Req, Resp>, handler: H) -> Result<Rc<Self>, MeshError>
    where
        H: Fn(usize, Req) -> F + 'static,
        F: Future<Output = Option<Resp>> + 'static,
    {
        let Builder {
            mesh,
            liveness,
            colocation,
        } = builder;
        let (senders, receivers) = mesh.join().await.map_err(|_| MeshError::ShardGone(0))?;
        let mesh = Rc::new(ShardMesh {
            senders,
            pending: RefCell::new(HashMap::new()),
            liveness: Arc::clone(&liveness),
            next_id: Cell::new(1),
            colocation,
            gone_hooks: RefCell::new(Vec::new()),
        });
        Rc::clone(&mesh).serve(receivers, Rc::new(handler));
        let me = mesh.shard();
        if let Some(colocation) = &mesh.colocation {
            colocation.start(me, Rc::downgrade(&mesh));
        }
        EXIT_MARKS.with(|marks| {
            marks.borrow_mut().push(ExitMark {
                shard: me,
                liveness: Arc::clone(&liveness),
            })
        });
        let watcher = Rc::downgrade(&mesh);
        glommio::spawn_local(async move {
            let wake = liveness.wake[me].1.clone();
            while wake.recv_async().await.is_ok() {
                let Some(mesh) = watcher.upgrade() else { break };
                for peer in (0..mesh.shards()).filter(|&p| p != me && mesh.is_gone(p)) {
                    mesh.fail_calls_to(peer);
                    for hook in mesh.gone_hooks.borrow().iter() {
                        hook(peer);
                    }
                }
            }
        })
        .detach();
        Ok(mesh)
    }

    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.senders.peer_id()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// Shard co-location's shared state, when it is on.
    pub fn colocation(&self) -> Option<&Arc<super::colocate::Colocation>> {
        self.colocation.as_ref()
    }

    fn serve<H, F>(self: Rc<Self>, mut receivers: Receivers<Envelope<Req, Resp>>, handler: Rc<H>)
    where
        H: Fn(usize, Req) -> F + 'static,
        F: Future<Output = Option<Resp>> + 'static,
    {
        for (from, stream) in receivers.streams() {
            let mesh = Rc::clone(&self);
            let handler = Rc::clone(&handler);
            glommio::spawn_local(async move {
                while let Some(envelope) = stream.recv().await {
                    mesh.deliver(from, envelope, &handler);
                }
            })
            .detach();
        }
    }

    fn deliver<H, F>(self: &Rc<Self>, from: usize, envelope: Envelope<Req, Resp>, handler: &Rc<H>)
    where
        H: Fn(usize, Req) -> F + 'static,
        F: Future<Output = Option<Resp>> + 'static,
    {
        match envelope {
            Envelope::Response { id, body } => {
                if let Some((_, tx)) = self.pending.borrow_mut().remove(&id) {
                    let _ = tx.try_send(body);
                }
            }
            Envelope::Request { id, body } => {
                let answer = handler(from, body);
                let mesh = Rc::clone(self);
                glommio::spawn_local(async move {
                    let body = answer.await;
                    if id != 0 {
                        // Always answered, so a caller never waits on a request with no reply.
                        let _ = mesh
                            .senders
                            .send_to(from, Envelope::Response { id, body })
                            .await;
                    }
                })
                .detach();
            }
        }
    }

    /// Fails the calls waiting on `peer`, which is gone (dropping their senders ends their
    /// `recv` with `None`: [`MeshError::ShardGone`]). Idempotent.
    fn fail_calls_to(&self, peer: usize) {
        let mut pending = self.pending.borrow_mut();
        let before = pending.len();
        pending.retain(|_, (to, _)| *to != peer);
        let failed = before - pending.len();
        tracing::debug!(
            shard = self.shard(),
            peer,
            failed,
            "shard {peer} is gone; calls to it fail"
        );
    }

    /// Runs `hook(peer)` whenever a peer is found gone (possibly more than once per peer), for
    /// work handed to it that is not a call (a call fails by itself).
    pub fn on_gone(&self, hook: impl Fn(usize) + 'static) {
        self.gone_hooks.borrow_mut().push(Box::new(hook));
    }

    /// True once shard `peer` has exited.
    pub fn is_gone(&self, peer: usize) -> bool {
        self.liveness
            .gone
            .get(peer)
            .is_some_and(|gone| gone.load(Ordering::SeqCst))
    }

    /// Sends `request` to shard `to` and waits for its answer.
    pub async fn call(&self, to: usize, request: Req) -> Result<Resp, MeshError> {
        if self.is_gone(to) {
            return Err(MeshError::ShardGone(to));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, (to, tx));
        if self
            .senders
            .send_to(to, Envelope::Request { id, body: request })
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return Err(if to < self.shards() {
                MeshError::ShardGone(to)
            } else {
                MeshError::NoSuchShard(to)
            });
        }
        match rx.recv().await {
            Some(Some(answer)) => Ok(answer),
            Some(None) => Err(MeshError::NoAnswer(to)),
            None => Err(MeshError::ShardGone(to)),
        }
    }

    /// Sends `request` to shard `to` without waiting for an answer.
    pub async fn tell(&self, to: usize, request: Req) -> Result<(), MeshError> {
        self.senders
            .send_to(
                to,
                Envelope::Request {
                    id: 0,
                    body: request,
                },
            )
            .await
            .map_err(|_| MeshError::ShardGone(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    #[test]
    fn shards_call_each_other_and_get_their_own_answers() {
        let builder = builder::<u64, (usize, u64)>(2, 64);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let builder = builder.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(128 * 1024)
                    .spawn(move || async move {
                        let mesh = ShardMesh::join(builder, |_from, x: u64| async move {
                            // Answer with the executor's mesh index and the doubled value.
                            Some((glommio::executor().id(), x * 2))
                        })
                        .await
                        .expect("joined");
                        let other = 1 - mesh.shard();
                        let mut answers = Vec::new();
                        for x in 0..100u64 {
                            answers.push(mesh.call(other, x).await.expect("answered").1);
                        }
                        // Keep serving until the peer is done too.
                        glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                        answers
                    })
                    .expect("executor")
            })
            .collect();
        for handle in handles {
            let answers = handle.join().expect("joined");
            assert_eq!(answers, (0..100u64).map(|x| x * 2).collect::<Vec<_>>());
        }
    }

    const DONE: u64 = u64::MAX;

    /// Joins a mesh of `u64` calls whose handler answers `x` with `answer(x)`; the returned
    /// watch moves to 1 once the peer told this shard it is [`DONE`] calling.
    async fn join_answering<F, Fut>(
        builder: Builder<u64, u64>,
        answer: F,
    ) -> (Rc<ShardMesh<u64, u64>>, Rc<crate::runtime::OffsetWatch>)
    where
        F: Fn(u64) -> Fut + 'static,
        Fut: Future<Output = u64> + 'static,
    {
        let peer_done = Rc::new(crate::runtime::OffsetWatch::new(0));
        let answer = Rc::new(answer);
        let mesh = {
            let peer_done = Rc::clone(&peer_done);
            ShardMesh::join(builder, move |_from, x: u64| {
                let (peer_done, answer) = (Rc::clone(&peer_done), Rc::clone(&answer));
                async move {
                    if x == DONE {
                        peer_done.advance(1);
                        return None;
                    }
                    Some(answer(x).await)
                }
            })
            .await
            .expect("joined")
        };
        (mesh, peer_done)
    }

    /// Tells the peer this shard is done calling, then serves it until it is done too.
    async fn finish(mesh: &ShardMesh<u64, u64>, peer_done: &crate::runtime::OffsetWatch) {
        mesh.tell(1 - mesh.shard(), DONE).await.expect("peer there");
        let _ = peer_done.wait_for(1).await;
    }

    /// Two executors each call the other `calls` times, one call at a time (answer: x + 1),
    /// with short timer sleeps on both sides when `pauses`; returns each one's sum of answers,
    /// or `None` when one did not finish within 60 s (a lost wake-up).
    fn ping_pong(calls: u64, pauses: bool) -> Option<Vec<u64>> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let builder = builder::<u64, u64>(2, 64);
        for _ in 0..2 {
            let builder = builder.clone();
            let done_tx = done_tx.clone();
            LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(128 * 1024)
                .spawn(move || async move {
                    let (mesh, peer_done) = join_answering(builder, move |x| async move {
                        if pauses && x % 7 == 3 {
                            let pause = std::time::Duration::from_micros(x % 29);
                            glommio::timer::sleep(pause).await;
                        }
                        x + 1
                    })
                    .await;
                    let other = 1 - mesh.shard();
                    let mut sum = 0;
                    for x in 0..calls {
                        sum += mesh.call(other, x).await.expect("answered");
                        if pauses && x % 5 == 1 {
                            let pause = std::time::Duration::from_micros(x % 23);
                            glommio::timer::sleep(pause).await;
                        }
                    }
                    finish(&mesh, &peer_done).await;
                    let _ = done_tx.send(sum);
                })
                .expect("executor");
        }
        (0..2)
            .map(|_| {
                done_rx
                    .recv_timeout(std::time::Duration::from_secs(60))
                    .ok()
            })
            .collect()
    }

    /// One caller, one call at a time, both shards going to sleep between calls (short timer
    /// sleeps on either side vary where each one is when the other's message lands): every
    /// call and every answer wakes an executor that is asleep or about to be, through a
    /// wake-up posted into its ring (vendor/glommio/PATCHES.md item 5). A lost wake-up hangs
    /// a call; the watchdog turns that into a failure instead of a stuck test run.
    #[test]
    fn every_call_to_a_sleeping_shard_wakes_it_and_its_answer_wakes_the_caller() {
        const CALLS: u64 = 20_000;
        let posted_before = glommio::msg_ring_wakes_posted();
        let sums = ping_pong(CALLS, true).expect("a shard stalled: a wake-up was lost");
        assert_eq!(sums, vec![(1..=CALLS).sum::<u64>(); 2]);
        if glommio::msg_ring_wakes() {
            assert!(
                glommio::msg_ring_wakes_posted() > posted_before,
                "no wake-up went through IORING_OP_MSG_RING"
            );
        }
    }

    /// Process CPU time (user + system) so far.
    fn cpu_time() -> std::time::Duration {
        // SAFETY: getrusage fills the struct it is given.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        std::time::Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
    }

    /// Measures, not asserts: CPU time per call (two wake-ups: the callee's and the
    /// caller's) with wake-ups through eventfds (upstream glommio) and through
    /// IORING_OP_MSG_RING, alternated. Run alone:
    /// `cargo test --release --lib runtime::mesh::tests::wake_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run alone"]
    fn wake_cost_eventfd_against_msg_ring() {
        const CALLS: u64 = 20_000;
        for round in 0..3 {
            for msg_ring in [false, true] {
                glommio::set_msg_ring_wakes(msg_ring);
                let (t0, c0) = (std::time::Instant::now(), cpu_time());
                ping_pong(CALLS, false).expect("finished");
                let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
                let calls = (2 * CALLS) as f64;
                println!(
                    "round {round} {}: {:.2} us CPU and {:.2} us wall per call",
                    if msg_ring { "msg_ring" } else { "eventfd " },
                    cpu.as_secs_f64() * 1e6 / calls,
                    wall.as_secs_f64() * 1e6 / calls,
                );
            }
        }
        glommio::set_msg_ring_wakes(true);
    }

    /// With an inbox of 2 and 64 calls in flight each way, senders keep finding the peer's
    /// inbox full and wait for room; a receiver wakes a sleeping sender only when it pops
    /// from a full inbox (vendor/glommio/PATCHES.md), so a lost wake-up would hang here.
    #[test]
    fn senders_waiting_on_a_full_inbox_are_woken_as_it_drains() {
        let builder = builder::<u64, u64>(2, 2);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let builder = builder.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(128 * 1024)
                    .spawn(move || async move {
                        let (mesh, peer_done) =
                            join_answering(builder, |x| async move { x + 1 }).await;
                        let other = 1 - mesh.shard();
                        let callers: Vec<_> = (0..64u64)
                            .map(|c| {
                                let mesh = Rc::clone(&mesh);
                                glommio::spawn_local(async move {
                                    let mut sum = 0;
                                    for i in 0..100u64 {
                                        sum +=
                                            mesh.call(other, c * 1000 + i).await.expect("answer");
                                    }
                                    sum
                                })
                            })
                            .collect();
                        let mut total = 0;
                        for caller in callers {
                            total += caller.await;
                        }
                        finish(&mesh, &peer_done).await;
                        total
                    })
                    .expect("executor")
            })
            .collect();
        let expected: u64 = (0..64u64)
            .flat_map(|c| (0..100u64).map(move |i| c * 1000 + i + 1))
            .sum();
        for handle in handles {
            assert_eq!(handle.join().expect("joined"), expected);
        }
    }

    /// A peer that dies holding a request (its executor panics mid-request) fails that call
    /// and every later one with `ShardGone` instead of leaving the callers waiting forever.
    #[test]
    fn a_call_to_a_shard_that_dies_mid_request_fails_instead_of_hanging() {
        let builder = builder::<u64, u64>(2, 8);
        let got_request = std::sync::Arc::new(std::sync::Barrier::new(2));
        let victim = {
            let (builder, got_request) = (builder.clone(), std::sync::Arc::clone(&got_request));
            LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(128 * 1024)
                .spawn(move || async move {
                    let seen = Rc::new(crate::runtime::OffsetWatch::new(0));
                    let handler_seen = Rc::clone(&seen);
                    let _mesh = ShardMesh::join(builder, move |_from, _x: u64| {
                        handler_seen.advance(1);
                        // Never answers: the shard dies first.
                        std::future::pending::<Option<u64>>()
                    })
                    .await
                    .expect("joined");
                    let _ = seen.wait_for(1).await;
                    got_request.wait();
                    panic!("shard 1 killed mid-request (on purpose)");
                })
                .expect("executor")
        };
        let caller = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(128 * 1024)
            .spawn(move || async move {
                let mesh = ShardMesh::join(builder, |_from, x: u64| async move { Some(x) })
                    .await
                    .expect("joined");
                let other = 1 - mesh.shard();
                let hang_guard = std::time::Duration::from_secs(30);
                let first =
                    glommio::timer::timeout(hang_guard, async { Ok(mesh.call(other, 7).await) })
                        .await
                        .expect("the call to the dead shard returned instead of hanging");
                let later = mesh.call(other, 8).await;
                (other, first, later)
            })
            .expect("executor");
        // The victim's request arrives, then it dies.
        got_request.wait();
        assert!(victim.join().is_err(), "the victim shard panicked");
        let (other, first, later) = caller.join().expect("caller finished");
        assert_eq!(first, Err(MeshError::ShardGone(other)));
        assert_eq!(later, Err(MeshError::ShardGone(other)));
    }
}
