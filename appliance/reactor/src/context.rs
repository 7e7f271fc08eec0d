//! What a task sees of its reactor while it runs.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::{BufferPool, IoBuf};
use crate::error::ReactorError;
use crate::handle::Spawner;
use crate::poller::Poller;
use crate::waker::ReactorWaker;

/// The reactor's context, lent to each task's `poll` and messages. Owned by one reactor.
#[derive(Debug)]
pub struct TaskContext {
    now: Instant,
    index: usize,
    small: BufferPool,
    large: BufferPool,
    wake_at: Option<Instant>,
    stop_requested: bool,
    poller: Poller,
    spawner: Spawner,
}

impl TaskContext {
    pub(crate) fn new(
        index: usize,
        now: Instant,
        small: BufferPool,
        large: BufferPool,
        poller: Poller,
        spawner: Spawner,
    ) -> Self {
        Self {
            now,
            index,
            small,
            large,
            wake_at: None,
            stop_requested: false,
            poller,
            spawner,
        }
    }

    /// The time at the start of this reactor iteration (from the injected clock).
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn reactor_index(&self) -> usize {
        self.index
    }

    pub fn small_pool(&mut self) -> &mut BufferPool {
        &mut self.small
    }

    pub fn large_pool(&mut self) -> &mut BufferPool {
        &mut self.large
    }

    /// A buffer of capacity >= `len` from the smallest pool that fits, with length 0; `None`
    /// when that pool is exhausted (no fallback to the large pool, which would starve large
    /// transfers) or when `len` exceeds the large buffer size.
    pub fn get_buffer(&mut self, len: usize) -> Option<IoBuf> {
        if len <= self.small.buf_size() {
            self.small.get()
        } else if len <= self.large.buf_size() {
            self.large.get()
        } else {
            None
        }
    }

    /// Returns a buffer to the pool of this reactor that owns it. Unpooled buffers (emergency
    /// allocations made when a pool ran dry) are simply freed. A pooled buffer this reactor does
    /// not own is a bug (buffers stay on their reactor): it is dropped and logged.
    pub fn put_buffer(&mut self, buf: IoBuf) {
        if buf.pool_index().is_none() {
            drop(buf);
        } else if self.small.owns(&buf) {
            self.small.put(buf);
        } else if self.large.owns(&buf) {
            self.large.put(buf);
        } else {
            log::error!(
                "reactor {}: dropping a buffer it does not own ({buf:?})",
                self.index
            );
            debug_assert!(false, "IoBuf returned to a reactor that does not own it");
        }
    }

    /// Adds `fd` to the set this reactor waits on when it parks: readability means "a task
    /// has work". Level-triggered. Unregister it before closing it, or let the close remove it
    /// (epoll drops an fd when its last duplicate is closed). An fd left readable on purpose
    /// (say, no buffer to receive into) keeps the reactor from sleeping: it then polls.
    pub fn register_wakeup_fd(&mut self, fd: BorrowedFd<'_>) -> Result<(), ReactorError> {
        self.poller
            .register(fd)
            .map_err(|e| ReactorError::io("registering a wakeup fd", e))
    }

    pub fn unregister_wakeup_fd(&mut self, fd: BorrowedFd<'_>) -> Result<(), ReactorError> {
        self.poller
            .unregister(fd)
            .map_err(|e| ReactorError::io("unregistering a wakeup fd", e))
    }

    /// Asks the reactor not to park past `deadline` (a timer the task owns). The earliest
    /// request within an iteration wins; ask again every poll while the deadline stands.
    pub fn wake_at(&mut self, deadline: Instant) {
        self.wake_at = Some(self.wake_at.map_or(deadline, |w| w.min(deadline)));
    }

    /// The earliest `wake_at` requested in the current iteration so far.
    pub fn next_wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    /// Removes the calling task after this poll (or after the current message). Its inbox is
    /// closed and pending messages are dropped unrun.
    pub fn request_stop(&mut self) {
        self.stop_requested = true;
    }

    /// Rings this reactor from any thread (see [`ReactorWaker`]).
    pub fn waker(&self) -> ReactorWaker {
        ReactorWaker::new(Arc::clone(&self.spawner.shared()[self.index]))
    }

    /// Spawns tasks on any reactor of this runtime.
    pub fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    pub(crate) fn take_stop(&mut self) -> bool {
        std::mem::take(&mut self.stop_requested)
    }

    pub(crate) fn begin_iteration(&mut self, now: Instant) {
        self.now = now;
        self.wake_at = None;
        self.stop_requested = false;
    }

    pub(crate) fn poller_mut(&mut self) -> &mut Poller {
        &mut self.poller
    }

    pub(crate) fn registered_fds(&self) -> usize {
        self.poller.registered()
    }
}
