//! Requests a server initiates on an accepted connection and whose answers it awaits
//! ([`crate::net::Connection::invoke`]): the broker's relays to a client
//! (GET_CONSUMER_RUNNING_INFO, CONSUME_MESSAGE_DIRECTLY, GET_CONSUMER_STATUS_FROM_CLIENT), which
//! Java sends with `invokeSync` and a timeout. Answers are matched by opaque; a waiter is
//! released by its answer, by its timeout (one timer per relay, no polling) or when the
//! connection closes, whichever comes first. Runs on the connection's shard.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use thiserror::Error;

use crate::remoting::RemotingCommand;

/// Why a relayed request got no answer.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum InvokeError {
    #[error("the connection is closed")]
    Closed,
    #[error("the client does not read its connection (write queue full)")]
    NotWritable,
    #[error("no answer within {0} ms")]
    Timeout(u128),
}

type Waiters = Rc<RefCell<Option<HashMap<i32, LocalSender<RemotingCommand>>>>>;

/// The waiters of one connection, by opaque (`None` once the connection closed).
pub struct Awaited(Waiters);

impl Default for Awaited {
    fn default() -> Awaited {
        Awaited(Rc::new(RefCell::new(Some(HashMap::new()))))
    }
}

impl Awaited {
    /// Registers a waiter for the answer to `opaque`.
    pub fn expect(&self, opaque: i32) -> Answer {
        let (tx, rx) = local_channel::new_bounded(1);
        if let Some(map) = self.0.borrow_mut().as_mut() {
            map.insert(opaque, tx);
        }
        Answer {
            waiters: Rc::clone(&self.0),
            opaque,
            rx,
        }
    }

    /// Hands an answer to its waiter; an answer nobody waits for (late, or to a oneway
    /// request) is dropped.
    pub fn complete(&self, answer: RemotingCommand) {
        let waiter = self
            .0
            .borrow_mut()
            .as_mut()
            .and_then(|m| m.remove(&answer.opaque));
        if let Some(tx) = waiter {
            let _ = tx.try_send(answer);
        }
    }

    /// The connection closed: every waiter learns it at once.
    pub fn close(&self) {
        self.0.borrow_mut().take();
    }
}

/// One awaited answer; dropping it forgets the request.
pub struct Answer {
    waiters: Waiters,
    opaque: i32,
    rx: LocalReceiver<RemotingCommand>,
}

impl Answer {
    /// Waits for the answer, at most `timeout`.
    pub async fn wait(self, timeout: Duration) -> Result<RemotingCommand, InvokeError> {
        let answer = async { self.rx.recv().await.ok_or(InvokeError::Closed) };
        let deadline = async {
            glommio::timer::sleep(timeout).await;
            Err(InvokeError::Timeout(timeout.as_millis()))
        };
        future::or(answer, deadline).await
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(map) = self.waiters.borrow_mut().as_mut() {
            map.remove(&self.opaque);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl std::future::Future<Output = ()> + 'static) {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(f);
    }

    #[test]
    fn answers_reach_their_waiter_and_timeouts_and_closes_release_it() {
        run(async {
            let awaited = Awaited::default();
            let first = awaited.expect(7);
            let mut answer = RemotingCommand::request(0).response_to(0, None);
            answer.opaque = 7;
            awaited.complete(answer);
            let got = first.wait(Duration::from_secs(5)).await.unwrap();
            assert_eq!(got.opaque, 7);
            // No answer: the timeout, and the waiter is forgotten.
            let late = awaited.expect(8);
            let waited = late.wait(Duration::from_millis(10)).await;
            assert_eq!(waited.unwrap_err(), InvokeError::Timeout(10));
            assert!(awaited.0.borrow().as_ref().unwrap().is_empty());
            // The connection closes while a waiter waits.
            let orphan = awaited.expect(9);
            awaited.close();
            let closed = orphan.wait(Duration::from_secs(5)).await;
            assert_eq!(closed.unwrap_err(), InvokeError::Closed);
        });
    }
}
