//! The control shard's duties: creating topics (for sends, for consumer groups) and keeping
//! every shard's topic replica and the nameservers up to date, and the registration loop.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::{MeshRequest, MeshResponse};
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::registration::RegisterSignal;
use crate::broker::services::subscriptions::SubscriptionReplica;
use crate::broker::services::topic_book::TopicBook;
use crate::broker::services::topic_creation::TopicCreation;
use crate::broker::services::topics::TopicReplica;
use crate::client::namesrv::BrokerRegistration;
use crate::net::RpcClient;
use crate::protocol::register::{RegisterBrokerBody, TopicConfig};
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::runtime::Shutdown;

/// A shard's way to change the topic table: the control shard's own table (`book`, on the
/// control shard only), this shard's replica, the other shards, and the registration signal.
/// On another shard, changes are asked of the control shard over the mesh.
#[derive(Clone, Copy)]
pub struct TopicAuthority<'a> {
    pub book: Option<&'a TopicBook>,
    pub replica: &'a TopicReplica,
    pub mesh: &'a MeshClient,
    pub registration: &'a RegisterSignal,
}

impl TopicAuthority<'_> {
    /// After the control shard changed a topic: update every replica and re-register.
    fn changed(&self, name: &str, config: Option<TopicConfig>) {
        self.replica.apply(name, config.clone());
        let name = name.to_string();
        self.mesh
            .spawn_broadcast(move || MeshRequest::TopicChanged {
                name: name.clone(),
                config: config.clone(),
            });
        self.registration.soon();
    }

    /// On the control shard: the group topic `name` (retry or DLQ), created if missing.
    pub fn ensure_here(&self, name: &str, queues: i32) -> Option<TopicConfig> {
        let created = self.book?.ensure_group_topic(name, queues);
        match created {
            Ok((config, Some(job))) => {
                // Written in the background: the topic is usable at once, and a crash before
                // the write only means it is created again on next use.
                job.detach("a group's retry or DLQ topic created");
                self.changed(name, Some(config.clone()));
                Some(config)
            }
            Ok((config, None)) => Some(config),
            Err(e) => {
                tracing::error!(topic = name, error = %e, "cannot persist a new topic");
                None
            }
        }
    }

    /// A group topic (retry, DLQ), created by the control shard if missing.
    pub async fn ensure(&self, name: &str, queues: i32) -> Option<TopicConfig> {
        if self.book.is_some() {
            return self.ensure_here(name, queues);
        }
        let request = MeshRequest::EnsureGroupTopic {
            name: name.to_string(),
            queues,
        };
        self.ask_control_shard(name, request).await
    }

    /// Asks the control shard for a topic it may create; the answer goes into the replica.
    async fn ask_control_shard(&self, name: &str, request: MeshRequest) -> Option<TopicConfig> {
        let mesh = self.mesh.get()?;
        match mesh.call(0, request).await {
            Ok(MeshResponse::Topic(Some(config))) => {
                self.replica.apply(name, Some(config.clone()));
                Some(config)
            }
            _ => None,
        }
    }

    /// Creates `topic` for a send if the template allows it (on the control shard, or by asking
    /// it). `None` when the topic may not be auto-created.
    pub async fn create_for_send(
        &self,
        topic: &str,
        default_topic: &str,
        queue_nums: i32,
        sys_flag: i32,
    ) -> Option<TopicConfig> {
        let Some(book) = self.book else {
            let request = MeshRequest::CreateTopicForSend {
                topic: topic.to_string(),
                default_topic: default_topic.to_string(),
                queue_nums,
                sys_flag,
            };
            return self.ask_control_shard(topic, request).await;
        };
        let (config, job) = match book.create_on_send(topic, default_topic, queue_nums, sys_flag) {
            Ok(created) => created,
            Err(e) => {
                tracing::error!(topic, error = %e, "cannot encode the topic table");
                return None;
            }
        };
        let config = config?;
        // A job to run means the topic was created just now: every shard learns it at once
        // (before any await), then the send waits for the table to be written off the shard
        // thread, so a topic a producer saw created survives a crash right after.
        if job.is_some() {
            tracing::info!(
                topic,
                queues = config.write_queue_nums,
                "topic auto-created"
            );
            self.changed(topic, Some(config.clone()));
            if let Err(e) = job.run().await {
                tracing::error!(topic, error = %e, "cannot persist an auto-created topic");
                return None;
            }
        }
        Some(config)
    }
}

impl TopicCreation for TopicAuthority<'_> {
    async fn create_for_send(
        &self,
        topic: &str,
        default_topic: &str,
        queue_nums: i32,
        sys_flag: i32,
    ) -> Option<TopicConfig> {
        TopicAuthority::create_for_send(self, topic, default_topic, queue_nums, sys_flag).await
    }

    async fn ensure_group_topic(&self, name: &str, queues: i32) -> Option<TopicConfig> {
        self.ensure(name, queues).await
    }
}

/// After the control shard's subscription groups changed (an admin update or delete, a
/// slave's sync): every shard forgets the groups its pulls looked up. Awaited, so a pull
/// answered after the change sees it.
pub async fn groups_changed(subscriptions: &SubscriptionReplica, mesh: &MeshClient) {
    subscriptions.forget_groups();
    let Some(peers) = mesh.get() else { return };
    for shard in (0..mesh.shards()).filter(|s| *s != mesh.here()) {
        let _ = peers.call(shard, MeshRequest::GroupsChanged).await;
    }
}

/// What the control shard registers with the nameservers.
fn registration(ctx: &BrokerContext, topics: &TopicBook) -> BrokerRegistration {
    let cfg = &ctx.cfg;
    BrokerRegistration {
        cluster_name: cfg.broker_cluster_name.clone(),
        broker_name: cfg.broker_name.clone(),
        broker_addr: ctx.broker_addr.clone(),
        broker_id: cfg.broker_id as i64,
        ha_server_addr: format!("{}:{}", cfg.broker_ip2, ctx.ha_port),
        body: RegisterBrokerBody {
            filter_server_list: Vec::new(),
            topic_config_serialize_wrapper: topics.registration(ctx.permission()),
        },
    }
}

fn register_command(code: i32, broker: &BrokerRegistration, with_body: bool) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(code)
        .with_ext("brokerName", broker.broker_name.as_str())
        .with_ext("brokerAddr", broker.broker_addr.as_str())
        .with_ext("clusterName", broker.cluster_name.as_str())
        .with_ext("brokerId", broker.broker_id.to_string());
    if with_body {
        let body = serde_json::to_vec(&broker.body).unwrap_or_default();
        let crc = crc32fast::hash(&body) & 0x7FFF_FFFF;
        cmd = cmd
            .with_ext("haServerAddr", broker.ha_server_addr.as_str())
            .with_ext("compressed", "false")
            .with_ext("bodyCrc32", crc.to_string())
            .with_body(body);
    }
    cmd
}

/// The registration loop of the control shard: registers with every nameserver at start, every
/// `registerNameServerPeriod`, and right after `signal` asks; unregisters on shutdown. A
/// slave learns its master's addresses from the answer (HA.md §1) and hands them to
/// `master_learned`. `ready` is told once the first round (bounded by
/// `registerBrokerTimeoutMills` per nameserver) is done, whatever its outcome.
pub async fn run_registration(
    ctx: Rc<BrokerContext>,
    topics: Rc<TopicBook>,
    signal: Rc<RegisterSignal>,
    master_learned: impl Fn(Option<String>, Option<String>),
    shutdown: Shutdown,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let timeout = Duration::from_millis(ctx.cfg.register_broker_timeout_ms);
    let clients: Vec<RpcClient> = ctx
        .namesrv_addrs
        .iter()
        .map(|a| RpcClient::new(a.clone(), timeout))
        .collect();
    let period = Duration::from_millis(ctx.cfg.register_namesrv_period_ms);
    loop {
        let seen = signal.seen();
        let answer = register_everywhere(
            &clients,
            &registration(&ctx, &topics),
            req::REGISTER_BROKER,
            ctx.credentials(),
        )
        .await;
        if let Some(reply) = answer {
            let field = |k: &str| reply.ext(k).filter(|v| !v.is_empty()).map(str::to_string);
            master_learned(field("haServerAddr"), field("masterAddr"));
        }
        let _ = ready.send(Ok(()));
        let next = future::or(
            async {
                glommio::timer::sleep(period).await;
                true
            },
            future::or(
                async {
                    signal.asked_since(seen).await;
                    true
                },
                async {
                    shutdown.wait().await;
                    false
                },
            ),
        );
        if !next.await {
            break;
        }
    }
    let unregister = registration(&ctx, &topics);
    register_everywhere(
        &clients,
        &unregister,
        req::UNREGISTER_BROKER,
        ctx.credentials(),
    )
    .await;
}

/// Sends `code` to every nameserver; returns the first successful answer.
async fn register_everywhere(
    clients: &[RpcClient],
    broker: &BrokerRegistration,
    code: i32,
    credentials: Option<crate::acl::Credentials>,
) -> Option<RemotingCommand> {
    let mut command = register_command(code, broker, code == req::REGISTER_BROKER);
    if let Some(credentials) = &credentials {
        crate::acl::sign(&mut command, credentials);
    }
    let mut first = None;
    for client in clients {
        match client.invoke(command.clone()).await {
            Ok(reply) if reply.code == resp::SUCCESS => {
                first.get_or_insert(reply);
            }
            Ok(reply) => tracing::warn!(
                namesrv = client.addr(),
                code = reply.code,
                remark = reply.remark.as_deref().unwrap_or(""),
                "nameserver refused the broker"
            ),
            Err(e) => {
                tracing::warn!(namesrv = client.addr(), error = %e, "cannot reach nameserver")
            }
        }
    }
    first
}
