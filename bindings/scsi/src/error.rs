//! Errors of the SCSI bindings.

use crate::cdb::Sense;

/// What went wrong talking to a tape drive or changer, or parsing what it answered.
#[derive(Debug, thiserror::Error)]
pub enum ScsiError {
    /// The device node could not be opened or an ioctl/read/write failed at the OS level.
    #[error("{op} on {path}: {source}")]
    Os {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The device completed a command with CHECK CONDITION; the sense data says why.
    #[error("{op} on {path}: check condition: {sense}")]
    CheckCondition {
        op: &'static str,
        path: String,
        sense: Sense,
    },
    /// A SCSI status other than GOOD or CHECK CONDITION, or a host/driver error from SG_IO.
    #[error("{op} on {path}: scsi status {status:#04x}, host {host:#06x}, driver {driver:#06x}")]
    Status {
        op: &'static str,
        path: String,
        status: u8,
        host: u16,
        driver: u16,
    },
    /// A device answer too short or inconsistent to parse.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// Opens a device node for reading, and writing if asked; the error names the node.
pub(crate) fn open_node(path: &std::path::Path, write: bool) -> Result<std::fs::File, ScsiError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|source| ScsiError::Os {
            op: "open",
            path: path.display().to_string(),
            source,
        })
}

impl ScsiError {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> ScsiError {
        ScsiError::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// The OS error number, if the failure came from a system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ScsiError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
