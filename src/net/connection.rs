//! One accepted connection: reader loop, writer task, in-flight and write-queue bounds.
//!
//! Memory follows what a connection is doing, not how long it has been open: a connection
//! waiting for its next request holds no read or write buffer (its read lands in the executor's
//! shared buffer and only the bytes that arrived are copied out); while requests keep coming it
//! reads into its own buffer, `CONNECTION_READ_IDLE_BYTES` and up to `CONNECTION_READ_BUSY_BYTES`
//! while reads keep filling it, and gives it back as soon as it is quiet again.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;

use crate::limits::{
    CONNECTION_ACTIVE_MAX, CONNECTION_FRAMES_PER_TURN, CONNECTION_INFLIGHT_CONGESTED,
    CONNECTION_INFLIGHT_MAX, CONNECTION_READ_BUSY_BYTES, CONNECTION_READ_IDLE_BYTES,
    CONNECTION_WRITE_BATCH_BYTES, CONNECTION_WRITE_KEEP_BYTES, CONNECTION_WRITE_QUEUE_BYTES_MAX,
};
use crate::remoting::{check_frame, response, RemotingCommand};

/// A handler's answer to one request.
pub enum Reply {
    /// Answered synchronously; `None` sends nothing (oneway requests).
    Now(Option<RemotingCommand>),
    /// Answered when the future completes; it runs as its own task.
    Later(Pin<Box<dyn Future<Output = Option<RemotingCommand>>>>),
}

/// Serves requests of one kind of server (nameserver, broker shard).
pub trait Handler: 'static {
    /// Handles one request that arrived on `conn`. `busy` is the request's claim on the
    /// connection's active-work budget: it is given back when the request's answer is ready, or
    /// earlier by [`Busy::release`] when the request parks (a long poll waiting for messages).
    fn handle(
        self: &Rc<Self>,
        conn: &Rc<Connection>,
        request: RemotingCommand,
        busy: Busy,
    ) -> Reply;

    /// Called once when `conn` has closed (either side), after its last request was read.
    fn on_close(&self, _conn: &Connection) {}
}

/// One request's claim on its connection's active-work budget (`CONNECTION_ACTIVE_MAX`
/// requests being worked on at once). Given back when the last clone is dropped (the request
/// is done) or by [`Busy::release`], whichever comes first.
#[derive(Clone)]
pub struct Busy(Rc<BusyClaim>);

struct BusyClaim {
    conn: Rc<Connection>,
    held: Cell<bool>,
}

impl Busy {
    /// Gives the claim back before the request is done: it is about to wait for something
    /// outside the connection's control (a long poll parked until messages arrive) and costs
    /// nothing meanwhile, so it must not keep the connection's other requests from being read.
    pub fn release(&self) {
        if self.0.held.replace(false) {
            self.0.conn.active.signal(1);
        }
    }
}

impl Drop for BusyClaim {
    fn drop(&mut self) {
        if self.held.replace(false) {
            self.conn.active.signal(1);
        }
    }
}

/// What the writer task is told to do.
enum Outbound {
    /// A frame and the write-queue bytes it holds (released when it is encoded).
    Frame(RemotingCommand, u64),
    Close,
}

/// Bytes a queued frame is counted for: its body plus an allowance for the header (responses'
/// headers are a few hundred bytes; the allowance keeps a flood of empty frames bounded too).
fn queued_bytes(frame: &RemotingCommand) -> u64 {
    const HEADER_ALLOWANCE_BYTES: usize = 256;
    (frame.body.len() + HEADER_ALLOWANCE_BYTES).min(CONNECTION_WRITE_QUEUE_BYTES_MAX) as u64
}

/// Why a connection ended, for the rate-limited log (one line per reason per interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// A frame we could not accept (too large, malformed header, unknown serialize type).
    BadFrame,
    /// The socket failed (reset by the peer, …).
    ReadFailed,
    /// Idle for longer than `serverChannelMaxIdleTimeSeconds`.
    Idle,
}

/// The state of one connection that handlers may keep (`Rc<Connection>`), e.g. to send
/// broker-initiated requests such as NOTIFY_CONSUMER_IDS_CHANGED later.
pub struct Connection {
    /// Unique per executor; identifies the channel a broker or client registered through.
    pub id: u64,
    /// The TCP peer (RocketMQ's bornHost / clientAddr).
    pub peer: SocketAddr,
    /// Our local address of this connection.
    pub local: SocketAddr,
    outbound: LocalSender<Outbound>,
    /// Bytes the write queue may still take; responders wait for room (back-pressure).
    room: Semaphore,
    /// Requests being worked on (not parked) may still start; the reader waits for one.
    active: Semaphore,
    inflight: Cell<usize>,
    closed: Cell<bool>,
    next_opaque: Cell<i32>,
    /// The socket, for the idle reaper's shutdown(2); valid while the connection is served.
    fd: RawFd,
    /// Last time bytes were read or written (Java's IdleStateHandler "all idle").
    last_active: Cell<Instant>,
    reaped: Cell<bool>,
    /// Requests we initiated whose answers are awaited ([`Connection::invoke`]), by opaque.
    awaited: crate::net::invoke::Awaited,
}

impl Connection {
    /// Queues a frame we initiate (e.g. NOTIFY_CONSUMER_IDS_CHANGED). Best effort: returns false
    /// and drops the frame when the connection is closed or its write queue is full (the peer is
    /// not reading).
    pub fn send(&self, frame: RemotingCommand) -> bool {
        let bytes = queued_bytes(&frame);
        if self.closed.get() || !self.room.try_acquire(bytes).unwrap_or(false) {
            return false;
        }
        self.outbound
            .try_send(Outbound::Frame(frame, bytes))
            .is_ok()
    }

    /// Queues a response, waiting while the write queue is full. This is the connection's
    /// back-pressure: a peer that stops reading stops being read, and nothing is dropped or
    /// buffered without bound.
    pub async fn respond(&self, frame: RemotingCommand) {
        if self.closed.get() {
            return;
        }
        let bytes = queued_bytes(&frame);
        // Fails only once the writer has gone (the connection is dead): the frame is dropped.
        if self.room.acquire(bytes).await.is_ok() {
            let _ = self.outbound.try_send(Outbound::Frame(frame, bytes));
        }
    }

    /// Sends a oneway request we initiate, with a fresh opaque.
    pub fn send_oneway(&self, mut request: RemotingCommand) -> bool {
        request.set_oneway();
        request.opaque = self.next_opaque.get();
        self.next_opaque.set(request.opaque.wrapping_add(1));
        self.send(request)
    }

    /// Sends a request we initiate (a relay to a client: GET_CONSUMER_RUNNING_INFO, …) and
    /// waits up to `timeout` for its answer (see [`crate::net::invoke`]).
    pub async fn invoke(
        &self,
        mut request: RemotingCommand,
        timeout: std::time::Duration,
    ) -> Result<RemotingCommand, crate::net::invoke::InvokeError> {
        use crate::net::invoke::InvokeError;
        request.flag &= !crate::remoting::FLAG_RESPONSE;
        request.opaque = self.next_opaque.get();
        self.next_opaque
            .set(request.opaque.wrapping_add(1) & i32::MAX);
        if self.closed.get() {
            return Err(InvokeError::Closed);
        }
        let answer = self.awaited.expect(request.opaque);
        if !self.send(request) {
            return Err(InvokeError::NotWritable);
        }
        answer.wait(timeout).await
    }

    /// True once either side closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// When bytes last moved on this connection, either way.
    pub fn last_active(&self) -> Instant {
        self.last_active.get()
    }

    fn touch(&self) {
        self.last_active.set(Instant::now());
    }

    /// Closes an idle connection: shuts the socket down, so its reader sees the end of the
    /// stream and the connection ends the usual way (handler's `on_close` included).
    pub(crate) fn reap(&self) {
        // Once closed, the socket may already be dropped (its descriptor number reused).
        if !self.closed.get() && !self.reaped.replace(true) {
            // SAFETY: shutdown(2) on the socket this connection owns: it is marked closed
            // before its writer half, the last holder of the socket, is dropped, so while it is
            // not, the descriptor is still ours. shutdown does not close or free the descriptor.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        }
    }
}

/// Serves `stream` until the peer closes it or sends a malformed frame, or the server reaps it.
/// `registered` is called with the connection once it is set up and `ended` when it has closed
/// with the reason it ended, if it did not end cleanly.
///
/// A connection is served in two parts. Until its first request has arrived whole and decoded,
/// it runs on the task queue this is called on (the server's admission queue): a peer that
/// never sends a valid frame (silent, garbage, a bad length prefix, a malformed header) is set
/// up, waited on and torn down there, with one task and no write buffer or writer task. With
/// its first request it moves to `established` (the queue the server's good peers are served
/// on; `None` stays where it is) and gets its writer task, so a burst of new or bad
/// connections never queues ahead of the requests of connections already serving.
pub(crate) async fn run<H: Handler>(
    id: u64,
    stream: TcpStream,
    handler: Rc<H>,
    max_frame_bytes: usize,
    established: Option<TaskQueueHandle>,
    registered: impl FnOnce(&Rc<Connection>),
    ended: impl FnOnce(&Connection, Option<(CloseReason, String)>),
) {
    use std::os::fd::AsRawFd;
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(p), Ok(l)) => (p, l),
        _ => return,
    };
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let (mut reader, writer) = futures_lite::io::split(stream);
    // Unbounded in count, bounded in bytes by `room`: no queue is preallocated per connection.
    let (tx, rx) = local_channel::new_unbounded();
    let conn = Rc::new(Connection {
        id,
        peer,
        local,
        outbound: tx,
        room: Semaphore::new(CONNECTION_WRITE_QUEUE_BYTES_MAX as u64),
        active: Semaphore::new(CONNECTION_ACTIVE_MAX as u64),
        inflight: Cell::new(0),
        closed: Cell::new(false),
        next_opaque: Cell::new(1),
        fd,
        last_active: Cell::new(Instant::now()),
        reaped: Cell::new(false),
        awaited: Default::default(),
    });
    registered(&conn);
    let outcome = match read_opening(&mut reader, &conn, max_frame_bytes).await {
        Ok(Some(opening)) => {
            let served = serve_established(
                reader,
                writer,
                rx,
                Rc::clone(&conn),
                handler,
                max_frame_bytes,
                opening,
            );
            match established {
                Some(queue) => {
                    glommio::spawn_local_into(served, queue)
                        .expect("the server's task queues live as long as its executor")
                        .await
                }
                None => served.await,
            }
        }
        opening => {
            // Never served a request: no writer was started and nothing was queued.
            mark_closed(&conn, &*handler);
            conn.room.close();
            opening.map(|_| ())
        }
    };
    let reason = match outcome {
        _ if conn.reaped.get() => Some((CloseReason::Idle, "idle".to_string())),
        Ok(()) => None,
        Err(e) => Some(e),
    };
    ended(&conn, reason);
}

/// A connection's first request, decoded, and what was read after it.
struct Opening {
    first: RemotingCommand,
    buf: BytesMut,
    filled: usize,
    busy: bool,
}

/// Reads until the connection's first request is whole and decodes (`None`: the peer closed
/// first). A frame that cannot be accepted fails the connection here, before it is served.
async fn read_opening(
    reader: &mut ReadHalf<TcpStream>,
    conn: &Connection,
    max_frame_bytes: usize,
) -> Result<Option<Opening>, (CloseReason, String)> {
    let bad = |e: crate::remoting::WireError| (CloseReason::BadFrame, e.to_string());
    let (mut buf, mut filled, mut busy) = (BytesMut::new(), 0, false);
    loop {
        if let Some(total) = check_frame(&buf[..filled], max_frame_bytes).map_err(bad)? {
            let frame = buf.split_to(total).freeze();
            let first = RemotingCommand::decode(frame).map_err(bad)?;
            return Ok(Some(Opening {
                first,
                buf,
                filled: filled - total,
                busy,
            }));
        }
        if !read_more(reader, &mut buf, &mut filled, &mut busy, conn).await? {
            return Ok(None);
        }
    }
}

/// Serves a connection from its first request on: its writer task, the reader loop, and the
/// close. Runs on the server's `established` queue.
async fn serve_established<H: Handler>(
    reader: ReadHalf<TcpStream>,
    writer: WriteHalf<TcpStream>,
    rx: LocalReceiver<Outbound>,
    conn: Rc<Connection>,
    handler: Rc<H>,
    max_frame_bytes: usize,
    opening: Opening,
) -> Result<(), (CloseReason, String)> {
    let writer_task = glommio::spawn_local(write_loop(writer, rx, Rc::clone(&conn)));
    let outcome = read_loop(reader, &conn, &handler, max_frame_bytes, opening).await;
    mark_closed(&conn, &*handler);
    writer_task.await;
    outcome
}

/// The connection's reading is over: requests still running learn it, the writer is told to
/// close once what is queued is written, and the handler's `on_close` runs.
fn mark_closed<H: Handler>(conn: &Connection, handler: &H) {
    conn.closed.set(true);
    conn.awaited.close();
    conn.active.close();
    let _ = conn.outbound.try_send(Outbound::Close);
    handler.on_close(conn);
}

async fn read_loop<H: Handler>(
    mut reader: ReadHalf<TcpStream>,
    conn: &Rc<Connection>,
    handler: &Rc<H>,
    max_frame_bytes: usize,
    opening: Opening,
) -> Result<(), (CloseReason, String)> {
    let bad = |e: crate::remoting::WireError| (CloseReason::BadFrame, e.to_string());
    // `buf[..filled]` holds bytes read and not yet handed out as frames; the rest is zeroed
    // space to read into (zeroed when allocated, not before every read).
    let Opening {
        first,
        mut buf,
        mut filled,
        // The last read filled all the space it had: more is probably waiting.
        mut busy,
    } = opening;
    dispatch(conn, handler, first).await;
    let mut frames = 1usize;
    loop {
        while let Some(total) = check_frame(&buf[..filled], max_frame_bytes).map_err(bad)? {
            let frame = buf.split_to(total).freeze();
            filled -= total;
            let request = RemotingCommand::decode(frame).map_err(bad)?;
            // A peer that does not read its answers is not served more requests either.
            wait_for_write_room(conn).await;
            dispatch(conn, handler, request).await;
            frames += 1;
            // One peer's burst must not hold the executor: after a few requests its reader
            // goes to the back of the run queue, behind the tasks it spawned and everyone else.
            if frames % CONNECTION_FRAMES_PER_TURN == 0 {
                future::yield_now().await;
            }
        }
        // Nor read.
        wait_for_write_room(conn).await;
        if !read_more(&mut reader, &mut buf, &mut filled, &mut busy, conn).await? {
            return Ok(());
        }
    }
}

/// Reads more of the connection into `buf[*filled..]`: false when the peer has closed. With
/// nothing half-read and the last read having drained the socket (`!*busy`), the read
/// probably waits, so it holds no buffer while it does.
async fn read_more(
    reader: &mut ReadHalf<TcpStream>,
    buf: &mut BytesMut,
    filled: &mut usize,
    busy: &mut bool,
    conn: &Connection,
) -> Result<bool, (CloseReason, String)> {
    let read = if *filled == 0 && !*busy {
        *buf = BytesMut::new();
        read_quiet(reader, buf).await
    } else {
        let space = if *busy {
            CONNECTION_READ_BUSY_BYTES
        } else {
            CONNECTION_READ_IDLE_BYTES
        };
        make_room(buf, *filled, space);
        reader
            .read(&mut buf[*filled..])
            .await
            .map(|n| (n, n == buf.len() - *filled))
    };
    match read {
        Ok((0, _)) => Ok(false),
        Ok((n, full)) => {
            *filled += n;
            *busy = full;
            conn.touch();
            Ok(true)
        }
        Err(e) => Err((CloseReason::ReadFailed, format!("read failed: {e}"))),
    }
}

thread_local! {
    /// The executor's buffer for reads of quiet connections (one executor per thread).
    static QUIET_READ: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; CONNECTION_READ_BUSY_BYTES].into_boxed_slice());
}

/// Reads into the executor's shared buffer and copies what arrived into `buf` (which must be
/// empty). The shared buffer is lent only for each poll: glommio reads a socket with a
/// non-blocking recv and, when nothing is there, waits for readiness holding no buffer, so a
/// waiting connection holds none either. Returns the bytes read and whether they filled the
/// shared buffer (more is probably waiting).
async fn read_quiet(
    reader: &mut ReadHalf<TcpStream>,
    buf: &mut BytesMut,
) -> std::io::Result<(usize, bool)> {
    use futures_lite::AsyncRead;
    future::poll_fn(|cx| {
        QUIET_READ.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let polled = Pin::new(&mut *reader).poll_read(cx, &mut scratch[..]);
            if let std::task::Poll::Ready(Ok(n)) = polled {
                buf.extend_from_slice(&scratch[..n]);
                return std::task::Poll::Ready(Ok((n, n == scratch.len())));
            }
            polled.map_ok(|n| (n, false))
        })
    })
    .await
}

/// Makes `buf[filled..]` at least `space` bytes (zeroing only what is added). A frame whose
/// declared length is known gets room for it in steps of at most `CONNECTION_READ_BUSY_BYTES`,
/// so a peer that declares a large frame costs memory only as its bytes arrive.
fn make_room(buf: &mut BytesMut, filled: usize, space: usize) {
    let declared = match buf.get(..4) {
        Some(b) if filled >= 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 4,
        _ => 0,
    };
    let frame_rest = declared
        .saturating_sub(filled)
        .min(CONNECTION_READ_BUSY_BYTES);
    let want = filled + space.max(frame_rest);
    if buf.len() < want {
        buf.resize(want, 0);
    }
}

/// Waits, when answers are backing up, until the write queue has drained: while it is more
/// than half full, or while anything is queued and `CONNECTION_INFLIGHT_CONGESTED` requests are
/// in flight (a peer that pipelines requests and reads slowly or not at all is held to about
/// that many answers in the making, instead of racing on to `CONNECTION_INFLIGHT_MAX`; a peer
/// whose answers flow, or whose requests are parked long polls, is not held).
async fn wait_for_write_room(conn: &Connection) {
    const ALL: u64 = CONNECTION_WRITE_QUEUE_BYTES_MAX as u64;
    let queued = ALL - conn.room.available();
    let congested =
        queued > ALL / 2 || (queued > 0 && conn.inflight.get() >= CONNECTION_INFLIGHT_CONGESTED);
    if congested && conn.room.acquire(ALL).await.is_ok() {
        conn.room.signal(ALL);
    }
}

async fn dispatch<H: Handler>(conn: &Rc<Connection>, handler: &Rc<H>, request: RemotingCommand) {
    if request.is_response() {
        // The answer to a request we initiated: to its waiter, if one still waits.
        conn.awaited.complete(request);
        return;
    }
    let oneway = request.is_oneway();
    if conn.inflight.get() >= CONNECTION_INFLIGHT_MAX {
        if !oneway {
            let remark = format!(
                "[OVERLOAD] more than {CONNECTION_INFLIGHT_MAX} requests in flight on this connection"
            );
            conn.respond(request.error_to(response::SYSTEM_BUSY, remark))
                .await;
        }
        return;
    }
    // A peer's requests are worked on at most `CONNECTION_ACTIVE_MAX` at a time: whatever it
    // pipelines, other peers' requests wait behind no more than that much of its work.
    if conn.active.acquire(1).await.is_err() {
        return;
    }
    let busy = Busy(Rc::new(BusyClaim {
        conn: Rc::clone(conn),
        held: Cell::new(true),
    }));
    match handler.handle(conn, request, busy) {
        Reply::Now(Some(reply)) if !oneway => conn.respond(reply).await,
        Reply::Now(_) => {}
        Reply::Later(mut future) => {
            // Most requests (a send under ASYNC_FLUSH, a pull that finds messages) are done
            // without waiting: polled once here, their answer is queued at once, with no task
            // of their own. The poll's waker is a no-op: a request that has to wait goes on as
            // a task, whose first poll looks again and registers its own waker (a waker of
            // this reader left behind would wake it for nothing).
            // Contract for every `Reply::Later` future: each poll that returns Pending
            // registers the waker of that poll (as `OffsetWatch::wait_for` does, replacing
            // the stored one), never only the first poll's; a future that registered once
            // would keep the no-op waker here and its task would never be woken.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(reply) = future.as_mut().poll(&mut cx) {
                if let (Some(reply), false) = (reply, oneway) {
                    conn.respond(reply).await;
                }
                return;
            }
            conn.inflight.set(conn.inflight.get() + 1);
            let conn = Rc::clone(conn);
            glommio::spawn_local(async move {
                if let (Some(reply), false) = (future.await, oneway) {
                    conn.respond(reply).await;
                }
                // Counted until its answer is queued: answers waiting for room in the write
                // queue of a peer that does not read stay within the in-flight bound.
                conn.inflight.set(conn.inflight.get() - 1);
            })
            .detach();
        }
    }
}

async fn write_loop(
    mut writer: WriteHalf<TcpStream>,
    rx: LocalReceiver<Outbound>,
    conn: Rc<Connection>,
) {
    let mut buf = BytesMut::new();
    loop {
        let first = match future::poll_once(rx.recv()).await {
            Some(Some(first)) => first,
            Some(None) => break,
            None => {
                // Nothing queued: the connection is quiet, so give a busy-time buffer back
                // before waiting.
                if buf.capacity() > CONNECTION_WRITE_KEEP_BYTES {
                    buf = BytesMut::new();
                }
                match rx.recv().await {
                    Some(first) => first,
                    None => break,
                }
            }
        };
        let mut closing = !encode_outbound(first, &mut buf, &conn);
        // Batch whatever else is already queued into the same write.
        while !closing && buf.len() < CONNECTION_WRITE_BATCH_BYTES {
            match future::poll_once(rx.recv()).await {
                Some(Some(next)) => closing = !encode_outbound(next, &mut buf, &conn),
                _ => break,
            }
        }
        if !buf.is_empty() {
            if let Err(e) = writer.write_all(&buf).await {
                tracing::debug!(error = %e, "write failed; dropping connection");
                break;
            }
            conn.touch();
            buf.clear();
        }
        if closing {
            let _ = writer.close().await;
            break;
        }
    }
    // Responders still waiting for room learn the connection is gone.
    conn.room.close();
}

/// Encodes a frame into `buf` and releases its queue bytes; false when the writer was told to
/// close.
fn encode_outbound(item: Outbound, buf: &mut BytesMut, conn: &Connection) -> bool {
    match item {
        Outbound::Frame(cmd, bytes) => {
            conn.room.signal(bytes);
            if let Err(e) = cmd.encode(buf) {
                // Only our own frames get here; one that cannot be encoded is a bug we log
                // rather than a corrupt frame we send.
                tracing::error!(code = cmd.code, opaque = cmd.opaque, error = %e, "frame not sent");
            }
            true
        }
        Outbound::Close => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler whose requests wait on `gate`, but the first `parking`, which give their claim
    /// back and wait on `parked`, as parked long polls do.
    struct Gated {
        started: Cell<usize>,
        parking: usize,
        gate: Rc<Semaphore>,
        parked: Rc<Semaphore>,
    }

    impl Handler for Gated {
        fn handle(
            self: &Rc<Self>,
            _conn: &Rc<Connection>,
            _request: RemotingCommand,
            busy: Busy,
        ) -> Reply {
            let n = self.started.get();
            self.started.set(n + 1);
            let gate = if n < self.parking {
                busy.release();
                Rc::clone(&self.parked)
            } else {
                Rc::clone(&self.gate)
            };
            Reply::Later(Box::pin(async move {
                let _ = gate.acquire(1).await;
                drop(busy);
                None
            }))
        }
    }

    /// Lets the connection's tasks run until `started` stops moving.
    async fn settle(handler: &Gated) -> usize {
        let mut last = usize::MAX;
        while last != handler.started.get() {
            last = handler.started.get();
            glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
        }
        last
    }

    #[test]
    fn a_connection_works_on_at_most_its_budget_and_parked_requests_free_their_place() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let parking = 100;
                let handler = Rc::new(Gated {
                    started: Cell::new(0),
                    parking,
                    gate: Rc::new(Semaphore::new(0)),
                    parked: Rc::new(Semaphore::new(0)),
                });
                let mut client = TcpStream::connect(addr).await.unwrap();
                let stream = listener.accept().await.unwrap();
                let served = glommio::spawn_local(run(
                    1,
                    stream,
                    Rc::clone(&handler),
                    crate::limits::FRAME_SIZE_MAX_BYTES,
                    None,
                    |_| {},
                    |_, _| {},
                ));
                // Pipelined requests, far more than the budget, none of them answered yet.
                let total = 2 * CONNECTION_ACTIVE_MAX + parking;
                let mut frames = BytesMut::new();
                for opaque in 0..total {
                    let mut request =
                        RemotingCommand::request(crate::remoting::request::PULL_MESSAGE);
                    request.opaque = opaque as i32;
                    request.encode(&mut frames).unwrap();
                }
                client.write_all(&frames).await.unwrap();
                // The parked ones gave their places back: the budget plus them have started.
                assert_eq!(settle(&handler).await, CONNECTION_ACTIVE_MAX + parking);
                // Each request that finishes lets exactly one more start.
                handler.gate.signal(10);
                assert_eq!(settle(&handler).await, CONNECTION_ACTIVE_MAX + parking + 10);
                handler.gate.signal(total as u64);
                assert_eq!(settle(&handler).await, total);
                handler.parked.signal(parking as u64);
                drop(client);
                served.await;
            });
    }

    #[test]
    fn room_follows_the_frame_being_assembled_in_bounded_steps() {
        let mut buf = BytesMut::new();
        make_room(&mut buf, 0, CONNECTION_READ_IDLE_BYTES);
        assert_eq!(buf.len(), CONNECTION_READ_IDLE_BYTES);
        // A frame declaring 16 MiB with 8 bytes in: room grows one busy step, not 16 MiB.
        buf[..4].copy_from_slice(&(16u32 * 1024 * 1024).to_be_bytes());
        make_room(&mut buf, 8, CONNECTION_READ_IDLE_BYTES);
        assert_eq!(buf.len(), 8 + CONNECTION_READ_BUSY_BYTES);
        // A small frame's rest fits in the space already there: nothing added.
        let mut small = BytesMut::new();
        make_room(&mut small, 0, CONNECTION_READ_IDLE_BYTES);
        small[..4].copy_from_slice(&100u32.to_be_bytes());
        make_room(&mut small, 10, CONNECTION_READ_IDLE_BYTES);
        assert_eq!(small.len(), 10 + CONNECTION_READ_IDLE_BYTES);
    }
}
