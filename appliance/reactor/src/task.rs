//! The lightweight-thread contract.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::context::TaskContext;

/// What one `poll` (or one reactor iteration) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollStatus {
    /// Did work: poll again right away, count the time as busy.
    Busy,
    /// Found nothing to do.
    #[default]
    Idle,
}

impl PollStatus {
    pub fn is_busy(self) -> bool {
        self == Self::Busy
    }

    pub fn from_busy(busy: bool) -> Self {
        if busy {
            Self::Busy
        } else {
            Self::Idle
        }
    }
}

/// Busy if either side is busy: combines the results of several pollers.
impl BitOr for PollStatus {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self::from_busy(self.is_busy() || rhs.is_busy())
    }
}

impl BitOrAssign for PollStatus {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = *self | rhs;
    }
}

/// A lightweight thread: state owned by one reactor, polled in its loop, reached from other
/// threads only through messages (`TaskHandle::send`). It is created on its reactor, so it may
/// hold non-`Send` things (io_uring rings, `Rc`).
pub trait Task: 'static {
    /// Does a bounded amount of work; never blocks.
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus;

    /// Begins a graceful stop (runtime shutdown). Called once; polling goes on afterwards.
    fn on_shutdown(&mut self, _cx: &mut TaskContext) {}

    /// Shutdown keeps polling (for a bounded time) until this is true.
    fn is_finished(&self) -> bool {
        true
    }

    /// Work waits outside the inbox (a lock-free ring the task drains itself, whose producers
    /// ring the reactor with a `ReactorWaker`): checked by a reactor
    /// about to park, after it announced the park, so a push racing with the park is not slept
    /// through. Must be cheap and must not block.
    fn has_pending_work(&self) -> bool {
        false
    }
}

/// Process-wide unique id of a spawned task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl TaskId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}
