//! The limits in force, published to the reactors as an immutable snapshot: reactors read it
//! with one atomic load when its generation changes and never block the control plane.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::limits::{LimitUpdate, Limits, QosError};

/// One limited namespace or host.
#[derive(Debug)]
pub struct Entry {
    pub limits: Limits,
    /// Reactors that served this limit's I/O recently (bit `reactor % 64`): the limit is split
    /// evenly between them.
    pub(crate) active: AtomicU64,
    /// I/Os that had to wait for tokens (a reactor bumps it only when it queues one).
    pub(crate) delayed: AtomicU64,
}

impl Entry {
    fn new(limits: Limits, delayed: u64) -> Entry {
        Entry {
            limits,
            active: AtomicU64::new(0),
            delayed: AtomicU64::new(delayed),
        }
    }

    /// I/Os delayed by this limit since it was first set.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }

    /// Reactors sharing this limit now.
    pub fn active_reactors(&self) -> u32 {
        self.active.load(Ordering::Relaxed).count_ones()
    }
}

/// The limits by bdev name and by host NQN.
#[derive(Debug, Default, Clone)]
pub struct Table {
    pub bdevs: BTreeMap<String, Arc<Entry>>,
    pub hosts: BTreeMap<String, Arc<Entry>>,
}

impl Table {
    pub fn is_empty(&self) -> bool {
        self.bdevs.is_empty() && self.hosts.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    table: ArcSwap<Table>,
    writer: Mutex<()>,
    generation: AtomicU64,
}

enum Scope {
    Bdev,
    Host,
}

impl Registry {
    /// The current limits (lock-free).
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Changes whenever the table does; starts at 0 with no limits.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `update` to the limits of bdev `name`; returns the limits now in force (empty:
    /// the bdev is no longer limited).
    pub fn set_bdev(&self, name: &str, update: &LimitUpdate) -> Result<Limits, QosError> {
        self.set(Scope::Bdev, name, update)
    }

    /// Applies `update` to the limits of host `nqn` (all its I/O, on every subsystem).
    pub fn set_host(&self, nqn: &str, update: &LimitUpdate) -> Result<Limits, QosError> {
        self.set(Scope::Host, nqn, update)
    }

    /// Forgets the limits of a deleted bdev.
    pub fn remove_bdev(&self, name: &str) {
        let _guard = self.lock();
        if self.table.load().bdevs.contains_key(name) {
            let mut next = Table::clone(&self.table.load());
            next.bdevs.remove(name);
            self.publish(next);
        }
    }

    fn set(&self, scope: Scope, key: &str, update: &LimitUpdate) -> Result<Limits, QosError> {
        if update.is_empty() {
            return Err(QosError::Nothing);
        }
        let _guard = self.lock();
        let mut next = Table::clone(&self.table.load());
        let map = match scope {
            Scope::Bdev => &mut next.bdevs,
            Scope::Host => &mut next.hosts,
        };
        let (old, delayed) = map
            .get(key)
            .map_or((Limits::default(), 0), |e| (e.limits, e.delayed()));
        let limits = old.apply(update);
        if limits.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.to_string(), Arc::new(Entry::new(limits, delayed)));
        }
        self.publish(next);
        Ok(limits)
    }

    fn publish(&self, next: Table) {
        self.table.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LimitKind;

    #[test]
    fn set_change_and_remove() {
        let r = Registry::default();
        assert_eq!(r.generation(), 0);
        let mut u = LimitUpdate::default();
        u.set(LimitKind::RwIos, Some(5000)).expect("must succeed");
        r.set_bdev("ram0", &u).expect("must succeed");
        r.set_host("nqn.h", &u).expect("must succeed");
        assert_eq!(r.generation(), 2);
        assert_eq!(
            r.table().bdevs["ram0"].limits.get(LimitKind::RwIos),
            Some(5000)
        );
        let mut clear = LimitUpdate::default();
        clear.set(LimitKind::RwIos, None).expect("must succeed");
        assert!(r.set_bdev("ram0", &clear).expect("must succeed").is_empty());
        assert!(r.table().bdevs.is_empty());
        assert!(!r.table().is_empty());
        assert_eq!(
            r.set_host("nqn.h", &LimitUpdate::default()),
            Err(QosError::Nothing)
        );
    }
}
