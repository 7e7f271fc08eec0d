//! Per-namespace I/O counters for `stats_get`: each reactor counts into its own cache-line-
//! aligned slot with relaxed atomics (one writer per slot, so no contention and no lock on the
//! I/O path); readers sum the slots. Latency goes into quarter-octave buckets of nanoseconds
//! that the control plane turns into a histogram summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Reactor slots per namespace; reactor `i` uses slot `i % REACTOR_SLOTS` (sharing a slot
/// beyond that stays correct, the atomics just get a second writer).
pub const REACTOR_SLOTS: usize = 16;
/// Sub-buckets per power of two.
const SUB: usize = 4;
/// Octaves covered: 1 ns to 2^40 ns (~18 minutes).
const OCTAVES: usize = 40;
pub const LATENCY_BUCKETS: usize = OCTAVES * SUB;

#[derive(Debug)]
#[repr(align(64))]
struct Slot {
    read_ops: AtomicU64,
    write_ops: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    completed: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            read_ops: AtomicU64::new(0),
            write_ops: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Counters of one namespace, shared by every reactor serving it.
#[derive(Debug)]
pub struct NamespaceStats {
    slots: Box<[Slot]>,
}

impl Default for NamespaceStats {
    fn default() -> Self {
        NamespaceStats {
            slots: (0..REACTOR_SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

/// A snapshot of one reactor slot (or of their sum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceCounters {
    pub read_ops: u64,
    pub write_ops: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Commands submitted and not yet completed (the queue depth at this instant).
    pub in_flight: u64,
    /// Completions per latency bucket; see [`bucket_bounds_ns`].
    pub latency: Vec<u64>,
}

impl NamespaceCounters {
    pub fn add(&mut self, o: &NamespaceCounters) {
        self.read_ops += o.read_ops;
        self.write_ops += o.write_ops;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.in_flight += o.in_flight;
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
    }
}

/// The bucket of a latency.
fn bucket(ns: u64) -> usize {
    if ns < 2 {
        return 0;
    }
    let octave = 63 - ns.leading_zeros() as usize;
    // The same step as `bucket_bounds_ns`: a quarter of the octave, at least 1 ns (the two
    // bits below the leading one for octaves >= 2).
    let base = 1u64 << octave;
    let step = (base / SUB as u64).max(1);
    let quarter = ((ns - base) / step) as usize;
    (octave * SUB + quarter).min(LATENCY_BUCKETS - 1)
}

/// Lower and upper bound (exclusive) of bucket `i` in nanoseconds.
pub fn bucket_bounds_ns(i: usize) -> (u64, u64) {
    let octave = (i / SUB) as u32;
    let quarter = (i % SUB) as u64;
    let base = 1u64 << octave;
    let step = (base / SUB as u64).max(1);
    let lo = base + quarter * step;
    (lo, lo + step)
}

/// Adds to a counter. A reactor that owns its slot alone (index < REACTOR_SLOTS) uses a plain
/// load and store: a locked read-modify-write per I/O stalls the pipeline for nothing. Shared
/// slots fall back to `fetch_add`.
fn bump(counter: &AtomicU64, value: u64, reactor: usize) {
    if reactor < REACTOR_SLOTS {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(value),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

impl NamespaceStats {
    fn slot(&self, reactor: usize) -> &Slot {
        &self.slots[reactor % REACTOR_SLOTS]
    }

    /// A Read or Write of `bytes` was accepted on `reactor`.
    pub fn submitted(&self, reactor: usize, write: bool, bytes: u64) {
        let s = self.slot(reactor);
        let (ops, b) = if write {
            (&s.write_ops, &s.bytes_written)
        } else {
            (&s.read_ops, &s.bytes_read)
        };
        bump(ops, 1, reactor);
        bump(b, bytes, reactor);
    }

    /// A command counted by [`NamespaceStats::submitted`] on `reactor` completed.
    pub fn completed(&self, reactor: usize, latency: Duration) {
        let s = self.slot(reactor);
        bump(&s.completed, 1, reactor);
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        bump(&s.latency[bucket(ns)], 1, reactor);
    }

    /// Per-slot snapshots (index = reactor slot).
    pub fn per_reactor(&self) -> Vec<NamespaceCounters> {
        self.slots
            .iter()
            .map(|s| {
                let read_ops = s.read_ops.load(Ordering::Relaxed);
                let write_ops = s.write_ops.load(Ordering::Relaxed);
                let completed = s.completed.load(Ordering::Relaxed);
                NamespaceCounters {
                    read_ops,
                    write_ops,
                    bytes_read: s.bytes_read.load(Ordering::Relaxed),
                    bytes_written: s.bytes_written.load(Ordering::Relaxed),
                    in_flight: (read_ops + write_ops).saturating_sub(completed),
                    latency: s
                        .latency
                        .iter()
                        .map(|b| b.load(Ordering::Relaxed))
                        .collect(),
                }
            })
            .collect()
    }

    pub fn total(&self) -> NamespaceCounters {
        let mut sum = NamespaceCounters {
            read_ops: 0,
            write_ops: 0,
            bytes_read: 0,
            bytes_written: 0,
            in_flight: 0,
            latency: vec![0; LATENCY_BUCKETS],
        };
        for s in self.per_reactor() {
            sum.add(&s);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_contain_their_values() {
        for ns in [
            1u64,
            2,
            3,
            5,
            7,
            100,
            1000,
            4095,
            4096,
            12_345,
            1_000_000,
            1 << 39,
        ] {
            let (lo, hi) = bucket_bounds_ns(bucket(ns));
            assert!(lo <= ns.max(1) && ns < hi, "{ns} in [{lo}, {hi})");
        }
        assert_eq!(bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn counts_sum_over_reactors() {
        let s = NamespaceStats::default();
        s.submitted(0, false, 4096);
        s.submitted(1, true, 512);
        s.submitted(1, true, 512);
        s.completed(0, Duration::from_micros(10));
        s.completed(1, Duration::from_micros(20));
        let t = s.total();
        assert_eq!((t.read_ops, t.write_ops), (1, 2));
        assert_eq!((t.bytes_read, t.bytes_written), (4096, 1024));
        assert_eq!(t.in_flight, 1);
        assert_eq!(t.latency.iter().sum::<u64>(), 2);
        assert_eq!(s.per_reactor()[1].write_ops, 2);
    }
}
