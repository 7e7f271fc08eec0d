//! Copy (opcode 19h) on I/O queues: descriptor format 0h, source ranges copied in order into
//! consecutive destination LBAs of the same namespace.
//!
//! Each range goes to the backend as one `IoKind::Copy` when the bdev can
//! (`Capabilities::copy`: offloaded or done in metadata) and the range does not overlap its
//! destination (a reflink refuses that, and the result is undefined anyway), otherwise it is
//! emulated here with
//! Read then Write through one pooled buffer of at most [`MAX_TRANSFER_BYTES`]. Either way a
//! command has exactly one backend operation in flight: the next one is issued from the
//! completion of the previous, so a long Copy interleaves with every other command of the
//! reactor instead of monopolising it, and its memory is one buffer whatever its length.
//!
//! Limits advertised in Identify Namespace ([`CopyLimits`]):
//! - MSRC 127 (128 ranges): 128 format-0 descriptors are 4 KiB, which fits in-capsule data;
//! - MCL: [`COPY_MAX_BYTES`] (64 MiB) worth of blocks, so that an emulated Copy (at most 512
//!   sequential 128 KiB read/write pairs) finishes well inside host command timeouts;
//! - MSSRL: MCL capped at 65,535 (the largest value the 16-bit field holds).
//!
//! Failure: CQE Dword 0 carries the index of the lowest source range not copied successfully
//! (ranges are processed strictly in order, so that is the range being worked on), with the
//! status of the failing backend operation.

use ferrite_bdev::{BdevError, BdevIo, IoKind};
use ferrite_nvme::io::{CopyCommand, CopyRangeError};
use ferrite_nvme::Status;
use ferrite_reactor::{IoBuf, TaskContext};

use crate::bdev_status::status_of;
use crate::poll_group::{ConnId, Exec, NsInfo, PollGroup, QpairState};
use crate::request::{DataPlan, Request, Response};
use crate::MAX_TRANSFER_BYTES;

/// Maximum Source Range Count (0-based): 128 descriptors, 4 KiB of data.
pub(crate) const COPY_MSRC: u8 = 127;
/// Bytes one Copy command may move; MCL is this in the namespace's blocks.
pub(crate) const COPY_MAX_BYTES: u64 = 64 << 20;

/// The Copy limits of a namespace with `block_size`-byte blocks (Identify Namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyLimits {
    /// Maximum Single Source Range Length, in blocks.
    pub mssrl: u16,
    /// Maximum Copy Length, in blocks.
    pub mcl: u32,
    /// Maximum Source Range Count, 0-based.
    pub msrc: u8,
}

impl CopyLimits {
    pub fn for_block_size(block_size: u32) -> CopyLimits {
        let mcl = (COPY_MAX_BYTES / u64::from(block_size.max(1))) as u32;
        CopyLimits {
            mssrl: mcl.min(u32::from(u16::MAX)) as u16,
            mcl,
            msrc: COPY_MSRC,
        }
    }
}

/// What the command's one in-flight backend operation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing in flight: the next operation starts a new chunk (or the final flush).
    Idle,
    /// Emulation: reading `blocks` of the current range into the buffer.
    Reading { blocks: u32 },
    /// Emulation: writing those `blocks` to the destination.
    Writing { blocks: u32 },
    /// Native: the backend copies `blocks` (the rest of the current range).
    Offloaded { blocks: u64 },
    /// FUA on an offloaded copy to a device with a volatile cache: flushing at the end.
    Flushing,
}

/// Progress of one Copy command, kept in its slot.
#[derive(Debug)]
pub(crate) struct CopyJob {
    /// (source LBA, blocks) per range, in command order.
    ranges: Vec<(u64, u32)>,
    /// Index of the range being copied (the lowest not yet copied).
    range: usize,
    /// Blocks of `ranges[range]` already copied.
    done_in_range: u32,
    /// Next destination LBA.
    dst: u64,
    fua: bool,
    offload: bool,
    /// A Flush must follow an offloaded copy (FUA with a volatile write cache).
    flush_after: bool,
    ns: NsInfo,
    phase: Phase,
    /// The emulation buffer (between a Read and its Write it holds the data).
    buf: Option<IoBuf>,
}

/// Checks a Copy command against the namespace and its limits. Returns the ranges, or the
/// status and (for LBA Out of Range) the LBA to put in the error log.
fn validate(
    copy: &CopyCommand,
    data: &[u8],
    ns: &NsInfo,
) -> Result<Vec<(u64, u32)>, (Status, u64)> {
    let limits = CopyLimits::for_block_size(ns.block_size);
    // Key Per I/O and storage tags are not supported (no CETYPE, no PI formats).
    if copy.cetype != 0 {
        return Err((Status::INVALID_FIELD, 0));
    }
    if copy.desfmt != ferrite_nvme::io::COPY_DESC_FORMAT_0 {
        // Only format 0h is advertised in OCFS.
        return Err((Status::INVALID_FIELD, 0));
    }
    if copy.nr > limits.msrc {
        return Err((Status::COMMAND_SIZE_LIMIT_EXCEEDED, 0));
    }
    let entries = match copy.source_ranges(data) {
        Ok(entries) => entries,
        Err(CopyRangeError::TooShort { .. }) => return Err((Status::DATA_SGL_LENGTH_INVALID, 0)),
        Err(CopyRangeError::UnsupportedFormat(_)) => return Err((Status::INVALID_FIELD, 0)),
    };
    let mut total: u64 = 0;
    let mut ranges = Vec::with_capacity(entries.len());
    for e in entries {
        let blocks = e.block_count();
        if blocks > u32::from(limits.mssrl) {
            return Err((Status::COMMAND_SIZE_LIMIT_EXCEEDED, e.start_lba()));
        }
        total += u64::from(blocks);
        if total > u64::from(limits.mcl) {
            return Err((Status::COMMAND_SIZE_LIMIT_EXCEEDED, e.start_lba()));
        }
        if e.end_lba().is_none_or(|end| end > ns.num_blocks) {
            return Err((Status::LBA_OUT_OF_RANGE, e.start_lba()));
        }
        ranges.push((e.start_lba(), blocks));
    }
    if copy
        .sdlba
        .checked_add(total)
        .is_none_or(|end| end > ns.num_blocks)
    {
        return Err((Status::LBA_OUT_OF_RANGE, copy.sdlba));
    }
    Ok(ranges)
}

/// What to do after a step of a job.
enum Next {
    /// A backend operation is in flight.
    Pending,
    /// The job ended: complete the command with this status and Dword 0.
    Done(Status, u32),
}

impl PollGroup {
    /// Starts a Copy command (the namespace is writable: checked by the caller).
    pub(crate) fn copy(
        &mut self,
        conn: ConnId,
        req: Request,
        ns: &NsInfo,
        cx: &mut TaskContext,
    ) -> Exec {
        let slot = req.slot;
        let cmd = CopyCommand::parse(&req.cmd);
        let has_data = matches!(
            req.plan,
            DataPlan::InCapsule { .. } | DataPlan::FromHost { .. }
        );
        let data: &[u8] = match (&req.buf, has_data) {
            (Some(buf), true) => buf.as_slice(),
            _ => &[],
        };
        let checked = validate(&cmd, data, ns);
        if let Some(buf) = req.buf {
            cx.put_buffer(buf);
        }
        let ranges = match checked {
            Ok(ranges) => ranges,
            Err((status, lba)) => {
                if let Some(qp) = self.qpair_mut(conn) {
                    qp.slot_mut(slot).lba = lba;
                }
                return self.finish(conn, slot, status, 0, None, cx);
            }
        };
        let total: u64 = ranges.iter().map(|&(_, b)| u64::from(b)).sum();
        let write_cache_enabled = self
            .qpair(conn)
            .and_then(|q| q.ctrl.as_ref())
            .is_none_or(|c| c.write_cache_enabled());
        let fua = cmd.fua || (!write_cache_enabled && ns.volatile_cache);
        let offload = ns.copy;
        let mut dst = cmd.sdlba;
        let emulates = !offload
            || ranges.iter().any(|&(src, n)| {
                let hit = overlaps(src, dst, n);
                dst += u64::from(n);
                hit
            });
        let buf = if !emulates {
            None
        } else {
            let chunk = chunk_blocks(ns.block_size) as usize * ns.block_size as usize;
            match cx.get_buffer(chunk) {
                Some(buf) => Some(buf),
                // No buffer now: the host may retry (nothing was written).
                None => return self.finish(conn, slot, Status::COMMAND_INTERRUPTED, 0, None, cx),
            }
        };
        self.count(conn, true, total * u64::from(ns.block_size));
        let job = CopyJob {
            ranges,
            range: 0,
            done_in_range: 0,
            dst: cmd.sdlba,
            fua,
            offload,
            flush_after: offload && fua && ns.volatile_cache,
            ns: *ns,
            phase: Phase::Idle,
            buf,
        };
        let next = self.copy_issue(conn, slot, Box::new(job), cx);
        self.copy_next(conn, slot, next, cx)
            .map_or(Exec::Pending, Exec::Done)
    }

    /// A backend operation of a Copy command finished.
    pub(crate) fn copy_completion(
        &mut self,
        conn: ConnId,
        slot: u16,
        io: BdevIo,
        result: Result<(), BdevError>,
        cx: &mut TaskContext,
    ) -> Option<Response> {
        let qp = self.qpair_mut(conn)?;
        let closing = qp.state == QpairState::Closing;
        let s = qp.slot_mut(slot);
        s.pending = s.pending.saturating_sub(1);
        let Some(mut job) = s.copy.take() else {
            debug_assert!(false, "copy completion without a job");
            if let Some(buf) = io.buf {
                cx.put_buffer(buf);
            }
            return None;
        };
        if let Some(buf) = io.buf {
            job.buf = Some(buf);
        }
        let next = match result {
            Err(e) => {
                let status = status_of(&e, matches!(io.kind, IoKind::Read { .. }));
                self.copy_end(cx, &mut job);
                Next::Done(status, job.range as u32)
            }
            // The host is gone: stop issuing (the destination is then undefined, which a
            // failed Copy allows).
            Ok(()) if closing => {
                self.copy_end(cx, &mut job);
                Next::Done(Status::ABORTED_SQ_DELETION, job.range as u32)
            }
            Ok(()) => {
                job.advance();
                self.copy_issue(conn, slot, job, cx)
            }
        };
        self.copy_next(conn, slot, next, cx)
    }

    /// Completes the command if the job ended.
    fn copy_next(
        &mut self,
        conn: ConnId,
        slot: u16,
        next: Next,
        cx: &mut TaskContext,
    ) -> Option<Response> {
        match next {
            Next::Pending => None,
            Next::Done(status, dw0) => {
                let dw0 = if status.is_success() { 0 } else { dw0 };
                Some(self.build_response(conn, slot, status, dw0, None, cx))
            }
        }
    }

    /// Issues the job's next backend operation, or ends it when every range is copied.
    fn copy_issue(
        &mut self,
        conn: ConnId,
        slot: u16,
        mut job: Box<CopyJob>,
        cx: &mut TaskContext,
    ) -> Next {
        let (kind, buf) = match job.next_op() {
            Some(op) => op,
            None => {
                self.copy_end(cx, &mut job);
                return Next::Done(Status::SUCCESS, 0);
            }
        };
        let bdev_id = job.ns.bdev_id;
        let is_read = matches!(kind, IoKind::Read { .. });
        match self.submit(conn, slot, bdev_id, kind, buf, cx) {
            Ok(()) => {
                if let Some(qp) = self.qpair_mut(conn) {
                    qp.slot_mut(slot).copy = Some(job);
                }
                Next::Pending
            }
            Err((buf, e)) => {
                if let Some(buf) = buf {
                    job.buf = Some(buf);
                }
                self.copy_end(cx, &mut job);
                Next::Done(status_of(&e, is_read), job.range as u32)
            }
        }
    }

    /// Returns the job's buffer to the pool.
    fn copy_end(&mut self, cx: &mut TaskContext, job: &mut CopyJob) {
        if let Some(buf) = job.buf.take() {
            cx.put_buffer(buf);
        }
    }
}

impl CopyJob {
    /// The emulation buffer, for a queue released with the job still attached.
    pub(crate) fn take_buf(&mut self) -> Option<IoBuf> {
        self.buf.take()
    }

    /// The next backend operation (and the buffer it takes), setting `phase`; `None` when
    /// the copy is complete.
    fn next_op(&mut self) -> Option<(IoKind, Option<IoBuf>)> {
        if let Phase::Reading { blocks } = self.phase {
            // The chunk is in the buffer: write it.
            self.phase = Phase::Writing { blocks };
            let kind = IoKind::Write {
                lba: self.dst,
                blocks,
                fua: self.fua,
            };
            return Some((kind, self.buf.take()));
        }
        let Some(&(src, len)) = self.ranges.get(self.range) else {
            if self.flush_after && self.phase == Phase::Idle {
                self.phase = Phase::Flushing;
                return Some((IoKind::Flush, None));
            }
            return None;
        };
        let src = src + u64::from(self.done_in_range);
        let left = len - self.done_in_range;
        if self.offload && !overlaps(src, self.dst, left) {
            self.phase = Phase::Offloaded {
                blocks: u64::from(left),
            };
            let kind = IoKind::Copy {
                src_lba: src,
                dst_lba: self.dst,
                blocks: u64::from(left),
            };
            return Some((kind, None));
        }
        let blocks = left.min(chunk_blocks(self.ns.block_size));
        self.phase = Phase::Reading { blocks };
        Some((IoKind::Read { lba: src, blocks }, self.buf.take()))
    }

    /// Records the success of the operation in flight.
    fn advance(&mut self) {
        let copied = match self.phase {
            Phase::Idle | Phase::Reading { .. } | Phase::Flushing => return,
            Phase::Writing { blocks } => u64::from(blocks),
            Phase::Offloaded { blocks } => blocks,
        };
        self.phase = Phase::Idle;
        self.dst += copied;
        self.done_in_range += copied as u32;
        if let Some(&(_, len)) = self.ranges.get(self.range) {
            if self.done_in_range >= len {
                self.range += 1;
                self.done_in_range = 0;
            }
        }
    }
}

/// Whether `n` blocks at `src` and at `dst` share a block.
fn overlaps(src: u64, dst: u64, n: u32) -> bool {
    let n = u64::from(n);
    src < dst.saturating_add(n) && dst < src.saturating_add(n)
}

/// Blocks per emulation chunk: one pooled large buffer.
fn chunk_blocks(block_size: u32) -> u32 {
    (MAX_TRANSFER_BYTES / block_size.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_bdev::BdevId;
    use ferrite_nvme::io::CopySourceRange;
    use zerocopy::IntoBytes;

    fn ns(num_blocks: u64, block_size: u32) -> NsInfo {
        NsInfo {
            bdev_id: BdevId(0),
            block_size,
            num_blocks,
            volatile_cache: false,
            unmap: true,
            copy: false,
            read_only: false,
            ana: Default::default(),
        }
    }

    fn cmd(nr: u8, sdlba: u64) -> CopyCommand {
        CopyCommand {
            nsid: 1,
            sdlba,
            nr,
            ..CopyCommand::default()
        }
    }

    fn ranges(list: &[(u64, u32)]) -> Vec<u8> {
        list.iter()
            .flat_map(|&(lba, n)| {
                CopySourceRange::new(lba, n)
                    .expect("valid range")
                    .as_bytes()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn limits_follow_block_size() {
        let l = CopyLimits::for_block_size(512);
        assert_eq!((l.mssrl, l.mcl, l.msrc), (65535, 131072, 127));
        let l = CopyLimits::for_block_size(4096);
        assert_eq!((l.mssrl, l.mcl), (16384, 16384));
    }

    #[test]
    fn validation_statuses() {
        let n = ns(1000, 4096);
        let data = ranges(&[(0, 8), (100, 8)]);
        assert_eq!(
            validate(&cmd(1, 500), &data, &n),
            Ok(vec![(0, 8), (100, 8)])
        );
        let f1 = CopyCommand {
            desfmt: 1,
            ..cmd(1, 500)
        };
        assert_eq!(validate(&f1, &data, &n), Err((Status::INVALID_FIELD, 0)));
        let ce = CopyCommand {
            cetype: 1,
            ..cmd(1, 500)
        };
        assert_eq!(validate(&ce, &data, &n), Err((Status::INVALID_FIELD, 0)));
        assert_eq!(
            validate(&cmd(128, 0), &[0; 129 * 32], &n),
            Err((Status::COMMAND_SIZE_LIMIT_EXCEEDED, 0))
        );
        assert_eq!(
            validate(&cmd(2, 0), &data, &n),
            Err((Status::DATA_SGL_LENGTH_INVALID, 0))
        );
        let big = ns(1 << 20, 4096);
        assert_eq!(
            validate(&cmd(0, 0), &ranges(&[(7, 16385)]), &big),
            Err((Status::COMMAND_SIZE_LIMIT_EXCEEDED, 7))
        );
        assert_eq!(
            validate(&cmd(1, 0), &ranges(&[(0, 16384), (20000, 1)]), &big),
            Err((Status::COMMAND_SIZE_LIMIT_EXCEEDED, 20000))
        );
        assert_eq!(
            validate(&cmd(0, 0), &ranges(&[(995, 8)]), &n),
            Err((Status::LBA_OUT_OF_RANGE, 995))
        );
        assert_eq!(
            validate(&cmd(0, 995), &ranges(&[(0, 8)]), &n),
            Err((Status::LBA_OUT_OF_RANGE, 995))
        );
        assert_eq!(
            validate(&cmd(0, u64::MAX), &ranges(&[(0, 8)]), &n),
            Err((Status::LBA_OUT_OF_RANGE, u64::MAX))
        );
    }

    fn job(ranges: Vec<(u64, u32)>, offload: bool, flush_after: bool) -> CopyJob {
        CopyJob {
            ranges,
            range: 0,
            done_in_range: 0,
            dst: 1000,
            fua: true,
            offload,
            flush_after,
            ns: ns(1 << 20, 512),
            phase: Phase::Idle,
            buf: None,
        }
    }

    /// Runs a job to completion assuming every operation succeeds; returns the operations.
    fn run(mut j: CopyJob) -> Vec<IoKind> {
        let mut ops = Vec::new();
        while let Some((kind, _)) = j.next_op() {
            ops.push(kind);
            j.advance();
            assert!(ops.len() < 100, "job does not terminate");
        }
        ops
    }

    #[test]
    fn emulation_chunks_each_range_in_order() {
        // 128 KiB chunks of 512-byte blocks: 256 blocks.
        let ops = run(job(vec![(0, 300), (5000, 4)], false, false));
        assert_eq!(
            ops,
            vec![
                IoKind::Read {
                    lba: 0,
                    blocks: 256
                },
                IoKind::Write {
                    lba: 1000,
                    blocks: 256,
                    fua: true
                },
                IoKind::Read {
                    lba: 256,
                    blocks: 44
                },
                IoKind::Write {
                    lba: 1256,
                    blocks: 44,
                    fua: true
                },
                IoKind::Read {
                    lba: 5000,
                    blocks: 4
                },
                IoKind::Write {
                    lba: 1300,
                    blocks: 4,
                    fua: true
                },
            ]
        );
    }

    #[test]
    fn offload_issues_one_copy_per_range_and_a_final_flush_when_asked() {
        let ops = run(job(vec![(0, 300), (5000, 4)], true, true));
        assert_eq!(
            ops,
            vec![
                IoKind::Copy {
                    src_lba: 0,
                    dst_lba: 1000,
                    blocks: 300
                },
                IoKind::Copy {
                    src_lba: 5000,
                    dst_lba: 1300,
                    blocks: 4
                },
                IoKind::Flush,
            ]
        );
        let ops = run(job(vec![(0, 1)], true, false));
        assert_eq!(ops.len(), 1);
        // A range overlapping its destination is emulated even when the bdev offloads.
        let ops = run(job(vec![(990, 20)], true, false));
        assert_eq!(
            ops,
            vec![
                IoKind::Read {
                    lba: 990,
                    blocks: 20
                },
                IoKind::Write {
                    lba: 1000,
                    blocks: 20,
                    fua: true
                },
            ]
        );
        assert!(overlaps(0, 7, 8) && !overlaps(0, 8, 8) && overlaps(8, 0, 9));
    }

    #[test]
    fn failure_index_is_the_range_in_progress() {
        let mut j = job(vec![(0, 8), (100, 300), (900, 1)], false, false);
        for _ in 0..2 {
            j.next_op();
            j.advance();
        }
        assert_eq!(j.range, 1, "range 0 copied");
        j.next_op(); // read of range 1, first chunk
        j.advance();
        j.next_op(); // its write
        j.advance();
        assert_eq!(j.range, 1, "range 1 only partly copied");
    }
}
