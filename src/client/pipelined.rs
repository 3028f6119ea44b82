//! A pipelined async broker client for glommio executors (loadgen, tools): typed SEND_MESSAGE_V2,
//! SEND_BATCH_MESSAGE, PULL_MESSAGE and GET_MAX/MIN_OFFSET calls returning parsed results, many
//! of them in flight on one connection, responses matched by opaque, each call bounded by a
//! deadline. Speaks only the wire protocol, so it works against ringmq and Java RocketMQ alike.
//!
//! Runs on the executor that created it (`Rc` inside, not `Send`); one per connection. The
//! connection opens lazily on the first call; when it fails every pending call fails at once and
//! the next call reconnects.
//!
//! Why not `net::RpcClient` underneath: it is built for a few control-plane calls and writes
//! each frame with its own `send` syscall and zero-fills a 64 KiB read buffer before every read.
//! At load-generator rates (hundreds of thousands of requests a second) both cost more than the
//! requests themselves, so this link coalesces whatever frames are queued into one write (as the
//! server's writer does) and reads into a buffer that is zeroed once, not per read.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use thiserror::Error;

use super::broker::{decode_messages, PulledMessage};
use crate::limits::{CONNECTION_INFLIGHT_MAX, CONNECTION_READ_BUFFER_BYTES, FRAME_SIZE_MAX_BYTES};
use crate::message::record::{RecordError, RecordView};
use crate::protocol::send::SendRequest;
use crate::remoting::{check_frame, request, response, RemotingCommand, SerializeType, WireError};

/// Bytes the writer coalesces into one write before it sends what it has.
const WRITE_COALESCE_BYTES_MAX: usize = 256 * 1024;

/// Free space below which the reader makes room before reading again.
const READ_SPACE_MIN_BYTES: usize = 16 * 1024;

/// Responses the reader completes before it lets the woken callers run (and the writer send
/// what they queue). Without this, one read of N responses wakes N callers whose N new requests
/// leave in one write, and client and server take turns on whole batches instead of working at
/// the same time.
const COMPLETIONS_PER_YIELD: usize = 8;

/// Why a call failed before a response arrived (or, for offset calls, how the server refused).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CallError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} closed before the response")]
    Closed { addr: String },
    #[error("no response from {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u128 },
    #[error("cannot encode request to {addr}: {source}")]
    Encode { addr: String, source: WireError },
    #[error("{addr} sent a body that does not parse: {reason}")]
    Body { addr: String, reason: String },
    #[error("{addr} answered {code}: {}", remark.as_deref().unwrap_or("(no remark)"))]
    Server {
        addr: String,
        code: i32,
        remark: Option<String>,
    },
}

impl CallError {
    /// A short stable name for counting failures by kind (`connect`, `closed`, `timeout`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Connect { .. } => "connect",
            CallError::Closed { .. } => "closed",
            CallError::Timeout { .. } => "timeout",
            CallError::Encode { .. } => "encode",
            CallError::Body { .. } => "body",
            CallError::Server { .. } => "server",
        }
    }
}

/// A send's answer, whatever its code: the caller decides what a code means (loadgen counts
/// every code that is not SUCCESS as a failure, by code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    pub code: i32,
    /// Queue the broker stored into (-1 when the response has none).
    pub queue_id: i32,
    /// Queue offset of the (first) message (-1 when the response has none).
    pub queue_offset: i64,
    pub remark: Option<String>,
}

/// The fields of a PULL_MESSAGE request that change between calls. The subscription travels
/// in the request (sysFlag bit 2), so no heartbeat is needed, as with Java's pull consumers.
#[derive(Debug, Clone, Copy)]
pub struct PullRequest<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub queue_id: i32,
    pub offset: i64,
    /// At most this many messages (brokers cap it at 32).
    pub max_messages: i32,
    /// Tag expression: `*` or `a || b`.
    pub expression: &'a str,
    /// Long-poll time when nothing is there; 0 answers at once. The client's deadline must
    /// exceed it.
    pub suspend_ms: i64,
}

/// A pull's answer, whatever its code; the records are kept as the broker sent them.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    pub code: i32,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    pub remark: Option<String>,
    /// Stored records back to back (empty unless `code` is SUCCESS).
    pub body: Bytes,
}

impl PullOutcome {
    /// The records of the body, parsed in place (no copies).
    pub fn records(&self) -> Records<'_> {
        Records { rest: &self.body }
    }

    /// The records decoded into owned messages.
    pub fn messages(&self) -> Result<Vec<PulledMessage>, String> {
        decode_messages(&self.body)
    }
}

/// Iterator over the records of a pull body; stops after the first malformed one.
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match RecordView::parse(self.rest) {
            Ok(view) => {
                self.rest = &self.rest[view.total_size..];
                Some(Ok(view))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

type Pending = RefCell<HashMap<i32, LocalSender<RemotingCommand>>>;

/// One open connection: the writer task owns the write half, the reader task the read half.
struct Link {
    outbound: LocalSender<RemotingCommand>,
    pending: Rc<Pending>,
    alive: Rc<Cell<bool>>,
}

/// A pipelined client for one broker address. Contract: any number of calls may be awaited
/// concurrently from tasks of the creating executor; responses complete them in any order.
pub struct PipelinedClient {
    addr: String,
    timeout: Duration,
    serialize_type: SerializeType,
    link: RefCell<Option<Rc<Link>>>,
    next_opaque: Cell<i32>,
}

impl PipelinedClient {
    /// A client for `addr` (`host:port`) whose calls give up after `timeout`; nothing is opened
    /// until the first call. Headers go out as JSON, as the Java client sends them.
    pub fn new(addr: impl Into<String>, timeout: Duration) -> PipelinedClient {
        PipelinedClient {
            addr: addr.into(),
            timeout,
            serialize_type: SerializeType::Json,
            link: RefCell::new(None),
            next_opaque: Cell::new(1),
        }
    }

    /// Sends headers in `serialize_type` (JSON or RocketMQ's binary layout).
    pub fn with_serialize_type(mut self, serialize_type: SerializeType) -> PipelinedClient {
        self.serialize_type = serialize_type;
        self
    }

    /// The peer address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// SEND_MESSAGE_V2 of one message whose header is `header` and body `body`.
    pub async fn send(&self, header: &SendRequest, body: Bytes) -> Result<SendOutcome, CallError> {
        let cmd = header.to_command(request::SEND_MESSAGE_V2).with_body(body);
        Ok(send_outcome(self.invoke(cmd).await?))
    }

    /// SEND_BATCH_MESSAGE: `body` is a batch body (`message::batch::encode`); the header's
    /// `batch` flag is set whatever `header` says.
    pub async fn send_batch(
        &self,
        header: &SendRequest,
        body: Bytes,
    ) -> Result<SendOutcome, CallError> {
        let mut cmd = header.to_command(request::SEND_BATCH_MESSAGE);
        cmd.set_ext("m", "true");
        Ok(send_outcome(self.invoke(cmd.with_body(body)).await?))
    }

    /// PULL_MESSAGE with the subscription in the request.
    pub async fn pull(&self, req: &PullRequest<'_>) -> Result<PullOutcome, CallError> {
        let sys_flag = 0x4 | if req.suspend_ms > 0 { 0x2 } else { 0 };
        let cmd = RemotingCommand::request(request::PULL_MESSAGE)
            .with_ext("consumerGroup", req.group)
            .with_ext("topic", req.topic)
            .with_ext("queueId", req.queue_id.to_string())
            .with_ext("queueOffset", req.offset.to_string())
            .with_ext("maxMsgNums", req.max_messages.to_string())
            .with_ext("sysFlag", sys_flag.to_string())
            .with_ext("commitOffset", "0")
            .with_ext("suspendTimeoutMillis", req.suspend_ms.to_string())
            .with_ext("subscription", req.expression)
            .with_ext("subVersion", now_ms().to_string())
            .with_ext("expressionType", "TAG");
        let reply = self.invoke(cmd).await?;
        Ok(PullOutcome {
            code: reply.code,
            next_begin_offset: ext_i64(&reply, "nextBeginOffset"),
            min_offset: ext_i64(&reply, "minOffset"),
            max_offset: ext_i64(&reply, "maxOffset"),
            body: match reply.code {
                response::SUCCESS => reply.body.clone(),
                _ => Bytes::new(),
            },
            remark: reply.remark,
        })
    }

    /// GET_MAX_OFFSET: the offset the next message of the queue will get.
    pub async fn max_offset(&self, topic: &str, queue_id: i32) -> Result<i64, CallError> {
        self.offset_call(request::GET_MAX_OFFSET, topic, queue_id)
            .await
    }

    /// GET_MIN_OFFSET: the oldest offset still stored.
    pub async fn min_offset(&self, topic: &str, queue_id: i32) -> Result<i64, CallError> {
        self.offset_call(request::GET_MIN_OFFSET, topic, queue_id)
            .await
    }

    async fn offset_call(&self, code: i32, topic: &str, queue_id: i32) -> Result<i64, CallError> {
        let cmd = RemotingCommand::request(code)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id.to_string());
        let reply = self.invoke(cmd).await?;
        if reply.code != response::SUCCESS {
            return Err(CallError::Server {
                addr: self.addr.clone(),
                code: reply.code,
                remark: reply.remark,
            });
        }
        Ok(ext_i64(&reply, "offset"))
    }

    /// Sends `request` and waits for its response, whatever its code, until the deadline.
    pub async fn invoke(&self, mut request: RemotingCommand) -> Result<RemotingCommand, CallError> {
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
        response.map_err(|()| match link.alive.get() {
            true => CallError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: self.timeout.as_millis(),
            },
            false => self.closed(),
        })
    }

    fn closed(&self) -> CallError {
        CallError::Closed {
            addr: self.addr.clone(),
        }
    }

    fn opaque(&self) -> i32 {
        let opaque = self.next_opaque.get();
        self.next_opaque.set(opaque.wrapping_add(1) & i32::MAX);
        opaque
    }

    async fn link(&self) -> Result<Rc<Link>, CallError> {
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
            .map_err(|e| CallError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = futures_lite::io::split(stream);
        let pending: Rc<Pending> = Rc::default();
        let alive = Rc::new(Cell::new(true));
        let (outbound, frames) = local_channel::new_bounded(CONNECTION_INFLIGHT_MAX);
        glommio::spawn_local(read_responses(
            reader,
            Rc::clone(&pending),
            Rc::clone(&alive),
        ))
        .detach();
        glommio::spawn_local(write_frames(writer, frames, Rc::clone(&alive))).detach();
        let link = Rc::new(Link {
            outbound,
            pending,
            alive,
        });
        *self.link.borrow_mut() = Some(Rc::clone(&link));
        Ok(link)
    }
}

fn send_outcome(reply: RemotingCommand) -> SendOutcome {
    SendOutcome {
        code: reply.code,
        queue_id: ext_i64(&reply, "queueId") as i32,
        queue_offset: ext_i64(&reply, "queueOffset"),
        remark: reply.remark,
    }
}

fn ext_i64(cmd: &RemotingCommand, key: &str) -> i64 {
    cmd.ext(key).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Encodes queued requests into one buffer and writes it with one call: with many requests in
/// flight, one syscall carries all of those queued since the last write.
async fn write_frames(
    mut writer: WriteHalf<TcpStream>,
    frames: LocalReceiver<RemotingCommand>,
    alive: Rc<Cell<bool>>,
) {
    let mut buf = BytesMut::with_capacity(WRITE_COALESCE_BYTES_MAX);
    while let Some(first) = frames.recv().await {
        encode_into(&first, &mut buf);
        while buf.len() < WRITE_COALESCE_BYTES_MAX {
            match future::poll_once(frames.recv()).await {
                Some(Some(next)) => encode_into(&next, &mut buf),
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

/// A request that cannot be encoded is not sent; its caller times out. Only oversized headers
/// get here, which the caller's own input produced.
fn encode_into(cmd: &RemotingCommand, buf: &mut BytesMut) {
    let mark = buf.len();
    if cmd.encode(buf).is_err() {
        buf.truncate(mark);
    }
}

/// Reads responses and completes their calls. The buffer is zero-filled once; after that only
/// the bytes handed out as frames are replaced, so the cost per read follows the bytes read.
async fn read_responses(
    mut reader: ReadHalf<TcpStream>,
    pending: Rc<Pending>,
    alive: Rc<Cell<bool>>,
) {
    let mut buf = BytesMut::zeroed(CONNECTION_READ_BUFFER_BYTES);
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
                            complete(&pending, cmd);
                            completed += 1;
                            if completed % COMPLETIONS_PER_YIELD == 0 {
                                futures_lite::future::yield_now().await;
                            }
                        }
                        // Requests from the broker (e.g. NOTIFY_CONSUMER_IDS_CHANGED) need no
                        // answer from a client that sends no heartbeats.
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
        let grow_to = want.max(filled + CONNECTION_READ_BUFFER_BYTES);
        buf.resize(grow_to, 0);
    }
}

fn complete(pending: &Pending, cmd: RemotingCommand) {
    if let Some(tx) = pending.borrow_mut().remove(&cmd.opaque) {
        let _ = tx.try_send(cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namesrv::{self, NamesrvOptions};
    use crate::runtime::Shutdown;

    fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .make()
            .expect("executor")
            .run(fut)
    }

    #[test]
    fn hundreds_of_pipelined_calls_each_get_their_own_response() {
        let ns = namesrv::start(
            NamesrvOptions::new("127.0.0.1:0".parse().unwrap()),
            Shutdown::new(),
        )
        .expect("nameserver");
        let addr = ns.local_addr.to_string();
        let answers = run(async move {
            let client = Rc::new(PipelinedClient::new(addr, Duration::from_secs(5)));
            let calls: Vec<_> = (0..300)
                .map(|i| {
                    let client = Rc::clone(&client);
                    glommio::spawn_local(async move {
                        let topic = format!("T{i}");
                        let req = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC)
                            .with_ext("topic", topic.as_str());
                        let resp = client.invoke(req).await.expect("answered");
                        (resp.code, resp.remark.unwrap_or_default().contains(&topic))
                    })
                })
                .collect();
            let mut out = Vec::new();
            for call in calls {
                out.push(call.await);
            }
            out
        });
        assert_eq!(answers.len(), 300);
        assert!(answers
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
            let client = PipelinedClient::new(silent_addr, Duration::from_millis(200));
            let timeout = client.max_offset("T", 0).await;
            let client = PipelinedClient::new(closed_addr, Duration::from_millis(200));
            let refused = client.max_offset("T", 0).await;
            (timeout, refused)
        });
        assert!(
            matches!(timeout, Err(CallError::Timeout { .. })),
            "{timeout:?}"
        );
        assert!(
            matches!(refused, Err(CallError::Connect { .. })),
            "{refused:?}"
        );
        assert_eq!(refused.unwrap_err().kind(), "connect");
        drop(silent);
    }

    #[test]
    fn records_iterates_and_stops_at_garbage() {
        let outcome = PullOutcome {
            code: response::SUCCESS,
            next_begin_offset: 0,
            min_offset: 0,
            max_offset: 0,
            remark: None,
            body: Bytes::from_static(&[0, 0, 0, 40, 1, 2, 3, 4]),
        };
        let items: Vec<_> = outcome.records().collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
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
