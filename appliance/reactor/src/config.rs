//! Runtime settings, below the runtime (`runtime`, `local`) and the reactor loop that read them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, RealClock};
use crate::cores::CoreList;
use crate::error::ReactorError;
use crate::handle::DEFAULT_INBOX_CAPACITY;
use crate::idle::IdlePolicy;

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
