//! The VFIO ABI from `<linux/vfio.h>` (type1 IOMMU, PCI device): ioctl numbers and the structs
//! they take, written out by hand (a dozen stable definitions; no bindgen step). Layout
//! assertions below pin every struct to the kernel's size.

/// `VFIO_TYPE` (';') and `VFIO_BASE`: every VFIO ioctl is `_IO(VFIO_TYPE, VFIO_BASE + n)`.
const VFIO_TYPE: u64 = b';' as u64;
const VFIO_BASE: u64 = 100;

const fn io(nr: u64) -> u64 {
    (VFIO_TYPE << 8) | (VFIO_BASE + nr)
}

pub const VFIO_API_VERSION: i32 = 0;
pub const VFIO_GET_API_VERSION: u64 = io(0);
pub const VFIO_CHECK_EXTENSION: u64 = io(1);
pub const VFIO_SET_IOMMU: u64 = io(2);
pub const VFIO_GROUP_GET_STATUS: u64 = io(3);
pub const VFIO_GROUP_SET_CONTAINER: u64 = io(4);
pub const VFIO_GROUP_GET_DEVICE_FD: u64 = io(6);
pub const VFIO_DEVICE_GET_INFO: u64 = io(7);
pub const VFIO_DEVICE_GET_REGION_INFO: u64 = io(8);
pub const VFIO_DEVICE_RESET: u64 = io(11);
pub const VFIO_IOMMU_MAP_DMA: u64 = io(13);
pub const VFIO_IOMMU_UNMAP_DMA: u64 = io(14);

pub const VFIO_TYPE1_IOMMU: i32 = 1;
pub const VFIO_TYPE1V2_IOMMU: i32 = 3;

pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;

pub const VFIO_DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const VFIO_DEVICE_FLAGS_PCI: u32 = 1 << 1;

pub const VFIO_REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub const VFIO_REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;

pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// Region index of the PCI configuration space (BARs are 0..=5).
pub const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GroupStatus {
    pub argsz: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

const _: () = {
    assert!(std::mem::size_of::<GroupStatus>() == 8);
    assert!(std::mem::size_of::<DeviceInfo>() == 16);
    assert!(std::mem::size_of::<RegionInfo>() == 32);
    assert!(std::mem::size_of::<DmaMap>() == 32);
    assert!(std::mem::size_of::<DmaUnmap>() == 24);
    assert!(std::mem::offset_of!(RegionInfo, size) == 16);
    assert!(std::mem::offset_of!(DmaMap, vaddr) == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // _IO(';', 100) .. from <linux/vfio.h>, as printed by a C program on x86-64.
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
    }
}
