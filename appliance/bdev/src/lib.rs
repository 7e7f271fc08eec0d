//! Block devices under the NVMe-oF target.
//!
//! [`BlockDevice`] is the extension point (SPDK's bdev module table): a device describes itself
//! and opens one [`IoChannel`] per reactor. Requests ([`BdevIo`]) are submitted to a channel and
//! come back exactly once through [`IoChannel::poll`], with their buffer.
//!
//! Backends, one module each, listed in [`BdevKind`]:
//! - [`malloc`]: RAM, shared lock-free by every channel;
//! - [`null`]: no storage, reads return zeroes;
//! - [`file`](mod@file): a regular file or block device through io_uring with O_DIRECT;
//! - [`inject`]: `error`, injects failures, hangs or corruption into the requests to a base;
//! - [`delay`]: adds an average and a p99 latency to a base's completions;
//! - [`power_cut`]: a volatile write cache over a base that loses what was not flushed;
//! - [`nvme_pcie`]: a local NVMe controller driven from user space over VFIO (polled).
#![forbid(unsafe_code)]

pub mod delay;
pub mod error;
pub mod file;
mod immediate;
pub mod inject;
pub mod io;
pub mod malloc;
pub mod null;
pub mod nvme_pcie;
pub mod power_cut;
mod wrap;

pub use delay::DelayBdev;
pub use error::BdevError;
/// What `open_channel` gets to register a reactor's buffer pools (see `BlockDevice`).
pub use ferrite_reactor::PoolRegions;
pub use file::FileBdev;
pub use immediate::DEFAULT_QUEUE_DEPTH;
pub use inject::ErrorBdev;
pub use io::{BdevIo, ChannelStats, IoChannel, IoKind};
pub use malloc::MallocBdev;
pub use null::NullBdev;
pub use power_cut::PowerCutBdev;
pub use wrap::FaultBdev;

/// Identity of a block device inside the appliance (assigned by whoever registers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BdevId(pub u32);

impl std::fmt::Display for BdevId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bdev{}", self.0)
    }
}

/// What a device can do beyond Read/Write/Flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// WriteZeroes is served by the device (natively or emulated inside the backend).
    pub write_zeroes: bool,
    /// Unmap deallocates and later reads of the range return zeroes. When false, Unmap is
    /// refused with `BdevError::Unsupported`.
    pub unmap: bool,
    /// Completed writes may sit in a volatile cache until a Flush (or a FUA write).
    pub volatile_write_cache: bool,
    /// Largest Read/Write in bytes.
    pub max_transfer_bytes: u32,
    /// `IoKind::Copy` is served by the device (offloaded or done in metadata). When false it
    /// is refused with `BdevError::Unsupported` and callers emulate it with Read + Write.
    pub copy: bool,
    /// Every request that modifies the medium is refused with `BdevError::ReadOnly` (a
    /// snapshot exported as a namespace).
    pub read_only: bool,
    /// Space is allocated on first write, so `allocated_blocks` may be below `num_blocks`
    /// (NVMe NSFEAT thin provisioning).
    pub thin_provisioned: bool,
}

/// A block device (the bdev module interface). Shared between reactors; I/O goes through the
/// per-reactor channels it opens.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// Logical block size in bytes: a power of two, 512 to 4096.
    fn block_size(&self) -> u32;

    fn num_blocks(&self) -> u64;

    fn capabilities(&self) -> Capabilities;

    /// Stable identity. malloc/null: random at creation unless given (`with_uuid`); file:
    /// derived from the file's device and inode numbers (see `file`).
    fn uuid(&self) -> [u8; 16];

    /// Opens a per-reactor I/O channel. Called on the reactor thread that will use it.
    /// `buffers` describe that reactor's buffer pools (`BufferPool::regions()`); a backend with
    /// registered buffers registers them so that pooled buffers use fixed-buffer I/O. A buffer
    /// is matched to its registration by its pool's identity, its index and its address, so
    /// buffers of pools not listed (or of pools dropped since) simply take the unregistered
    /// path: nothing needs the pools to outlive the channel.
    fn open_channel(&self, buffers: &[&PoolRegions]) -> Result<Box<dyn IoChannel>, BdevError>;

    /// Blocks that hold storage now (NVMe NUSE); `None`: all of them.
    fn allocated_blocks(&self) -> Option<u64> {
        None
    }
}

/// The backend kinds, for configuration and RPC (`bdev_malloc_create`, ...). Adding a backend
/// means adding a module and a variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BdevKind {
    Malloc,
    File,
    Null,
    /// `inject::ErrorBdev` over a base.
    Error,
    /// `delay::DelayBdev` over a base.
    Delay,
    /// `power_cut::PowerCutBdev` over a base.
    PowerCut,
    /// A namespace of a local NVMe controller driven over VFIO (`nvme_pcie`).
    NvmePcie,
}

impl BdevKind {
    pub const ALL: [BdevKind; 7] = [
        BdevKind::Malloc,
        BdevKind::File,
        BdevKind::Null,
        BdevKind::Error,
        BdevKind::Delay,
        BdevKind::PowerCut,
        BdevKind::NvmePcie,
    ];

    /// The name used in configuration and RPC.
    pub fn as_str(self) -> &'static str {
        match self {
            BdevKind::Malloc => "malloc",
            BdevKind::File => "file",
            BdevKind::Null => "null",
            BdevKind::Error => "error",
            BdevKind::Delay => "delay",
            BdevKind::PowerCut => "power-cut",
            BdevKind::NvmePcie => "nvme-pcie",
        }
    }

    /// True for the kinds stacked on a base device (configured with `base`).
    pub fn is_stacked(self) -> bool {
        matches!(self, BdevKind::Error | BdevKind::Delay | BdevKind::PowerCut)
    }
}

impl std::str::FromStr for BdevKind {
    type Err = BdevError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BdevKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| BdevError::InvalidConfig(format!("unknown bdev kind {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in BdevKind::ALL {
            assert_eq!(k.as_str().parse::<BdevKind>().expect("known kind"), k);
        }
        assert!("aio".parse::<BdevKind>().is_err());
        assert_eq!(BdevId(3).to_string(), "bdev3");
    }
}
