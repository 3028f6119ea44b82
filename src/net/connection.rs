//! One accepted connection: reader loop, writer task, in-flight bound.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;

use crate::limits::{
    CONNECTION_INFLIGHT_MAX, CONNECTION_READ_BUFFER_BYTES, CONNECTION_WRITE_QUEUE_MAX,
};
use crate::remoting::{next_frame, response, RemotingCommand};

/// A handler's answer to one request.
pub enum Reply {
    /// Answered synchronously; `None` sends nothing (oneway requests).
    Now(Option<RemotingCommand>),
    /// Answered when the future completes; it runs as its own task.
    Later(Pin<Box<dyn Future<Output = Option<RemotingCommand>>>>),
}

/// Serves requests of one kind of server (nameserver, broker shard).
pub trait Handler: 'static {
    /// Handles one request that arrived on `conn`.
    fn handle(self: &Rc<Self>, conn: &Rc<Connection>, request: RemotingCommand) -> Reply;

    /// Called once when `conn` has closed (either side), after its last request was read.
    fn on_close(&self, _conn: &Connection) {}
}

/// What the writer task is told to do.
enum Outbound {
    Frame(RemotingCommand),
    Close,
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
    inflight: Cell<usize>,
    closed: Cell<bool>,
    next_opaque: Cell<i32>,
}

impl Connection {
    /// Queues a frame we initiate (e.g. NOTIFY_CONSUMER_IDS_CHANGED). Best effort: returns false
    /// and drops the frame when the connection is closed or its write queue is full (the peer is
    /// not reading).
    pub fn send(&self, frame: RemotingCommand) -> bool {
        !self.closed.get() && self.outbound.try_send(Outbound::Frame(frame)).is_ok()
    }

    /// Queues a response, waiting while the write queue is full. This is the connection's
    /// back-pressure: a peer that stops reading stops being read, and nothing is dropped or
    /// buffered without bound.
    pub async fn respond(&self, frame: RemotingCommand) {
        if !self.closed.get() {
            let _ = self.outbound.send(Outbound::Frame(frame)).await;
        }
    }

    /// Sends a oneway request we initiate, with a fresh opaque.
    pub fn send_oneway(&self, mut request: RemotingCommand) -> bool {
        request.set_oneway();
        request.opaque = self.next_opaque.get();
        self.next_opaque.set(request.opaque.wrapping_add(1));
        self.send(request)
    }

    /// True once either side closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }
}

/// Serves `stream` until the peer closes it or sends a malformed frame.
pub async fn run<H: Handler>(id: u64, stream: TcpStream, handler: Rc<H>, max_frame_bytes: usize) {
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(p), Ok(l)) => (p, l),
        _ => return,
    };
    let _ = stream.set_nodelay(true);
    let (reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded(CONNECTION_WRITE_QUEUE_MAX);
    let conn = Rc::new(Connection {
        id,
        peer,
        local,
        outbound: tx,
        inflight: Cell::new(0),
        closed: Cell::new(false),
        next_opaque: Cell::new(1),
    });
    let writer_task = glommio::spawn_local(write_loop(writer, rx));
    if let Err(reason) = read_loop(reader, &conn, &handler, max_frame_bytes).await {
        tracing::warn!(peer = %peer, %reason, "closing connection");
    }
    conn.closed.set(true);
    // Waits for room rather than dropping the close: the writer must learn it is done.
    let _ = conn.outbound.send(Outbound::Close).await;
    handler.on_close(&conn);
    writer_task.await;
}

async fn read_loop<H: Handler>(
    mut reader: ReadHalf<TcpStream>,
    conn: &Rc<Connection>,
    handler: &Rc<H>,
    max_frame_bytes: usize,
) -> Result<(), String> {
    let mut buf = BytesMut::with_capacity(CONNECTION_READ_BUFFER_BYTES);
    loop {
        while let Some(frame) = next_frame(&mut buf, max_frame_bytes).map_err(|e| e.to_string())? {
            let request = RemotingCommand::decode(frame).map_err(|e| e.to_string())?;
            dispatch(conn, handler, request).await;
        }
        let filled = buf.len();
        buf.resize(filled + CONNECTION_READ_BUFFER_BYTES, 0);
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => {
                buf.truncate(filled);
                return Ok(());
            }
            Ok(n) => buf.truncate(filled + n),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

async fn dispatch<H: Handler>(conn: &Rc<Connection>, handler: &Rc<H>, request: RemotingCommand) {
    if request.is_response() {
        // Responses to requests we initiated (oneway so far) are not awaited by anyone.
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
    match handler.handle(conn, request) {
        Reply::Now(Some(reply)) if !oneway => conn.respond(reply).await,
        Reply::Now(_) => {}
        Reply::Later(future) => {
            conn.inflight.set(conn.inflight.get() + 1);
            let conn = Rc::clone(conn);
            glommio::spawn_local(async move {
                let reply = future.await;
                conn.inflight.set(conn.inflight.get() - 1);
                if let (Some(reply), false) = (reply, oneway) {
                    conn.respond(reply).await;
                }
            })
            .detach();
        }
    }
}

async fn write_loop(mut writer: WriteHalf<TcpStream>, rx: LocalReceiver<Outbound>) {
    let mut buf = BytesMut::with_capacity(CONNECTION_READ_BUFFER_BYTES);
    while let Some(first) = rx.recv().await {
        let mut closing = !encode_outbound(first, &mut buf);
        // Batch whatever else is already queued into the same write.
        while !closing && buf.len() < CONNECTION_READ_BUFFER_BYTES {
            match futures_lite::future::poll_once(rx.recv()).await {
                Some(Some(next)) => closing = !encode_outbound(next, &mut buf),
                _ => break,
            }
        }
        if !buf.is_empty() {
            if let Err(e) = writer.write_all(&buf).await {
                tracing::debug!(error = %e, "write failed; dropping connection");
                return;
            }
            buf.clear();
        }
        if closing {
            let _ = writer.close().await;
            return;
        }
    }
}

/// Encodes a frame into `buf`; false when the writer was told to close.
fn encode_outbound(item: Outbound, buf: &mut BytesMut) -> bool {
    match item {
        Outbound::Frame(cmd) => {
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
