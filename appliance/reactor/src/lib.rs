//! Per-core poll-mode runtime (SPDK's lib/thread + reactor, in Rust).
//!
//! A [`Runtime`] runs one reactor per core: an OS thread (pinned with `affinity`) looping over
//! its lightweight threads ([`Task`]s). Each iteration reads the clock once, starts newly
//! spawned tasks, and for every task runs up to N inbox messages and then `poll`. Other threads
//! reach a task only through its [`TaskHandle`] (a bounded lock-free inbox). Idle reactors can
//! park in epoll ([`IdlePolicy::Park`]) on their doorbell eventfd plus the wakeup fds tasks
//! registered, until the earliest `wake_at`. [`LocalExecutor`] drives the same tasks
//! deterministically on one thread with a [`ManualClock`] for tests.
//!
//! ```
//! use std::time::Duration;
//! use ferrite_reactor::{PollStatus, Runtime, RuntimeConfig, Task, TaskContext, Timers};
//!
//! /// Counts ticks of a periodic timer; the control thread reads the count by message.
//! struct Ticker {
//!     timers: Timers<()>,
//!     fired: Vec<()>,
//!     ticks: u64,
//! }
//!
//! impl Task for Ticker {
//!     fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
//!         let n = self.timers.expired(cx.now(), &mut self.fired);
//!         for () in self.fired.drain(..) {
//!             self.ticks += 1;
//!             self.timers.schedule(cx.now() + Duration::from_millis(1), ());
//!         }
//!         if let Some(at) = self.timers.next_deadline() {
//!             cx.wake_at(at); // do not park past the next tick
//!         }
//!         PollStatus::from_busy(n > 0)
//!     }
//! }
//!
//! let rt = Runtime::start(RuntimeConfig::testing(2))?; // real use: cores, pin: true
//! let ticker = rt.spawn(1, "ticker", |cx| {
//!     // Runs on reactor 1: may build non-Send state here.
//!     let mut timers = Timers::new();
//!     timers.schedule(cx.now(), ());
//!     Ticker { timers, fired: Vec::new(), ticks: 0 }
//! })?;
//! let started = std::time::Instant::now();
//! while ticker.call(|t, _cx| t.ticks, Duration::from_secs(5))? < 3 {
//!     assert!(started.elapsed() < Duration::from_secs(5), "timer ticks");
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! rt.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod buffer;
mod clock;
mod config;
mod context;
mod cores;
mod error;
mod handle;
mod idle;
mod local;
mod poller;
mod reactor;
mod runtime;
mod shared;
mod slot;
mod task;
mod timer;
mod waker;

pub use buffer::{BufferPool, IoBuf, PoolId, PoolRegions, PoolStats, BUF_ALIGN};
pub use clock::{Clock, ManualClock, RealClock};
pub use config::RuntimeConfig;
pub use context::TaskContext;
pub use cores::{CoreId, CoreList, CoreListError, MAX_CORE};
pub use error::{IdlePolicyError, ReactorError, SendError};
pub use handle::{Spawner, TaskHandle, DEFAULT_INBOX_CAPACITY};
pub use idle::{format_duration, parse_duration, IdlePolicy};
pub use local::LocalExecutor;
pub use runtime::Runtime;
pub use shared::ReactorStats;
pub use task::{PollStatus, Task, TaskId};
pub use timer::{TimerId, Timers};
pub use waker::ReactorWaker;
