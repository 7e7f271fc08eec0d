//! One I/O queue pair per reactor: submissions become NVMe commands in the SQ, completions
//! are polled from the CQ by phase tag. Data moves through per-slot DMA buffers (bounce
//! buffers: the reactor's pool buffers are not mapped in the IOMMU), so a request's `IoBuf`
//! is never touched by the device.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_vfio::DmaBuffer;

use super::ctrl::{opcode, Controller, CtrlState};
use super::prp::Prps;
use super::queue::{Command, Completion, CqRing, SqRing, CQE_BYTES, SQE_BYTES};
use super::regs::PAGE;
use crate::io::Geometry;
use crate::{BdevError, BdevIo, ChannelStats, IoChannel, IoKind};

/// Largest Write Zeroes a command carries (NLB is 16 bits, 0-based).
const MAX_ZEROES_BLOCKS: u64 = 1 << 16;
/// Ranges in one Dataset Management command (a 4 KiB list of 16-byte ranges).
const DSM_RANGES: usize = 256;
/// How often in-flight commands are checked for timeouts and the device for presence.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// What the driver does for a request kind on this device.
#[derive(Debug, Clone, Copy)]
pub(super) struct Offloads {
    pub write_zeroes: bool,
    pub dsm: bool,
}

struct Pending {
    io: BdevIo,
    /// Next LBA and blocks left for the kinds split over several commands.
    next_lba: u64,
    remaining: u64,
    started: Instant,
    abort_sent: bool,
}

pub(super) struct QueuePair {
    ctrl: Arc<Controller>,
    nsid: u32,
    qid: u16,
    geo: Geometry,
    offloads: Offloads,
    timeout: Duration,
    sq: DmaBuffer,
    cq: DmaBuffer,
    sq_ring: SqRing,
    cq_ring: CqRing,
    /// `max_transfer` bytes per slot.
    data: DmaBuffer,
    /// One page per slot: PRP list or DSM ranges.
    lists: DmaBuffer,
    slots: Vec<Option<Pending>>,
    free: Vec<u16>,
    in_flight: usize,
    stats: ChannelStats,
    last_check: Instant,
    /// Follow-on commands written since the last SQ doorbell.
    unrung: bool,
    /// Requests with nothing for the device to do (zero-block Write Zeroes or Unmap),
    /// completed by the next poll.
    trivial: Vec<BdevIo>,
}

impl QueuePair {
    pub fn open(
        ctrl: Arc<Controller>,
        nsid: u32,
        geo: Geometry,
        offloads: Offloads,
        depth: u16,
        timeout: Duration,
    ) -> Result<QueuePair, BdevError> {
        if ctrl.state() != CtrlState::Live {
            return Err(gone(ctrl.state()));
        }
        let entries = (depth + 1).min(ctrl.cap.max_queue_entries.min(u32::from(u16::MAX)) as u16);
        let depth = entries - 1;
        let qid = ctrl.take_qid().ok_or(BdevError::InvalidConfig(
            "the controller has no free I/O queue for another reactor".into(),
        ))?;
        let alloc = |len| {
            ctrl.container
                .dma_alloc(len)
                .map_err(|e| BdevError::InvalidConfig(e.to_string()))
        };
        let made = (|| {
            let sq = alloc(usize::from(entries) * SQE_BYTES)?;
            let cq = alloc(usize::from(entries) * CQE_BYTES)?;
            let data = alloc(usize::from(depth) * geo.max_transfer_bytes as usize)?;
            let lists = alloc(usize::from(depth) * PAGE)?;
            ctrl.create_io_queue(qid, entries, sq.iova(), cq.iova())?;
            Ok((sq, cq, data, lists))
        })();
        let (sq, cq, data, lists) = match made {
            Ok(v) => v,
            Err(e) => {
                ctrl.give_qid(qid);
                return Err(e);
            }
        };
        Ok(QueuePair {
            ctrl,
            nsid,
            qid,
            geo,
            offloads,
            timeout,
            sq,
            cq,
            sq_ring: SqRing::new(entries),
            cq_ring: CqRing::new(entries),
            data,
            lists,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            in_flight: 0,
            stats: ChannelStats::default(),
            last_check: Instant::now(),
            unrung: false,
            trivial: Vec::new(),
        })
    }

    fn data_offset(&self, slot: u16) -> usize {
        usize::from(slot) * self.geo.max_transfer_bytes as usize
    }

    /// Writes the next command of the request in `slot` into the SQ (no doorbell).
    fn queue_command(&mut self, slot: u16) {
        let bs = u64::from(self.geo.block_size);
        let data_off = self.data_offset(slot);
        let data_iova = self.data.iova() + data_off as u64;
        let list_off = usize::from(slot) * PAGE;
        let list_iova = self.lists.iova() + list_off as u64;
        let Some(p) = self.slots[usize::from(slot)].as_mut() else {
            return;
        };
        let mut cmd = Command {
            cid: slot,
            nsid: self.nsid,
            ..Command::default()
        };
        let mut prps = None;
        match p.io.kind {
            IoKind::Read { lba, blocks } => {
                cmd.opcode = opcode::READ;
                set_range(&mut cmd, lba, u64::from(blocks));
                prps = Some(u64::from(blocks) * bs);
            }
            IoKind::Write { lba, blocks, fua } => {
                let bytes = (u64::from(blocks) * bs) as usize;
                if let Some(buf) = p.io.buf.as_ref() {
                    self.data.write(data_off, &buf.as_slice()[..bytes]);
                }
                cmd.opcode = opcode::WRITE;
                set_range(&mut cmd, lba, u64::from(blocks));
                cmd.cdw12 |= u32::from(fua) << 30;
                prps = Some(bytes as u64);
            }
            IoKind::Flush => cmd.opcode = opcode::FLUSH,
            IoKind::WriteZeroes { .. } if self.offloads.write_zeroes => {
                let n = p.remaining.min(MAX_ZEROES_BLOCKS);
                cmd.opcode = opcode::WRITE_ZEROES;
                set_range(&mut cmd, p.next_lba, n);
                p.next_lba += n;
                p.remaining -= n;
            }
            IoKind::WriteZeroes { .. } => {
                // Emulated: writes of a zeroed slot buffer, one transfer at a time.
                let n = p.remaining.min(u64::from(self.geo.max_transfer_bytes) / bs);
                let bytes = (n * bs) as usize;
                self.data.zero(data_off, bytes);
                cmd.opcode = opcode::WRITE;
                set_range(&mut cmd, p.next_lba, n);
                p.next_lba += n;
                p.remaining -= n;
                prps = Some(bytes as u64);
            }
            IoKind::Unmap { .. } | IoKind::Copy { .. } => {
                let mut ranges = 0;
                while p.remaining > 0 && ranges < DSM_RANGES {
                    let n = p.remaining.min(u64::from(u32::MAX));
                    let mut r = [0u8; 16];
                    r[4..8].copy_from_slice(&(n as u32).to_le_bytes());
                    r[8..16].copy_from_slice(&p.next_lba.to_le_bytes());
                    self.lists.write(list_off + ranges * 16, &r);
                    p.next_lba += n;
                    p.remaining -= n;
                    ranges += 1;
                }
                cmd.opcode = opcode::DSM;
                cmd.prp1 = list_iova;
                cmd.cdw10 = ranges as u32 - 1;
                cmd.cdw11 = 1 << 2; // AD: deallocate
            }
        }
        if let Some(bytes) = prps {
            let prp = Prps::build(data_iova, bytes as usize);
            if prp.needs_list() {
                for (i, page) in prp.rest.iter().enumerate() {
                    self.lists.write64(list_off + 8 * i, *page);
                }
            }
            cmd.prp1 = prp.prp1;
            cmd.prp2 = prp.prp2(list_iova);
        }
        // One command per slot and `depth + 1` entries: the SQ cannot be full here.
        if let Some((entry, _)) = self.sq_ring.push() {
            self.sq.write(usize::from(entry) * SQE_BYTES, &cmd.encode());
            self.unrung = true;
        }
    }

    fn ring_sq(&mut self) {
        if self.unrung {
            self.unrung = false;
            let db = self.ctrl.cap.sq_tail_doorbell(self.qid);
            if self
                .ctrl
                .mmio
                .write32(db, u32::from(self.sq_ring.tail()))
                .is_err()
            {
                self.ctrl.transition(CtrlState::Removed);
            }
        }
    }

    fn finish(
        &mut self,
        slot: u16,
        result: Result<(), BdevError>,
        done: &mut dyn FnMut(BdevIo, Result<(), BdevError>),
    ) {
        let Some(mut p) = self.slots[usize::from(slot)].take() else {
            return;
        };
        self.free.push(slot);
        self.in_flight -= 1;
        self.stats.completed += 1;
        if result.is_err() {
            self.stats.failed += 1;
        } else if let IoKind::Read { blocks, .. } = p.io.kind {
            let bytes = blocks as usize * self.geo.block_size as usize;
            let off = self.data_offset(slot);
            if let Some(buf) = p.io.buf.as_mut() {
                buf.set_len(bytes);
                self.data.read(off, &mut buf.as_mut_slice()[..bytes]);
            }
        }
        done(p.io, result);
    }

    /// Fails every in-flight request: the controller is disabled or gone, so nothing more
    /// will be written into the slot buffers.
    fn fail_all(
        &mut self,
        state: CtrlState,
        done: &mut dyn FnMut(BdevIo, Result<(), BdevError>),
    ) -> usize {
        let mut n = 0;
        for slot in 0..self.slots.len() as u16 {
            if self.slots[usize::from(slot)].is_some() {
                self.finish(slot, Err(gone(state)), done);
                n += 1;
            }
        }
        n
    }

    /// Abort for commands past the timeout; a controller reset for those whose abort did not
    /// complete them within another timeout.
    fn check_timeouts(&mut self) {
        let now = Instant::now();
        let mut abort = Vec::new();
        let mut reset = false;
        for (slot, p) in self.slots.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            let age = now.duration_since(p.started);
            if age > self.timeout * 2 && p.abort_sent {
                reset = true;
            } else if age > self.timeout && !p.abort_sent {
                p.abort_sent = true;
                abort.push(slot as u16);
            }
        }
        for cid in abort {
            log::warn!(
                "{}: qid {} cid {cid} timed out; aborting",
                self.ctrl.bdf,
                self.qid
            );
            if let Err(e) = self.ctrl.abort(self.qid, cid) {
                log::warn!("{}: abort: {e}", self.ctrl.bdf);
            }
        }
        if reset {
            self.ctrl.reset_after_timeout();
        }
    }
}

fn set_range(cmd: &mut Command, lba: u64, blocks: u64) {
    cmd.cdw10 = lba as u32;
    cmd.cdw11 = (lba >> 32) as u32;
    cmd.cdw12 = (blocks - 1) as u32 & 0xffff;
}

fn gone(state: CtrlState) -> BdevError {
    let why = match state {
        CtrlState::Removed => "NVMe controller removed",
        _ => "NVMe controller failed and was reset",
    };
    BdevError::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, why))
}

/// An NVMe status as a block-device error (the NVMe-oF layer picks the host's status).
pub(super) fn status_error(c: &Completion, io: &BdevIo, num_blocks: u64) -> BdevError {
    match c.sct_sc() {
        (0, 0x80) => {
            let (lba, blocks) = io.kind.range().unwrap_or((0, 0));
            BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks,
            }
        }
        (0, 0x02) | (0, 0x01) => BdevError::Unsupported("rejected by the NVMe controller"),
        (1, 0x82) => BdevError::ReadOnly,
        (0, 0x07) => BdevError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "command aborted after a timeout",
        )),
        (sct, sc) => BdevError::Io(std::io::Error::other(format!(
            "NVMe {} failed: SCT {sct:#x} SC {sc:#x}",
            io.kind.name()
        ))),
    }
}

impl IoChannel for QueuePair {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        let state = self.ctrl.state();
        if state != CtrlState::Live {
            self.stats.rejected += 1;
            return Err((io, gone(state)));
        }
        if let Err(e) = self.geo.check(&io) {
            self.stats.rejected += 1;
            return Err((io, e));
        }
        match io.kind {
            IoKind::Copy { .. } => {
                self.stats.rejected += 1;
                return Err((io, BdevError::Unsupported("copy")));
            }
            IoKind::Unmap { .. } if !self.offloads.dsm => {
                self.stats.rejected += 1;
                return Err((io, BdevError::Unsupported("unmap")));
            }
            _ => {}
        }
        if io.kind.range().is_some_and(|(_, blocks)| blocks == 0) {
            self.stats.submitted += 1;
            self.in_flight += 1;
            self.trivial.push(io);
            return Ok(());
        }
        let Some(slot) = self.free.pop() else {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        };
        let (next_lba, remaining) = match io.kind {
            IoKind::Read { .. } | IoKind::Write { .. } | IoKind::Flush => (0, 0),
            kind => kind.range().unwrap_or((0, 0)),
        };
        self.slots[usize::from(slot)] = Some(Pending {
            io,
            next_lba,
            remaining,
            started: Instant::now(),
            abort_sent: false,
        });
        self.in_flight += 1;
        self.stats.submitted += 1;
        self.queue_command(slot);
        self.ring_sq();
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        if self.in_flight == 0 {
            return 0;
        }
        let mut n = 0;
        for io in std::mem::take(&mut self.trivial) {
            self.in_flight -= 1;
            self.stats.completed += 1;
            done(io, Ok(()));
            n += 1;
        }
        let state = self.ctrl.state();
        if state != CtrlState::Live {
            return n + self.fail_all(state, done);
        }
        let mut consumed = false;
        while n < max {
            let off = self.cq_ring.head_offset();
            let dw3 = self.cq.read32(off + 12);
            if !self.cq_ring.is_new(dw3) {
                break;
            }
            let mut b = [0u8; CQE_BYTES];
            self.cq.read(off, &mut b);
            let c = Completion::decode(&b);
            self.cq_ring.advance();
            self.sq_ring.set_head(c.sq_head);
            consumed = true;
            let slot = c.cid;
            let Some(p) = self.slots.get(usize::from(slot)).and_then(Option::as_ref) else {
                log::warn!("{}: completion for idle cid {slot}", self.ctrl.bdf);
                continue;
            };
            if !c.is_success() {
                let e = status_error(&c, &p.io, self.geo.num_blocks);
                self.finish(slot, Err(e), done);
                n += 1;
            } else if p.remaining > 0 {
                self.queue_command(slot);
            } else {
                self.finish(slot, Ok(()), done);
                n += 1;
            }
        }
        if consumed {
            self.last_check = Instant::now();
            let db = self.ctrl.cap.cq_head_doorbell(self.qid);
            let head = (self.cq_ring.head_offset() / CQE_BYTES) as u32;
            if self.ctrl.mmio.write32(db, head).is_err() {
                self.ctrl.transition(CtrlState::Removed);
            }
            self.ring_sq();
        } else if self.last_check.elapsed() > CHECK_EVERY {
            self.last_check = Instant::now();
            if self.ctrl.check_present() == CtrlState::Live {
                self.check_timeouts();
            }
            let state = self.ctrl.state();
            if state != CtrlState::Live {
                n += self.fail_all(state, done);
            }
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        let deadline = Instant::now() + self.timeout * 3;
        while self.in_flight > 0 && Instant::now() < deadline {
            self.poll(usize::MAX, &mut |_, _| {});
            std::thread::yield_now();
        }
        if self.ctrl.state() == CtrlState::Live {
            match self.ctrl.delete_io_queue(self.qid) {
                Ok(()) => self.ctrl.give_qid(self.qid),
                Err(e) => log::warn!("{}: delete I/O queue {}: {e}", self.ctrl.bdf, self.qid),
            }
        }
    }
}
