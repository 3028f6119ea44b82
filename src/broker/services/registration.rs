//! The signal that the nameservers should hear from this broker again (a topic or the broker's
//! permission changed): bumped by whoever changed it, waited on by the control shard's
//! registration loop (`crate::broker::control::run_registration`).

use crate::runtime::OffsetWatch;

/// A counter of reasons to register again.
pub struct RegisterSignal {
    epoch: OffsetWatch,
}

impl Default for RegisterSignal {
    fn default() -> RegisterSignal {
        RegisterSignal {
            epoch: OffsetWatch::new(0),
        }
    }
}

impl RegisterSignal {
    /// Asks for a registration soon (the loop wakes at once).
    pub fn soon(&self) {
        self.epoch.advance(self.epoch.get() + 1);
    }

    /// How many times one was asked for so far.
    pub fn seen(&self) -> u64 {
        self.epoch.get()
    }

    /// Resolves once one was asked for after `seen` was read.
    pub async fn asked_since(&self, seen: u64) {
        let _ = self.epoch.wait_for(seen + 1).await;
    }
}
