//! Client registry from heartbeats (`ConsumerManager` + `ProducerManager`): which clients are in
//! which consumer and producer groups, over which connection, with which subscriptions.
//! Rebalancing happens in the clients; the broker only answers who is in a group and tells a
//! group's members when that changes. Offsets are not kept here. Pure state: connections are
//! named by (shard, connection id), so the registry can live on one shard while connections
//! live on others.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::heartbeat::{ConsumeType, MessageModel, SubscriptionData};
use crate::remoting::LanguageCode;

/// A connection anywhere in the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    pub shard: u8,
    pub connection: u64,
}

/// One client connection of a group (`ClientChannelInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientChannel {
    pub channel: ChannelId,
    pub client_id: String,
    pub addr: SocketAddr,
    pub language: LanguageCode,
    pub version: i32,
    pub last_update: Instant,
}

/// A consumer group's members and subscriptions (`ConsumerGroupInfo`).
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub consume_type: ConsumeType,
    pub message_model: MessageModel,
    pub consume_from_where: String,
    pub channels: HashMap<ChannelId, ClientChannel>,
    /// topic → subscription.
    pub subscriptions: BTreeMap<String, SubscriptionData>,
}

/// What a heartbeat says about one consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerHeartbeat {
    pub group: String,
    pub consume_type: ConsumeType,
    pub message_model: MessageModel,
    pub consume_from_where: String,
    pub subscriptions: Vec<SubscriptionData>,
}

/// All consumer and producer groups known to the broker.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    consumers: BTreeMap<String, ConsumerGroup>,
    producers: BTreeMap<String, HashMap<ChannelId, ClientChannel>>,
}

impl ClientRegistry {
    /// Records a consumer heartbeat and says what changed: members or subscribed topics (the
    /// clients must rebalance: NOTIFY_CONSUMER_IDS_CHANGED), or only a newer version of a
    /// subscription (every shard must learn it, but nobody rebalances).
    pub fn register_consumer(
        &mut self,
        beat: ConsumerHeartbeat,
        client: ClientChannel,
    ) -> GroupChange {
        let group = self
            .consumers
            .entry(beat.group)
            .or_insert_with(|| ConsumerGroup {
                consume_type: beat.consume_type,
                message_model: beat.message_model,
                consume_from_where: beat.consume_from_where.clone(),
                channels: HashMap::new(),
                subscriptions: BTreeMap::new(),
            });
        group.consume_type = beat.consume_type;
        group.message_model = beat.message_model;
        group.consume_from_where = beat.consume_from_where;
        let new_channel = match group.channels.get_mut(&client.channel) {
            Some(existing) if existing.client_id == client.client_id => {
                existing.last_update = client.last_update;
                false
            }
            _ => {
                group.channels.insert(client.channel, client);
                true
            }
        };
        let (topics, replaced) = update_subscriptions(&mut group.subscriptions, beat.subscriptions);
        GroupChange {
            rebalance: new_channel || topics,
            subscriptions: topics || replaced,
        }
    }

    /// Records a producer heartbeat.
    pub fn register_producer(&mut self, group: &str, client: ClientChannel) {
        self.producers
            .entry(group.to_string())
            .or_default()
            .insert(client.channel, client);
    }

    /// UNREGISTER_CLIENT for a consumer group; true when the group changed.
    pub fn unregister_consumer(&mut self, group: &str, channel: ChannelId) -> bool {
        let Some(info) = self.consumers.get_mut(group) else {
            return false;
        };
        let removed = info.channels.remove(&channel).is_some();
        if info.channels.is_empty() {
            self.consumers.remove(group);
        }
        removed
    }

    /// UNREGISTER_CLIENT for a producer group.
    pub fn unregister_producer(&mut self, group: &str, channel: ChannelId) {
        if let Some(channels) = self.producers.get_mut(group) {
            channels.remove(&channel);
            if channels.is_empty() {
                self.producers.remove(group);
            }
        }
    }

    /// Drops a closed connection everywhere; returns the consumer groups that changed.
    pub fn connection_closed(&mut self, channel: ChannelId) -> Vec<String> {
        self.remove_channels(|c| c.channel == channel)
    }

    /// Drops clients silent for longer than `timeout` (Java: 120 s); returns the consumer
    /// groups that changed.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<String> {
        self.remove_channels(|c| now.saturating_duration_since(c.last_update) > timeout)
    }

    fn remove_channels(&mut self, gone: impl Fn(&ClientChannel) -> bool) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, group) in self.consumers.iter_mut() {
            let before = group.channels.len();
            group.channels.retain(|_, c| !gone(c));
            if group.channels.len() != before {
                changed.push(name.clone());
            }
        }
        self.consumers.retain(|_, g| !g.channels.is_empty());
        for channels in self.producers.values_mut() {
            channels.retain(|_, c| !gone(c));
        }
        self.producers.retain(|_, c| !c.is_empty());
        changed
    }

    /// The client id heard last on `channel`, if it sent a heartbeat.
    pub fn client_id_of(&self, channel: ChannelId) -> Option<&str> {
        let consumers = self
            .consumers
            .values()
            .flat_map(|g| g.channels.get(&channel));
        let producers = self.producers.values().flat_map(|p| p.get(&channel));
        consumers
            .chain(producers)
            .next()
            .map(|c| c.client_id.as_str())
    }

    /// A consumer group, if any client of it is connected.
    pub fn consumer_group(&self, group: &str) -> Option<&ConsumerGroup> {
        self.consumers.get(group)
    }

    /// The connections of a consumer group's online clients.
    pub fn consumer_channels(&self, group: &str) -> Vec<ChannelId> {
        self.consumers
            .get(group)
            .map(|g| g.channels.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Client ids of a consumer group, sorted (GET_CONSUMER_LIST_BY_GROUP).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .consumers
            .get(group)
            .map(|g| g.channels.values().map(|c| c.client_id.clone()).collect())
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The subscription of `group` to `topic` from its heartbeats.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<&SubscriptionData> {
        self.consumers.get(group)?.subscriptions.get(topic)
    }

    /// Connections of a producer group (transaction check-back picks one).
    pub fn producer_channels(&self, group: &str) -> Vec<&ClientChannel> {
        self.producers
            .get(group)
            .map(|c| c.values().collect())
            .unwrap_or_default()
    }

    /// Names of all consumer groups with connected clients.
    pub fn consumer_groups(&self) -> impl Iterator<Item = &str> {
        self.consumers.keys().map(String::as_str)
    }

    /// Names of all producer groups with connected clients.
    pub fn producer_groups(&self) -> impl Iterator<Item = &str> {
        self.producers.keys().map(String::as_str)
    }
}

/// What a heartbeat changed in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupChange {
    /// Members or subscribed topics changed: the group's clients must rebalance.
    pub rebalance: bool,
    /// The subscription table changed (a topic added or removed, or a newer version).
    pub subscriptions: bool,
}

/// Java's `ConsumerGroupInfo.updateSubscription`: new topics are added (a change), a newer
/// subVersion replaces the old one, topics no longer subscribed are removed (a change).
/// Returns (topics changed, a subscription replaced by a newer version).
fn update_subscriptions(
    table: &mut BTreeMap<String, SubscriptionData>,
    subs: Vec<SubscriptionData>,
) -> (bool, bool) {
    let mut changed = false;
    let mut replaced = false;
    let topics: Vec<String> = subs.iter().map(|s| s.topic.clone()).collect();
    for sub in subs {
        match table.get(&sub.topic) {
            None => {
                table.insert(sub.topic.clone(), sub);
                changed = true;
            }
            Some(old) if sub.sub_version > old.sub_version => {
                table.insert(sub.topic.clone(), sub);
                replaced = true;
            }
            Some(_) => {}
        }
    }
    let before = table.len();
    table.retain(|topic, _| topics.contains(topic));
    (changed || table.len() != before, replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::heartbeat::parse_tag_expression;

    fn client(conn: u64, id: &str, now: Instant) -> ClientChannel {
        ClientChannel {
            channel: ChannelId {
                shard: 0,
                connection: conn,
            },
            client_id: id.into(),
            addr: "127.0.0.1:5000".parse().unwrap(),
            language: LanguageCode::Java,
            version: 409,
            last_update: now,
        }
    }

    fn beat(group: &str, subs: &[(&str, &str, i64)]) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            group: group.into(),
            consume_type: ConsumeType::Passively,
            message_model: MessageModel::Clustering,
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            subscriptions: subs
                .iter()
                .map(|(t, e, v)| parse_tag_expression(t, e, *v))
                .collect(),
        }
    }

    #[test]
    fn membership_changes_are_reported_once() {
        let mut r = ClientRegistry::default();
        let now = Instant::now();
        assert!(
            r.register_consumer(beat("g", &[("T", "*", 1)]), client(1, "c1", now))
                .rebalance
        );
        // The same heartbeat again changes nothing.
        assert_eq!(
            r.register_consumer(beat("g", &[("T", "*", 1)]), client(1, "c1", now)),
            GroupChange::default()
        );
        // A newer subVersion replaces the expression without a rebalance.
        assert_eq!(
            r.register_consumer(beat("g", &[("T", "a", 2)]), client(1, "c1", now)),
            GroupChange {
                rebalance: false,
                subscriptions: true
            }
        );
        assert_eq!(r.subscription("g", "T").unwrap().sub_string, "a");
        assert!(
            r.register_consumer(beat("g", &[("T", "*", 3)]), client(2, "c2", now))
                .rebalance
        );
        assert_eq!(r.consumer_ids("g"), ["c1", "c2"]);
        // Dropping a topic is a change.
        assert!(
            r.register_consumer(beat("g", &[("U", "*", 4)]), client(2, "c2", now))
                .rebalance
        );
        assert!(r.subscription("g", "T").is_none());
        assert_eq!(
            r.connection_closed(ChannelId {
                shard: 0,
                connection: 1
            }),
            ["g"]
        );
        assert_eq!(r.consumer_ids("g"), ["c2"]);
        assert!(r.unregister_consumer(
            "g",
            ChannelId {
                shard: 0,
                connection: 2
            }
        ));
        assert!(r.consumer_group("g").is_none());
    }

    #[test]
    fn silent_clients_expire() {
        let mut r = ClientRegistry::default();
        let t0 = Instant::now();
        r.register_consumer(beat("g", &[("T", "*", 1)]), client(1, "c1", t0));
        r.register_producer("pg", client(1, "c1", t0));
        r.register_consumer(
            beat("g", &[("T", "*", 1)]),
            client(2, "c2", t0 + Duration::from_secs(100)),
        );
        let changed = r.expire(t0 + Duration::from_secs(121), Duration::from_secs(120));
        assert_eq!(changed, ["g"]);
        assert_eq!(r.consumer_ids("g"), ["c2"]);
        assert!(r.producer_channels("pg").is_empty());
    }
}
