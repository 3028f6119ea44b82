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
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::TaskQueueHandle;

use crate::limits::{
    CONNECTION_ACTIVE_MAX, CONNECTION_BODY_VETTED_BYTES, CONNECTION_DROP_SLICE_BYTES,
    CONNECTION_FRAMES_PER_TURN, CONNECTION_INFLIGHT_CONGESTED, CONNECTION_INFLIGHT_MAX,
    CONNECTION_READ_BUSY_BYTES, CONNECTION_READ_IDLE_BYTES, CONNECTION_UNSENT_MAX_BYTES,
    CONNECTION_WRITE_BATCH_BYTES, CONNECTION_WRITE_KEEP_BYTES, CONNECTION_WRITE_QUEUE_BYTES_MAX,
};
use crate::net::socket_link::SocketLink;
use crate::remoting::{check_frame, declared_body_bytes, decode_head, response, RemotingCommand};

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

    /// Looks at a request whose header has arrived and whose body, declared `body_bytes` long
    /// (over `CONNECTION_BODY_VETTED_BYTES`), has not: an answer refuses it before its body is
    /// read. The connection then sends the answer (nothing for a oneway request), drops the
    /// body's bytes as they arrive without buffering them, and goes on with the next frame.
    /// `header` has the request's fields and an empty body. The default reads every body.
    fn refuse_body(
        self: &Rc<Self>,
        _conn: &Rc<Connection>,
        _header: &RemotingCommand,
        _body_bytes: usize,
    ) -> Option<RemotingCommand> {
        None
    }

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
    /// Another thread's partial write left a remainder ([`SocketLink`]): write it.
    Nudge,
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
    /// One permit, held by the writer while the socket takes no more (the kernel holds
    /// `CONNECTION_UNSENT_MAX_BYTES` the peer has not made room for): the reader waits for it.
    socket_room: Semaphore,
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
    /// The socket as other shards may write answers to it, and the write lock.
    link: Arc<SocketLink>,
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

    /// The socket as another shard may answer on it ([`SocketLink`]).
    pub fn link(&self) -> &Arc<SocketLink> {
        &self.link
    }

    /// True when nothing else of this connection is under way: no request of it awaited, no
    /// answer owed by another shard, nothing in its write queue. Only then is a send handed to
    /// another shard answered by that shard (`processor::send`): a lone request spares the
    /// reader a wake-up, while under load the reader's batched writes of many answers cost
    /// less than a write by the owner for each run of them (stop 29: closed loop at 64 in
    /// flight lost 15 % with every handed send answered by its owner).
    pub fn is_quiet(&self) -> bool {
        self.inflight.get() == 0
            && self.link.owed() == 0
            && self.room.available() == CONNECTION_WRITE_QUEUE_BYTES_MAX as u64
    }

    /// Queues an answer another shard owed this connection (it could not write it itself),
    /// as [`Connection::respond`] does, and gives its place back.
    pub async fn respond_owed(&self, frame: RemotingCommand) {
        self.respond(frame).await;
        self.link.answered(1);
    }

    /// Wakes the writer to write what another shard's partial write left.
    pub fn nudge(&self) {
        let _ = self.outbound.try_send(Outbound::Nudge);
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
    limit_unsent(fd);
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
        socket_room: Semaphore::new(1),
        inflight: Cell::new(0),
        closed: Cell::new(false),
        next_opaque: Cell::new(1),
        fd,
        last_active: Cell::new(Instant::now()),
        reaped: Cell::new(false),
        awaited: Default::default(),
        link: Arc::new(SocketLink::new(fd)),
    });
    registered(&conn);
    let mut inbox = Inbox {
        drop_turns: Some(glommio::executor().current_task_queue()),
        ..Inbox::default()
    };
    let opening = inbox
        .next(&mut reader, &conn, &handler, max_frame_bytes)
        .await;
    let outcome = match opening {
        Ok(Some(opening)) => {
            let served = serve_established(
                reader,
                writer,
                rx,
                Rc::clone(&conn),
                handler,
                max_frame_bytes,
                Opening {
                    first: opening,
                    inbox,
                },
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
            conn.link.close();
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

/// Caps what the kernel keeps unsent for the connection at `CONNECTION_UNSENT_MAX_BYTES`
/// (`TCP_NOTSENT_LOWAT`): past that the socket takes no more writes until the peer has made
/// room, so a peer that does not read is noticed (and its reader held, see
/// [`wait_for_write_room`]) after a few dozen KiB of answers, not after the kernel's
/// send buffer (up to `net.ipv4.tcp_wmem`'s 4 MiB) has filled. What is in flight to a peer
/// that reads is not limited by it.
fn limit_unsent(fd: RawFd) {
    let bytes = CONNECTION_UNSENT_MAX_BYTES as libc::c_int;
    // SAFETY: setsockopt on the connection's own open socket, with a c_int option value that
    // lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_NOTSENT_LOWAT not set");
    }
}

/// A connection's first request, and what was read after it.
struct Opening {
    first: Incoming,
    inbox: Inbox,
}

/// What a connection's reader found next.
enum Incoming {
    /// A whole frame, decoded.
    Frame(RemotingCommand),
    /// A request refused on its header ([`Handler::refuse_body`]) with this answer (`None`: it
    /// was oneway); its body is being dropped.
    Refused(Option<RemotingCommand>),
}

/// A connection's reading state. `buf[..filled]` holds bytes read and not yet handed out as
/// frames; the rest is zeroed space to read into (zeroed when allocated, not before every read).
#[derive(Default)]
struct Inbox {
    buf: BytesMut,
    filled: usize,
    /// The last read filled all the space it had: more is probably waiting.
    busy: bool,
    /// Bytes of a refused request's body still to come: read and dropped, never buffered.
    dropping: usize,
    /// The incomplete frame at the front of `buf` was looked at for [`Handler::refuse_body`].
    vetted: bool,
    /// The queue a refused body's slices wait for between each other (the queue the
    /// connection was started on: the server's admission queue): see [`Inbox::drop_refused`].
    drop_turns: Option<TaskQueueHandle>,
}

impl Inbox {
    /// Reads until a frame is whole, or a request is refused on its header (`None`: the peer
    /// closed first). A frame that cannot be accepted fails the connection.
    async fn next<H: Handler>(
        &mut self,
        reader: &mut ReadHalf<TcpStream>,
        conn: &Rc<Connection>,
        handler: &Rc<H>,
        max_frame_bytes: usize,
    ) -> Result<Option<Incoming>, (CloseReason, String)> {
        loop {
            if let Some(incoming) = self.take(conn, handler, max_frame_bytes)? {
                return Ok(Some(incoming));
            }
            if !self.read_more(reader, conn).await? {
                return Ok(None);
            }
        }
    }

    /// The next frame among the bytes read, if it is whole or refused on its header.
    fn take<H: Handler>(
        &mut self,
        conn: &Rc<Connection>,
        handler: &Rc<H>,
        max_frame_bytes: usize,
    ) -> Result<Option<Incoming>, (CloseReason, String)> {
        let bad = |e: crate::remoting::WireError| (CloseReason::BadFrame, e.to_string());
        let read = &self.buf[..self.filled];
        if let Some(total) = check_frame(read, max_frame_bytes).map_err(bad)? {
            let frame = self.buf.split_to(total).freeze();
            self.filled -= total;
            self.vetted = false;
            return RemotingCommand::decode(frame)
                .map(|cmd| Some(Incoming::Frame(cmd)))
                .map_err(bad);
        }
        // A large body is shown to the handler, once its header is in, before it is read.
        if self.vetted {
            return Ok(None);
        }
        let Some(body_bytes) =
            declared_body_bytes(read).filter(|b| *b > CONNECTION_BODY_VETTED_BYTES)
        else {
            return Ok(None);
        };
        let Some((header, frame_bytes)) = decode_head(read, max_frame_bytes).map_err(bad)? else {
            return Ok(None);
        };
        self.vetted = true;
        if header.is_response() {
            return Ok(None);
        }
        let Some(answer) = handler.refuse_body(conn, &header, body_bytes) else {
            return Ok(None);
        };
        self.dropping = frame_bytes - self.filled;
        self.buf = BytesMut::new();
        self.filled = 0;
        self.vetted = false;
        Ok(Some(Incoming::Refused(
            (!header.is_oneway()).then_some(answer),
        )))
    }

    /// Reads more of the connection into `buf[filled..]` (or drops a refused body's bytes):
    /// false when the peer has closed. With nothing half-read and the last read having drained
    /// the socket (`!busy`), the read probably waits, so it holds no buffer while it does.
    async fn read_more(
        &mut self,
        reader: &mut ReadHalf<TcpStream>,
        conn: &Connection,
    ) -> Result<bool, (CloseReason, String)> {
        if self.dropping > 0 {
            return self.drop_refused(reader, conn).await;
        }
        let read = if self.filled == 0 && !self.busy {
            self.buf = BytesMut::new();
            read_quiet(reader, &mut self.buf).await
        } else {
            let space = if self.busy {
                CONNECTION_READ_BUSY_BYTES
            } else {
                CONNECTION_READ_IDLE_BYTES
            };
            make_room(&mut self.buf, self.filled, space);
            let filled = self.filled;
            reader
                .read(&mut self.buf[filled..])
                .await
                .map(|n| (n, n == self.buf.len() - filled))
        };
        match read {
            Ok((0, _)) => Ok(false),
            Ok((n, full)) => {
                self.filled += n;
                self.busy = full;
                conn.touch();
                Ok(true)
            }
            Err(e) => Err((CloseReason::ReadFailed, format!("read failed: {e}"))),
        }
    }

    /// Drops the next slice (at most `CONNECTION_DROP_SLICE_BYTES`) of a refused body: false
    /// when the peer has closed. After a whole slice the connection waits for a turn of the
    /// queue it was admitted on before it drops more: a body streaming in as fast as it is
    /// dropped otherwise kept the shard in one run of truncating reads for up to a
    /// millisecond (measured: 0.5-1 ms between two polls of the reactor, once per 5 MiB
    /// body), while good peers' requests waited to be reaped. The admission queue's short
    /// latency (`net::server`) has the executor poll the reactor within its slice while this
    /// waits, and its low shares keep one bad peer's bytes behind established work.
    async fn drop_refused(
        &mut self,
        reader: &mut ReadHalf<TcpStream>,
        conn: &Connection,
    ) -> Result<bool, (CloseReason, String)> {
        let slice = self.dropping.min(CONNECTION_DROP_SLICE_BYTES);
        let dropped = read_dropped(reader, conn.fd, slice)
            .await
            .map_err(|e| (CloseReason::ReadFailed, format!("read failed: {e}")))?;
        if dropped == 0 {
            return Ok(false);
        }
        self.dropping -= dropped;
        conn.touch();
        if dropped == slice && self.dropping > 0 {
            // A task spawned there runs in that queue's turn; the read resumes after it.
            if let Some(Ok(turn)) = self
                .drop_turns
                .map(|q| glommio::spawn_local_into(async {}, q))
            {
                turn.await;
            }
        }
        Ok(true)
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
    let Opening { first, mut inbox } = opening;
    let mut incoming = Some(first);
    let mut frames = 0usize;
    loop {
        while let Some(next) = incoming {
            match next {
                Incoming::Frame(request) => {
                    // A peer that does not read its answers is not served more requests either.
                    wait_for_write_room(conn).await;
                    dispatch(conn, handler, request).await;
                }
                Incoming::Refused(Some(answer)) => conn.respond(answer).await,
                Incoming::Refused(None) => {}
            }
            frames += 1;
            // One peer's burst must not hold the executor: after a few requests its reader
            // goes to the back of the run queue, behind the tasks it spawned and everyone else.
            if frames % CONNECTION_FRAMES_PER_TURN == 0 {
                future::yield_now().await;
            }
            incoming = inbox.take(conn, handler, max_frame_bytes)?;
        }
        // Nor read.
        wait_for_write_room(conn).await;
        if !inbox.read_more(&mut reader, conn).await? {
            return Ok(());
        }
        incoming = inbox.take(conn, handler, max_frame_bytes)?;
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

/// Drops up to `limit` bytes (the rest of a refused request's body) from the connection;
/// returns how many (0: the peer closed). What the socket holds already is discarded by the
/// kernel without being copied (`MSG_TRUNC` on a TCP socket); only when nothing is there does
/// it wait, with a read into the executor's shared buffer. Nothing is kept for the connection,
/// whatever the body's size.
async fn read_dropped(
    reader: &mut ReadHalf<TcpStream>,
    fd: RawFd,
    limit: usize,
) -> std::io::Result<usize> {
    use futures_lite::AsyncRead;
    // SAFETY: a non-blocking recv on the connection's own socket, open while it is served (the
    // reader half is borrowed here); with MSG_TRUNC and a null buffer nothing is written.
    let dropped = unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            limit,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if dropped >= 0 {
        return Ok(dropped as usize);
    }
    let error = std::io::Error::last_os_error();
    use std::io::ErrorKind::{Interrupted, WouldBlock};
    if !matches!(error.kind(), WouldBlock | Interrupted) {
        return Err(error);
    }
    future::poll_fn(|cx| {
        QUIET_READ.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let len = limit.min(scratch.len());
            Pin::new(&mut *reader).poll_read(cx, &mut scratch[..len])
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
/// whose answers flow, or whose requests are parked long polls, is not held). And while the
/// socket takes no more writes (the peer has not read what it was sent, see
/// [`limit_unsent`]): a peer pipelining requests it never reads the answers of (the attack's
/// pullers) was otherwise served until ~4 MiB of answers filled the kernel's send buffer, in
/// turns with every other peer's requests.
async fn wait_for_write_room(conn: &Connection) {
    const ALL: u64 = CONNECTION_WRITE_QUEUE_BYTES_MAX as u64;
    let queued = ALL - conn.room.available();
    let congested =
        queued > ALL / 2 || (queued > 0 && conn.inflight.get() >= CONNECTION_INFLIGHT_CONGESTED);
    if congested && conn.room.acquire(ALL).await.is_ok() {
        conn.room.signal(ALL);
    }
    if conn.socket_room.available() == 0 && conn.socket_room.acquire(1).await.is_ok() {
        conn.socket_room.signal(1);
    }
}

async fn dispatch<H: Handler>(conn: &Rc<Connection>, handler: &Rc<H>, request: RemotingCommand) {
    if request.is_response() {
        // The answer to a request we initiated: to its waiter, if one still waits.
        conn.awaited.complete(request);
        return;
    }
    let oneway = request.is_oneway();
    // Answers other shards owe (sends handed over whole, `SocketLink`) count as in flight.
    if conn.inflight.get() + conn.link.owed() >= CONNECTION_INFLIGHT_MAX {
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

/// The socket's write half, which marks the connection's link closed before it lets the
/// socket go, however the writer ends (its task dropped with the executor too): no other
/// shard writes to a descriptor that may have been reused.
struct LinkedWriter {
    half: WriteHalf<TcpStream>,
    link: Arc<SocketLink>,
}

impl Drop for LinkedWriter {
    fn drop(&mut self) {
        self.link.close();
    }
}

async fn write_loop(
    writer: WriteHalf<TcpStream>,
    rx: LocalReceiver<Outbound>,
    conn: Rc<Connection>,
) {
    let mut writer = LinkedWriter {
        half: writer,
        link: Arc::clone(&conn.link),
    };
    let writer = &mut writer.half;
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
        if !buf.is_empty() || conn.link.remainder_waits() {
            // Frames stay whole on the stream: other shards write answers here too.
            let Some(rest) = conn.link.lock_for_reader() else {
                break;
            };
            let mut written = Ok(());
            if let Some(rest) = rest {
                written = write_batch(writer, &rest, &conn).await;
            }
            if written.is_ok() && !buf.is_empty() {
                written = write_batch(writer, &buf, &conn).await;
            }
            conn.link.unlock_for_reader();
            if let Err(e) = written {
                tracing::debug!(error = %e, "write failed; dropping connection");
                break;
            }
            conn.touch();
            buf.clear();
        }
        if closing {
            conn.link.close();
            let _ = writer.close().await;
            break;
        }
    }
    // No other shard writes to the socket from now on: `writer`'s `LinkedWriter` closes the
    // link when this returns, before the socket goes.
    // Responders still waiting for room, and the reader, learn the connection is gone.
    conn.room.close();
    conn.socket_room.close();
}

/// Writes `buf` whole. glommio first tries a non-blocking send, so a write that does not
/// complete in its first poll found the socket full (the peer has not made room for what
/// it was sent): while it waits, the writer holds `socket_room` and the reader reads nothing
/// more ([`wait_for_write_room`]).
async fn write_batch(
    writer: &mut WriteHalf<TcpStream>,
    buf: &[u8],
    conn: &Connection,
) -> std::io::Result<()> {
    let mut write = writer.write_all(buf);
    if let Some(written) = future::poll_once(&mut write).await {
        return written;
    }
    let held = conn.socket_room.try_acquire(1).unwrap_or(false);
    let written = write.await;
    if held {
        conn.socket_room.signal(1);
    }
    written
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
        Outbound::Nudge => true,
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

    /// A connection served by [`run`] with `handler` (on this executor's queue), and its client.
    async fn serve_one<H: Handler>(handler: &Rc<H>) -> (TcpStream, glommio::Task<()>) {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let stream = listener.accept().await.unwrap();
        let served = glommio::spawn_local(run(
            1,
            stream,
            Rc::clone(handler),
            crate::limits::FRAME_SIZE_MAX_BYTES,
            None,
            |_| {},
            |_, _| {},
        ));
        (client, served)
    }

    /// `count` requests (PULL_MESSAGE, opaques from 0) encoded one after another.
    fn pipelined(count: usize) -> BytesMut {
        let mut frames = BytesMut::new();
        for opaque in 0..count {
            let mut request = RemotingCommand::request(crate::remoting::request::PULL_MESSAGE);
            request.opaque = opaque as i32;
            request.encode(&mut frames).unwrap();
        }
        frames
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
                let parking = 100;
                let handler = Rc::new(Gated {
                    started: Cell::new(0),
                    parking,
                    gate: Rc::new(Semaphore::new(0)),
                    parked: Rc::new(Semaphore::new(0)),
                });
                let (mut client, served) = serve_one(&handler).await;
                // Pipelined requests, far more than the budget, none of them answered yet.
                let total = 2 * CONNECTION_ACTIVE_MAX + parking;
                let frames = pipelined(total);
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
    fn a_peer_that_does_not_read_is_held_once_its_socket_is_full_and_served_when_it_reads() {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let handler = Rc::new(Refusing {
                    answer_bytes: 1024,
                    ..Refusing::default()
                });
                let (client, served) = serve_one(&handler).await;
                // 20,000 pipelined requests whose answers (~21 MiB) are not read for now.
                const TOTAL: usize = 20_000;
                let frames = pipelined(TOTAL);
                let (mut reader, mut writer) = futures_lite::io::split(client);
                let writing = glommio::spawn_local(async move {
                    writer.write_all(&frames).await.unwrap();
                    writer
                });
                let mut last = usize::MAX;
                let handled = || handler.handled.borrow().len();
                while last != handled() {
                    last = handled();
                    glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                }
                // Held once the kernel stopped taking answers: what the peer's receive buffer,
                // `CONNECTION_UNSENT_MAX_BYTES` and one write batch hold (176 answers here),
                // not the 5,399 that filled the kernel's 4 MiB send buffer and half the write
                // queue before the socket's unsent bytes were capped.
                let held_at = handled();
                assert!(
                    held_at < 1_000,
                    "{held_at} requests served to a peer not reading"
                );
                // Once it reads, it is served everything.
                let mut answers = 0;
                let mut prefix = [0u8; 4];
                let mut rest = vec![0u8; 4096];
                while answers < TOTAL {
                    reader.read_exact(&mut prefix).await.unwrap();
                    let len = u32::from_be_bytes(prefix) as usize;
                    reader.read_exact(&mut rest[..len]).await.unwrap();
                    answers += 1;
                }
                assert_eq!(handled(), TOTAL);
                drop(writing.await);
                drop(reader);
                served.await;
            });
    }

    /// Refuses requests of code `REFUSED` on their header and answers the others (with a body
    /// of `answer_bytes`), recording what it was shown and what it handled: (code, body bytes).
    #[derive(Default)]
    struct Refusing {
        vetted: std::cell::RefCell<Vec<(i32, usize)>>,
        handled: std::cell::RefCell<Vec<(i32, usize)>>,
        answer_bytes: usize,
    }

    const REFUSED: i32 = 1;

    impl Handler for Refusing {
        fn handle(
            self: &Rc<Self>,
            _conn: &Rc<Connection>,
            request: RemotingCommand,
            _busy: Busy,
        ) -> Reply {
            let seen = (request.code, request.body.len());
            self.handled.borrow_mut().push(seen);
            let answer = request
                .response_to(response::SUCCESS, None)
                .with_body(vec![b'a'; self.answer_bytes]);
            Reply::Now(Some(answer))
        }

        fn refuse_body(
            self: &Rc<Self>,
            _conn: &Rc<Connection>,
            header: &RemotingCommand,
            body_bytes: usize,
        ) -> Option<RemotingCommand> {
            assert!(header.body.is_empty());
            self.vetted.borrow_mut().push((header.code, body_bytes));
            (header.code == REFUSED)
                .then(|| header.error_to(response::MESSAGE_ILLEGAL, "body too large"))
        }
    }

    #[test]
    fn a_request_refused_on_its_header_is_answered_before_its_body_is_sent_and_the_body_dropped() {
        use std::io::{Read, Write};
        fn frame(code: i32, opaque: i32, body_bytes: usize, oneway: bool) -> Vec<u8> {
            let mut request = RemotingCommand::request(code).with_body(vec![b'b'; body_bytes]);
            request.opaque = opaque;
            if oneway {
                request.set_oneway();
            }
            let mut buf = BytesMut::new();
            request.encode(&mut buf).unwrap();
            buf.to_vec()
        }
        fn answer(conn: &mut std::net::TcpStream) -> RemotingCommand {
            let mut prefix = [0u8; 4];
            conn.read_exact(&mut prefix).unwrap();
            let mut frame = prefix.to_vec();
            frame.resize(4 + u32::from_be_bytes(prefix) as usize, 0);
            conn.read_exact(&mut frame[4..]).unwrap();
            RemotingCommand::decode(frame.into()).unwrap()
        }
        let handler = Rc::new(Refusing::default());
        let recorder = Rc::clone(&handler);
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let client = std::thread::spawn(move || {
                    let mut conn = std::net::TcpStream::connect(addr).unwrap();
                    // Without the refusal the answer would never come: fail instead of hanging.
                    let patience = std::time::Duration::from_secs(30);
                    conn.set_read_timeout(Some(patience)).unwrap();
                    // Only the header of a request with a 1 MiB body: it is answered already.
                    let big = frame(REFUSED, 1, 1 << 20, false);
                    let (head, body) = big.split_at(big.len() - (1 << 20));
                    conn.write_all(head).unwrap();
                    let refused = answer(&mut conn);
                    assert_eq!(refused.opaque, 1);
                    assert_eq!(refused.code, response::MESSAGE_ILLEGAL);
                    // Its body, a refused oneway request (no answer), an accepted large body
                    // and a small request, back to back: the bodies dropped, framing kept.
                    let mut rest = body.to_vec();
                    rest.extend(frame(REFUSED, 2, 300 << 10, true));
                    rest.extend(frame(2, 3, 200 << 10, false));
                    rest.extend(frame(2, 4, 10, false));
                    conn.write_all(&rest).unwrap();
                    for opaque in [3, 4] {
                        let answered = answer(&mut conn);
                        assert_eq!(answered.opaque, opaque);
                        assert_eq!(answered.code, response::SUCCESS);
                    }
                });
                let stream = listener.accept().await.unwrap();
                let max = crate::limits::FRAME_SIZE_MAX_BYTES;
                run(1, stream, handler, max, None, |_| {}, |_, _| {}).await;
                client.join().unwrap();
            });
        // Only large bodies were shown before being read; refused ones never reached `handle`.
        let vetted = recorder.vetted.take();
        assert_eq!(
            vetted,
            [(REFUSED, 1 << 20), (REFUSED, 300 << 10), (2, 200 << 10)]
        );
        assert_eq!(recorder.handled.take(), [(2, 200 << 10), (2, 10)]);
    }

    #[test]
    fn a_refused_body_is_dropped_a_slice_at_a_time_and_not_a_byte_past_it() {
        use std::os::fd::AsRawFd;
        // Three slices and a bit, then the next frame's first bytes, which must stay unread.
        const BODY: usize = 3 * CONNECTION_DROP_SLICE_BYTES + 1000;
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let peer = std::thread::spawn(move || {
                    use std::io::Write;
                    let mut conn = std::net::TcpStream::connect(addr).unwrap();
                    conn.write_all(&vec![b'b'; BODY]).unwrap();
                    conn.write_all(b"next").unwrap();
                    conn
                });
                let stream = listener.accept().await.unwrap();
                let fd = stream.as_raw_fd();
                let (mut reader, _writer) = futures_lite::io::split(stream);
                let (mut left, mut slices) = (BODY, 0);
                while left > 0 {
                    let slice = left.min(CONNECTION_DROP_SLICE_BYTES);
                    let dropped = read_dropped(&mut reader, fd, slice).await.unwrap();
                    assert!(dropped > 0 && dropped <= slice, "{dropped} of {slice}");
                    left -= dropped;
                    slices += 1;
                }
                assert!(slices >= 4, "{BODY} bytes dropped in {slices} reads");
                let mut next = [0u8; 4];
                reader.read_exact(&mut next).await.unwrap();
                assert_eq!(&next, b"next");
                drop(peer.join().unwrap());
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
