//! A regular file or a block device served through io_uring.
//!
//! - Opened with `O_DIRECT` (no page cache). If the file system refuses it, or its O_DIRECT
//!   alignment is larger than the block size, the device falls back to buffered I/O with a
//!   logged warning; Flush (`fdatasync`) and FUA (`RWF_DSYNC`) reach stable storage either way.
//! - One ring per channel (per reactor), queue depth 256 by default, the reactor's buffer pools
//!   registered as fixed buffers (`ReadFixed`/`WriteFixed` for pooled buffers).
//! - WriteZeroes: `fallocate(ZERO_RANGE)`, else writing zeroes. Unmap: `fallocate(PUNCH_HOLE |
//!   KEEP_SIZE)`, offered on regular files whose file system supports it (probed at open) and
//!   on block devices with a write-zeroes command (the kernel then zeroes, possibly by
//!   deallocating, and never falls back to writing); otherwise `Capabilities::unmap` is false
//!   and Unmap is refused. Either way an unmapped range reads back zeroes.
//! - Copy: offloaded with reflink (`FICLONERANGE`) when the file system supports it for this
//!   file, probed at open (see `reflink`); otherwise `Capabilities::copy` is false and callers
//!   emulate it.
//! - UUID: derived from the file's device and inode numbers (the block device number for a
//!   block device), so it survives restarts and renames but changes if the file is replaced by
//!   a copy. `with_uuid` overrides it when the configuration stores one.
//!
//! A block device is opened with `O_EXCL` (refused while mounted); its size comes from seeking
//! to its end (the same value as BLKGETSIZE64 without an arch-specific ioctl number) and its
//! logical block size from BLKSSZGET.

use ferrite_reactor::PoolRegions;
use ferrite_uring::sys;

mod channel;
mod reflink;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::io::Geometry;
use crate::{BdevError, BlockDevice, Capabilities, IoChannel};

pub use channel::DEFAULT_RING_DEPTH;

/// Largest Read/Write accepted by a file device.
pub const MAX_TRANSFER_BYTES: u32 = 1 << 20;

/// What channels share about the open file.
#[derive(Debug)]
struct FileShared {
    file: File,
    geometry: Geometry,
    /// False once a ZERO_RANGE fallocate came back EOPNOTSUPP: later WriteZeroes write zeroes.
    zero_range: AtomicBool,
    unmap: bool,
    /// Copy is served by FICLONERANGE (probed at open).
    reflink: bool,
}

/// A block device backed by a file or a Linux block device.
#[derive(Debug)]
pub struct FileBdev {
    name: String,
    path: PathBuf,
    uuid: [u8; 16],
    direct: bool,
    queue_depth: u32,
    shared: Arc<FileShared>,
}

impl FileBdev {
    /// Opens an existing regular file or block device. `block_size`: the logical block size to
    /// expose (default: the device's logical block size, or for a file 512 unless its O_DIRECT
    /// alignment is larger). The size must be a whole number of blocks.
    pub fn open(name: &str, path: &Path, block_size: Option<u32>) -> Result<Self, BdevError> {
        let meta = std::fs::metadata(path).map_err(|e| annotate(e, "stat", path))?;
        let is_blockdev = meta.file_type().is_block_device();
        if !is_blockdev && !meta.file_type().is_file() {
            return Err(BdevError::InvalidConfig(format!(
                "{} is neither a regular file nor a block device",
                path.display()
            )));
        }
        let (mut file, mut direct) = open_rw(path, is_blockdev)?;

        let size = if is_blockdev {
            file.seek(SeekFrom::End(0))
                .map_err(|e| annotate(e, "size", path))?
        } else {
            file.metadata()
                .map_err(|e| annotate(e, "stat", path))?
                .len()
        };
        let dio_align = if direct {
            sys::dio_offset_align(&file)
        } else {
            None
        };
        let block_size = match (block_size, is_blockdev) {
            (Some(bs), true) => {
                let logical =
                    sys::logical_block_size(&file).map_err(|e| annotate(e, "BLKSSZGET", path))?;
                if bs < logical {
                    return Err(BdevError::InvalidConfig(format!(
                        "block size {bs} is smaller than the logical block size {logical} of {}",
                        path.display()
                    )));
                }
                bs
            }
            (None, true) => {
                sys::logical_block_size(&file).map_err(|e| annotate(e, "BLKSSZGET", path))?
            }
            (Some(bs), false) => bs,
            (None, false) => dio_align.filter(|a| *a <= 4096).unwrap_or(512).max(512),
        };
        if size % u64::from(block_size) != 0 {
            return Err(BdevError::InvalidConfig(format!(
                "{} is {size} bytes, not a multiple of the block size {block_size}",
                path.display()
            )));
        }
        let geometry = Geometry::new(block_size, size / u64::from(block_size), MAX_TRANSFER_BYTES)?;
        if direct && dio_align.is_some_and(|a| a > block_size) {
            log::warn!(
                "{}: O_DIRECT needs {}-byte alignment, more than the {block_size}-byte blocks; \
                 using buffered I/O",
                path.display(),
                dio_align.unwrap_or_default()
            );
            file = open_buffered(path, is_blockdev)?;
            direct = false;
        }

        let unmap = if is_blockdev {
            blockdev_writes_zeroes(&meta)
        } else {
            probe_punch_hole(&file, size, block_size, path)
        };
        let reflink = if is_blockdev {
            Err("block device".to_string())
        } else {
            reflink::probe(&file, size, block_size)
        };
        if let Err(reason) = &reflink {
            log::info!("file bdev {name}: copy is emulated: {reason}");
        }
        let reflink = reflink.is_ok();
        let uuid = file_uuid(&meta);
        log::info!(
            "file bdev {name}: {} ({} blocks of {block_size} bytes, {}, unmap {}, copy offload {})",
            path.display(),
            geometry.num_blocks,
            if direct { "O_DIRECT" } else { "buffered" },
            if unmap { "on" } else { "off" },
            if reflink { "reflink" } else { "off" },
        );
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            uuid,
            direct,
            queue_depth: DEFAULT_RING_DEPTH,
            shared: Arc::new(FileShared {
                file,
                geometry,
                zero_range: AtomicBool::new(true),
                unmap,
                reflink,
            }),
        })
    }

    /// Creates a sparse file of `size_bytes` (or extends an existing smaller one) and opens it.
    /// An existing larger file is refused rather than truncated.
    pub fn create(
        name: &str,
        path: &Path,
        size_bytes: u64,
        block_size: u32,
    ) -> Result<Self, BdevError> {
        if size_bytes == 0 || size_bytes % u64::from(block_size) != 0 {
            return Err(BdevError::InvalidConfig(format!(
                "size {size_bytes} is not a positive multiple of the block size {block_size}"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| annotate(e, "create", path))?;
        let meta = file.metadata().map_err(|e| annotate(e, "stat", path))?;
        if !meta.file_type().is_file() {
            return Err(BdevError::InvalidConfig(format!(
                "{} exists and is not a regular file",
                path.display()
            )));
        }
        if meta.len() > size_bytes {
            return Err(BdevError::InvalidConfig(format!(
                "{} exists with {} bytes, more than the requested {size_bytes}",
                path.display(),
                meta.len()
            )));
        }
        if meta.len() < size_bytes {
            file.set_len(size_bytes)
                .map_err(|e| annotate(e, "extend", path))?;
            // Make the new size itself durable: a flush later only syncs data.
            file.sync_all().map_err(|e| annotate(e, "sync", path))?;
        }
        drop(file);
        Self::open(name, path, Some(block_size))
    }

    /// Replaces the derived UUID (a configuration restoring a saved identity).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = uuid;
        self
    }

    /// Ring size of each channel opened afterwards (default 256, rounded up to a power of two
    /// by the kernel; at least 1): more in flight is refused with `QueueFull`.
    pub fn with_queue_depth(mut self, depth: u32) -> Self {
        self.queue_depth = depth.clamp(1, 4096);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when I/O bypasses the page cache (O_DIRECT).
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

impl BlockDevice for FileBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn block_size(&self) -> u32 {
        self.shared.geometry.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.shared.geometry.num_blocks
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            write_zeroes: true,
            unmap: self.shared.unmap,
            volatile_write_cache: true,
            max_transfer_bytes: MAX_TRANSFER_BYTES,
            copy: self.shared.reflink,
            read_only: false,
            thin_provisioned: false,
        }
    }

    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    fn open_channel(&self, buffers: &[&PoolRegions]) -> Result<Box<dyn IoChannel>, BdevError> {
        let channel =
            channel::UringChannel::new(Arc::clone(&self.shared), self.queue_depth, buffers)?;
        Ok(Box::new(channel))
    }
}

fn annotate(source: std::io::Error, op: &'static str, path: &Path) -> BdevError {
    BdevError::File {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Opens read-write with O_DIRECT, falling back to buffered when the file system refuses it.
fn open_rw(path: &Path, is_blockdev: bool) -> Result<(File, bool), BdevError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    let excl = if is_blockdev { libc::O_EXCL } else { 0 };
    match opts.custom_flags(libc::O_DIRECT | excl).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log::warn!(
                "{}: file system refuses O_DIRECT; using buffered I/O (fdatasync on flush)",
                path.display()
            );
            Ok((open_buffered(path, is_blockdev)?, false))
        }
        Err(e) => Err(annotate(e, "open", path)),
    }
}

fn open_buffered(path: &Path, is_blockdev: bool) -> Result<File, BdevError> {
    let excl = if is_blockdev { libc::O_EXCL } else { 0 };
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(excl)
        .open(path)
        .map_err(|e| annotate(e, "open", path))
}

/// Whether PUNCH_HOLE works here, tried past the end of the file where it changes nothing.
fn probe_punch_hole(file: &File, size: u64, block_size: u32, path: &Path) -> bool {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    match sys::fallocate(file, mode, size, u64::from(block_size)) {
        Ok(()) => true,
        Err(e) => {
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                log::warn!("{}: punch-hole probe failed: {e}", path.display());
            }
            false
        }
    }
}

/// Whether a block device zeroes ranges without writing data (queue/write_zeroes_max_bytes),
/// which PUNCH_HOLE on a block device requires. A partition's queue is its disk's.
fn blockdev_writes_zeroes(meta: &std::fs::Metadata) -> bool {
    let rdev = meta.rdev();
    let dir = format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev));
    ["queue", "../queue"].iter().any(|q| {
        std::fs::read_to_string(format!("{dir}/{q}/write_zeroes_max_bytes"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|max| max > 0)
    })
}

/// A name-based UUID (RFC 9562 version 8) from the file identity: device and inode for a
/// file, the device number for a block device. FNV-1a 128, stable across Rust versions.
fn file_uuid(meta: &std::fs::Metadata) -> [u8; 16] {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    let identity: [u64; 2] = if meta.file_type().is_block_device() {
        [meta.rdev(), 0]
    } else {
        [meta.dev(), meta.ino()]
    };
    let bytes = b"ferrite-file-bdev"
        .iter()
        .copied()
        .chain(identity.iter().flat_map(|v| v.to_le_bytes()));
    for b in bytes {
        hash ^= u128::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    let mut uuid = hash.to_be_bytes();
    uuid[6] = (uuid[6] & 0x0f) | 0x80;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}
