//! A pipelined async broker client for glommio executors (loadgen, tools): typed SEND_MESSAGE_V2,
//! SEND_BATCH_MESSAGE, PULL_MESSAGE and GET_MAX/MIN_OFFSET calls returning parsed results, many
//! of them in flight on one connection, responses matched by opaque, each call bounded by a
//! deadline. Speaks only the wire protocol, so it works against ringmq and Java RocketMQ alike.
//!
//! Runs on the executor that created it (`Rc` inside, not `Send`); one per connection. The
//! connection opens lazily on the first call; when it fails every pending call fails at once and
//! the next call reconnects.
//!
//! The connection itself is `net::RpcClient` (batched writes, fair reads); this module adds
//! the typed calls and their parsed results.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use thiserror::Error;

use super::broker::{decode_messages, PulledMessage};
use crate::message::record::{RecordError, RecordView};
use crate::net::{RpcClient, RpcError};
use crate::protocol::send::SendRequest;
use crate::remoting::{request, response, RemotingCommand, SerializeType, WireError};

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
    pub fn messages(&self) -> Result<Vec<PulledMessage>, crate::message::record::RecordError> {
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

/// A pipelined client for one broker address. Contract: any number of calls may be awaited
/// concurrently from tasks of the creating executor; responses complete them in any order.
pub struct PipelinedClient {
    rpc: RpcClient,
    /// Signs every request (RocketMQ's ACL) when set.
    credentials: Option<crate::acl::Credentials>,
}

impl PipelinedClient {
    /// A client for `addr` (`host:port`) whose calls give up after `timeout`; nothing is opened
    /// until the first call. Headers go out as JSON, as the Java client sends them.
    pub fn new(addr: impl Into<String>, timeout: Duration) -> PipelinedClient {
        PipelinedClient {
            rpc: RpcClient::new(addr, timeout),
            credentials: None,
        }
    }

    /// Sends headers in `serialize_type` (JSON or RocketMQ's binary layout).
    pub fn with_serialize_type(self, serialize_type: SerializeType) -> PipelinedClient {
        PipelinedClient {
            rpc: self.rpc.with_serialize_type(serialize_type),
            credentials: self.credentials,
        }
    }

    /// Signs every request with `credentials` (RocketMQ's ACL; `None`: unsigned).
    pub fn with_credentials(self, credentials: Option<crate::acl::Credentials>) -> PipelinedClient {
        PipelinedClient {
            credentials,
            ..self
        }
    }

    /// The peer address.
    pub fn addr(&self) -> &str {
        self.rpc.addr()
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
                addr: self.addr().to_string(),
                code: reply.code,
                remark: reply.remark,
            });
        }
        Ok(ext_i64(&reply, "offset"))
    }

    /// Sends `request` and waits for its response, whatever its code, until the deadline.
    pub async fn invoke(&self, mut request: RemotingCommand) -> Result<RemotingCommand, CallError> {
        if let Some(credentials) = &self.credentials {
            crate::acl::sign(&mut request, credentials);
        }
        self.rpc.invoke(request).await.map_err(|e| match e {
            RpcError::Connect { addr, reason } => CallError::Connect { addr, reason },
            RpcError::Closed { addr } => CallError::Closed { addr },
            RpcError::Timeout { addr, timeout_ms } => CallError::Timeout { addr, timeout_ms },
            RpcError::Encode { addr, source } => CallError::Encode { addr, source },
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namesrv::{self, NamesrvOptions};
    use crate::runtime::Shutdown;
    use std::rc::Rc;

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
}
