//! `nvme-pcie`: a local NVMe controller driven from user space over VFIO (SPDK's bdev_nvme
//! with trtype PCIe). No kernel I/O stack: commands go into submission queues in DMA memory,
//! doorbells are MMIO stores, completions are polled on the reactor.
//!
//! - [`regs`]: BAR0 register layout; [`queue`]: ring arithmetic and entry layouts;
//!   [`prp`]: PRP entries and lists; [`identify`]: Identify data; `ctrl`: reset, enable,
//!   admin queue, queue creation, abort, controller state; `channel`: the per-reactor queue
//!   pair.
//! - Capabilities come from Identify: Write Zeroes is offloaded when ONCS says so and emulated
//!   with writes of zeroes otherwise; Unmap is Dataset Management (deallocate) when ONCS has
//!   it and deallocated blocks read zeroes (DLFEAT), else unsupported; the volatile write cache
//!   is VWC; Copy is not offered.
//! - Timeouts: a command older than the timeout is aborted (admin Abort); one still pending
//!   after twice the timeout disables the controller (every queue dropped, no more DMA) and the
//!   controller is `Failed`: all I/O fails until it is detached and attached again. A device
//!   whose registers read all ones is `Removed`: in-flight and new I/O fail with an error.
//! - Attaching one controller creates one bdev per active namespace, `<name>n<nsid>`.

mod channel;
mod ctrl;
pub mod identify;
pub mod prp;
pub mod queue;
pub mod regs;

use std::sync::Arc;
use std::time::Duration;

use ferrite_reactor::PoolRegions;
pub use ferrite_vfio::PciAddress;

use crate::io::Geometry;
use crate::{BdevError, BlockDevice, Capabilities, IoChannel};
pub use ctrl::CtrlState;

/// Largest transfer the driver issues (bounce buffer per slot; a PRP list in one page).
const MAX_TRANSFER: usize = 128 << 10;
/// Commands in flight per queue pair.
const QUEUE_DEPTH: u16 = 128;
/// A command older than this is aborted.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One namespace of an attached controller.
#[derive(Debug)]
pub struct NvmePcieBdev {
    name: String,
    ctrl: Arc<ctrl::Controller>,
    nsid: u32,
    geo: Geometry,
    caps: Capabilities,
    offloads: channel::Offloads,
    uuid: [u8; 16],
    timeout: Duration,
}

/// Attaches the controller at `traddr` (bound to vfio-pci) and returns a bdev per active
/// namespace, named `<name>n<nsid>`.
pub fn attach(
    name: &str,
    traddr: &str,
    timeout: Duration,
) -> Result<Vec<Arc<NvmePcieBdev>>, BdevError> {
    let bdf: PciAddress = traddr
        .parse()
        .map_err(|e: ferrite_vfio::VfioError| BdevError::InvalidConfig(e.to_string()))?;
    let ctrl = Arc::new(ctrl::Controller::attach(bdf)?);
    if ctrl.namespaces.is_empty() {
        return Err(BdevError::InvalidConfig(format!(
            "{bdf}: the controller has no active namespace without metadata"
        )));
    }
    let max_transfer = ctrl.id.max_transfer(ctrl.cap.min_page, MAX_TRANSFER);
    let offloads_base = channel::Offloads {
        write_zeroes: ctrl.id.write_zeroes(),
        dsm: ctrl.id.dsm(),
    };
    ctrl.namespaces
        .iter()
        .map(|&(nsid, ns)| {
            let geo = Geometry::new(ns.block_size, ns.nsze, max_transfer as u32)?;
            let offloads = channel::Offloads {
                dsm: offloads_base.dsm && ns.dealloc_reads_zeroes,
                ..offloads_base
            };
            Ok(Arc::new(NvmePcieBdev {
                name: format!("{name}n{nsid}"),
                ctrl: ctrl.clone(),
                nsid,
                geo,
                caps: Capabilities {
                    write_zeroes: true,
                    unmap: offloads.dsm,
                    volatile_write_cache: ctrl.id.vwc,
                    max_transfer_bytes: max_transfer as u32,
                    copy: false,
                    read_only: false,
                    thin_provisioned: ns.thin,
                },
                offloads,
                uuid: stable_uuid(&ctrl.id.model, &ctrl.id.serial, nsid),
                timeout,
            }))
        })
        .collect()
}

/// A UUID derived from the controller's model, serial and the NSID, so that a restarted
/// daemon presents the same namespace identity to hosts.
fn stable_uuid(model: &str, serial: &str, nsid: u32) -> [u8; 16] {
    let fnv = |seed: u64| {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for b in model
            .bytes()
            .chain([0])
            .chain(serial.bytes())
            .chain(nsid.to_le_bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&fnv(1).to_le_bytes());
    u[8..].copy_from_slice(&fnv(2).to_le_bytes());
    u[6] = (u[6] & 0x0f) | 0x80; // version 8: custom
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

impl NvmePcieBdev {
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    pub fn pci_address(&self) -> PciAddress {
        self.ctrl.bdf
    }

    pub fn controller_state(&self) -> CtrlState {
        self.ctrl.state()
    }
}

impl BlockDevice for NvmePcieBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn block_size(&self) -> u32 {
        self.geo.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.geo.num_blocks
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    fn open_channel(&self, _buffers: &[&PoolRegions]) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(channel::QueuePair::open(
            self.ctrl.clone(),
            self.nsid,
            self.geo,
            self.offloads,
            QUEUE_DEPTH,
            self.timeout,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_stable_and_distinct() {
        let a = stable_uuid("QEMU NVMe Ctrl", "ferrite15", 1);
        assert_eq!(a, stable_uuid("QEMU NVMe Ctrl", "ferrite15", 1));
        assert_ne!(a, stable_uuid("QEMU NVMe Ctrl", "ferrite15", 2));
        assert_ne!(a, stable_uuid("QEMU NVMe Ctrl", "ferrite16", 1));
        assert_eq!(a[6] >> 4, 8);
    }

    #[test]
    fn bad_addresses_are_named() {
        let e = attach("nvme0", "00:04.0", DEFAULT_TIMEOUT).expect_err("not an address");
        assert!(e.to_string().contains("not a PCI address"), "{e}");
        let e = attach("nvme0", "ffff:ff:1f.7", DEFAULT_TIMEOUT).expect_err("no such device");
        assert!(e.to_string().contains("no PCI device ffff:ff:1f.7"), "{e}");
    }
}
