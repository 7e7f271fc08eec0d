//! Errors of block devices and their channels.
//!
//! These are internal causes; the NVMe status a host sees is chosen by `nvmf`.

use std::io;

/// What went wrong with a block device or one of its requests.
#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    /// The request addresses blocks past the end of the device.
    #[error("blocks {lba}..{lba}+{blocks} out of range (device has {num_blocks} blocks)")]
    OutOfRange {
        lba: u64,
        blocks: u64,
        num_blocks: u64,
    },
    /// A Read or Write without a buffer, or with one smaller than `blocks * block_size`
    /// (capacity for reads, valid length for writes).
    #[error("buffer too small: request needs {needed} bytes, buffer has {available}")]
    BufferTooSmall { needed: usize, available: usize },
    /// The request is larger than `Capabilities::max_transfer_bytes`.
    #[error("transfer of {bytes} bytes exceeds the device maximum of {max} bytes")]
    TransferTooLarge { bytes: u64, max: u32 },
    /// The channel has as many requests in flight as it can hold; retry after a `poll`.
    #[error("queue full")]
    QueueFull,
    /// The device does not implement this operation (see `Capabilities`).
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    /// A parameter given when creating or opening a device is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Memory for the device could not be allocated.
    #[error("cannot allocate {bytes} bytes of device memory")]
    NoMemory { bytes: u64 },
    /// Opening or preparing a backing file failed (`source` keeps the OS error number).
    #[error("{op} {}: {source}", path.display())]
    File {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// The device refuses changes (a read-only snapshot).
    #[error("device is read-only")]
    ReadOnly,
    /// No space left to allocate for the write (a full thin-provisioned pool). Nothing was
    /// changed; the same write can succeed once space is freed.
    #[error("no space left in the pool")]
    NoSpace,
    /// The device cannot serve the request now (its metadata owner did not answer in time or
    /// is offline); a later retry may succeed.
    #[error("device not ready: {0}")]
    NotReady(&'static str),
    /// The operating system reported an error.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl BdevError {
    /// True when the same request may succeed if submitted again later (resources were
    /// short, not the request wrong or the medium broken).
    pub fn is_retryable(&self) -> bool {
        match self {
            BdevError::QueueFull | BdevError::NotReady(_) => true,
            BdevError::Io(e) => matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN | libc::EINTR | libc::ENOMEM | libc::EBUSY)
            ),
            _ => false,
        }
    }

    pub(crate) fn from_errno(errno: i32) -> Self {
        BdevError::Io(io::Error::from_raw_os_error(errno))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(BdevError::QueueFull.is_retryable());
        assert!(BdevError::from_errno(libc::EAGAIN).is_retryable());
        assert!(!BdevError::from_errno(libc::EIO).is_retryable());
        assert!(!BdevError::Unsupported("unmap").is_retryable());
        let oor = BdevError::OutOfRange {
            lba: 10,
            blocks: 2,
            num_blocks: 11,
        };
        assert!(!oor.is_retryable());
        assert!(oor.to_string().contains("out of range"));
    }
}
