//! VIEW_BROKER_STATS_DATA (315) and GET_BROKER_CONSUME_STATS (317) on the control shard, over
//! the per-topic and per-group items the shards count ([`crate::broker::stats`]).

use super::admin::encode_failure;
use super::{field_failure, Failure};
use crate::broker::mesh_proto::{AdminAnswer, AdminQuery};
use crate::broker::shard::Shard;
use crate::broker::stats::{self, Totals, GROUP_GET_NUMS};
use crate::protocol::Fields;
use crate::remoting::{response as resp, RemotingCommand};
use crate::store::{Clock, SystemClock};

impl Shard {
    /// An item's totals over every shard (`None`: no such stats name).
    async fn item_totals(&self, name: &str, key: &str) -> Result<Option<Totals>, Failure> {
        let answers = self
            .ask_all_shards(|| AdminQuery::StatsTotals {
                name: name.to_string(),
                key: key.to_string(),
            })
            .await?;
        let mut sum: Option<Totals> = None;
        for answer in answers {
            if let AdminAnswer::Totals(Some(t)) = answer {
                sum = Some(sum.unwrap_or_default().sum(t));
            }
        }
        Ok(sum)
    }

    /// An item measured over the minute, hour and day (sampled now).
    async fn measured(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<stats::BrokerStatsData>, Failure> {
        let Some(now) = self.item_totals(name, key).await? else {
            return Ok(None);
        };
        let data = self.stats.item_history.measure(
            name,
            key,
            SystemClock.now_ms(),
            now,
            self.stats.boot_ms,
        );
        Ok(Some(data).filter(|_| now.times > 0))
    }

    /// Java's `tpsGroupGetNums(group, topic)`: GROUP_GET_NUMS of `topic@group` per second over
    /// the last minute.
    pub(crate) async fn group_get_tps(&self, topic: &str, group: &str) -> Result<f64, Failure> {
        let key = format!("{topic}@{group}");
        let data = self.measured(GROUP_GET_NUMS, &key).await?;
        Ok(data.map_or(0.0, |d| d.stats_minute.tps))
    }

    /// VIEW_BROKER_STATS_DATA (315): header `statsName`, `statsKey` (a topic, `topic@group`,
    /// or the cluster name for BROKER_*); a `BrokerStatsData` body. An item nothing counted
    /// yet gets Java's SYSTEM_ERROR "The stats <name> <key> not exist".
    pub(crate) async fn view_stats(
        &self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let name = cmd.req_str("statsName").map_err(field_failure)?;
        let key = cmd.req_str("statsKey").map_err(field_failure)?;
        let not_exist = || {
            (
                resp::SYSTEM_ERROR,
                format!("The stats <{name}> <{key}> not exist"),
            )
        };
        let wrong_cluster = name.starts_with("BROKER_") && key != self.ctx.cfg.broker_cluster_name;
        if wrong_cluster {
            return Err(not_exist());
        }
        let data = self.measured(name, key).await?.ok_or_else(not_exist)?;
        let body = serde_json::to_vec(&data).map_err(encode_failure)?;
        Ok(cmd.success_to().with_body(body))
    }

    /// GET_BROKER_CONSUME_STATS (317, mqadmin `brokerConsumeStats`): a `ConsumeStatsList` of
    /// every subscription group's topics with offsets here (`isOrder`: order topics only).
    pub(crate) async fn broker_consume_stats(
        &self,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let only_order = cmd.bool_or("isOrder", false);
        let groups: Vec<String> = {
            let control = self.admin_control()?;
            control.groups.names()
        };
        let offsets = self.gather_offsets().await?;
        let mut list = Vec::new();
        let mut total_diff = 0i64;
        for group in groups {
            let topics: Vec<String> = offsets
                .consumer
                .topics_of_group(&group)
                .map(str::to_string)
                .collect();
            let mut stats = Vec::new();
            for topic in topics {
                let one = std::slice::from_ref(&topic);
                let (body, diff) = self.consume_stats_body(&group, one, only_order).await?;
                if body.ends_with(r#""offsetTable":{}}"#) {
                    continue;
                }
                total_diff += diff;
                stats.push(body);
            }
            let name = serde_json::to_string(&group).map_err(encode_failure)?;
            list.push(format!("{{{name}:[{}]}}", stats.join(",")));
        }
        let addr = serde_json::to_string(&self.ctx.broker_addr).map_err(encode_failure)?;
        let body = format!(
            r#"{{"brokerAddr":{addr},"consumeStatsList":[{}],"totalDiff":{total_diff}}}"#,
            list.join(",")
        );
        Ok(cmd.success_to().with_body(body.into_bytes()))
    }
}
