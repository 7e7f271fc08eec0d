//! The `error` backend: a pass-through device over a base device that fails, holds or corrupts
//! the next N requests of a kind, as told at run time (SPDK's `bdev_error_create` /
//! `bdev_error_inject_error`). For fault tests: every layer above must turn what it injects
//! into the right status, event or state.
//!
//! Injections are lock-free (per kind: an error type and a remaining count in atomics) and
//! shared by every channel of the device, so "fail the next 3 writes" means the next 3 writes
//! on any reactor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::io::Geometry;
use crate::wrap::{stacked_block_device, Stacked};
use crate::{BdevError, BdevIo, BlockDevice, ChannelStats, IoChannel, IoKind};

/// Which requests an injection applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoClass {
    Read,
    Write,
    Flush,
    Unmap,
    WriteZeroes,
    Copy,
}

impl IoClass {
    pub const ALL: [IoClass; 6] = [
        IoClass::Read,
        IoClass::Write,
        IoClass::Flush,
        IoClass::Unmap,
        IoClass::WriteZeroes,
        IoClass::Copy,
    ];

    pub fn of(kind: &IoKind) -> IoClass {
        match kind {
            IoKind::Read { .. } => IoClass::Read,
            IoKind::Write { .. } => IoClass::Write,
            IoKind::Flush => IoClass::Flush,
            IoKind::Unmap { .. } => IoClass::Unmap,
            IoKind::WriteZeroes { .. } => IoClass::WriteZeroes,
            IoKind::Copy { .. } => IoClass::Copy,
        }
    }

    /// The name used in RPC (`io_type`), as `IoKind::name`.
    pub fn as_str(self) -> &'static str {
        match self {
            IoClass::Read => "read",
            IoClass::Write => "write",
            IoClass::Flush => "flush",
            IoClass::Unmap => "unmap",
            IoClass::WriteZeroes => "write_zeroes",
            IoClass::Copy => "copy",
        }
    }
}

/// What happens to a request an injection catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Completes with an I/O error (EIO), the base never sees it.
    Failure,
    /// Completes with ENOMEM (retryable), the base never sees it.
    NoMemory,
    /// Never completes while the injection stands (a hung device); `clear` sends the held
    /// requests on to the base.
    Pending,
    /// Served by the base, but the data is corrupted: a write's buffer before it goes down, a
    /// read's data when it comes back (byte `offset` of the transfer XOR `value`).
    CorruptData { offset: u32, value: u8 },
}

impl ErrorType {
    /// The names used in RPC (`error_type`); `CorruptData` takes its offset and value from
    /// separate parameters.
    pub const NAMES: [&'static str; 4] = ["failure", "nomem", "pending", "corrupt_data"];
}

const NONE: u8 = 0;
const FAILURE: u8 = 1;
const NOMEM: u8 = 2;
const PENDING: u8 = 3;
const CORRUPT: u8 = 4;

/// One kind's injection: the error type and how many requests it still catches.
#[derive(Debug, Default)]
struct Slot {
    kind: AtomicU8,
    remaining: AtomicU64,
    corrupt: AtomicU64,
}

/// The injections of one device, shared by its channels.
#[derive(Debug, Default)]
pub(crate) struct Injector {
    slots: [Slot; 6],
    /// Bumped by `clear` so channels release the requests they hold.
    released: AtomicU64,
    injected: AtomicU64,
}

impl Injector {
    fn slot(&self, class: IoClass) -> &Slot {
        &self.slots[class as usize]
    }

    /// Takes one injection for a request of `class`, if one stands.
    fn take(&self, class: IoClass) -> Option<ErrorType> {
        let s = self.slot(class);
        let kind = s.kind.load(Ordering::Acquire);
        if kind == NONE {
            return None;
        }
        s.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()?;
        self.injected.fetch_add(1, Ordering::Relaxed);
        let c = s.corrupt.load(Ordering::Relaxed);
        Some(match kind {
            FAILURE => ErrorType::Failure,
            NOMEM => ErrorType::NoMemory,
            PENDING => ErrorType::Pending,
            _ => ErrorType::CorruptData {
                offset: (c >> 8) as u32,
                value: c as u8,
            },
        })
    }
}

/// A device that injects errors into the requests to its base.
#[derive(Debug)]
pub struct ErrorBdev {
    stacked: Stacked,
    inj: Arc<Injector>,
}

impl ErrorBdev {
    /// A pass-through device named `name` over `base` (no injection until `inject`).
    pub fn new(name: &str, base: Arc<dyn BlockDevice>) -> Result<Self, BdevError> {
        Ok(Self {
            stacked: Stacked::new(name, base)?,
            inj: Arc::default(),
        })
    }

    /// The SPDK name of the error device over `base`: `EE_<base>`.
    pub fn default_name(base: &str) -> String {
        format!("EE_{base}")
    }

    pub fn base(&self) -> &Arc<dyn BlockDevice> {
        &self.stacked.base
    }

    /// The next `count` requests of each class in `classes` get `error` (replacing what stood
    /// for those classes).
    pub fn inject(&self, classes: &[IoClass], error: ErrorType, count: u64) {
        for &class in classes {
            let s = self.inj.slot(class);
            let (kind, corrupt) = match error {
                ErrorType::Failure => (FAILURE, 0),
                ErrorType::NoMemory => (NOMEM, 0),
                ErrorType::Pending => (PENDING, 0),
                ErrorType::CorruptData { offset, value } => {
                    (CORRUPT, (u64::from(offset) << 8) | u64::from(value))
                }
            };
            s.kind.store(NONE, Ordering::Release);
            s.corrupt.store(corrupt, Ordering::Relaxed);
            s.remaining.store(count, Ordering::Release);
            s.kind.store(kind, Ordering::Release);
        }
        log::info!(
            "bdev {}: next {count} {:?} request(s) get {error:?}",
            self.stacked.name,
            classes.iter().map(|c| c.as_str()).collect::<Vec<_>>()
        );
    }

    /// Removes the injections for `classes`; requests held by `Pending` go on to the base.
    pub fn clear(&self, classes: &[IoClass]) {
        for &class in classes {
            let s = self.inj.slot(class);
            s.kind.store(NONE, Ordering::Release);
            s.remaining.store(0, Ordering::Release);
        }
        self.inj.released.fetch_add(1, Ordering::AcqRel);
    }

    /// Requests caught by an injection so far.
    pub fn injected(&self) -> u64 {
        self.inj.injected.load(Ordering::Relaxed)
    }
}

stacked_block_device!(
    ErrorBdev,
    |dev, buffers| {
        let base = &dev.stacked.base;
        let caps = base.capabilities();
        Ok(Box::new(ErrorChannel {
            base: base.open_channel(buffers)?,
            geometry: Geometry::new(
                base.block_size(),
                base.num_blocks(),
                caps.max_transfer_bytes,
            )?,
            inj: Arc::clone(&dev.inj),
            done: VecDeque::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            held: VecDeque::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            corrupt_reads: Vec::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            released: dev.inj.released.load(Ordering::Acquire),
            stats: ChannelStats::default(),
        }))
    },
    |c| crate::wrap::same(c)
);

struct ErrorChannel {
    base: Box<dyn IoChannel>,
    geometry: Geometry,
    inj: Arc<Injector>,
    /// Requests failed by an injection, handed back by the next `poll`.
    done: VecDeque<(BdevIo, Result<(), BdevError>)>,
    /// Requests held by a `Pending` injection.
    held: VecDeque<BdevIo>,
    /// Tags of reads whose data is corrupted on completion: (tag, offset, value).
    corrupt_reads: Vec<(u64, u32, u8)>,
    released: u64,
    stats: ChannelStats,
}

fn corrupt(buf: &mut [u8], offset: u32, value: u8) {
    if let Some(b) = buf.get_mut(offset as usize) {
        *b ^= value.max(1);
    }
}

impl ErrorChannel {
    fn local(&self) -> usize {
        self.done.len() + self.held.len()
    }

    /// Sends held requests on once their injection was cleared.
    fn release_held(&mut self) {
        let released = self.inj.released.load(Ordering::Acquire);
        if released == self.released {
            return;
        }
        while let Some(io) = self.held.pop_front() {
            if let Err((io, e)) = self.base.submit(io) {
                if matches!(e, BdevError::QueueFull) {
                    self.held.push_front(io);
                    return;
                }
                self.done.push_back((io, Err(e)));
            }
        }
        self.released = released;
    }
}

impl IoChannel for ErrorChannel {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        let class = IoClass::of(&io.kind);
        // Invalid requests are refused as the base would, never counted as injected.
        let injection = match self.geometry.check(&io) {
            Ok(_) => self.inj.take(class),
            Err(_) => None,
        };
        let Some(error) = injection else {
            return self.base.submit(io);
        };
        if self.local() >= crate::DEFAULT_QUEUE_DEPTH {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        }
        self.stats.submitted += 1;
        match error {
            ErrorType::Failure => self
                .done
                .push_back((io, Err(BdevError::from_errno(libc::EIO)))),
            ErrorType::NoMemory => self
                .done
                .push_back((io, Err(BdevError::from_errno(libc::ENOMEM)))),
            ErrorType::Pending => self.held.push_back(io),
            ErrorType::CorruptData { offset, value } => {
                match class {
                    IoClass::Write => {
                        if let Some(b) = io.buf.as_mut() {
                            corrupt(b.as_mut_slice(), offset, value);
                        }
                    }
                    IoClass::Read => self.corrupt_reads.push((io.tag, offset, value)),
                    _ => {}
                }
                return self.base.submit(io);
            }
        }
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        self.release_held();
        let n = crate::wrap::hand_back(&mut self.done, &mut self.stats, max, done);
        let corrupt_reads = &mut self.corrupt_reads;
        n + self.base.poll(max - n, &mut |mut io, r| {
            if let Some(i) = corrupt_reads.iter().position(|c| c.0 == io.tag) {
                let (_, offset, value) = corrupt_reads.swap_remove(i);
                if let (Ok(()), Some(b)) = (&r, io.buf.as_mut()) {
                    corrupt(b.as_mut_slice(), offset, value);
                }
            }
            done(io, r)
        })
    }

    fn in_flight(&self) -> usize {
        self.base.in_flight() + self.local()
    }

    // No wakeup fd: injected completions wait on nothing, so `in_flight() > 0` keeps the
    // reactor polling (a fault-test device is not run in interrupt mode).

    fn stats(&self) -> ChannelStats {
        let b = self.base.stats();
        ChannelStats {
            submitted: b.submitted + self.stats.submitted,
            completed: b.completed + self.stats.completed,
            failed: b.failed + self.stats.failed,
            queue_full: b.queue_full + self.stats.queue_full,
            ..b
        }
    }
}

impl Drop for ErrorChannel {
    fn drop(&mut self) {
        if !self.held.is_empty() {
            log::warn!(
                "error bdev channel closed with {} request(s) held by a pending injection",
                self.held.len()
            );
        }
    }
}

#[cfg(test)]
mod tests;
