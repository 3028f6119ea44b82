//! Driving our broker with `rocketmq-client-rust` 1.0.0: the clients' runtime and builders,
//! shared by `rust_client_broker` and `rust_client_features`.
//!
//! The crate re-exports neither `Message`, `MessageExt`, `MessageQueue`, `MessageModel` nor
//! `ConsumeFromWhere` (they live in `rocketmq-model` / `rocketmq-protocol`, not our
//! dependencies), so they are reached through type inference:
//! * a `Message` is `Default::default()` pinned by `MessageUtil::get_reply_to_client(&Message)`
//!   (`new_message!`), then filled with its inherent setters;
//! * a listener's `M` is inferred as `MessageExt` from the client's blanket impls
//!   `impl<F: Fn(&[&MessageExt], ..) -> ..> MessageListenerConcurrently` (and `..Orderly`);
//! * `ConsumeFromWhere::ConsumeFromFirstOffset` is its `From<i32>` code 4;
//! * `MessageModel` is deserialized from its JSON name.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketmq_client_rust::{
    ClientConfig, ClientResult, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQProducer, DefaultMQPushConsumer,
    DefaultMQPushConsumerBuilder, MQPushConsumer, MessageListenerConcurrently, TelemetryHandle,
};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

use crate::harness::TestBroker;

/// `ConsumeFromWhere::ConsumeFromFirstOffset` as its `From<i32>` code.
pub const CONSUME_FROM_FIRST_OFFSET: i32 = 4;
pub const SEND_MILLIS: u64 = 5_000;

/// A new, empty `Message` with topic `$topic` (see the module doc).
macro_rules! new_message {
    ($topic:expr) => {{
        let mut msg = Default::default();
        let _ = rocketmq_client_rust::MessageUtil::get_reply_to_client(&msg); // a `Message`
        msg.set_topic(($topic).into());
        msg
    }};
}
pub(crate) use new_message;

/// The owner runtime every client of a test runs on; `close` joins all of their tasks.
pub struct Clients {
    owner: Option<RuntimeOwner>,
    pub runtime: Arc<ClientRuntime>,
    pub namesrv: String,
    /// Consumers send their subscription expression with every pull.
    pub post_subscription: bool,
}

impl Clients {
    pub fn new(name: &'static str, namesrv: &str, post_subscription: bool) -> Clients {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut config = RuntimeConfig {
            worker_threads: 2,
            thread_name: format!("rmq-{name}"),
            ..Default::default()
        };
        // The push consumer runs each listener call as a metadata-io blocking-lane task; on 2
        // CPUs that lane admits 4 running + 16 queued, and a rejected admission counts as a
        // failed consume (sent back for retry): let it queue a whole pull of every queue.
        config.blocking_lane_policies.metadata_io.max_queue_depth = 4_096;
        let owner = RuntimeOwner::plan(config)
            .expect("runtime config is valid")
            .build()
            .expect("runtime owner builds");
        let runtime = ClientRuntime::try_new(
            owner.root_context().component(name),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .expect("client runtime builds");
        Clients {
            owner: Some(owner),
            runtime,
            namesrv: namesrv.to_string(),
            post_subscription,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.owner.as_ref().expect("runtime alive").block_on(future)
    }

    /// Distinct instance names make distinct client ids (and `MQClientInstance`s).
    pub fn config(&self, instance: &str) -> ClientConfig {
        let mut config = ClientConfig::default();
        config.set_instance_name(instance.into());
        config.set_namesrv_addr(self.namesrv.as_str().into());
        config.set_mq_client_api_timeout(SEND_MILLIS);
        config
    }

    pub fn producer(&self, group: &str) -> DefaultMQProducer {
        let mut producer = DefaultMQProducer::builder(self.runtime.clone())
            .client_config(self.config(group))
            .name_server_addr(self.namesrv.as_str())
            .producer_group(group)
            .build();
        self.block_on(producer.start()).expect("producer starts");
        producer
    }

    /// A clustering push consumer builder of `group` reading from the first offset.
    pub fn push_builder(&self, group: &str, instance: &str) -> DefaultMQPushConsumerBuilder {
        DefaultMQPushConsumer::builder(self.runtime.clone())
            .client_config(self.config(instance))
            .name_server_addr(self.namesrv.as_str())
            .consumer_group(group)
            .consume_from_where(CONSUME_FROM_FIRST_OFFSET.into())
            .post_subscription_when_pull(self.post_subscription)
    }

    /// Subscribes `consumer` to `topic` / `expression`, lets `register` give it its listener,
    /// and starts it.
    pub fn start_consumer(
        &self,
        mut consumer: DefaultMQPushConsumer,
        topic: &str,
        expression: &str,
        register: impl FnOnce(&mut DefaultMQPushConsumer),
    ) -> DefaultMQPushConsumer {
        self.block_on(consumer.subscribe(topic, expression))
            .expect("subscribe");
        register(&mut consumer);
        self.block_on(consumer.start()).expect("consumer starts");
        consumer
    }

    /// A started clustering push consumer of `topic` / `expression` from the first offset.
    pub fn consumer(
        &self,
        group: &str,
        instance: &str,
        topic: &str,
        expression: &str,
        listener: impl MessageListenerConcurrently + 'static,
    ) -> DefaultMQPushConsumer {
        let consumer = self.push_builder(group, instance).build();
        self.start_consumer(consumer, topic, expression, |c| {
            c.register_message_listener_concurrently(listener)
        })
    }

    /// Joins every task of every client; asserts the reports are healthy.
    pub fn close(mut self) {
        for report in self.shutdown().into_iter().flatten() {
            assert!(report.is_healthy(), "client shutdown: {}", report.to_json());
        }
    }

    fn shutdown(&mut self) -> Option<[rocketmq_runtime::ShutdownReport; 2]> {
        let owner = self.owner.take()?;
        let reports =
            owner.block_on(async { [self.runtime.shutdown().await, owner.shutdown_tasks().await] });
        let _ = owner.shutdown_runtime_blocking_with_timeout(Duration::from_secs(5));
        Some(reports)
    }
}

impl Drop for Clients {
    /// Best effort after a failed test (the clients themselves were not shut down).
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// `e` and its sources: the client's `Display` is a redacted code only (every
/// `MQClientException`, e.g. "No route info", shows as `core.argument.invalid`).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text} <- {s}");
        source = s.source();
    }
    text
}

/// Waits (at most 10 s) until the nameserver routes the auto-create template topic TBW102:
/// `broker::start` returns before its first REGISTER_BROKER reached the nameserver, and a
/// client's first send to a new topic fails ("No topic route info ... TBW102") until then.
pub fn wait_registered(broker: &TestBroker) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.namesrv.client().route("TBW102").is_err() {
        assert!(Instant::now() < deadline, "the broker never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A listener forwarding `(consumer, message clone)` for each message it is given, then
/// answering `status`; `M` can only be `MessageExt` (inferred where the listener is
/// registered).
pub fn collector_answering<M: Clone + Send + 'static>(
    consumer: u8,
    tx: Sender<(u8, M)>,
    status: fn() -> ConsumeConcurrentlyStatus,
) -> impl Fn(&[&M], &ConsumeConcurrentlyContext) -> ClientResult<ConsumeConcurrentlyStatus>
       + Send
       + Sync
       + 'static {
    move |msgs, _| {
        for m in msgs {
            let _ = tx.send((consumer, (*m).clone()));
        }
        Ok(status())
    }
}

/// `collector_answering` CONSUME_SUCCESS.
pub fn collector<M: Clone + Send + 'static>(
    consumer: u8,
    tx: Sender<(u8, M)>,
) -> impl Fn(&[&M], &ConsumeConcurrentlyContext) -> ClientResult<ConsumeConcurrentlyStatus>
       + Send
       + Sync
       + 'static {
    collector_answering(consumer, tx, || ConsumeConcurrentlyStatus::ConsumeSuccess)
}
