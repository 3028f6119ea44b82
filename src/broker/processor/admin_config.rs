//! UPDATE_BROKER_CONFIG (25) on the control shard: mqadmin's `updateBrokerConfig`. The body is
//! a properties text; every key must be one of `live_config::RUNTIME_KEYS` and every value
//! must pass the config's own checks, or nothing changes and the remark names the key and why.
//! An accepted change is first written to the broker's config file (when it was started with
//! `-c`), then applied on every shard; a new `brokerPermission` is registered with the
//! nameservers at once (as Java does). GET_BROKER_CONFIG (`admin_runtime.rs`) shows the
//! current values.

use super::admin_shards::AllShards;
use super::Failure;
use crate::broker::context::BrokerContext;
use crate::broker::live_config::{self, RewriteError};
use crate::broker::mesh_proto::AdminQuery;
use crate::broker::services::registration::RegisterSignal;
use crate::broker::services::topic_book::TopicBook;
use crate::config::properties;
use crate::remoting::{response as resp, RemotingCommand};

/// UPDATE_BROKER_CONFIG (25): checked, written to the config file, applied on every shard;
/// a permission change gives the topic table (`topics`) a new version and is registered at
/// once (`registration`).
pub(crate) async fn update_broker_config(
    ctx: &BrokerContext,
    topics: &TopicBook,
    all: &AllShards<'_>,
    registration: &RegisterSignal,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let failure = |remark: String| (resp::SYSTEM_ERROR, remark);
    let text = std::str::from_utf8(&cmd.body)
        .map_err(|e| failure(format!("the config body is not UTF-8: {e}")))?;
    let entries = properties::parse(text)
        .map_err(|e| failure(format!("the config body does not parse: {e}")))?;
    let changes: Vec<(String, String)> = entries
        .into_iter()
        .map(|e| (e.key, e.value.trim_end().to_string()))
        .collect();
    let live = &ctx.live;
    let cfg = live_config::updated(&live.snapshot(), &changes, ctx.cfg.max_message_size_bytes)
        .map_err(super::failure::config_update)?;
    if let Some(path) = live.config_file() {
        // Read, rewrite and fsync on a blocking thread: the shard keeps serving.
        let file = path.to_path_buf();
        let edits = changes.clone();
        let written = glommio::executor()
            .spawn_blocking(move || {
                // One rewrite at a time: each reads what the previous one wrote.
                static REWRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());
                let _one = REWRITE.lock().unwrap_or_else(|e| e.into_inner());
                let text = std::fs::read_to_string(&file).map_err(RewriteError::Read)?;
                let text = live_config::rewrite_properties(&text, &edits)?;
                crate::fsutil::write_atomically(&file, text.as_bytes()).map_err(RewriteError::Write)
            })
            .await;
        written.map_err(|e| super::failure::config_file(path, e))?;
    }
    let permission_changed = cfg.broker_permission != live.broker_permission();
    all.ask(|| AdminQuery::ApplyConfig(Box::new(cfg.clone())))
        .await?;
    if permission_changed {
        let bumped = topics.next_version();
        let bumped = match bumped {
            Ok(job) => job.run().await,
            Err(e) => Err(e),
        };
        bumped.map_err(|e| failure(format!("the topic table is not persisted: {e}")))?;
        registration.soon();
    }
    tracing::info!(?changes, "broker config updated by an admin request");
    Ok(cmd.success_to())
}
