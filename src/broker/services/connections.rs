//! The client connections a shard accepted, by id, for the frames the broker starts itself
//! (NOTIFY_CONSUMER_IDS_CHANGED, transaction check-backs, replies, relayed admin calls).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::net::invoke::InvokeError;
use crate::net::Connection;
use crate::remoting::RemotingCommand;

/// This shard's live connections (weak: a closed connection goes by itself).
#[derive(Default)]
pub struct Connections {
    by_id: RefCell<HashMap<u64, Weak<Connection>>>,
}

impl Connections {
    /// Remembers a connection that sent a request.
    pub fn remember(&self, conn: &Rc<Connection>) {
        self.by_id
            .borrow_mut()
            .entry(conn.id)
            .or_insert_with(|| Rc::downgrade(conn));
    }

    /// Forgets a closed connection; false when it never sent a request.
    pub fn forget(&self, id: u64) -> bool {
        self.by_id.borrow_mut().remove(&id).is_some()
    }

    /// A live connection of this shard.
    pub fn get(&self, id: u64) -> Option<Rc<Connection>> {
        self.by_id.borrow().get(&id).and_then(Weak::upgrade)
    }

    /// Sends a broker-initiated frame on a connection (best effort).
    pub fn send_oneway(&self, id: u64, command: RemotingCommand) {
        if let Some(conn) = self.get(id) {
            conn.send_oneway(command);
        }
    }

    /// Sends `request` on a connection and waits for the client's answer.
    pub async fn invoke(
        &self,
        id: u64,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, InvokeError> {
        match self.get(id) {
            Some(conn) => conn.invoke(request, timeout).await,
            None => Err(InvokeError::Closed),
        }
    }
}
