//! HEART_BEAT, UNREGISTER_CLIENT and GET_CONSUMER_LIST_BY_GROUP, on the control shard (the
//! client registry lives there), plus what happens when a client connection closes: the
//! group's other members are told to rebalance (NOTIFY_CONSUMER_IDS_CHANGED) and every shard
//! learns the group's subscriptions for its pulls.

use std::time::Instant;

use super::{field_failure, Failure};
use crate::broker::consumer_groups::{ChannelId, ClientChannel, ConsumerHeartbeat};
use crate::broker::mesh_proto::{MeshRequest, Origin};
use crate::broker::shard::Shard;
use crate::broker::topic_config::retry_topic;
use crate::protocol::heartbeat::{ConsumerIdList, HeartbeatData, SubscriptionData};
use crate::protocol::lenient;
use crate::protocol::route::to_json_body;
use crate::protocol::Fields;
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::store::metadata::SubscriptionGroupConfig;

impl Shard {
    pub(crate) fn heartbeat(
        &self,
        origin: Origin,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let Some(control) = &self.control else {
            return Err((
                resp::SYSTEM_ERROR,
                "heartbeat routed to a non-control shard".into(),
            ));
        };
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
            let retry_queues = self.find_control_group(&group).map(|g| g.retry_queue_nums);
            if let Some(queues) = retry_queues.filter(|q| *q > 0) {
                self.ensure_control_topic(&retry_topic(&group), queues);
            }
            let filter_enabled = self.ctx.live.enable_property_filter();
            super::filter::check_heartbeat(filter_enabled, &group, &consumer.subscription_data_set);
            let beat = ConsumerHeartbeat {
                group: group.clone(),
                consume_type: consumer.consume_type,
                message_model: consumer.message_model,
                consume_from_where: consumer.consume_from_where,
                subscriptions: consumer.subscription_data_set,
            };
            let change = control
                .clients
                .borrow_mut()
                .register_consumer(beat, client.clone());
            if change.rebalance {
                self.group_changed(&group);
            } else if change.subscriptions {
                let subscriptions = self.group_subscriptions(&group);
                self.broadcast_subscriptions(&group, subscriptions);
            }
        }
        for producer in data.producer_data_set {
            control
                .clients
                .borrow_mut()
                .register_producer(&producer.group_name, client.clone());
        }
        Ok(cmd.success_to())
    }

    /// Java's `findSubscriptionGroupConfig` on the control shard: the group, created with
    /// the defaults when `autoCreateSubscriptionGroup` is on (or it is a `CID_RMQ_SYS_`
    /// group); `None` when it does not exist and may not be created.
    pub(crate) fn find_control_group(&self, group: &str) -> Option<SubscriptionGroupConfig> {
        let control = self.control.as_ref()?;
        let auto = self.ctx.live.auto_create_subscription_group();
        let (config, created) = control.groups.find_or_create(group, auto);
        if created {
            // Auto-created groups survive a restart, as Java's do (written in the
            // background: the request does not wait for the disk).
            match control.groups.persist_job() {
                Ok(job) => job.detach("a subscription group auto-created"),
                Err(error) => {
                    tracing::error!(%group, %error, "cannot persist an auto-created group")
                }
            }
        }
        config
    }

    /// After the control shard's subscription groups changed (an admin update or delete, a
    /// slave's sync): every shard forgets the groups its pulls looked up. Awaited, so a pull
    /// answered after the change sees it.
    pub(crate) async fn groups_changed(&self) {
        self.subscriptions.forget_groups();
        let Some(mesh) = self.mesh.get() else { return };
        for shard in (0..self.ctx.shards).filter(|s| *s != self.id) {
            let _ = mesh.call(shard, MeshRequest::GroupsChanged).await;
        }
    }

    pub(crate) fn unregister_client(
        &self,
        origin: Origin,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let Some(control) = &self.control else {
            return Err((
                resp::SYSTEM_ERROR,
                "unregister routed to a non-control shard".into(),
            ));
        };
        cmd.req_str("clientID").map_err(field_failure)?;
        if let Some(group) = cmd.opt_str("producerGroup") {
            control
                .clients
                .borrow_mut()
                .unregister_producer(group, origin.channel);
        }
        if let Some(group) = cmd.opt_str("consumerGroup") {
            if control
                .clients
                .borrow_mut()
                .unregister_consumer(group, origin.channel)
            {
                self.group_changed(group);
            }
        }
        Ok(cmd.success_to())
    }

    pub(crate) fn consumer_list(&self, cmd: &RemotingCommand) -> Result<RemotingCommand, Failure> {
        let group = cmd.req_str("consumerGroup").map_err(field_failure)?;
        let ids = self
            .control
            .as_ref()
            .map(|c| c.clients.borrow().consumer_ids(group))
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

    /// A connection closed: drop its clients and tell the groups that changed.
    pub fn client_connection_closed(&self, channel: ChannelId) {
        let Some(control) = &self.control else { return };
        let changed = control.clients.borrow_mut().connection_closed(channel);
        for group in changed {
            self.group_changed(&group);
        }
    }

    /// A consumer group's membership or subscriptions changed: its members rebalance and every
    /// shard learns its subscriptions.
    fn group_changed(&self, group: &str) {
        let Some(control) = &self.control else { return };
        let channels = control.clients.borrow().consumer_channels(group);
        if self.ctx.live.notify_consumer_ids_changed_enable() {
            let notify = RemotingCommand::request(req::NOTIFY_CONSUMER_IDS_CHANGED)
                .with_ext("consumerGroup", group);
            self.mesh.send_to_channels(
                &self.connections,
                channels.into_iter().map(|c| (c, notify.clone())).collect(),
            );
        }
        let subscriptions = self.group_subscriptions(group);
        self.broadcast_subscriptions(group, subscriptions);
    }

    /// A group's current subscriptions (control shard).
    pub(crate) fn group_subscriptions(&self, group: &str) -> Vec<SubscriptionData> {
        let Some(control) = &self.control else {
            return Vec::new();
        };
        let clients = control.clients.borrow();
        let found = clients.consumer_group(group);
        found
            .map(|g| g.subscriptions.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Tells every other shard a group's subscriptions (for pulls that carry none).
    fn broadcast_subscriptions(&self, group: &str, subscriptions: Vec<SubscriptionData>) {
        let group = group.to_string();
        self.mesh
            .spawn_broadcast(move || MeshRequest::SubscriptionsChanged {
                group: group.clone(),
                subscriptions: subscriptions.clone(),
            });
    }
}
