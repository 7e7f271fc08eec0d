//! Waking a reactor without a message: for tasks that drain their own lock-free rings.

use std::fmt;
use std::sync::Arc;

use crate::shared::ReactorShared;

/// Rings one reactor's doorbell from any thread. A producer pushes onto a ring the task
/// drains itself, then calls [`wake`](Self::wake); the task reports the ring through
/// [`Task::has_pending_work`](crate::Task::has_pending_work) so a reactor about to park sees
/// it. Unlike `TaskHandle::send` nothing is allocated: fit for data paths. Clone + Send + Sync.
#[derive(Clone)]
pub struct ReactorWaker {
    reactor: Arc<ReactorShared>,
}

impl ReactorWaker {
    pub(crate) fn new(reactor: Arc<ReactorShared>) -> Self {
        Self { reactor }
    }

    /// Wakes the reactor if it is parked (one system call for the first waker of a park,
    /// a fence and a load otherwise).
    pub fn wake(&self) {
        self.reactor.notify();
    }

    /// Index of the reactor this wakes.
    pub fn reactor_index(&self) -> usize {
        self.reactor.index
    }

    /// Whether the caller runs on this reactor right now (a blocking wait for it would never
    /// end).
    pub fn is_current(&self) -> bool {
        self.reactor.would_deadlock()
    }
}

impl fmt::Debug for ReactorWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorWaker")
            .field("reactor", &self.reactor.index)
            .finish()
    }
}
