//! One reactor iteration, shared by the threaded `Runtime` and the `LocalExecutor`.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buffer::BufferPool;
use crate::clock::Clock;
use crate::config::RuntimeConfig;
use crate::context::TaskContext;
use crate::error::ReactorError;
use crate::handle::Spawner;
use crate::poller::Poller;
use crate::shared::{CurrentGuard, ReactorShared};
use crate::slot::AnyTask;
use crate::task::TaskId;

struct Entry {
    task: Box<dyn AnyTask>,
    stopped: bool,
}

/// A reactor's private state: its tasks, context and running totals.
pub(crate) struct ReactorCore {
    shared: Arc<ReactorShared>,
    cx: TaskContext,
    tasks: Vec<Entry>,
    clock: Arc<dyn Clock>,
    messages_per_poll: usize,
    shutting_down: bool,
    last: Instant,
    last_busy: bool,
    busy_ns: u64,
    idle_ns: u64,
    iterations: u64,
    parks: u64,
    messages: u64,
}

impl std::fmt::Debug for ReactorCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorCore")
            .field("index", &self.shared.index)
            .field("tasks", &self.tasks.len())
            .field("iterations", &self.iterations)
            .finish()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl ReactorCore {
    /// Builds the reactor's pools and epoll set: call on the reactor's own thread so the
    /// buffer memory is first touched (and placed) there.
    pub(crate) fn new(
        shared: Arc<ReactorShared>,
        cfg: &RuntimeConfig,
        clock: Arc<dyn Clock>,
        spawner: Spawner,
    ) -> Result<Self, ReactorError> {
        let poller = Poller::new(&shared.doorbell)
            .map_err(|e| ReactorError::io("creating the reactor epoll set", e))?;
        let now = clock.now();
        let cx = TaskContext::new(
            shared.index,
            now,
            BufferPool::new(cfg.small_buffers, cfg.small_buffer_size),
            BufferPool::new(cfg.large_buffers, cfg.large_buffer_size),
            poller,
            spawner,
        );
        Ok(Self {
            shared,
            cx,
            tasks: Vec::with_capacity(64),
            clock,
            messages_per_poll: cfg.messages_per_poll.max(1),
            shutting_down: false,
            last: now,
            last_busy: false,
            busy_ns: 0,
            idle_ns: 0,
            iterations: 0,
            parks: 0,
            messages: 0,
        })
    }

    pub(crate) fn shared(&self) -> &Arc<ReactorShared> {
        &self.shared
    }

    pub(crate) fn cx(&self) -> &TaskContext {
        &self.cx
    }

    /// Time read at the start of the last iteration.
    pub(crate) fn now(&self) -> Instant {
        self.cx.now()
    }

    pub(crate) fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// One pass: take new tasks, then for each task run up to N messages and poll it; remove
    /// tasks that asked to stop. Returns whether anything was busy. No allocation, no lock
    /// (spawns and messages aside).
    pub(crate) fn run_once(&mut self) -> bool {
        let _current = CurrentGuard::enter(&self.shared);
        let now = self.clock.now();
        self.account(now);
        self.cx.begin_iteration(now);
        let mut busy = self.accept_spawns();
        let mut any_stopped = false;
        for entry in &mut self.tasks {
            let (status, ran) = entry.task.run(&mut self.cx, self.messages_per_poll);
            self.messages += ran as u64;
            busy |= status.is_busy() || ran > 0;
            if self.cx.take_stop() {
                entry.stopped = true;
                any_stopped = true;
            }
        }
        if any_stopped {
            self.remove_stopped();
        }
        self.iterations += 1;
        self.last_busy = busy;
        self.publish();
        busy
    }

    fn accept_spawns(&mut self) -> bool {
        let mut any = false;
        while let Some(req) = self.shared.spawns.pop() {
            any = true;
            let mut task = (req.make)(&mut self.cx);
            log::debug!(
                "reactor {}: started {} ({})",
                self.shared.index,
                task.id(),
                task.name()
            );
            if self.shutting_down {
                task.begin_shutdown(&mut self.cx);
            }
            let stopped = self.cx.take_stop();
            self.tasks.push(Entry { task, stopped });
            if stopped {
                self.remove_stopped();
            }
        }
        any
    }

    fn remove_stopped(&mut self) {
        let index = self.shared.index;
        self.tasks.retain(|e| {
            if e.stopped {
                log::debug!(
                    "reactor {index}: {} ({}) stopped",
                    e.task.id(),
                    e.task.name()
                );
            }
            !e.stopped
        });
    }

    fn account(&mut self, now: Instant) {
        let elapsed = nanos(now.saturating_duration_since(self.last));
        if self.last_busy {
            self.busy_ns += elapsed;
        } else {
            self.idle_ns += elapsed;
        }
        self.last = now;
    }

    fn publish(&self) {
        let s = &self.shared.stats;
        s.busy_ns.store(self.busy_ns, Ordering::Relaxed);
        s.idle_ns.store(self.idle_ns, Ordering::Relaxed);
        s.iterations.store(self.iterations, Ordering::Relaxed);
        s.parks.store(self.parks, Ordering::Relaxed);
        s.tasks.store(self.tasks.len() as u64, Ordering::Relaxed);
        s.messages.store(self.messages, Ordering::Relaxed);
    }

    /// Whether work arrived that a park would sleep through.
    pub(crate) fn has_pending_work(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
            || !self.shared.spawns.is_empty()
            || self.tasks.iter().any(|e| e.task.has_mail())
    }

    /// Blocks in epoll for at most `max`, less if a task asked `wake_at` earlier. Returns
    /// false without blocking if a deadline already passed or work is pending.
    pub(crate) fn park(&mut self, max: Duration) -> bool {
        let now = self.cx.now();
        let mut timeout = max;
        if let Some(wake) = self.cx.next_wake_at() {
            if wake <= now {
                return false;
            }
            timeout = timeout.min(wake - now);
        }
        // Pairs with the fence in `ReactorShared::notify`: see there.
        self.shared.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.has_pending_work() {
            self.shared.parked.store(false, Ordering::Relaxed);
            return false;
        }
        self.parks += 1;
        self.shared.stats.parks.store(self.parks, Ordering::Relaxed);
        let shared = Arc::clone(&self.shared);
        let wake = self.cx.poller_mut().wait(&shared.doorbell, timeout);
        self.shared.parked.store(false, Ordering::Relaxed);
        log::trace!("reactor {} woke: {wake:?}", self.shared.index);
        true
    }

    /// Starts a graceful stop: every task gets `on_shutdown` once; tasks spawned later get it
    /// at creation.
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for entry in &mut self.tasks {
            entry.task.begin_shutdown(&mut self.cx);
            if self.cx.take_stop() {
                entry.stopped = true;
            }
        }
        self.remove_stopped();
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Tasks whose `is_finished` is still false.
    pub(crate) fn unfinished(&self) -> usize {
        self.tasks.iter().filter(|e| !e.task.is_finished()).count()
    }

    /// Drops every task (closing inboxes) and stops taking spawns.
    pub(crate) fn finish(&mut self) {
        self.tasks.clear();
        self.publish();
        self.shared.retire();
    }

    /// The task with this id, for `LocalExecutor::with_task`.
    pub(crate) fn task_mut(&mut self, id: TaskId) -> Option<(&mut dyn AnyTask, &mut TaskContext)> {
        let entry = self.tasks.iter_mut().find(|e| e.task.id() == id)?;
        Some((entry.task.as_mut(), &mut self.cx))
    }

    pub(crate) fn registered_fds(&self) -> usize {
        self.cx.registered_fds()
    }
}

impl Drop for ReactorCore {
    fn drop(&mut self) {
        // Also on unwinding from a panicking task: close inboxes so callers see `Closed`.
        self.finish();
    }
}
