//! One broker shard: the wiring around its services ([`crate::broker::services`]: its store,
//! the offsets of the queues it owns, replicas of the topic table and of consumer
//! subscriptions, the connections it accepted, its client of the other shards, its routed
//! puts). Shard 0 is also the control shard ([`Control`]): the topic table's owner, the client
//! registry and the nameserver registration. Every request is routed to the shard that owns
//! what it touches and runs there (DESIGN.md "Threads and ownership"); other shards are
//! reached only over the mesh, in [`crate::broker::mesh_proto`]'s messages. [`Shard::process`]
//! sends a request to its processor with the services it needs; nothing outside this file
//! and the broker root names `Shard` (`import_graph.rs` checks it).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use crate::broker::consumer_groups::{ChannelId, ClientRegistry};
use crate::broker::context::BrokerContext;
use crate::broker::control::TopicAuthority;
use crate::broker::mesh_proto::{MeshRequest, MeshResponse, Origin};
use crate::broker::placement::{owner_shard, shard_of_physical};
use crate::broker::processor::admin::{AdminServices, AllShards, RuntimeSamples, ShardFigures};
use crate::broker::processor::failure::{hop, unhanded};
use crate::broker::processor::pull::FLAG_SUSPEND as PULL_FLAG_SUSPEND;
use crate::broker::processor::{
    self, admin, client, controller, lock, offset, pull, query, relay, reply, send, send_back,
    transaction,
};
use crate::broker::put_hop::Handback;
use crate::broker::replication;
use crate::broker::services::connections::Connections;
use crate::broker::services::group_book::GroupBook;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::offsets::OffsetBook;
use crate::broker::services::puts::Puts;
use crate::broker::services::registration::RegisterSignal;
use crate::broker::services::replication::Replication;
use crate::broker::services::store::ShardStore;
use crate::broker::services::subscriptions::SubscriptionReplica;
use crate::broker::services::topic_book::TopicBook;
use crate::broker::services::topics::TopicReplica;
use crate::net::{Busy, Connection, Handler, Reply};
use crate::protocol::Fields;
use crate::refusal::{self, Refusal};
use crate::remoting::{request as req, response as resp, RemotingCommand};

/// State that lives only on the control shard.
pub struct Control {
    /// The topic table (shared with the registration loop).
    pub topics: Rc<TopicBook>,
    pub clients: RefCell<ClientRegistry>,
    /// The subscription groups.
    pub groups: GroupBook,
    /// Orderly consumers' queue locks.
    pub locks: crate::broker::services::queue_locks::QueueLocks,
    /// What GET_BROKER_RUNTIME_INFO remembers between requests.
    pub runtime: RuntimeSamples,
}

/// One shard: its services and the wiring between them.
pub struct Shard {
    pub id: usize,
    pub ctx: Rc<BrokerContext>,
    /// The shard's store (a slave swaps it when it must follow the master's history).
    pub store: Rc<ShardStore>,
    /// Calls to the other shards.
    pub mesh: MeshClient,
    /// Replica of the control shard's topic table.
    pub topics: TopicReplica,
    /// Replica of consumer subscriptions and of the subscription groups pulls named.
    pub subscriptions: SubscriptionReplica,
    /// Committed consumer offsets and delay offsets of the queues this shard owns.
    pub offsets: OffsetBook,
    /// Connections accepted by this shard, for frames the broker initiates.
    pub connections: Connections,
    pub control: Option<Control>,
    /// Asks the registration loop to tell the nameservers again (a topic changed).
    pub registration: Rc<RegisterSignal>,
    /// Check-back state of the transaction half queue, on the shard that owns it.
    pub transactions: crate::broker::services::transaction_checks::TransactionChecks,
    /// Message counters (GET_BROKER_RUNTIME_INFO).
    pub stats: crate::broker::processor::admin::ShardStats,
    /// Requests this shard refused: per-peer counts and their rate-limited WARN lines.
    pub refusals: crate::refusal::Refusals,
    /// Replication: this shard's slaves (master) or its follower (slave).
    pub ha: Replication,
    /// The broker's shutdown signal.
    pub shutdown: crate::runtime::Shutdown,
    /// Records on their way to the shards that own their queues.
    pub put_hop: crate::broker::put_hop::PutHop,
}

/// The answer to an admin or relayed request that reached a shard without the control
/// shard's state (the router sends them to shard 0).
fn not_the_control_shard() -> (i32, String) {
    (
        resp::SYSTEM_ERROR,
        "an admin request reached a shard that is not the control shard".to_string(),
    )
}

/// Where a request runs.
enum Route {
    Here,
    Shard(usize),
}

impl Shard {
    fn route(&self, cmd: &RemotingCommand) -> Route {
        let shards = self.ctx.shards;
        if shards == 1 {
            return Route::Here;
        }
        let queue_owner = |topic_key: &'static str, queue_key: &'static str| {
            let topic = cmd.ext(topic_key).unwrap_or_default();
            let queue = cmd
                .ext(queue_key)
                .and_then(|q| q.trim().parse::<i32>().ok())
                .unwrap_or(0);
            Route::Shard(owner_shard(topic, queue, shards))
        };
        match cmd.code {
            // The shard that read a send decodes it and builds the record; only the record
            // goes to the queue's owner ([`Puts::put`]).
            req::SEND_MESSAGE
            | req::SEND_MESSAGE_V2
            | req::SEND_BATCH_MESSAGE
            | req::SEND_REPLY_MESSAGE
            | req::SEND_REPLY_MESSAGE_V2 => Route::Here,
            req::PULL_MESSAGE
            | req::QUERY_CONSUMER_OFFSET
            | req::UPDATE_CONSUMER_OFFSET
            | req::GET_MAX_OFFSET
            | req::GET_MIN_OFFSET
            | req::SEARCH_OFFSET_BY_TIMESTAMP
            | req::GET_EARLIEST_MSG_STORETIME => queue_owner("topic", "queueId"),
            // An offset that names no shard is answered here (as not found).
            req::VIEW_MESSAGE_BY_ID | req::CONSUMER_SEND_MSG_BACK => {
                match cmd.req_i64("offset").ok().and_then(shard_of_physical) {
                    Some(shard) => Route::Shard(shard % shards),
                    None => Route::Here,
                }
            }
            req::END_TRANSACTION => {
                match cmd
                    .req_i64("commitLogOffset")
                    .ok()
                    .and_then(shard_of_physical)
                {
                    Some(shard) => Route::Shard(shard % shards),
                    None => Route::Here,
                }
            }
            _ => Route::Shard(0),
        }
    }

    /// A send with a negative queueId lets the broker pick the queue (Java: random over the
    /// write queues); it is picked here, round robin, before routing to the queue's owner.
    fn pick_send_queue(&self, command: &mut RemotingCommand) {
        let (topic_key, queue_key) = match command.code {
            req::SEND_MESSAGE => ("topic", "queueId"),
            req::SEND_MESSAGE_V2 | req::SEND_BATCH_MESSAGE => ("b", "e"),
            _ => return,
        };
        let queue = command
            .ext(queue_key)
            .and_then(|q| q.trim().parse::<i32>().ok());
        if queue.is_none_or(|q| q >= 0) {
            return;
        }
        let topic = command.ext(topic_key).unwrap_or_default();
        let queue = self.topics.pick_write_queue(topic);
        command.set_ext(queue_key, queue.to_string());
    }

    /// Runs `command` where it belongs and returns its answer.
    pub async fn dispatch(
        self: Rc<Self>,
        origin: Origin,
        mut command: RemotingCommand,
    ) -> Option<RemotingCommand> {
        self.pick_send_queue(&mut command);
        match self.route(&command) {
            Route::Shard(to) if to != self.id => {
                // What the client is told if the owner cannot answer: never silence (the
                // client would wait out its timeout and retry blind).
                let (code, oneway) = (command.code, command.is_oneway());
                let template = command.response_to(resp::SYSTEM_ERROR, None);
                let failed = |(answer, remark): (i32, String)| {
                    tracing::warn!(code, shard = to, %remark, "a request could not be forwarded");
                    (!oneway).then(|| RemotingCommand {
                        code: answer,
                        remark: Some(remark),
                        ..template
                    })
                };
                let Some(mesh) = self.mesh.get() else {
                    return failed(unhanded(to, "the shards are not connected yet"));
                };
                match mesh
                    .call(to, MeshRequest::Forward { origin, command })
                    .await
                {
                    Ok(MeshResponse::Reply(reply)) => reply,
                    Ok(_) => failed(unhanded(to, "an unexpected answer")),
                    Err(e) => failed(hop(e, to)),
                }
            }
            _ => self.process(origin, command).await,
        }
    }

    /// [`Shard::dispatch`] for a request read from a connection, holding its claim on the
    /// connection's active-work budget until the answer is ready — except while a long poll is
    /// parked: a pull that may wait is first tried without waiting, and only one that found
    /// nothing gives its claim back and is sent again to park (on whichever shard owns the
    /// queue). So a connection's parked pulls never hold its other requests back, while one
    /// that pipelines pulls of messages that are there is worked on a bounded number at a time.
    async fn dispatch_busy(
        self: Rc<Self>,
        origin: Origin,
        command: RemotingCommand,
        busy: Busy,
    ) -> Option<RemotingCommand> {
        let Some(quick) = self.pull_without_waiting(&command) else {
            let reply = Rc::clone(&self).dispatch(origin, command).await;
            drop(busy);
            return reply;
        };
        let reply = Rc::clone(&self).dispatch(origin, quick).await;
        if reply
            .as_ref()
            .is_some_and(|r| r.code == resp::PULL_NOT_FOUND)
        {
            busy.release();
            return self.dispatch(origin, command).await;
        }
        reply
    }

    /// For a PULL_MESSAGE that may park (long polling on, FLAG_SUSPEND set), the same pull
    /// with FLAG_SUSPEND cleared.
    fn pull_without_waiting(&self, command: &RemotingCommand) -> Option<RemotingCommand> {
        if command.code != req::PULL_MESSAGE || !self.ctx.live.long_polling_enable() {
            return None;
        }
        let flag = command.opt_i64("sysFlag").ok().flatten()?;
        if flag & PULL_FLAG_SUSPEND == 0 {
            return None;
        }
        let mut quick = command.clone();
        let cleared = flag & !PULL_FLAG_SUSPEND;
        quick.set_ext("sysFlag", cleared.to_string());
        Some(quick)
    }

    /// Serves a message from another shard.
    pub async fn on_mesh(self: Rc<Self>, request: MeshRequest) -> Option<MeshResponse> {
        match request {
            MeshRequest::Forward { origin, command } => {
                Some(MeshResponse::Reply(self.process(origin, command).await))
            }
            MeshRequest::SendOnConnection {
                connection,
                command,
            } => {
                self.connections.send_oneway(connection, command);
                None
            }
            MeshRequest::Invoke {
                connection,
                command,
                timeout,
            } => Some(MeshResponse::Invoked(
                self.connections.invoke(connection, command, timeout).await,
            )),
            MeshRequest::TopicChanged { name, config } => {
                self.topics.apply(&name, config);
                None
            }
            MeshRequest::SubscriptionsChanged {
                group,
                subscriptions,
            } => {
                self.subscriptions.apply(group, subscriptions);
                None
            }
            MeshRequest::CreateTopicForSend {
                topic,
                default_topic,
                queue_nums,
                sys_flag,
            } => {
                let created = self
                    .topic_authority()
                    .create_for_send(&topic, &default_topic, queue_nums, sys_flag)
                    .await;
                Some(MeshResponse::Topic(created))
            }
            MeshRequest::ConnectionClosed { channel } => {
                if let Some(registry) = self.registry() {
                    registry.connection_closed(channel);
                }
                None
            }
            MeshRequest::QueryKey(query) => Some(MeshResponse::Messages(
                query::query_local(&self.store.get(), &query).await,
            )),
            MeshRequest::Admin(query) => {
                Some(MeshResponse::Admin(self.figures().answer(query).await))
            }
            MeshRequest::PutMany(items) => {
                // Fault tests kill the owning shard here, mid-request (tests/it/shard_death.rs).
                fail::fail_point!("shard-put-many");
                Some(MeshResponse::Puts(self.store.get().put_many(items).await))
            }
            MeshRequest::PutHanded { items, progress } => {
                // Fault tests kill the owning shard here, mid-request (tests/it/shard_death.rs).
                fail::fail_point!("shard-put-many");
                let (records, tickets): (Vec<_>, Vec<_>) = items.into_iter().unzip();
                let results = self.store.get().put_many(records).await;
                let answer = |ticket: &crate::broker::put_hop::Ticket, result| {
                    let (answer, failed) =
                        send::handed_answer(&self.ctx, &self.stats, ticket, result);
                    if let Some((code, remark)) = failed {
                        let origin = Origin {
                            peer: ticket.peer,
                            channel: ticket.channel,
                        };
                        self.refused(origin, &ticket.head, code, &remark);
                    }
                    answer
                };
                let handbacks =
                    crate::broker::put_hop::answer_handed(tickets, results, &progress, answer);
                if let Some(mesh) = self.mesh.get() {
                    for handback in handbacks {
                        let to = usize::from(handback.channel().shard);
                        let _ = mesh.tell(to, MeshRequest::Handback(handback)).await;
                    }
                }
                None
            }
            MeshRequest::Handback(Handback::Answers { channel, answers }) => {
                if let Some(conn) = self.connections.get(channel.connection) {
                    for answer in answers {
                        conn.respond_owed(answer).await;
                    }
                }
                None
            }
            MeshRequest::Handback(Handback::Nudge { channel }) => {
                if let Some(conn) = self.connections.get(channel.connection) {
                    conn.nudge();
                }
                None
            }
            MeshRequest::PutBatch { records, wait } => Some(MeshResponse::PutBatch(
                self.store.get().put_batch(records, wait).await,
            )),
            MeshRequest::ProducerChannel { group } => {
                let channel = self.control.as_ref().and_then(|c| {
                    c.clients
                        .borrow()
                        .producer_channels(&group)
                        .first()
                        .map(|p| p.channel)
                });
                Some(MeshResponse::Channel(channel))
            }
            MeshRequest::ProducerChannelOf { client_id } => {
                let clients = self.control.as_ref().map(|c| c.clients.borrow());
                let channel =
                    clients.and_then(|c| reply::local_producer_channel_of(&c, &client_id));
                Some(MeshResponse::Channel(channel))
            }
            MeshRequest::GetSubscriptions { group } => Some(MeshResponse::Subscriptions(
                self.control
                    .as_ref()
                    .map(|c| client::group_subscriptions(&c.clients.borrow(), &group))
                    .unwrap_or_default(),
            )),
            MeshRequest::EnsureGroupTopic { name, queues } => Some(MeshResponse::Topic(
                self.topic_authority().ensure_here(&name, queues),
            )),
            MeshRequest::FindGroup { group } => {
                let found = self.registry().and_then(|r| r.find_group(&group));
                Some(MeshResponse::Group(found.map(|g| g.consume_enable)))
            }
            MeshRequest::GroupsChanged => {
                self.subscriptions.forget_groups();
                Some(MeshResponse::Group(None))
            }
            MeshRequest::HaLink { fd, hello } => {
                replication::adopt_ha_link(&self.ha, fd, hello, &self.shutdown);
                None
            }
            MeshRequest::HaStatus => Some(MeshResponse::Ha(self.ha.status(&self.store))),
            MeshRequest::MasterAddr { ha, remoting } => {
                self.ha.set_master_addr(ha, remoting);
                None
            }
            MeshRequest::SyncedOffsets { consumer, delay } => {
                self.offsets.apply_synced(consumer, delay);
                None
            }
        }
    }

    /// The shard's routed puts (records stored on the shard that owns their queue).
    pub fn puts(&self) -> Puts<'_> {
        Puts {
            store: &self.store,
            mesh: &self.mesh,
            hop: &self.put_hop,
        }
    }

    /// The shard's way to change the topic table (the control shard's, or by asking it).
    pub fn topic_authority(&self) -> TopicAuthority<'_> {
        TopicAuthority {
            book: self.control.as_ref().map(|c| &*c.topics),
            replica: &self.topics,
            mesh: &self.mesh,
            registration: &self.registration,
        }
    }

    /// This shard's own figures, as admin queries read them.
    pub fn figures(&self) -> ShardFigures<'_> {
        ShardFigures {
            shard: self.id,
            shards: self.ctx.shards,
            store: &self.store,
            offsets: &self.offsets,
            topics: &self.topics,
            live: &self.ctx.live,
            refusals: &self.refusals,
            stats: &self.stats,
        }
    }

    /// Admin queries to every shard, from this one.
    pub fn all_shards(&self) -> AllShards<'_> {
        AllShards {
            here: self.figures(),
            mesh: &self.mesh,
        }
    }

    /// What the admin requests touch (on the control shard only).
    fn admin_services(&self) -> Option<AdminServices<'_>> {
        let control = self.control.as_ref()?;
        Some(AdminServices {
            ctx: &self.ctx,
            all: self.all_shards(),
            topics: &control.topics,
            groups: &control.groups,
            clients: &control.clients,
            subscriptions: &self.subscriptions,
            registration: &self.registration,
            runtime: &control.runtime,
            connections: &self.connections,
        })
    }

    /// The control shard's client registry and subscription groups (`None` on other shards).
    pub(crate) fn registry(&self) -> Option<client::Registry<'_>> {
        let control = self.control.as_ref()?;
        Some(client::Registry {
            ctx: &self.ctx,
            clients: &control.clients,
            groups: &control.groups,
            mesh: &self.mesh,
            connections: &self.connections,
        })
    }
}

/// The request router: which processor answers what, with the services it needs.
impl Shard {
    /// Processes `command` on this shard (it was routed here). `None` answers nothing.
    pub async fn process(
        self: Rc<Self>,
        origin: Origin,
        command: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let result = match command.code {
            req::SEND_MESSAGE | req::SEND_MESSAGE_V2 | req::SEND_BATCH_MESSAGE => {
                let sender = send::Sender {
                    ctx: &self.ctx,
                    topics: &self.topics,
                    creation: &self.topic_authority(),
                    puts: self.puts(),
                    stats: &self.stats,
                    conn: self.answerable_elsewhere(origin),
                };
                match sender.send(origin, &command).await {
                    // The owning shard answers it on the connection.
                    Ok(None) => return None,
                    Ok(Some(answer)) => Ok(answer),
                    Err(failure) => Err(failure),
                }
            }
            req::PULL_MESSAGE => {
                let puller = pull::Puller {
                    ctx: &self.ctx,
                    store: &self.store,
                    topics: &self.topics,
                    subscriptions: &self.subscriptions,
                    offsets: &self.offsets,
                    registry: self.registry(),
                    mesh: &self.mesh,
                    puts: self.puts(),
                    stats: &self.stats,
                };
                puller.pull(&command).await
            }
            // Every other request, boxed: their futures (admin, relays, queries, transactions)
            // are up to three times a send's, and the biggest arm sizes the future every
            // request allocates and moves (README "Smaller request futures (stop 34)").
            _ => Box::pin(Rc::clone(&self).process_other(origin, &command)).await,
        };
        Some(result.unwrap_or_else(|(code, remark)| {
            self.refused(origin, &command, code, &remark);
            command.error_to(code, remark)
        }))
    }

    /// [`Shard::process`] for every request but a send or a pull.
    async fn process_other(
        self: Rc<Self>,
        origin: Origin,
        command: &RemotingCommand,
    ) -> Result<RemotingCommand, (i32, String)> {
        match command.code {
            req::SEND_REPLY_MESSAGE | req::SEND_REPLY_MESSAGE_V2 => {
                let replier = reply::Replier {
                    ctx: &self.ctx,
                    topics: &self.topics,
                    creation: &self.topic_authority(),
                    puts: self.puts(),
                    stats: &self.stats,
                    clients: self.control.as_ref().map(|c| &c.clients),
                    mesh: &self.mesh,
                    connections: &self.connections,
                };
                let refused = |code, remark: &str| self.refused(origin, command, code, remark);
                replier.send_reply(origin, command, refused).await
            }
            req::HEART_BEAT => {
                client::heartbeat(
                    self.registry().as_ref(),
                    &self.topic_authority(),
                    origin,
                    command,
                )
                .await
            }
            req::UNREGISTER_CLIENT => {
                client::unregister_client(self.registry().as_ref(), origin, command)
            }
            req::GET_CONSUMER_LIST_BY_GROUP => {
                client::consumer_list(self.control.as_ref().map(|c| &c.clients), command)
            }
            req::QUERY_CONSUMER_OFFSET => {
                offset::query_consumer_offset(&self.offsets, &self.store.get(), command)
            }
            req::UPDATE_CONSUMER_OFFSET => offset::update_consumer_offset(&self.offsets, command),
            req::GET_MAX_OFFSET | req::GET_MIN_OFFSET => {
                offset::queue_offset(&self.store.get(), command)
            }
            req::SEARCH_OFFSET_BY_TIMESTAMP => {
                offset::search_offset(&self.store.get(), command).await
            }
            req::GET_EARLIEST_MSG_STORETIME => {
                offset::earliest_store_time(&self.store.get(), command).await
            }
            req::LOCK_BATCH_MQ | req::UNLOCK_BATCH_MQ => {
                lock::lock_batch(self.control.as_ref().map(|c| &c.locks), command)
            }
            req::QUERY_MESSAGE => {
                query::query_message(&self.ctx, &self.store.get(), &self.mesh, command).await
            }
            req::VIEW_MESSAGE_BY_ID => query::view_message(&self.store.get(), command).await,
            req::CONSUMER_SEND_MSG_BACK => {
                send_back::send_back(&self.ctx, self.puts(), &self.topic_authority(), command).await
            }
            req::END_TRANSACTION => {
                transaction::end_transaction(&self.ctx, self.puts(), command).await
            }
            // Controller mode (crate::broker::replication).
            req::GET_BROKER_EPOCH_CACHE => {
                let here = self.ha.status(&self.store);
                controller::epoch_cache(&self.ctx, here, &self.mesh, command).await
            }
            req::NOTIFY_BROKER_ROLE_CHANGED => controller::role_changed_notice(&self.ctx, command),
            req::RINGMQ_FENCE_REPLICA => {
                controller::fence_for_election(&self.ctx, &self.mesh, origin, command).await
            }
            code if relay::handles(code) => {
                // Boxed: dispatch may come back here (the type would be infinite).
                let view = |view| {
                    let read = Rc::clone(&self).dispatch(origin, view);
                    Box::pin(read) as Pin<Box<dyn Future<Output = _>>>
                };
                let relay = relay::Relay {
                    ctx: &self.ctx,
                    topics: &self.topics,
                    clients: self.control.as_ref().map(|c| &c.clients),
                    mesh: &self.mesh,
                    connections: &self.connections,
                    view: &view,
                };
                relay.relay(command).await
            }
            code if processor::admin::handles(code) => match self.admin_services() {
                Some(services) => {
                    let ha = async |table: &mut BTreeMap<String, String>| {
                        let here = self.ha.status(&self.store);
                        replication::ha_entries(&self.ctx, here, &self.mesh, table).await
                    };
                    admin::handle(services, command, ha).await
                }
                None => Err(not_the_control_shard()),
            },
            code => Err((
                resp::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {code} not supported"),
            )),
        }
    }

    /// Counts and logs (rate-limited) a request answered with an error (crate::refusal).
    pub(crate) fn refused(
        &self,
        origin: Origin,
        command: &RemotingCommand,
        code: i32,
        remark: &str,
    ) {
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

impl Shard {
    /// The connection of a request read here whose send the queue's owner may answer on it
    /// ([`crate::broker::put_hop`]): with several shards, unless SYNC_MASTER (the slave's
    /// acknowledgement) or `RINGMQ_DIRECT_ANSWERS=0`.
    fn answerable_elsewhere(&self, origin: Origin) -> Option<Rc<Connection>> {
        let on = self.ctx.shards > 1
            && self.ctx.cfg.broker_role != crate::config::BrokerRole::SyncMaster
            && crate::broker::put_hop::owner_answers();
        on.then(|| self.connections.get(origin.channel.connection))
            .flatten()
    }

    /// Where a request read from `conn` comes from.
    fn origin_of(&self, conn: &Connection) -> Origin {
        Origin {
            peer: conn.peer,
            channel: ChannelId {
                shard: self.id as u8,
                connection: conn.id,
            },
        }
    }

    /// An ACL update (it rewrites and fsyncs an ACL file) goes through the ACL's gate on a
    /// blocking thread, so the shard keeps serving while the disk works; a request the gate
    /// lets pass is then dispatched as any other.
    async fn gate_on_blocking_thread(
        self: Rc<Self>,
        acl: Arc<crate::acl::Acl>,
        origin: Origin,
        request: RemotingCommand,
        busy: Busy,
    ) -> Option<RemotingCommand> {
        let cfg = &self.ctx.cfg;
        let broker = (
            cfg.broker_name.clone(),
            self.ctx.broker_addr.clone(),
            cfg.broker_cluster_name.clone(),
        );
        let (gate, request) = glommio::executor()
            .spawn_blocking(move || {
                let (name, addr, cluster) = &broker;
                let broker = crate::acl::gate::BrokerIdentity {
                    name,
                    addr,
                    cluster,
                };
                (
                    crate::acl::gate::gate(&acl, origin.peer, &request, broker),
                    request,
                )
            })
            .await;
        match gate {
            crate::acl::gate::Gate::Answer(reply) => reply,
            crate::acl::gate::Gate::Pass => self.dispatch_busy(origin, request, busy).await,
        }
    }
}

/// The connection-facing side of a shard.
impl Handler for Shard {
    fn handle(
        self: &Rc<Self>,
        conn: &Rc<Connection>,
        request: RemotingCommand,
        busy: Busy,
    ) -> Reply {
        let origin = self.origin_of(conn);
        self.connections.remember(conn);
        // ACL off (the default): this one branch is all it costs.
        if let Some(acl) = &self.ctx.acl {
            let cfg = &self.ctx.cfg;
            if crate::acl::gate::writes_files(request.code) {
                return Reply::Later(Box::pin(Rc::clone(self).gate_on_blocking_thread(
                    Arc::clone(acl),
                    origin,
                    request,
                    busy,
                )));
            }
            let broker = crate::acl::gate::BrokerIdentity {
                name: &cfg.broker_name,
                addr: &self.ctx.broker_addr,
                cluster: &cfg.broker_cluster_name,
            };
            if let crate::acl::gate::Gate::Answer(reply) =
                crate::acl::gate::gate(acl, conn.peer, &request, broker)
            {
                return Reply::Now(reply);
            }
        }
        Reply::Later(Box::pin(
            Rc::clone(self).dispatch_busy(origin, request, busy),
        ))
    }

    /// A send whose body is over `maxMessageSize` is answered as soon as its header is in, and
    /// its body never buffered (a 5 MiB body cost the shard ~5 ms of copying and page faults,
    /// README "Connections and memory").
    fn refuse_body(
        self: &Rc<Self>,
        conn: &Rc<Connection>,
        header: &RemotingCommand,
        body_bytes: usize,
    ) -> Option<RemotingCommand> {
        let (code, remark) = match header.code {
            req::SEND_MESSAGE
            | req::SEND_MESSAGE_V2
            | req::SEND_BATCH_MESSAGE
            | req::SEND_REPLY_MESSAGE
            | req::SEND_REPLY_MESSAGE_V2 => {
                send::check_send_body_bytes(&self.ctx, body_bytes).err()?
            }
            _ => return None,
        };
        self.refused(self.origin_of(conn), header, code, &remark);
        Some(header.error_to(code, remark))
    }

    fn on_close(&self, conn: &Connection) {
        // A connection that never sent a request registered no client: nothing to tell.
        if !self.connections.forget(conn.id) {
            return;
        }
        let channel = ChannelId {
            shard: self.id as u8,
            connection: conn.id,
        };
        if let Some(mesh) = self.mesh.get().filter(|_| self.id != 0).cloned() {
            glommio::spawn_local(async move {
                let _ = mesh
                    .tell(0, MeshRequest::ConnectionClosed { channel })
                    .await;
            })
            .detach();
        } else if let Some(registry) = self.registry() {
            registry.connection_closed(channel);
        }
    }
}
