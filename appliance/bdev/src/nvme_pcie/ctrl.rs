//! One NVMe controller over VFIO: reset and enable, the admin queue (driven synchronously,
//! off the I/O path, under a mutex), Identify, I/O queue creation, Abort and the controller
//! state every channel checks.
//!
//! State (one transition check, [`CtrlState::is_transition_valid`]):
//! ```text
//!   Live --(abort did not help: controller reset)--> Failed
//!   Live --(CSTS reads all ones)--> Removed
//!   Failed/Removed are final: I/O fails, detach and attach again.
//! ```

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrite_vfio::{Container, Device, DmaBuffer, Group, Mmio, PciAddress, VfioError};

use super::identify::{active_namespaces, ControllerId, NamespaceId};
use super::queue::{Command, Completion, CqRing, SqRing, CQE_BYTES, SQE_BYTES};
use super::regs::{self, Cap};
use crate::BdevError;

const ADMIN_ENTRIES: u16 = 32;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) mod opcode {
    pub const DELETE_SQ: u8 = 0x00;
    pub const CREATE_SQ: u8 = 0x01;
    pub const DELETE_CQ: u8 = 0x04;
    pub const CREATE_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DSM: u8 = 0x09;
}

/// Where a controller is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CtrlState {
    Live = 0,
    /// Reset after a command timed out and its abort did not complete it.
    Failed = 1,
    /// The device is gone (hot-removed or its link died).
    Removed = 2,
}

impl CtrlState {
    pub fn is_transition_valid(from: CtrlState, to: CtrlState) -> bool {
        matches!(
            (from, to),
            (CtrlState::Live, CtrlState::Failed) | (CtrlState::Live, CtrlState::Removed)
        )
    }

    fn from_u8(v: u8) -> CtrlState {
        match v {
            0 => CtrlState::Live,
            1 => CtrlState::Failed,
            _ => CtrlState::Removed,
        }
    }
}

fn vfio(e: VfioError) -> BdevError {
    BdevError::InvalidConfig(e.to_string())
}

fn timed_out(what: &'static str) -> BdevError {
    BdevError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

struct AdminQueue {
    sq: DmaBuffer,
    cq: DmaBuffer,
    sq_ring: SqRing,
    cq_ring: CqRing,
    next_cid: u16,
    /// One page for Identify data.
    data: DmaBuffer,
}

/// An attached controller, shared by its namespaces' bdevs and their channels.
pub struct Controller {
    pub bdf: PciAddress,
    pub cap: Cap,
    pub id: ControllerId,
    pub namespaces: Vec<(u32, NamespaceId)>,
    /// I/O queues the controller granted (Set Features Number of Queues).
    pub max_io_queues: u16,
    pub mmio: Mmio,
    state: AtomicU8,
    admin: Mutex<AdminQueue>,
    free_qids: Mutex<Vec<u16>>,
    pub container: Container,
    // Dropped last: the device fd, then its group.
    device: Device,
    _group: Group,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("bdf", &self.bdf)
            .field("model", &self.id.model)
            .field("state", &self.state())
            .finish()
    }
}

impl Controller {
    /// Opens `bdf` through VFIO, resets and enables the controller, identifies it and its
    /// namespaces. The errors name what to fix (IOMMU off, wrong driver, no such device).
    pub fn attach(bdf: PciAddress) -> Result<Controller, BdevError> {
        let group_no = ferrite_vfio::iommu_group(&bdf).map_err(vfio)?;
        match ferrite_vfio::kernel_driver(&bdf).map_err(vfio)? {
            Some(d) if d == "vfio-pci" => {}
            Some(driver) => {
                return Err(vfio(VfioError::WrongDriver {
                    bdf: bdf.to_string(),
                    driver,
                }))
            }
            None => {
                return Err(vfio(VfioError::WrongDriver {
                    bdf: bdf.to_string(),
                    driver: "no".into(),
                }))
            }
        }
        let container = Container::open().map_err(vfio)?;
        let group = Group::open(group_no, &container).map_err(vfio)?;
        let device = group.device(&bdf).map_err(vfio)?;
        // A function-level reset clears whatever a previous owner (a killed ferrited) left.
        if let Err(e) = device.reset() {
            log::info!("{bdf}: no function reset ({e}); relying on controller reset");
        }
        device.enable_bus_master().map_err(vfio)?;
        let mmio = device.map_bar(0).map_err(vfio)?;
        let cap = Cap::decode(mmio.read64(regs::CAP).map_err(vfio)?);
        if !cap.nvm_command_set || cap.min_page > regs::PAGE {
            return Err(BdevError::InvalidConfig(format!(
                "{bdf}: controller lacks the NVM command set or 4 KiB pages"
            )));
        }
        let entries = ADMIN_ENTRIES.min(cap.max_queue_entries as u16);
        let alloc = |len| container.dma_alloc(len).map_err(vfio);
        let admin = AdminQueue {
            sq: alloc(usize::from(entries) * SQE_BYTES)?,
            cq: alloc(usize::from(entries) * CQE_BYTES)?,
            sq_ring: SqRing::new(entries),
            cq_ring: CqRing::new(entries),
            next_cid: 0,
            data: alloc(regs::PAGE)?,
        };
        let mut ctrl = Controller {
            bdf,
            cap,
            id: ControllerId::decode(&[0; 4096]),
            namespaces: Vec::new(),
            max_io_queues: 0,
            mmio,
            state: AtomicU8::new(CtrlState::Live as u8),
            admin: Mutex::new(admin),
            free_qids: Mutex::new(Vec::new()),
            container,
            device,
            _group: group,
        };
        ctrl.disable()?;
        {
            let admin = ctrl
                .admin
                .get_mut()
                .map_err(|_| BdevError::NotReady("admin queue poisoned"))?;
            let w = |off, v| ctrl.mmio.write32(off, v).map_err(vfio);
            w(regs::INTMS, u32::MAX)?;
            w(regs::AQA, regs::aqa(u32::from(entries)))?;
            ctrl.mmio
                .write64(regs::ASQ, admin.sq.iova())
                .map_err(vfio)?;
            ctrl.mmio
                .write64(regs::ACQ, admin.cq.iova())
                .map_err(vfio)?;
            w(regs::CC, regs::cc_enable())?;
        }
        ctrl.wait_ready(true)?;
        let page = ctrl.identify(1, 0)?;
        ctrl.id = ControllerId::decode(&page);
        // Ask for as many queue pairs as the controller will give (one per reactor is used).
        let granted = ctrl.admin_cmd(Command {
            opcode: opcode::SET_FEATURES,
            cdw10: 0x07,
            cdw11: (63 << 16) | 63,
            ..Command::default()
        })?;
        ctrl.max_io_queues = ((granted.result & 0xffff) as u16)
            .min((granted.result >> 16) as u16)
            .saturating_add(1)
            .min(64);
        *ctrl
            .free_qids
            .get_mut()
            .map_err(|_| BdevError::NotReady("poisoned"))? =
            (1..=ctrl.max_io_queues).rev().collect();
        let list = ctrl.identify(2, 0)?;
        for nsid in active_namespaces(&list) {
            if let Some(ns) = NamespaceId::decode(&ctrl.identify(0, nsid)?) {
                if ns.metadata == 0 {
                    ctrl.namespaces.push((nsid, ns));
                } else {
                    log::warn!(
                        "{bdf}: namespace {nsid} has {} metadata bytes per block; not served",
                        ns.metadata
                    );
                }
            }
        }
        log::info!(
            "{bdf}: {} {} ready: {} namespace(s), {} I/O queues, ONCS {:#x}, VWC {}, MDTS {}",
            ctrl.id.model,
            ctrl.id.serial,
            ctrl.namespaces.len(),
            ctrl.max_io_queues,
            ctrl.id.oncs,
            ctrl.id.vwc,
            ctrl.id.mdts
        );
        Ok(ctrl)
    }

    pub fn state(&self) -> CtrlState {
        CtrlState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `to` if that is a valid transition from the current state; returns whether
    /// this call made the change.
    pub fn transition(&self, to: CtrlState) -> bool {
        let from = self.state();
        if !CtrlState::is_transition_valid(from, to) {
            return false;
        }
        let done = self
            .state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if done {
            log::error!("{}: controller {from:?} -> {to:?}", self.bdf);
        }
        done
    }

    /// Reads CSTS; an all-ones value means the device is gone and moves to `Removed`.
    pub fn check_present(&self) -> CtrlState {
        match self.mmio.read32(regs::CSTS) {
            Ok(v) if regs::device_gone(v) => {
                self.transition(CtrlState::Removed);
            }
            Ok(v) if regs::csts_fatal(v) => {
                self.transition(CtrlState::Failed);
            }
            Ok(_) => {}
            Err(_) => {
                self.transition(CtrlState::Removed);
            }
        }
        self.state()
    }

    fn disable(&self) -> Result<(), BdevError> {
        let cc = self.mmio.read32(regs::CC).map_err(vfio)?;
        if regs::device_gone(cc) {
            return Err(BdevError::InvalidConfig(format!(
                "{}: device does not respond",
                self.bdf
            )));
        }
        if cc & 1 == 1 {
            self.mmio.write32(regs::CC, cc & !1).map_err(vfio)?;
        }
        self.wait_ready(false)
    }

    fn wait_ready(&self, ready: bool) -> Result<(), BdevError> {
        let deadline = Instant::now() + Duration::from_millis(self.cap.timeout_ms.max(500));
        loop {
            let csts = self.mmio.read32(regs::CSTS).map_err(vfio)?;
            if regs::device_gone(csts) {
                return Err(BdevError::InvalidConfig(format!(
                    "{}: device does not respond",
                    self.bdf
                )));
            }
            if regs::csts_ready(csts) == ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(timed_out("controller did not change CSTS.RDY in CAP.TO"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Controller reset after a command nobody can complete: disabling the controller makes
    /// it drop every queue, so no DMA into our buffers follows. Final: the controller is
    /// `Failed` and serves nothing until detached and attached again.
    pub fn reset_after_timeout(&self) {
        if self.transition(CtrlState::Failed) {
            if let Err(e) = self.disable() {
                log::error!("{}: controller reset: {e}", self.bdf);
            }
        }
    }

    /// Identify with CNS `cns` for `nsid`, returning the 4 KiB page.
    fn identify(&self, cns: u32, nsid: u32) -> Result<[u8; 4096], BdevError> {
        let mut admin = self
            .admin
            .lock()
            .map_err(|_| BdevError::NotReady("admin queue poisoned"))?;
        admin.data.zero(0, 4096);
        let prp1 = admin.data.iova();
        self.execute(
            &mut admin,
            Command {
                opcode: opcode::IDENTIFY,
                nsid,
                prp1,
                cdw10: cns,
                ..Command::default()
            },
        )?;
        let mut page = [0u8; 4096];
        admin.data.read(0, &mut page);
        Ok(page)
    }

    /// Runs one admin command to completion (bounded wait).
    pub fn admin_cmd(&self, cmd: Command) -> Result<Completion, BdevError> {
        let mut admin = self
            .admin
            .lock()
            .map_err(|_| BdevError::NotReady("admin queue poisoned"))?;
        self.execute(&mut admin, cmd)
    }

    fn execute(&self, admin: &mut AdminQueue, mut cmd: Command) -> Result<Completion, BdevError> {
        if self.state() == CtrlState::Removed {
            return Err(BdevError::NotReady("controller removed"));
        }
        cmd.cid = admin.next_cid;
        admin.next_cid = admin.next_cid.wrapping_add(1);
        let (slot, tail) = admin.sq_ring.push().ok_or(BdevError::QueueFull)?;
        admin.sq.write(usize::from(slot) * SQE_BYTES, &cmd.encode());
        self.mmio
            .write32(self.cap.sq_tail_doorbell(0), u32::from(tail))
            .map_err(vfio)?;
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let off = admin.cq_ring.head_offset();
            let dw3 = admin.cq.read32(off + 12);
            if admin.cq_ring.is_new(dw3) {
                let mut b = [0u8; CQE_BYTES];
                admin.cq.read(off, &mut b);
                let c = Completion::decode(&b);
                let head = admin.cq_ring.advance();
                admin.sq_ring.set_head(c.sq_head);
                self.mmio
                    .write32(self.cap.cq_head_doorbell(0), u32::from(head))
                    .map_err(vfio)?;
                if c.cid != cmd.cid {
                    continue; // a late completion of an earlier, timed-out command
                }
                if !c.is_success() {
                    let (sct, sc) = c.sct_sc();
                    return Err(BdevError::Io(std::io::Error::other(format!(
                        "admin opcode {:#x} failed: SCT {sct:#x} SC {sc:#x}",
                        cmd.opcode
                    ))));
                }
                return Ok(c);
            }
            if Instant::now() > deadline {
                if self.check_present() == CtrlState::Removed {
                    return Err(BdevError::NotReady("controller removed"));
                }
                return Err(timed_out("admin command timed out"));
            }
            std::thread::yield_now();
        }
    }

    /// Takes a free I/O queue id.
    pub fn take_qid(&self) -> Option<u16> {
        self.free_qids.lock().ok()?.pop()
    }

    pub fn give_qid(&self, qid: u16) {
        if let Ok(mut v) = self.free_qids.lock() {
            v.push(qid);
        }
    }

    /// Creates I/O completion queue then submission queue `qid` of `entries` entries at the
    /// given IOVAs (physically contiguous in IOVA space, interrupts off).
    pub fn create_io_queue(
        &self,
        qid: u16,
        entries: u16,
        sq: u64,
        cq: u64,
    ) -> Result<(), BdevError> {
        let size = (u32::from(entries) - 1) << 16 | u32::from(qid);
        self.admin_cmd(Command {
            opcode: opcode::CREATE_CQ,
            prp1: cq,
            cdw10: size,
            cdw11: 1, // PC, IEN off
            ..Command::default()
        })?;
        if let Err(e) = self.admin_cmd(Command {
            opcode: opcode::CREATE_SQ,
            prp1: sq,
            cdw10: size,
            cdw11: (u32::from(qid) << 16) | 1,
            ..Command::default()
        }) {
            let _ = self.delete_queue(opcode::DELETE_CQ, qid);
            return Err(e);
        }
        Ok(())
    }

    pub fn delete_io_queue(&self, qid: u16) -> Result<(), BdevError> {
        self.delete_queue(opcode::DELETE_SQ, qid)?;
        self.delete_queue(opcode::DELETE_CQ, qid)
    }

    fn delete_queue(&self, op: u8, qid: u16) -> Result<(), BdevError> {
        self.admin_cmd(Command {
            opcode: op,
            cdw10: u32::from(qid),
            ..Command::default()
        })
        .map(|_| ())
    }

    /// Asks the controller to abort command `cid` of submission queue `sqid`.
    pub fn abort(&self, sqid: u16, cid: u16) -> Result<(), BdevError> {
        self.admin_cmd(Command {
            opcode: opcode::ABORT,
            cdw10: (u32::from(cid) << 16) | u32::from(sqid),
            ..Command::default()
        })
        .map(|_| ())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Stop the controller before the DMA memory goes: the fields drop after this.
        if self.state() != CtrlState::Removed {
            if let Err(e) = self.disable() {
                log::warn!("{}: disable at detach: {e}", self.bdf);
            }
        }
        let _ = &self.device;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_only_leave_live() {
        use CtrlState::*;
        assert!(CtrlState::is_transition_valid(Live, Failed));
        assert!(CtrlState::is_transition_valid(Live, Removed));
        for from in [Failed, Removed] {
            for to in [Live, Failed, Removed] {
                assert!(
                    !CtrlState::is_transition_valid(from, to),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert!(!CtrlState::is_transition_valid(Live, Live));
        for s in [Live, Failed, Removed] {
            assert_eq!(CtrlState::from_u8(s as u8), s);
        }
    }
}
