//! The `power-cut` backend: a device over a base device that models a volatile write cache
//! and a power failure, so that tests catch a missing Flush/FUA (a `kill -9` keeps the page
//! cache and never does).
//!
//! The base holds what the device *shows*: every request goes through to it, reads see every
//! completed write. Beside it, the device remembers, per block written since the last Flush,
//! the block's durable content and every later version (the data each completed write, write
//! zeroes, unmap or copy left in it). A Flush makes the versions completed before it durable;
//! a FUA write is durable when it completes. [`PowerCutBdev::cut`] (or the countdown of
//! [`PowerCutBdev::arm`]) is the power failure: from then on every request fails with EIO and
//! nothing is remembered any more. [`PowerCutBdev::restore`] is the power coming back: for
//! each remembered block it picks, seeded, one of its versions — the durable one, the newest,
//! or one in between, as a cache that wrote back some of its lines in any order — and writes
//! it to the base. Each block is chosen on its own, so a multi-block write not yet flushed
//! comes back torn at block (sector) granularity.
//!
//! Costs, acceptable for a test device only: a modifying request reads its range before
//! (the durable content) and, unless it is a Write, after (its result); the versions are
//! copies in memory, under one mutex. Requests larger than the base's largest transfer are
//! not modelled: they are durable when they complete (the pool's whole-area zeroing at
//! creation). Overlapping concurrent writes to one block leave the order of their versions
//! undefined, as NVMe does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_reactor::IoBuf;
use rand::{Rng, SeedableRng};

use crate::wrap::{stacked_block_device, Stacked};
use crate::{BdevError, BdevIo, BlockDevice, ChannelStats, IoChannel, IoKind};

#[cfg(test)]
mod tests;

/// Versions of one block since its last durable point.
#[derive(Debug)]
struct Versions {
    durable: Box<[u8]>,
    /// (completion sequence, content), oldest first.
    later: Vec<(u64, Box<[u8]>)>,
}

#[derive(Debug, Default)]
struct Cache {
    blocks: BTreeMap<u64, Versions>,
}

#[derive(Debug)]
struct Shared {
    cut: AtomicBool,
    /// Requests (modifying or Flush) still accepted before the cut; `u64::MAX`: not armed.
    countdown: AtomicU64,
    /// Completion sequence of modifying requests.
    seq: AtomicU64,
    cache: Mutex<Cache>,
    channels: AtomicUsize,
    cuts: AtomicU64,
}

/// What [`PowerCutBdev::restore`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Blocks with writes not yet durable at the cut.
    pub volatile_blocks: u64,
    /// Of those, blocks that came back with an older version than the newest (lost writes).
    pub rolled_back: u64,
    /// Of those, blocks that came back with the durable version.
    pub to_durable: u64,
}

/// A device with a volatile write cache that can lose power.
#[derive(Debug)]
pub struct PowerCutBdev {
    stacked: Stacked,
    shared: Arc<Shared>,
}

impl PowerCutBdev {
    pub fn new(name: &str, base: Arc<dyn BlockDevice>) -> Result<Self, BdevError> {
        Ok(Self {
            stacked: Stacked::new(name, base)?,
            shared: Arc::new(Shared {
                cut: AtomicBool::new(false),
                countdown: AtomicU64::new(u64::MAX),
                seq: AtomicU64::new(0),
                cache: Mutex::new(Cache::default()),
                channels: AtomicUsize::new(0),
                cuts: AtomicU64::new(0),
            }),
        })
    }

    pub fn base(&self) -> &Arc<dyn BlockDevice> {
        &self.stacked.base
    }

    /// Cuts the power when the `after`-th next modifying request or Flush is submitted (that
    /// request already fails). Deterministic for one submitter; with several, which request
    /// is the last one served depends on their interleaving.
    pub fn arm(&self, after: u64) {
        self.shared.countdown.store(after, Ordering::Release);
    }

    /// Cuts the power now: every request submitted or completing from now on fails with EIO.
    pub fn cut(&self) {
        self.shared.cut_now();
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::Acquire)
    }

    /// Blocks whose newest content is not durable yet.
    pub fn volatile_blocks(&self) -> usize {
        self.shared.lock().blocks.len()
    }

    /// The power comes back: applies the loss to the base (for each block not durable, one
    /// of its versions chosen with `seed`), flushes the base, and serves requests again.
    /// Call it from a control thread once every channel is closed (the pool above it dropped);
    /// refused while channels are open or before a cut.
    pub fn restore(&self, seed: u64) -> Result<CutReport, BdevError> {
        if !self.is_cut() {
            return Err(BdevError::InvalidConfig(format!(
                "bdev {}: restore without a power cut",
                self.stacked.name
            )));
        }
        let open = self.shared.channels.load(Ordering::Acquire);
        if open > 0 {
            return Err(BdevError::InvalidConfig(format!(
                "bdev {}: {open} channel(s) still open; close the device's users first",
                self.stacked.name
            )));
        }
        let blocks = std::mem::take(&mut self.shared.lock().blocks);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut report = CutReport::default();
        let base = &self.stacked.base;
        let mut ch = base.open_channel(&[])?;
        let bs = base.block_size() as usize;
        for (lba, v) in blocks {
            report.volatile_blocks += 1;
            let pick = rng.gen_range(0..=v.later.len());
            if pick == v.later.len() {
                continue; // the newest content is what the base holds
            }
            report.rolled_back += 1;
            let data = if pick == 0 {
                report.to_durable += 1;
                &v.durable
            } else {
                &v.later[pick - 1].1
            };
            let mut buf = IoBuf::new(bs);
            buf.set_len(bs);
            buf.as_mut_slice().copy_from_slice(data);
            let kind = IoKind::Write {
                lba,
                blocks: 1,
                fua: false,
            };
            run_sync(&mut *ch, BdevIo::new(lba, kind, Some(buf)))?;
        }
        run_sync(&mut *ch, BdevIo::new(0, IoKind::Flush, None))?;
        drop(ch);
        self.shared.countdown.store(u64::MAX, Ordering::Release);
        self.shared.cut.store(false, Ordering::Release);
        log::info!(
            "bdev {}: power restored, {report:?} (seed {seed})",
            self.stacked.name
        );
        Ok(report)
    }
}

/// Runs one request to completion on a control thread (spins on `poll`).
fn run_sync(ch: &mut dyn IoChannel, io: BdevIo) -> Result<(), BdevError> {
    ch.submit(io).map_err(|(_, e)| e)?;
    let mut out = None;
    while out.is_none() {
        if ch.poll(1, &mut |_, r| out = Some(r)) == 0 {
            std::thread::yield_now();
        }
    }
    out.expect("loop ends with a completion")
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a consistent map (every change is one insert
        // or remove): keep going.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cut_now(&self) {
        if !self.cut.swap(true, Ordering::AcqRel) {
            self.cuts.fetch_add(1, Ordering::Relaxed);
            log::warn!("power cut: {} volatile block(s)", self.lock().blocks.len());
        }
    }

    /// Counts down an armed cut; true when this request meets the cut.
    fn tick(&self) -> bool {
        let hit = self
            .countdown
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != u64::MAX && n > 0).then(|| n - 1)
            })
            .is_ok_and(|before| before == 1);
        if hit {
            self.cut_now();
        }
        self.cut.load(Ordering::Acquire)
    }

    /// A modifying request completed: `pre` held the blocks before it, `post` after it.
    fn record(&self, lba: u64, bs: usize, pre: &[u8], post: &[u8], durable: bool) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let mut cache = self.lock();
        for (i, (before, after)) in pre.chunks_exact(bs).zip(post.chunks_exact(bs)).enumerate() {
            let b = lba + i as u64;
            if durable {
                cache.blocks.remove(&b);
                continue;
            }
            cache
                .blocks
                .entry(b)
                .or_insert_with(|| Versions {
                    durable: before.into(),
                    later: Vec::new(),
                })
                .later
                .push((seq, after.into()));
        }
    }

    /// A request not modelled (too large) completed: its blocks are durable as they are.
    fn forget(&self, lba: u64, blocks: u64) {
        let mut cache = self.lock();
        let gone: Vec<u64> = cache
            .blocks
            .range(lba..lba + blocks)
            .map(|(&b, _)| b)
            .collect();
        for b in gone {
            cache.blocks.remove(&b);
        }
    }

    /// A Flush submitted when the sequence was `upto` completed.
    fn flushed(&self, upto: u64) {
        let mut cache = self.lock();
        cache.blocks.retain(|_, v| {
            let n = v.later.iter().take_while(|(s, _)| *s <= upto).count();
            if n > 0 {
                let mut drained = v.later.drain(..n);
                v.durable = drained.next_back().expect("n > 0").1;
            }
            !v.later.is_empty()
        });
    }
}

stacked_block_device!(
    PowerCutBdev,
    |dev, buffers| {
        let base = &dev.stacked.base;
        let ch = base.open_channel(buffers)?;
        dev.shared.channels.fetch_add(1, Ordering::AcqRel);
        let max = base.capabilities().max_transfer_bytes;
        Ok(Box::new(CutChannel {
            base: ch,
            shared: Arc::clone(&dev.shared),
            bs: base.block_size() as usize,
            max_tracked: u64::from(max.min(4 << 20)),
            slots: (0..crate::DEFAULT_QUEUE_DEPTH).map(|_| None).collect(),
            free: (0..crate::DEFAULT_QUEUE_DEPTH as u32).rev().collect(),
            reaped: VecDeque::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            retry: VecDeque::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            done: VecDeque::with_capacity(crate::DEFAULT_QUEUE_DEPTH),
            stats: ChannelStats::default(),
        }))
    },
    |c| crate::Capabilities {
        volatile_write_cache: true,
        ..c
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading the range before a modifying request.
    Before,
    /// The caller's request is at the base.
    Main,
    /// Reading the range after a modifying request other than Write.
    After,
}

#[derive(Debug)]
struct Op {
    tag: u64,
    /// The caller's request while it is not at the base.
    io: Option<BdevIo>,
    stage: Stage,
    /// (lba, blocks) tracked; `None`: passed through (reads, too large).
    range: Option<(u64, u64)>,
    before: Option<IoBuf>,
    after: Option<IoBuf>,
    /// For a Flush: the modifying sequence completed when it was submitted.
    flush_upto: u64,
}

struct CutChannel {
    base: Box<dyn IoChannel>,
    shared: Arc<Shared>,
    bs: usize,
    max_tracked: u64,
    slots: Vec<Option<Op>>,
    free: Vec<u32>,
    reaped: VecDeque<(BdevIo, Result<(), BdevError>)>,
    /// Slots whose next stage the base refused with QueueFull.
    retry: VecDeque<u32>,
    done: VecDeque<(BdevIo, Result<(), BdevError>)>,
    stats: ChannelStats,
}

fn eio() -> BdevError {
    BdevError::from_errno(libc::EIO)
}

impl CutChannel {
    fn op(&mut self, s: u32) -> &mut Op {
        self.slots[s as usize].as_mut().expect("slot in use")
    }

    /// The base request of slot `s`'s current stage.
    fn stage_io(&mut self, s: u32) -> BdevIo {
        let bs = self.bs;
        let op = self.op(s);
        let (lba, blocks) = op.range.unwrap_or((0, 0));
        let read = |buf: Option<IoBuf>| {
            let buf = buf.unwrap_or_else(|| IoBuf::new(blocks as usize * bs));
            BdevIo::new(
                u64::from(s),
                IoKind::Read {
                    lba,
                    blocks: blocks as u32,
                },
                Some(buf),
            )
        };
        match op.stage {
            Stage::Before => read(op.before.take()),
            Stage::After => read(op.after.take()),
            Stage::Main => {
                let mut io = op.io.take().expect("the caller's request is here");
                io.tag = u64::from(s);
                io
            }
        }
    }

    /// Puts a stage's request back in the slot (refused by the base).
    fn stage_back(&mut self, s: u32, mut io: BdevIo) {
        let op = self.op(s);
        match op.stage {
            Stage::Before => op.before = io.buf.take(),
            Stage::After => op.after = io.buf.take(),
            Stage::Main => {
                io.tag = op.tag;
                op.io = Some(io);
            }
        }
    }

    /// Issues slot `s`'s current stage; false when the base was full (retry later).
    fn issue(&mut self, s: u32) -> bool {
        let io = self.stage_io(s);
        match self.base.submit(io) {
            Ok(()) => true,
            Err((io, BdevError::QueueFull)) => {
                self.stage_back(s, io);
                false
            }
            Err((io, e)) => {
                self.stage_back(s, io);
                self.finish(s, Err(e));
                true
            }
        }
    }

    fn finish(&mut self, s: u32, r: Result<(), BdevError>) {
        let op = self.slots[s as usize].take().expect("slot in use");
        self.free.push(s);
        let io = op.io.expect("the caller's request is back");
        self.done.push_back((io, r));
    }

    /// A base completion for slot `s`.
    fn step(&mut self, s: u32, mut io: BdevIo, r: Result<(), BdevError>) {
        if self.shared.cut.load(Ordering::Acquire) {
            self.stage_back(s, io);
            return self.finish(s, Err(eio()));
        }
        if let Err(e) = r {
            self.stage_back(s, io);
            return self.finish(s, Err(e));
        }
        let stage = self.op(s).stage;
        match stage {
            Stage::Before => {
                let op = self.op(s);
                op.before = io.buf.take();
                op.stage = Stage::Main;
            }
            Stage::Main => {
                let kind = io.kind;
                self.stage_back(s, io);
                let (shared, bs) = (&self.shared, self.bs);
                let op = self.slots[s as usize].as_mut().expect("slot in use");
                match (kind, op.range) {
                    (IoKind::Flush, _) => {
                        shared.flushed(op.flush_upto);
                        return self.finish(s, Ok(()));
                    }
                    (_, None) => {
                        if let Some((lba, blocks)) = kind.range().filter(|_| kind.modifies()) {
                            shared.forget(lba, blocks);
                        }
                        return self.finish(s, Ok(()));
                    }
                    (IoKind::Write { fua, .. }, Some((lba, _))) => {
                        let before = op.before.take().expect("read before");
                        let io = op.io.as_ref().expect("request back");
                        let data = io.buf.as_ref().expect("writes carry a buffer");
                        let n = before.len();
                        shared.record(lba, bs, before.as_slice(), &data.as_slice()[..n], fua);
                        return self.finish(s, Ok(()));
                    }
                    _ => op.stage = Stage::After,
                }
            }
            Stage::After => {
                let op = self.op(s);
                let (lba, _) = op.range.expect("tracked");
                let before = op.before.take().expect("read before");
                let after = io.buf.take().expect("read after");
                self.shared
                    .record(lba, self.bs, before.as_slice(), after.as_slice(), false);
                return self.finish(s, Ok(()));
            }
        }
        if !self.issue(s) {
            self.retry.push_back(s);
        }
    }
}

impl IoChannel for CutChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        let Some(s) = self.free.pop() else {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        };
        let counted = io.kind.modifies() || io.kind == IoKind::Flush;
        let cut = if counted {
            self.shared.tick()
        } else {
            self.shared.cut.load(Ordering::Acquire)
        };
        let range = io
            .kind
            .range()
            .filter(|_| io.kind.modifies())
            .filter(|&(_, blocks)| blocks * self.bs as u64 <= self.max_tracked);
        let op = Op {
            tag: io.tag,
            stage: if range.is_some() {
                Stage::Before
            } else {
                Stage::Main
            },
            io: Some(io),
            range,
            before: None,
            after: None,
            flush_upto: self.shared.seq.load(Ordering::Acquire),
        };
        self.slots[s as usize] = Some(op);
        self.stats.submitted += 1;
        if cut {
            self.finish(s, Err(eio()));
            return Ok(());
        }
        let io = self.stage_io(s);
        match self.base.submit(io) {
            Ok(()) => Ok(()),
            Err((io, e)) => {
                // Hand the caller's request back as it came.
                self.stage_back(s, io);
                let op = self.slots[s as usize].take().expect("slot in use");
                self.free.push(s);
                self.stats.submitted -= 1;
                Err((op.io.expect("request back"), e))
            }
        }
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        for _ in 0..self.retry.len() {
            let s = self.retry.pop_front().expect("counted");
            if !self.issue(s) {
                self.retry.push_back(s);
                break;
            }
        }
        let reaped = &mut self.reaped;
        self.base
            .poll(usize::MAX, &mut |io, r| reaped.push_back((io, r)));
        while let Some((io, r)) = self.reaped.pop_front() {
            let s = io.tag as u32;
            self.step(s, io, r);
        }
        crate::wrap::hand_back(&mut self.done, &mut self.stats, max, done)
    }

    fn in_flight(&self) -> usize {
        crate::DEFAULT_QUEUE_DEPTH - self.free.len() + self.done.len()
    }

    // No wakeup fd: stages are issued from `poll`, so `in_flight() > 0` keeps the reactor
    // polling.

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}

impl Drop for CutChannel {
    fn drop(&mut self) {
        // The base channel waits for what is still in flight when it drops (before `restore`
        // may run: it counts open channels).
        self.shared.channels.fetch_sub(1, Ordering::AcqRel);
    }
}
