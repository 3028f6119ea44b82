//! `OffsetWatch`: a monotonically increasing offset that tasks on the same executor can wait
//! on ("resolve when the offset reaches N"). One advance wakes every waiter it satisfies, and
//! only those: this is how group commit releases all appends one fdatasync covered, how
//! SYNC_MASTER sends wait for the slave's acknowledged offset, and how parked pulls wake on new
//! messages. No timer and no polling: waiters are woken by the advance itself.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A shared, single-executor offset with waiters.
#[derive(Clone, Default)]
pub struct OffsetWatch {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    value: Cell<u64>,
    /// Waiters as (target, waker, id); unordered, pruned on advance.
    waiters: RefCell<Vec<(u64, Waker, u64)>>,
    next_id: Cell<u64>,
    closed: Cell<bool>,
}

impl OffsetWatch {
    /// A watch starting at `value`.
    pub fn new(value: u64) -> OffsetWatch {
        let watch = OffsetWatch::default();
        watch.inner.value.set(value);
        watch
    }

    /// The current offset.
    pub fn get(&self) -> u64 {
        self.inner.value.get()
    }

    /// Moves the offset forward to `value` (never backward) and wakes the waiters it satisfies.
    pub fn advance(&self, value: u64) {
        if value <= self.inner.value.get() {
            return;
        }
        self.inner.value.set(value);
        let ready: Vec<Waker> = {
            let mut waiters = self.inner.waiters.borrow_mut();
            let mut ready = Vec::new();
            waiters.retain(|(target, waker, _)| {
                if *target <= value {
                    ready.push(waker.clone());
                    false
                } else {
                    true
                }
            });
            ready
        };
        for waker in ready {
            waker.wake();
        }
    }

    /// Wakes every waiter with `Err(())`: the watched thing is gone (shutdown, file failure).
    pub fn close(&self) {
        self.inner.closed.set(true);
        let waiters = std::mem::take(&mut *self.inner.waiters.borrow_mut());
        for (_, waker, _) in waiters {
            waker.wake();
        }
    }

    /// Resolves `Ok(())` once the offset is at least `target`, `Err(())` if the watch closes.
    pub fn wait_for(&self, target: u64) -> WaitFor {
        WaitFor {
            watch: self.clone(),
            target,
            id: None,
        }
    }

    /// Number of tasks waiting (for metrics and tests).
    pub fn waiter_count(&self) -> usize {
        self.inner.waiters.borrow().len()
    }
}

/// The future of [`OffsetWatch::wait_for`]. Dropping it (e.g. on a timeout) unregisters it.
pub struct WaitFor {
    watch: OffsetWatch,
    target: u64,
    id: Option<u64>,
}

impl Future for WaitFor {
    type Output = Result<(), ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &self.watch.inner;
        if inner.value.get() >= self.target {
            return Poll::Ready(Ok(()));
        }
        if inner.closed.get() {
            return Poll::Ready(Err(()));
        }
        let mut waiters = inner.waiters.borrow_mut();
        match self.id {
            Some(id) => {
                if let Some(entry) = waiters.iter_mut().find(|(_, _, i)| *i == id) {
                    entry.1.clone_from(cx.waker());
                } else {
                    // Woken by an advance that did not reach us? Cannot happen (targets only
                    // leave when satisfied); re-register defensively.
                    waiters.push((self.target, cx.waker().clone(), id));
                }
            }
            None => {
                let id = inner.next_id.get();
                inner.next_id.set(id + 1);
                waiters.push((self.target, cx.waker().clone(), id));
                drop(waiters);
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitFor {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.watch
                .inner
                .waiters
                .borrow_mut()
                .retain(|(_, _, i)| *i != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn advance_wakes_exactly_the_satisfied_waiters() {
        let watch = OffsetWatch::new(10);
        let mut a = Box::pin(watch.wait_for(15));
        let mut b = Box::pin(watch.wait_for(20));
        assert!(future::block_on(future::poll_once(&mut a)).is_none());
        assert!(future::block_on(future::poll_once(&mut b)).is_none());
        assert_eq!(watch.waiter_count(), 2);
        watch.advance(12);
        assert_eq!(watch.waiter_count(), 2);
        watch.advance(16);
        assert_eq!(watch.waiter_count(), 1);
        assert_eq!(future::block_on(future::poll_once(&mut a)), Some(Ok(())));
        assert!(future::block_on(future::poll_once(&mut b)).is_none());
        drop(b);
        assert_eq!(watch.waiter_count(), 0);
        watch.advance(5);
        assert_eq!(watch.get(), 16);
        assert_eq!(future::block_on(watch.wait_for(3)), Ok(()));
    }

    #[test]
    fn close_fails_waiters() {
        let watch = OffsetWatch::new(0);
        let mut w = Box::pin(watch.wait_for(1));
        assert!(future::block_on(future::poll_once(&mut w)).is_none());
        watch.close();
        assert_eq!(future::block_on(w), Err(()));
    }
}
