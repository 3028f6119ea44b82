//! Typed broker calls for tests, admin and scripts: send, pull, heartbeat, offsets. Speaks only
//! the wire protocol, so it works against any RocketMQ 4.x broker.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{ClientError, Connection};
use crate::message::properties::Properties;
use crate::message::record::{RecordError, RecordView};
use crate::protocol::heartbeat::HeartbeatData;
use crate::protocol::send::SendRequest;
use crate::remoting::{request, response, RemotingCommand};

/// What a send returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub code: i32,
    pub msg_id: String,
    pub queue_id: i32,
    pub queue_offset: i64,
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct OutgoingMessage {
    pub topic: String,
    pub queue_id: i32,
    pub body: Vec<u8>,
    pub properties: Properties,
    pub flag: i32,
}

/// One message as pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledMessage {
    pub topic: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub body: Vec<u8>,
    pub properties: Properties,
    pub store_timestamp: i64,
}

/// Request-reply (RocketMQ 4.6+) as `MessageUtil.createReplyMessage` builds a reply: to
/// `<CLUSTER>_REPLY_TOPIC` of the request's CLUSTER (set by the broker that stored it), typed
/// `reply`, with the request's CORRELATION_ID, REPLY_TO_CLIENT and TTL. `None` when the
/// request has no CLUSTER (Java refuses to build such a reply).
pub fn reply_to(request: &PulledMessage, body: Vec<u8>) -> Option<OutgoingMessage> {
    let cluster = request
        .properties
        .get(crate::message::properties::CLUSTER)?;
    let mut properties = Properties::default();
    properties.set("MSG_TYPE", "reply");
    for key in ["CORRELATION_ID", "REPLY_TO_CLIENT", "TTL"] {
        if let Some(value) = request.properties.get(key) {
            properties.set(key, value);
        }
    }
    Some(OutgoingMessage {
        topic: format!("{cluster}_REPLY_TOPIC"),
        queue_id: 0,
        body,
        properties,
        flag: 0,
    })
}

/// A pull's answer.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub code: i32,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    pub messages: Vec<PulledMessage>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn ext_i64(cmd: &RemotingCommand, key: &str) -> i64 {
    cmd.ext(key).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

/// A PULL_MESSAGE request with its subscription (TAG) in it; `suspend_ms` > 0 long-polls.
pub fn pull_command(
    group: &str,
    topic: &str,
    queue_id: i32,
    offset: i64,
    max: i32,
    expression: &str,
    suspend_ms: i64,
) -> RemotingCommand {
    let sys_flag = 0x4 | if suspend_ms > 0 { 0x2 } else { 0 };
    RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue_id.to_string())
        .with_ext("queueOffset", offset.to_string())
        .with_ext("maxMsgNums", max.to_string())
        .with_ext("sysFlag", sys_flag.to_string())
        .with_ext("commitOffset", "0")
        .with_ext("suspendTimeoutMillis", suspend_ms.to_string())
        .with_ext("subscription", expression)
        .with_ext("subVersion", now_ms().to_string())
        .with_ext("expressionType", "TAG")
}

/// Decodes a pull body: stored records back to back.
pub fn decode_messages(body: &[u8]) -> Result<Vec<PulledMessage>, RecordError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let view = RecordView::parse(rest)?;
        out.push(PulledMessage {
            topic: view.topic.to_string(),
            queue_id: view.queue_id,
            queue_offset: view.queue_offset,
            physical_offset: view.physical_offset,
            body: view.body.to_vec(),
            properties: Properties::parse(view.properties),
            store_timestamp: view.store_timestamp,
        });
        rest = &rest[view.total_size..];
    }
    Ok(out)
}

impl Connection {
    /// SEND_MESSAGE_V2 of one message from `producer_group`.
    pub fn send_message(
        &mut self,
        producer_group: &str,
        msg: &OutgoingMessage,
    ) -> Result<SendResult, ClientError> {
        let reply = self.send_raw(request::SEND_MESSAGE_V2, producer_group, msg)?;
        if ![
            response::SUCCESS,
            response::FLUSH_DISK_TIMEOUT,
            response::FLUSH_SLAVE_TIMEOUT,
            response::SLAVE_NOT_AVAILABLE,
        ]
        .contains(&reply.code)
        {
            return Err(self.server_error(reply));
        }
        Ok(SendResult {
            code: reply.code,
            msg_id: reply.ext("msgId").unwrap_or_default().to_string(),
            queue_id: ext_i64(&reply, "queueId") as i32,
            queue_offset: ext_i64(&reply, "queueOffset"),
        })
    }

    /// Sends `msg` as request `code` (a send: 10, 310; a reply: 324, 325) and returns the
    /// answer whatever its code.
    pub fn send_raw(
        &mut self,
        code: i32,
        producer_group: &str,
        msg: &OutgoingMessage,
    ) -> Result<RemotingCommand, ClientError> {
        let header = SendRequest {
            producer_group: producer_group.into(),
            topic: msg.topic.clone(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: msg.queue_id,
            sys_flag: 0,
            born_timestamp: now_ms(),
            flag: msg.flag,
            properties: msg.properties.to_wire(),
            reconsume_times: 0,
            unit_mode: false,
            max_reconsume_times: None,
            batch: false,
        };
        let cmd = header.to_command(code).with_body(msg.body.clone());
        self.invoke(cmd)
    }

    /// Answers a request the server pushed (PUSH_REPLY_MESSAGE_TO_CLIENT, …) with `code`.
    pub fn answer(&mut self, pushed: &RemotingCommand, code: i32) -> Result<(), ClientError> {
        let frame = pushed
            .response_to(code, None)
            .to_frame()
            .map_err(|source| ClientError::Wire {
                addr: self.addr().to_string(),
                source,
            })?;
        self.write_all(&frame)
    }

    /// PULL_MESSAGE with the subscription in the request (`expression` = `*` or `a || b`);
    /// `suspend_ms` > 0 long-polls. The arguments are the request's own fields, in its order.
    #[allow(clippy::too_many_arguments)]
    pub fn pull(
        &mut self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max: i32,
        expression: &str,
        suspend_ms: i64,
    ) -> Result<PullResult, ClientError> {
        let cmd = pull_command(group, topic, queue_id, offset, max, expression, suspend_ms);
        self.pull_with(cmd)
    }

    /// [`Connection::pull`] with an SQL92 expression (`MessageSelector.bySql`).
    pub fn pull_sql(
        &mut self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max: i32,
        sql: &str,
    ) -> Result<PullResult, ClientError> {
        let mut cmd = pull_command(group, topic, queue_id, offset, max, sql, 0);
        cmd.set_ext("expressionType", "SQL92");
        self.pull_with(cmd)
    }

    /// Sends a PULL_MESSAGE request as it is and decodes the answer.
    pub fn pull_with(&mut self, cmd: RemotingCommand) -> Result<PullResult, ClientError> {
        let reply = self.invoke(cmd)?;
        if ![
            response::SUCCESS,
            response::PULL_NOT_FOUND,
            response::PULL_RETRY_IMMEDIATELY,
            response::PULL_OFFSET_MOVED,
        ]
        .contains(&reply.code)
        {
            return Err(self.server_error(reply));
        }
        let messages = decode_messages(&reply.body).map_err(|e| ClientError::Body {
            addr: self.addr().to_string(),
            reason: e.to_string(),
        })?;
        Ok(PullResult {
            code: reply.code,
            next_begin_offset: ext_i64(&reply, "nextBeginOffset"),
            min_offset: ext_i64(&reply, "minOffset"),
            max_offset: ext_i64(&reply, "maxOffset"),
            messages,
        })
    }

    /// HEART_BEAT.
    pub fn heartbeat(&mut self, data: &HeartbeatData) -> Result<(), ClientError> {
        let body = serde_json::to_vec(data).unwrap_or_default();
        self.call(RemotingCommand::request(request::HEART_BEAT).with_body(body))
            .map(drop)
    }

    /// A queue call answered with an `offset` header (14, 30, 31, 29).
    pub fn offset_call(&mut self, code: i32, fields: &[(&str, &str)]) -> Result<i64, ClientError> {
        let mut cmd = RemotingCommand::request(code);
        for (k, v) in fields {
            cmd.set_ext(*k, *v);
        }
        let reply = self.call(cmd)?;
        Ok(ext_i64(&reply, "offset"))
    }

    fn server_error(&self, reply: RemotingCommand) -> ClientError {
        ClientError::Server {
            addr: self.addr().to_string(),
            code: reply.code,
            name: response::name(reply.code).unwrap_or("UNKNOWN"),
            remark: reply.remark,
        }
    }
}
