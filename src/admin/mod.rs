//! `ringmq admin`: mqadmin's commands, names and flags, talking to any RocketMQ 4.x cluster
//! only through [`crate::client`]. So far: `topicList`, `topicRoute`, `clusterList`,
//! `sendMessage` and `consumeMessage`; the rest of mqadmin arrives with the admin issue and is
//! refused plainly until then.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::broker::OutgoingMessage;
use crate::client::{ClientError, Connection, NamesrvClient};
use crate::message::properties::{Properties, KEYS, TAGS};
use crate::protocol::route::TopicRouteData;

/// Call timeout of admin commands.
const TIMEOUT: Duration = Duration::from_secs(5);

/// mqadmin's commands.
#[derive(Parser, Debug)]
#[command(
    name = "ringmq admin",
    about = "mqadmin's commands against a RocketMQ-compatible cluster"
)]
pub struct AdminCli {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Every topic the nameserver knows.
    #[command(name = "topicList")]
    TopicList(Common),
    /// A topic's route: its brokers and queues, as JSON.
    #[command(name = "topicRoute")]
    TopicRoute(TopicArgs),
    /// Clusters and their brokers.
    #[command(name = "clusterList")]
    ClusterList(Common),
    /// Send one message to a topic.
    #[command(name = "sendMessage")]
    SendMessage(SendArgs),
    /// Read messages of a topic's queues from an offset.
    #[command(name = "consumeMessage")]
    ConsumeMessage(ConsumeArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// Nameserver list `host:port;host:port` (defaults to NAMESRV_ADDR).
    #[arg(short = 'n', long = "namesrvAddr", env = "NAMESRV_ADDR")]
    namesrv: String,
}

#[derive(Args, Debug)]
struct TopicArgs {
    #[command(flatten)]
    common: Common,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
}

#[derive(Args, Debug)]
struct SendArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Message body.
    #[arg(short = 'p', long = "body")]
    body: String,
    /// Message keys (space separated).
    #[arg(short = 'k', long = "key")]
    keys: Option<String>,
    /// Message tag.
    #[arg(short = 'c', long = "tags")]
    tags: Option<String>,
    /// Send to this broker name only.
    #[arg(short = 'b', long = "broker")]
    broker: Option<String>,
    /// Send to this queue.
    #[arg(short = 'i', long = "qid")]
    queue: Option<i32>,
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Only this broker name.
    #[arg(short = 'b', long = "brokerName")]
    broker: Option<String>,
    /// Only this queue.
    #[arg(short = 'i', long = "queueId")]
    queue: Option<i32>,
    /// Start offset (default 0).
    #[arg(short = 'o', long = "offset", default_value_t = 0)]
    offset: i64,
    /// Consumer group named in the pulls.
    #[arg(short = 'g', long = "consumerGroup", default_value = "TOOLS_CONSUMER")]
    group: String,
    /// At most this many messages.
    #[arg(short = 'c', long = "MessageNumber", default_value_t = 128)]
    count: usize,
}

/// Runs `ringmq admin <args>`; errors name what failed and exit non-zero.
pub fn run(args: Vec<String>) -> ExitCode {
    let cli =
        match AdminCli::try_parse_from(std::iter::once("ringmq admin".to_string()).chain(args)) {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
        };
    let result = match cli.command {
        AdminCommand::TopicList(a) => topic_list(&a),
        AdminCommand::TopicRoute(a) => topic_route(&a),
        AdminCommand::ClusterList(a) => cluster_list(&a),
        AdminCommand::SendMessage(a) => send_message(&a),
        AdminCommand::ConsumeMessage(a) => consume_message(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq admin: {e}");
            ExitCode::from(1)
        }
    }
}

/// Connects to the first reachable nameserver of the list.
fn namesrv(common: &Common) -> Result<NamesrvClient, ClientError> {
    let mut last = None;
    for addr in common
        .namesrv
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match NamesrvClient::connect(addr, TIMEOUT) {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ClientError::Closed {
        addr: common.namesrv.clone(),
    }))
}

fn topic_list(args: &Common) -> Result<(), ClientError> {
    for topic in namesrv(args)?.topics()?.topic_list {
        println!("{topic}");
    }
    Ok(())
}

fn topic_route(args: &TopicArgs) -> Result<(), ClientError> {
    let route = namesrv(&args.common)?.route(&args.topic)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&route).unwrap_or_default()
    );
    Ok(())
}

fn cluster_list(args: &Common) -> Result<(), ClientError> {
    let info = namesrv(args)?.cluster_info()?;
    println!(
        "{:<22} {:<22} {:<5} {:<22}",
        "#Cluster Name", "#Broker Name", "#BID", "#Addr"
    );
    for (cluster, brokers) in &info.cluster_addr_table {
        for name in brokers {
            let Some(data) = info.broker_addr_table.get(name) else {
                continue;
            };
            for (id, addr) in &data.broker_addrs {
                println!("{cluster:<22} {name:<22} {id:<5} {addr:<22}");
            }
        }
    }
    Ok(())
}

/// (broker name, master address, queue count) of the writable or readable queues of a route.
fn queues(route: &TopicRouteData, write: bool, broker: Option<&str>) -> Vec<(String, String, i32)> {
    let bit = if write { 2 } else { 4 };
    route
        .queue_datas
        .iter()
        .filter(|q| q.perm & bit != 0 && broker.is_none_or(|b| b == q.broker_name))
        .filter_map(|q| {
            let data = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name == q.broker_name)?;
            let addr = data.broker_addrs.get(&0)?.clone();
            let n = if write {
                q.write_queue_nums
            } else {
                q.read_queue_nums
            };
            Some((q.broker_name.clone(), addr, n))
        })
        .collect()
}

fn send_message(args: &SendArgs) -> Result<(), ClientError> {
    let mut ns = namesrv(&args.common)?;
    // A topic the nameserver does not know is sent through TBW102's brokers, which create it
    // (what RocketMQ producers do when autoCreateTopicEnable is on).
    let route = match ns.route(&args.topic) {
        Err(e) if e.code() == Some(crate::remoting::response::TOPIC_NOT_EXIST) => {
            ns.route("TBW102").map_err(|_| e)?
        }
        other => other?,
    };
    let targets = queues(&route, true, args.broker.as_deref());
    let Some((broker, addr, n)) = targets.first() else {
        return Err(ClientError::Body {
            addr: args.common.namesrv.clone(),
            reason: format!("no writable queue of {}", args.topic),
        });
    };
    let mut properties = Properties::default();
    if let Some(tags) = &args.tags {
        properties.set(TAGS, tags);
    }
    if let Some(keys) = &args.keys {
        properties.set(KEYS, keys);
    }
    let queue_id = args.queue.unwrap_or(0).clamp(0, (*n - 1).max(0));
    let msg = OutgoingMessage {
        topic: args.topic.clone(),
        queue_id,
        body: args.body.clone().into_bytes(),
        properties,
        flag: 0,
    };
    let sent = Connection::connect(addr, TIMEOUT)?.send_message("TOOLS_PRODUCER", &msg)?;
    // mqadmin prints the producer's SendStatus.
    let status = match sent.code {
        crate::remoting::response::SUCCESS => "SEND_OK",
        code => crate::remoting::response::name(code).unwrap_or("UNKNOWN"),
    };
    println!(
        "{:<32} {:<8} {:<24} #MsgId",
        "#Broker Name", "#QID", "#Send Result"
    );
    println!(
        "{broker:<32} {:<8} {:<24} {}",
        sent.queue_id, status, sent.msg_id
    );
    Ok(())
}

fn consume_message(args: &ConsumeArgs) -> Result<(), ClientError> {
    let route = namesrv(&args.common)?.route(&args.topic)?;
    let mut left = args.count;
    for (broker, addr, n) in queues(&route, false, args.broker.as_deref()) {
        let mut conn = Connection::connect(&addr, TIMEOUT)?;
        for queue in (0..n).filter(|q| args.queue.is_none_or(|only| only == *q)) {
            let mut offset = args.offset;
            while left > 0 {
                let pulled = conn.pull(
                    &args.group,
                    &args.topic,
                    queue,
                    offset,
                    left.min(32) as i32,
                    "*",
                    0,
                )?;
                if pulled.messages.is_empty() {
                    break;
                }
                for m in &pulled.messages {
                    let body = String::from_utf8_lossy(&m.body);
                    println!("Consume ok, broker={broker} queueId={queue} queueOffset={} tags={} keys={} body={body}",
                        m.queue_offset, m.properties.get(TAGS).unwrap_or(""), m.properties.get(KEYS).unwrap_or(""));
                    left -= 1;
                }
                offset = pulled.next_begin_offset;
            }
        }
    }
    Ok(())
}
