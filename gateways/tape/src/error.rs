//! Errors of the tape gateway's jobs.

use ferrite_tape_device::DeviceError;

use crate::catalog::CatalogError;
use crate::format::FormatError;
use crate::mtqueue::MtQueueError;

#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Queue(#[from] MtQueueError),
    #[error("source/target namespace: {0}")]
    Namespace(String),
    #[error("no cartridge to write on: {0}")]
    NoWritableCartridge(String),
    #[error("cartridge {0} is not in the library")]
    CartridgeNotInLibrary(String),
    #[error("restore target holds {target} bytes, the backup {backup}: nothing was written")]
    TargetTooSmall { target: u64, backup: u64 },
    #[error("job {0} was cancelled")]
    Cancelled(u64),
    #[error("tape contents do not match: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the library is busy with job {0}")]
    Busy(u64),
}

impl TapeError {
    pub fn corrupt(s: impl Into<String>) -> TapeError {
        TapeError::Corrupt(s.into())
    }
}
