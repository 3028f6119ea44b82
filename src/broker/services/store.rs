//! The shard's store handle. A slave swaps in a new store when it must follow the master's
//! history from another point ([`crate::broker::replication`]); everyone else takes a cheap
//! clone of the current one for each request.

use std::cell::RefCell;

use crate::store::MessageStore;

/// The shard's current store.
pub struct ShardStore {
    slot: RefCell<MessageStore>,
}

impl ShardStore {
    pub fn new(store: MessageStore) -> ShardStore {
        ShardStore {
            slot: RefCell::new(store),
        }
    }

    /// The current store (a cheap handle).
    pub fn get(&self) -> MessageStore {
        self.slot.borrow().clone()
    }

    /// Serves `store` from now on (a slave reopened its history).
    pub fn replace(&self, store: MessageStore) {
        *self.slot.borrow_mut() = store;
    }
}
