//! Topic commands: topicList, topicRoute, topicStatus, topicClusterList, updateTopic,
//! deleteTopic.

use std::collections::BTreeSet;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};
use serde::Serialize;

use super::cluster::{cluster_info, cluster_members, members_of, targets};
use super::output::{self, left, out, Table};
use super::{
    broker, call, command, fetch_mq_table, AdminError, Common, Context, Target, TopicArgs,
};
use crate::client::NamesrvClient;
use crate::protocol::register::TopicConfig;
use crate::protocol::route::{BrokerData, TopicRouteData};
use crate::remoting::request;

use crate::names::NAMESPACE_ORDER_TOPIC_CONFIG;
/// TopicSysFlag bits.
const FLAG_UNIT: i32 = 1;
const FLAG_UNIT_SUB: i32 = 2;

#[derive(Args, Debug)]
pub(super) struct UpdateTopicArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: Target,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Read queue count.
    #[arg(short = 'r', long = "readQueueNums", default_value_t = 8)]
    read_queue_nums: i32,
    /// Write queue count.
    #[arg(short = 'w', long = "writeQueueNums", default_value_t = 8)]
    write_queue_nums: i32,
    /// Permission: 2 write only, 4 read only, 6 read and write.
    #[arg(short = 'p', long = "perm", default_value_t = 6)]
    perm: i32,
    /// Ordered topic (`true`/`false`): also sets its order conf in the nameservers.
    #[arg(short = 'o', long = "order", action = ArgAction::Set, default_value = "false",
        value_parser = BoolishValueParser::new())]
    order: bool,
    /// Unit topic (`true`/`false`).
    #[arg(short = 'u', long = "unit", action = ArgAction::Set, default_value = "false",
        value_parser = BoolishValueParser::new())]
    unit: bool,
    /// Has unit subscription (`true`/`false`).
    #[arg(short = 's', long = "hasUnitSub", action = ArgAction::Set, default_value = "false",
        value_parser = BoolishValueParser::new())]
    has_unit_sub: bool,
}

#[derive(Args, Debug)]
pub(super) struct DeleteTopicArgs {
    #[command(flatten)]
    common: Common,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Delete from every master of this cluster.
    #[arg(short = 'c', long = "clusterName")]
    cluster: String,
}

/// GET_ROUTEINFO_BY_TOPIC.
pub(crate) fn route(ns: &mut NamesrvClient, topic: &str) -> Result<TopicRouteData, AdminError> {
    let addr = ns.conn.addr().to_string();
    ns.route(topic)
        .context(|| format!("GET_ROUTEINFO_BY_TOPIC (105) of topic {topic} from nameserver {addr}"))
}

/// The master's address of a broker group, else any of its addresses (`selectBrokerAddr`).
pub(crate) fn select_addr(data: &BrokerData) -> Option<&str> {
    let addrs = &data.broker_addrs;
    addrs
        .get(&0)
        .or_else(|| addrs.values().next())
        .map(String::as_str)
}

/// Every topic the nameserver knows, in its order.
pub(crate) fn topic_names(common: &Common) -> Result<Vec<String>, AdminError> {
    let mut ns = common.namesrv()?;
    let addr = ns.conn.addr().to_string();
    let topics = ns
        .topics()
        .context(|| format!("GET_ALL_TOPIC_LIST_FROM_NAMESERVER (206) from nameserver {addr}"))?;
    Ok(topics.topic_list.into_iter().collect())
}

/// `topicList`: every topic the nameserver knows.
pub(super) fn topic_list(args: &Common) -> Result<(), AdminError> {
    let topics = topic_names(args)?;
    if args.json {
        return output::print_json(&topics);
    }
    for topic in topics {
        out!("{topic}");
    }
    Ok(())
}

/// `topicRoute`: the route as JSON (mqadmin prints it as JSON too).
pub(super) fn topic_route(args: &TopicArgs) -> Result<(), AdminError> {
    let route = route(&mut args.common.namesrv()?, &args.topic)?;
    output::print_json(&route)
}

/// One queue of topicStatus.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueStatus {
    pub broker_name: String,
    pub queue_id: i32,
    pub min_offset: i64,
    pub max_offset: i64,
    pub last_update_timestamp: i64,
}

/// GET_TOPIC_STATS_INFO of every broker of `route`, by broker and queue.
pub(crate) fn topic_queues(
    route: &TopicRouteData,
    topic: &str,
) -> Result<Vec<QueueStatus>, AdminError> {
    let mut queues = Vec::new();
    for data in &route.broker_datas {
        let Some(addr) = select_addr(data) else {
            continue;
        };
        let cmd = command(request::GET_TOPIC_STATS_INFO, &[("topic", topic)]);
        let about = format!("of topic {topic}");
        for (mq, offsets) in fetch_mq_table(&mut broker(addr)?, cmd, &about)?.0 {
            let number =
                |k: &str| crate::protocol::lenient::from_value::<i64>(&offsets[k]).unwrap_or(0);
            queues.push(QueueStatus {
                broker_name: mq.broker_name,
                queue_id: mq.queue_id,
                min_offset: number("minOffset"),
                max_offset: number("maxOffset"),
                last_update_timestamp: number("lastUpdateTimestamp"),
            });
        }
    }
    queues.sort_by(|a, b| (&a.broker_name, a.queue_id).cmp(&(&b.broker_name, b.queue_id)));
    Ok(queues)
}

/// `topicStatus`: GET_TOPIC_STATS_INFO of every broker of the topic's route, by broker and
/// queue.
pub(super) fn topic_status(args: &TopicArgs) -> Result<(), AdminError> {
    let route = route(&mut args.common.namesrv()?, &args.topic)?;
    let queues = topic_queues(&route, &args.topic)?;
    if args.common.json {
        return output::print_json(&queues);
    }
    let mut table = Table::new(&[
        left("#Broker Name", 32, "  "),
        left("#QID", 4, "  "),
        left("#Min Offset", 20, "  "),
        left("#Max Offset", 20, "    "),
        left("#Last Updated", 0, ""),
    ]);
    for q in &queues {
        let updated = match q.last_update_timestamp {
            t if t > 0 => output::date_time_millis(t),
            _ => String::new(),
        };
        let numbers = [q.queue_id.into(), q.min_offset, q.max_offset].map(|n| n.to_string());
        let [qid, min, max] = numbers;
        table.row(vec![q.broker_name.clone(), qid, min, max, updated]);
    }
    table.print();
    Ok(())
}

/// `topicClusterList`: the clusters holding a broker of the topic's route.
pub(super) fn topic_cluster_list(args: &TopicArgs) -> Result<(), AdminError> {
    let mut ns = args.common.namesrv()?;
    let route = route(&mut ns, &args.topic)?;
    let info = cluster_info(&mut ns)?;
    let brokers: BTreeSet<&str> = route
        .broker_datas
        .iter()
        .map(|b| b.broker_name.as_str())
        .collect();
    let clusters: Vec<&String> = info
        .cluster_addr_table
        .iter()
        .filter(|(_, names)| names.iter().any(|n| brokers.contains(n.as_str())))
        .map(|(cluster, _)| cluster)
        .collect();
    if args.common.json {
        return output::print_json(&clusters);
    }
    for cluster in clusters {
        out!("{cluster}");
    }
    Ok(())
}

/// Java's `TopicConfig.toString()`.
fn describe(config: &TopicConfig) -> String {
    format!(
        "TopicConfig [topicName={}, readQueueNums={}, writeQueueNums={}, perm={}, \
         topicFilterType={}, topicSysFlag={}, order={}]",
        config.topic_name,
        config.read_queue_nums,
        config.write_queue_nums,
        output::perm_string(config.perm),
        config.topic_filter_type,
        config.topic_sys_flag,
        config.order
    )
}

/// UPDATE_AND_CREATE_TOPIC of `config` on the broker at `addr`.
fn create_topic(addr: &str, config: &TopicConfig) -> Result<(), AdminError> {
    let numbers = [
        config.read_queue_nums,
        config.write_queue_nums,
        config.perm,
        config.topic_sys_flag,
    ];
    let [read, write, perm, sys_flag] = numbers.map(|n| n.to_string());
    let order = config.order.to_string();
    let fields = [
        ("topic", config.topic_name.as_str()),
        ("defaultTopic", "TBW102"),
        ("readQueueNums", &read),
        ("writeQueueNums", &write),
        ("perm", &perm),
        ("topicFilterType", &config.topic_filter_type),
        ("topicSysFlag", &sys_flag),
        ("order", &order),
    ];
    let cmd = command(request::UPDATE_AND_CREATE_TOPIC, &fields);
    let about = format!("of topic {} to broker {addr}", config.topic_name);
    call(&mut broker(addr)?, cmd, &about).map(drop)
}

/// What updateTopic did (`--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicUpdated {
    pub topic_config: TopicConfig,
    pub brokers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_conf: Option<String>,
}

/// A new topic's config with the defaults mqadmin's updateTopic sends.
pub(crate) fn topic_config(
    name: &str,
    read: i32,
    write: i32,
    perm: i32,
    order: bool,
) -> TopicConfig {
    TopicConfig {
        order,
        perm,
        read_queue_nums: read,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_name: name.trim().to_string(),
        topic_sys_flag: 0,
        write_queue_nums: write,
    }
}

/// Creates or updates `config` on the broker of `target`, or on every master of its cluster;
/// an ordered topic's `brokerName:writeQueueNums` list goes to every nameserver's KV config.
pub(crate) fn update_topic_config(
    common: &Common,
    target: &Target,
    config: TopicConfig,
) -> Result<TopicUpdated, AdminError> {
    let mut brokers = Vec::new();
    for b in targets(common, target, false)? {
        create_topic(&b.addr, &config)?;
        brokers.push(b.addr);
    }
    let order_conf = match config.order {
        true => Some(set_order_conf(common, target, &config, &brokers)?),
        false => None,
    };
    Ok(TopicUpdated {
        topic_config: config,
        brokers,
        order_conf,
    })
}

/// `updateTopic`: creates or updates the topic on `-b`, or on every master of `-c`.
pub(super) fn update_topic(args: &UpdateTopicArgs) -> Result<(), AdminError> {
    let sys_flag =
        if args.unit { FLAG_UNIT } else { 0 } | if args.has_unit_sub { FLAG_UNIT_SUB } else { 0 };
    let mut config = topic_config(
        &args.topic,
        args.read_queue_nums,
        args.write_queue_nums,
        args.perm,
        args.order,
    );
    config.topic_sys_flag = sys_flag;
    let updated = update_topic_config(&args.common, &args.target, config)?;
    if args.common.json {
        return output::print_json(&updated);
    }
    for addr in &updated.brokers {
        out!("create topic to {addr} success.");
    }
    if let Some(conf) = &updated.order_conf {
        let scope = if args.target.cluster.is_some() {
            "cluster"
        } else {
            "broker"
        };
        out!("set {scope} orderConf. isOrder=true, orderConf=[{conf}]");
    }
    out!("{}", describe(&updated.topic_config));
    Ok(())
}

/// PUT_KV_CONFIG of the topic's order conf (`brokerName:writeQueueNums;…` of the brokers at
/// `addrs`, named from the cluster info) in every nameserver.
fn set_order_conf(
    common: &Common,
    target: &Target,
    config: &TopicConfig,
    addrs: &[String],
) -> Result<String, AdminError> {
    let info = cluster_info(&mut common.namesrv()?)?;
    let names: BTreeSet<String> = members_of(&info, target.cluster.as_deref())
        .into_iter()
        .filter(|m| addrs.contains(&m.addr))
        .map(|m| m.broker_name)
        .collect();
    if names.is_empty() {
        let e = format!("no broker of the cluster info is at {}", addrs.join(", "));
        return Err(AdminError::Failed(e));
    }
    let conf: Vec<String> = names
        .iter()
        .map(|n| format!("{n}:{}", config.write_queue_nums))
        .collect();
    let conf = conf.join(";");
    for addr in common.namesrv_addrs()? {
        let mut ns = NamesrvClient::connect(&addr, super::TIMEOUT)
            .context(|| format!("connecting to nameserver {addr}"))?;
        ns.put_kv(NAMESPACE_ORDER_TOPIC_CONFIG, &config.topic_name, &conf)
            .context(|| format!("PUT_KV_CONFIG (100) of the order conf to nameserver {addr}"))?;
    }
    Ok(conf)
}

/// What deleteTopic did (`--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicDeleted {
    pub topic: String,
    pub cluster_name: String,
    pub brokers: Vec<String>,
    pub namesrvs: Vec<String>,
}

/// DELETE_TOPIC_IN_BROKER on every master of the cluster (slaves copy their master's topic
/// table, and refuse changes), then DELETE_TOPIC_IN_NAMESRV for that cluster in every
/// nameserver.
pub(crate) fn delete_topic_in(
    common: &Common,
    topic: &str,
    cluster: &str,
) -> Result<TopicDeleted, AdminError> {
    let (topic, cluster) = (topic.trim(), cluster.trim());
    let brokers = cluster_members(common, cluster, false)?;
    for b in &brokers {
        let cmd = command(request::DELETE_TOPIC_IN_BROKER, &[("topic", topic)]);
        call(&mut broker(&b.addr)?, cmd, &format!("of topic {topic}"))?;
    }
    let namesrvs = common.namesrv_addrs()?;
    for addr in &namesrvs {
        let mut ns = NamesrvClient::connect(addr, super::TIMEOUT)
            .context(|| format!("connecting to nameserver {addr}"))?;
        ns.delete_topic(topic, Some(cluster))
            .context(|| format!("DELETE_TOPIC_IN_NAMESRV (216) of topic {topic}"))?;
    }
    Ok(TopicDeleted {
        topic: topic.to_string(),
        cluster_name: cluster.to_string(),
        brokers: brokers.into_iter().map(|b| b.addr).collect(),
        namesrvs,
    })
}

/// `deleteTopic`: the topic off every master of the cluster and off the nameservers.
pub(super) fn delete_topic(args: &DeleteTopicArgs) -> Result<(), AdminError> {
    let deleted = delete_topic_in(&args.common, &args.topic, &args.cluster)?;
    if args.common.json {
        return output::print_json(&deleted);
    }
    let (topic, cluster) = (&deleted.topic, &deleted.cluster_name);
    out!("delete topic [{topic}] from cluster [{cluster}] success.");
    out!("delete topic [{topic}] from NameServer success.");
    Ok(())
}

/// GroupList of QUERY_TOPIC_CONSUME_BY_WHO.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupList {
    #[serde(default)]
    group_list: BTreeSet<String>,
}

/// The consumer groups of `topic` (online subscribers and groups with offsets on it), from
/// QUERY_TOPIC_CONSUME_BY_WHO of every broker of its route.
pub(crate) fn topic_consumers(
    route: &TopicRouteData,
    topic: &str,
) -> Result<BTreeSet<String>, AdminError> {
    let mut groups = BTreeSet::new();
    for addr in route.broker_datas.iter().filter_map(select_addr) {
        let cmd = command(request::QUERY_TOPIC_CONSUME_BY_WHO, &[("topic", topic)]);
        let about = format!("of topic {topic}");
        let list: GroupList = super::fetch_json(&mut broker(addr)?, cmd, &about)?;
        groups.extend(list.group_list);
    }
    Ok(groups)
}
