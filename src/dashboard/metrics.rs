//! `/metrics`: the Prometheus text exposition format (version 0.0.4) with rocketmq-exporter's
//! metric and label names, so Grafana dashboards built on the exporter keep working. Rendered
//! from the sampler's newest [`Snapshot`]; the producer and consumer TPS and message-size
//! gauges are the masters' own statistics (VIEW_BROKER_STATS_DATA TOPIC_PUT_NUMS / _SIZE and
//! GROUP_GET_NUMS / _SIZE, `statsMinute.tps`), read as the exporter reads them.
//!
//! Exported (labels as the exporter's): `rocketmq_broker_tps` / `_qps` {cluster, brokerIP,
//! broker}; `rocketmq_producer_offset`, `rocketmq_producer_tps`,
//! `rocketmq_producer_message_size` {cluster, broker, topic}; `rocketmq_topic_retry_offset`
//! {cluster, broker, topic}; `rocketmq_topic_dlq_offset` {cluster, broker, group};
//! `rocketmq_consumer_offset`, `rocketmq_consumer_tps`, `rocketmq_consumer_message_size`,
//! `rocketmq_group_get_latency_by_storetime` {cluster, broker, topic, group};
//! `rocketmq_group_diff` {group, topic, countOfOnlineConsumers, msgModel}; `rocketmq_group_count`
//! {caddr, localaddr, group}; and `rocketmq_brokeruntime_*` {cluster, brokerIP, brokerHost, des,
//! boottime, broker_version} for every runtime figure ringmq reports. Not exported: the client
//! runtime metrics (`rocketmq_client_*`, from GET_CONSUMER_RUNNING_INFO of every client) and
//! the thread-pool and put-latency-distribution gauges (ringmq has neither).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use super::sampler::Snapshot;
use crate::broker::stats::{GROUP_GET_NUMS, GROUP_GET_SIZE, TOPIC_PUT_NUMS, TOPIC_PUT_SIZE};

use crate::names::{
    DLQ_GROUP_TOPIC_PREFIX as DLQ_PREFIX, RETRY_GROUP_TOPIC_PREFIX as RETRY_PREFIX,
};

/// A label value as the exposition format wants it: `\`, `"` and line feeds escaped.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, others as Rust prints them (`NaN`, `+Inf`).
fn value_text(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v => format!("{v}"),
    }
}

/// A text exposition being written: one family (HELP, TYPE, samples) at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// A gauge family with its samples (`labels` pairs in the given order); a family without
    /// samples is left out.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, String)>, f64)]) {
        if samples.is_empty() {
            return;
        }
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
                .collect();
            let labels = match labels.is_empty() {
                true => String::new(),
                false => format!("{{{}}}", labels.join(",")),
            };
            let _ = writeln!(self.text, "{name}{labels} {}", value_text(*value));
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition of the newest of `history` (oldest first).
pub fn render(history: &[Arc<Snapshot>]) -> String {
    let mut out = Exposition::default();
    let Some(snap) = history.last() else {
        return out.finish();
    };
    brokers(&mut out, snap);
    topics(&mut out, snap);
    groups(&mut out, snap);
    broker_runtime(&mut out, snap);
    out.gauge(
        "ringmq_dashboard_snapshot_errors",
        "Parts of the cluster the newest snapshot could not read",
        &[(vec![], snap.errors.len() as f64)],
    );
    out.finish()
}

fn brokers(out: &mut Exposition, snap: &Snapshot) {
    let masters = snap.brokers.iter().filter(|b| b.member.broker_id == 0);
    let labels = |b: &super::sampler::BrokerState| {
        vec![
            ("cluster", b.member.cluster_name.clone()),
            ("brokerIP", b.member.addr.clone()),
            ("broker", b.member.broker_name.clone()),
        ]
    };
    let (mut tps, mut qps) = (Vec::new(), Vec::new());
    for b in masters.filter(|b| b.error.is_none()) {
        tps.push((labels(b), b.in_tps()));
        qps.push((labels(b), b.out_tps()));
    }
    out.gauge("rocketmq_broker_tps", "BrokerPutNums", &tps);
    out.gauge("rocketmq_broker_qps", "BrokerGetNums", &qps);
}

/// (broker, topic) → the sum of the topic's max offsets on the broker.
fn topic_offsets(snap: &Snapshot) -> BTreeMap<(String, String), i64> {
    let mut all = BTreeMap::new();
    for t in &snap.topics {
        for b in &t.brokers {
            all.insert((b.broker_name.clone(), t.topic.clone()), b.max_offset);
        }
    }
    all
}

/// A statistics rate of the snapshot (`None`: the broker's statistics were not read).
fn stat(snap: &Snapshot, broker: &str, name: &str, key: &str) -> Option<f64> {
    let k = (broker.to_string(), name.to_string(), key.to_string());
    snap.stats.get(&k).copied()
}

fn topics(out: &mut Exposition, snap: &Snapshot) {
    let (mut offset, mut tps, mut size) = (vec![], vec![], vec![]);
    let (mut retry, mut dlq) = (vec![], vec![]);
    for ((broker, topic), max) in topic_offsets(snap) {
        let cluster = snap.cluster_of(&broker).to_string();
        let labels = |last: (&'static str, String)| {
            vec![
                ("cluster", cluster.clone()),
                ("broker", broker.clone()),
                last,
            ]
        };
        if let Some(group) = topic.strip_prefix(DLQ_PREFIX) {
            dlq.push((labels(("group", group.to_string())), max as f64));
        } else if topic.starts_with(RETRY_PREFIX) {
            retry.push((labels(("topic", topic.clone())), max as f64));
        } else {
            if let Some(r) = stat(snap, &broker, TOPIC_PUT_NUMS, &topic) {
                tps.push((labels(("topic", topic.clone())), r));
            }
            if let Some(r) = stat(snap, &broker, TOPIC_PUT_SIZE, &topic) {
                size.push((labels(("topic", topic.clone())), r));
            }
            offset.push((labels(("topic", topic.clone())), max as f64));
        }
    }
    out.gauge("rocketmq_producer_offset", "TopicOffset", &offset);
    out.gauge("rocketmq_producer_tps", "TopicPutNums", &tps);
    out.gauge(
        "rocketmq_producer_message_size",
        "TopicPutMessageSize",
        &size,
    );
    out.gauge("rocketmq_topic_retry_offset", "TopicRetryOffset", &retry);
    out.gauge("rocketmq_topic_dlq_offset", "TopicDLQOffset", &dlq);
}

/// (broker, topic, group) → the sum of the group's consumer offsets there.
fn consumer_offsets(snap: &Snapshot) -> BTreeMap<(String, String, String), i64> {
    let mut all = BTreeMap::new();
    for g in &snap.groups {
        for q in g.progress.iter().flat_map(|p| &p.queues) {
            let key = (
                q.broker_name.clone(),
                q.topic.clone(),
                g.summary.group.clone(),
            );
            *all.entry(key).or_insert(0) += q.consumer_offset;
        }
    }
    all
}

fn groups(out: &mut Exposition, snap: &Snapshot) {
    let labels = |broker: &str, topic: &str, group: &str| {
        vec![
            ("cluster", snap.cluster_of(broker).to_string()),
            ("broker", broker.to_string()),
            ("topic", topic.to_string()),
            ("group", group.to_string()),
        ]
    };
    let (mut offset, mut tps, mut size) = (vec![], vec![], vec![]);
    for ((broker, topic, group), sum) in consumer_offsets(snap) {
        let key = format!("{topic}@{group}");
        if let Some(r) = stat(snap, &broker, GROUP_GET_NUMS, &key) {
            tps.push((labels(&broker, &topic, &group), r));
        }
        if let Some(r) = stat(snap, &broker, GROUP_GET_SIZE, &key) {
            size.push((labels(&broker, &topic, &group), r));
        }
        offset.push((labels(&broker, &topic, &group), sum as f64));
    }
    out.gauge(
        "rocketmq_consumer_offset",
        "GroupBrokerTotalOffset",
        &offset,
    );
    out.gauge("rocketmq_consumer_tps", "GroupGetNums", &tps);
    out.gauge(
        "rocketmq_consumer_message_size",
        "GroupGetMessageSize",
        &size,
    );
    let (mut diff, mut count, mut latency) = (vec![], vec![], vec![]);
    for g in &snap.groups {
        let s = &g.summary;
        let clients = g.connection.iter().flat_map(|c| &c.connection_set);
        let (caddr, localaddr): (Vec<&str>, Vec<&str>) = clients
            .map(|c| (c.client_addr.as_str(), c.client_id.as_str()))
            .unzip();
        count.push((
            vec![
                ("caddr", caddr.join(",")),
                ("localaddr", localaddr.join(",")),
                ("group", s.group.clone()),
            ],
            s.count as f64,
        ));
        // The exporter sums the lag of clustering groups per topic; msgModel is the ordinal
        // of MessageModel (1 = CLUSTERING).
        if s.message_model.as_deref() == Some("BROADCASTING") {
            continue;
        }
        let mut per_topic: BTreeMap<&str, i64> = BTreeMap::new();
        for q in g.progress.iter().flat_map(|p| &p.queues) {
            *per_topic.entry(q.topic.as_str()).or_insert(0) += q.diff;
        }
        for (topic, lag) in per_topic {
            let labels = vec![
                ("group", s.group.clone()),
                ("topic", topic.to_string()),
                ("countOfOnlineConsumers", s.count.to_string()),
                ("msgModel", "1".to_string()),
            ];
            diff.push((labels, lag as f64));
        }
        for ((broker, topic), ms) in &g.latency_ms {
            latency.push((labels(broker, topic, &s.group), *ms as f64));
        }
    }
    out.gauge("rocketmq_group_diff", "GroupDiff", &diff);
    out.gauge("rocketmq_group_count", "GroupCount", &count);
    out.gauge(
        "rocketmq_group_get_latency_by_storetime",
        "GroupGetLatencyByStoreTime",
        &latency,
    );
}

/// `rocketmq_brokeruntime_*` gauges and the GET_BROKER_RUNTIME_INFO key each is read from
/// (`*_tps10/60/600` are the three figures of one key).
const RUNTIME_GAUGES: [(&str, &str); 16] = [
    ("msg_put_total_today_now", "msgPutTotalTodayNow"),
    ("msg_gettotal_today_now", "msgGetTotalTodayNow"),
    ("msg_puttotal_todaymorning", "msgPutTotalTodayMorning"),
    ("msg_gettotal_todaymorning", "msgGetTotalTodayMorning"),
    (
        "msg_puttotal_yesterdaymorning",
        "msgPutTotalYesterdayMorning",
    ),
    (
        "msg_gettotal_yesterdaymorning",
        "msgGetTotalYesterdayMorning",
    ),
    ("put_message_size_total", "putMessageSizeTotal"),
    ("put_message_average_size", "putMessageAverageSize"),
    ("putmessage_times_total", "putMessageTimesTotal"),
    ("earliest_message_timestamp", "earliestMessageTimeStamp"),
    ("pagecache_lock_time_mills", "pageCacheLockTimeMills"),
    ("commitlog_disk_ratio", "commitLogDiskRatio"),
    ("consumequeue_disk_ratio", "consumeQueueDiskRatio"),
    ("commitlog_maxoffset", "commitLogMaxOffset"),
    ("commitlog_minoffset", "commitLogMinOffset"),
    ("remain_howmanydata_toflush", "remainHowManyDataToFlush"),
];

const RUNTIME_RATES: [(&str, &str); 5] = [
    ("getfound_tps", "getFoundTps"),
    ("gettotal_tps", "getTotalTps"),
    ("gettransfered_tps", "getTransferedTps"),
    ("getmiss_tps", "getMissTps"),
    ("put_tps", "putTps"),
];

/// A number of a runtime value: the leading number of texts like `1.5 KiB` (in bytes).
fn runtime_number(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let n: f64 = parts.next()?.parse().ok()?;
    let unit = match parts.next() {
        None | Some("B") => 1.0,
        Some(u) => {
            let at = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
                .iter()
                .position(|p| *p == u)?;
            1024f64.powi(at as i32 + 1)
        }
    };
    Some(n * unit)
}

fn broker_runtime(out: &mut Exposition, snap: &Snapshot) {
    let brokers: Vec<_> = snap
        .brokers
        .iter()
        .filter(|b| b.member.broker_id == 0 && b.error.is_none())
        .collect();
    let labels = |b: &super::sampler::BrokerState| {
        let get = |k: &str| b.runtime.get(k).cloned().unwrap_or_default();
        let host = b.member.addr.rsplit_once(':').map_or("", |(h, _)| h);
        vec![
            ("cluster", b.member.cluster_name.clone()),
            ("brokerIP", b.member.addr.clone()),
            ("brokerHost", host.to_string()),
            ("des", String::new()),
            ("boottime", get("bootTimestamp")),
            ("broker_version", get("brokerVersion")),
        ]
    };
    for (suffix, key) in RUNTIME_GAUGES {
        let samples: Vec<_> = brokers
            .iter()
            .filter_map(|b| Some((labels(b), runtime_number(b.runtime.get(key)?)?)))
            .collect();
        out.gauge(&format!("rocketmq_brokeruntime_{suffix}"), key, &samples);
    }
    for (suffix, key) in RUNTIME_RATES {
        for (i, window) in ["10", "60", "600"].iter().enumerate() {
            let samples: Vec<_> = brokers
                .iter()
                .filter_map(|b| {
                    let v = b.runtime.get(key)?.split(' ').nth(i)?.parse().ok()?;
                    Some((labels(b), v))
                })
                .collect();
            let name = format!("rocketmq_brokeruntime_{suffix}{window}");
            out.gauge(&name, &format!("{key} over {window} s"), &samples);
        }
    }
    let capacity: Vec<_> = brokers
        .iter()
        .filter_map(|b| Some((b, dir_capacity(b.runtime.get("commitLogDirCapacity")?)?)))
        .collect();
    let total: Vec<_> = capacity.iter().map(|(b, (t, _))| (labels(b), *t)).collect();
    let free: Vec<_> = capacity.iter().map(|(b, (_, f))| (labels(b), *f)).collect();
    out.gauge(
        "rocketmq_brokeruntime_commitlogdir_capacity_total",
        "commitLogDirCapacity",
        &total,
    );
    out.gauge(
        "rocketmq_brokeruntime_commitlogdir_capacity_free",
        "commitLogDirCapacity",
        &free,
    );
}

/// `Total : 252.0 GiB, Free : 100.0 GiB.` in bytes.
fn dir_capacity(text: &str) -> Option<(f64, f64)> {
    let (total, free) = text.split_once(',')?;
    let number = |part: &str| runtime_number(part.split(':').nth(1)?.trim().trim_end_matches('.'));
    Some((number(total)?, number(free)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("line\nbreak"), "line\\nbreak");
        let mut out = Exposition::default();
        out.gauge("m", "help \\ me\nnow", &[(vec![("k", "v\"".into())], 1.0)]);
        out.gauge("empty", "left out", &[]);
        out.gauge("bare", "no labels", &[(vec![], 0.5)]);
        assert_eq!(
            out.finish(),
            "# HELP m help \\\\ me\\nnow\n# TYPE m gauge\nm{k=\"v\\\"\"} 1\n\
             # HELP bare no labels\n# TYPE bare gauge\nbare 0.5\n"
        );
    }

    #[test]
    fn runtime_values_read_as_numbers() {
        assert_eq!(runtime_number("1.5 KiB"), Some(1536.0));
        assert_eq!(runtime_number("512 B"), Some(512.0));
        assert_eq!(runtime_number("0.25"), Some(0.25));
        assert_eq!(runtime_number("soon"), None);
        let gib = 1024f64.powi(3);
        assert_eq!(
            dir_capacity("Total : 252.0 GiB, Free : 100.0 GiB."),
            Some((252.0 * gib, 100.0 * gib))
        );
        assert_eq!(value_text(2.0), "2");
        assert_eq!(value_text(0.5), "0.5");
        assert_eq!(value_text(f64::NAN), "NaN");
    }
}
