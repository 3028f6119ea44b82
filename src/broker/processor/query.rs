//! QUERY_MESSAGE (12, by key or unique key, across every shard) and VIEW_MESSAGE_BY_ID (33, by
//! physical offset, on the shard the offset names): bodies are the stored records as they are.

use super::{field_failure, Failure};
use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::{KeyQuery, MeshRequest, MeshResponse};
use crate::broker::services::mesh_client::MeshClient;
use crate::protocol::Fields;
use crate::remoting::{response as resp, RemotingCommand};
use crate::store::MessageStore;

/// Runs a key lookup on this shard's store.
pub(crate) async fn query_local(store: &MessageStore, q: &KeyQuery) -> Vec<bytes::Bytes> {
    match store
        .query_by_key(&q.topic, &q.key, q.max, q.begin_ts, q.end_ts)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(topic = %q.topic, error = %e, "key lookup failed");
            Vec::new()
        }
    }
}

/// QUERY_MESSAGE (12): every shard's index, this one's first.
pub(crate) async fn query_message(
    ctx: &BrokerContext,
    store: &MessageStore,
    mesh: &MeshClient,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let unique = cmd.bool_or("_UNIQUE_KEY_QUERY", false);
    let max = match unique {
        true => ctx.live.default_query_max_num() as i64,
        false => cmd.req_i64("maxNum").map_err(field_failure)?,
    };
    let query = KeyQuery {
        topic: cmd.req_str("topic").map_err(field_failure)?.to_string(),
        key: cmd.req_str("key").map_err(field_failure)?.to_string(),
        max: max.clamp(1, 64 * 1024) as usize,
        begin_ts: cmd
            .opt_i64("beginTimestamp")
            .map_err(field_failure)?
            .unwrap_or(0),
        end_ts: cmd
            .opt_i64("endTimestamp")
            .map_err(field_failure)?
            .unwrap_or(i64::MAX),
    };
    let mut found = query_local(store, &query).await;
    if let Some(client) = mesh.get().filter(|_| mesh.shards() > 1) {
        for shard in (0..mesh.shards()).filter(|s| *s != mesh.here()) {
            if let Ok(MeshResponse::Messages(more)) = client
                .call(shard, MeshRequest::QueryKey(query.clone()))
                .await
            {
                found.extend(more);
            }
        }
    }
    found.truncate(query.max);
    if found.is_empty() {
        return Err((
            resp::QUERY_NOT_FOUND,
            "can not find message, maybe time range not correct".into(),
        ));
    }
    let body: Vec<u8> = found.iter().flat_map(|m| m.iter().copied()).collect();
    Ok(cmd
        .success_to()
        .with_ext("indexLastUpdateTimestamp", "0")
        .with_ext("indexLastUpdatePhyoffset", "0")
        .with_body(body))
}

/// VIEW_MESSAGE_BY_ID (33), on the shard the offset names.
pub(crate) async fn view_message(
    store: &MessageStore,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let offset = cmd.req_i64("offset").map_err(field_failure)?;
    match store.read_by_physical_offset(offset).await {
        Ok(record) => Ok(cmd.success_to().with_body(record)),
        Err(e) => Err((
            resp::SYSTEM_ERROR,
            format!("can not find message by the offset, {offset}: {e}"),
        )),
    }
}
