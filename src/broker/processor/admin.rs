//! Broker admin and stats requests (PROTOCOL.md §7.15), the ones mqadmin and dashboards send:
//! topics (`admin_topic.rs`), subscription groups, client connections, offsets and consume
//! stats (`admin_consumer.rs`), runtime info and configuration (`admin_runtime.rs`).
//!
//! They run on the control shard (the default route of codes the shard's router does not know):
//! [`handle`] gives each request's function the services it takes. Figures that live on other
//! shards (queue offsets and store times, consumer and delay offsets, message counters) are
//! gathered over the mesh by [`AllShards`] (`admin_shards.rs`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::Failure;
use crate::broker::consumer_groups::ClientRegistry;
use crate::broker::context::BrokerContext;
use crate::broker::services::connections::Connections;
use crate::broker::services::group_book::GroupBook;
use crate::broker::services::registration::RegisterSignal;
use crate::broker::services::subscriptions::SubscriptionReplica;
use crate::broker::services::topic_book::TopicBook;
use crate::remoting::{request as req, response as resp, RemotingCommand};

pub(crate) use super::admin_runtime::RuntimeSamples;
pub use super::admin_shards::{encode_failure, encode_mq_map, AllShards, ShardFigures};
/// Where the send, reply and pull processors count (a service since issue 17).
pub use crate::broker::services::shard_stats::ShardStats;

/// The request codes this module answers.
const CODES: [i32; 20] = [
    req::UPDATE_AND_CREATE_TOPIC,
    req::DELETE_TOPIC_IN_BROKER,
    req::GET_ALL_TOPIC_CONFIG,
    req::GET_TOPIC_STATS_INFO,
    req::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    req::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    req::DELETE_SUBSCRIPTIONGROUP,
    req::GET_CONSUMER_CONNECTION_LIST,
    req::GET_PRODUCER_CONNECTION_LIST,
    req::GET_CONSUME_STATS,
    req::GET_ALL_CONSUMER_OFFSET,
    req::GET_ALL_DELAY_OFFSET,
    req::QUERY_TOPIC_CONSUME_BY_WHO,
    req::GET_BROKER_RUNTIME_INFO,
    req::GET_BROKER_CONFIG,
    req::CHECK_CLIENT_CONFIG,
    req::INVOKE_BROKER_TO_RESET_OFFSET,
    req::UPDATE_BROKER_CONFIG,
    req::VIEW_BROKER_STATS_DATA,
    req::GET_BROKER_CONSUME_STATS,
];

/// True for the request codes [`handle`] answers.
pub(crate) fn handles(code: i32) -> bool {
    CODES.contains(&code)
}

/// The parts of the control shard the admin requests touch; each request's function takes
/// the ones it needs.
#[derive(Clone, Copy)]
pub struct AdminServices<'a> {
    pub ctx: &'a BrokerContext,
    /// Figures of every shard (this one's, the others' over the mesh).
    pub all: AllShards<'a>,
    pub topics: &'a TopicBook,
    pub groups: &'a GroupBook,
    pub clients: &'a RefCell<ClientRegistry>,
    /// This shard's replica of subscriptions (forgets the groups it looked up on a change).
    pub subscriptions: &'a SubscriptionReplica,
    pub registration: &'a RegisterSignal,
    /// What GET_BROKER_RUNTIME_INFO remembers between requests.
    pub runtime: &'a RuntimeSamples,
    /// This shard's connections (a reset's pushes to the group's clients).
    pub connections: &'a Connections,
}

/// Answers an admin request (on the control shard). GET_BROKER_RUNTIME_INFO's replication
/// entries come from `ha_entries` (the replication part of the shard).
pub(crate) async fn handle(
    s: AdminServices<'_>,
    cmd: &RemotingCommand,
    ha_entries: impl AsyncFnOnce(&mut BTreeMap<String, String>),
) -> Result<RemotingCommand, Failure> {
    use super::{admin_config as config, admin_consumer as consumer, admin_offset as offset};
    use super::{admin_runtime as runtime, admin_stats as stats, admin_topic as topic};
    let (cfg, all) = (&s.ctx.cfg, &s.all);
    let clients = s.clients;
    let topic_change = topic::TopicChange {
        cfg,
        topics: s.topics,
        all,
        registration: s.registration,
    };
    match cmd.code {
        req::UPDATE_AND_CREATE_TOPIC => topic_change.update(cmd).await,
        req::DELETE_TOPIC_IN_BROKER => topic_change.delete(cmd).await,
        req::GET_ALL_TOPIC_CONFIG => topic::all_topic_config(s.topics, cmd),
        req::GET_TOPIC_STATS_INFO => topic::topic_stats(cfg, s.topics, all, cmd).await,
        req::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => {
            consumer::update_group(cfg, s.groups, s.subscriptions, all.mesh, cmd).await
        }
        req::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => consumer::all_groups(s.groups, cmd),
        req::DELETE_SUBSCRIPTIONGROUP => {
            consumer::delete_group(cfg, s.groups, s.subscriptions, all, cmd).await
        }
        req::GET_CONSUMER_CONNECTION_LIST => {
            consumer::consumer_connections(clients, all, cmd).await
        }
        req::GET_PRODUCER_CONNECTION_LIST => {
            consumer::producer_connections(clients, all, cmd).await
        }
        req::GET_CONSUME_STATS => consumer::consume_stats(cfg, s.topics, clients, all, cmd).await,
        req::GET_ALL_CONSUMER_OFFSET => consumer::all_consumer_offsets(all, cmd).await,
        req::GET_ALL_DELAY_OFFSET => consumer::all_delay_offsets(all, cmd).await,
        req::QUERY_TOPIC_CONSUME_BY_WHO => consumer::topic_consumed_by(clients, all, cmd).await,
        req::GET_BROKER_RUNTIME_INFO => {
            runtime::runtime_info(cfg, s.runtime, all, cmd, ha_entries).await
        }
        req::GET_BROKER_CONFIG => runtime::broker_config(&s.ctx.live, all.here.stats, cmd),
        req::CHECK_CLIENT_CONFIG => consumer::check_client_config(&s.ctx.live, cmd),
        req::INVOKE_BROKER_TO_RESET_OFFSET => {
            offset::reset_offset(cfg, s.topics, clients, all, s.connections, cmd).await
        }
        req::UPDATE_BROKER_CONFIG => {
            config::update_broker_config(s.ctx, s.topics, all, s.registration, cmd).await
        }
        req::VIEW_BROKER_STATS_DATA => stats::view_stats(cfg, all, cmd).await,
        req::GET_BROKER_CONSUME_STATS => {
            stats::broker_consume_stats(s.ctx, s.topics, s.groups, clients, all, cmd).await
        }
        code => Err((
            resp::REQUEST_CODE_NOT_SUPPORTED,
            format!(" request type {code} not supported"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_codes_are_answered_here() {
        assert!(handles(req::GET_CONSUME_STATS) && handles(req::GET_BROKER_CONSUME_STATS));
        assert!(!handles(req::SEND_MESSAGE) && !handles(req::PULL_MESSAGE));
    }
}
