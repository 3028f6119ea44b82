//! A shard's client of the other shards: calls and one-way messages over the mesh
//! ([`crate::runtime::mesh`]) in the broker's own protocol ([`crate::broker::mesh_proto`]). The
//! mesh is joined once at start-up, before any request is served.

use std::cell::OnceCell;
use std::rc::Rc;
use std::time::Duration;

use crate::broker::consumer_groups::ChannelId;
use crate::broker::mesh_proto::{MeshRequest, MeshResponse};
use crate::broker::services::connections::Connections;
use crate::net::invoke::InvokeError;
use crate::remoting::RemotingCommand;
use crate::runtime::mesh::ShardMesh;

/// The mesh as the broker uses it.
pub type BrokerMesh = ShardMesh<MeshRequest, MeshResponse>;

/// Shard `here`'s way to the other shards.
pub struct MeshClient {
    here: usize,
    shards: usize,
    mesh: OnceCell<Rc<BrokerMesh>>,
}

impl MeshClient {
    pub fn new(here: usize, shards: usize) -> MeshClient {
        MeshClient {
            here,
            shards,
            mesh: OnceCell::new(),
        }
    }

    /// Takes the joined mesh (once, at start-up).
    pub fn join(&self, mesh: Rc<BrokerMesh>) {
        let _ = self.mesh.set(mesh);
    }

    /// This shard's id.
    pub fn here(&self) -> usize {
        self.here
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The mesh (`None` only before start-up joined it).
    pub fn get(&self) -> Option<&Rc<BrokerMesh>> {
        self.mesh.get()
    }

    fn others(&self) -> impl Iterator<Item = usize> {
        let here = self.here;
        (0..self.shards).filter(move |s| *s != here)
    }

    /// Tells every other shard `make()` (best effort).
    pub async fn broadcast(&self, make: impl Fn() -> MeshRequest) {
        let Some(mesh) = self.get() else { return };
        for shard in self.others() {
            let _ = mesh.tell(shard, make()).await;
        }
    }

    /// [`MeshClient::broadcast`] from a task of its own (callers need not be async).
    pub fn spawn_broadcast(&self, make: impl Fn() -> MeshRequest + 'static) {
        let Some(mesh) = self.get().filter(|_| self.shards > 1).cloned() else {
            return;
        };
        let others: Vec<usize> = self.others().collect();
        glommio::spawn_local(async move {
            for shard in others {
                let _ = mesh.tell(shard, make()).await;
            }
        })
        .detach();
    }

    /// Tells shard `to` `request` from a task of its own (best effort).
    pub fn spawn_tell(&self, to: usize, request: MeshRequest) {
        let Some(mesh) = self.get().cloned() else {
            return;
        };
        glommio::spawn_local(async move {
            let _ = mesh.tell(to, request).await;
        })
        .detach();
    }

    /// Sends broker-initiated frames on connections wherever they live: this shard's (in
    /// `local`) at once, other shards' from a task (best effort, like Java's oneway sends).
    pub fn send_to_channels(&self, local: &Connections, frames: Vec<(ChannelId, RemotingCommand)>) {
        let mut remote = Vec::new();
        for (channel, command) in frames {
            if usize::from(channel.shard) == self.here {
                local.send_oneway(channel.connection, command);
            } else {
                remote.push((channel, command));
            }
        }
        let Some(mesh) = self.get().filter(|_| !remote.is_empty()).cloned() else {
            return;
        };
        glommio::spawn_local(async move {
            for (channel, command) in remote {
                let msg = MeshRequest::SendOnConnection {
                    connection: channel.connection,
                    command,
                };
                let _ = mesh.tell(usize::from(channel.shard), msg).await;
            }
        })
        .detach();
    }

    /// Sends `request` on a client connection of any shard (this shard's in `local`) and
    /// awaits the client's answer.
    pub async fn invoke_on_channel(
        &self,
        local: &Connections,
        channel: ChannelId,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, InvokeError> {
        let shard = usize::from(channel.shard);
        if shard == self.here {
            return local.invoke(channel.connection, request, timeout).await;
        }
        let mesh = self.get().ok_or(InvokeError::Closed)?;
        let call = MeshRequest::Invoke {
            connection: channel.connection,
            command: request,
            timeout,
        };
        match mesh.call(shard, call).await {
            Ok(MeshResponse::Invoked(answer)) => answer,
            _ => Err(InvokeError::Closed),
        }
    }
}
