//! The io_uring channel of a file device: one ring per reactor, one op slot per request.
//!
//! Each slot has at most one submission queue entry in flight, and the ring has at least as
//! many entries as there are slots, so pushing never finds the queue full in practice (a
//! backlog covers it anyway). A request may take several entries in sequence: the remainder of
//! a short read or write, or the chunks of an emulated WriteZeroes.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferrite_reactor::PoolRegions;
use ferrite_uring::{sys, Request, Ring};

use super::FileShared;
use crate::io::ChannelStats;
use crate::{BdevError, BdevIo, IoChannel, IoKind};

/// Default number of requests in flight per channel.
pub const DEFAULT_RING_DEPTH: u32 = 256;

/// Where a request stands.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Read or write of `total` bytes at file offset `offset`, `done` bytes so far.
    Rw {
        write: bool,
        fua: bool,
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
    /// Writing zeroes from the ring's zero buffer; `offset` is the next byte to write.
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

/// The file channel. The ring (in `ferrite-uring`) holds the buffer of each in-flight step and
/// gives it back with the completion; the op slots here hold the rest of each request.
pub(super) struct UringChannel {
    ring: Ring,
    shared: Arc<FileShared>,
    slots: Vec<Option<Op>>,
    free: Vec<u32>,
    /// Completed without touching the kernel (zero-length requests, reflinks), handed back by
    /// `poll`.
    ready: VecDeque<(BdevIo, Result<(), BdevError>)>,
    stats: ChannelStats,
}

impl std::fmt::Debug for UringChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringChannel")
            .field("depth", &self.slots.len())
            .field("in_flight", &self.in_flight())
            .field("ring", &self.ring)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl UringChannel {
    pub fn new(
        shared: Arc<FileShared>,
        depth: u32,
        buffers: &[&PoolRegions],
    ) -> Result<Self, BdevError> {
        Ok(Self {
            ring: Ring::new(depth, buffers)?,
            shared,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            ready: VecDeque::new(),
            stats: ChannelStats::default(),
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
                let (write, fua) = match io.kind {
                    IoKind::Write { fua, .. } => (true, fua),
                    _ => (false, false),
                };
                Some(Step::Rw {
                    write,
                    fua,
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

    /// Hands the current step of the op in `slot` to the ring (the kernel sees it at the next
    /// `poll`). A refusal (a bug: slots are ours and buffers were checked) fails the request.
    fn push(&mut self, slot: u32) {
        let fd = self.shared.file.as_raw_fd();
        let op = self.slots[slot as usize]
            .as_mut()
            .expect("steps are pushed for occupied slots");
        let request = match op.step {
            Step::Rw {
                write,
                fua,
                offset,
                done,
                total,
            } => {
                let buf = op.io.buf.take().expect("Rw ops own a buffer");
                let len = (total - done) as u32; // total <= MAX_TRANSFER_BYTES
                let offset = offset + done as u64;
                if write {
                    Request::Write {
                        buf,
                        start: done,
                        len,
                        offset,
                        dsync: fua,
                    }
                } else {
                    Request::Read {
                        buf,
                        start: done,
                        len,
                        offset,
                    }
                }
            }
            Step::Flush => Request::Fsync,
            Step::Fallocate { mode, offset, len } => Request::Fallocate { mode, offset, len },
            Step::ZeroFill { offset, end } => Request::WriteZeroes {
                offset,
                len: end - offset,
            },
        };
        if let Err(refused) = self.ring.submit(slot, fd, request) {
            log::error!("io_uring refused a request: {}", refused.reason);
            let mut op = self.slots[slot as usize].take().expect("occupied");
            if let Request::Read { buf, .. } | Request::Write { buf, .. } = refused.request {
                op.io.buf = Some(buf);
            }
            self.free.push(slot);
            let e = std::io::Error::other(refused.reason);
            self.ready.push_back((op.io, Err(BdevError::Io(e))));
        }
    }

    /// What a completion with result `res` means for `op`.
    fn advance(&mut self, op: &mut Op, res: i32) -> Next {
        match op.step {
            Step::Rw {
                write,
                fua,
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
    fn on_cqe(
        &mut self,
        done: ferrite_uring::Completion,
    ) -> Option<(BdevIo, Result<(), BdevError>)> {
        let (slot, res) = (done.slot, done.result);
        let Some(mut op) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            log::error!("io_uring completion for unknown slot {slot}");
            return None;
        };
        if done.buf.is_some() {
            op.io.buf = done.buf;
        }
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
        self.ring.enter();
        while n < max {
            let Some(finished) = self.ring.complete() else {
                break;
            };
            if let Some((io, result)) = self.on_cqe(finished) {
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
            self.ring.reset_wakeup();
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len() + self.ready.len()
    }

    fn wakeup_fd(&self) -> Option<BorrowedFd<'_>> {
        self.ring.wakeup_fd()
    }

    fn stats(&self) -> ChannelStats {
        let ring = self.ring.stats();
        ChannelStats {
            fixed_buffer_ops: ring.fixed_buffer_ops,
            kernel_enters: ring.kernel_enters,
            ..self.stats
        }
    }
}

impl Drop for UringChannel {
    /// The ring waits for the kernel before it frees the buffers it holds; requests dropped
    /// with the channel are a caller bug (drain first).
    fn drop(&mut self) {
        let pending = self.in_flight();
        if pending > 0 {
            log::warn!("file bdev channel dropped with {pending} requests in flight; waiting");
            debug_assert!(
                std::thread::panicking() || self.free.len() == self.slots.len(),
                "file bdev channel dropped with requests in flight"
            );
        }
    }
}

fn errno_result(res: i32) -> Result<(), BdevError> {
    if res < 0 {
        Err(BdevError::from_errno(-res))
    } else {
        Ok(())
    }
}
