//! The part of a reactor other threads may touch: doorbell, parked flag, spawn queue, stop
//! flag and published statistics. Everything is atomic or lock-free.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::SegQueue;

use crate::context::TaskContext;
use crate::cores::CoreId;
use crate::poller::Doorbell;
use crate::slot::AnyTask;

/// Something whose inbox can be closed when its spawn request is dropped unrun.
pub(crate) trait CloseInbox: Send + Sync {
    fn close(&self);
}

/// Builds a task on its reactor.
pub(crate) type MakeTask = Box<dyn FnOnce(&mut TaskContext) -> Box<dyn AnyTask> + Send>;

pub(crate) struct SpawnRequest {
    pub(crate) inbox: Arc<dyn CloseInbox>,
    pub(crate) make: MakeTask,
}

impl std::fmt::Debug for SpawnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpawnRequest")
    }
}

/// Counters a reactor publishes (relaxed stores of its own running totals).
#[derive(Debug, Default)]
pub(crate) struct StatsCells {
    pub busy_ns: AtomicU64,
    pub idle_ns: AtomicU64,
    pub iterations: AtomicU64,
    pub parks: AtomicU64,
    pub tasks: AtomicU64,
    pub messages: AtomicU64,
    /// Bumped by senders that found an inbox of this reactor full.
    pub inbox_full: AtomicU64,
}

/// Per-reactor statistics snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReactorStats {
    pub index: usize,
    /// The core it is pinned to (`None` when running unpinned or in a `LocalExecutor`).
    pub core: Option<CoreId>,
    /// Time in iterations where a task was busy or a message ran.
    pub busy_ns: u64,
    /// Time in idle iterations, parks included.
    pub idle_ns: u64,
    pub iterations: u64,
    /// Times it blocked in epoll (interrupt mode).
    pub parks: u64,
    /// Live tasks.
    pub tasks: u64,
    /// Messages run.
    pub messages: u64,
    /// Sends refused because a task inbox was full.
    pub inbox_full: u64,
    /// Parked right now.
    pub parked: bool,
}

impl ReactorStats {
    /// Busy share of the accounted time, 0.0..=1.0.
    pub fn load(&self) -> f64 {
        let total = self.busy_ns.saturating_add(self.idle_ns);
        if total == 0 {
            0.0
        } else {
            self.busy_ns as f64 / total as f64
        }
    }
}

#[derive(Debug)]
pub(crate) struct ReactorShared {
    pub(crate) index: usize,
    pub(crate) core: Option<CoreId>,
    /// Set by the reactor right before it blocks in epoll; see `notify`.
    pub(crate) parked: AtomicBool,
    pub(crate) doorbell: Doorbell,
    pub(crate) spawns: SegQueue<SpawnRequest>,
    pub(crate) stop: AtomicBool,
    /// The reactor no longer takes spawns (it exited or died).
    pub(crate) exited: AtomicBool,
    pub(crate) stats: StatsCells,
    /// Runs all reactors on one thread (LocalExecutor): `call` into it would deadlock.
    pub(crate) local: bool,
}

thread_local! {
    /// Address of the `ReactorShared` whose iteration runs on this thread right now.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    /// This thread is inside a LocalExecutor iteration.
    static IN_LOCAL: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as running `shared` until dropped.
#[derive(Debug)]
pub(crate) struct CurrentGuard {
    prev: usize,
    prev_local: bool,
}

impl CurrentGuard {
    pub(crate) fn enter(shared: &Arc<ReactorShared>) -> Self {
        let prev = CURRENT.with(|c| c.replace(Arc::as_ptr(shared) as usize));
        let prev_local = IN_LOCAL.with(|c| c.replace(shared.local));
        Self { prev, prev_local }
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
        IN_LOCAL.with(|c| c.set(self.prev_local));
    }
}

impl ReactorShared {
    pub(crate) fn new(
        index: usize,
        core: Option<CoreId>,
        local: bool,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            index,
            core,
            parked: AtomicBool::new(false),
            doorbell: Doorbell::new()?,
            spawns: SegQueue::new(),
            stop: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            stats: StatsCells::default(),
            local,
        }))
    }

    /// Whether a blocking wait for this reactor from the current thread can never end.
    pub(crate) fn would_deadlock(self: &Arc<Self>) -> bool {
        let current = CURRENT.with(Cell::get);
        current == Arc::as_ptr(self) as usize || (self.local && IN_LOCAL.with(Cell::get))
    }

    /// Wakes the reactor if it is parked. Call after publishing work (enqueue).
    ///
    /// No lost wake-up: the reactor stores `parked = true`, fences, then re-checks its queues;
    /// we enqueue, fence, then load `parked`. The two SeqCst fences order both store->load
    /// pairs, so either the reactor sees our item and does not block, or we see `parked` and
    /// ring the doorbell (which stays readable until the reactor drains it).
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        // Only the first notifier of a park pays for the syscall.
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.doorbell.ring();
        }
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.doorbell.ring();
    }

    pub(crate) fn snapshot(&self) -> ReactorStats {
        let s = &self.stats;
        ReactorStats {
            index: self.index,
            core: self.core,
            busy_ns: s.busy_ns.load(Ordering::Relaxed),
            idle_ns: s.idle_ns.load(Ordering::Relaxed),
            iterations: s.iterations.load(Ordering::Relaxed),
            parks: s.parks.load(Ordering::Relaxed),
            tasks: s.tasks.load(Ordering::Relaxed),
            messages: s.messages.load(Ordering::Relaxed),
            inbox_full: s.inbox_full.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }

    /// Called by the reactor when it stops taking spawns: closes the inboxes of requests that
    /// will never run.
    pub(crate) fn retire(&self) {
        self.exited.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        while let Some(req) = self.spawns.pop() {
            req.inbox.close();
        }
    }
}
