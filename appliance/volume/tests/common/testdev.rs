//! A member device for fault tests: wraps a real device and can
//! - simulate a volatile write cache (`cache`): plain writes stay in memory until a Flush or
//!   are lost by `crash()`; FUA writes go through at once;
//! - stall every request (`set_stall`) as a hung device would;
//! - fail reads and writes at or beyond an LBA with EIO (`fail_from`).
//!
//! WriteZeroes and Unmap go straight through (treated as durable at once): only the pool's
//! own zeroing uses them on members, and it flushes afterwards anyway.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, Capabilities, IoChannel, IoKind};
use ferrite_reactor::IoBuf;

#[derive(Debug)]
pub struct TestDev {
    inner: Arc<dyn BlockDevice>,
    k: Arc<Knobs>,
}

/// What the device and its channels share.
#[derive(Debug)]
pub struct Knobs {
    bs: u64,
    cache: bool,
    dirty: Mutex<BTreeMap<u64, Vec<u8>>>,
    stall: AtomicBool,
    fail_from: AtomicU64,
    failed: AtomicU64,
}

impl std::ops::Deref for TestDev {
    type Target = Knobs;
    fn deref(&self) -> &Knobs {
        &self.k
    }
}

impl TestDev {
    pub fn new(inner: Arc<dyn BlockDevice>, cache: bool) -> Arc<TestDev> {
        Arc::new(TestDev {
            k: Arc::new(Knobs {
                bs: u64::from(inner.block_size()),
                cache,
                dirty: Mutex::new(BTreeMap::new()),
                stall: AtomicBool::new(false),
                fail_from: AtomicU64::new(u64::MAX),
                failed: AtomicU64::new(0),
            }),
            inner,
        })
    }

    pub fn as_bdev(self: &Arc<Self>) -> Arc<dyn BlockDevice> {
        Arc::clone(self) as Arc<dyn BlockDevice>
    }

    /// Power loss: every written block not yet flushed is gone. Returns how many.
    pub fn crash(&self) -> usize {
        let mut d = self.dirty.lock().expect("dirty lock");
        let n = d.len();
        d.clear();
        n
    }

    pub fn dirty_blocks(&self) -> usize {
        self.dirty.lock().expect("dirty lock").len()
    }

    pub fn set_stall(&self, on: bool) {
        self.stall.store(on, Ordering::SeqCst);
    }

    /// Reads and writes touching blocks at or beyond `lba` fail with EIO (`u64::MAX`: none).
    pub fn fail_from(&self, lba: u64) {
        self.fail_from.store(lba, Ordering::SeqCst);
    }

    /// Requests failed by `fail_from` so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl BlockDevice for TestDev {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            volatile_write_cache: self.cache,
            copy: false,
            ..self.inner.capabilities()
        }
    }
    fn uuid(&self) -> [u8; 16] {
        self.inner.uuid()
    }
    fn open_channel(
        &self,
        buffers: &[&ferrite_bdev::PoolRegions],
    ) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(TestChannel {
            dev: Arc::clone(&self.k),
            inner: self.inner.open_channel(buffers)?,
            parked: VecDeque::new(),
            done: VecDeque::new(),
        }))
    }
}

/// Completes requests synchronously on the inner channel (at submit, or at poll once a stall
/// ends).
struct TestChannel {
    dev: Arc<Knobs>,
    inner: Box<dyn IoChannel>,
    parked: VecDeque<BdevIo>,
    done: VecDeque<(BdevIo, Result<(), BdevError>)>,
}

fn sync(ch: &mut dyn IoChannel, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
    let mut io = io;
    loop {
        match ch.submit(io) {
            Ok(()) => break,
            Err((back, BdevError::QueueFull)) => {
                io = back;
                ch.poll(16, &mut |_, _| {});
            }
            Err((back, e)) => return (back, Err(e)),
        }
    }
    let mut out = None;
    while out.is_none() {
        if ch.poll(1, &mut |io, r| out = Some((io, r))) == 0 {
            std::thread::yield_now();
        }
    }
    out.expect("completed")
}

impl TestChannel {
    fn execute(&mut self, io: BdevIo) -> (BdevIo, Result<(), BdevError>) {
        let dev = Arc::clone(&self.dev);
        let bs = dev.bs;
        if let Some((lba, blocks)) = io.kind.range() {
            let data = matches!(io.kind, IoKind::Read { .. } | IoKind::Write { .. });
            if data && lba + blocks > dev.fail_from.load(Ordering::SeqCst) {
                dev.failed.fetch_add(1, Ordering::SeqCst);
                return (io, Err(BdevError::Io(std::io::Error::from_raw_os_error(5))));
            }
        }
        match io.kind {
            IoKind::Read { lba, blocks } => {
                let (mut io, r) = sync(&mut *self.inner, io);
                if r.is_ok() && dev.cache {
                    let d = dev.dirty.lock().expect("dirty lock");
                    let buf = io.buf.as_mut().expect("reads carry a buffer");
                    for (b, data) in d.range(lba..lba + u64::from(blocks)) {
                        let at = ((b - lba) * bs) as usize;
                        buf.as_mut_slice()[at..at + data.len()].copy_from_slice(data);
                    }
                }
                (io, r)
            }
            IoKind::Write { lba, blocks, fua } if dev.cache => {
                let range = lba..lba + u64::from(blocks);
                if fua {
                    let (io, r) = sync(&mut *self.inner, io);
                    if r.is_ok() {
                        let mut d = dev.dirty.lock().expect("dirty lock");
                        for b in range {
                            d.remove(&b);
                        }
                    }
                    return (io, r);
                }
                let mut d = dev.dirty.lock().expect("dirty lock");
                let src = io.buf.as_ref().expect("writes carry a buffer").as_slice();
                for (i, b) in range.enumerate() {
                    d.insert(b, src[i * bs as usize..][..bs as usize].to_vec());
                }
                (io, Ok(()))
            }
            IoKind::WriteZeroes { lba, blocks } | IoKind::Unmap { lba, blocks } => {
                let (io, r) = sync(&mut *self.inner, io);
                let mut d = dev.dirty.lock().expect("dirty lock");
                let gone: Vec<u64> = d.range(lba..lba + blocks).map(|(b, _)| *b).collect();
                for b in gone {
                    d.remove(&b);
                }
                (io, r)
            }
            IoKind::Flush if dev.cache => {
                let dirty = std::mem::take(&mut *dev.dirty.lock().expect("dirty lock"));
                for (b, data) in dirty {
                    let mut buf = IoBuf::new(data.len());
                    buf.set_len(data.len());
                    buf.as_mut_slice().copy_from_slice(&data);
                    let w = IoKind::Write {
                        lba: b,
                        blocks: 1,
                        fua: false,
                    };
                    let (_, r) = sync(&mut *self.inner, BdevIo::new(0, w, Some(buf)));
                    if let Err(e) = r {
                        return (io, Err(e));
                    }
                }
                let (_, r) = sync(&mut *self.inner, BdevIo::new(0, IoKind::Flush, None));
                (io, r)
            }
            _ => sync(&mut *self.inner, io),
        }
    }
}

impl IoChannel for TestChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        if self.dev.stall.load(Ordering::SeqCst) || !self.parked.is_empty() {
            self.parked.push_back(io);
            return Ok(());
        }
        let out = self.execute(io);
        self.done.push_back(out);
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        if !self.dev.stall.load(Ordering::SeqCst) {
            while let Some(io) = self.parked.pop_front() {
                let out = self.execute(io);
                self.done.push_back(out);
            }
        }
        let n = max.min(self.done.len());
        for _ in 0..n {
            let (io, r) = self.done.pop_front().expect("n <= queue length");
            done(io, r);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.parked.len() + self.done.len()
    }
}
