//! The threaded runtime: one (pinned) OS thread per core, each running a reactor loop.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::RuntimeConfig;
use crate::context::TaskContext;
use crate::cores::CoreId;
use crate::error::ReactorError;
use crate::handle::{Spawner, TaskHandle};
use crate::idle::IdlePolicy;
use crate::reactor::ReactorCore;
use crate::shared::{ReactorShared, ReactorStats};
use crate::task::Task;

/// How long a shutting-down reactor sleeps at most between polls of unfinished tasks.
const SHUTDOWN_PARK: Duration = Duration::from_millis(1);

/// Running reactors. Dropping it without `shutdown` stops the reactors too (without waiting
/// for their tasks to finish).
pub struct Runtime {
    spawner: Spawner,
    threads: Vec<Option<JoinHandle<usize>>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("reactors", &self.threads.len())
            .finish()
    }
}

impl Runtime {
    /// Starts one OS thread per core (pinned when `cfg.pin`), each building its own buffer
    /// pools and epoll set, and returns once all are running.
    pub fn start(cfg: RuntimeConfig) -> Result<Runtime, ReactorError> {
        cfg.validate()?;
        let mut shared = Vec::with_capacity(cfg.cores.len());
        for (index, core) in cfg.cores.iter().enumerate() {
            let pinned = cfg.pin.then_some(core);
            shared.push(
                ReactorShared::new(index, pinned, false)
                    .map_err(|e| ReactorError::io("creating the reactor eventfd", e))?,
            );
        }
        let spawner = Spawner::new(shared, cfg.inbox_capacity);
        let mut rt = Runtime {
            spawner: spawner.clone(),
            threads: Vec::with_capacity(cfg.cores.len()),
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        for (index, core) in cfg.cores.iter().enumerate() {
            let shared = Arc::clone(&spawner.shared()[index]);
            let (cfg, spawner, ready) = (cfg.clone(), spawner.clone(), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("reactor-{index}"))
                .spawn(move || reactor_thread(shared, core, cfg, spawner, ready))
                .map_err(|source| ReactorError::Thread { index, source });
            match thread {
                Ok(t) => rt.threads.push(Some(t)),
                Err(e) => {
                    // The start error is the one to report; stopping the others is best effort.
                    let _ = rt.stop_all();
                    return Err(e);
                }
            }
        }
        drop(ready_tx);
        for _ in 0..rt.threads.len() {
            let result = ready_rx.recv().unwrap_or_else(|_| {
                // Every sender is gone but a report is missing: a thread died before reporting.
                let index = rt
                    .threads
                    .iter()
                    .position(|t| t.as_ref().is_some_and(JoinHandle::is_finished))
                    .unwrap_or(0);
                Err(ReactorError::Panicked { index })
            });
            if let Err(e) = result {
                // The start error is the one to report; stopping the others is best effort.
                let _ = rt.stop_all();
                return Err(e);
            }
        }
        log::info!(
            "runtime started: {} reactor(s) on cores {}, idle {}, pinned {}",
            cfg.cores.len(),
            cfg.cores,
            cfg.idle,
            cfg.pin
        );
        Ok(rt)
    }

    pub fn reactor_count(&self) -> usize {
        self.spawner.reactor_count()
    }

    /// Creates a task on reactor `index`; see [`Spawner::spawn`].
    pub fn spawn<S: Task>(
        &self,
        index: usize,
        name: &str,
        init: impl FnOnce(&mut TaskContext) -> S + Send + 'static,
    ) -> Result<TaskHandle<S>, ReactorError> {
        self.spawner.spawn(index, name, init)
    }

    /// A cloneable spawner for other threads and tasks.
    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    pub fn stats(&self) -> Vec<ReactorStats> {
        self.spawner.stats()
    }

    /// Calls each task's `on_shutdown`, polls tasks until they all report `is_finished` (at
    /// most `shutdown_timeout`), drops them and joins every thread. Reports the first reactor
    /// that panicked or timed out; all threads are joined either way.
    pub fn shutdown(mut self) -> Result<(), ReactorError> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), ReactorError> {
        for shared in self.spawner.shared() {
            shared.request_stop();
        }
        let mut first_err = None;
        for (index, thread) in self.threads.iter_mut().enumerate() {
            let Some(thread) = thread.take() else {
                continue;
            };
            let err = match thread.join() {
                Ok(0) => None,
                Ok(pending) => Some(ReactorError::ShutdownTimeout { index, pending }),
                Err(_) => Some(ReactorError::Panicked { index }),
            };
            if let Some(e) = err {
                log::error!("{e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.threads.iter().any(Option::is_some) {
            let _ = self.stop_all();
        }
    }
}

/// Body of a reactor thread. Returns the number of tasks still unfinished at the end.
fn reactor_thread(
    shared: Arc<ReactorShared>,
    core: CoreId,
    cfg: RuntimeConfig,
    spawner: Spawner,
    ready: mpsc::Sender<Result<(), ReactorError>>,
) -> usize {
    let index = shared.index;
    if cfg.pin {
        if let Err(e) = affinity::set_thread_affinity([core.0]) {
            let _ = ready.send(Err(ReactorError::Pin {
                index,
                core,
                reason: e.to_string(),
            }));
            shared.retire();
            return 0;
        }
    }
    let mut core_state = match ReactorCore::new(shared, &cfg, Arc::clone(&cfg.clock), spawner) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return 0;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    let pending = run_loop(&mut core_state, cfg.idle, cfg.shutdown_timeout);
    if pending > 0 {
        log::warn!("reactor {index}: {pending} task(s) unfinished at shutdown, dropping them");
    }
    core_state.finish();
    pending
}

/// The poll loop until shutdown completes. Returns the unfinished task count.
pub(crate) fn run_loop(
    core: &mut ReactorCore,
    idle: IdlePolicy,
    shutdown_timeout: Duration,
) -> usize {
    let mut idle_since: Option<Instant> = None;
    // Real time: the shutdown bound must hold even with a manual clock.
    let mut shutdown_deadline: Option<Instant> = None;
    loop {
        let busy = core.run_once();
        if shutdown_deadline.is_none() && core.shared().stop.load(Ordering::Acquire) {
            core.begin_shutdown();
            shutdown_deadline = Some(Instant::now() + shutdown_timeout);
        }
        if let Some(deadline) = shutdown_deadline {
            let pending = core.unfinished();
            if pending == 0 || Instant::now() >= deadline {
                return pending;
            }
        }
        if busy {
            idle_since = None;
            continue;
        }
        match idle {
            IdlePolicy::Poll => std::hint::spin_loop(),
            IdlePolicy::Park { after, max } => {
                let now = core.now();
                let since = *idle_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= after {
                    let max = if core.is_shutting_down() {
                        max.min(SHUTDOWN_PARK)
                    } else {
                        max
                    };
                    core.park(max);
                }
            }
        }
    }
}
