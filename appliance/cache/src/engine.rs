//! The engine: one thread per cached volume that serves every request in order with
//! synchronous I/O on its own channels to the cache and backing devices, and writes dirty
//! data back between requests. One thread keeps the directory single-owner (no locks on the
//! I/O path, no races between a write-back and a host write to the same line); the cost is
//! that requests to one cached volume are served one at a time.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind};
use ferrite_reactor::IoBuf;

use crate::layout::Layout;
use crate::policy::{utc_minute_now, Schedule, WritePolicy};
use crate::sync_io;
use crate::table::{mask, Table};
use crate::{CacheOptions, FlushTarget, Shared};

pub(crate) type Completions = Arc<Mutex<VecDeque<(BdevIo, Result<(), BdevError>)>>>;

pub(crate) enum Msg {
    Io(BdevIo, Completions),
    /// Write back everything dirty now (`bdev_cache_flush`).
    Drain(Sender<Result<(), String>>),
    Stop,
}

/// Lines written back per batch (one backing flush and one directory update each).
const BATCH: usize = 32;
/// Directory blocks per write at format and recovery.
const DIR_CHUNK: u64 = 64;
/// How long a writer waits on a failing write-back before its write fails.
const THROTTLE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Engine {
    name: String,
    layout: Layout,
    opts: CacheOptions,
    table: Table,
    cache: Box<dyn IoChannel>,
    backing: Box<dyn IoChannel>,
    shared: Arc<Shared>,
    bs: usize,
    max_transfer_blocks: u64,
    /// Data written to the cache device since its last flush.
    data_unflushed: bool,
    /// An interval drain in progress (runs until nothing is dirty).
    draining: bool,
    last_drain: Instant,
    /// Background write-back paused after an error until then.
    backoff_until: Option<Instant>,
    epoch: Instant,
}

impl Engine {
    /// Opens the channels, reads (or formats) the cache device and recovers its dirty lines.
    pub fn open(
        name: &str,
        backing: &Arc<dyn BlockDevice>,
        cache: &Arc<dyn BlockDevice>,
        opts: CacheOptions,
        shared: Arc<Shared>,
    ) -> Result<Engine, BdevError> {
        let bs = backing.block_size();
        let layout = Layout::compute(
            bs,
            opts.line_size / bs,
            cache.num_blocks(),
            backing.num_blocks(),
            backing.uuid(),
        )?;
        let max_transfer = backing
            .capabilities()
            .max_transfer_bytes
            .min(cache.capabilities().max_transfer_bytes)
            .max(opts.line_size);
        let mut e = Engine {
            name: name.to_owned(),
            table: Table::new(layout.slots, layout.records_per_block()),
            layout,
            opts,
            cache: cache.open_channel(&[])?,
            backing: backing.open_channel(&[])?,
            shared,
            bs: bs as usize,
            max_transfer_blocks: u64::from(max_transfer / bs),
            data_unflushed: false,
            draining: false,
            last_drain: Instant::now(),
            backoff_until: None,
            epoch: Instant::now(),
        };
        e.load()?;
        e.publish();
        Ok(e)
    }

    pub fn slots(&self) -> u64 {
        u64::from(self.layout.slots)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn load(&mut self) -> Result<(), BdevError> {
        let header = sync_io::read(&mut *self.cache, 0, 1, self.bs)?;
        let found = Layout::decode_header(header.as_slice())
            .map_err(|e| BdevError::InvalidConfig(format!("cache {}: {e}", self.name)))?;
        match found {
            Some(h) if h == self.layout.header_info() => {
                let lines = self.layout.lines;
                let now = self.now_ms();
                let mut loaded = 0;
                let mut b = 0;
                while b < self.layout.dir_blocks {
                    let n = DIR_CHUNK.min(self.layout.dir_blocks - b);
                    let data = sync_io::read(
                        &mut *self.cache,
                        self.layout.dir_start + b,
                        n as u32,
                        self.bs,
                    )?;
                    for (i, blk) in data.as_slice().chunks_exact(self.bs).enumerate() {
                        loaded += self.table.recover_block(b + i as u64, blk, lines, now);
                    }
                    b += n;
                }
                log::info!(
                    "cache {}: {} slots, {loaded} dirty line(s) ({} blocks) recovered, write-back resumes",
                    self.name,
                    self.layout.slots,
                    self.table.dirty_blocks()
                );
                Ok(())
            }
            Some(h) if !self.opts.format => Err(BdevError::InvalidConfig(format!(
                "cache {}: the cache device holds a cache of another volume or geometry ({} blocks of {} bytes, lines of {} blocks; now {} blocks of {} bytes, lines of {}); it may hold data not written back: create with format=true to discard it",
                self.name,
                h.backing_blocks,
                h.block_size,
                h.line_blocks,
                self.layout.backing_blocks,
                self.layout.block_size,
                self.layout.line_blocks
            ))),
            _ => self.format(),
        }
    }

    fn format(&mut self) -> Result<(), BdevError> {
        let zeroes = vec![0u8; DIR_CHUNK as usize * self.bs];
        let mut b = 0;
        while b < self.layout.dir_blocks {
            let n = DIR_CHUNK.min(self.layout.dir_blocks - b);
            sync_io::write(
                &mut *self.cache,
                self.layout.dir_start + b,
                &zeroes[..n as usize * self.bs],
                self.bs,
                false,
            )?;
            b += n;
        }
        sync_io::flush(&mut *self.cache)?;
        let mut header = vec![0u8; self.bs];
        self.layout.encode_header(&mut header);
        sync_io::write(&mut *self.cache, 0, &header, self.bs, false)?;
        sync_io::flush(&mut *self.cache)?;
        log::info!(
            "cache {}: formatted, {} slots of {} bytes",
            self.name,
            self.layout.slots,
            self.opts.line_size
        );
        Ok(())
    }

    /// Serves messages until `Stop` or every sender is gone, writing back in between.
    pub fn run(mut self, rx: Receiver<Msg>) {
        let mut served_since_background = 0u32;
        loop {
            let due = self.background_due();
            let msg = if due && served_since_background < 64 {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else if due {
                None
            } else {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            match msg {
                Some(Msg::Io(mut io, reply)) => {
                    served_since_background += 1;
                    let r = self.serve(&mut io);
                    reply
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back((io, r));
                }
                Some(Msg::Drain(reply)) => {
                    let r = self.drain_all().map_err(|e| e.to_string());
                    // The caller reads the statistics as soon as it is answered: they must
                    // already show the drained state.
                    self.publish();
                    let _ = reply.send(r);
                }
                Some(Msg::Stop) => break,
                None if due => {
                    served_since_background = 0;
                    self.background_step();
                }
                None => {}
            }
            self.publish();
        }
        if let Err(e) = self.persist() {
            log::error!("cache {}: directory not saved at shutdown: {e}", self.name);
        }
        self.publish();
        log::info!(
            "cache {}: stopped with {} dirty block(s) kept for the next start",
            self.name,
            self.table.dirty_blocks()
        );
    }

    fn publish(&self) {
        let s = &self.shared.stats;
        s.dirty_blocks
            .store(self.table.dirty_blocks(), Ordering::Relaxed);
        s.cached_lines
            .store(self.table.cached_lines() as u64, Ordering::Relaxed);
        let lag = self
            .table
            .oldest_dirty_since()
            .map_or(0, |t| self.now_ms().saturating_sub(t));
        s.lag_ms.store(lag, Ordering::Relaxed);
    }

    fn background_due(&mut self) -> bool {
        if self.table.dirty_blocks() == 0 {
            if self.draining {
                self.draining = false;
                self.last_drain = Instant::now();
            }
            return false;
        }
        if self.backoff_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match self.opts.policy {
            WritePolicy::WriteThrough | WritePolicy::WriteBack(Schedule::Immediate) => true,
            WritePolicy::WriteBack(Schedule::Interval(d)) => {
                if !self.draining && self.last_drain.elapsed() >= d {
                    self.draining = true;
                }
                self.draining
            }
            WritePolicy::WriteBack(w @ Schedule::Window { .. }) => w.in_window(utc_minute_now()),
        }
    }

    fn background_step(&mut self) {
        match self.write_back(BATCH) {
            Ok(_) => self.backoff_until = None,
            Err(e) => {
                self.shared
                    .stats
                    .write_back_errors
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "cache {}: write-back failed, retrying in 1 s: {e}",
                    self.name
                );
                self.backoff_until = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    fn serve(&mut self, io: &mut BdevIo) -> Result<(), BdevError> {
        match io.kind {
            IoKind::Read { lba, blocks } => {
                let buf = io.buf.as_mut().expect("checked at submit");
                self.read(lba, blocks, buf)
            }
            IoKind::Write { lba, blocks, fua } => {
                let buf = io.buf.as_ref().expect("checked at submit");
                let data = &buf.as_slice()[..blocks as usize * self.bs];
                match self.opts.policy {
                    WritePolicy::WriteThrough => self.write_through(lba, data, fua),
                    WritePolicy::WriteBack(_) => self.write_back_mode(lba, data, fua),
                }
            }
            IoKind::Flush => self.flush(),
            IoKind::WriteZeroes { lba, blocks } | IoKind::Unmap { lba, blocks } => {
                self.zero_or_unmap(io.kind, lba, blocks)
            }
            IoKind::Copy { .. } => Err(BdevError::Unsupported("copy")),
        }
    }

    /// The pieces of `[lba, lba + blocks)`: (line, offset in line, blocks, offset in request).
    fn segments(&self, lba: u64, blocks: u64) -> Vec<(u64, u32, u32, usize)> {
        let lb = u64::from(self.layout.line_blocks);
        let mut out = Vec::new();
        let (mut at, end) = (lba, lba + blocks);
        while at < end {
            let line = at / lb;
            let off = at % lb;
            let n = (lb - off).min(end - at);
            out.push((line, off as u32, n as u32, (at - lba) as usize));
            at += n;
        }
        out
    }

    /// A slot for `line`, writing dirty data back when every slot holds some (the writer
    /// waits: it is throttled, not failed).
    fn slot_for(&mut self, line: u64) -> Result<u32, BdevError> {
        if let Some(s) = self.table.lookup(line) {
            return Ok(s);
        }
        let started = Instant::now();
        loop {
            if let Some((s, evicted)) = self.table.alloc(line) {
                if evicted.is_some() {
                    self.shared.stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(s);
            }
            self.write_back_or_wait(started)?;
        }
    }

    /// One forced write-back batch; on failure waits a little, and gives up after
    /// `THROTTLE_TIMEOUT` from `started`.
    fn write_back_or_wait(&mut self, started: Instant) -> Result<(), BdevError> {
        match self.write_back(BATCH) {
            Ok(_) => Ok(()),
            Err(e) if started.elapsed() >= THROTTLE_TIMEOUT => {
                log::error!(
                    "cache {}: write-back failing for {:?}, failing the waiting request: {e}",
                    self.name,
                    THROTTLE_TIMEOUT
                );
                Err(e)
            }
            Err(e) => {
                self.shared
                    .stats
                    .write_back_errors
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!("cache {}: write-back failed, retrying: {e}", self.name);
                std::thread::sleep(Duration::from_millis(100));
                Ok(())
            }
        }
    }

    /// Makes every block of `line` valid in its slot (fetching from the backing store what
    /// the slot lacks); returns the slot and the line's content.
    fn fetch(&mut self, line: u64) -> Result<(u32, IoBuf), BdevError> {
        let len = self.layout.line_len(line);
        let slot = self.slot_for(line)?;
        let valid = self.table.slots[slot as usize].valid;
        let mut data = sync_io::read(&mut *self.backing, self.layout.line_lba(line), len, self.bs)?;
        if valid != 0 {
            let cached = sync_io::read(&mut *self.cache, self.layout.slot_lba(slot), len, self.bs)?;
            for b in (0..len as usize).filter(|&b| valid & (1 << b) != 0) {
                let r = b * self.bs..(b + 1) * self.bs;
                data.as_mut_slice()[r.clone()].copy_from_slice(&cached.as_slice()[r]);
            }
        }
        sync_io::write(
            &mut *self.cache,
            self.layout.slot_lba(slot),
            data.as_slice(),
            self.bs,
            false,
        )?;
        self.data_unflushed = true;
        self.table.fill(slot, mask(0, len));
        Ok((slot, data))
    }

    fn read(&mut self, lba: u64, blocks: u32, buf: &mut IoBuf) -> Result<(), BdevError> {
        let bytes = blocks as usize * self.bs;
        buf.set_len(bytes);
        let mut hit = true;
        for (line, off, n, at) in self.segments(lba, u64::from(blocks)) {
            let m = mask(off, n);
            let out = &mut buf.as_mut_slice()[at * self.bs..(at + n as usize) * self.bs];
            match self.table.lookup(line) {
                Some(s) if self.table.slots[s as usize].valid & m == m => {
                    let part = sync_io::read(
                        &mut *self.cache,
                        self.layout.slot_lba(s) + u64::from(off),
                        n,
                        self.bs,
                    )?;
                    out.copy_from_slice(part.as_slice());
                    self.table.touch(s);
                }
                _ => {
                    hit = false;
                    let (_, data) = self.fetch(line)?;
                    let r = off as usize * self.bs..(off + n) as usize * self.bs;
                    out.copy_from_slice(&data.as_slice()[r]);
                }
            }
        }
        let s = &self.shared.stats;
        if hit {
            s.read_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            s.read_misses.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn write_through(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        for chunk in self.chunks(lba, data) {
            sync_io::write(&mut *self.backing, chunk.0, chunk.1, self.bs, fua)?;
        }
        // Keep cached copies current (no allocation: a write does not make a line hot).
        for (line, off, n, at) in self.segments(lba, (data.len() / self.bs) as u64) {
            let Some(s) = self.table.lookup(line) else {
                continue;
            };
            let part = &data[at * self.bs..(at + n as usize) * self.bs];
            let lba = self.layout.slot_lba(s) + u64::from(off);
            if let Err(e) = sync_io::write(&mut *self.cache, lba, part, self.bs, false) {
                self.table.invalidate(s, mask(off, n));
                return Err(e);
            }
            self.data_unflushed = true;
            self.table.fill(s, mask(off, n));
        }
        self.shared
            .stats
            .written_through_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// `data` at `lba` in pieces no larger than the devices' transfer limit.
    fn chunks<'a>(&self, lba: u64, data: &'a [u8]) -> Vec<(u64, &'a [u8])> {
        let per = self.max_transfer_blocks as usize * self.bs;
        data.chunks(per)
            .enumerate()
            .map(|(i, c)| (lba + (i * per / self.bs) as u64, c))
            .collect()
    }

    fn write_back_mode(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<(), BdevError> {
        let blocks = (data.len() / self.bs) as u64;
        self.throttle(blocks)?;
        let now = self.now_ms();
        for (line, off, n, at) in self.segments(lba, blocks) {
            let s = self.slot_for(line)?;
            let part = &data[at * self.bs..(at + n as usize) * self.bs];
            sync_io::write(
                &mut *self.cache,
                self.layout.slot_lba(s) + u64::from(off),
                part,
                self.bs,
                false,
            )?;
            self.data_unflushed = true;
            self.table.write(s, mask(off, n), now);
            self.table.touch(s);
        }
        if fua {
            self.make_durable()?;
        }
        Ok(())
    }

    /// Delays a writer until its blocks fit under the dirty limit.
    fn throttle(&mut self, blocks: u64) -> Result<(), BdevError> {
        let limit = self.dirty_limit_blocks();
        if self.table.dirty_blocks() + blocks <= limit {
            return Ok(());
        }
        let started = Instant::now();
        self.shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
        while self.table.dirty_blocks() > 0 && self.table.dirty_blocks() + blocks > limit {
            self.write_back_or_wait(started)?;
        }
        self.shared
            .stats
            .throttled_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn dirty_limit_blocks(&self) -> u64 {
        let capacity = u64::from(self.layout.slots) * u64::from(self.layout.line_blocks);
        let pct = u64::from(self.opts.dirty_limit_percent.clamp(1, 90));
        (capacity * pct / 100).max(u64::from(self.layout.line_blocks))
    }

    /// What a Flush or FUA write promises: acknowledged writes survive a crash of this
    /// appliance (and with `flush = backing`, are on the backing store).
    fn make_durable(&mut self) -> Result<(), BdevError> {
        self.persist()?;
        if self.opts.flush == FlushTarget::Backing {
            self.drain_all()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BdevError> {
        match self.opts.policy {
            WritePolicy::WriteThrough => {
                sync_io::flush(&mut *self.backing)?;
                if self.table.dirty_blocks() > 0 {
                    self.persist()?;
                }
                Ok(())
            }
            WritePolicy::WriteBack(_) => self.make_durable(),
        }
    }

    fn drain_all(&mut self) -> Result<(), BdevError> {
        let started = Instant::now();
        while self.table.dirty_blocks() > 0 {
            self.write_back_or_wait(started)?;
        }
        Ok(())
    }

    fn zero_or_unmap(&mut self, kind: IoKind, lba: u64, blocks: u64) -> Result<(), BdevError> {
        // The backing store first: if this appliance crashes before the directory drops the
        // superseded dirty blocks, recovery writes them back over the zeroes, which is what
        // the device held before this (not yet acknowledged) request.
        let (io, r) = sync_io::run(&mut *self.backing, BdevIo::new(0, kind, None));
        drop(io);
        r?;
        sync_io::flush(&mut *self.backing)?;
        let lb = u64::from(self.layout.line_blocks);
        let (first, last) = (lba / lb, (lba + blocks - 1) / lb);
        let mut touched = false;
        for (line, s) in self.table.slots_in(first, last) {
            let start = lba.max(line * lb);
            let end = (lba + blocks).min((line + 1) * lb);
            let m = mask((start - line * lb) as u32, (end - start) as u32);
            self.table.invalidate(s, m);
            touched = true;
        }
        if touched {
            self.persist()?;
        }
        Ok(())
    }

    /// Writes up to `max` of the oldest dirty lines to the backing store, flushes it, then
    /// records them clean in the directory. Returns how many lines.
    fn write_back(&mut self, max: usize) -> Result<usize, BdevError> {
        let slots = self.table.oldest_dirty(max);
        if slots.is_empty() {
            return Ok(0);
        }
        let mut done = Vec::with_capacity(slots.len());
        let mut bytes = 0u64;
        for s in slots {
            let st = self.table.slots[s as usize];
            let len = self.layout.line_len(st.line);
            let data = sync_io::read(&mut *self.cache, self.layout.slot_lba(s), len, self.bs)?;
            // Contiguous runs of dirty blocks, one backing write each.
            let mut b = 0u32;
            while b < len {
                if st.dirty & (1 << b) == 0 {
                    b += 1;
                    continue;
                }
                let start = b;
                while b < len && st.dirty & (1 << b) != 0 {
                    b += 1;
                }
                let r = start as usize * self.bs..b as usize * self.bs;
                let lba = self.layout.line_lba(st.line) + u64::from(start);
                sync_io::write(
                    &mut *self.backing,
                    lba,
                    &data.as_slice()[r.clone()],
                    self.bs,
                    false,
                )?;
                bytes += r.len() as u64;
            }
            done.push((s, st.dirty));
        }
        sync_io::flush(&mut *self.backing)?;
        for &(s, dirty) in &done {
            self.table.clean(s, dirty);
        }
        self.shared
            .stats
            .written_back_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        self.persist()?;
        Ok(done.len())
    }

    /// Makes the data written to the cache device durable, then the directory blocks that
    /// changed (data first: a durable dirty record must never point at data that is not).
    fn persist(&mut self) -> Result<(), BdevError> {
        if self.data_unflushed {
            sync_io::flush(&mut *self.cache)?;
            self.data_unflushed = false;
        }
        let changed = self.table.take_changed();
        if changed.is_empty() {
            return Ok(());
        }
        let mut written = Vec::with_capacity(changed.len());
        let result = (|| {
            let mut i = 0;
            while i < changed.len() {
                // A run of consecutive directory blocks, one write.
                let mut j = i + 1;
                while j < changed.len()
                    && changed[j] == changed[j - 1] + 1
                    && (j - i) < DIR_CHUNK as usize
                {
                    j += 1;
                }
                let mut buf = vec![0u8; (j - i) * self.bs];
                for (k, b) in changed[i..j].iter().enumerate() {
                    self.table
                        .encode_block(*b, &mut buf[k * self.bs..(k + 1) * self.bs]);
                }
                sync_io::write(
                    &mut *self.cache,
                    self.layout.dir_start + changed[i],
                    &buf,
                    self.bs,
                    false,
                )?;
                written.push((changed[i], buf));
                i = j;
            }
            sync_io::flush(&mut *self.cache)
        })();
        match result {
            Ok(()) => {
                for (first, buf) in written {
                    for (k, blk) in buf.chunks_exact(self.bs).enumerate() {
                        self.table.persisted_block(first + k as u64, blk);
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.table.requeue(&changed);
                Err(e)
            }
        }
    }
}
