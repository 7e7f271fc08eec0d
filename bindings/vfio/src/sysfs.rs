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
