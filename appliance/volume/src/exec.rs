//! How the owner's async code meets its reactor: the owner is one future, polled by its
//! reactor task (`owner::task`) with a no-op waker on every poll of the task. A pending
//! future says through the `Hub` when it wants to be polled again: at once (busy: a member
//! without a wakeup fd has a request in flight, or it yielded), at a deadline, or when a
//! wakeup fd or the reactor's doorbell fires (then nothing is recorded).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

/// Member requests completed without a pause before the owner yields to its reactor.
const OPS_PER_POLL: u32 = 64;

#[derive(Debug, Default)]
pub(crate) struct Hub {
    /// Poll again without parking.
    busy: Cell<bool>,
    /// Poll again no later than this.
    wake_at: Cell<Option<Instant>>,
    /// Requests completed since the last yield.
    ops: Cell<u32>,
}

impl Hub {
    /// Called by the task before it polls the future.
    pub fn begin(&self) {
        self.busy.set(false);
        self.wake_at.set(None);
        self.ops.set(0);
    }

    /// What the pending future asked for: (busy, wake at).
    pub fn outcome(&self) -> (bool, Option<Instant>) {
        (self.busy.get(), self.wake_at.get())
    }

    /// A pending future needs polling again right away.
    pub fn busy(&self) {
        self.busy.set(true);
    }

    /// A pending future needs polling again by `at`.
    pub fn wake_at(&self, at: Instant) {
        let w = self.wake_at.get().map_or(at, |w| w.min(at));
        self.wake_at.set(Some(w));
    }

    /// Counts one completed request; true when the owner has run long enough and should
    /// yield to the other tasks of its reactor.
    pub fn spend(&self) -> bool {
        let n = self.ops.get() + 1;
        self.ops.set(n);
        n >= OPS_PER_POLL
    }

    /// Gives the reactor back for one iteration (the future is polled again at once).
    pub async fn yield_now(&self) {
        let mut yielded = false;
        poll_fn(|_| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            self.busy();
            Poll::Pending
        })
        .await;
    }
}
