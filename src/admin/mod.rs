//! `ringmq admin`: mqadmin's commands, names, flags and output, talking to any RocketMQ 4.x
//! cluster only through [`crate::client`]. Every command also prints JSON with `--json`.
//!
//! * `topic`: topicList, topicRoute, topicStatus, topicClusterList, updateTopic, deleteTopic
//! * `message`: sendMessage, consumeMessage
//! * `query`: queryMsgById, queryMsgByKey, queryMsgByUniqueKey, queryMsgByOffset
//! * `trace`: queryMsgTraceById (message trace records, crate::message::trace)
//! * `offset`: resetOffsetByTime
//! * `group`: updateSubGroup, deleteSubGroup, consumerProgress, consumerConnection,
//!   producerConnection
//! * `cluster`: clusterList, brokerStatus, getBrokerConfig, updateBrokerConfig, wipeWritePerm,
//!   addWritePerm, getNamesrvConfig
//! * `controller`: getControllerMetaData, getSyncStateSet, electMaster, cleanBrokerMetadata,
//!   getControllerConfig, updateControllerConfig, getBrokerEpoch (RocketMQ 5's controller mode)
//! * `client_relay`: consumerStatus, getConsumerStatus, queryMsgById's `-g -d` (answered by a
//!   consumer client through its broker)
//! * `acl`: updateAclConfig, deleteAclConfig, updateGlobalWhiteAddr, clusterAclConfigVersion,
//!   getAclConfig
//! * `output`: mqadmin's tables, time and version formats, JSON
//! * `fastjson_mq` (in `protocol`): bodies keyed by MessageQueue objects (topic and consume stats)

pub(crate) mod acl;
pub(crate) mod client_relay;
pub(crate) mod cluster;
pub(crate) mod controller;
pub use crate::protocol::fastjson_mq;
pub(crate) mod group;
pub(crate) mod message;
pub(crate) mod offset;
pub(crate) mod output;
pub(crate) mod query;
pub(crate) mod topic;
pub(crate) mod trace;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::client::{ClientError, Connection, NamesrvClient};
use crate::protocol::lenient;
use crate::remoting::{request, RemotingCommand};

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
    #[command(flatten)]
    credentials: CredentialArgs,
}

/// The account every request is signed with (RocketMQ's ACL), as mqadmin takes it from
/// `$ROCKETMQ_HOME/conf/tools.yml`; the flags and environment come first.
#[derive(Args, Debug, Clone, Default)]
pub struct CredentialArgs {
    /// Access key to sign requests with (brokers with aclEnable=true). Not updateAclConfig's
    /// -a/--accessKey, the account it creates.
    #[arg(
        id = "sign_access_key",
        long = "access-key",
        env = "ROCKETMQ_ACCESS_KEY",
        global = true
    )]
    pub access_key: Option<String>,
    /// Secret key of --access-key.
    #[arg(
        id = "sign_secret_key",
        long = "secret-key",
        env = "ROCKETMQ_SECRET_KEY",
        global = true,
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
}

impl CredentialArgs {
    /// The credentials given, else those of `$ROCKETMQ_HOME/conf/tools.yml`, else none.
    pub fn resolve(&self) -> Result<Option<crate::client::Credentials>, String> {
        let home = std::env::var_os("ROCKETMQ_HOME").map(std::path::PathBuf::from);
        crate::acl::tool_credentials(
            self.access_key.as_deref(),
            self.secret_key.as_deref(),
            home.as_deref(),
        )
        .map_err(|e| e.to_string())
    }
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Every topic the nameserver knows.
    #[command(name = "topicList")]
    TopicList(Common),
    /// A topic's route: its brokers and queues, as JSON.
    #[command(name = "topicRoute")]
    TopicRoute(TopicArgs),
    /// A topic's queues on every broker: min and max offset, last update time.
    #[command(name = "topicStatus")]
    TopicStatus(TopicArgs),
    /// The clusters a topic is on.
    #[command(name = "topicClusterList")]
    TopicClusterList(TopicArgs),
    /// Create or update a topic on a broker or on every master of a cluster.
    #[command(name = "updateTopic")]
    UpdateTopic(topic::UpdateTopicArgs),
    /// Delete a topic from every master of a cluster and from the nameservers.
    #[command(name = "deleteTopic")]
    DeleteTopic(topic::DeleteTopicArgs),
    /// Clusters and their brokers, with each broker's version and load.
    #[command(name = "clusterList")]
    ClusterList(Common),
    /// The controller group: its leader and peers (controller mode).
    #[command(name = "getControllerMetaData")]
    GetControllerMetaData(controller::ControllerCommon),
    /// Broker groups' masters, epochs and SyncStateSets, from the controller leader.
    #[command(name = "getSyncStateSet")]
    GetSyncStateSet(controller::SyncStateSetArgs),
    /// Make a replica of a broker group its master (manual switch through the controller).
    #[command(name = "electMaster")]
    ElectMaster(controller::ElectMasterArgs),
    /// Make the controller forget a broker group or some of its replicas.
    #[command(name = "cleanBrokerMetadata")]
    CleanBrokerMetadata(controller::CleanArgs),
    /// Every controller's configuration.
    #[command(name = "getControllerConfig")]
    GetControllerConfig(controller::ControllerCommon),
    /// Change a controller setting on every controller of `-a` (until it restarts).
    #[command(name = "updateControllerConfig")]
    UpdateControllerConfig(controller::UpdateConfigArgs),
    /// The epoch entries of a broker group's or cluster's replicas (controller mode).
    #[command(name = "getBrokerEpoch")]
    GetBrokerEpoch(controller::BrokerEpochArgs),
    /// Send one message to a topic.
    #[command(name = "sendMessage")]
    SendMessage(message::SendArgs),
    /// Read messages of a topic's queues from an offset.
    #[command(name = "consumeMessage")]
    ConsumeMessage(message::ConsumeArgs),
    /// Messages by offsetMsgId (comma separated), with their bodies.
    #[command(name = "queryMsgById")]
    QueryMsgById(query::ByIdArgs),
    /// A consumer group's clients as they report themselves (GET_CONSUMER_RUNNING_INFO through
    /// the broker): one line per client, or one client's whole running info with `-i`.
    #[command(name = "consumerStatus")]
    ConsumerStatus(client_relay::ConsumerStatusArgs),
    /// The offsets a topic's consumers hold, asked of each client by the broker
    /// (INVOKE_BROKER_TO_GET_CONSUMER_STATUS).
    #[command(name = "getConsumerStatus")]
    GetConsumerStatus(client_relay::GetConsumerStatusArgs),
    /// Messages of a topic with a key, on every broker of its route.
    #[command(name = "queryMsgByKey")]
    QueryMsgByKey(query::ByKeyArgs),
    /// A message's trace (send, consumes, transaction end) from the trace topic.
    #[command(name = "queryMsgTraceById")]
    QueryMsgTraceById(trace::TraceArgs),
    /// The message of a topic with a unique key (UNIQ_KEY), with its body.
    #[command(name = "queryMsgByUniqueKey")]
    QueryMsgByUniqueKey(query::ByUniqueKeyArgs),
    /// The message at a queue offset of a topic on a broker, with its body.
    #[command(name = "queryMsgByOffset")]
    QueryMsgByOffset(query::ByOffsetArgs),
    /// Create or update a subscription group on a broker or every master of a cluster.
    #[command(name = "updateSubGroup")]
    UpdateSubGroup(group::UpdateSubGroupArgs),
    /// Delete a subscription group from a broker or every master of a cluster.
    #[command(name = "deleteSubGroup")]
    DeleteSubGroup(group::DeleteSubGroupArgs),
    /// A consumer group's progress per queue: broker offset, consumer offset, diff (every
    /// group's clients and lag without -g).
    #[command(name = "consumerProgress")]
    ConsumerProgress(group::ProgressArgs),
    /// The online clients of a consumer group and their subscriptions.
    #[command(name = "consumerConnection")]
    ConsumerConnection(GroupArgs),
    /// Move a consumer group's offsets on a topic to a point in time.
    #[command(name = "resetOffsetByTime")]
    ResetOffsetByTime(offset::ResetArgs),
    /// The online clients of a producer group sending to a topic.
    #[command(name = "producerConnection")]
    ProducerConnection(group::ProducerArgs),
    /// A broker's runtime figures (GET_BROKER_RUNTIME_INFO), sorted by key.
    #[command(name = "brokerStatus")]
    BrokerStatus(Targeted),
    /// A broker's configuration.
    #[command(name = "getBrokerConfig")]
    GetBrokerConfig(Targeted),
    /// Change a broker config key that can change at runtime, on a broker or every master of a
    /// cluster.
    #[command(name = "updateBrokerConfig")]
    UpdateBrokerConfig(cluster::UpdateConfigArgs),
    /// Take write permission away from a broker's topics in every nameserver.
    #[command(name = "wipeWritePerm")]
    WipeWritePerm(cluster::WritePermArgs),
    /// Give write permission back to a broker's topics in every nameserver.
    #[command(name = "addWritePerm")]
    AddWritePerm(cluster::WritePermArgs),
    /// Every nameserver's configuration.
    #[command(name = "getNamesrvConfig")]
    GetNamesrvConfig(Common),
    /// Create or update an ACL account on a broker or every master of a cluster.
    #[command(name = "updateAclConfig")]
    UpdateAclConfig(acl::UpdateAclArgs),
    /// Delete an ACL account from a broker or every master of a cluster.
    #[command(name = "deleteAclConfig")]
    DeleteAclConfig(acl::DeleteAclArgs),
    /// Replace the ACL's global white list of addresses.
    #[command(name = "updateGlobalWhiteAddr")]
    UpdateGlobalWhiteAddr(acl::GlobalWhiteArgs),
    /// Every ACL file of the brokers with its version and last update.
    #[command(name = "clusterAclConfigVersion")]
    ClusterAclConfigVersion(Targeted),
    /// The brokers' ACL: global white list and accounts.
    #[command(name = "getAclConfig")]
    GetAclConfig(Targeted),
}

/// Flags every command takes; the dashboard builds one with [`Common::for_namesrv`].
#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// Nameserver list `host:port;host:port` (defaults to NAMESRV_ADDR).
    #[arg(short = 'n', long = "namesrvAddr", env = "NAMESRV_ADDR")]
    namesrv: Option<String>,
    /// Print JSON (for scripts) instead of mqadmin's text.
    #[arg(long = "json")]
    json: bool,
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
struct GroupArgs {
    #[command(flatten)]
    common: Common,
    /// Consumer group name.
    #[arg(short = 'g', long = "groupName", visible_alias = "consumerGroup")]
    group: String,
}

/// `-b brokerAddr | -c clusterName`, exactly one.
#[derive(Args, Debug, Clone, Default)]
#[group(required = true, multiple = false)]
pub(crate) struct Target {
    /// Broker address `host:port`.
    #[arg(short = 'b', long = "brokerAddr")]
    pub(crate) broker: Option<String>,
    /// This cluster's brokers (from the nameserver's cluster info).
    #[arg(short = 'c', long = "clusterName")]
    pub(crate) cluster: Option<String>,
}

#[derive(Args, Debug)]
struct Targeted {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: Target,
}

/// Why a command failed: what it was doing, and the server's answer.
#[derive(Debug, Error)]
pub enum AdminError {
    #[error("{what} failed: {source}")]
    Call { what: String, source: ClientError },
    #[error("{0}")]
    Failed(String),
    /// What was asked for does not exist (a topic, a message, a cluster).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a value that does not parse).
    #[error("{0}")]
    Invalid(String),
}

/// Names the request or step a client error happened in.
trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, AdminError>;
}

impl<T> Context<T> for Result<T, ClientError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, AdminError> {
        self.map_err(|source| AdminError::Call {
            what: what(),
            source,
        })
    }
}

/// `NAME (code)` of a request code.
fn request_label(code: i32) -> String {
    format!("{} ({code})", request::name(code).unwrap_or("request"))
}

/// Sends `cmd` and returns its successful answer; the error names the request and `about`.
fn call(
    conn: &mut Connection,
    cmd: RemotingCommand,
    about: &str,
) -> Result<RemotingCommand, AdminError> {
    let label = request_label(cmd.code);
    conn.call(cmd)
        .context(|| format!("{label} {about}").trim_end().to_string())
}

/// A request with these header fields.
fn command(code: i32, fields: &[(&str, &str)]) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(code);
    for (k, v) in fields {
        cmd.set_ext(*k, *v);
    }
    cmd
}

/// Sends `cmd` and parses the (fastjson) JSON body of its answer.
fn fetch_json<T: DeserializeOwned>(
    conn: &mut Connection,
    cmd: RemotingCommand,
    about: &str,
) -> Result<T, AdminError> {
    let label = request_label(cmd.code);
    let reply = call(conn, cmd, about)?;
    lenient::from_slice(&reply.body).map_err(|e| unparsable(&label, conn.addr(), e))
}

/// Sends `cmd` and parses its answer's `offsetTable` keyed by MessageQueue objects, and the
/// rest of the body.
fn fetch_mq_table(
    conn: &mut Connection,
    cmd: RemotingCommand,
    about: &str,
) -> Result<(fastjson_mq::MqEntries, serde_json::Value), AdminError> {
    let label = request_label(cmd.code);
    let reply = call(conn, cmd, about)?;
    fastjson_mq::parse_mq_table(&reply.body, "offsetTable")
        .map_err(|e| unparsable(&label, conn.addr(), e))
}

fn unparsable(label: &str, addr: &str, reason: impl std::fmt::Display) -> AdminError {
    AdminError::Failed(format!(
        "the answer to {label} from {addr} does not parse: {reason}"
    ))
}

/// Connects to a broker.
fn broker(addr: &str) -> Result<Connection, AdminError> {
    Connection::connect(addr, TIMEOUT).context(|| format!("connecting to broker {addr}"))
}

impl Common {
    /// The flags of a caller that names the nameservers itself (the dashboard).
    pub(crate) fn for_namesrv(addrs: &str) -> Common {
        Common {
            namesrv: Some(addrs.to_string()),
            json: false,
        }
    }

    /// The nameservers of `-n` / NAMESRV_ADDR.
    fn namesrv_addrs(&self) -> Result<Vec<String>, AdminError> {
        let addrs: Vec<String> =
            crate::config::addr_list(self.namesrv.as_deref().unwrap_or_default())
                .map(str::to_string)
                .collect();
        if addrs.is_empty() {
            let e = "no nameserver given: pass -n host:port or set NAMESRV_ADDR";
            return Err(AdminError::Invalid(e.into()));
        }
        Ok(addrs)
    }

    /// Connects to the first reachable nameserver of the list.
    pub(crate) fn namesrv(&self) -> Result<NamesrvClient, AdminError> {
        let mut last = None;
        for addr in self.namesrv_addrs()? {
            match NamesrvClient::connect(&addr, TIMEOUT) {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        let all = self.namesrv.clone().unwrap_or_default();
        let source = last.unwrap_or(ClientError::Closed { addr: all.clone() });
        Err(AdminError::Call {
            what: format!("connecting to a nameserver of {all}"),
            source,
        })
    }
}

/// Runs `ringmq admin <args>`; errors name what failed and exit non-zero.
pub fn run(args: Vec<String>) -> ExitCode {
    let argv = std::iter::once("ringmq admin".to_string()).chain(args);
    let cli = match AdminCli::try_parse_from(argv) {
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
    match cli.credentials.resolve() {
        Ok(credentials) => crate::client::set_default_credentials(credentials),
        Err(e) => {
            eprintln!("ringmq admin: {e}");
            return ExitCode::from(2);
        }
    }
    match dispatch(cli.command) {
        Ok(()) if output::stdout_failed() => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq admin: {e}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: AdminCommand) -> Result<(), AdminError> {
    use AdminCommand as C;
    match command {
        C::TopicList(a) => topic::topic_list(&a),
        C::TopicRoute(a) => topic::topic_route(&a),
        C::TopicStatus(a) => topic::topic_status(&a),
        C::TopicClusterList(a) => topic::topic_cluster_list(&a),
        C::UpdateTopic(a) => topic::update_topic(&a),
        C::DeleteTopic(a) => topic::delete_topic(&a),
        C::ClusterList(a) => cluster::cluster_list(&a),
        C::GetControllerMetaData(a) => controller::metadata(&a),
        C::GetSyncStateSet(a) => controller::sync_state_set(&a),
        C::ElectMaster(a) => controller::elect_master(&a),
        C::CleanBrokerMetadata(a) => controller::clean_broker_metadata(&a),
        C::GetControllerConfig(a) => controller::controller_config(&a),
        C::UpdateControllerConfig(a) => controller::update_controller_config(&a),
        C::GetBrokerEpoch(a) => controller::broker_epoch(&a),
        C::SendMessage(a) => message::send_message(&a),
        C::ConsumeMessage(a) => message::consume_message(&a),
        C::QueryMsgById(a) => query::query_msg_by_id(&a),
        C::ConsumerStatus(a) => client_relay::consumer_status(&a),
        C::GetConsumerStatus(a) => client_relay::get_consumer_status(&a),
        C::QueryMsgByKey(a) => query::query_msg_by_key(&a),
        C::QueryMsgTraceById(a) => trace::query_msg_trace_by_id(&a),
        C::QueryMsgByUniqueKey(a) => query::query_msg_by_unique_key(&a),
        C::QueryMsgByOffset(a) => query::query_msg_by_offset(&a),
        C::UpdateSubGroup(a) => group::update_sub_group(&a),
        C::DeleteSubGroup(a) => group::delete_sub_group(&a),
        C::ConsumerProgress(a) => group::consumer_progress(&a),
        C::ConsumerConnection(a) => group::consumer_connection(&a),
        C::ProducerConnection(a) => group::producer_connection(&a),
        C::ResetOffsetByTime(a) => offset::reset_offset_command(&a),
        C::BrokerStatus(a) => cluster::broker_status(&a),
        C::GetBrokerConfig(a) => cluster::broker_config(&a),
        C::UpdateBrokerConfig(a) => cluster::update_config(&a),
        C::WipeWritePerm(a) => cluster::write_perm(&a, true),
        C::AddWritePerm(a) => cluster::write_perm(&a, false),
        C::GetNamesrvConfig(a) => cluster::namesrv_config(&a),
        C::UpdateAclConfig(a) => acl::update_acl(&a),
        C::DeleteAclConfig(a) => acl::delete_acl(&a),
        C::UpdateGlobalWhiteAddr(a) => acl::update_global_white(&a),
        C::ClusterAclConfigVersion(a) => acl::cluster_acl_version(&a),
        C::GetAclConfig(a) => acl::get_acl_config(&a),
    }
}
