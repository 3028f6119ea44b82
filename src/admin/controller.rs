//! mqadmin 5.x's controller commands: getControllerMetaData, getSyncStateSet, electMaster,
//! cleanBrokerMetadata, getControllerConfig. `-a` names the controllers (`host:port;…`, a
//! standalone controller or a nameserver embedding one); reads and changes go to the leader,
//! found through CONTROLLER_GET_METADATA_INFO.

use clap::Args;
use serde_json::json;

use super::output::{self, out};
use super::{call, command, AdminError, Connection, Context, TIMEOUT};
use crate::remoting::request;

/// `-a controllerAddress` (several, `;`-separated) and `--json`.
#[derive(Args, Debug)]
pub(crate) struct ControllerCommon {
    /// Controller addresses `host:port;host:port`.
    #[arg(short = 'a', long = "controllerAddress")]
    controllers: String,
    /// Print JSON (for scripts) instead of mqadmin's text.
    #[arg(long = "json")]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SyncStateSetArgs {
    #[command(flatten)]
    common: ControllerCommon,
    /// Broker group names, `,`-separated.
    #[arg(short = 'b', long = "brokerName")]
    brokers: String,
}

#[derive(Args, Debug)]
pub(crate) struct ElectMasterArgs {
    #[command(flatten)]
    common: ControllerCommon,
    /// Cluster name.
    #[arg(short = 'c', long = "clusterName")]
    cluster: String,
    /// Broker group name.
    #[arg(short = 'b', long = "brokerName")]
    broker: String,
    /// The controller id of the replica to make master (it must be alive and in the
    /// SyncStateSet, unless the controller allows unclean elections).
    #[arg(short = 'i', long = "brokerId")]
    broker_id: u64,
}

#[derive(Args, Debug)]
pub(crate) struct CleanArgs {
    #[command(flatten)]
    common: ControllerCommon,
    /// Cluster name.
    #[arg(short = 'c', long = "clusterName")]
    cluster: String,
    /// Broker group name.
    #[arg(long = "bn", visible_alias = "brokerName")]
    broker: String,
    /// Controller ids to forget, `;`-separated (none: the whole group).
    #[arg(short = 'b', long = "brokerControllerIdsToClean")]
    ids: Option<String>,
    /// Also forget replicas that are still heartbeating.
    #[arg(short = 'l', long = "cleanLivingBroker")]
    living: bool,
}

#[derive(Args, Debug)]
pub(crate) struct UpdateConfigArgs {
    #[command(flatten)]
    common: ControllerCommon,
    /// The key to change.
    #[arg(short = 'k', long = "key")]
    key: String,
    /// Its new value.
    #[arg(short = 'v', long = "value")]
    value: String,
}

#[derive(Args, Debug)]
pub(crate) struct BrokerEpochArgs {
    #[command(flatten)]
    common: super::Common,
    /// Every broker (master and slaves) of this cluster.
    #[arg(short = 'c', long = "clusterName", conflicts_with = "broker")]
    cluster: Option<String>,
    /// Every replica of this broker group.
    #[arg(short = 'b', long = "brokerName")]
    broker: Option<String>,
    /// Print again every this many seconds, until interrupted.
    #[arg(short = 'i', long = "interval")]
    interval: Option<u64>,
}

impl ControllerCommon {
    fn addrs(&self) -> Vec<&str> {
        crate::config::addr_list(&self.controllers).collect()
    }

    /// A connection to the leader (or, when none says it leads, the first that answers).
    fn leader(&self) -> Result<Connection, AdminError> {
        let mut fallback = None;
        for addr in self.addrs() {
            let Ok(mut conn) = Connection::connect(addr, TIMEOUT) else {
                continue;
            };
            let Ok(meta) = conn.call(command(request::CONTROLLER_GET_METADATA_INFO, &[])) else {
                continue;
            };
            if meta.ext("isLeader") == Some("true") {
                return Ok(conn);
            }
            fallback.get_or_insert(conn);
        }
        fallback.ok_or_else(|| {
            AdminError::Failed(format!("no controller answers at {}", self.controllers))
        })
    }
}

pub(crate) fn metadata(args: &ControllerCommon) -> Result<(), AdminError> {
    let addr = args
        .addrs()
        .first()
        .copied()
        .unwrap_or_default()
        .to_string();
    let mut conn =
        Connection::connect(&addr, TIMEOUT).context(|| format!("connecting to {addr}"))?;
    let meta = call(
        &mut conn,
        command(request::CONTROLLER_GET_METADATA_INFO, &[]),
        "",
    )?;
    let field = |k: &str| meta.ext(k).unwrap_or_default().to_string();
    if args.json {
        return output::print_json(&json!({
            "group": field("group"),
            "controllerLeaderId": field("controllerLeaderId"),
            "controllerLeaderAddress": field("controllerLeaderAddress"),
            "isLeader": field("isLeader") == "true",
            "peers": field("peers"),
        }));
    }
    out!("ControllerGroup\t{}", field("group"));
    out!("ControllerLeaderId\t{}", field("controllerLeaderId"));
    out!(
        "ControllerLeaderAddress\t{}",
        field("controllerLeaderAddress")
    );
    for peer in field("peers").split(';').filter(|p| !p.is_empty()) {
        out!("#Peer:\t{peer}");
    }
    Ok(())
}

pub(crate) fn sync_state_set(args: &SyncStateSetArgs) -> Result<(), AdminError> {
    let names: Vec<&str> = args.brokers.split(',').map(str::trim).collect();
    let mut conn = args.common.leader()?;
    let body = serde_json::to_vec(&names).expect("serializes");
    let mut cmd = command(request::CONTROLLER_GET_SYNC_STATE_DATA, &[]);
    cmd.body = body.into();
    let reply = call(&mut conn, cmd, "")?;
    let data: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| AdminError::Failed(format!("undecodable SyncStateSet data: {e}")))?;
    if args.common.json {
        return output::print_json(&data);
    }
    let table = data["replicasInfoTable"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for name in names {
        let Some(group) = table.get(name) else {
            out!("#brokerName\t{name}\tnot registered with the controller");
            continue;
        };
        out!("#brokerName\t{name}");
        out!("#MasterBrokerId\t{}", group["masterBrokerId"]);
        out!(
            "#MasterAddr\t{}",
            group["masterAddress"].as_str().unwrap_or_default()
        );
        out!("#MasterEpoch\t{}", group["masterEpoch"]);
        out!("#SyncStateSetEpoch\t{}", group["syncStateSetEpoch"]);
        let in_sync = group["inSyncReplicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        out!("#SyncStateSetNums\t{}", in_sync.len());
        for (label, list) in [
            ("InSyncReplica", in_sync),
            (
                "OutSyncReplica",
                group["notInSyncReplicas"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            ),
        ] {
            for r in list {
                out!(
                    "\t{label}:\tbrokerId={}, brokerAddress={}, alive={}",
                    r["brokerId"],
                    r["brokerAddress"].as_str().unwrap_or_default(),
                    r["alive"]
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn elect_master(args: &ElectMasterArgs) -> Result<(), AdminError> {
    let mut conn = args.common.leader()?;
    let id = args.broker_id.to_string();
    let cmd = command(
        request::CONTROLLER_ELECT_MASTER,
        &[
            ("clusterName", args.cluster.as_str()),
            ("brokerName", args.broker.as_str()),
            ("brokerId", id.as_str()),
            ("designateElect", "true"),
        ],
    );
    let reply = call(&mut conn, cmd, &format!("of {}", args.broker))?;
    let field = |k: &str| reply.ext(k).unwrap_or_default().to_string();
    if args.common.json {
        return output::print_json(&json!({
            "masterBrokerId": field("masterBrokerId"),
            "masterAddress": field("masterAddress"),
            "masterEpoch": field("masterEpoch"),
            "syncStateSetEpoch": field("syncStateSetEpoch"),
        }));
    }
    out!("#BrokerName\t{}", args.broker);
    out!("#MasterBrokerId\t{}", field("masterBrokerId"));
    out!("#MasterAddr\t{}", field("masterAddress"));
    out!("#MasterEpoch\t{}", field("masterEpoch"));
    out!("#SyncStateSetEpoch\t{}", field("syncStateSetEpoch"));
    Ok(())
}

pub(crate) fn clean_broker_metadata(args: &CleanArgs) -> Result<(), AdminError> {
    let mut conn = args.common.leader()?;
    let living = args.living.to_string();
    let cmd = command(
        request::CLEAN_BROKER_DATA,
        &[
            ("clusterName", args.cluster.as_str()),
            ("brokerName", args.broker.as_str()),
            (
                "brokerControllerIdsToClean",
                args.ids.as_deref().unwrap_or_default(),
            ),
            ("isCleanLivingBroker", living.as_str()),
        ],
    );
    call(&mut conn, cmd, &format!("of {}", args.broker))?;
    out!(
        "clear broker {} metadata from controller success!",
        args.broker
    );
    Ok(())
}

pub(crate) fn controller_config(args: &ControllerCommon) -> Result<(), AdminError> {
    for addr in args.addrs() {
        let mut conn =
            Connection::connect(addr, TIMEOUT).context(|| format!("connecting to {addr}"))?;
        let reply = call(&mut conn, command(request::GET_CONTROLLER_CONFIG, &[]), "")?;
        out!("============{addr}============");
        for line in String::from_utf8_lossy(&reply.body).lines() {
            if let Some((k, v)) = line.split_once('=') {
                out!("{k:<50}=  {v}");
            }
        }
    }
    Ok(())
}

/// mqadmin updateControllerConfig: `key=value` to every controller of `-a`.
pub(crate) fn update_controller_config(args: &UpdateConfigArgs) -> Result<(), AdminError> {
    let body = format!("{}={}\n", args.key, args.value).into_bytes();
    for addr in args.common.addrs() {
        let mut conn =
            Connection::connect(addr, TIMEOUT).context(|| format!("connecting to {addr}"))?;
        let cmd = command(request::UPDATE_CONTROLLER_CONFIG, &[]).with_body(body.clone());
        let reply = call(&mut conn, cmd, &format!("on {addr}"))?;
        out!(
            "update controller config success!{addr} ({})",
            reply.remark.unwrap_or_default()
        );
    }
    Ok(())
}

/// mqadmin getBrokerEpoch: the epoch entries (GET_BROKER_EPOCH_CACHE) of every replica of a
/// broker group (`-b`) or cluster (`-c`), found through the nameservers.
pub(crate) fn broker_epoch(args: &BrokerEpochArgs) -> Result<(), AdminError> {
    if args.cluster.is_none() == args.broker.is_none() {
        return Err(AdminError::Invalid(
            "give -c clusterName or -b brokerName".into(),
        ));
    }
    loop {
        let mut ns = args.common.namesrv()?;
        let info = super::cluster::cluster_info(&mut ns)?;
        let members: Vec<super::cluster::Member> =
            super::cluster::members_of(&info, args.cluster.as_deref())
                .into_iter()
                .filter(|m| args.broker.as_deref().is_none_or(|b| b == m.broker_name))
                .collect();
        let mut all = Vec::new();
        for m in members {
            let mut conn = Connection::connect(&m.addr, TIMEOUT)
                .context(|| format!("connecting to broker {}", m.addr))?;
            let reply = call(
                &mut conn,
                command(request::GET_BROKER_EPOCH_CACHE, &[]),
                &format!("of {}", m.addr),
            )?;
            let cache: serde_json::Value = serde_json::from_slice(&reply.body)
                .map_err(|e| AdminError::Invalid(format!("{}: bad epoch cache: {e}", m.addr)))?;
            all.push((m.addr, cache));
        }
        print_epochs(&all, args.common.json)?;
        let Some(seconds) = args.interval else {
            return Ok(());
        };
        std::thread::sleep(std::time::Duration::from_secs(seconds.max(1)));
    }
}

fn print_epochs(all: &[(String, serde_json::Value)], as_json: bool) -> Result<(), AdminError> {
    if as_json {
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|(addr, c)| json!({"brokerAddr": addr, "epochCache": c}))
            .collect();
        return output::print_json(&list);
    }
    for (addr, cache) in all {
        out!("");
        out!(
            "#clusterName\t{}",
            cache["clusterName"].as_str().unwrap_or_default()
        );
        out!(
            "#brokerName\t{}",
            cache["brokerName"].as_str().unwrap_or_default()
        );
        out!("#brokerAddr\t{addr}");
        out!("#brokerId\t{}", cache["brokerId"]);
        for e in cache["epochList"].as_array().into_iter().flatten() {
            out!(
                "#Epoch: EpochEntry{{epoch={}, startOffset={}, endOffset={}}}",
                e["epoch"],
                e["startOffset"],
                e["endOffset"]
            );
        }
    }
    Ok(())
}
