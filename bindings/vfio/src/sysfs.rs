//! PCI addresses and the sysfs facts the driver checks before opening a device.

use std::fs;
use std::path::PathBuf;

use crate::{Result, VfioError};

/// A PCI function address, `DDDD:BB:DD.F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl std::str::FromStr for PciAddress {
    type Err = VfioError;

    fn from_str(s: &str) -> Result<PciAddress> {
        let bad = || VfioError::BadAddress(s.to_string());
        let (domain, rest) = s.split_once(':').ok_or_else(bad)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (device, function) = rest.split_once('.').ok_or_else(bad)?;
        let hex = |t: &str, n: usize| -> Result<u32> {
            if t.len() != n || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(t, 16).map_err(|_| bad())
        };
        let (domain, bus, device, function) = (
            hex(domain, 4)?,
            hex(bus, 2)?,
            hex(device, 2)?,
            hex(function, 1)?,
        );
        if device > 0x1f || function > 7 {
            return Err(bad());
        }
        Ok(PciAddress {
            domain: domain as u16,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl std::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl PciAddress {
    pub fn sysfs(&self) -> PathBuf {
        PathBuf::from(format!("/sys/bus/pci/devices/{self}"))
    }
}

/// The driver the device is bound to, if any.
pub fn kernel_driver(bdf: &PciAddress) -> Result<Option<String>> {
    let dir = bdf.sysfs();
    if !dir.exists() {
        return Err(VfioError::NoDevice(bdf.to_string()));
    }
    Ok(fs::read_link(dir.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())))
}

/// The device's IOMMU group number; a clear error when the IOMMU is off.
pub fn iommu_group(bdf: &PciAddress) -> Result<u32> {
    let dir = bdf.sysfs();
    if !dir.exists() {
        return Err(VfioError::NoDevice(bdf.to_string()));
    }
    let link =
        fs::read_link(dir.join("iommu_group")).map_err(|_| VfioError::NoIommu(bdf.to_string()))?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| VfioError::NoIommu(bdf.to_string()))
}

/// Binds `bdf` to vfio-pci the way SPDK's scripts/setup.sh does: driver_override, unbind from
/// the current driver, reprobe. Refuses when the IOMMU is off, and when a block device of the
/// controller is mounted (the kernel driver is in use).
pub fn bind_vfio(bdf: &PciAddress) -> Result<()> {
    iommu_group(bdf)?;
    let dir = bdf.sysfs();
    let current = kernel_driver(bdf)?;
    if current.as_deref() == Some("vfio-pci") {
        return Ok(());
    }
    if let Some(dev) = mounted_block_device(bdf) {
        return Err(VfioError::InUse {
            bdf: bdf.to_string(),
            what: dev,
        });
    }
    if !PathBuf::from("/sys/bus/pci/drivers/vfio-pci").exists() {
        return Err(VfioError::Unsupported(
            "the vfio-pci driver is not loaded (modprobe vfio-pci)",
        ));
    }
    write(dir.join("driver_override"), "vfio-pci")?;
    if current.is_some() {
        write(dir.join("driver/unbind"), &bdf.to_string())?;
    }
    write(
        PathBuf::from("/sys/bus/pci/drivers_probe"),
        &bdf.to_string(),
    )?;
    match kernel_driver(bdf)? {
        Some(d) if d == "vfio-pci" => Ok(()),
        other => Err(VfioError::WrongDriver {
            bdf: bdf.to_string(),
            driver: other.unwrap_or_else(|| "no".into()),
        }),
    }
}

/// Gives `bdf` back to its kernel driver: clears driver_override, unbinds from vfio-pci,
/// reprobes. Returns the driver that took it (if any).
pub fn unbind_vfio(bdf: &PciAddress) -> Result<Option<String>> {
    let dir = bdf.sysfs();
    let current = kernel_driver(bdf)?;
    write(dir.join("driver_override"), "\n")?;
    if current.is_some() {
        write(dir.join("driver/unbind"), &bdf.to_string())?;
    }
    write(
        PathBuf::from("/sys/bus/pci/drivers_probe"),
        &bdf.to_string(),
    )?;
    kernel_driver(bdf)
}

fn write(path: PathBuf, value: &str) -> Result<()> {
    fs::write(&path, value).map_err(|source| VfioError::Sysfs {
        path: path.display().to_string(),
        source,
    })
}

/// A mounted block device of the NVMe controller at `bdf` (/dev/nvmeXnY or a partition).
fn mounted_block_device(bdf: &PciAddress) -> Option<String> {
    let ctrls = fs::read_dir(bdf.sysfs().join("nvme")).ok()?;
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    for ctrl in ctrls.flatten() {
        let name = ctrl.file_name().to_string_lossy().into_owned();
        // nvme0 -> /dev/nvme0n1, /dev/nvme0n1p1 ...
        let prefix = format!("/dev/{name}n");
        if let Some(line) = mounts.lines().find(|l| l.starts_with(&prefix)) {
            return line.split_whitespace().next().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_parse_and_print() {
        let a: PciAddress = "0000:00:04.0".parse().expect("valid");
        assert_eq!((a.domain, a.bus, a.device, a.function), (0, 0, 4, 0));
        assert_eq!(a.to_string(), "0000:00:04.0");
        let b: PciAddress = "abcd:ef:1f.7".parse().expect("valid");
        assert_eq!(b.to_string(), "abcd:ef:1f.7");
        for bad in [
            "",
            "00:04.0",
            "0000:00:04",
            "0000:00:20.0",
            "0000:00:04.8",
            "000g:00:04.0",
            "0000:00:04.0 ",
        ] {
            assert!(
                matches!(bad.parse::<PciAddress>(), Err(VfioError::BadAddress(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_missing_device_is_named() {
        let a: PciAddress = "ffff:ff:1f.7".parse().expect("valid");
        assert!(matches!(iommu_group(&a), Err(VfioError::NoDevice(_))));
        assert!(matches!(kernel_driver(&a), Err(VfioError::NoDevice(_))));
    }
}
