//! The command line (flags in the spirit of RocketMQ's benchmark tools) and its validation into
//! a [`Plan`] with unit-named fields. Runs on the main thread before any executor starts.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use thiserror::Error;

use crate::body::BODY_HEADER_BYTES;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Send only; latency is send → acknowledgement.
    Produce,
    /// Pull only (what is in the topic or being sent by someone else).
    Consume,
    /// Send and pull at once; also latency from a message's send time to its delivery.
    E2e,
}

/// Where consumers start in each queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartFrom {
    /// The queue's max offset when the run starts (only what is sent from now on).
    Latest,
    /// The queue's min offset (everything still stored).
    Earliest,
}

/// Header encoding of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Serialize {
    /// JSON headers, as the Java client sends by default.
    Json,
    /// RocketMQ's binary header layout (`serializeTypeCurrentRPC=ROCKETMQ`).
    Rocketmq,
}

/// Load generator for RocketMQ 4.x compatible clusters (ringmq or Java RocketMQ).
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Args {
    /// produce, consume or e2e.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Nameserver list, `host:port;host:port`.
    #[arg(
        short = 'n',
        long = "namesrv",
        env = "NAMESRV_ADDR",
        default_value = "127.0.0.1:9876"
    )]
    pub namesrv: String,
    /// Topic (created through TBW102 on first send when the cluster allows auto-creation).
    #[arg(short = 't', long, default_value = "BenchmarkTest")]
    pub topic: String,
    /// Message body size in bytes (at least the 32-byte header loadgen embeds).
    #[arg(short = 's', long = "size", default_value_t = 128)]
    pub size_bytes: usize,
    /// Requests in flight at once (sends; each a batch with --batch).
    #[arg(short = 'w', long = "concurrency", default_value_t = 64)]
    pub concurrency: usize,
    /// Connections to each broker, per executor.
    #[arg(short = 'c', long = "connections", default_value_t = 1)]
    pub connections: usize,
    /// Executors (threads) loadgen's producers and consumers run on.
    #[arg(short = 'x', long = "executors", default_value_t = 1)]
    pub executors: usize,
    /// Pin executors to these CPUs, comma-separated (executor i gets the i-th, cycling).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Messages per request: 1 sends SEND_MESSAGE_V2, more sends SEND_BATCH_MESSAGE.
    #[arg(long = "batch", default_value_t = 1)]
    pub batch_messages: usize,
    /// Open loop: target messages per second, latency measured from each message's intended
    /// send time. Closed loop (each request waits for the previous one) when absent.
    #[arg(long = "rate")]
    pub rate_messages_per_second: Option<u64>,
    /// Open loop: sends are released on a grid of this many microseconds, so the executor
    /// wakes once per tick rather than once per message. A message leaves at most one tick
    /// after its intended time, and that wait counts in its latency.
    #[arg(long = "tick-us", default_value_t = 100)]
    pub tick_us: u64,
    /// Measured seconds (after the warm-up).
    #[arg(long = "duration", default_value_t = 10)]
    pub duration_seconds: u64,
    /// Seconds of load before measuring starts.
    #[arg(long = "warmup", default_value_t = 1)]
    pub warmup_seconds: u64,
    /// Set a KEYS property on every message (the broker indexes it).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub keys: bool,
    /// Set a TAGS property on every message.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub tags: bool,
    /// After the run, consume everything sent and check each acknowledged message arrived
    /// exactly once.
    #[arg(long)]
    pub flush_check: bool,
    /// Consumer group of the pulls.
    #[arg(short = 'g', long = "group", default_value = "loadgen_consumer")]
    pub group: String,
    /// Producer group of the sends.
    #[arg(long, default_value = "loadgen_producer")]
    pub producer_group: String,
    /// Queues a new topic gets (defaultTopicQueueNums, as the Java producer's 4).
    #[arg(long, default_value_t = 4)]
    pub queue_nums: i32,
    /// Where consumers start: latest (default for e2e) or earliest (default for consume).
    #[arg(long, value_enum)]
    pub from: Option<StartFrom>,
    /// Messages per pull (brokers cap it at 32).
    #[arg(long = "pull-batch", default_value_t = 32)]
    pub pull_batch_messages: i32,
    /// Deadline of every call, in milliseconds (Java's sendMsgTimeout is 3000).
    #[arg(long = "timeout-ms", default_value_t = 3000)]
    pub timeout_ms: u64,
    /// How long consumers may take, after the producers stop, to reach the end of each queue.
    #[arg(long = "drain-timeout", default_value_t = 30)]
    pub drain_timeout_seconds: u64,
    /// Header encoding.
    #[arg(long, value_enum, default_value_t = Serialize::Json)]
    pub serialize: Serialize,
    /// Write the report as JSON to this file.
    #[arg(long = "json", value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// No per-second lines (the summary is still printed).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Access key to sign every request with (brokers with aclEnable=true).
    #[arg(long = "access-key", env = "ROCKETMQ_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// Secret key of --access-key.
    #[arg(
        long = "secret-key",
        env = "ROCKETMQ_SECRET_KEY",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
}

/// A command line that cannot run.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ArgsError(pub String);

impl Args {
    /// Arguments for `scenario` with every default, for tests and embedding.
    pub fn defaults(scenario: Scenario, namesrv: &str, topic: &str) -> Args {
        let scenario = match scenario {
            Scenario::Produce => "produce",
            Scenario::Consume => "consume",
            Scenario::E2e => "e2e",
        };
        Args::parse_from(["loadgen", scenario, "-n", namesrv, "-t", topic])
    }

    /// Checks the values against each other and their bounds.
    pub fn validate(&self) -> Result<(), ArgsError> {
        let fail = |m: String| Err(ArgsError(m));
        if self.size_bytes < BODY_HEADER_BYTES || self.size_bytes > 4 * 1024 * 1024 {
            return fail(format!(
                "-s {} is out of range: {BODY_HEADER_BYTES}..=4194304 bytes \
                 (loadgen embeds a {BODY_HEADER_BYTES}-byte sequence and timestamp)",
                self.size_bytes
            ));
        }
        if self.concurrency == 0 || self.connections == 0 || self.batch_messages == 0 {
            return fail("-w, -c and --batch must be at least 1".into());
        }
        if !(1..=64).contains(&self.executors) {
            return fail(format!("-x {} is out of range 1..=64", self.executors));
        }
        if self.concurrency < self.executors {
            return fail("-w must be at least -x (each executor needs a sender)".into());
        }
        if !(1..=100_000).contains(&self.tick_us) {
            return fail(format!(
                "--tick-us {} is out of range 1..=100000",
                self.tick_us
            ));
        }
        if self.rate_messages_per_second == Some(0) || self.duration_seconds == 0 {
            return fail("--rate and --duration must be positive".into());
        }
        if !(1..=1024).contains(&self.queue_nums) || !(1..=1024).contains(&self.pull_batch_messages)
        {
            return fail("--queue-nums and --pull-batch must be in 1..=1024".into());
        }
        if self.batch_messages * self.size_bytes > 4 * 1024 * 1024 {
            return fail("--batch × -s exceeds the 4 MiB message limit".into());
        }
        self.credentials()?;
        Ok(())
    }

    /// The header encoding of `--serialize`.
    pub fn serialize_type(&self) -> ringmq::remoting::SerializeType {
        match self.serialize {
            Serialize::Json => ringmq::remoting::SerializeType::Json,
            Serialize::Rocketmq => ringmq::remoting::SerializeType::RocketMq,
        }
    }

    /// The account requests are signed with (both keys or neither).
    pub fn credentials(&self) -> Result<Option<ringmq::client::Credentials>, ArgsError> {
        ringmq::client::Credentials::from_pair(
            self.access_key.as_deref(),
            self.secret_key.as_deref(),
        )
        .map_err(|e| ArgsError(format!("--access-key/--secret-key: {e}")))
    }

    /// Per-call deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Where consumers start, after the scenario's default.
    pub fn start_from(&self) -> StartFrom {
        self.from.unwrap_or(match self.scenario {
            Scenario::Consume => StartFrom::Earliest,
            _ => StartFrom::Latest,
        })
    }

    /// True when this run sends.
    pub fn produces(&self) -> bool {
        self.scenario != Scenario::Consume
    }

    /// True when consumers run beside the producers (not only after them).
    pub fn consumes_live(&self) -> bool {
        self.scenario != Scenario::Produce
    }

    /// The nameservers of `-n`.
    pub fn namesrv_addrs(&self) -> Vec<String> {
        self.namesrv
            .split(';')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }
}
