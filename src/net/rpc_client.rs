//! Outbound remoting calls from a glommio executor (broker → nameserver registration, and the
//! typed `client::pipelined` of loadgen and tools): one lazily opened connection per peer with
//! any number of calls in flight, responses matched to requests by opaque, each call bounded by
//! a deadline. On a connection failure every pending call fails at once and the next call
//! reconnects.
//!
//! Built for high request rates as well as control-plane calls: the writer coalesces whatever
//! frames are queued into one write (as the server's writer does), and the reader reads into a
//! buffer zeroed once, not per read, and lets woken callers run every few completions.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use thiserror::Error;

use crate::limits::{CLIENT_READ_BUFFER_BYTES, CONNECTION_INFLIGHT_MAX, FRAME_SIZE_MAX_BYTES};
use crate::remoting::{check_frame, RemotingCommand, SerializeType, WireError};

/// Bytes the writer coalesces into one write before it sends what it has.
const WRITE_COALESCE_BYTES_MAX: usize = 256 * 1024;

/// Free space below which the reader makes room before reading again.
const READ_SPACE_MIN_BYTES: usize = 16 * 1024;

/// Responses the reader completes before it lets the woken callers run (and the writer send
/// what they queue). Without this, one read of N responses wakes N callers whose N new requests
/// leave in one write, and client and server take turns on whole batches instead of working at
/// the same time.
const COMPLETIONS_PER_YIELD: usize = 8;

/// Why an outbound call failed before a response arrived.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RpcError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} closed before the response")]
    Closed { addr: String },
    #[error("no response from {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u128 },
    #[error("cannot encode request to {addr}: {source}")]
    Encode { addr: String, source: WireError },
}

/// What completes a call: the response, or the reason its request could not be encoded.
type Completion = Result<RemotingCommand, WireError>;
type Pending = RefCell<HashMap<i32, LocalSender<Completion>>>;

/// One open connection: the writer task owns the write half, the reader task the read half.
struct Link {
    outbound: LocalSender<RemotingCommand>,
    pending: Rc<Pending>,
    alive: Rc<Cell<bool>>,
}

/// A client for one peer address. Contract: any number of calls may be awaited concurrently
/// from tasks of the creating executor; responses complete them in any order.
pub struct RpcClient {
    addr: String,
    timeout: Duration,
    serialize_type: SerializeType,
    link: RefCell<Option<Rc<Link>>>,
    next_opaque: Cell<i32>,
}

impl RpcClient {
    /// A client for `addr` (`host:port`) whose calls give up after `timeout`; nothing is opened
    /// until the first call. Headers go out as JSON, as the Java client sends them.
    pub fn new(addr: impl Into<String>, timeout: Duration) -> RpcClient {
        RpcClient {
            addr: addr.into(),
            timeout,
            serialize_type: SerializeType::Json,
            link: RefCell::new(None),
            next_opaque: Cell::new(1),
        }
    }

    /// Sends headers in `serialize_type` (JSON or RocketMQ's binary layout).
    pub fn with_serialize_type(mut self, serialize_type: SerializeType) -> RpcClient {
        self.serialize_type = serialize_type;
        self
    }

    /// The peer address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` and waits for its response, whatever its code, until the deadline.
    pub async fn invoke(&self, mut request: RemotingCommand) -> Result<RemotingCommand, RpcError> {
        let link = self.link().await?;
        request.opaque = self.opaque();
        request.serialize_type = self.serialize_type;
        let opaque = request.opaque;
        let (tx, rx) = local_channel::new_bounded(1);
        link.pending.borrow_mut().insert(opaque, tx);
        if link.outbound.send(request).await.is_err() {
            link.alive.set(false);
            link.pending.borrow_mut().remove(&opaque);
            return Err(self.closed());
        }
        let response = future::or(async { rx.recv().await.ok_or(()) }, async {
            glommio::timer::sleep(self.timeout).await;
            Err(())
        })
        .await;
        link.pending.borrow_mut().remove(&opaque);
        match response {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(source)) => Err(RpcError::Encode {
                addr: self.addr.clone(),
                source,
            }),
            Err(()) if link.alive.get() => Err(RpcError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: self.timeout.as_millis(),
            }),
            Err(()) => Err(self.closed()),
        }
    }

    fn closed(&self) -> RpcError {
        RpcError::Closed {
            addr: self.addr.clone(),
        }
    }

    fn opaque(&self) -> i32 {
        let opaque = self.next_opaque.get();
        self.next_opaque.set(opaque.wrapping_add(1) & i32::MAX);
        opaque
    }

    async fn link(&self) -> Result<Rc<Link>, RpcError> {
        if let Some(link) = self.link.borrow().as_ref().filter(|l| l.alive.get()) {
            return Ok(Rc::clone(link));
        }
        let connect = TcpStream::connect(self.addr.as_str());
        let timeout = async {
            glommio::timer::sleep(self.timeout).await;
            Err(glommio::GlommioError::IoError(std::io::Error::other(
                "timed out",
            )))
        };
        let stream = future::or(connect, timeout)
            .await
            .map_err(|e| RpcError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = futures_lite::io::split(stream);
        let pending: Rc<Pending> = Rc::default();
        let alive = Rc::new(Cell::new(true));
        let (outbound, frames) = local_channel::new_bounded(CONNECTION_INFLIGHT_MAX);
        let read = read_responses(reader, Rc::clone(&pending), Rc::clone(&alive));
        glommio::spawn_local(read).detach();
        let write = write_frames(writer, frames, Rc::clone(&pending), Rc::clone(&alive));
        glommio::spawn_local(write).detach();
        let link = Rc::new(Link {
            outbound,
            pending,
            alive,
        });
        *self.link.borrow_mut() = Some(Rc::clone(&link));
        Ok(link)
    }
}

/// Encodes queued requests into one buffer and writes it with one call: with many requests in
/// flight, one syscall carries all of those queued since the last write.
async fn write_frames(
    mut writer: WriteHalf<TcpStream>,
    frames: LocalReceiver<RemotingCommand>,
    pending: Rc<Pending>,
    alive: Rc<Cell<bool>>,
) {
    let mut buf = BytesMut::with_capacity(WRITE_COALESCE_BYTES_MAX);
    while let Some(first) = frames.recv().await {
        encode_into(&first, &mut buf, &pending);
        while buf.len() < WRITE_COALESCE_BYTES_MAX {
            match future::poll_once(frames.recv()).await {
                Some(Some(next)) => encode_into(&next, &mut buf, &pending),
                _ => break,
            }
        }
        if buf.is_empty() {
            continue;
        }
        if writer.write_all(&buf).await.is_err() || !alive.get() {
            break;
        }
        buf.clear();
    }
    alive.set(false);
}

/// Appends `cmd`'s frame to `buf`; a request that cannot be encoded (an oversized header) is
/// not sent and its call fails at once with the reason.
fn encode_into(cmd: &RemotingCommand, buf: &mut BytesMut, pending: &Pending) {
    let mark = buf.len();
    if let Err(e) = cmd.encode(buf) {
        buf.truncate(mark);
        if let Some(tx) = pending.borrow_mut().remove(&cmd.opaque) {
            let _ = tx.try_send(Err(e));
        }
    }
}

/// Reads responses and completes their calls. The buffer is zero-filled once; after that only
/// the bytes handed out as frames are replaced, so the cost per read follows the bytes read.
async fn read_responses(
    mut reader: ReadHalf<TcpStream>,
    pending: Rc<Pending>,
    alive: Rc<Cell<bool>>,
) {
    let mut buf = BytesMut::zeroed(CLIENT_READ_BUFFER_BYTES);
    let mut filled = 0;
    let mut completed = 0;
    'read: loop {
        loop {
            match check_frame(&buf[..filled], FRAME_SIZE_MAX_BYTES) {
                Ok(Some(total)) => {
                    let frame = buf.split_to(total).freeze();
                    filled -= total;
                    match RemotingCommand::decode(frame) {
                        Ok(cmd) if cmd.is_response() => {
                            if let Some(tx) = pending.borrow_mut().remove(&cmd.opaque) {
                                let _ = tx.try_send(Ok(cmd));
                            }
                            completed += 1;
                            if completed % COMPLETIONS_PER_YIELD == 0 {
                                future::yield_now().await;
                            }
                        }
                        // Requests from the peer (e.g. NOTIFY_CONSUMER_IDS_CHANGED to a client
                        // that sends no heartbeats) need no answer here.
                        Ok(_) => {}
                        Err(_) => break 'read,
                    }
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
        make_room(&mut buf, filled);
        match reader.read(&mut buf[filled..]).await {
            Ok(n) if n > 0 => filled += n,
            _ => break,
        }
    }
    alive.set(false);
    // Dropping the senders fails every pending call at once.
    pending.borrow_mut().clear();
}

/// Ensures at least `READ_SPACE_MIN_BYTES` (and room for the frame being assembled) past
/// `filled`, zeroing only what is added.
fn make_room(buf: &mut BytesMut, filled: usize) {
    let declared = match buf.get(..4) {
        Some(b) if filled >= 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize + 4,
        _ => 0,
    };
    let want = (filled + READ_SPACE_MIN_BYTES).max(declared);
    if buf.len() < want {
        let grow_to = want.max(filled + CLIENT_READ_BUFFER_BYTES);
        buf.resize(grow_to, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namesrv::{self, NamesrvOptions};
    use crate::remoting::{request, response};
    use crate::runtime::Shutdown;
    use bytes::BytesMut;

    fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .make()
            .expect("executor")
            .run(fut)
    }

    #[test]
    fn pipelined_calls_get_their_own_responses() {
        let ns = namesrv::start(
            NamesrvOptions::new("127.0.0.1:0".parse().unwrap()),
            Shutdown::new(),
        )
        .expect("nameserver");
        let addr = ns.local_addr.to_string();
        let codes = run(async move {
            let client = Rc::new(RpcClient::new(addr, Duration::from_secs(5)));
            let calls = (0..50).map(|i| {
                let client = Rc::clone(&client);
                glommio::spawn_local(async move {
                    let topic = format!("T{i}");
                    let req = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC)
                        .with_ext("topic", topic.as_str());
                    let resp = client.invoke(req).await.expect("answered");
                    (resp.code, resp.remark.unwrap_or_default().contains(&topic))
                })
            });
            let mut out = Vec::new();
            for task in calls.collect::<Vec<_>>() {
                out.push(task.await);
            }
            out
        });
        assert!(codes
            .iter()
            .all(|(code, mine)| *code == response::TOPIC_NOT_EXIST && *mine));
        ns.stop();
    }

    #[test]
    fn silent_peer_times_out_and_refused_peer_fails_to_connect() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let (timeout, refused) = run(async move {
            let client = RpcClient::new(silent_addr, Duration::from_millis(200));
            let timeout = client
                .invoke(RemotingCommand::request(request::HEART_BEAT))
                .await;
            let client = RpcClient::new(closed_addr, Duration::from_millis(200));
            let refused = client
                .invoke(RemotingCommand::request(request::HEART_BEAT))
                .await;
            (timeout, refused)
        });
        assert!(
            matches!(timeout, Err(RpcError::Timeout { .. })),
            "{timeout:?}"
        );
        assert!(
            matches!(refused, Err(RpcError::Connect { .. })),
            "{refused:?}"
        );
        drop(silent);
    }

    #[test]
    fn make_room_grows_for_a_large_frame_and_keeps_bytes() {
        let mut buf = BytesMut::zeroed(64);
        buf[..4].copy_from_slice(&100_000u32.to_be_bytes());
        buf[4] = 7;
        make_room(&mut buf, 5);
        assert!(buf.len() >= 100_004);
        assert_eq!(buf[4], 7);
    }
}
