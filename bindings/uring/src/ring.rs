//! A safe io_uring for one reactor: requests identified by a slot number, the buffers of
//! in-flight requests held by the ring, fixed-buffer registration owned by the ring.
//!
//! Invariants that make [`crate::raw::push`] sound here:
//! - an entry points only into the `IoBuf` held in `inflight[slot]` of its own slot or into
//!   `zero`, and both stay in the ring until the slot's completion is reaped (an `IoBuf`'s pages
//!   are a boxed slice: moving the `IoBuf` does not move them);
//! - a slot has at most one entry in the kernel or the backlog at a time;
//! - `Drop` waits for every entry that reached the kernel before the buffers are freed, and
//!   leaks them if it cannot wait.
//!
//! And [`crate::raw::register_buffers`]: the ring keeps the [`PoolRegions`] it registered
//! (owned, dropped with the ring) and issues READ_FIXED / WRITE_FIXED only for a buffer that
//! [`PoolRegions::matches`]: same pool identity (never reused within a process), same index,
//! same address. Only the original pool buffer carries that identity, and its allocation never
//! changes, so the registered pages are exactly the buffer's pages; a pool dropped before the
//! ring cannot lead to a fixed operation on memory that is not the registered buffer.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use ferrite_reactor::{IoBuf, PoolRegions};
use io_uring::{opcode, squeue, types, IoUring};

use crate::{raw, sys};

/// The kernel's limit on registered buffers per ring (IORING_MAX_REG_BUFFERS).
const MAX_REGISTERED: usize = 1 << 14;

/// Size of the zero buffer [`Request::WriteZeroes`] writes from.
pub const ZERO_BUF_BYTES: usize = 256 * 1024;

/// One operation on a file descriptor. Buffers move into the ring and come back in the
/// [`Completion`].
#[derive(Debug)]
pub enum Request {
    /// Reads `len` bytes at file `offset` into `buf[start..start + len]`.
    Read {
        buf: IoBuf,
        start: usize,
        len: u32,
        offset: u64,
    },
    /// Writes `buf[start..start + len]` at file `offset`; `dsync`: RWF_DSYNC (FUA).
    Write {
        buf: IoBuf,
        start: usize,
        len: u32,
        offset: u64,
        dsync: bool,
    },
    /// Writes up to `len` zero bytes (at most [`ZERO_BUF_BYTES`]) at `offset`; the completion
    /// says how many.
    WriteZeroes { offset: u64, len: u64 },
    /// fdatasync.
    Fsync,
    /// fallocate(mode, offset, len).
    Fallocate { mode: i32, offset: u64, len: u64 },
}

/// Why a request was not queued; it comes back untouched.
#[derive(Debug)]
pub struct Refused {
    pub request: Request,
    pub reason: &'static str,
}

/// A finished request: the kernel's result (bytes or `-errno`) and its buffer back.
#[derive(Debug)]
pub struct Completion {
    pub slot: u32,
    pub result: i32,
    pub buf: Option<IoBuf>,
}

/// Counters of a ring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// io_uring_enter calls.
    pub kernel_enters: u64,
    /// Reads and writes issued with a registered (fixed) buffer.
    pub fixed_buffer_ops: u64,
}

/// One registered pool: its buffers are fixed buffers `base..base + regions.len()`.
#[derive(Debug)]
struct Registered {
    base: u16,
    pool: PoolRegions,
}

pub struct Ring {
    ring: IoUring,
    /// The buffer each slot's in-flight request owns.
    inflight: Vec<Option<IoBuf>>,
    /// Slots with an entry in the kernel or the backlog.
    busy: Vec<bool>,
    busy_count: usize,
    /// Entries that did not fit in the submission queue (their buffers are in `inflight`).
    backlog: VecDeque<squeue::Entry>,
    registered: Vec<Registered>,
    zero: Option<IoBuf>,
    eventfd: Option<OwnedFd>,
    stats: RingStats,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("slots", &self.busy.len())
            .field("in_flight", &self.busy_count)
            .field("registered_pools", &self.registered.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring for `slots` requests at once, with the buffers of `pools` registered as fixed
    /// buffers (as many whole pools as the kernel allows; none if registration fails, e.g. on
    /// RLIMIT_MEMLOCK) and an eventfd signalled on completions when the kernel offers one.
    pub fn new(slots: u32, pools: &[&PoolRegions]) -> io::Result<Ring> {
        let ring = IoUring::new(slots)?;
        let registered = register(&ring, pools);
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
        Ok(Ring {
            ring,
            inflight: (0..slots).map(|_| None).collect(),
            busy: vec![false; slots as usize],
            busy_count: 0,
            backlog: VecDeque::new(),
            registered,
            zero: None,
            eventfd,
            stats: RingStats::default(),
        })
    }

    /// Requests in the kernel or waiting to go there.
    pub fn in_flight(&self) -> usize {
        self.busy_count
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Readable while completions may be pending (see [`Ring::reset_wakeup`]).
    pub fn wakeup_fd(&self) -> Option<BorrowedFd<'_>> {
        self.eventfd.as_ref().map(AsFd::as_fd)
    }

    /// Clears the eventfd; call when nothing is in flight, or an idle reactor sees it readable
    /// forever.
    pub fn reset_wakeup(&self) {
        if let Some(fd) = &self.eventfd {
            let _ = rustix::io::read(fd, &mut [0u8; 8]);
        }
    }

    /// The fixed-buffer index of `buf` if it is a registered pool buffer of `len` bytes or more.
    fn fixed_index(&self, buf: &IoBuf, len: usize) -> Option<u16> {
        let index = buf.pool_index()?;
        self.registered
            .iter()
            .find(|r| r.pool.matches(buf, len))
            // Fits: base + regions.len() <= MAX_REGISTERED < u16::MAX.
            .map(|r| r.base + index)
    }

    /// Queues `request` for slot `slot` on `fd`; it goes to the kernel at the next
    /// [`Ring::enter`]. Refused (and handed back) when the slot is out of range or busy, or a
    /// buffer range lies outside its buffer.
    pub fn submit(&mut self, slot: u32, fd: RawFd, request: Request) -> Result<(), Refused> {
        let refuse = |request, reason| Err(Refused { request, reason });
        let index = slot as usize;
        if index >= self.busy.len() {
            return refuse(request, "slot out of range");
        }
        if self.busy[index] {
            return refuse(request, "slot busy");
        }
        if let Err(reason) = check_range(&request) {
            return refuse(request, reason);
        }
        let fd = types::Fd(fd);
        let entry = match request {
            Request::Read {
                mut buf,
                start,
                len,
                offset,
            } => {
                let end = start + len as usize; // checked above
                let fixed = self.fixed_index(&buf, end);
                let ptr = buf.as_mut_ptr().wrapping_add(start);
                let entry = match fixed {
                    Some(i) => opcode::ReadFixed::new(fd, ptr, len, i)
                        .offset(offset)
                        .build(),
                    None => opcode::Read::new(fd, ptr, len).offset(offset).build(),
                };
                self.stats.fixed_buffer_ops += u64::from(fixed.is_some());
                self.inflight[index] = Some(buf);
                entry
            }
            Request::Write {
                buf,
                start,
                len,
                offset,
                dsync,
            } => {
                let fixed = self.fixed_index(&buf, start + len as usize);
                let ptr = buf.as_ptr().wrapping_add(start);
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                let entry = match fixed {
                    Some(i) => opcode::WriteFixed::new(fd, ptr, len, i)
                        .offset(offset)
                        .rw_flags(flags)
                        .build(),
                    None => opcode::Write::new(fd, ptr, len)
                        .offset(offset)
                        .rw_flags(flags)
                        .build(),
                };
                self.stats.fixed_buffer_ops += u64::from(fixed.is_some());
                self.inflight[index] = Some(buf);
                entry
            }
            Request::WriteZeroes { offset, len } => {
                let zero = self.zero.get_or_insert_with(|| IoBuf::new(ZERO_BUF_BYTES));
                let len = len.min(zero.capacity() as u64) as u32;
                opcode::Write::new(fd, zero.as_ptr(), len)
                    .offset(offset)
                    .build()
            }
            Request::Fsync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Request::Fallocate { mode, offset, len } => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(mode)
                .build(),
        };
        self.busy[index] = true;
        self.busy_count += 1;
        let entry = entry.user_data(u64::from(slot));
        if !self.backlog.is_empty() {
            self.backlog.push_back(entry);
            return Ok(());
        }
        // SAFETY: the entry points into `inflight[slot]` or `zero` (see the module invariants),
        // both kept until this slot's completion is reaped or `Drop` has waited for it.
        if unsafe { raw::push(&mut self.ring, &entry) }.is_err() {
            self.backlog.push_back(entry);
        }
        Ok(())
    }

    /// Moves the backlog into the submission queue and tells the kernel about new entries.
    pub fn enter(&mut self) {
        while let Some(entry) = self.backlog.pop_front() {
            // SAFETY: as in `submit`; the entry's slot is still busy, its buffer held.
            if unsafe { raw::push(&mut self.ring, &entry) }.is_err() {
                self.backlog.push_front(entry);
                break;
            }
        }
        if self.ring.submission().is_empty() {
            return;
        }
        self.stats.kernel_enters += 1;
        if let Err(e) = self.ring.submit() {
            // EBUSY/EAGAIN/EINTR: the entries stay queued and go with the next call.
            if !matches!(
                e.raw_os_error(),
                Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
            ) {
                log::error!("io_uring_enter failed: {e}");
            }
        }
    }

    /// The next finished request, with its buffer.
    pub fn complete(&mut self) -> Option<Completion> {
        loop {
            let cqe = self.ring.completion().next()?;
            // user_data is always a slot number we set (< slots <= u32::MAX).
            let slot = cqe.user_data() as u32;
            let index = slot as usize;
            if !self.busy.get(index).copied().unwrap_or(false) {
                log::error!("io_uring completion for idle slot {slot}");
                continue;
            }
            self.busy[index] = false;
            self.busy_count -= 1;
            return Some(Completion {
                slot,
                result: cqe.result(),
                buf: self.inflight[index].take(),
            });
        }
    }
}

impl Drop for Ring {
    /// The kernel may still write into buffers of in-flight requests: wait for every one of
    /// them before the buffers are freed. If waiting fails, leak them instead.
    fn drop(&mut self) {
        // Entries still in the backlog never reached the kernel.
        while let Some(entry) = self.backlog.pop_front() {
            let index = entry.get_user_data() as usize;
            if let Some(busy) = self.busy.get_mut(index) {
                *busy = false;
                self.busy_count -= 1;
                self.inflight[index] = None;
            }
        }
        while self.busy_count > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                log::error!("cannot wait for in-flight io_uring requests ({e}); leaking buffers");
                for buf in self.inflight.iter_mut().filter_map(Option::take) {
                    std::mem::forget(buf);
                }
                std::mem::forget(self.zero.take());
                return;
            }
            while self.complete().is_some() {}
        }
    }
}

/// Whether a read or write stays inside its buffer.
fn check_range(request: &Request) -> Result<(), &'static str> {
    match request {
        Request::Read {
            buf, start, len, ..
        }
        | Request::Write {
            buf, start, len, ..
        } => match start.checked_add(*len as usize) {
            Some(end) if end <= buf.capacity() => Ok(()),
            _ => Err("range beyond the buffer"),
        },
        _ => Ok(()),
    }
}

/// Registers `pools` as fixed buffers, as many whole pools as the kernel allows. On failure the
/// ring works without fixed buffers.
fn register(ring: &IoUring, pools: &[&PoolRegions]) -> Vec<Registered> {
    let mut registered = Vec::new();
    let mut all = Vec::new();
    for pool in pools {
        let regions = pool.regions();
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
        registered.push(Registered {
            base: all.len() as u16, // < MAX_REGISTERED
            pool: (*pool).clone(),
        });
        all.extend_from_slice(regions);
    }
    if all.is_empty() {
        return Vec::new();
    }
    // SAFETY: a `PoolRegions` only comes from a `BufferPool`, so every region is (or was) one
    // of its buffers. Should that pool be gone already (a clone of its regions outliving it),
    // a region is either unmapped (the call fails with EFAULT) or the kernel pins pages it will
    // never touch: fixed operations are issued only for a live buffer that
    // `PoolRegions::matches`, i.e. the registered allocation itself (module invariants).
    match unsafe { raw::register_buffers(ring, &all) } {
        Ok(()) => registered,
        Err(e) => {
            log::warn!(
                "cannot register {} I/O buffers with io_uring: {e}",
                all.len()
            );
            Vec::new()
        }
    }
}
