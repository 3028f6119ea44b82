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

/// The nameserver KV namespace of ordered topics' `brokerName:queues;…` (NamesrvUtil).
const NAMESPACE_ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";
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
pub(super) fn route(ns: &mut NamesrvClient, topic: &str) -> Result<TopicRouteData, AdminError> {
    let addr = ns.conn.addr().to_string();
    ns.route(topic)
        .context(|| format!("GET_ROUTEINFO_BY_TOPIC (105) of topic {topic} from nameserver {addr}"))
}

/// The master's address of a broker group, else any of its addresses (`selectBrokerAddr`).
pub(super) fn select_addr(data: &BrokerData) -> Option<&str> {
    let addrs = &data.broker_addrs;
    addrs
        .get(&0)
        .or_else(|| addrs.values().next())
        .map(String::as_str)
}

/// `topicList`: every topic the nameserver knows.
pub(super) fn topic_list(args: &Common) -> Result<(), AdminError> {
    let mut ns = args.namesrv()?;
    let addr = ns.conn.addr().to_string();
    let topics = ns
        .topics()
        .context(|| format!("GET_ALL_TOPIC_LIST_FROM_NAMESERVER (206) from nameserver {addr}"))?;
    if args.json {
        return output::print_json(&topics.topic_list);
    }
    for topic in topics.topic_list {
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueStatus {
    broker_name: String,
    queue_id: i32,
    min_offset: i64,
    max_offset: i64,
    last_update_timestamp: i64,
}

/// `topicStatus`: GET_TOPIC_STATS_INFO of every broker of the topic's route, by broker and
/// queue.
pub(super) fn topic_status(args: &TopicArgs) -> Result<(), AdminError> {
    let route = route(&mut args.common.namesrv()?, &args.topic)?;
    let mut queues = Vec::new();
    for data in &route.broker_datas {
        let Some(addr) = select_addr(data) else {
            continue;
        };
        let cmd = command(request::GET_TOPIC_STATS_INFO, &[("topic", &args.topic)]);
        let about = format!("of topic {}", args.topic);
        for (mq, offsets) in fetch_mq_table(&mut broker(addr)?, cmd, &about)?.0 {
            let number = |k: &str| offsets[k].as_i64().unwrap_or(0);
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TopicUpdated<'a> {
    topic_config: &'a TopicConfig,
    brokers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_conf: Option<String>,
}

/// `updateTopic`: creates or updates the topic on `-b`, or on every master of `-c`; an ordered
/// topic's `brokerName:writeQueueNums` list goes to every nameserver's KV config.
pub(super) fn update_topic(args: &UpdateTopicArgs) -> Result<(), AdminError> {
    let sys_flag =
        if args.unit { FLAG_UNIT } else { 0 } | if args.has_unit_sub { FLAG_UNIT_SUB } else { 0 };
    let config = TopicConfig {
        order: args.order,
        perm: args.perm,
        read_queue_nums: args.read_queue_nums,
        topic_filter_type: "SINGLE_TAG".into(),
        topic_name: args.topic.trim().to_string(),
        topic_sys_flag: sys_flag,
        write_queue_nums: args.write_queue_nums,
    };
    let brokers = targets(&args.common, &args.target, false)?;
    let mut done = Vec::new();
    for b in &brokers {
        create_topic(&b.addr, &config)?;
        if !args.common.json {
            out!("create topic to {} success.", b.addr);
        }
        done.push(b.addr.clone());
    }
    let order_conf = match args.order {
        true => Some(set_order_conf(args, &done)?),
        false => None,
    };
    if args.common.json {
        let brokers = done;
        let updated = TopicUpdated {
            topic_config: &config,
            brokers,
            order_conf,
        };
        return output::print_json(&updated);
    }
    if let Some(conf) = order_conf {
        let scope = if args.target.cluster.is_some() {
            "cluster"
        } else {
            "broker"
        };
        out!("set {scope} orderConf. isOrder=true, orderConf=[{conf}]");
    }
    out!("{}", describe(&config));
    Ok(())
}

/// PUT_KV_CONFIG of the topic's order conf (`brokerName:writeQueueNums;…` of the brokers at
/// `addrs`, named from the cluster info) in every nameserver.
fn set_order_conf(args: &UpdateTopicArgs, addrs: &[String]) -> Result<String, AdminError> {
    let info = cluster_info(&mut args.common.namesrv()?)?;
    let names: BTreeSet<String> = members_of(&info, args.target.cluster.as_deref())
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
        .map(|n| format!("{n}:{}", args.write_queue_nums))
        .collect();
    let conf = conf.join(";");
    for addr in args.common.namesrv_addrs()? {
        let mut ns = NamesrvClient::connect(&addr, super::TIMEOUT)
            .context(|| format!("connecting to nameserver {addr}"))?;
        ns.put_kv(NAMESPACE_ORDER_TOPIC_CONFIG, args.topic.trim(), &conf)
            .context(|| format!("PUT_KV_CONFIG (100) of the order conf to nameserver {addr}"))?;
    }
    Ok(conf)
}

/// What deleteTopic did (`--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TopicDeleted<'a> {
    topic: &'a str,
    cluster_name: &'a str,
    brokers: Vec<String>,
    namesrvs: Vec<String>,
}

/// `deleteTopic`: DELETE_TOPIC_IN_BROKER on every master of the cluster (slaves copy their
/// master's topic table, and refuse changes), then DELETE_TOPIC_IN_NAMESRV for that cluster
/// in every nameserver.
pub(super) fn delete_topic(args: &DeleteTopicArgs) -> Result<(), AdminError> {
    let (topic, cluster) = (args.topic.trim(), args.cluster.trim());
    let brokers = cluster_members(&args.common, cluster, false)?;
    for b in &brokers {
        let cmd = command(request::DELETE_TOPIC_IN_BROKER, &[("topic", topic)]);
        call(&mut broker(&b.addr)?, cmd, &format!("of topic {topic}"))?;
    }
    let namesrvs = args.common.namesrv_addrs()?;
    if !args.common.json {
        out!("delete topic [{topic}] from cluster [{cluster}] success.");
    }
    for addr in &namesrvs {
        let mut ns = NamesrvClient::connect(addr, super::TIMEOUT)
            .context(|| format!("connecting to nameserver {addr}"))?;
        ns.delete_topic(topic, Some(cluster))
            .context(|| format!("DELETE_TOPIC_IN_NAMESRV (216) of topic {topic}"))?;
    }
    if args.common.json {
        let brokers = brokers.into_iter().map(|b| b.addr).collect();
        let cluster_name = cluster;
        let deleted = TopicDeleted {
            topic,
            cluster_name,
            brokers,
            namesrvs,
        };
        return output::print_json(&deleted);
    }
    out!("delete topic [{topic}] from NameServer success.");
    Ok(())
}
