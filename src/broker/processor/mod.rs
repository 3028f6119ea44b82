//! Request processing on the shard a request was routed to: one file per request family, each
//! turning a `protocol` request into store calls and a response. Dispatch is one `match`.

pub mod admin;
mod admin_config;
mod admin_consumer;
mod admin_offset;
mod admin_runtime;
mod admin_stats;
mod admin_topic;
mod client;
pub(crate) mod failure;
mod filter;
pub mod lock;
mod offset;
mod offset_moved;
mod pull;
pub(crate) use pull::FLAG_SUSPEND as PULL_FLAG_SUSPEND;
pub mod query;
mod relay;
pub mod reply;
mod send;
mod send_back;
pub mod transaction;

use std::rc::Rc;

use super::mesh_proto::Origin;
use super::shard::Shard;
use crate::protocol::FieldError;
use crate::refusal::{self, Refusal};
use crate::remoting::{request as req, response as resp, RemotingCommand};

/// A failed request: response code and remark.
pub(crate) type Failure = (i32, String);

pub(crate) fn field_failure(e: FieldError) -> Failure {
    (resp::SYSTEM_ERROR, e.to_string())
}

impl Shard {
    /// Processes `command` on this shard (it was routed here). `None` answers nothing.
    pub async fn process(
        self: Rc<Self>,
        origin: Origin,
        command: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let result = match command.code {
            req::SEND_MESSAGE | req::SEND_MESSAGE_V2 | req::SEND_BATCH_MESSAGE => {
                self.send(origin, &command).await
            }
            req::SEND_REPLY_MESSAGE | req::SEND_REPLY_MESSAGE_V2 => {
                self.send_reply(origin, &command).await
            }
            req::PULL_MESSAGE => self.pull(&command).await,
            req::HEART_BEAT => self.heartbeat(origin, &command),
            req::UNREGISTER_CLIENT => self.unregister_client(origin, &command),
            req::GET_CONSUMER_LIST_BY_GROUP => self.consumer_list(&command),
            req::QUERY_CONSUMER_OFFSET => self.query_consumer_offset(&command),
            req::UPDATE_CONSUMER_OFFSET => self.update_consumer_offset(&command),
            req::GET_MAX_OFFSET | req::GET_MIN_OFFSET => self.queue_offset(&command),
            req::SEARCH_OFFSET_BY_TIMESTAMP => self.search_offset(&command).await,
            req::GET_EARLIEST_MSG_STORETIME => self.earliest_store_time(&command).await,
            req::LOCK_BATCH_MQ | req::UNLOCK_BATCH_MQ => self.lock_batch(&command),
            req::QUERY_MESSAGE => self.query_message(&command).await,
            req::VIEW_MESSAGE_BY_ID => self.view_message(&command).await,
            req::CONSUMER_SEND_MSG_BACK => self.send_back(&command).await,
            req::END_TRANSACTION => self.end_transaction(&command).await,
            // Controller mode (crate::broker::replication).
            req::GET_BROKER_EPOCH_CACHE => self.epoch_cache(&command).await,
            req::NOTIFY_BROKER_ROLE_CHANGED => self.role_changed_notice(&command),
            req::RINGMQ_FENCE_REPLICA => self.fence_for_election(origin, &command).await,
            code if relay::handles(code) => self.relay(origin, &command).await,
            code if admin::handles(code) => self.admin(&command).await,
            code => Err((
                resp::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {code} not supported"),
            )),
        };
        Some(result.unwrap_or_else(|(code, remark)| {
            self.refused(origin, &command, code, &remark);
            command.error_to(code, remark)
        }))
    }

    /// Counts and logs (rate-limited) a request answered with an error (crate::refusal).
    fn refused(&self, origin: Origin, command: &RemotingCommand, code: i32, remark: &str) {
        if !refusal::is_refusal(command.code, code) {
            return;
        }
        let refused = Refusal {
            peer: origin.peer,
            request_code: command.code,
            response_code: code,
            remark,
        };
        self.refusals
            .record(refused, || self.client_id(origin, command));
    }

    /// The client id of a request: carried by the request itself, or heard in a heartbeat on
    /// its connection (known to the control shard only).
    fn client_id(&self, origin: Origin, command: &RemotingCommand) -> Option<String> {
        if let Some(id) = command.ext("clientID").or(command.ext("clientId")) {
            return Some(id.to_string());
        }
        if command.code == req::HEART_BEAT {
            // The body may be what was refused: look for the id alone.
            let body = serde_json::from_slice::<serde_json::Value>(&command.body).ok();
            let id = body.as_ref().and_then(|b| b["clientID"].as_str());
            if let Some(id) = id {
                return Some(id.to_string());
            }
        }
        let control = self.control.as_ref()?;
        let clients = control.clients.borrow();
        clients.client_id_of(origin.channel).map(str::to_string)
    }
}
