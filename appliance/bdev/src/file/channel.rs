//! The io_uring channel of a file device: one ring per reactor, one op slot per request.
//!
//! Each slot has at most one submission queue entry in flight, and the ring has at least as
//! many entries as there are slots, so pushing never finds the queue full in practice (a
//! backlog covers it anyway). A request may take several entries in sequence: the remainder of
//! a short read or write, or the chunks of an emulated WriteZeroes.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferrite_reactor::IoBuf;
use io_uring::{opcode, squeue, types, IoUring};

use super::{sys, FileShared};
use crate::io::ChannelStats;
use crate::{BdevError, BdevIo, IoChannel, IoKind};

/// Default number of requests in flight per channel.
pub const DEFAULT_RING_DEPTH: u32 = 256;

/// The kernel's limit on registered buffers per ring (IORING_MAX_REG_BUFFERS).
const MAX_REGISTERED: usize = 1 << 14;

/// Size of the zero buffer used when the file system cannot zero a range itself.
const ZERO_BUF_BYTES: usize = 256 * 1024;

/// One registered pool: its buffers are fixed buffers `base..base + regions.len()`.
#[derive(Debug)]
struct RegisteredPool {
    base: u16,
    regions: Vec<(usize, usize)>,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Read or write of `total` bytes at file offset `offset`, `done` bytes so far.
    Rw {
        write: bool,
        fua: bool,
        fixed: Option<u16>,
        offset: u64,
        done: usize,
        total: usize,
    },
    Flush,
    Fallocate {
        mode: i32,
        offset: u64,
        len: u64,
    },
    /// Writing zeroes from the channel's zero buffer; `offset` is the next byte to write.
    ZeroFill {
        offset: u64,
        end: u64,
    },
}

#[derive(Debug)]
struct Op {
    io: BdevIo,
    step: Step,
}

/// What a completion entry means for its op.
enum Next {
    Resubmit(Step),
    Complete(Result<(), BdevError>),
}

pub(super) struct UringChannel {
    // Dropped first: the ring must close before the zero buffer and ops it may reference
    // (Drop waits for in-flight ops before that anyway).
    ring: IoUring,
    eventfd: Option<OwnedFd>,
    shared: Arc<FileShared>,
    slots: Vec<Option<Op>>,
    free: Vec<u32>,
    /// Entries that did not fit in the submission queue.
    backlog: VecDeque<squeue::Entry>,
    /// Completed without touching the kernel (zero-length requests), handed back by `poll`.
    ready: VecDeque<(BdevIo, Result<(), BdevError>)>,
    pools: Vec<RegisteredPool>,
    zero_buf: Option<IoBuf>,
    stats: ChannelStats,
}

impl std::fmt::Debug for UringChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringChannel")
            .field("depth", &self.slots.len())
            .field("in_flight", &self.in_flight())
            .field("registered_pools", &self.pools.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl UringChannel {
    pub fn new(
        shared: Arc<FileShared>,
        depth: u32,
        buffers: &[&[(usize, usize)]],
    ) -> Result<Self, BdevError> {
        let ring = IoUring::new(depth)?;
        let pools = register_pools(&ring, buffers);
        let eventfd = match sys::eventfd().and_then(|fd| {
            ring.submitter()
                .register_eventfd(fd.as_raw_fd())
                .map(|()| fd)
        }) {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::warn!("io_uring eventfd unavailable, no interrupt-mode wakeup: {e}");
                None
            }
        };
        Ok(Self {
            ring,
            eventfd,
            shared,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            backlog: VecDeque::new(),
            ready: VecDeque::new(),
            pools,
            zero_buf: None,
            stats: ChannelStats::default(),
        })
    }

    /// The fixed-buffer index of `buf` if it is a registered pool buffer large enough.
    fn fixed_index(&self, buf: &IoBuf, len: usize) -> Option<u16> {
        let index = usize::from(buf.pool_index()?);
        let addr = buf.as_ptr() as usize;
        self.pools.iter().find_map(|pool| {
            let &(raddr, rlen) = pool.regions.get(index)?;
            // Index fits: base + regions.len() <= MAX_REGISTERED < u16::MAX.
            (raddr == addr && rlen >= len).then(|| pool.base + index as u16)
        })
    }

    /// The first step of a checked request, or `None` when there is nothing to do.
    fn first_step(&mut self, io: &BdevIo, bytes: usize) -> Option<Step> {
        let bs = u64::from(self.shared.geometry.block_size);
        match io.kind {
            IoKind::Read { lba, .. } | IoKind::Write { lba, .. } => {
                if bytes == 0 {
                    return None;
                }
                let buf = io
                    .buf
                    .as_ref()
                    .expect("checked at submit: data carries a buffer");
                let (write, fua) = match io.kind {
                    IoKind::Write { fua, .. } => (true, fua),
                    _ => (false, false),
                };
                Some(Step::Rw {
                    write,
                    fua,
                    fixed: self.fixed_index(buf, bytes),
                    offset: lba * bs,
                    done: 0,
                    total: bytes,
                })
            }
            IoKind::Flush => Some(Step::Flush),
            IoKind::WriteZeroes { blocks: 0, .. } | IoKind::Unmap { blocks: 0, .. } => None,
            IoKind::WriteZeroes { lba, blocks } => {
                let (offset, len) = (lba * bs, blocks * bs);
                if self.shared.zero_range.load(Ordering::Relaxed) {
                    Some(Step::Fallocate {
                        mode: libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        offset,
                        len,
                    })
                } else {
                    self.stats.emulated_zeroes += 1;
                    Some(Step::ZeroFill {
                        offset,
                        end: offset + len,
                    })
                }
            }
            IoKind::Copy { .. } => unreachable!("refused at submit"),
            IoKind::Unmap { lba, blocks } => Some(Step::Fallocate {
                mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset: lba * bs,
                len: blocks * bs,
            }),
        }
    }

    /// Builds the entry for the current step of the op in `slot`.
    fn entry(&mut self, slot: u32) -> squeue::Entry {
        let fd = types::Fd(self.shared.file.as_raw_fd());
        if matches!(
            self.slots[slot as usize].as_ref().map(|op| op.step),
            Some(Step::ZeroFill { .. })
        ) && self.zero_buf.is_none()
        {
            self.zero_buf = Some(IoBuf::new(ZERO_BUF_BYTES));
        }
        let op = self.slots[slot as usize]
            .as_mut()
            .expect("entries are built for occupied slots");
        let entry = match op.step {
            Step::Rw {
                write,
                fua,
                fixed,
                offset,
                done,
                total,
            } => {
                let buf = op.io.buf.as_mut().expect("Rw ops own a buffer");
                let len = (total - done) as u32; // total <= MAX_TRANSFER_BYTES
                let offset = offset + done as u64;
                let rw_flags = if fua { libc::RWF_DSYNC } else { 0 };
                match (write, fixed) {
                    (false, Some(index)) => {
                        let ptr = buf.as_mut_ptr().wrapping_add(done);
                        opcode::ReadFixed::new(fd, ptr, len, index)
                            .offset(offset)
                            .build()
                    }
                    (false, None) => {
                        let ptr = buf.as_mut_ptr().wrapping_add(done);
                        opcode::Read::new(fd, ptr, len).offset(offset).build()
                    }
                    (true, Some(index)) => {
                        let ptr = buf.as_ptr().wrapping_add(done);
                        opcode::WriteFixed::new(fd, ptr, len, index)
                            .offset(offset)
                            .rw_flags(rw_flags)
                            .build()
                    }
                    (true, None) => {
                        let ptr = buf.as_ptr().wrapping_add(done);
                        opcode::Write::new(fd, ptr, len)
                            .offset(offset)
                            .rw_flags(rw_flags)
                            .build()
                    }
                }
            }
            Step::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Step::Fallocate { mode, offset, len } => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(mode)
                .build(),
            Step::ZeroFill { offset, end } => {
                let zero = self.zero_buf.as_ref().expect("allocated above");
                let len = (end - offset).min(zero.capacity() as u64) as u32;
                opcode::Write::new(fd, zero.as_ptr(), len)
                    .offset(offset)
                    .build()
            }
        };
        entry.user_data(u64::from(slot))
    }

    /// Queues the current step of `slot` for the next `poll`'s system call.
    #[allow(unsafe_code)]
    fn push(&mut self, slot: u32) {
        let entry = self.entry(slot);
        if !self.backlog.is_empty() {
            self.backlog.push_back(entry);
            return;
        }
        // SAFETY: the entry points into the op's own IoBuf (kept in its slot until the
        // completion is reaped) or into the channel's zero buffer (never written, dropped
        // after Drop has reaped every op).
        if unsafe { sys::push(&mut self.ring, &entry) }.is_err() {
            self.backlog.push_back(entry);
        }
    }

    #[allow(unsafe_code)]
    fn drain_backlog(&mut self) {
        while let Some(entry) = self.backlog.pop_front() {
            // SAFETY: as in `push`; the op that owns the buffer is still in its slot.
            if unsafe { sys::push(&mut self.ring, &entry) }.is_err() {
                self.backlog.push_front(entry);
                break;
            }
        }
    }

    /// What a completion with result `res` means for `op`.
    fn advance(&mut self, op: &mut Op, res: i32) -> Next {
        match op.step {
            Step::Rw {
                write,
                fua,
                fixed,
                offset,
                done,
                total,
            } => {
                if res < 0 {
                    return Next::Complete(Err(BdevError::from_errno(-res)));
                }
                if res == 0 {
                    // The file shrank under us, or the device returned nothing: no progress.
                    return Next::Complete(Err(BdevError::from_errno(libc::EIO)));
                }
                let done = done + res as usize;
                if done < total {
                    self.stats.short_resubmits += 1;
                    return Next::Resubmit(Step::Rw {
                        write,
                        fua,
                        fixed,
                        offset,
                        done,
                        total,
                    });
                }
                if !write {
                    if let Some(buf) = op.io.buf.as_mut() {
                        buf.set_len(total);
                    }
                }
                Next::Complete(Ok(()))
            }
            Step::Flush => Next::Complete(errno_result(res)),
            Step::Fallocate { mode, offset, len } => {
                let zero_range = mode & libc::FALLOC_FL_ZERO_RANGE != 0;
                if zero_range && res == -libc::EOPNOTSUPP {
                    if self.shared.zero_range.swap(false, Ordering::Relaxed) {
                        log::warn!("file system refuses ZERO_RANGE; writing zeroes instead");
                    }
                    self.stats.emulated_zeroes += 1;
                    return Next::Resubmit(Step::ZeroFill {
                        offset,
                        end: offset + len,
                    });
                }
                Next::Complete(errno_result(res))
            }
            Step::ZeroFill { offset, end } => {
                if res <= 0 {
                    let errno = if res < 0 { -res } else { libc::EIO };
                    return Next::Complete(Err(BdevError::from_errno(errno)));
                }
                let offset = offset + res as u64;
                if offset < end {
                    Next::Resubmit(Step::ZeroFill { offset, end })
                } else {
                    Next::Complete(Ok(()))
                }
            }
        }
    }

    /// Handles one completion entry; returns the finished request, if it finished.
    fn on_cqe(&mut self, slot: u32, res: i32) -> Option<(BdevIo, Result<(), BdevError>)> {
        let Some(mut op) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            log::error!("io_uring completion for unknown slot {slot}");
            return None;
        };
        match self.advance(&mut op, res) {
            Next::Resubmit(step) => {
                op.step = step;
                self.slots[slot as usize] = Some(op);
                self.push(slot);
                None
            }
            Next::Complete(result) => {
                self.free.push(slot);
                Some((op.io, result))
            }
        }
    }

    fn enter(&mut self) {
        self.drain_backlog();
        if self.ring.submission().is_empty() {
            return;
        }
        self.stats.kernel_enters += 1;
        if let Err(e) = self.ring.submit() {
            // EBUSY/EAGAIN/EINTR: the entries stay queued and go with the next poll.
            if !matches!(
                e.raw_os_error(),
                Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
            ) {
                log::error!("io_uring_enter failed: {e}");
            }
        }
    }
}

impl IoChannel for UringChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        let bytes = match self.shared.geometry.check(&io) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.stats.rejected += 1;
                return Err((io, e));
            }
        };
        if matches!(io.kind, IoKind::Unmap { .. }) && !self.shared.unmap {
            self.stats.rejected += 1;
            return Err((io, BdevError::Unsupported("unmap")));
        }
        if let IoKind::Copy {
            src_lba,
            dst_lba,
            blocks,
        } = io.kind
        {
            if !self.shared.reflink {
                self.stats.rejected += 1;
                return Err((io, BdevError::Unsupported("copy")));
            }
            // A reflink is metadata-only: done now, reported by the next poll (see
            // `reflink`). Zero blocks would mean "to the end of the file" to the kernel.
            let bs = u64::from(self.shared.geometry.block_size);
            let result = if blocks == 0 {
                Ok(())
            } else {
                let file = &self.shared.file;
                sys::clone_range(file, src_lba * bs, blocks * bs, file, dst_lba * bs)
                    .map_err(BdevError::Io)
            };
            self.stats.submitted += 1;
            if result.is_err() {
                self.stats.failed += 1;
            }
            self.ready.push_back((io, result));
            return Ok(());
        }
        let Some(&slot) = self.free.last() else {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        };
        self.stats.submitted += 1;
        let Some(step) = self.first_step(&io, bytes) else {
            self.ready.push_back((io, Ok(())));
            return Ok(());
        };
        if let Step::Rw { fixed: Some(_), .. } = step {
            self.stats.fixed_buffer_ops += 1;
        }
        self.free.pop();
        self.slots[slot as usize] = Some(Op { io, step });
        self.push(slot);
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        let mut n = 0;
        while n < max {
            let Some((io, result)) = self.ready.pop_front() else {
                break;
            };
            self.stats.completed += 1;
            done(io, result);
            n += 1;
        }
        self.enter();
        while n < max {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            // user_data is always a slot index (< depth <= u32::MAX).
            let slot = cqe.user_data() as u32;
            if let Some((io, result)) = self.on_cqe(slot, cqe.result()) {
                self.stats.completed += 1;
                if result.is_err() {
                    self.stats.failed += 1;
                }
                done(io, result);
                n += 1;
            }
        }
        if self.in_flight() == 0 {
            // Nothing can complete any more: reset the wakeup eventfd, or an idle reactor would
            // see it readable forever and never park. (With I/O in flight it stays readable:
            // there is work coming.)
            if let Some(fd) = &self.eventfd {
                let _ = rustix::io::read(fd, &mut [0u8; 8]);
            }
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len() + self.ready.len()
    }

    fn wakeup_fd(&self) -> Option<BorrowedFd<'_>> {
        self.eventfd.as_ref().map(AsFd::as_fd)
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}

impl Drop for UringChannel {
    /// The kernel may still write into buffers of in-flight ops: wait for every one of them
    /// before the buffers are freed. If waiting fails, leak them instead.
    fn drop(&mut self) {
        let pending = self.slots.len() - self.free.len() + self.ready.len();
        if pending == 0 {
            return;
        }
        let had_ops = self.free.len() < self.slots.len();
        log::warn!("file bdev channel dropped with {pending} requests in flight; waiting");
        self.ready.clear();
        // Entries still in the backlog never reached the kernel.
        while let Some(entry) = self.backlog.pop_front() {
            let slot = entry.get_user_data() as usize;
            if let Some(op) = self.slots.get_mut(slot).and_then(Option::take) {
                drop(op);
                self.free.push(slot as u32);
            }
        }
        while self.free.len() < self.slots.len() {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                log::error!("cannot wait for in-flight io_uring ops ({e}); leaking their buffers");
                for op in self.slots.iter_mut().filter_map(Option::take) {
                    std::mem::forget(op);
                }
                std::mem::forget(self.zero_buf.take());
                return;
            }
            while let Some(cqe) = self.ring.completion().next() {
                let slot = cqe.user_data() as usize;
                if self.slots.get_mut(slot).and_then(Option::take).is_some() {
                    self.free.push(slot as u32);
                }
            }
        }
        // Only now, with nothing left for the kernel to write into.
        debug_assert!(
            std::thread::panicking() || !had_ops,
            "file bdev channel dropped with requests in flight"
        );
    }
}

fn errno_result(res: i32) -> Result<(), BdevError> {
    if res < 0 {
        Err(BdevError::from_errno(-res))
    } else {
        Ok(())
    }
}

/// Registers the reactor's pools as fixed buffers, as many whole pools as the kernel allows.
/// On failure (e.g. RLIMIT_MEMLOCK) the channel works without fixed buffers.
fn register_pools(ring: &IoUring, buffers: &[&[(usize, usize)]]) -> Vec<RegisteredPool> {
    let mut pools = Vec::new();
    let mut all = Vec::new();
    for regions in buffers {
        if regions.is_empty() {
            continue;
        }
        if all.len() + regions.len() > MAX_REGISTERED {
            log::warn!(
                "more than {MAX_REGISTERED} pool buffers; a pool of {} uses unregistered I/O",
                regions.len()
            );
            continue;
        }
        pools.push(RegisteredPool {
            base: all.len() as u16, // < MAX_REGISTERED
            regions: regions.to_vec(),
        });
        all.extend_from_slice(regions);
    }
    if all.is_empty() {
        return Vec::new();
    }
    match sys::register_buffers(ring, &all) {
        Ok(()) => pools,
        Err(e) => {
            log::warn!(
                "cannot register {} I/O buffers with io_uring: {e}",
                all.len()
            );
            Vec::new()
        }
    }
}
