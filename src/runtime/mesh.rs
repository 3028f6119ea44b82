//! The shard mesh: typed request/response messages between the shards of one process, over
//! glommio's bounded channel mesh (DESIGN.md "Threads and ownership": nothing is shared between
//! shards except through bounded channels). A shard calls another and awaits the answer; the
//! callee runs each request as its own task, so a slow request does not hold up the inbox.
//! When an inbox is full the sender waits (back-pressure), it never grows.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

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
) -> MeshBuilder<Envelope<Req, Resp>, Full> {
    MeshBuilder::full(shards, inbox_capacity)
}

/// One shard's end of the mesh.
pub struct ShardMesh<Req: Send + 'static, Resp: Send + 'static> {
    senders: Senders<Envelope<Req, Resp>>,
    pending: RefCell<HashMap<u64, LocalSender<Option<Resp>>>>,
    next_id: Cell<u64>,
}

impl<Req: Send + 'static, Resp: Send + 'static> ShardMesh<Req, Resp> {
    /// Joins the mesh (waits for every shard to join) and starts serving requests addressed to
    /// this shard with `handler(from_shard, request)`; `None` answers nothing.
    pub async fn join<H, F>(
        builder: MeshBuilder<Envelope<Req, Resp>, Full>,
        handler: H,
    ) -> Result<Rc<Self>, MeshError>
    where
        H: Fn(usize, Req) -> F + 'static,
        F: Future<Output = Option<Resp>> + 'static,
    {
        let (senders, receivers) = builder.join().await.map_err(|_| MeshError::ShardGone(0))?;
        let mesh = Rc::new(ShardMesh {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        });
        Rc::clone(&mesh).serve(receivers, Rc::new(handler));
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
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
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

    /// Sends `request` to shard `to` and waits for its answer.
    pub async fn call(&self, to: usize, request: Req) -> Result<Resp, MeshError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.pending.borrow_mut().insert(id, tx);
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

    /// One caller, one call at a time, both shards going to sleep between calls (short timer
    /// sleeps on either side vary where each one is when the other's message lands): every
    /// call and every answer wakes an executor that is asleep or about to be, through a
    /// wake-up posted into its ring (vendor/glommio/PATCHES.md item 5). A lost wake-up hangs
    /// a call; the watchdog turns that into a failure instead of a stuck test run.
    #[test]
    fn every_call_to_a_sleeping_shard_wakes_it_and_its_answer_wakes_the_caller() {
        const CALLS: u64 = 20_000;
        let posted_before = glommio::msg_ring_wakes_posted();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let builder = builder::<u64, u64>(2, 64);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let builder = builder.clone();
                let done_tx = done_tx.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(128 * 1024)
                    .spawn(move || async move {
                        let peer_done = Rc::new(crate::runtime::OffsetWatch::new(0));
                        let mesh = {
                            let peer_done = Rc::clone(&peer_done);
                            ShardMesh::join(builder, move |_from, x: u64| {
                                let peer_done = Rc::clone(&peer_done);
                                async move {
                                    if x == u64::MAX {
                                        peer_done.advance(1);
                                        return None;
                                    }
                                    if x % 7 == 3 {
                                        let pause = std::time::Duration::from_micros(x % 29);
                                        glommio::timer::sleep(pause).await;
                                    }
                                    Some(x + 1)
                                }
                            })
                            .await
                            .expect("joined")
                        };
                        let other = 1 - mesh.shard();
                        let mut sum = 0;
                        for x in 0..CALLS {
                            sum += mesh.call(other, x).await.expect("answered");
                            if x % 5 == 1 {
                                let pause = std::time::Duration::from_micros(x % 23);
                                glommio::timer::sleep(pause).await;
                            }
                        }
                        mesh.tell(other, u64::MAX).await.expect("peer there");
                        let _ = peer_done.wait_for(1).await;
                        let _ = done_tx.send(sum);
                    })
                    .expect("executor")
            })
            .collect();
        let expected: u64 = (1..=CALLS).sum();
        for _ in 0..2 {
            let sum = done_rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("a shard stalled: a wake-up was lost");
            assert_eq!(sum, expected);
        }
        for handle in handles {
            handle.join().expect("joined");
        }
        if glommio::msg_ring_wakes() {
            assert!(
                glommio::msg_ring_wakes_posted() > posted_before,
                "no wake-up went through IORING_OP_MSG_RING"
            );
        }
    }

    /// With an inbox of 2 and 64 calls in flight each way, senders keep finding the peer's
    /// inbox full and wait for room; a receiver wakes a sleeping sender only when it pops
    /// from a full inbox (vendor/glommio/PATCHES.md), so a lost wake-up would hang here.
    #[test]
    fn senders_waiting_on_a_full_inbox_are_woken_as_it_drains() {
        const DONE: u64 = u64::MAX;
        let builder = builder::<u64, u64>(2, 2);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let builder = builder.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .io_memory(128 * 1024)
                    .spawn(move || async move {
                        let peer_done = Rc::new(crate::runtime::OffsetWatch::new(0));
                        let mesh = {
                            let peer_done = Rc::clone(&peer_done);
                            ShardMesh::join(builder, move |_from, x: u64| {
                                let peer_done = Rc::clone(&peer_done);
                                async move {
                                    if x == DONE {
                                        peer_done.advance(1);
                                        return None;
                                    }
                                    Some(x + 1)
                                }
                            })
                            .await
                            .expect("joined")
                        };
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
                        // Serve the peer until it is done too.
                        mesh.tell(other, DONE).await.expect("peer there");
                        let _ = peer_done.wait_for(1).await;
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
}
