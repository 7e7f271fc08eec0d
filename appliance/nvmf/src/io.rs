//! The NVM command set on I/O queues: Read, Write, Compare, Flush, Write Zeroes, Dataset
//! Management, Copy (in `copy`). Each command is checked here, mapped to backend operations on this reactor's
//! channel, and completed when its last operation does.

use std::sync::Arc;

use ferrite_bdev::{BdevError, IoKind};
use ferrite_nvme::command::opcode::io as op;
use ferrite_nvme::Status;
use ferrite_reactor::{IoBuf, TaskContext};

use crate::bdev_status::status_of;
use crate::poll_group::NsInfo;
use crate::poll_group::{ConnId, Exec, PollGroup};
use crate::request::{DataPlan, Request, Response};
use crate::subsystem::Subsystem;
use crate::MAX_TRANSFER_BYTES;

/// NSID meaning "every namespace" (Flush).
const NSID_ALL: u32 = 0xFFFF_FFFF;
/// Force Unit Access bit of Read/Write CDW12.
const FUA: u32 = 1 << 30;
/// DSM attribute: deallocate.
const DSM_DEALLOCATE: u32 = 1 << 2;
const DSM_RANGE_BYTES: usize = 16;

impl PollGroup {
    /// The subsystem as of the current configuration (re-read only when it changed).
    pub(crate) fn current_subsystem(&mut self, conn: ConnId) -> Option<Arc<Subsystem>> {
        let generation = self.target.generation();
        let target = &self.target;
        let qp = self.qpairs.get_mut(conn.0 as usize)?.as_mut()?;
        if qp.config_generation != generation {
            let nqn = qp.ctrl.as_ref().map(|c| c.subnqn.clone())?;
            qp.subsystem = target.config().subsystem(&nqn).cloned();
            let local = qp.local;
            qp.ns_table = qp
                .subsystem
                .as_deref()
                .map(|s| NsInfo::table(s, local))
                .unwrap_or_default();
            qp.config_generation = generation;
        }
        qp.subsystem.clone()
    }

    /// Brings the queue's view of its subsystem up to date when the configuration changed
    /// (one atomic load per command otherwise).
    pub(crate) fn refresh(&mut self, conn: ConnId) {
        let generation = self.target.generation();
        let stale = self
            .qpair(conn)
            .is_some_and(|q| q.config_generation != generation);
        if stale {
            self.current_subsystem(conn);
        }
    }

    /// Counts a command in the queue's health counters (SMART).
    pub(crate) fn count(&self, conn: ConnId, write: bool, bytes: u64) {
        let Some(qp) = self.qpair(conn) else { return };
        let c = &qp.counters;
        if write {
            c.add(&c.write_commands, 1);
            c.add(&c.bytes_written, bytes);
        } else {
            c.add(&c.read_commands, 1);
            c.add(&c.bytes_read, bytes);
        }
    }

    pub(crate) fn ns_info(&self, conn: ConnId, nsid: u32) -> Option<NsInfo> {
        *self.qpair(conn)?.ns_table.get(nsid as usize)?
    }

    pub(crate) fn execute_io(&mut self, conn: ConnId, req: Request, cx: &mut TaskContext) -> Exec {
        self.refresh(conn);
        let slot = req.slot;
        let nsid = req.cmd.nsid.get();
        if req.cmd.opcode == op::FLUSH && nsid == NSID_ALL {
            return self.flush_all(conn, req, cx);
        }
        let Some(ns) = self.ns_info(conn, nsid) else {
            return self.finish(conn, req.slot, Status::INVALID_NAMESPACE, 0, req.buf, cx);
        };
        let ns = &ns;
        // A path whose ANA group is not accessible serves no I/O: the host retries elsewhere.
        if let Some(status) = ns.ana.io_refusal() {
            return self.finish(conn, slot, status, 0, req.buf, cx);
        }
        if crate::resv_cmd::is_reservation_command(req.cmd.opcode) {
            return self.execute_reservation(conn, req, cx);
        }
        if let Some(status) = self.reservation_check(conn, nsid, req.cmd.opcode) {
            return self.finish(conn, slot, status, 0, req.buf, cx);
        }
        {
            let qp = self.qpair_mut(conn).expect("execute checked the qpair");
            let resv_epoch = qp
                .subsystem
                .as_ref()
                .and_then(|s| s.namespaces.get(&nsid))
                .map(|n| n.reservation.aborts.epoch());
            let s = qp.slot_mut(req.slot);
            s.resv_epoch = resv_epoch;
            s.nsid = nsid;
            s.lba = lba_of(&req);
            if matches!(req.cmd.opcode, op::READ | op::WRITE) {
                // Counted here, latency at completion (build_response): a map lookup on the
                // queue's subsystem snapshot, no refcount and no allocation.
                let blocks = u64::from(req.cmd.cdw12.get() & 0xFFFF) + 1;
                if let Some(n) = qp.subsystem.as_ref().and_then(|s| s.namespaces.get(&nsid)) {
                    n.stats.submitted(
                        cx.reactor_index(),
                        req.cmd.opcode == op::WRITE,
                        blocks * u64::from(ns.block_size),
                    );
                    qp.slot_mut(req.slot).started = Some(cx.now());
                }
            }
        }
        if ns.read_only && modifies(&req) {
            // A snapshot: refused before the backend sees anything (NSATTR says so too).
            return self.finish(
                conn,
                slot,
                Status::NAMESPACE_WRITE_PROTECTED,
                0,
                req.buf,
                cx,
            );
        }
        let result = match req.cmd.opcode {
            op::COPY => return self.copy(conn, req, ns, cx),
            op::READ | op::WRITE | op::COMPARE => self.read_write(conn, req, ns, cx),
            op::FLUSH => self
                .submit_one(conn, req.slot, ns, IoKind::Flush, None, cx)
                .map_err(|(b, s)| (s, b)),
            op::WRITE_ZEROES => self.write_zeroes(conn, req, ns, cx),
            op::DATASET_MANAGEMENT => self.dataset_management(conn, req, ns, cx),
            _ => Err((Status::INVALID_OPCODE, req.buf)),
        };
        match result {
            Ok(()) => self.pending_or_done(conn, slot, cx),
            Err((status, buf)) => self.finish(conn, slot, status, 0, buf, cx),
        }
    }

    /// After submitting: if nothing ended up outstanding (e.g. a DSM without deallocation), the
    /// command is complete now.
    fn pending_or_done(&mut self, conn: ConnId, slot: u16, cx: &mut TaskContext) -> Exec {
        let qp = self.qpair_mut(conn).expect("live qpair");
        let s = qp.slot_mut(slot);
        if s.pending > 0 {
            return Exec::Pending;
        }
        let status = s.status;
        let buf = s.buf.take();
        self.finish(conn, slot, status, 0, buf, cx)
    }

    fn read_write(
        &mut self,
        conn: ConnId,
        req: Request,
        ns: &NsInfo,
        cx: &mut TaskContext,
    ) -> Result<(), (Status, Option<IoBuf>)> {
        let Request {
            slot,
            cmd,
            plan,
            buf,
        } = req;
        let slba = lba_of_cmd(&cmd);
        let nlb = (cmd.cdw12.get() & 0xFFFF) + 1;
        let block_size = ns.block_size;
        if slba
            .checked_add(nlb as u64)
            .is_none_or(|end| end > ns.num_blocks)
        {
            return Err((Status::LBA_OUT_OF_RANGE, buf));
        }
        let bytes = nlb as u64 * block_size as u64;
        if bytes > MAX_TRANSFER_BYTES as u64 {
            return Err((Status::INVALID_FIELD, buf));
        }
        let bytes = bytes as u32;
        let data_ok = match (cmd.opcode, plan) {
            // Identify's SGLS does not offer SGLs longer than the data (bit 18,
            // `sgls::EXCESS_LENGTH`), so the length must match in both directions.
            (op::READ, DataPlan::ToHost { len }) => len == bytes,
            (op::WRITE | op::COMPARE, DataPlan::InCapsule { len } | DataPlan::FromHost { len }) => {
                len == bytes
            }
            _ => false,
        };
        // A refused buffer goes back with the error so it returns to its pool.
        let mut buf = match buf {
            Some(buf) if data_ok => buf,
            other => return Err((Status::DATA_SGL_LENGTH_INVALID, other)),
        };
        let qp = self.qpair(conn).expect("live");
        let write_cache_enabled = qp.ctrl.as_ref().is_none_or(|c| c.write_cache_enabled());
        // Per-queue counters: only this reactor writes them, so the count is uncontended.
        self.count(conn, cmd.opcode == op::WRITE, bytes as u64);
        match cmd.opcode {
            op::READ => {
                buf.set_len(bytes as usize);
                self.qpair_mut(conn).expect("live").slot_mut(slot).data_len = bytes;
                let kind = IoKind::Read {
                    lba: slba,
                    blocks: nlb,
                };
                self.submit_one(conn, slot, ns, kind, Some(buf), cx)
                    .map_err(|(b, s)| (s, b))
            }
            op::WRITE => {
                let cache_off = !write_cache_enabled && ns.volatile_cache;
                let fua = cmd.cdw12.get() & FUA != 0 || cache_off;
                let kind = IoKind::Write {
                    lba: slba,
                    blocks: nlb,
                    fua,
                };
                self.submit_one(conn, slot, ns, kind, Some(buf), cx)
                    .map_err(|(b, s)| (s, b))
            }
            _ => {
                // Compare: read the medium into a second buffer, compare on completion.
                let Some(mut medium) = cx.get_buffer(bytes as usize) else {
                    return Err((Status::COMMAND_INTERRUPTED, Some(buf)));
                };
                medium.set_len(bytes as usize);
                self.qpair_mut(conn).expect("live").slot_mut(slot).buf = Some(buf);
                let kind = IoKind::Read {
                    lba: slba,
                    blocks: nlb,
                };
                self.submit_one(conn, slot, ns, kind, Some(medium), cx)
                    .map_err(|(medium, s)| {
                        if let Some(m) = medium {
                            cx.put_buffer(m);
                        }
                        let host = self
                            .qpair_mut(conn)
                            .and_then(|q| q.slot_mut(slot).buf.take());
                        (s, host)
                    })
            }
        }
    }

    fn write_zeroes(
        &mut self,
        conn: ConnId,
        req: Request,
        ns: &NsInfo,
        cx: &mut TaskContext,
    ) -> Result<(), (Status, Option<IoBuf>)> {
        if let Some(buf) = req.buf {
            cx.put_buffer(buf);
        }
        let slba = lba_of_cmd(&req.cmd);
        let nlb = (req.cmd.cdw12.get() & 0xFFFF) as u64 + 1;
        if slba.checked_add(nlb).is_none_or(|end| end > ns.num_blocks) {
            return Err((Status::LBA_OUT_OF_RANGE, None));
        }
        self.count(conn, true, 0);
        let kind = IoKind::WriteZeroes {
            lba: slba,
            blocks: nlb,
        };
        self.submit_one(conn, req.slot, ns, kind, None, cx)
            .map_err(|(b, s)| (s, b))
    }

    fn dataset_management(
        &mut self,
        conn: ConnId,
        req: Request,
        ns: &NsInfo,
        cx: &mut TaskContext,
    ) -> Result<(), (Status, Option<IoBuf>)> {
        let ranges = (req.cmd.cdw10.get() & 0xFF) as usize + 1;
        let need = ranges * DSM_RANGE_BYTES;
        let buf = match req.buf {
            Some(buf) if buf.len() >= need => buf,
            other => return Err((Status::DATA_SGL_LENGTH_INVALID, other)),
        };
        if req.cmd.cdw11.get() & DSM_DEALLOCATE == 0 {
            // Only hints: nothing to do.
            cx.put_buffer(buf);
            return Ok(());
        }
        let num_blocks = ns.num_blocks;
        // Validate every range before touching any, so a bad range changes nothing.
        let mut extents = [(0u64, 0u64); 256];
        for (i, raw) in buf.as_slice()[..need]
            .chunks_exact(DSM_RANGE_BYTES)
            .enumerate()
        {
            let blocks = u32::from_le_bytes(raw[4..8].try_into().expect("16-byte chunk")) as u64;
            let lba = u64::from_le_bytes(raw[8..16].try_into().expect("16-byte chunk"));
            if lba.checked_add(blocks).is_none_or(|end| end > num_blocks) {
                cx.put_buffer(buf);
                self.qpair_mut(conn).expect("live").slot_mut(req.slot).lba = lba;
                return Err((Status::LBA_OUT_OF_RANGE, None));
            }
            extents[i] = (lba, blocks);
        }
        cx.put_buffer(buf);
        if !ns.unmap {
            // Deallocation is advisory; a backend that cannot unmap keeps the data.
            return Ok(());
        }
        for &(lba, blocks) in extents[..ranges].iter().filter(|(_, b)| *b > 0) {
            let kind = IoKind::Unmap { lba, blocks };
            if let Err((_, status)) = self.submit_one(conn, req.slot, ns, kind, None, cx) {
                // Earlier ranges may be in flight: record the failure, finish when they drain.
                let s = self.qpair_mut(conn).expect("live").slot_mut(req.slot);
                s.status = status;
                break;
            }
        }
        Ok(())
    }

    fn flush_all(&mut self, conn: ConnId, req: Request, cx: &mut TaskContext) -> Exec {
        let req_slot = req.slot;
        if let Some(buf) = req.buf {
            cx.put_buffer(buf);
        }
        let cached: Vec<NsInfo> = self
            .qpair(conn)
            .map(|q| {
                q.ns_table
                    .iter()
                    .flatten()
                    .filter(|ns| ns.volatile_cache)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for ns in &cached {
            if let Err((_, status)) = self.submit_one(conn, req.slot, ns, IoKind::Flush, None, cx) {
                self.qpair_mut(conn)
                    .expect("live")
                    .slot_mut(req.slot)
                    .status = status;
                break;
            }
        }
        self.pending_or_done(conn, req_slot, cx)
    }

    /// Submits one backend operation for a command slot; on refusal returns the buffer and the
    /// status for the host.
    fn submit_one(
        &mut self,
        conn: ConnId,
        slot: u16,
        ns: &NsInfo,
        kind: IoKind,
        buf: Option<IoBuf>,
        cx: &mut TaskContext,
    ) -> Result<(), (Option<IoBuf>, Status)> {
        let is_read = matches!(kind, IoKind::Read { .. });
        self.submit(conn, slot, ns.bdev_id, kind, buf, cx)
            .map_err(|(buf, e)| (buf, status_of(&e, is_read)))
    }

    /// A backend operation of an I/O command finished.
    pub(crate) fn io_completion(
        &mut self,
        conn: ConnId,
        slot: u16,
        io: ferrite_bdev::BdevIo,
        result: Result<(), BdevError>,
        cx: &mut TaskContext,
    ) -> Option<Response> {
        if self
            .qpair(conn)
            .and_then(|q| q.slots.get(slot as usize))
            .is_some_and(|s| s.opcode == op::COPY)
        {
            return self.copy_completion(conn, slot, io, result, cx);
        }
        let qp = self.qpair_mut(conn)?;
        let counters = &qp.counters;
        let media_error = matches!(result, Err(BdevError::Io(_)));
        if media_error {
            counters.add(&counters.media_errors, 1);
        }
        let s = qp.slot_mut(slot);
        s.pending = s.pending.saturating_sub(1);
        let is_read = matches!(io.kind, IoKind::Read { .. });
        if let Err(e) = &result {
            if s.status.is_success() {
                s.status = status_of(e, is_read);
            }
        }
        if s.opcode == op::COMPARE && is_read {
            s.aux = io.buf;
        } else if let Some(buf) = io.buf {
            s.buf = Some(buf);
        }
        if s.pending > 0 {
            return None;
        }
        if s.opcode == op::COMPARE && s.status.is_success() {
            let equal = match (&s.buf, &s.aux) {
                (Some(host), Some(medium)) => host.as_slice() == medium.as_slice(),
                _ => false,
            };
            if !equal {
                s.status = Status::COMPARE_FAILURE;
            }
        }
        let status = s.status;
        let buf = s.buf.take();
        Some(self.build_response(conn, slot, status, 0, buf, cx))
    }
}

/// Whether the command changes the medium (refused on a write-protected namespace).
fn modifies(req: &Request) -> bool {
    match req.cmd.opcode {
        op::WRITE | op::WRITE_ZEROES | op::COPY => true,
        op::DATASET_MANAGEMENT => req.cmd.cdw11.get() & DSM_DEALLOCATE != 0,
        _ => false,
    }
}

fn lba_of_cmd(cmd: &ferrite_nvme::Command) -> u64 {
    cmd.cdw10.get() as u64 | ((cmd.cdw11.get() as u64) << 32)
}

fn lba_of(req: &Request) -> u64 {
    match req.cmd.opcode {
        op::READ | op::WRITE | op::COMPARE | op::WRITE_ZEROES | op::COPY => lba_of_cmd(&req.cmd),
        _ => 0,
    }
}
