//! A machine-wide limit on concurrent guests: slot files locked with `flock`.
//!
//! cargo-nextest runs every test in its own process, so an in-process semaphore would not
//! stop two cores from emulating four vCPUs plus a busy target. The locks die with their
//! process, so a crashed test never leaks a slot.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use super::{Error, Result};

/// A held slot; dropping it (or the process ending) frees it.
#[derive(Debug)]
pub struct SlotGuard {
    _file: File,
    index: usize,
}

impl SlotGuard {
    /// Which slot this is (0-based).
    pub fn index(&self) -> usize {
        self.index
    }
}

/// `max` slots as lock files in `dir`.
#[derive(Debug, Clone)]
pub struct Slots {
    dir: PathBuf,
    max: usize,
}

impl Slots {
    /// Slots in `dir` (created if missing), at least one.
    pub fn new(dir: &Path, max: usize) -> Slots {
        Slots {
            dir: dir.to_path_buf(),
            max: max.max(1),
        }
    }

    /// The machine-wide default: `$FERRITE_E2E_MAX_VMS`, else one per two cores.
    pub fn machine_default() -> Slots {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let max = std::env::var(super::env::MAX_VMS)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cores / 2);
        Slots::new(&std::env::temp_dir().join("ferrite-e2e-vm-slots"), max)
    }

    /// Takes a free slot, waiting as long as it takes.
    pub fn acquire(&self) -> Result<SlotGuard> {
        let started = Instant::now();
        let mut told = false;
        loop {
            if let Some(guard) = self.try_acquire()? {
                return Ok(guard);
            }
            if !told && started.elapsed() > Duration::from_secs(2) {
                log::info!(
                    "waiting for one of {} VM slots in {}",
                    self.max,
                    self.dir.display()
                );
                told = true;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Takes a free slot if there is one.
    pub fn try_acquire(&self) -> Result<Option<SlotGuard>> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("create {}", self.dir.display()), e))?;
        for index in 0..self.max {
            let path = self.dir.join(format!("slot-{index}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(SlotGuard { _file: file, index })),
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => {
                    return Err(Error::io(format!("lock {}", path.display()), e.into()));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_limit_concurrency_and_free_on_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let slots = Slots::new(dir.path(), 2);
        let a = slots.try_acquire().expect("lock").expect("first slot");
        let b = slots.try_acquire().expect("lock").expect("second slot");
        assert_ne!(a.index(), b.index());
        assert!(slots.try_acquire().expect("lock").is_none(), "a third slot");

        let waiter = {
            let slots = slots.clone();
            thread::spawn(move || slots.acquire().expect("eventually").index())
        };
        thread::sleep(Duration::from_millis(150));
        assert!(!waiter.is_finished(), "a slot beyond the limit must wait");
        let freed = b.index();
        drop(b);
        assert_eq!(waiter.join().expect("waiter"), freed);
        drop(a);
        assert!(slots.try_acquire().expect("lock").is_some());
    }
}
