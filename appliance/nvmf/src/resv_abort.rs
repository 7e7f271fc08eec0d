//! Preempt and Abort: the commands a preempted host had outstanding on the namespace when it
//! was preempted complete with Command Aborted due to Preempt and Abort.
//!
//! Each I/O command notes the namespace's abort epoch when it passes the reservation check;
//! a Preempt and Abort bumps the epoch and records it against every host it preempted. When
//! the command completes, an epoch that moved means a preemption happened meanwhile, and the
//! command is aborted if its host was one of the preempted. The backend operation itself is not
//! cancelled (a Write may already be on the medium, which an aborted Write allows); what the
//! host is told is that the command did not complete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::resv::HostId;

/// The abort epochs of one namespace.
#[derive(Debug, Default)]
pub struct PreemptAborts {
    epoch: AtomicU64,
    /// The latest epoch each preempted host was aborted at: one entry per host ever preempted
    /// with abort (a registrant set, so small).
    hosts: Mutex<Vec<(HostId, u64)>>,
}

impl PreemptAborts {
    /// The epoch a command starting now is under (one atomic load on the I/O path).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A Preempt and Abort preempted `hosts`: their commands started before now are aborted.
    pub fn record(&self, hosts: impl IntoIterator<Item = HostId>) {
        let mut list = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.load(Ordering::Relaxed) + 1;
        for host in hosts {
            match list.iter_mut().find(|(h, _)| *h == host) {
                Some(entry) => entry.1 = epoch,
                None => list.push((host, epoch)),
            }
        }
        // Published after the list: a completion that sees the new epoch finds its host in it.
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Whether a command of `host` that started under epoch `since` was aborted.
    pub fn aborted(&self, host: &HostId, since: u64) -> bool {
        if self.epoch() == since {
            return false;
        }
        let list = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().any(|(h, e)| h == host && *e > since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commands_of_preempted_hosts_started_before_are_aborted() {
        let (a, b) = ([0xA; 16], [0xB; 16]);
        let aborts = PreemptAborts::default();
        let before = aborts.epoch();
        assert!(!aborts.aborted(&a, before), "nothing preempted yet");
        aborts.record([a]);
        assert!(aborts.aborted(&a, before), "A's older command");
        assert!(!aborts.aborted(&b, before), "B was not preempted");
        let after = aborts.epoch();
        assert!(
            !aborts.aborted(&a, after),
            "A's commands after the preemption"
        );
        aborts.record([b]);
        assert!(!aborts.aborted(&a, after), "a later preemption of B only");
        assert!(aborts.aborted(&b, after));
        assert!(
            aborts.aborted(&a, before),
            "A stays aborted for its older command"
        );
    }
}
