//! Stores records on the shard that owns their queue: here at once, or handed to the owner
//! over the mesh — single records in batches with the other records for that shard
//! ([`crate::broker::put_hop`]), a SEND_BATCH_MESSAGE's records in one call.

use std::rc::Rc;

use bytes::BytesMut;

use crate::broker::mesh_proto::{MeshRequest, MeshResponse};
use crate::broker::placement::owner_shard;
use crate::broker::put_hop::PutHop;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::store::ShardStore;
use crate::message::record::{RecordError, RecordInput, RecordSlots};
use crate::store::{PutBatchResult, PutResult, StoreError, StoreResult};

/// Why a record built by the broker itself (a delayed message come due, a retry, a
/// transaction's commit, an event) was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the record cannot be built: {0}")]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn mesh_not_ready() -> StoreError {
    StoreError::Unwritable {
        reason: "the shard mesh is not ready".into(),
    }
}

/// A shard's routed puts: its store, its way to the other shards and its outgoing batches.
#[derive(Clone, Copy)]
pub struct Puts<'a> {
    pub store: &'a ShardStore,
    pub mesh: &'a MeshClient,
    pub hop: &'a PutHop,
}

impl Puts<'_> {
    /// Stores an encoded record (for `topic`/`queue_id`) on the shard that owns that queue:
    /// here at once, or handed over in a batch with the other records for that shard.
    pub async fn put(
        &self,
        topic: &str,
        queue_id: i32,
        record: BytesMut,
        slots: RecordSlots,
        wait: bool,
    ) -> StoreResult<PutResult> {
        let owner = owner_shard(topic, queue_id, self.mesh.shards());
        if owner == self.mesh.here() {
            return self.store.get().put(record, slots, wait).await;
        }
        let mesh = self.mesh.get().ok_or_else(mesh_not_ready)?;
        let (batch, index, opened) = self.hop.enqueue(owner, (record, slots, wait));
        if opened {
            let (mesh, batch) = (Rc::clone(mesh), Rc::clone(&batch));
            glommio::spawn_local(async move {
                let items = batch.seal();
                let count = items.len();
                match mesh.call(owner, MeshRequest::PutMany(items)).await {
                    Ok(MeshResponse::Puts(results)) => batch.finish(results),
                    Ok(_) => batch.fail("unexpected mesh answer", count),
                    Err(e) => batch.fail(&e.to_string(), count),
                }
            })
            .detach();
        }
        batch.result(index).await
    }

    /// Stores the records of one SEND_BATCH_MESSAGE (one queue) on the shard that owns it.
    pub async fn put_batch(
        &self,
        topic: &str,
        queue_id: i32,
        records: Vec<(BytesMut, RecordSlots)>,
        wait: bool,
    ) -> StoreResult<PutBatchResult> {
        let owner = owner_shard(topic, queue_id, self.mesh.shards());
        if owner == self.mesh.here() {
            return self.store.get().put_batch(records, wait).await;
        }
        let mesh = self.mesh.get().ok_or_else(mesh_not_ready)?;
        match mesh
            .call(owner, MeshRequest::PutBatch { records, wait })
            .await
        {
            Ok(MeshResponse::PutBatch(result)) => result,
            Ok(_) => Err(StoreError::Unwritable {
                reason: "unexpected mesh answer".into(),
            }),
            Err(e) => Err(StoreError::Unwritable {
                reason: e.to_string(),
            }),
        }
    }

    /// Encodes `input` and stores it on the shard that owns its queue (WAIT=false).
    pub async fn put_input(&self, input: &RecordInput<'_>) -> Result<(), PutError> {
        let mut buf = BytesMut::with_capacity(input.encoded_len());
        let slots = input.encode(&mut buf)?;
        self.put(input.topic, input.queue_id, buf, slots, false)
            .await?;
        Ok(())
    }
}
