//! Copy (opcode 19h) on I/O queues: descriptor format 0h, source ranges copied in order into
//! consecutive destination LBAs of the same namespace.
//!
//! Each range goes to the backend as one `IoKind::Copy` when the bdev can
//! (`Capabilities::copy`: offloaded or done in metadata) and the range does not overlap its
//! destination (a reflink refuses that, and the result is undefined anyway), otherwise it is
//! emulated here with
//! Read then Write through one pooled buffer of at most [`crate::MAX_TRANSFER_BYTES`]. Either way a
//! command has exactly one backend operation in flight: the next one is issued from the
//! completion of the previous, so a long Copy interleaves with every other command of the
//! reactor instead of monopolising it, and its memory is one buffer whatever its length.
//!
//! Limits advertised in Identify Namespace ([`CopyLimits`]):
//! - MSRC 127 (128 ranges): 128 format-0 descriptors are 4 KiB, which fits in-capsule data;
//! - MCL: [`crate::copy_job::COPY_MAX_BYTES`] (64 MiB) worth of blocks, so that an emulated Copy (at most 512
//!   sequential 128 KiB read/write pairs) finishes well inside host command timeouts;
//! - MSSRL: MCL capped at 65,535 (the largest value the 16-bit field holds).
//!
//! Failure: CQE Dword 0 carries the index of the lowest source range not copied successfully
//! (ranges are processed strictly in order, so that is the range being worked on), with the
//! status of the failing backend operation.

use ferrite_bdev::{BdevError, BdevIo, IoKind};
use ferrite_nvme::io::{CopyCommand, CopyRangeError};
use ferrite_nvme::Status;
use ferrite_reactor::TaskContext;

use crate::bdev_status::status_of;
use crate::copy_job::{chunk_blocks, overlaps, CopyJob, CopyLimits, Phase};
use crate::poll_group::{ConnId, Exec, NsInfo, PollGroup, QpairState};
use crate::request::{DataPlan, Request, Response};

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
            bdev_id: ns.bdev_id,
            block_size: ns.block_size,
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
        let bdev_id = job.bdev_id;
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
}
