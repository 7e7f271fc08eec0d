//! Injectable time source: real in production, manual in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where reactors read the time (once per loop iteration).
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The monotonic OS clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to. Clones share the same time, so a test keeps one
/// clone and hands another to the executor.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    start: Instant,
    /// Nanoseconds since `start`; atomic so reactors on other threads read it without a lock.
    offset_ns: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(ManualInner {
                start: Instant::now(),
                offset_ns: AtomicU64::new(0),
            }),
        }
    }

    /// The instant this clock started at.
    pub fn start(&self) -> Instant {
        self.inner.start
    }

    /// Time since `start()`.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_ns.load(Ordering::Acquire))
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.offset_ns.fetch_add(ns, Ordering::AcqRel);
    }

    /// Moves time forward to `to`; an instant in the past leaves the clock where it is.
    pub fn advance_to(&self, to: Instant) {
        let target = u64::try_from(to.saturating_duration_since(self.inner.start).as_nanos())
            .unwrap_or(u64::MAX);
        self.inner.offset_ns.fetch_max(target, Ordering::AcqRel);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.start + self.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward_when_told() {
        let clock = ManualClock::new();
        let other = clock.clone();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        other.advance(Duration::from_millis(5));
        assert_eq!(clock.now(), t0 + Duration::from_millis(5));
        clock.advance_to(t0 + Duration::from_millis(2));
        assert_eq!(
            clock.now(),
            t0 + Duration::from_millis(5),
            "never backwards"
        );
        clock.advance_to(t0 + Duration::from_secs(1));
        assert_eq!(other.now(), t0 + Duration::from_secs(1));
    }
}
