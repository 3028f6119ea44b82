//! HEART_BEAT, UNREGISTER_CLIENT and GET_CONSUMER_LIST_BY_GROUP, on the control shard (the
//! client registry lives there), plus what happens when a client connection closes: the
//! group's other members are told to rebalance (NOTIFY_CONSUMER_IDS_CHANGED) and every shard
//! learns the group's subscriptions for its pulls.

use std::cell::RefCell;
use std::time::Instant;

use super::{field_failure, Failure};
use crate::broker::consumer_groups::{ChannelId, ClientChannel, ClientRegistry, ConsumerHeartbeat};
use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::{MeshRequest, Origin};
use crate::broker::services::connections::Connections;
use crate::broker::services::group_book::GroupBook;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::topic_creation::TopicCreation;
use crate::broker::topic_config::retry_topic;
use crate::protocol::heartbeat::{ConsumerIdList, HeartbeatData, SubscriptionData};
use crate::protocol::lenient;
use crate::protocol::route::to_json_body;
use crate::protocol::Fields;
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::store::metadata::SubscriptionGroupConfig;

/// What the client requests touch on the control shard: its client registry, its subscription
/// groups (and their file), and the way to the clients' connections and the other shards.
pub(crate) struct Registry<'a> {
    pub ctx: &'a BrokerContext,
    pub clients: &'a RefCell<ClientRegistry>,
    /// The subscription groups (and `subscriptionGroup.json`, written off the shard thread).
    pub groups: &'a GroupBook,
    pub mesh: &'a MeshClient,
    pub connections: &'a Connections,
}

/// The registry of the control shard; a request routed to another shard (`None`) is refused.
fn on_control<'r, 'a>(
    registry: Option<&'r Registry<'a>>,
    request: &str,
) -> Result<&'r Registry<'a>, Failure> {
    registry.ok_or_else(|| {
        let remark = format!("{request} routed to a non-control shard");
        (resp::SYSTEM_ERROR, remark)
    })
}

/// HEART_BEAT on the control shard (`registry`; `None`: the request was routed elsewhere).
/// A consumer group's retry topic is created (by `creation`) when the group has retry queues.
pub(crate) async fn heartbeat(
    registry: Option<&Registry<'_>>,
    creation: &impl TopicCreation,
    origin: Origin,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let registry = on_control(registry, "heartbeat")?;
    let data: HeartbeatData = lenient::from_slice(&cmd.body).map_err(|e| {
        (
            resp::SYSTEM_ERROR,
            format!("the heartbeat body does not parse: {e}"),
        )
    })?;
    let client = ClientChannel {
        channel: origin.channel,
        client_id: data.client_id.clone(),
        addr: origin.peer,
        language: cmd.language,
        version: cmd.version,
        last_update: Instant::now(),
    };
    for consumer in data.consumer_data_set {
        let group = consumer.group_name.clone();
        let retry_queues = registry.find_group(&group).map(|g| g.retry_queue_nums);
        if let Some(queues) = retry_queues.filter(|q| *q > 0) {
            creation
                .ensure_group_topic(&retry_topic(&group), queues)
                .await;
        }
        let filter_enabled = registry.ctx.live.enable_property_filter();
        super::filter::check_heartbeat(filter_enabled, &group, &consumer.subscription_data_set);
        let beat = ConsumerHeartbeat {
            group: group.clone(),
            consume_type: consumer.consume_type,
            message_model: consumer.message_model,
            consume_from_where: consumer.consume_from_where,
            subscriptions: consumer.subscription_data_set,
        };
        let change = registry
            .clients
            .borrow_mut()
            .register_consumer(beat, client.clone());
        if change.rebalance {
            registry.group_changed(&group);
        } else if change.subscriptions {
            let subscriptions = registry.group_subscriptions(&group);
            broadcast_subscriptions(registry.mesh, &group, subscriptions);
        }
    }
    for producer in data.producer_data_set {
        registry
            .clients
            .borrow_mut()
            .register_producer(&producer.group_name, client.clone());
    }
    Ok(cmd.success_to())
}

/// UNREGISTER_CLIENT on the control shard (`None`: routed elsewhere).
pub(crate) fn unregister_client(
    registry: Option<&Registry<'_>>,
    origin: Origin,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let registry = on_control(registry, "unregister")?;
    cmd.req_str("clientID").map_err(field_failure)?;
    if let Some(group) = cmd.opt_str("producerGroup") {
        registry
            .clients
            .borrow_mut()
            .unregister_producer(group, origin.channel);
    }
    if let Some(group) = cmd.opt_str("consumerGroup") {
        let gone = registry
            .clients
            .borrow_mut()
            .unregister_consumer(group, origin.channel);
        if gone {
            registry.group_changed(group);
        }
    }
    Ok(cmd.success_to())
}

/// GET_CONSUMER_LIST_BY_GROUP from the control shard's registry (`None`: no consumer known).
pub(crate) fn consumer_list(
    clients: Option<&RefCell<ClientRegistry>>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let group = cmd.req_str("consumerGroup").map_err(field_failure)?;
    let ids = clients
        .map(|c| c.borrow().consumer_ids(group))
        .unwrap_or_default();
    if ids.is_empty() {
        return Err((
            resp::SYSTEM_ERROR,
            format!("no consumer for this group, {group}"),
        ));
    }
    let body = to_json_body(&ConsumerIdList {
        consumer_id_list: ids,
    });
    Ok(cmd.success_to().with_body(body))
}

impl Registry<'_> {
    /// Java's `findSubscriptionGroupConfig`: the group, created with the defaults when
    /// `autoCreateSubscriptionGroup` is on (or it is a `CID_RMQ_SYS_` group); `None` when it
    /// does not exist and may not be created.
    pub(crate) fn find_group(&self, group: &str) -> Option<SubscriptionGroupConfig> {
        let auto = self.ctx.live.auto_create_subscription_group();
        let (config, created) = self.groups.find_or_create(group, auto);
        if created {
            // Auto-created groups survive a restart, as Java's do (written in the
            // background: the request does not wait for the disk).
            match self.groups.persist_job() {
                Ok(job) => job.detach("a subscription group auto-created"),
                Err(e) => {
                    tracing::error!(%group, error = %e, "cannot persist an auto-created group")
                }
            }
        }
        config
    }

    /// A connection closed: drop its clients and tell the groups that changed.
    pub(crate) fn connection_closed(&self, channel: ChannelId) {
        let changed = self.clients.borrow_mut().connection_closed(channel);
        for group in changed {
            self.group_changed(&group);
        }
    }

    /// A consumer group's membership or subscriptions changed: its members rebalance and
    /// every shard learns its subscriptions.
    fn group_changed(&self, group: &str) {
        let channels = self.clients.borrow().consumer_channels(group);
        if self.ctx.live.notify_consumer_ids_changed_enable() {
            let notify = RemotingCommand::request(req::NOTIFY_CONSUMER_IDS_CHANGED)
                .with_ext("consumerGroup", group);
            self.mesh.send_to_channels(
                self.connections,
                channels.into_iter().map(|c| (c, notify.clone())).collect(),
            );
        }
        let subscriptions = self.group_subscriptions(group);
        broadcast_subscriptions(self.mesh, group, subscriptions);
    }

    /// A group's current subscriptions.
    pub(crate) fn group_subscriptions(&self, group: &str) -> Vec<SubscriptionData> {
        group_subscriptions(&self.clients.borrow(), group)
    }
}

/// A group's current subscriptions in the control shard's registry.
pub(crate) fn group_subscriptions(clients: &ClientRegistry, group: &str) -> Vec<SubscriptionData> {
    let found = clients.consumer_group(group);
    found
        .map(|g| g.subscriptions.values().cloned().collect())
        .unwrap_or_default()
}

/// Tells every other shard a group's subscriptions (for pulls that carry none).
fn broadcast_subscriptions(mesh: &MeshClient, group: &str, subscriptions: Vec<SubscriptionData>) {
    let group = group.to_string();
    mesh.spawn_broadcast(move || MeshRequest::SubscriptionsChanged {
        group: group.clone(),
        subscriptions: subscriptions.clone(),
    });
}
