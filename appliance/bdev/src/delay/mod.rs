//! The `delay` backend: a pass-through device over a base device that adds latency to every
//! completion (SPDK's `bdev_delay_create` / `bdev_delay_update_latency`). Reads get the read
//! latency, every other request the write latency; one request in 100 of each gets the p99
//! latency instead of the average, so a host sees the configured average and tail.
//!
//! Latencies are atomics shared by the channels, changeable while I/O runs. A completion from
//! the base is held in the channel until its added latency has passed (measured from the poll
//! that reaped it), so the base keeps working at full depth meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wrap::{stacked_block_device, Stacked};
use crate::{BdevError, BdevIo, BlockDevice, ChannelStats, IoChannel, IoKind};

/// One of the four latencies (`latency_type` in RPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LatencyType {
    AvgRead,
    P99Read,
    AvgWrite,
    P99Write,
}

impl LatencyType {
    pub const ALL: [LatencyType; 4] = [
        LatencyType::AvgRead,
        LatencyType::P99Read,
        LatencyType::AvgWrite,
        LatencyType::P99Write,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LatencyType::AvgRead => "avg_read",
            LatencyType::P99Read => "p99_read",
            LatencyType::AvgWrite => "avg_write",
            LatencyType::P99Write => "p99_write",
        }
    }
}

impl std::str::FromStr for LatencyType {
    type Err = BdevError;

    fn from_str(s: &str) -> Result<Self, BdevError> {
        LatencyType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                BdevError::InvalidConfig(format!(
                    "unknown latency type {s:?} (avg_read, p99_read, avg_write, p99_write)"
                ))
            })
    }
}

/// The four latencies in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latencies {
    pub avg_read_us: u64,
    pub p99_read_us: u64,
    pub avg_write_us: u64,
    pub p99_write_us: u64,
}

/// Longest latency accepted (an hour: longer is a hung device, use the `error` backend).
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

impl Latencies {
    fn check(us: u64, what: &str) -> Result<(), BdevError> {
        if us > MAX_LATENCY_US {
            return Err(BdevError::InvalidConfig(format!(
                "{what} latency {us} us exceeds {MAX_LATENCY_US} us"
            )));
        }
        Ok(())
    }

    /// Each at most `MAX_LATENCY_US`, and each p99 at least its average (SPDK refuses the
    /// same).
    pub fn validate(&self) -> Result<(), BdevError> {
        for t in LatencyType::ALL {
            Self::check(self.get(t), t.as_str())?;
        }
        if self.p99_read_us < self.avg_read_us || self.p99_write_us < self.avg_write_us {
            return Err(BdevError::InvalidConfig(format!(
                "p99 latency below the average: {self:?}"
            )));
        }
        Ok(())
    }

    pub fn get(&self, t: LatencyType) -> u64 {
        match t {
            LatencyType::AvgRead => self.avg_read_us,
            LatencyType::P99Read => self.p99_read_us,
            LatencyType::AvgWrite => self.avg_write_us,
            LatencyType::P99Write => self.p99_write_us,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    us: [AtomicU64; 4],
}

/// A device that delays the completions of its base.
#[derive(Debug)]
pub struct DelayBdev {
    stacked: Stacked,
    shared: Arc<Shared>,
}

impl DelayBdev {
    pub fn new(
        name: &str,
        base: Arc<dyn BlockDevice>,
        latencies: Latencies,
    ) -> Result<Self, BdevError> {
        // Only the bound: a p99 below its average is refused by `bdev_delay_create`
        // (`Latencies::validate`) but reachable through `update`, so a saved configuration
        // holding one must still open.
        for t in LatencyType::ALL {
            Latencies::check(latencies.get(t), t.as_str())?;
        }
        let dev = Self {
            stacked: Stacked::new(name, base)?,
            shared: Arc::default(),
        };
        for t in LatencyType::ALL {
            dev.shared.us[t as usize].store(latencies.get(t), Ordering::Relaxed);
        }
        Ok(dev)
    }

    pub fn base(&self) -> &Arc<dyn BlockDevice> {
        &self.stacked.base
    }

    pub fn latencies(&self) -> Latencies {
        let g = |t: LatencyType| self.shared.us[t as usize].load(Ordering::Relaxed);
        Latencies {
            avg_read_us: g(LatencyType::AvgRead),
            p99_read_us: g(LatencyType::P99Read),
            avg_write_us: g(LatencyType::AvgWrite),
            p99_write_us: g(LatencyType::P99Write),
        }
    }

    /// Changes one latency; applies to completions reaped from now on. Refused above
    /// `MAX_LATENCY_US`. Unlike creation, a p99 below its average is accepted (one value
    /// changes at a time, as with SPDK).
    pub fn update(&self, t: LatencyType, us: u64) -> Result<(), BdevError> {
        Latencies::check(us, t.as_str())?;
        self.shared.us[t as usize].store(us, Ordering::Relaxed);
        log::info!("bdev {}: {} latency {us} us", self.stacked.name, t.as_str());
        Ok(())
    }
}

stacked_block_device!(
    DelayBdev,
    |dev, buffers| {
        Ok(Box::new(DelayChannel {
            base: dev.stacked.base.open_channel(buffers)?,
            shared: Arc::clone(&dev.shared),
            held: VecDeque::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            reaped: VecDeque::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            count: [0; 2],
            stats: ChannelStats::default(),
        }))
    },
    |c| crate::wrap::same(c)
);

/// In 100 requests of a kind, the one that gets the p99 latency.
const TAIL_EVERY: u64 = 100;

type Held = (Instant, BdevIo, Result<(), BdevError>);

struct DelayChannel {
    base: Box<dyn IoChannel>,
    shared: Arc<Shared>,
    /// Completions waiting for their latency, in due order per kind (reads and the rest are
    /// due in the order reaped within each kind, so a scan finds every due one).
    held: VecDeque<Held>,
    reaped: VecDeque<(BdevIo, Result<(), BdevError>)>,
    /// Requests reaped per kind (read, other) for the 1-in-100 tail.
    count: [u64; 2],
    stats: ChannelStats,
}

impl DelayChannel {
    fn latency(&mut self, kind: &IoKind) -> Duration {
        let (k, avg, p99) = if matches!(kind, IoKind::Read { .. }) {
            (0, LatencyType::AvgRead, LatencyType::P99Read)
        } else {
            (1, LatencyType::AvgWrite, LatencyType::P99Write)
        };
        self.count[k] += 1;
        let t = if self.count[k] % TAIL_EVERY == 0 {
            p99
        } else {
            avg
        };
        Duration::from_micros(self.shared.us[t as usize].load(Ordering::Relaxed))
    }
}

impl IoChannel for DelayChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        if self.base.in_flight() + self.held.len() >= crate::DEFAULT_QUEUE_DEPTH {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        }
        self.base.submit(io)
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        let reaped = &mut self.reaped;
        self.base
            .poll(usize::MAX, &mut |io, r| reaped.push_back((io, r)));
        let now = Instant::now();
        while let Some((io, r)) = self.reaped.pop_front() {
            let due = now + self.latency(&io.kind);
            self.held.push_back((due, io, r));
        }
        let mut n = 0;
        let mut i = 0;
        while n < max && i < self.held.len() {
            if self.held[i].0 <= now {
                let (_, io, r) = self.held.remove(i).expect("index in range");
                self.stats.completed += 1;
                self.stats.failed += u64::from(r.is_err());
                done(io, r);
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.base.in_flight() + self.held.len()
    }

    // No wakeup fd: held completions become due without any fd turning readable, so
    // `in_flight() > 0` keeps the reactor polling.

    fn stats(&self) -> ChannelStats {
        let b = self.base.stats();
        ChannelStats {
            queue_full: b.queue_full + self.stats.queue_full,
            ..b
        }
    }
}

#[cfg(test)]
mod tests;
