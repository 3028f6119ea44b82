//! The control shard's duties: creating topics (for sends, for consumer groups) and keeping
//! every shard's topic replica and the nameservers up to date, and the registration loop.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use crate::broker::mesh_proto::{MeshRequest, MeshResponse};
use crate::broker::shard::Shard;
use crate::client::namesrv::BrokerRegistration;
use crate::net::RpcClient;
use crate::protocol::register::{RegisterBrokerBody, TopicConfig};
use crate::remoting::{request as req, response as resp, RemotingCommand};
use crate::runtime::Shutdown;

impl Shard {
    /// Sends `make()` to every other shard from a task (callers need not be async).
    pub fn spawn_broadcast(&self, make: impl Fn() -> MeshRequest + 'static) {
        let Some(mesh) = self.mesh.get().filter(|_| self.ctx.shards > 1).cloned() else {
            return;
        };
        let (me, shards) = (self.id, self.ctx.shards);
        glommio::spawn_local(async move {
            for shard in (0..shards).filter(|s| *s != me) {
                let _ = mesh.tell(shard, make()).await;
            }
        })
        .detach();
    }

    /// After the control shard changed a topic: update every replica and re-register.
    fn topic_changed(&self, name: &str, config: Option<TopicConfig>) {
        self.topics.apply(name, config.clone());
        let name = name.to_string();
        self.mesh
            .spawn_broadcast(move || MeshRequest::TopicChanged {
                name: name.clone(),
                config: config.clone(),
            });
        self.ctx_register_soon();
    }

    fn ctx_register_soon(&self) {
        let epoch = &self.register_epoch;
        epoch.advance(epoch.get() + 1);
    }

    /// On the control shard: the group topic `name` (retry or DLQ), created if missing.
    pub(crate) fn ensure_control_topic(&self, name: &str, queues: i32) -> Option<TopicConfig> {
        let control = self.control.as_ref()?;
        let created = control.topics.borrow_mut().ensure_group_topic(name, queues);
        match created {
            Ok((config, Some(job))) => {
                // Written in the background: the topic is usable at once, and a crash before
                // the write only means it is created again on next use.
                job.detach("a group's retry or DLQ topic created");
                self.topic_changed(name, Some(config.clone()));
                Some(config)
            }
            Ok((config, None)) => Some(config),
            Err(e) => {
                tracing::error!(topic = name, error = %e, "cannot persist a new topic");
                None
            }
        }
    }

    /// Creates `topic` for a send if the template allows it (on the control shard, or by asking
    /// it). `None` when the topic may not be auto-created.
    pub async fn create_topic_for_send(
        &self,
        topic: &str,
        default_topic: &str,
        queue_nums: i32,
        sys_flag: i32,
    ) -> Option<TopicConfig> {
        let Some(control) = &self.control else {
            let mesh = self.mesh.get()?;
            let request = MeshRequest::CreateTopicForSend {
                topic: topic.to_string(),
                default_topic: default_topic.to_string(),
                queue_nums,
                sys_flag,
            };
            return match mesh.call(0, request).await {
                Ok(MeshResponse::Topic(Some(config))) => {
                    self.topics.apply(topic, Some(config.clone()));
                    Some(config)
                }
                _ => None,
            };
        };
        let created =
            control
                .topics
                .borrow_mut()
                .create_on_send(topic, default_topic, queue_nums, sys_flag);
        let (config, job) = match created {
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
            self.topic_changed(topic, Some(config.clone()));
            if let Err(e) = job.run().await {
                tracing::error!(topic, error = %e, "cannot persist an auto-created topic");
                return None;
            }
        }
        Some(config)
    }

    fn registration(&self) -> Option<BrokerRegistration> {
        let control = self.control.as_ref()?;
        let cfg = &self.ctx.cfg;
        let wrapper = control.topics.borrow().registration(self.ctx.permission());
        Some(BrokerRegistration {
            cluster_name: cfg.broker_cluster_name.clone(),
            broker_name: cfg.broker_name.clone(),
            broker_addr: self.ctx.broker_addr.clone(),
            broker_id: cfg.broker_id as i64,
            ha_server_addr: format!("{}:{}", cfg.broker_ip2, self.ctx.ha_port),
            body: RegisterBrokerBody {
                filter_server_list: Vec::new(),
                topic_config_serialize_wrapper: wrapper,
            },
        })
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
/// `registerNameServerPeriod`, and right after a topic change; unregisters on shutdown.
/// `ready` is told once the first round (bounded by `registerBrokerTimeoutMills` per
/// nameserver) is done, whatever its outcome.
pub async fn run_registration(
    shard: Rc<Shard>,
    shutdown: Shutdown,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
) {
    let timeout = Duration::from_millis(shard.ctx.cfg.register_broker_timeout_ms);
    let clients: Vec<RpcClient> = shard
        .ctx
        .namesrv_addrs
        .iter()
        .map(|a| RpcClient::new(a.clone(), timeout))
        .collect();
    let period = Duration::from_millis(shard.ctx.cfg.register_namesrv_period_ms);
    loop {
        let seen = shard.register_epoch.get();
        if let Some(registration) = shard.registration() {
            let answer = register_everywhere(
                &clients,
                &registration,
                req::REGISTER_BROKER,
                shard.ctx.credentials(),
            )
            .await;
            if let Some(reply) = answer {
                // A slave learns its master's addresses from the answer (HA.md §1).
                let field = |k: &str| reply.ext(k).filter(|v| !v.is_empty()).map(str::to_string);
                shard.master_addr_learned(field("haServerAddr"), field("masterAddr"));
            }
        }
        let _ = ready.send(Ok(()));
        let next = future::or(
            async {
                glommio::timer::sleep(period).await;
                true
            },
            future::or(
                async {
                    let _ = shard.register_epoch.wait_for(seen + 1).await;
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
    if let Some(registration) = shard.registration() {
        let credentials = shard.ctx.credentials();
        register_everywhere(&clients, &registration, req::UNREGISTER_BROKER, credentials).await;
    }
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
