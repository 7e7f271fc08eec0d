//! `ferritectl device bind|unbind`: hands a PCI NVMe controller to vfio-pci for ferrited's
//! userspace driver and back to the kernel (what SPDK's scripts/setup.sh does). Runs here,
//! not through ferrited: it writes sysfs as root.

use anyhow::{Context, Result};
use clap::Subcommand;
use ferrite_vfio::PciAddress;

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Bind a PCI device to vfio-pci (needs the IOMMU on and vfio-pci loaded).
    Bind { traddr: String },
    /// Give a PCI device back to its kernel driver.
    Unbind { traddr: String },
}

pub fn run(cmd: DeviceCmd) -> Result<()> {
    match cmd {
        DeviceCmd::Bind { traddr } => {
            let bdf: PciAddress = traddr.parse()?;
            ferrite_vfio::bind_vfio(&bdf).with_context(|| format!("bind {bdf} to vfio-pci"))?;
            let group = ferrite_vfio::iommu_group(&bdf)?;
            println!("{bdf}: vfio-pci (IOMMU group {group}, /dev/vfio/{group})");
        }
        DeviceCmd::Unbind { traddr } => {
            let bdf: PciAddress = traddr.parse()?;
            let driver =
                ferrite_vfio::unbind_vfio(&bdf).with_context(|| format!("unbind {bdf}"))?;
            println!("{bdf}: {}", driver.as_deref().unwrap_or("no driver"));
        }
    }
    Ok(())
}
