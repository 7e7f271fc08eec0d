//! Synchronous replication of a group: a host write completes only after the secondary holds
//! its record durably (the replicator's cumulative acknowledgement, which it passes on as the
//! journal trim), with a per-group policy for a lost link.
//!
//! ```text
//!            set Async                       set Sync (lag <= CATCHUP_SLACK)
//!   Async ◀──────────── Sync ◀──────────────────────────────── Async
//!                        │  ▲
//!  an ack overdue,       │  │ remote ack within CATCHUP_SLACK of the
//!  policy Degrade        ▼  │ reserved counter
//!                      Degraded  (writes complete like async; alert counted and logged)
//! ```
//!
//! With policy `Fail` an overdue write fails (`BdevError::Io`, timed out: the host sees Write
//! Fault) and the group stays in `Sync`. Setting `Sync` while the secondary lags by more than
//! [`CATCHUP_SLACK`] records starts in `Degraded` (catching up) so existing lag does not time
//! writes out. All state is atomics: the I/O path reads two of them per completed write.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use ferrite_bdev::BdevError;

/// Records the secondary may lag behind the reserved counter when a degraded group returns to
/// sync (the writes in flight at that moment).
pub const CATCHUP_SLACK: u64 = 64;
/// Default wait for the secondary's acknowledgement before the link counts as lost.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// When a host write of the group completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// When the local journal and volume hold it (the secondary follows).
    #[default]
    Async,
    /// When, in addition, the secondary holds it.
    Sync,
}

/// What an overdue acknowledgement does in sync mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkPolicy {
    /// Fail the write (nothing completes that the secondary lacks).
    #[default]
    Fail,
    /// Complete it and run asynchronously (with an alert) until the secondary catches up.
    Degrade,
}

/// A group's replication mode and lost-link policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// Async or sync.
    pub mode: Mode,
    /// Sync only: what a lost link does.
    pub link_policy: LinkPolicy,
    /// Sync only: how long a write waits for the secondary before the link counts as lost.
    pub timeout: Duration,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            mode: Mode::Async,
            link_policy: LinkPolicy::Fail,
            timeout: DEFAULT_SYNC_TIMEOUT,
        }
    }
}

/// Where a group is in the diagram above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Async mode.
    Async,
    /// Sync mode, writes wait for the secondary.
    Sync,
    /// Sync mode running asynchronously until the secondary catches up.
    Degraded,
}

impl SyncState {
    /// Name used in RPC results.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Async => "async",
            SyncState::Sync => "sync",
            SyncState::Degraded => "degraded",
        }
    }
}

/// Counters of the sync machinery (only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Highest sequence number the secondary acknowledged as durable.
    pub remote_acked: u64,
    /// Completed writes that had to wait for the secondary.
    pub waits: u64,
    /// Writes failed because the acknowledgement was overdue (policy `Fail`).
    pub timeouts: u64,
    /// Times the group degraded to async (policy `Degrade`).
    pub degrades: u64,
    /// Times a degraded group returned to sync.
    pub recoveries: u64,
}

const MODE_ASYNC: u8 = 0;
const MODE_SYNC: u8 = 1;

/// The shared sync state of one journal.
#[derive(Debug)]
pub(crate) struct SyncCtl {
    mode: AtomicU8,
    degrade: AtomicBool,
    timeout_ns: AtomicU64,
    remote_acked: AtomicU64,
    degraded: AtomicBool,
    /// Degraded: the acknowledgement that ends the catch-up (re-armed while lag stays large).
    catchup_to: AtomicU64,
    waits: AtomicU64,
    timeouts: AtomicU64,
    degrades: AtomicU64,
    recoveries: AtomicU64,
}

impl SyncCtl {
    /// Async, with `acked` (the persisted trim point) acknowledged.
    pub(crate) fn new(acked: u64) -> SyncCtl {
        SyncCtl {
            mode: AtomicU8::new(MODE_ASYNC),
            degrade: AtomicBool::new(false),
            timeout_ns: AtomicU64::new(DEFAULT_SYNC_TIMEOUT.as_nanos() as u64),
            remote_acked: AtomicU64::new(acked),
            degraded: AtomicBool::new(false),
            catchup_to: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            degrades: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
    }

    pub(crate) fn set(&self, p: SyncPolicy, reserved: u64) {
        self.timeout_ns
            .store(p.timeout.as_nanos() as u64, Ordering::Relaxed);
        self.degrade
            .store(p.link_policy == LinkPolicy::Degrade, Ordering::Relaxed);
        let lag = reserved.saturating_sub(self.remote_acked.load(Ordering::Acquire));
        if p.mode == Mode::Sync && lag > CATCHUP_SLACK {
            // Catch up first: the records already queued are not the link's fault.
            self.catchup_to.store(reserved, Ordering::Relaxed);
            self.degraded.store(true, Ordering::Release);
        } else {
            self.degraded.store(false, Ordering::Release);
        }
        let m = if p.mode == Mode::Sync {
            MODE_SYNC
        } else {
            MODE_ASYNC
        };
        self.mode.store(m, Ordering::Release);
    }

    pub(crate) fn policy(&self) -> SyncPolicy {
        SyncPolicy {
            mode: if self.mode.load(Ordering::Acquire) == MODE_SYNC {
                Mode::Sync
            } else {
                Mode::Async
            },
            link_policy: if self.degrade.load(Ordering::Relaxed) {
                LinkPolicy::Degrade
            } else {
                LinkPolicy::Fail
            },
            timeout: Duration::from_nanos(self.timeout_ns.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn state(&self) -> SyncState {
        if self.mode.load(Ordering::Acquire) != MODE_SYNC {
            SyncState::Async
        } else if self.degraded.load(Ordering::Acquire) {
            SyncState::Degraded
        } else {
            SyncState::Sync
        }
    }

    /// Whether the completed write of record `seq` must still wait for the secondary.
    pub(crate) fn must_wait(&self, seq: u64) -> bool {
        self.state() == SyncState::Sync && self.remote_acked.load(Ordering::Acquire) < seq
    }

    pub(crate) fn note_wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_ns.load(Ordering::Relaxed))
    }

    /// The secondary holds every record up to `seq`. Returns true when this ends a degraded
    /// period.
    pub(crate) fn ack(&self, seq: u64, reserved: u64) -> bool {
        let acked = self.remote_acked.fetch_max(seq, Ordering::AcqRel).max(seq);
        if !self.degraded.load(Ordering::Acquire) || acked < self.catchup_to.load(Ordering::Acquire)
        {
            return false;
        }
        if reserved.saturating_sub(acked) > CATCHUP_SLACK {
            // Writes kept coming while catching up: chase the new end.
            self.catchup_to.store(reserved, Ordering::Release);
            return false;
        }
        if self.degraded.swap(false, Ordering::AcqRel) {
            self.recoveries.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The acknowledgement of `seq` is overdue: by policy, an error for the write or a switch
    /// to degraded (`Ok`: complete it). Returns also whether this call degraded the group.
    pub(crate) fn overdue(&self, reserved: u64) -> (Result<(), BdevError>, bool) {
        if self.state() != SyncState::Sync {
            return (Ok(()), false);
        }
        if self.degrade.load(Ordering::Relaxed) {
            self.catchup_to.store(reserved, Ordering::Release);
            let first = !self.degraded.swap(true, Ordering::AcqRel);
            if first {
                self.degrades.fetch_add(1, Ordering::Relaxed);
            }
            return (Ok(()), first);
        }
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        (
            Err(BdevError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "sync replication: the secondary did not acknowledge the write in time",
            ))),
            false,
        )
    }

    pub(crate) fn stats(&self) -> SyncStats {
        SyncStats {
            remote_acked: self.remote_acked.load(Ordering::Acquire),
            waits: self.waits.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            degrades: self.degrades.load(Ordering::Relaxed),
            recoveries: self.recoveries.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(policy: LinkPolicy) -> SyncPolicy {
        SyncPolicy {
            mode: Mode::Sync,
            link_policy: policy,
            timeout: Duration::from_millis(10),
        }
    }

    #[test]
    fn fail_policy_fails_overdue_writes_and_stays_sync() {
        let s = SyncCtl::new(0);
        s.set(sync(LinkPolicy::Fail), 0);
        assert!(s.must_wait(1));
        let (r, degraded) = s.overdue(1);
        assert!(r.is_err() && !degraded);
        assert_eq!(s.state(), SyncState::Sync);
        s.ack(1, 1);
        assert!(!s.must_wait(1) && s.must_wait(2));
        assert_eq!(s.stats().timeouts, 1);
    }

    #[test]
    fn degrade_policy_degrades_once_and_recovers_after_catch_up() {
        let s = SyncCtl::new(0);
        s.set(sync(LinkPolicy::Degrade), 0);
        let (r, first) = s.overdue(5);
        assert!(r.is_ok() && first);
        assert!(!s.overdue(6).1, "one degrade event per outage");
        assert_eq!(s.state(), SyncState::Degraded);
        assert!(!s.must_wait(100), "degraded writes do not wait");
        // Acks reach the catch-up point while the writer ran far ahead: chase.
        assert!(!s.ack(6, 6 + CATCHUP_SLACK + 10));
        assert_eq!(s.state(), SyncState::Degraded);
        assert!(s.ack(6 + CATCHUP_SLACK + 10, 6 + CATCHUP_SLACK + 12));
        assert_eq!(s.state(), SyncState::Sync);
        assert_eq!((s.stats().degrades, s.stats().recoveries), (1, 1));
    }

    #[test]
    fn setting_sync_with_a_backlog_catches_up_first() {
        let s = SyncCtl::new(10);
        s.set(sync(LinkPolicy::Fail), 10 + CATCHUP_SLACK + 1);
        assert_eq!(s.state(), SyncState::Degraded);
        assert_eq!(s.stats().degrades, 0, "no alert for a backlog");
        assert!(s.ack(10 + CATCHUP_SLACK + 1, 10 + CATCHUP_SLACK + 1));
        assert_eq!(s.state(), SyncState::Sync);
        s.set(SyncPolicy::default(), 0);
        assert_eq!(s.state(), SyncState::Async);
        assert!(!s.must_wait(u64::MAX));
    }
}
