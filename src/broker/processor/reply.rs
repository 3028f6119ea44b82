//! Request-reply (RocketMQ 4.6+): SEND_REPLY_MESSAGE (324, long field names) and
//! SEND_REPLY_MESSAGE_V2 (325, letters) carry a responder's reply, addressed to the requesting
//! producer by the `REPLY_TO_CLIENT` property its request carried (with `CORRELATION_ID`, which
//! the requester matches it by). As Java's `ReplyMessageProcessor`:
//!
//! 1. the reply is checked like a send (topic name, auto-creation, write permission, queue);
//! 2. it is pushed to the requester's connection with PUSH_REPLY_MESSAGE_TO_CLIENT (326) and
//!    the requester's answer awaited (at most [`PUSH_TIMEOUT`]); the connection is found by
//!    client id in the control shard's producer registry and may live on any shard;
//! 3. with `storeReplyMessageEnable` (default true) it is also stored, on its topic
//!    (`<cluster>_REPLY_TOPIC`), whatever the push did.
//!
//! The answer follows the push: SUCCESS (msgId, queue and offset of the stored copy; "0" and 0
//! when not stored), else SYSTEM_ERROR with Java's remark — the requester is gone ("push reply
//! message fail, channel of <id> not found."), refused or did not answer ("push reply message
//! to <id>fail."), or the reply names none ("reply message properties[REPLY_TO_CLIENT] is
//! null").

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::admin::ShardStats;
use super::errors::{PushFailure, PushReplyError};
use super::send::{check_body_size, check_writable, element_record, send_topic};
use super::{field_failure, Failure};
use crate::broker::consumer_groups::{ChannelId, ClientRegistry};
use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::{MeshRequest, MeshResponse, Origin};
use crate::broker::services::connections::Connections;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::puts::Puts;
use crate::broker::services::topic_creation::TopicCreation;
use crate::broker::services::topics::TopicReplica;
use crate::broker::topic_config::check_send_topic;
use crate::message::offset_msg_id;
use crate::message::properties::Properties;
use crate::net::invoke::InvokeError;
use crate::protocol::send::{SendRequest, SendResponse};
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::store::{Clock, SystemClock};

/// How long the requester has to answer a pushed reply (Java's `callClient` timeout).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// `MessageConst.PROPERTY_MESSAGE_REPLY_TO_CLIENT`: the requester's client id.
pub const REPLY_TO_CLIENT: &str = "REPLY_TO_CLIENT";
/// `MessageConst.PROPERTY_CORRELATION_ID`: matches a reply to its request.
pub const CORRELATION_ID: &str = "CORRELATION_ID";
/// `MessageConst.PROPERTY_PUSH_REPLY_TIME`: when the broker pushed the reply.
pub const PUSH_REPLY_TIME: &str = "PUSH_REPLY_TIME";

/// What a reply touches: a send's services, the control shard's client registry (`None`
/// elsewhere: asked over the mesh) and the connections pushes go out on.
pub(crate) struct Replier<'a, C> {
    pub ctx: &'a BrokerContext,
    pub topics: &'a TopicReplica,
    pub creation: &'a C,
    pub puts: Puts<'a>,
    pub stats: &'a ShardStats,
    pub clients: Option<&'a RefCell<ClientRegistry>>,
    pub mesh: &'a MeshClient,
    pub connections: &'a Connections,
}

impl<C: TopicCreation> Replier<'_, C> {
    /// Answers a reply; a push that failed is told to `refused` (counted and logged as a
    /// refusal) before the answer goes back.
    pub(crate) async fn send_reply(
        &self,
        origin: Origin,
        cmd: &RemotingCommand,
        refused: impl FnOnce(i32, &str),
    ) -> Result<RemotingCommand, Failure> {
        let mut request = SendRequest::from_command(cmd).map_err(field_failure)?;
        request.batch = false;
        check_writable(self.ctx)?;
        check_send_topic(&request.topic).map_err(super::failure::topic_name)?;
        let topic = send_topic(self.topics, self.creation, &request).await?;
        check_body_size(self.ctx, cmd)?;
        let queues = topic.write_queue_nums.max(topic.read_queue_nums);
        let queue_id = if request.queue_id < 0 {
            // Java picks a random write queue; the reply topic has one.
            (SystemClock.now_ms() % i64::from(topic.write_queue_nums.max(1))) as i32
        } else if request.queue_id >= queues {
            let remark = format!(
                "request queueId[{}] is illegal, topic:[{}] topicConfig.writeQueueNums:[{}] producer:[{}]",
                request.queue_id, request.topic, topic.write_queue_nums, request.producer_group
            );
            return Err((resp::SYSTEM_ERROR, remark));
        } else {
            request.queue_id
        };
        let pushed = self.push_reply(origin, &request, queue_id, cmd).await;
        let mut response = match pushed {
            Ok(()) => cmd.response_to(resp::SUCCESS, None),
            Err(e) => {
                let (code, remark) = super::failure::push_reply(e);
                // Counted and logged as refusals are (one WARN line per peer every 10 s).
                refused(code, &remark);
                cmd.response_to(code, Some(remark))
            }
        };
        let mut header = SendResponse {
            msg_id: "0".into(),
            queue_id,
            queue_offset: 0,
            transaction_id: None,
            region_id: self.ctx.cfg.region_id.clone(),
            trace_on: self.ctx.cfg.trace_on,
        };
        if self.ctx.cfg.store_reply_message_enable {
            match self
                .store_reply(origin, &request, queue_id, &cmd.body)
                .await
            {
                Ok((msg_id, queue_offset)) => {
                    header.msg_id = msg_id;
                    header.queue_offset = queue_offset;
                }
                // As Java: the answer is the push's. The store's own refusal (disk full, …)
                // is logged by the store, rate-limited.
                Err((_, e)) => tracing::debug!(error = %e, "reply message not stored"),
            }
        }
        header.apply(&mut response);
        Ok(response)
    }

    /// Pushes the reply to the requester named by its REPLY_TO_CLIENT; the error is Java's
    /// remark.
    async fn push_reply(
        &self,
        origin: Origin,
        request: &SendRequest,
        queue_id: i32,
        cmd: &RemotingCommand,
    ) -> Result<(), PushReplyError> {
        let mut props = Properties::parse(&request.properties);
        let Some(requester) = props.get(REPLY_TO_CLIENT).map(str::to_string) else {
            return Err(PushReplyError::NoRequester);
        };
        let Some(channel) = self.producer_channel_of(&requester).await else {
            return Err(PushReplyError::NoChannel(requester));
        };
        let now = SystemClock.now_ms();
        props.set(PUSH_REPLY_TIME, &now.to_string());
        let push = RemotingCommand::request(req::PUSH_REPLY_MESSAGE_TO_CLIENT)
            .with_ext("producerGroup", request.producer_group.as_str())
            .with_ext("topic", request.topic.as_str())
            .with_ext("defaultTopic", request.default_topic.as_str())
            .with_ext(
                "defaultTopicQueueNums",
                request.default_topic_queue_nums.to_string(),
            )
            .with_ext("queueId", queue_id.to_string())
            .with_ext("sysFlag", request.sys_flag.to_string())
            .with_ext("bornTimestamp", request.born_timestamp.to_string())
            .with_ext("flag", request.flag.to_string())
            .with_ext("properties", props.to_wire())
            .with_ext("reconsumeTimes", request.reconsume_times.to_string())
            .with_ext("unitMode", request.unit_mode.to_string())
            .with_ext("bornHost", host_port(origin.peer))
            .with_ext("storeHost", host_port(self.ctx.store_host))
            .with_ext("storeTimestamp", now.to_string())
            .with_body(cmd.body.clone());
        let failed = |why: PushFailure| {
            tracing::debug!(%requester, %why, "push reply message failed");
            PushReplyError::Failed {
                requester: requester.clone(),
                why,
            }
        };
        let answer = self
            .call_client(channel, push)
            .await
            .map_err(|e| failed(PushFailure::Invoke(e)))?;
        if answer.code != resp::SUCCESS {
            let remark = answer.remark.unwrap_or_default();
            return Err(failed(PushFailure::Answered(answer.code, remark)));
        }
        Ok(())
    }

    /// Stores the reply on its topic (as sent, without PUSH_REPLY_TIME): its msgId and queue
    /// offset.
    async fn store_reply(
        &self,
        origin: Origin,
        request: &SendRequest,
        queue_id: i32,
        body: &[u8],
    ) -> Result<(String, i64), Failure> {
        let (record, slots) = element_record(
            self.ctx,
            origin,
            request,
            &request.topic,
            queue_id,
            request.flag,
            body,
            &request.properties,
        )?;
        let put = self
            .puts
            .put(&request.topic, queue_id, record, slots, true)
            .await
            .map_err(super::failure::put)?;
        self.stats.count_put(1, put.wrote_bytes);
        Ok((
            offset_msg_id(self.ctx.store_host, put.physical_offset),
            put.queue_offset,
        ))
    }

    /// The connection of the producer client `client_id`, from the control shard's registry.
    async fn producer_channel_of(&self, client_id: &str) -> Option<ChannelId> {
        if let Some(clients) = self.clients {
            return local_producer_channel_of(&clients.borrow(), client_id);
        }
        let request = MeshRequest::ProducerChannelOf {
            client_id: client_id.to_string(),
        };
        match self.mesh.get()?.call(0, request).await {
            Ok(MeshResponse::Channel(channel)) => channel,
            _ => None,
        }
    }

    /// Sends `command` to a client connection on whichever shard holds it and waits for the
    /// client's response (as the relays do, with Java's push timeout).
    async fn call_client(
        &self,
        channel: ChannelId,
        command: RemotingCommand,
    ) -> Result<RemotingCommand, InvokeError> {
        self.mesh
            .invoke_on_channel(self.connections, channel, command, PUSH_TIMEOUT)
            .await
    }
}

/// On the control shard: the newest connection a producer with `client_id` heartbeated on
/// (Java's `ProducerManager.findChannel`).
pub(crate) fn local_producer_channel_of(
    clients: &ClientRegistry,
    client_id: &str,
) -> Option<ChannelId> {
    clients
        .producer_groups()
        .flat_map(|g| clients.producer_channels(g))
        .filter(|c| c.client_id == client_id)
        .max_by_key(|c| c.last_update)
        .map(|c| c.channel)
}

/// `ip:port` as Java's `InetAddress.getHostAddress() + ":" + port` writes it (what the
/// clients parse back as a socket address).
fn host_port(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}
