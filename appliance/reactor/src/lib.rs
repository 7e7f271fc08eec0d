//! Per-core poll-mode runtime (SPDK's lib/thread + reactor, in Rust).
//!
//! A [`Runtime`] runs one reactor per core: an OS thread (pinned with `affinity`) looping over
//! its lightweight threads ([`Task`]s). Each iteration reads the clock once, starts newly
//! spawned tasks, and for every task runs up to N inbox messages and then `poll`. Other threads
//! reach a task only through its [`TaskHandle`] (a bounded lock-free inbox). Idle reactors can
//! park in epoll ([`IdlePolicy::Park`]) on their doorbell eventfd plus the wakeup fds tasks
//! registered, until the earliest `wake_at`. [`LocalExecutor`] drives the same tasks
//! deterministically on one thread with a [`ManualClock`] for tests.
#![forbid(unsafe_code)]

pub mod buffer;
mod clock;
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

pub use buffer::{BufferPool, IoBuf, PoolStats, BUF_ALIGN};
pub use clock::{Clock, ManualClock, RealClock};
pub use context::TaskContext;
pub use cores::{CoreId, CoreList, MAX_CORE};
pub use error::{CoreListError, IdlePolicyError, ReactorError, SendError};
pub use handle::{Spawner, TaskHandle, DEFAULT_INBOX_CAPACITY};
pub use idle::{format_duration, parse_duration, IdlePolicy};
pub use local::LocalExecutor;
pub use runtime::{Runtime, RuntimeConfig};
pub use shared::ReactorStats;
pub use task::{PollStatus, Task, TaskId};
pub use timer::{TimerId, Timers};
