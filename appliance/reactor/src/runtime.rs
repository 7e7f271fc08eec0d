//! The threaded runtime: one (pinned) OS thread per core, each running a reactor loop.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::{Clock, RealClock};
use crate::context::TaskContext;
use crate::cores::{CoreId, CoreList};
use crate::error::ReactorError;
use crate::handle::{Spawner, TaskHandle, DEFAULT_INBOX_CAPACITY};
use crate::idle::IdlePolicy;
use crate::reactor::ReactorCore;
use crate::shared::{ReactorShared, ReactorStats};
use crate::task::Task;

/// How long a shutting-down reactor sleeps at most between polls of unfinished tasks.
const SHUTDOWN_PARK: Duration = Duration::from_millis(1);

/// Runtime settings. Build with `..Default::default()` (or `RuntimeConfig::testing`): fields
/// may be added.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// One reactor per core, reactor `i` on `cores[i]`.
    pub cores: CoreList,
    pub idle: IdlePolicy,
    /// Buffers per reactor for small transfers (capsules, PDUs, 4-8 KiB I/O).
    pub small_buffers: usize,
    pub small_buffer_size: usize,
    /// Buffers per reactor for large transfers; the size is the largest single transfer
    /// (MDTS, 128 KiB by default).
    pub large_buffers: usize,
    pub large_buffer_size: usize,
    /// Pin each reactor thread to its core. Tests run unpinned.
    pub pin: bool,
    /// Capacity of each task's inbox.
    pub inbox_capacity: usize,
    /// Messages a task may run per iteration before it is polled (fairness bound).
    pub messages_per_poll: usize,
    /// How long shutdown waits for tasks to report `is_finished` (real time).
    pub shutdown_timeout: Duration,
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("cores", &self.cores.to_string())
            .field("idle", &self.idle.to_string())
            .field("small_buffers", &self.small_buffers)
            .field("small_buffer_size", &self.small_buffer_size)
            .field("large_buffers", &self.large_buffers)
            .field("large_buffer_size", &self.large_buffer_size)
            .field("pin", &self.pin)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("messages_per_poll", &self.messages_per_poll)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RuntimeConfig {
    /// Core 0, pinned, default idle policy, 4096 x 8 KiB and 512 x 128 KiB buffers per
    /// reactor (96 MiB), inboxes of 1024, 32 messages per poll, 5 s shutdown bound.
    fn default() -> Self {
        Self {
            cores: CoreList::default(),
            idle: IdlePolicy::default(),
            small_buffers: 4096,
            small_buffer_size: 8 * 1024,
            large_buffers: 512,
            large_buffer_size: 128 * 1024,
            pin: true,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            messages_per_poll: 32,
            shutdown_timeout: Duration::from_secs(5),
            clock: Arc::new(RealClock),
        }
    }
}

impl RuntimeConfig {
    /// For tests: `reactors` unpinned reactors, small pools (64 x 8 KiB, 16 x 128 KiB), parking
    /// after 200 us idle for up to 10 ms.
    pub fn testing(reactors: usize) -> Self {
        Self {
            cores: CoreList::first(reactors.max(1)).expect("1..n is a valid core list"),
            idle: IdlePolicy::Park {
                after: Duration::from_micros(200),
                max: Duration::from_millis(10),
            },
            small_buffers: 64,
            large_buffers: 16,
            pin: false,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ReactorError> {
        let bad = |msg: &str| Err(ReactorError::Config(msg.to_string()));
        if self.small_buffer_size == 0 || self.large_buffer_size == 0 {
            return bad("buffer sizes must be non-zero");
        }
        if self.large_buffer_size < self.small_buffer_size {
            return bad("large_buffer_size must be at least small_buffer_size");
        }
        if self.inbox_capacity == 0 {
            return bad("inbox_capacity must be non-zero");
        }
        if self.messages_per_poll == 0 {
            return bad("messages_per_poll must be non-zero");
        }
        if let IdlePolicy::Park { max, .. } = self.idle {
            if max.is_zero() {
                return bad("the longest park must be non-zero");
            }
        }
        Ok(())
    }
}

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
