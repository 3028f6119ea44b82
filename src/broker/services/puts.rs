//! Stores records on the shard that owns their queue: here at once, or handed to the owner
//! over the mesh — single records in batches with the other records for that shard
//! ([`crate::broker::put_hop`]), a SEND_BATCH_MESSAGE's records in one call.

use std::rc::{Rc, Weak};

use bytes::BytesMut;

use crate::broker::mesh_proto::{MeshRequest, MeshResponse};
use crate::broker::placement::owner_shard;
use crate::broker::put_hop::{HandedRegistry, HopItem, PutHop, Ticket};
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::store::ShardStore;
use crate::message::record::{RecordError, RecordInput, RecordSlots};
use crate::net::Connection;
use crate::remoting::RemotingCommand;
use crate::runtime::mesh::MeshError;
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

    /// The shard that owns `topic`/`queue_id` when it is not this one.
    pub fn owner_elsewhere(&self, topic: &str, queue_id: i32) -> Option<usize> {
        let owner = owner_shard(topic, queue_id, self.mesh.shards());
        (owner != self.mesh.here()).then_some(owner)
    }

    /// Hands a send's record to shard `to` (not this one), which answers it on the client's
    /// connection (`conn`) itself ([`crate::broker::put_hop`]); the ticket's place among the
    /// connection's owed answers is claimed. `error` answers it from here should `to` go away
    /// first.
    pub fn hand(
        &self,
        to: usize,
        item: HopItem,
        ticket: Ticket,
        conn: Weak<Connection>,
        error: fn(&RemotingCommand, StoreError) -> RemotingCommand,
    ) -> StoreResult<()> {
        let Some(mesh) = self.mesh.get() else {
            ticket.link.answered(1);
            return Err(mesh_not_ready());
        };
        let (batch, opened) = self.hop.enqueue_handed(to, (item, ticket), conn);
        if !opened {
            return Ok(());
        }
        let (mesh, registry) = (Rc::clone(mesh), Rc::clone(self.hop.handed()));
        glommio::spawn_local(async move {
            // Registered before the owner is told: should it go away, the sweep of handed
            // sends (or this task, below) answers them.
            let (items, progress) = registry.seal(to, &batch);
            let told = if mesh.is_gone(to) {
                Err(MeshError::ShardGone(to))
            } else {
                mesh.tell(to, MeshRequest::PutHanded { items, progress })
                    .await
            };
            if let Err(e) = told {
                fail_handed(&registry, to, &e.to_string(), error).await;
            }
        })
        .detach();
        Ok(())
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

/// Answers from here, with `error`, the sends handed to shard `to` that it has not answered
/// (it is gone: `reason`).
pub async fn fail_handed(
    registry: &HandedRegistry,
    to: usize,
    reason: &str,
    error: fn(&RemotingCommand, StoreError) -> RemotingCommand,
) {
    let unwritable = || StoreError::Unwritable {
        reason: reason.to_string(),
    };
    for (conn, answer) in registry.fail(to, |head| error(head, unwritable())) {
        conn.respond_owed(answer).await;
    }
}
