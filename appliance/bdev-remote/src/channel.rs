//! A reactor's channel to a remote namespace: its own I/O queue pair, requests held while
//! the path is down and resubmitted on the next queue pair, long ranges split into commands.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, ChannelStats, IoChannel, IoKind};
use ferrite_host::{Completed, Data, HostError, QueuePair};
use ferrite_nvme::command::opcode;
use ferrite_nvme::io::{CopyCommand, CopySourceRange, DatasetManagement, DsmRange, ReadWrite};
use ferrite_nvme::{Command, Status};
use zerocopy::IntoBytes;

use crate::controller::{Mailbox, Msg, NsShared, Shared};

/// Requests a channel holds at once (in flight, held or being split).
const CHANNEL_DEPTH: usize = 128;
/// Blocks in one Write Zeroes command (NLB is 16 bits).
const MAX_WZ_BLOCKS: u64 = 65536;
/// Blocks in one Deallocate range.
const MAX_DSM_BLOCKS: u64 = 1 << 22;
/// Zero buffer for emulated Write Zeroes.
const ZERO_BUF: usize = 128 * 1024;
/// How often in-flight commands are checked against `io_timeout`.
const TIMEOUT_SCAN: Duration = Duration::from_millis(100);

/// One request and how far it got.
#[derive(Debug)]
struct Op {
    io: BdevIo,
    /// Next block of the range (destination for Copy).
    next: u64,
    /// Source block of the next Copy step.
    src_next: u64,
    /// Blocks left, including the step in flight.
    left: u64,
    /// Blocks of the step in flight.
    step: u64,
    /// When the step in flight was submitted.
    started: Instant,
}

pub(crate) struct RemoteChannel {
    shared: Arc<Shared>,
    ns: Arc<NsShared>,
    mailbox: Arc<Mailbox>,
    qp: Option<QueuePair>,
    qp_generation: u64,
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    /// cid -> op index of the command in flight.
    by_cid: Vec<Option<usize>>,
    /// Ops whose next step is not submitted (held, or continuing).
    waiting: VecDeque<usize>,
    done: VecDeque<(BdevIo, Result<(), BdevError>)>,
    completions: Vec<Completed>,
    zeroes: Vec<u8>,
    stats: ChannelStats,
    last_scan: Instant,
}

impl RemoteChannel {
    pub(crate) fn open(shared: Arc<Shared>, ns: Arc<NsShared>) -> RemoteChannel {
        let mailbox = Arc::new(Mailbox::default());
        shared.register(&mailbox);
        let zero_len = if ns.offloads.write_zeroes {
            0
        } else {
            ZERO_BUF.min(shared.max_transfer as usize)
        };
        RemoteChannel {
            shared,
            ns,
            mailbox,
            qp: None,
            qp_generation: 0,
            ops: (0..CHANNEL_DEPTH).map(|_| None).collect(),
            free: (0..CHANNEL_DEPTH).rev().collect(),
            by_cid: Vec::new(),
            waiting: VecDeque::with_capacity(CHANNEL_DEPTH),
            done: VecDeque::with_capacity(CHANNEL_DEPTH),
            completions: Vec::with_capacity(CHANNEL_DEPTH),
            zeroes: vec![0; zero_len],
            stats: ChannelStats::default(),
            last_scan: Instant::now(),
        }
    }

    /// Range, buffer and size checks (the ones every backend applies at submit).
    fn check(&self, io: &BdevIo) -> Result<(), BdevError> {
        let caps = self.ns.caps;
        match io.kind {
            IoKind::Unmap { .. } if !caps.unmap => {
                return Err(BdevError::Unsupported(
                    "deallocate: the remote has no Dataset Management",
                ))
            }
            IoKind::Copy { .. } if !caps.copy => {
                return Err(BdevError::Unsupported("copy: the remote has no Copy"))
            }
            _ => {}
        }
        let Some((lba, blocks)) = io.kind.range() else {
            return Ok(());
        };
        for (lba, blocks) in std::iter::once((lba, blocks)).chain(io.kind.source_range()) {
            if blocks == 0
                || lba
                    .checked_add(blocks)
                    .is_none_or(|end| end > self.ns.num_blocks)
            {
                return Err(BdevError::OutOfRange {
                    lba,
                    blocks,
                    num_blocks: self.ns.num_blocks,
                });
            }
        }
        let available = match io.kind {
            IoKind::Read { .. } => io.buf.as_ref().map_or(0, |b| b.capacity()),
            IoKind::Write { .. } => io.buf.as_ref().map_or(0, |b| b.len()),
            _ => return Ok(()),
        };
        let bytes = blocks * u64::from(self.ns.block_size);
        if bytes > u64::from(caps.max_transfer_bytes) {
            return Err(BdevError::TransferTooLarge {
                bytes,
                max: caps.max_transfer_bytes,
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

    /// Completes `op` (frees its slot).
    fn finish(&mut self, idx: usize, result: Result<(), BdevError>) {
        let op = self.ops[idx].take().expect("finished ops are live");
        self.free.push(idx);
        self.done.push_back((op.io, result));
    }

    /// Drops the queue pair; its commands go back to the front of the wait queue, to be
    /// sent again on the next queue pair (block writes are idempotent).
    fn lose_path(&mut self, why: String) {
        if let Some(mut qp) = self.qp.take() {
            qp.close();
            self.shared.send(Msg::PathLost {
                generation: self.qp_generation,
                why,
            });
        }
        for slot in self.by_cid.iter_mut() {
            if let Some(idx) = slot.take() {
                self.waiting.push_front(idx);
            }
        }
    }

    /// Follows the controller: a newer generation kills our queue pair; a queue pair of the
    /// current generation is taken from the mailbox.
    fn follow_generation(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if self.qp.is_some() && self.qp_generation != generation {
            if let Some(mut qp) = self.qp.take() {
                qp.close();
            }
            self.lose_path(String::new());
        }
        if self.qp.is_none() {
            let mut slot = self.mailbox.slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((g, qp)) = slot.take() {
                if g == generation {
                    self.by_cid = (0..qp.depth()).map(|_| None).collect();
                    self.qp = Some(qp);
                    self.qp_generation = g;
                }
                // else: stale (a reset overtook it); the manager serves a fresh one.
            }
        }
    }

    /// Fails what waits when I/O must fail (controller failed or detached, namespace
    /// unusable).
    fn fail_waiting(&mut self) {
        let why = if self.shared.io_failing.load(Ordering::Acquire) {
            Some(self.shared.failing_error())
        } else {
            self.ns
                .failure()
                .map(|f| io::Error::new(io::ErrorKind::InvalidData, f))
        };
        let Some(why) = why else { return };
        while let Some(idx) = self.waiting.pop_front() {
            let e = io::Error::new(why.kind(), why.to_string());
            self.finish(idx, Err(BdevError::Io(e)));
        }
        if self.ns.failure().is_some() {
            // In-flight commands to an unusable namespace fail too (the remote may still
            // complete them, but against a different layout).
            let inflight: Vec<usize> = self.by_cid.iter_mut().filter_map(Option::take).collect();
            if !inflight.is_empty() {
                // Their queue pair goes too; a reset brings a fresh one.
                self.lose_path(why.to_string());
                for idx in inflight {
                    let e = io::Error::new(why.kind(), why.to_string());
                    self.finish(idx, Err(BdevError::Io(e)));
                }
            }
        }
    }

    /// Submits the next step of every waiting op the queue pair has room for.
    fn issue(&mut self) {
        while let Some(&idx) = self.waiting.front() {
            let Some(qp) = self.qp.as_mut() else { return };
            let op = self.ops[idx].as_mut().expect("waiting ops are live");
            let nsid = self.ns.nsid;
            let bs = u64::from(self.ns.block_size);
            let (cmd, data, step) = build(op, nsid, bs, &self.ns, &self.zeroes);
            let dsm;
            let copy;
            let data = match data {
                StepData::None => Data::None,
                StepData::Read(n) => Data::Read(n),
                StepData::Write(range) => match &op.io.buf {
                    Some(b) => Data::Write(&b.as_slice()[range]),
                    None => Data::None,
                },
                StepData::Zeroes(n) => Data::Write(&self.zeroes[..n]),
                StepData::Dsm(r) => {
                    dsm = r;
                    Data::Write(dsm.as_bytes())
                }
                StepData::Copy(r) => {
                    copy = r;
                    Data::Write(copy.as_bytes())
                }
            };
            match qp.submit(&cmd, data) {
                Ok(cid) => {
                    op.step = step;
                    op.started = Instant::now();
                    self.by_cid[usize::from(cid.0)] = Some(idx);
                    self.waiting.pop_front();
                }
                Err(HostError::QueueFull { .. }) => return,
                Err(e) => {
                    self.lose_path(format!("submitting: {e}"));
                    return;
                }
            }
        }
    }

    /// Handles one completion: copies read data, advances or finishes the op.
    fn complete(&mut self, c: Completed) {
        let Some(idx) = self
            .by_cid
            .get_mut(usize::from(c.cid.0))
            .and_then(Option::take)
        else {
            return;
        };
        match c.check() {
            Ok(()) => {
                let op = self.ops[idx].as_mut().expect("in-flight ops are live");
                if let (IoKind::Read { blocks, .. }, Some(buf), Some(qp)) =
                    (op.io.kind, op.io.buf.as_mut(), self.qp.as_ref())
                {
                    let len = blocks as usize * self.ns.block_size as usize;
                    let data = qp.data(c.cid);
                    buf.spare_mut()[..len].copy_from_slice(&data[..len]);
                    buf.set_len(len);
                }
                op.next += op.step;
                op.src_next += op.step;
                op.left -= op.step;
                op.step = 0;
                if op.left == 0 {
                    self.finish(idx, Ok(()));
                } else {
                    self.waiting.push_back(idx);
                }
            }
            Err(e) => {
                let kind = self.ops[idx].as_ref().map(|o| o.io.kind);
                let err = match (e, kind) {
                    (HostError::Status(s), Some(k)) if s == Status::LBA_OUT_OF_RANGE => {
                        let (lba, blocks) = k.range().unwrap_or((0, 0));
                        BdevError::OutOfRange {
                            lba,
                            blocks,
                            num_blocks: self.ns.num_blocks,
                        }
                    }
                    (e, _) => BdevError::Io(io::Error::other(format!(
                        "remote {} namespace {}: {e}",
                        self.shared.opts.name, self.ns.nsid
                    ))),
                };
                self.finish(idx, Err(err));
            }
        }
    }

    /// A command outstanding longer than `io_timeout` means the path is stuck: reset.
    fn scan_timeouts(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_scan) < TIMEOUT_SCAN {
            return;
        }
        self.last_scan = now;
        let limit = self.shared.opts.io_timeout;
        let stuck = self
            .by_cid
            .iter()
            .flatten()
            .filter_map(|&i| self.ops[i].as_ref())
            .any(|op| now.duration_since(op.started) > limit);
        if stuck {
            self.lose_path(format!("a command took longer than {limit:?}"));
        }
    }
}

/// What a step sends.
enum StepData {
    None,
    Read(u32),
    /// Byte range of the request's buffer.
    Write(std::ops::Range<usize>),
    Zeroes(usize),
    Dsm(DsmRange),
    Copy(CopySourceRange),
}

/// The command of `op`'s next step and its block count.
fn build(op: &Op, nsid: u32, bs: u64, ns: &NsShared, zeroes: &[u8]) -> (Command, StepData, u64) {
    let rw = |slba: u64, blocks: u64, fua: bool| ReadWrite {
        nsid,
        slba,
        // 1..=65536 blocks: callers bound `blocks`.
        nlb: (blocks - 1) as u16,
        fua,
        ..ReadWrite::default()
    };
    match op.io.kind {
        IoKind::Read { lba, blocks } => (
            rw(lba, u64::from(blocks), false).to_command(opcode::io::READ, 0),
            StepData::Read(blocks * bs as u32),
            u64::from(blocks),
        ),
        IoKind::Write { lba, blocks, fua } => (
            rw(lba, u64::from(blocks), fua).to_command(opcode::io::WRITE, 0),
            StepData::Write(0..blocks as usize * bs as usize),
            u64::from(blocks),
        ),
        IoKind::Flush => {
            let mut cmd = Command::new(opcode::io::FLUSH, 0);
            cmd.nsid = nsid.into();
            // One step of "one block" (see `submit`).
            (cmd, StepData::None, 1)
        }
        IoKind::WriteZeroes { .. } if ns.offloads.write_zeroes => {
            let step = op.left.min(MAX_WZ_BLOCKS);
            (
                rw(op.next, step, false).to_command(opcode::io::WRITE_ZEROES, 0),
                StepData::None,
                step,
            )
        }
        IoKind::WriteZeroes { .. } => {
            let step = op.left.min(zeroes.len() as u64 / bs).max(1);
            (
                rw(op.next, step, false).to_command(opcode::io::WRITE, 0),
                StepData::Zeroes((step * bs) as usize),
                step,
            )
        }
        IoKind::Unmap { .. } => {
            let step = op.left.min(MAX_DSM_BLOCKS);
            let cmd = DatasetManagement {
                nsid,
                nr: 0,
                ad: true,
                ..DatasetManagement::default()
            }
            .to_command(0);
            (
                cmd,
                StepData::Dsm(DsmRange::new(op.next, step as u32)),
                step,
            )
        }
        IoKind::Copy { .. } => {
            let step = op.left.min(u64::from(ns.copy_chunk));
            let cmd = CopyCommand {
                nsid,
                sdlba: op.next,
                nr: 0,
                ..CopyCommand::default()
            }
            .to_command(0);
            let range = CopySourceRange::new(op.src_next, step as u32)
                .expect("copy steps are 1..=65536 blocks");
            (cmd, StepData::Copy(range), step)
        }
    }
}

impl IoChannel for RemoteChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        if let Err(e) = self.check(&io) {
            self.stats.rejected += 1;
            return Err((io, e));
        }
        let Some(idx) = self.free.pop() else {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        };
        let (next, left) = io.kind.range().unwrap_or((0, 1));
        // A Flush is one step of "one block" (nothing is addressed).
        let left = if matches!(io.kind, IoKind::Flush) {
            1
        } else {
            left
        };
        let src_next = io.kind.source_range().map_or(0, |(s, _)| s);
        self.ops[idx] = Some(Op {
            io,
            next,
            src_next,
            left,
            step: 0,
            started: Instant::now(),
        });
        self.stats.submitted += 1;
        self.waiting.push_back(idx);
        if !self.shared.io_failing.load(Ordering::Acquire) && self.ns.failure().is_none() {
            self.issue();
        }
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        self.follow_generation();
        self.fail_waiting();
        if let Some(qp) = self.qp.as_mut() {
            if qp.outstanding() > 0 || qp.pending_tx() > 0 {
                self.completions.clear();
                match qp.poll(&mut self.completions) {
                    Ok(_) => {
                        let batch = std::mem::take(&mut self.completions);
                        for c in batch.iter().copied() {
                            self.complete(c);
                        }
                        self.completions = batch;
                    }
                    Err(e) => self.lose_path(format!("I/O queue: {e}")),
                }
            }
        }
        if !self.waiting.is_empty() && self.ns.failure().is_none() {
            self.issue();
        }
        self.scan_timeouts();
        let mut n = 0;
        while n < max {
            let Some((io, r)) = self.done.pop_front() else {
                break;
            };
            self.stats.completed += 1;
            self.stats.failed += u64::from(r.is_err());
            done(io, r);
            n += 1;
        }
        n
    }

    fn in_flight(&self) -> usize {
        CHANNEL_DEPTH - self.free.len() + self.done.len()
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}

impl Drop for RemoteChannel {
    fn drop(&mut self) {
        if let Some(mut qp) = self.qp.take() {
            qp.close();
        }
    }
}
