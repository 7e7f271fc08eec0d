//! A deterministic, single-threaded driver for tests (SPDK's ut_multithread): several
//! simulated reactors, each with its own context and buffer pools, run one iteration at a time
//! on the caller's thread with a manual clock. Never parks.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, ManualClock};
use crate::config::RuntimeConfig;
use crate::context::TaskContext;
use crate::error::ReactorError;
use crate::handle::{Spawner, TaskHandle};
use crate::reactor::ReactorCore;
use crate::shared::{CurrentGuard, ReactorShared, ReactorStats};
use crate::slot::TaskSlot;
use crate::task::Task;

/// Drives tasks deterministically on the calling thread. Tasks and messages run in a fixed
/// order: reactors by index, tasks in spawn order, messages in send order.
pub struct LocalExecutor {
    cores: Vec<ReactorCore>,
    spawner: Spawner,
    clock: ManualClock,
}

impl fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("reactors", &self.cores.len())
            .field("elapsed", &self.clock.elapsed())
            .finish()
    }
}

impl LocalExecutor {
    /// `reactors` simulated reactors with test-sized pools (see `RuntimeConfig::testing`).
    pub fn new(reactors: usize) -> Result<Self, ReactorError> {
        Self::with_config(RuntimeConfig::testing(reactors), ManualClock::new())
    }

    /// One simulated reactor per core of `cfg.cores`, with its pool sizes, inbox capacity and
    /// message budget; `pin`, `idle`, and `cfg.clock` are ignored in favour of `clock`.
    pub fn with_config(cfg: RuntimeConfig, clock: ManualClock) -> Result<Self, ReactorError> {
        cfg.validate()?;
        let mut shared = Vec::with_capacity(cfg.cores.len());
        for index in 0..cfg.cores.len() {
            shared.push(
                ReactorShared::new(index, None, true)
                    .map_err(|e| ReactorError::io("creating the reactor eventfd", e))?,
            );
        }
        let spawner = Spawner::new(shared, cfg.inbox_capacity);
        let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let cores = spawner
            .shared()
            .iter()
            .map(|s| ReactorCore::new(Arc::clone(s), &cfg, Arc::clone(&dyn_clock), spawner.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cores,
            spawner,
            clock,
        })
    }

    pub fn reactor_count(&self) -> usize {
        self.cores.len()
    }

    /// The clock the reactors read; advance it to move time.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Creates a task on simulated reactor `index`; `init` runs in its next iteration.
    pub fn spawn<S: Task>(
        &self,
        index: usize,
        name: &str,
        init: impl FnOnce(&mut TaskContext) -> S + Send + 'static,
    ) -> Result<TaskHandle<S>, ReactorError> {
        self.spawner.spawn(index, name, init)
    }

    /// One iteration of every reactor, in index order. Returns whether any was busy.
    pub fn run_once(&mut self) -> bool {
        let mut busy = false;
        for core in &mut self.cores {
            busy |= core.run_once();
        }
        busy
    }

    /// One iteration of reactor `index` only (to replay a chosen interleaving).
    pub fn run_reactor_once(&mut self, index: usize) -> Result<bool, ReactorError> {
        let count = self.cores.len();
        let core = self
            .cores
            .get_mut(index)
            .ok_or(ReactorError::NoSuchReactor { index, count })?;
        Ok(core.run_once())
    }

    /// Runs iterations until one is idle everywhere with no message or spawn pending, or
    /// `max_iterations` ran. Returns the number of iterations run. The clock does not move.
    pub fn run_until_idle(&mut self, max_iterations: usize) -> usize {
        for n in 1..=max_iterations {
            if !self.run_once() && !self.cores.iter().any(ReactorCore::has_pending_work) {
                return n;
            }
        }
        max_iterations
    }

    /// The earliest `wake_at` any task asked for in the last iteration.
    pub fn next_wake_at(&self) -> Option<Instant> {
        self.cores
            .iter()
            .filter_map(|c| c.cx().next_wake_at())
            .min()
    }

    /// Jumps the clock to the earliest requested `wake_at` (if in the future) and runs until
    /// idle. Returns false if no task asked to be woken.
    pub fn advance_to_next_wake(&mut self, max_iterations: usize) -> bool {
        let Some(at) = self.next_wake_at() else {
            return false;
        };
        self.clock.advance_to(at);
        self.run_until_idle(max_iterations);
        true
    }

    /// Runs `f` on the task's state right now, on this thread; `None` if the task is not (or
    /// no longer, or not yet) on its reactor. Spawned tasks appear after one `run_once`.
    pub fn with_task<S: Task, R>(
        &mut self,
        handle: &TaskHandle<S>,
        f: impl FnOnce(&mut S, &mut TaskContext) -> R,
    ) -> Option<R> {
        let core = self.cores.get_mut(handle.reactor_index())?;
        let _current = CurrentGuard::enter(core.shared());
        let (task, cx) = core.task_mut(handle.task_id())?;
        let slot = task.as_any_mut().downcast_mut::<TaskSlot<S>>()?;
        Some(f(&mut slot.state, cx))
    }

    /// Live tasks on reactor `index`.
    pub fn task_count(&self, index: usize) -> usize {
        self.cores.get(index).map_or(0, ReactorCore::task_count)
    }

    /// Wakeup fds registered on reactor `index`.
    pub fn registered_fds(&self, index: usize) -> usize {
        self.cores.get(index).map_or(0, ReactorCore::registered_fds)
    }

    pub fn stats(&self) -> Vec<ReactorStats> {
        self.spawner.stats()
    }

    /// Calls every task's `on_shutdown`, runs up to `max_iterations` until all report
    /// `is_finished`, then drops all tasks. Fails with the unfinished count if they did not.
    pub fn shutdown(mut self, max_iterations: usize) -> Result<(), ReactorError> {
        for core in &mut self.cores {
            core.begin_shutdown();
        }
        let mut pending = self.unfinished();
        for _ in 0..max_iterations {
            if pending.is_none() {
                break;
            }
            self.run_once();
            pending = self.unfinished();
        }
        for core in &mut self.cores {
            core.finish();
        }
        match pending {
            None => Ok(()),
            Some((index, pending)) => Err(ReactorError::ShutdownTimeout { index, pending }),
        }
    }

    fn unfinished(&self) -> Option<(usize, usize)> {
        self.cores
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.unfinished()))
            .find(|&(_, n)| n > 0)
    }
}
