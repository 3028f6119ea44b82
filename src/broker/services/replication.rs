//! A shard's part in replication (HA.md): on a master its [`Replicas`] (the slaves' links to
//! this shard's commitlog), on a slave its [`Follower`]. It answers for the shard's figures
//! ([`Replication::status`]), serves the slave links handed to this shard and takes the
//! master's address when it moves. [`SlaveStore`] is what a follower may do to the shard's
//! store: read it, and reopen it cut or emptied to follow the master's history. Starting the
//! tasks (the HA listener, the follower, the metadata sync) is [`crate::broker::replication`]'s.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use glommio::net::TcpStream;

use crate::broker::mesh_proto::{HaRole, HaStatus, MeshRequest, MeshResponse};
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::store::ShardStore;
use crate::ha::master::{self, Replicas};
use crate::ha::proto::{Action, Hello};
use crate::ha::slave::{Follower, FollowerHost};
use crate::ha::HaError;
use crate::runtime::Shutdown;
use crate::store::{DmaStorage, MessageStore, StoreConfig, SystemClock};

/// A master shard's slaves or a slave shard's follower.
#[derive(Clone)]
enum Role {
    Master(Rc<Replicas>),
    Slave(Rc<Follower>),
}

/// Shard `id`'s part in replication (a cheap handle: clones share it).
#[derive(Clone)]
pub struct Replication {
    id: usize,
    role: Role,
    /// `haMasterAddress`: a slave follows it whatever the nameserver says.
    fixed_master: Option<String>,
}

impl Replication {
    /// A master shard, serving `replicas`.
    pub fn master(id: usize, replicas: Rc<Replicas>) -> Replication {
        Replication {
            id,
            role: Role::Master(replicas),
            fixed_master: None,
        }
    }

    /// A slave shard, following with `follower` (from `fixed_master` when configured).
    pub fn slave(id: usize, follower: Rc<Follower>, fixed_master: Option<String>) -> Replication {
        if let Some(fixed) = &fixed_master {
            follower.master.set(Some(fixed.clone()), None);
        }
        Replication {
            id,
            role: Role::Slave(follower),
            fixed_master,
        }
    }

    /// The shard this is.
    pub fn shard(&self) -> usize {
        self.id
    }

    /// A slave shard's follower (`None` on a master).
    pub fn follower(&self) -> Option<&Rc<Follower>> {
        match &self.role {
            Role::Slave(follower) => Some(follower),
            Role::Master(_) => None,
        }
    }

    /// This shard's replication figures.
    pub fn status(&self, store: &ShardStore) -> HaStatus {
        let store = store.get();
        let role = match &self.role {
            Role::Master(replicas) => HaRole::Master(replicas.lags()),
            Role::Slave(follower) => HaRole::Slave(follower.status(&store)),
        };
        HaStatus {
            shard: self.id,
            end: store.written_offset(),
            role,
        }
    }

    /// Serves a slave's connection for this shard (accepted here or handed over by the
    /// control shard); a slave shard refuses it.
    pub fn serve_link(&self, stream: TcpStream, hello: Hello, shutdown: &Shutdown) {
        let Role::Master(replicas) = &self.role else {
            let reason = "this broker is a slave".to_string();
            glommio::spawn_local(master::refuse(stream, reason)).detach();
            return;
        };
        let task = Rc::clone(replicas).serve(stream, hello, shutdown.clone());
        glommio::spawn_local(task).detach();
    }

    /// The master moved (or became known): a slave shard's follower reconnects there
    /// (`haMasterAddress`, when configured, wins over `ha`).
    pub fn set_master_addr(&self, ha: Option<String>, remoting: Option<String>) {
        let Role::Slave(follower) = &self.role else {
            return;
        };
        let ha = self.fixed_master.clone().or(ha);
        if follower.master.set(ha.clone(), remoting.clone()) {
            tracing::info!(ha = ?ha, master = ?remoting, shard = self.id, "master address");
        }
    }
}

/// Every shard's replication figures (this one's: `here`).
pub async fn gather_status(here: HaStatus, mesh: &MeshClient) -> Vec<HaStatus> {
    let mut all = vec![here];
    if let Some(shards) = mesh.get() {
        for shard in (0..mesh.shards()).filter(|s| *s != mesh.here()) {
            if let Ok(MeshResponse::Ha(status)) = shards.call(shard, MeshRequest::HaStatus).await {
                all.push(status);
            }
        }
    }
    all
}

/// A slave shard's store as its follower sees it: the current one, and how to reopen it.
pub struct SlaveStore {
    store: Rc<ShardStore>,
    /// How the shard's store was opened (each reopen starts from a copy).
    cfg: StoreConfig,
}

impl SlaveStore {
    pub fn new(store: Rc<ShardStore>, cfg: StoreConfig) -> SlaveStore {
        SlaveStore { store, cfg }
    }
}

impl FollowerHost for SlaveStore {
    fn store(&self) -> MessageStore {
        self.store.get()
    }

    fn reopen(
        &self,
        action: Action,
        start: u64,
    ) -> Pin<Box<dyn Future<Output = Result<MessageStore, HaError>> + '_>> {
        Box::pin(async move {
            let old = self.store.get();
            old.close().await.map_err(HaError::CloseStore)?;
            let mut cfg = self.cfg.clone();
            match action {
                Action::Truncate => cfg.truncate_to = Some(start),
                Action::Wipe => {
                    crate::store::remove_shard_files(&cfg).map_err(HaError::WipeStore)?
                }
                Action::Continue => {}
            }
            let store = MessageStore::open(DmaStorage, Rc::new(SystemClock), cfg)
                .await
                .map_err(HaError::ReopenStore)?;
            self.store.replace(store.clone());
            Ok(store)
        })
    }
}
