//! VFIO for Ferrite's userspace NVMe driver: the unsafe part of the kernel-bypass path.
//!
//! - [`raw`]: the ioctl numbers and structs of `<linux/vfio.h>` (type1 IOMMU, PCI devices).
//! - [`Container`], [`Group`], [`Device`]: owned file descriptors of `/dev/vfio/vfio`,
//!   `/dev/vfio/<group>` and the device, with the ioctls as methods.
//! - [`Mmio`]: a mapped BAR; every register access is a bounds- and alignment-checked volatile
//!   load or store.
//! - [`DmaBuffer`]: anonymous memory mapped into the container's IOMMU domain at an IOVA the
//!   container hands out; unmapped from the IOMMU before it is freed, so the device can never
//!   reach memory that was given back.
//!
//! Interrupts stay off: the driver polls completion queues on its reactor.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod raw;
mod sysfs;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

pub use sysfs::{bind_vfio, iommu_group, kernel_driver, unbind_vfio, PciAddress};

/// What went wrong opening or driving a VFIO device.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// The PCI address does not name a device on this machine.
    #[error("no PCI device {0} (see /sys/bus/pci/devices)")]
    NoDevice(String),
    /// Not a `DDDD:BB:DD.F` PCI address.
    #[error("{0:?} is not a PCI address (expected DDDD:BB:DD.F, e.g. 0000:00:04.0)")]
    BadAddress(String),
    /// The device has no IOMMU group: the IOMMU is off (or absent).
    #[error("PCI device {0} has no IOMMU group: the IOMMU is off (boot with intel_iommu=on or amd_iommu=on)")]
    NoIommu(String),
    /// The device is bound to another driver than vfio-pci.
    #[error("PCI device {bdf} is bound to the {driver} driver, not vfio-pci (run `ferritectl device bind {bdf}`)")]
    WrongDriver { bdf: String, driver: String },
    /// The group has devices not bound to vfio-pci (or pci-stub), so it cannot be used.
    #[error("IOMMU group {0} is not viable: bind every device of the group to vfio-pci")]
    GroupNotViable(u32),
    /// A block device of the controller is mounted: the kernel driver is in use.
    #[error("PCI device {bdf} is in use by the kernel: {what} is mounted")]
    InUse { bdf: String, what: String },
    /// Writing a sysfs file failed.
    #[error("write {path}: {source}")]
    Sysfs {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The kernel lacks a VFIO feature this crate needs.
    #[error("VFIO: {0}")]
    Unsupported(&'static str),
    /// A region or register access outside the mapped range or misaligned.
    #[error("MMIO access of {size} bytes at offset {offset:#x} outside a {len:#x}-byte BAR or misaligned")]
    BadAccess {
        offset: usize,
        size: usize,
        len: usize,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl VfioError {
    fn os(op: &'static str) -> VfioError {
        VfioError::Os {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

pub type Result<T> = std::result::Result<T, VfioError>;

fn ioctl_val(fd: &impl AsRawFd, req: u64, arg: libc::c_ulong, op: &'static str) -> Result<i32> {
    // SAFETY: the VFIO ioctls called this way take an integer argument (or none), no pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if rc < 0 {
        Err(VfioError::os(op))
    } else {
        Ok(rc)
    }
}

fn ioctl_ptr<T>(fd: &impl AsRawFd, req: u64, arg: &mut T, op: &'static str) -> Result<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed struct of the layout this request takes
    // (raw.rs pins each size to the kernel's); the kernel reads/writes at most `argsz` bytes.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if rc < 0 {
        Err(VfioError::os(op))
    } else {
        Ok(rc)
    }
}

struct ContainerInner {
    fd: OwnedFd,
    /// Next free IOVA (a bump allocator: the driver maps its memory once per queue pair).
    next_iova: AtomicU64,
}

/// `/dev/vfio/vfio` with the type1 IOMMU set once a group is attached.
#[derive(Clone)]
pub struct Container {
    inner: Arc<ContainerInner>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("fd", &self.inner.fd.as_raw_fd())
            .finish()
    }
}

/// IOVAs start above zero so a zeroed PRP entry never names valid memory.
const FIRST_IOVA: u64 = 1 << 20;

impl Container {
    pub fn open() -> Result<Container> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vfio/vfio")
            .map_err(|source| VfioError::Os {
                op: "open /dev/vfio/vfio (is the vfio module loaded?)",
                source,
            })?;
        let fd = OwnedFd::from(file);
        if ioctl_val(&fd, raw::VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION")?
            != raw::VFIO_API_VERSION
        {
            return Err(VfioError::Unsupported("unknown VFIO API version"));
        }
        Ok(Container {
            inner: Arc::new(ContainerInner {
                fd,
                next_iova: AtomicU64::new(FIRST_IOVA),
            }),
        })
    }

    /// Selects the type1 IOMMU (v2 when offered). Call after the first group joined.
    fn set_iommu(&self) -> Result<()> {
        let fd = &self.inner.fd;
        let kind = if ioctl_val(
            fd,
            raw::VFIO_CHECK_EXTENSION,
            raw::VFIO_TYPE1V2_IOMMU as _,
            "VFIO_CHECK_EXTENSION",
        )? == 1
        {
            raw::VFIO_TYPE1V2_IOMMU
        } else if ioctl_val(
            fd,
            raw::VFIO_CHECK_EXTENSION,
            raw::VFIO_TYPE1_IOMMU as _,
            "VFIO_CHECK_EXTENSION",
        )? == 1
        {
            raw::VFIO_TYPE1_IOMMU
        } else {
            return Err(VfioError::Unsupported("no type1 IOMMU support"));
        };
        ioctl_val(fd, raw::VFIO_SET_IOMMU, kind as _, "VFIO_SET_IOMMU")?;
        Ok(())
    }

    /// Allocates `len` bytes (rounded up to 4 KiB) of zeroed memory and maps it for device
    /// reads and writes at a fresh IOVA.
    pub fn dma_alloc(&self, len: usize) -> Result<DmaBuffer> {
        const PAGE: usize = 4096;
        let len = len.max(1).div_ceil(PAGE) * PAGE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VfioError::os("mmap DMA memory"));
        }
        let iova = self
            .inner
            .next_iova
            .fetch_add(len as u64, Ordering::Relaxed);
        let mut map = raw::DmaMap {
            argsz: std::mem::size_of::<raw::DmaMap>() as u32,
            flags: raw::VFIO_DMA_MAP_FLAG_READ | raw::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: ptr as u64,
            iova,
            size: len as u64,
        };
        if let Err(e) = ioctl_ptr(
            &self.inner.fd,
            raw::VFIO_IOMMU_MAP_DMA,
            &mut map,
            "VFIO_IOMMU_MAP_DMA",
        ) {
            // SAFETY: unmapping the mapping made above, never handed out.
            unsafe { libc::munmap(ptr, len) };
            return Err(e);
        }
        Ok(DmaBuffer {
            ptr: ptr.cast(),
            len,
            iova,
            container: self.inner.clone(),
        })
    }
}

/// `/dev/vfio/<group>`, attached to a container.
#[derive(Debug)]
pub struct Group {
    file: File,
    number: u32,
    container: Container,
}

impl Group {
    /// Opens IOMMU group `number`, checks it is viable and attaches it to `container`, setting
    /// the container's IOMMU type.
    pub fn open(number: u32, container: &Container) -> Result<Group> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/vfio/{number}"))
            .map_err(|source| VfioError::Os {
                op: "open /dev/vfio/<group> (is the device bound to vfio-pci, and not already open?)",
                source,
            })?;
        let mut status = raw::GroupStatus {
            argsz: std::mem::size_of::<raw::GroupStatus>() as u32,
            flags: 0,
        };
        ioctl_ptr(
            &file,
            raw::VFIO_GROUP_GET_STATUS,
            &mut status,
            "VFIO_GROUP_GET_STATUS",
        )?;
        if status.flags & raw::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::GroupNotViable(number));
        }
        let mut cfd = container.inner.fd.as_raw_fd();
        ioctl_ptr(
            &file,
            raw::VFIO_GROUP_SET_CONTAINER,
            &mut cfd,
            "VFIO_GROUP_SET_CONTAINER",
        )?;
        container.set_iommu()?;
        Ok(Group {
            file,
            number,
            container: container.clone(),
        })
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    /// Opens the device `bdf` of this group.
    pub fn device(&self, bdf: &PciAddress) -> Result<Device> {
        let name = std::ffi::CString::new(bdf.to_string())
            .map_err(|_| VfioError::BadAddress(bdf.to_string()))?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD reads a NUL-terminated string, alive for the call.
        let fd = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                raw::VFIO_GROUP_GET_DEVICE_FD as _,
                name.as_ptr(),
            )
        };
        if fd < 0 {
            return Err(VfioError::os("VFIO_GROUP_GET_DEVICE_FD"));
        }
        // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut info = raw::DeviceInfo {
            argsz: std::mem::size_of::<raw::DeviceInfo>() as u32,
            ..Default::default()
        };
        ioctl_ptr(
            &file,
            raw::VFIO_DEVICE_GET_INFO,
            &mut info,
            "VFIO_DEVICE_GET_INFO",
        )?;
        if info.flags & raw::VFIO_DEVICE_FLAGS_PCI == 0 {
            return Err(VfioError::Unsupported("not a PCI device"));
        }
        Ok(Device {
            file,
            info,
            _container: self.container.clone(),
        })
    }
}

/// Size, offset and access flags of a device region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    pub index: u32,
    pub size: u64,
    pub offset: u64,
    pub readable: bool,
    pub writable: bool,
    pub mmap: bool,
}

/// An open VFIO device.
#[derive(Debug)]
pub struct Device {
    file: File,
    info: raw::DeviceInfo,
    _container: Container,
}

impl Device {
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        if index >= self.info.num_regions {
            return Err(VfioError::Unsupported(
                "region index past the device's regions",
            ));
        }
        let mut r = raw::RegionInfo {
            argsz: std::mem::size_of::<raw::RegionInfo>() as u32,
            index,
            ..Default::default()
        };
        ioctl_ptr(
            &self.file,
            raw::VFIO_DEVICE_GET_REGION_INFO,
            &mut r,
            "VFIO_DEVICE_GET_REGION_INFO",
        )?;
        Ok(RegionInfo {
            index,
            size: r.size,
            offset: r.offset,
            readable: r.flags & raw::VFIO_REGION_INFO_FLAG_READ != 0,
            writable: r.flags & raw::VFIO_REGION_INFO_FLAG_WRITE != 0,
            mmap: r.flags & raw::VFIO_REGION_INFO_FLAG_MMAP != 0,
        })
    }

    /// Maps BAR `index` for register access.
    pub fn map_bar(&self, index: u32) -> Result<Mmio> {
        let r = self.region_info(index)?;
        if !r.mmap || r.size == 0 {
            return Err(VfioError::Unsupported("BAR cannot be mapped"));
        }
        let len = r.size as usize;
        // SAFETY: maps a device region through its VFIO fd at the offset VFIO gave; the new
        // mapping aliases no Rust memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                r.offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VfioError::os("mmap BAR"));
        }
        Ok(Mmio {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Reads `buf.len()` bytes of PCI configuration space at `offset`.
    pub fn config_read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.region_info(raw::VFIO_PCI_CONFIG_REGION_INDEX)?;
        self.file
            .read_exact_at(buf, r.offset + offset)
            .map_err(|source| VfioError::Os {
                op: "read PCI config",
                source,
            })
    }

    /// Writes `buf` to PCI configuration space at `offset`.
    pub fn config_write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let r = self.region_info(raw::VFIO_PCI_CONFIG_REGION_INDEX)?;
        self.file
            .write_all_at(buf, r.offset + offset)
            .map_err(|source| VfioError::Os {
                op: "write PCI config",
                source,
            })
    }

    /// Turns on memory decoding and bus mastering and masks INTx (the driver polls).
    pub fn enable_bus_master(&self) -> Result<()> {
        const COMMAND: u64 = 4;
        const MEMORY: u16 = 1 << 1;
        const BUS_MASTER: u16 = 1 << 2;
        const INTX_DISABLE: u16 = 1 << 10;
        let mut cmd = [0u8; 2];
        self.config_read(COMMAND, &mut cmd)?;
        let v = u16::from_le_bytes(cmd) | MEMORY | BUS_MASTER | INTX_DISABLE;
        self.config_write(COMMAND, &v.to_le_bytes())
    }

    /// Function-level reset, when the device supports one.
    pub fn reset(&self) -> Result<()> {
        if self.info.flags & raw::VFIO_DEVICE_FLAGS_RESET == 0 {
            return Err(VfioError::Unsupported("device has no reset"));
        }
        ioctl_val(&self.file, raw::VFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET").map(|_| ())
    }
}

/// A mapped BAR. Shared between threads: each register access is one volatile load or store,
/// and the NVMe doorbells each thread writes are distinct registers.
#[derive(Debug)]
pub struct Mmio {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is device memory not tied to a thread; every access is a single volatile
// load/store of a naturally aligned register, which is how hardware registers are shared.
unsafe impl Send for Mmio {}
// SAFETY: as above; `&Mmio` only allows those atomic-sized volatile accesses.
unsafe impl Sync for Mmio {}

impl Mmio {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, offset: usize, size: usize) -> Result<()> {
        if offset % size != 0 || offset.checked_add(size).is_none_or(|e| e > self.len) {
            return Err(VfioError::BadAccess {
                offset,
                size,
                len: self.len,
            });
        }
        Ok(())
    }

    pub fn read32(&self, offset: usize) -> Result<u32> {
        self.check(offset, 4)?;
        // SAFETY: in bounds and 4-byte aligned (checked); the mapping lives as long as self.
        Ok(unsafe { self.ptr.add(offset).cast::<u32>().read_volatile() })
    }

    pub fn write32(&self, offset: usize, value: u32) -> Result<()> {
        self.check(offset, 4)?;
        // Queue entries written before a doorbell must be visible to the device first.
        fence(Ordering::SeqCst);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as self.
        unsafe { self.ptr.add(offset).cast::<u32>().write_volatile(value) };
        Ok(())
    }

    /// A 64-bit register as two 32-bit reads (low then high), which every NVMe controller
    /// accepts and which avoids 64-bit MMIO some platforms split anyway.
    pub fn read64(&self, offset: usize) -> Result<u64> {
        let lo = self.read32(offset)?;
        let hi = self.read32(offset + 4)?;
        Ok(u64::from(lo) | (u64::from(hi) << 32))
    }

    pub fn write64(&self, offset: usize, value: u64) -> Result<()> {
        self.write32(offset, value as u32)?;
        self.write32(offset + 4, (value >> 32) as u32)
    }
}

impl Drop for Mmio {
    fn drop(&mut self) {
        // SAFETY: unmapping our own BAR mapping; no reference into it outlives self.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Memory the device reads and writes by IOVA. The device writes it concurrently (completion
/// entries, read data), so it is never handed out as a Rust slice: access copies in and out
/// with volatile operations.
pub struct DmaBuffer {
    ptr: *mut u8,
    len: usize,
    iova: u64,
    container: Arc<ContainerInner>,
}

impl std::fmt::Debug for DmaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("len", &self.len)
            .field("iova", &format_args!("{:#x}", self.iova))
            .finish()
    }
}

// SAFETY: the buffer owns its mapping; moving it to another thread moves that ownership.
unsafe impl Send for DmaBuffer {}

impl DmaBuffer {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address the device uses for byte 0.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    fn check(&self, offset: usize, size: usize) {
        assert!(
            offset.checked_add(size).is_some_and(|e| e <= self.len),
            "DMA access {offset}+{size} past a {}-byte buffer",
            self.len
        );
    }

    /// Copies `src` into the buffer at `offset` (panics when out of bounds: a driver bug).
    pub fn write(&mut self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        // SAFETY: in bounds (checked); `src` is ordinary memory that cannot overlap this
        // private mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), src.len()) };
    }

    /// Copies bytes at `offset` out of the buffer.
    pub fn read(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len());
        fence(Ordering::Acquire);
        // SAFETY: in bounds (checked); `dst` is ordinary memory.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) };
    }

    /// Zeroes `len` bytes at `offset`.
    pub fn zero(&mut self, offset: usize, len: usize) {
        self.check(offset, len);
        // SAFETY: in bounds (checked).
        unsafe { std::ptr::write_bytes(self.ptr.add(offset), 0, len) };
    }

    /// One volatile 32-bit load (a completion entry's status word the device may be writing).
    pub fn read32(&self, offset: usize) -> u32 {
        self.check(offset, 4);
        assert!(offset % 4 == 0, "misaligned DMA read");
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned).
        let v = unsafe { self.ptr.add(offset).cast::<u32>().read_volatile() };
        fence(Ordering::Acquire);
        v
    }

    /// One volatile 64-bit store (a PRP list entry).
    pub fn write64(&mut self, offset: usize, value: u64) {
        self.check(offset, 8);
        assert!(offset % 8 == 0, "misaligned DMA write");
        // SAFETY: in bounds and aligned (checked).
        unsafe { self.ptr.add(offset).cast::<u64>().write_volatile(value) };
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        let mut unmap = raw::DmaUnmap {
            argsz: std::mem::size_of::<raw::DmaUnmap>() as u32,
            flags: 0,
            iova: self.iova,
            size: self.len as u64,
        };
        match ioctl_ptr(
            &self.container.fd,
            raw::VFIO_IOMMU_UNMAP_DMA,
            &mut unmap,
            "VFIO_IOMMU_UNMAP_DMA",
        ) {
            // SAFETY: the IOMMU no longer maps this memory, so freeing it cannot let the
            // device write into whatever reuses it.
            Ok(_) => unsafe {
                libc::munmap(self.ptr.cast(), self.len);
            },
            // Leak rather than free memory the device may still write.
            Err(e) => log::error!("leaking {} bytes of DMA memory: {e}", self.len),
        }
    }
}
