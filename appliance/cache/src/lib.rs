//! Cached volumes (seed 000, issue 14): a block device whose data lives on a *backing*
//! device (any [`BlockDevice`]: a remote namespace, a file, a pool volume) and is read
//! through, and written back from, a local *cache* device.
//!
//! - Reads hit the cache or fetch the whole line from the backing store and keep it.
//! - Writes: [`WritePolicy::WriteThrough`] completes once the backing store has the data;
//!   [`WritePolicy::WriteBack`] completes once the cache has it, and a [`Schedule`]
//!   (`immediate`, `interval:30s`, `window:02:00-04:00`) writes it back. Above the dirty
//!   limit writers wait for write-back (throttled, never failed).
//! - A write-back volume reports a volatile write cache, so hosts send Flush: a Flush (or a
//!   FUA write) makes the acknowledged data and the directory that says it is dirty durable
//!   on the cache device; with [`FlushTarget::Backing`] it also drains to the backing store.
//!   After a crash the dirty lines are found in the directory and written back.
//! - Eviction is a segmented LRU (lines used twice are protected from a scan).
//!
//! The cache device's layout is in `layout`, the directory in `table`, the engine thread
//! that serves requests in `engine`.
#![forbid(unsafe_code)]

mod engine;
mod layout;
mod lru;
pub mod policy;
mod sync_io;
mod table;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, Capabilities, ChannelStats, IoChannel, IoKind};

pub use policy::{Schedule, WritePolicy};

use engine::{Completions, Engine, Msg};

/// Where a Flush makes acknowledged writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushTarget {
    /// On the cache device (the dirty data survives a crash of this appliance and is
    /// written back after restart); the backing store gets it on the schedule.
    #[default]
    Local,
    /// On the backing store: a Flush drains every dirty line first.
    Backing,
}

impl std::str::FromStr for FlushTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(FlushTarget::Local),
            "backing" => Ok(FlushTarget::Backing),
            _ => Err(format!("flush target {s:?}: expected local or backing")),
        }
    }
}

impl FlushTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushTarget::Local => "local",
            FlushTarget::Backing => "backing",
        }
    }
}

/// How a cached volume behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    pub policy: WritePolicy,
    /// Bytes per cache line: a multiple of the block size, at most 64 blocks.
    pub line_size: u32,
    /// Dirty data allowed, in percent of the cache's capacity (1 to 90); writers above it
    /// wait for write-back.
    pub dirty_limit_percent: u8,
    pub flush: FlushTarget,
    /// Discard a cache device that holds the cache of another volume (its dirty data is
    /// lost). Without it such a device is refused.
    pub format: bool,
}

impl CacheOptions {
    /// Options from their configuration and RPC text forms; absent ones take the defaults.
    pub fn from_text(
        write_policy: Option<&str>,
        line_size: Option<u32>,
        dirty_limit_percent: Option<u8>,
        flush: Option<&str>,
        format: bool,
    ) -> Result<CacheOptions, String> {
        let d = CacheOptions::default();
        Ok(CacheOptions {
            policy: write_policy
                .map(str::parse::<WritePolicy>)
                .transpose()?
                .unwrap_or(d.policy),
            line_size: line_size.unwrap_or(d.line_size),
            dirty_limit_percent: dirty_limit_percent.unwrap_or(d.dirty_limit_percent),
            flush: flush
                .map(str::parse::<FlushTarget>)
                .transpose()?
                .unwrap_or(d.flush),
            format,
        })
    }
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            policy: WritePolicy::WriteBack(Schedule::Immediate),
            line_size: 4096,
            dirty_limit_percent: 50,
            flush: FlushTarget::Local,
            format: false,
        }
    }
}

/// Counters and gauges the engine publishes.
#[derive(Debug, Default)]
pub(crate) struct StatCells {
    read_hits: AtomicU64,
    read_misses: AtomicU64,
    dirty_blocks: AtomicU64,
    cached_lines: AtomicU64,
    lag_ms: AtomicU64,
    written_back_bytes: AtomicU64,
    written_through_bytes: AtomicU64,
    evictions: AtomicU64,
    throttled: AtomicU64,
    throttled_us: AtomicU64,
    write_back_errors: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    stats: StatCells,
}

/// A snapshot of a cached volume's statistics (`bdev_cache_get`, `stats_get`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheStats {
    /// Read requests served entirely from the cache.
    pub read_hits: u64,
    /// Read requests that fetched at least one line from the backing store.
    pub read_misses: u64,
    /// `read_hits / (read_hits + read_misses)`, 0 before any read.
    pub hit_rate: f64,
    /// Data written by hosts and not yet on the backing store.
    pub dirty_bytes: u64,
    /// Lines held.
    pub cached_lines: u64,
    /// Capacity in lines.
    pub capacity_lines: u64,
    /// Age of the oldest dirty data (how far the backing store lags), milliseconds.
    pub write_back_lag_ms: u64,
    pub written_back_bytes: u64,
    pub written_through_bytes: u64,
    pub evictions: u64,
    /// Writes delayed by the dirty limit, and the total delay.
    pub throttled_writes: u64,
    pub throttled_us: u64,
    pub write_back_errors: u64,
}

/// A cached volume.
#[derive(Debug)]
pub struct CacheBdev {
    name: String,
    backing: Arc<dyn BlockDevice>,
    cache: Arc<dyn BlockDevice>,
    opts: CacheOptions,
    slots: u64,
    tx: Mutex<Sender<Msg>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Io(io, _) => write!(f, "Io({:?})", io.kind),
            Msg::Drain(_) => f.write_str("Drain"),
            Msg::Stop => f.write_str("Stop"),
        }
    }
}

/// Requests a channel holds before `QueueFull`.
const CHANNEL_DEPTH: usize = 256;

impl CacheBdev {
    /// Opens a cached volume of `backing` through `cache`: formats a blank cache device, or
    /// recovers the dirty lines of one that served this volume before.
    pub fn open(
        name: &str,
        backing: Arc<dyn BlockDevice>,
        cache: Arc<dyn BlockDevice>,
        opts: CacheOptions,
    ) -> Result<CacheBdev, BdevError> {
        if name.is_empty() {
            return Err(BdevError::InvalidConfig("empty bdev name".into()));
        }
        if name == backing.name() || name == cache.name() || backing.name() == cache.name() {
            return Err(BdevError::InvalidConfig(format!(
                "cache {name}: the volume, its backing device and its cache device must be three different bdevs"
            )));
        }
        let bs = backing.block_size();
        if cache.block_size() != bs {
            return Err(BdevError::InvalidConfig(format!(
                "cache {name}: cache device {} has {}-byte blocks, backing device {} has {bs}",
                cache.name(),
                cache.block_size(),
                backing.name()
            )));
        }
        if opts.line_size == 0 || opts.line_size % bs != 0 || opts.line_size / bs > 64 {
            return Err(BdevError::InvalidConfig(format!(
                "cache {name}: line size {} is not a multiple of the block size {bs} of at most 64 blocks",
                opts.line_size
            )));
        }
        if !(1..=90).contains(&opts.dirty_limit_percent) {
            return Err(BdevError::InvalidConfig(format!(
                "cache {name}: dirty limit {}% is not between 1 and 90",
                opts.dirty_limit_percent
            )));
        }
        for (role, dev) in [("backing", &backing), ("cache", &cache)] {
            if dev.capabilities().read_only {
                return Err(BdevError::InvalidConfig(format!(
                    "cache {name}: {role} device {} is read-only",
                    dev.name()
                )));
            }
        }
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (n, b, c, s) = (
            name.to_owned(),
            Arc::clone(&backing),
            Arc::clone(&cache),
            Arc::clone(&shared),
        );
        let thread = std::thread::Builder::new()
            .name(format!("cache-{name}"))
            .spawn(move || match Engine::open(&n, &b, &c, opts, s) {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(engine.slots()));
                    engine.run(rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(BdevError::Io)?;
        let slots = match ready_rx.recv() {
            Ok(Ok(slots)) => slots,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(BdevError::InvalidConfig(format!(
                    "cache {name}: the cache engine stopped while opening"
                )));
            }
        };
        Ok(CacheBdev {
            name: name.to_owned(),
            backing,
            cache,
            opts,
            slots,
            tx: Mutex::new(tx),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn backing(&self) -> &Arc<dyn BlockDevice> {
        &self.backing
    }

    pub fn cache_device(&self) -> &Arc<dyn BlockDevice> {
        &self.cache
    }

    pub fn options(&self) -> CacheOptions {
        self.opts
    }

    fn sender(&self) -> Sender<Msg> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes every dirty line back now and waits for it (`bdev_cache_flush`).
    pub fn drain(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.sender()
            .send(Msg::Drain(tx))
            .map_err(|_| format!("cache {}: engine stopped", self.name))?;
        rx.recv()
            .map_err(|_| format!("cache {}: engine stopped", self.name))?
    }

    pub fn stats(&self) -> CacheStats {
        let s = &self.shared.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hits, misses) = (get(&s.read_hits), get(&s.read_misses));
        CacheStats {
            read_hits: hits,
            read_misses: misses,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            dirty_bytes: get(&s.dirty_blocks) * u64::from(self.block_size()),
            cached_lines: get(&s.cached_lines),
            capacity_lines: self.slots,
            write_back_lag_ms: get(&s.lag_ms),
            written_back_bytes: get(&s.written_back_bytes),
            written_through_bytes: get(&s.written_through_bytes),
            evictions: get(&s.evictions),
            throttled_writes: get(&s.throttled),
            throttled_us: get(&s.throttled_us),
            write_back_errors: get(&s.write_back_errors),
        }
    }
}

impl Drop for CacheBdev {
    fn drop(&mut self) {
        let _ = self.sender().send(Msg::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl BlockDevice for CacheBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn block_size(&self) -> u32 {
        self.backing.block_size()
    }

    fn num_blocks(&self) -> u64 {
        self.backing.num_blocks()
    }

    fn capabilities(&self) -> Capabilities {
        let b = self.backing.capabilities();
        Capabilities {
            write_zeroes: b.write_zeroes,
            unmap: b.unmap,
            volatile_write_cache: match self.opts.policy {
                WritePolicy::WriteThrough => b.volatile_write_cache,
                WritePolicy::WriteBack(_) => true,
            },
            max_transfer_bytes: b.max_transfer_bytes.min(1 << 20),
            copy: false,
            read_only: false,
            thin_provisioned: false,
        }
    }

    /// The backing device's identity with the variant bits flipped: the cached volume is
    /// the same data, but not the same device as the backing one if both are exported.
    fn uuid(&self) -> [u8; 16] {
        let mut u = self.backing.uuid();
        u[15] ^= 0xca;
        u
    }

    fn open_channel(
        &self,
        _buffers: &[&ferrite_bdev::PoolRegions],
    ) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(CacheChannel {
            tx: self.sender(),
            done: Arc::new(Mutex::new(VecDeque::new())),
            in_flight: 0,
            block_size: self.block_size(),
            num_blocks: self.num_blocks(),
            caps: self.capabilities(),
            stats: ChannelStats::default(),
        }))
    }
}

/// A reactor's channel: requests go to the engine thread, completions come back in `done`.
struct CacheChannel {
    tx: Sender<Msg>,
    done: Completions,
    in_flight: usize,
    block_size: u32,
    num_blocks: u64,
    caps: Capabilities,
    stats: ChannelStats,
}

impl CacheChannel {
    fn check(&self, io: &BdevIo) -> Result<(), BdevError> {
        match io.kind {
            IoKind::Copy { .. } => return Err(BdevError::Unsupported("copy")),
            IoKind::Unmap { .. } if !self.caps.unmap => {
                return Err(BdevError::Unsupported("unmap"))
            }
            IoKind::WriteZeroes { .. } if !self.caps.write_zeroes => {
                return Err(BdevError::Unsupported("write zeroes"))
            }
            _ => {}
        }
        let Some((lba, blocks)) = io.kind.range() else {
            return Ok(());
        };
        if blocks == 0 {
            return Err(BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks: self.num_blocks,
            });
        }
        if lba.checked_add(blocks).is_none_or(|e| e > self.num_blocks) {
            return Err(BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks: self.num_blocks,
            });
        }
        let bytes = blocks * u64::from(self.block_size);
        let available = match io.kind {
            IoKind::Read { .. } => io.buf.as_ref().map_or(0, |b| b.capacity()),
            IoKind::Write { .. } => io.buf.as_ref().map_or(0, |b| b.len()),
            _ => return Ok(()),
        };
        if bytes > u64::from(self.caps.max_transfer_bytes) {
            return Err(BdevError::TransferTooLarge {
                bytes,
                max: self.caps.max_transfer_bytes,
            });
        }
        if (available as u64) < bytes {
            return Err(BdevError::BufferTooSmall {
                needed: bytes as usize,
                available,
            });
        }
        Ok(())
    }
}

impl IoChannel for CacheChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        if self.in_flight >= CHANNEL_DEPTH {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        }
        if let Err(e) = self.check(&io) {
            self.stats.rejected += 1;
            return Err((io, e));
        }
        if let Err(mpsc::SendError(Msg::Io(io, _))) =
            self.tx.send(Msg::Io(io, Arc::clone(&self.done)))
        {
            return Err((io, BdevError::NotReady("cache engine stopped")));
        }
        self.in_flight += 1;
        self.stats.submitted += 1;
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        let ready: Vec<_> = {
            let mut q = self.done.lock().unwrap_or_else(|p| p.into_inner());
            let n = max.min(q.len());
            q.drain(..n).collect()
        };
        let n = ready.len();
        for (io, r) in ready {
            self.in_flight -= 1;
            self.stats.completed += 1;
            self.stats.failed += u64::from(r.is_err());
            done(io, r);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    // No wakeup fd: `in_flight() > 0` keeps the reactor polling while the engine works.

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}
