//! Cluster-wide commands: clusterList, brokerStatus, getBrokerConfig, wipeWritePerm,
//! addWritePerm, getNamesrvConfig; and the lookups of a cluster's brokers the other commands
//! use for `-c`.

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;

use super::output::{self, left, out, right, Table};
use super::{broker, call, command, fetch_json, AdminError, Common, Context, Targeted, TIMEOUT};
use crate::client::{Connection, NamesrvClient};
use crate::protocol::route::{ClusterInfo, KvTable};
use crate::remoting::request;

#[derive(Args, Debug)]
pub(super) struct WritePermArgs {
    #[command(flatten)]
    common: Common,
    /// Broker name.
    #[arg(short = 'b', long = "brokerName")]
    broker_name: String,
}

#[derive(Args, Debug)]
pub(super) struct UpdateConfigArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: super::Target,
    /// Config key.
    #[arg(short = 'k', long = "key")]
    key: String,
    /// Its new value.
    #[arg(short = 'v', long = "value")]
    value: String,
}

/// One broker of a cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Member {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub addr: String,
}

/// GET_BROKER_CLUSTER_INFO from the first reachable nameserver.
pub(crate) fn cluster_info(ns: &mut NamesrvClient) -> Result<ClusterInfo, AdminError> {
    let addr = ns.conn.addr().to_string();
    ns.cluster_info()
        .context(|| format!("GET_BROKER_CLUSTER_INFO (106) from nameserver {addr}"))
}

/// Every broker of `info`, or of `cluster` only, ordered by cluster, name and id.
pub(crate) fn members_of(info: &ClusterInfo, cluster: Option<&str>) -> Vec<Member> {
    let mut members = Vec::new();
    for (cluster_name, names) in &info.cluster_addr_table {
        if cluster.is_some_and(|c| c != cluster_name) {
            continue;
        }
        for name in names {
            let Some(data) = info.broker_addr_table.get(name) else {
                continue;
            };
            for (id, addr) in &data.broker_addrs {
                members.push(Member {
                    cluster_name: cluster_name.clone(),
                    broker_name: name.clone(),
                    broker_id: *id,
                    addr: addr.clone(),
                });
            }
        }
    }
    members
}

/// The brokers of `cluster` (its masters only unless `slaves`); an error names the clusters
/// the nameserver knows when `cluster` is not one of them or has no such broker.
pub(super) fn cluster_members(
    common: &Common,
    cluster: &str,
    slaves: bool,
) -> Result<Vec<Member>, AdminError> {
    let mut ns = common.namesrv()?;
    let info = cluster_info(&mut ns)?;
    let members: Vec<Member> = members_of(&info, Some(cluster))
        .into_iter()
        .filter(|m| slaves || m.broker_id == 0)
        .collect();
    if !info.cluster_addr_table.contains_key(cluster) {
        let known: Vec<&str> = info.cluster_addr_table.keys().map(String::as_str).collect();
        return Err(AdminError::NotFound(format!(
            "cluster {cluster} is not known to nameserver {} (it knows: {})",
            ns.conn.addr(),
            known.join(", ")
        )));
    }
    if members.is_empty() {
        let role = if slaves { "broker" } else { "master broker" };
        let e = format!("cluster {cluster} has no {role} registered");
        return Err(AdminError::NotFound(e));
    }
    Ok(members)
}

/// The brokers `-b` or `-c` names: the address given, or the cluster's brokers.
pub(super) fn targets(
    common: &Common,
    target: &super::Target,
    slaves: bool,
) -> Result<Vec<Member>, AdminError> {
    match (&target.broker, &target.cluster) {
        (Some(addr), _) => Ok(vec![Member {
            cluster_name: String::new(),
            broker_name: String::new(),
            broker_id: 0,
            addr: addr.trim().to_string(),
        }]),
        (None, Some(cluster)) => cluster_members(common, cluster.trim(), slaves),
        (None, None) => Err(AdminError::Invalid(
            "pass -b brokerAddr or -c clusterName".into(),
        )),
    }
}

/// GET_BROKER_RUNTIME_INFO of the broker at `addr`.
pub(crate) fn runtime_info(addr: &str) -> Result<BTreeMap<String, String>, AdminError> {
    let cmd = command(request::GET_BROKER_RUNTIME_INFO, &[]);
    Ok(fetch_json::<KvTable>(&mut broker(addr)?, cmd, "")?.table)
}

/// One broker of the cluster info and its runtime table (or why it could not be read).
pub(crate) struct BrokerRuntime {
    pub member: Member,
    pub runtime: Result<BTreeMap<String, String>, AdminError>,
}

/// Every broker the nameserver knows, with its GET_BROKER_RUNTIME_INFO.
pub(crate) fn broker_runtimes(common: &Common) -> Result<Vec<BrokerRuntime>, AdminError> {
    let info = cluster_info(&mut common.namesrv()?)?;
    let runtimes = members_of(&info, None).into_iter().map(|member| {
        let runtime = runtime_info(&member.addr);
        BrokerRuntime { member, runtime }
    });
    Ok(runtimes.collect())
}

/// A clusterList row (mqadmin's columns).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClusterRow {
    #[serde(flatten)]
    pub member: Member,
    pub version: String,
    pub in_tps: f64,
    pub out_tps: f64,
    pub page_cache_lock_time_mills: i64,
    pub hour: f64,
    pub space: f64,
    /// Controller mode (the broker's runtime info): the group's master epoch, its
    /// SyncStateSet (controller ids) and that set's epoch, as the broker last read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_epoch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_state_set: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_state_set_epoch: Option<u32>,
}

pub(crate) fn cluster_row(member: Member, kv: &BTreeMap<String, String>) -> ClusterRow {
    let get = |k: &str| kv.get(k).map_or("", String::as_str);
    let first_rate = |k: &str| get(k).split(' ').next().and_then(|r| r.parse().ok());
    let now = output::now_ms();
    let hour = match get("earliestMessageTimeStamp").parse::<i64>() {
        Ok(t) if t > 0 => (now - t) as f64 / 3_600_000.0,
        _ => 0.0,
    };
    ClusterRow {
        member,
        version: get("brokerVersionDesc").to_string(),
        in_tps: first_rate("putTps").unwrap_or(0.0),
        out_tps: first_rate("getTransferedTps").unwrap_or(0.0),
        page_cache_lock_time_mills: get("pageCacheLockTimeMills").parse().unwrap_or(0),
        hour,
        space: get("commitLogDiskRatio").parse().unwrap_or(0.0),
        master_epoch: get("controllerMasterEpoch").parse().ok(),
        sync_state_set: kv.get("controllerSyncStateSet").cloned(),
        sync_state_set_epoch: get("controllerSyncStateSetEpoch").parse().ok(),
    }
}

impl ClusterRow {
    /// `epoch` of the master and `{ids}@epoch` of the SyncStateSet, or `-` outside controller
    /// mode.
    pub(crate) fn epochs(&self) -> (String, String) {
        match (
            self.master_epoch,
            &self.sync_state_set,
            self.sync_state_set_epoch,
        ) {
            (Some(m), Some(set), Some(e)) => (m.to_string(), format!("{{{set}}}@{e}")),
            _ => ("-".into(), "-".into()),
        }
    }
}

/// `clusterList`: every broker with its version and load. A broker that does not answer keeps
/// its row, with blank figures, and makes the command fail after printing.
pub(super) fn cluster_list(args: &Common) -> Result<(), AdminError> {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for b in broker_runtimes(args)? {
        let kv = b.runtime.unwrap_or_else(|e| {
            failed.push(e.to_string());
            BTreeMap::new()
        });
        rows.push(cluster_row(b.member, &kv));
    }
    if args.json {
        output::print_json(&rows)?;
    } else {
        print_cluster_rows(&rows);
    }
    partial_failure(&failed)
}

/// mqadmin's columns; with a broker in controller mode two more: the group's master epoch and
/// its SyncStateSet with that set's epoch (`{1,2}@3`).
fn print_cluster_rows(rows: &[ClusterRow]) {
    let controller_mode = rows.iter().any(|r| r.master_epoch.is_some());
    let mut columns = vec![
        left("#Cluster Name", 16, "  "),
        left("#Broker Name", 22, "  "),
        left("#BID", 4, "  "),
        left("#Addr", 22, " "),
        left("#Version", 16, " "),
        right("#InTPS(LOAD)", 19, " "),
        right("#OutTPS(LOAD)", 19, " "),
        right("#PCWait(ms)", 10, " "),
        right("#Hour", 5, " "),
        right("#SPACE", 6, ""),
    ];
    if controller_mode {
        columns.last_mut().expect("columns").gap = " ";
        columns.push(right("#MasterEpoch", 12, " "));
        columns.push(left("#SyncStateSet@Epoch", 19, ""));
    }
    let mut table = Table::new(&columns);
    for r in rows {
        let m = &r.member;
        let mut cells = vec![
            m.cluster_name.clone(),
            m.broker_name.clone(),
            m.broker_id.to_string(),
            m.addr.clone(),
            r.version.clone(),
            format!("{:9.2}(0,0ms)", r.in_tps),
            format!("{:9.2}(0,0ms)", r.out_tps),
            r.page_cache_lock_time_mills.to_string(),
            format!("{:2.2}", r.hour),
            format!("{:.4}", r.space),
        ];
        if controller_mode {
            let (master, set) = r.epochs();
            cells.extend([master, set]);
        }
        table.row(cells);
    }
    table.print();
}

/// Reports the failures a command went past (each on stderr) as its error.
pub(super) fn partial_failure(failed: &[String]) -> Result<(), AdminError> {
    for e in failed {
        eprintln!("ringmq admin: {e}");
    }
    match failed.len() {
        0 => Ok(()),
        n => Err(AdminError::Failed(format!("{n} request(s) failed"))),
    }
}

/// `brokerStatus`: the runtime table of `-b`, or of every broker of `-c`, sorted by key.
pub(super) fn broker_status(args: &Targeted) -> Result<(), AdminError> {
    let members = targets(&args.common, &args.target, true)?;
    let mut all = BTreeMap::new();
    for m in &members {
        all.insert(m.addr.clone(), runtime_info(&m.addr)?);
    }
    if args.common.json {
        return output::print_json(&all);
    }
    let by_cluster = args.target.cluster.is_some();
    for m in &members {
        for (k, v) in &all[&m.addr] {
            match by_cluster {
                true => out!("{:<24} {k:<32}: {v}", m.addr),
                false => out!("{k:<32}: {v}"),
            }
        }
    }
    Ok(())
}

/// The `key=value` lines of a properties body, by key.
fn parse_properties(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// GET_BROKER_CONFIG of the broker at `addr`.
fn broker_properties(addr: &str) -> Result<BTreeMap<String, String>, AdminError> {
    let mut conn = broker(addr)?;
    let reply = call(&mut conn, command(request::GET_BROKER_CONFIG, &[]), "")?;
    Ok(parse_properties(&reply.body))
}

/// `getBrokerConfig`: the configuration of `-b`, or of every broker of `-c`.
pub(super) fn broker_config(args: &Targeted) -> Result<(), AdminError> {
    let members = targets(&args.common, &args.target, true)?;
    let mut all = BTreeMap::new();
    for m in &members {
        all.insert(m.addr.clone(), broker_properties(&m.addr)?);
    }
    if args.common.json {
        return output::print_json(&all);
    }
    let masters: BTreeMap<&str, &str> = members
        .iter()
        .filter(|m| m.broker_id == 0)
        .map(|m| (m.broker_name.as_str(), m.addr.as_str()))
        .collect();
    for m in &members {
        match (&args.target.cluster, m.broker_id) {
            (None, _) => out!("============{}============", m.addr),
            (Some(_), 0) => out!("============Master: {}============", m.addr),
            (Some(_), _) => {
                let master = masters.get(m.broker_name.as_str()).copied().unwrap_or("");
                out!(
                    "============My Master: {master}=====Slave: {}============",
                    m.addr
                );
            }
        }
        for (k, v) in &all[&m.addr] {
            out!("{k:<50}=  {v}");
        }
        out!();
    }
    Ok(())
}

/// UPDATE_BROKER_CONFIG of `key=value` on the broker at `addr`.
pub(crate) fn update_broker_config(addr: &str, key: &str, value: &str) -> Result<(), AdminError> {
    let body = format!("{key}={value}\n");
    let cmd = command(request::UPDATE_BROKER_CONFIG, &[]).with_body(body.into_bytes());
    call(
        &mut broker(addr)?,
        cmd,
        &format!("of {key} to broker {addr}"),
    )
    .map(drop)
}

/// One broker's answer to updateBrokerConfig (`--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigUpdated {
    broker_addr: String,
    key: String,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `updateBrokerConfig`: `-k key -v value` on `-b`, or on every master of `-c` (a broker that
/// refuses is reported and the others are still updated, as mqadmin does).
pub(super) fn update_config(args: &UpdateConfigArgs) -> Result<(), AdminError> {
    let (key, value) = (args.key.trim(), args.value.trim());
    let mut results = Vec::new();
    for m in targets(&args.common, &args.target, false)? {
        let error = update_broker_config(&m.addr, key, value).err();
        if error.is_none() && !args.common.json {
            out!("update broker config success, {}", m.addr);
        }
        results.push(ConfigUpdated {
            broker_addr: m.addr,
            key: key.to_string(),
            value: value.to_string(),
            error: error.map(|e| e.to_string()),
        });
    }
    if args.common.json {
        output::print_json(&results)?;
    }
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.error).collect();
    partial_failure(&failed)
}

/// One nameserver's answer to wipeWritePerm / addWritePerm.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PermResult {
    namesrv: String,
    broker_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn set_write_perm(namesrv: &str, broker_name: &str, wipe: bool) -> Result<i64, AdminError> {
    let code = match wipe {
        true => request::WIPE_WRITE_PERM_OF_BROKER,
        false => request::ADD_WRITE_PERM_OF_BROKER,
    };
    let mut conn = Connection::connect(namesrv, TIMEOUT)
        .context(|| format!("connecting to nameserver {namesrv}"))?;
    let cmd = command(code, &[("brokerName", broker_name)]);
    let reply = call(&mut conn, cmd, &format!("of broker {broker_name}"))?;
    let key = if wipe {
        "wipeTopicCount"
    } else {
        "addTopicCount"
    };
    Ok(reply.ext(key).and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// `wipeWritePerm` / `addWritePerm` of `-b brokerName` in every nameserver of `-n`; the
/// nameservers that fail are reported and make the command fail.
pub(super) fn write_perm(args: &WritePermArgs, wipe: bool) -> Result<(), AdminError> {
    let verb = if wipe { "wipe" } else { "add" };
    let broker_name = args.broker_name.trim();
    let mut results = Vec::new();
    for namesrv in args.common.namesrv_addrs()? {
        let (topic_count, error) = match set_write_perm(&namesrv, broker_name, wipe) {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(e.to_string())),
        };
        if !args.common.json {
            match topic_count {
                Some(n) => out!(
                    "{verb} write perm of broker[{broker_name}] in name server[{namesrv}] OK, {n}"
                ),
                None => out!(
                    "{verb} write perm of broker[{broker_name}] in name server[{namesrv}] Failed"
                ),
            }
        }
        let broker_name = broker_name.to_string();
        results.push(PermResult {
            namesrv,
            broker_name,
            topic_count,
            error,
        });
    }
    if args.common.json {
        output::print_json(&results)?;
    }
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.error).collect();
    partial_failure(&failed)
}

/// `getNamesrvConfig`: the configuration of every nameserver of `-n`.
pub(super) fn namesrv_config(args: &Common) -> Result<(), AdminError> {
    let mut all = BTreeMap::new();
    let mut failed = Vec::new();
    for addr in args.namesrv_addrs()? {
        let fetched = Connection::connect(&addr, TIMEOUT)
            .context(|| format!("connecting to nameserver {addr}"))
            .and_then(|mut conn| {
                let cmd = command(request::GET_NAMESRV_CONFIG, &[]);
                call(&mut conn, cmd, &format!("to nameserver {addr}"))
            });
        match fetched {
            Ok(reply) => {
                all.insert(addr, parse_properties(&reply.body));
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    if args.json {
        output::print_json(&all)?;
    } else {
        for (addr, properties) in &all {
            out!("============{addr}============");
            for (k, v) in properties {
                out!("{k:<50}=  {v}");
            }
        }
    }
    partial_failure(&failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_bodies_parse_by_key() {
        let body = b"brokerName=broker-a\n# comment\nlistenPort = 10911\nempty=\n\nnoValue\n";
        let props = parse_properties(body);
        assert_eq!(props["brokerName"], "broker-a");
        assert_eq!(props["listenPort"], "10911");
        assert_eq!(props["empty"], "");
        assert_eq!(props.len(), 3);
    }
}
