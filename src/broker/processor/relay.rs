//! Admin requests the broker relays to a consumer client over the client's own connection
//! (Java's `AdminBrokerProcessor.callConsumer` and `Broker2Client.getConsumeStatus`):
//!
//! * GET_CONSUMER_RUNNING_INFO (307): the client's `ConsumerRunningInfo` (mqadmin
//!   `consumerStatus`, the dashboard's consumer detail);
//! * CONSUME_MESSAGE_DIRECTLY (309): the stored message (found by its msgId) handed to the client
//!   to consume at once; its `ConsumeMessageDirectlyResult` comes back (mqadmin
//!   `consumeMessage -d`);
//! * INVOKE_BROKER_TO_GET_CONSUMER_STATUS (223): GET_CONSUMER_STATUS_FROM_CLIENT (221) to every
//!   client of the group (or the one named), their offset tables gathered into one
//!   `GetConsumerStatusBody` (mqadmin `getConsumerStatus`).
//!
//! They run on the control shard (which holds the client registry); the client's connection
//! may live on another shard, which sends the request and awaits the answer there
//! ([`MeshRequest::Invoke`]). The wait is bounded by Java's timeouts (10 s, and 5 s per client
//! for the status); a client that is gone, does not read, or does not answer in time gets the
//! admin Java's code and remark (SYSTEM_ERROR "not online", CONSUME_MSG_TIMEOUT).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::admin::{encode_failure, encode_mq_map};
use super::{field_failure, Failure};
use crate::broker::consumer_groups::{ChannelId, ClientRegistry};
use crate::broker::context::BrokerContext;
use crate::broker::services::connections::Connections;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::topics::TopicReplica;
use crate::net::invoke::InvokeError;
use crate::protocol::fastjson_mq::parse_mq_table;
use crate::protocol::Fields;
use crate::remoting::{request as req, response as resp, RemotingCommand, FLAG_RESPONSE};

/// Java's `Broker2Client.callClient` timeout.
const CALL_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Java's per-client timeout of GET_CONSUMER_STATUS_FROM_CLIENT.
const CONSUMER_STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// True for the request codes [`Relay::relay`] answers.
pub(crate) fn handles(code: i32) -> bool {
    matches!(
        code,
        req::GET_CONSUMER_RUNNING_INFO
            | req::CONSUME_MESSAGE_DIRECTLY
            | req::INVOKE_BROKER_TO_GET_CONSUMER_STATUS
    )
}

/// A stored message read by request (VIEW_MESSAGE_BY_ID, answered by the shard that stores
/// it).
pub(crate) type ViewMessage<'a> =
    &'a dyn Fn(RemotingCommand) -> Pin<Box<dyn Future<Output = Option<RemotingCommand>>>>;

/// What a relay touches: the settings, the topic replica, the control shard's client registry
/// (`None` elsewhere: refused), the clients' connections on any shard, and a way to read a
/// stored message wherever it is.
pub(crate) struct Relay<'a> {
    pub ctx: &'a BrokerContext,
    pub topics: &'a TopicReplica,
    pub clients: Option<&'a RefCell<ClientRegistry>>,
    pub mesh: &'a MeshClient,
    pub connections: &'a Connections,
    pub view: ViewMessage<'a>,
}

impl Relay<'_> {
    /// Answers a relayed admin request (on the control shard).
    pub(crate) async fn relay(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        match cmd.code {
            req::GET_CONSUMER_RUNNING_INFO => self.call_consumer(cmd, cmd.clone()).await,
            req::CONSUME_MESSAGE_DIRECTLY => self.consume_directly(cmd).await,
            _ => self.consumer_status(cmd).await,
        }
    }

    /// The control shard's client registry; refused on another shard.
    fn clients(&self) -> Result<&RefCell<ClientRegistry>, Failure> {
        self.clients.ok_or_else(|| {
            (
                resp::SYSTEM_ERROR,
                "an admin request reached a shard that is not the control shard".to_string(),
            )
        })
    }

    /// The connection of `client_id` in consumer group `group`, if it is online.
    fn consumer_channel(&self, group: &str, client_id: &str) -> Result<ChannelId, Failure> {
        let clients = self.clients()?.borrow();
        let channel = clients.consumer_group(group).and_then(|g| {
            g.channels
                .values()
                .find(|c| c.client_id == client_id)
                .map(|c| c.channel)
        });
        channel.ok_or_else(|| {
            let remark = format!("The Consumer <{group}> <{client_id}> not online");
            (resp::SYSTEM_ERROR, remark)
        })
    }

    /// Java's `callConsumer`: `relayed` (the admin's header and body under `cmd`'s code) to
    /// the client, whose answer goes back to the admin as it is.
    async fn call_consumer(
        &self,
        cmd: &RemotingCommand,
        relayed: RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let group = cmd.req_str("consumerGroup").map_err(field_failure)?;
        let client_id = cmd.req_str("clientId").map_err(field_failure)?;
        let channel = self.consumer_channel(group, client_id)?;
        let mut request = RemotingCommand::request(cmd.code);
        request.ext_fields = relayed.ext_fields;
        request.body = relayed.body;
        match self
            .mesh
            .invoke_on_channel(self.connections, channel, request, CALL_CLIENT_TIMEOUT)
            .await
        {
            Ok(mut answer) => {
                answer.opaque = cmd.opaque;
                answer.flag = FLAG_RESPONSE;
                answer.serialize_type = cmd.serialize_type;
                Ok(answer)
            }
            Err(e @ InvokeError::Timeout(_)) => Err((
                resp::CONSUME_MSG_TIMEOUT,
                format!("consumer <{group}> <{client_id}> Timeout: {e}"),
            )),
            Err(e) => Err((
                resp::SYSTEM_ERROR,
                format!("invoke consumer <{group}> <{client_id}> Exception: {e}"),
            )),
        }
    }

    /// CONSUME_MESSAGE_DIRECTLY (309): the message named by `msgId` (read on the shard that
    /// stores it), with `brokerName` and the topic's `topicSysFlag` added, to the client.
    async fn consume_directly(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let msg_id = cmd.req_str("msgId").map_err(field_failure)?;
        let Some((_, offset)) = crate::message::decode_offset_msg_id(msg_id) else {
            let remark = format!("{msg_id} is not a message id (an offsetMsgId) of this broker");
            return Err((resp::SYSTEM_ERROR, remark));
        };
        let view = RemotingCommand::request(req::VIEW_MESSAGE_BY_ID)
            .with_ext("offset", offset.to_string());
        let found = (self.view)(view).await;
        let record = match found {
            Some(r) if r.code == resp::SUCCESS => r.body,
            _ => {
                let remark = format!("no message with id {msg_id} on this broker");
                return Err((resp::SYSTEM_ERROR, remark));
            }
        };
        let mut relayed = cmd.clone();
        relayed.set_ext("brokerName", self.ctx.cfg.broker_name.clone());
        if let Some(topic) = cmd.opt_str("topic").filter(|t| !t.is_empty()) {
            if let Some(config) = self.topics.get(topic) {
                relayed.set_ext("topicSysFlag", config.topic_sys_flag.to_string());
            }
        }
        relayed.body = record;
        self.call_consumer(cmd, relayed).await
    }

    /// INVOKE_BROKER_TO_GET_CONSUMER_STATUS (223), as Java's `Broker2Client.getConsumeStatus`:
    /// asks every client of the group (or only `clientAddr`, a client id) for its offsets of
    /// `topic`; a client that fails or does not answer in 5 s is left out.
    async fn consumer_status(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let topic = cmd.req_str("topic").map_err(field_failure)?;
        let group = cmd.req_str("group").map_err(field_failure)?;
        let only = cmd.opt_str("clientAddr").filter(|c| !c.trim().is_empty());
        let members: Vec<(String, ChannelId)> = {
            let clients = self.clients()?.borrow();
            let channels = clients.consumer_group(group).map(|g| {
                g.channels
                    .values()
                    .map(|c| (c.client_id.clone(), c.channel))
                    .collect()
            });
            channels.unwrap_or_default()
        };
        if members.is_empty() {
            let remark = format!("No Any Consumer online in the consumer group: [{group}]");
            return Err((resp::SYSTEM_ERROR, remark));
        }
        let mut table = Vec::new();
        for (client_id, channel) in members {
            if only.is_some_and(|o| o != client_id) {
                continue;
            }
            let request = RemotingCommand::request(req::GET_CONSUMER_STATUS_FROM_CLIENT)
                .with_ext("topic", topic)
                .with_ext("group", group);
            let answer = self
                .mesh
                .invoke_on_channel(self.connections, channel, request, CONSUMER_STATUS_TIMEOUT)
                .await;
            let offsets = match answer {
                Ok(a) if a.code == resp::SUCCESS && !a.body.is_empty() => {
                    parse_mq_table(&a.body, "messageQueueTable").map_err(|e| e.to_string())
                }
                Ok(a) => Err(format!("answered {} {:?}", a.code, a.remark)),
                Err(e) => Err(e.to_string()),
            };
            match offsets {
                Ok((entries, _)) => table.push((client_id, entries)),
                Err(reason) => tracing::warn!(topic, group, client_id, %reason,
                    "[get-consumer-status] no consumer status from the client"),
            }
        }
        let mut body = String::from(r#"{"consumerTable":{"#);
        for (i, (client_id, entries)) in table.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&serde_json::to_string(client_id).map_err(encode_failure)?);
            body.push(':');
            body.push_str(&encode_mq_map(entries).map_err(encode_failure)?);
        }
        body.push_str(r#"},"messageQueueTable":{}}"#);
        Ok(cmd.success_to().with_body(body.into_bytes()))
    }
}
