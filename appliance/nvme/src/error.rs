//! Errors for decoding and encoding NVMe wire structures.

use thiserror::Error;

/// Error returned by every checked parser and encoder in this crate.
///
/// These describe what was wrong with the bytes; the NVMe status a host
/// sees is chosen by the caller (`nvmf`), usually `Status::INVALID_FIELD`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NvmeError {
    /// The input buffer is shorter than the structure being decoded.
    #[error("buffer too short for {what}: need {needed} bytes, have {got}")]
    TooShort {
        /// Structure being decoded.
        what: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The output buffer cannot hold what is being encoded.
    #[error("output buffer too small for {what}: need {needed} bytes, have {got}")]
    BufferTooSmall {
        /// Structure being encoded.
        what: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A string field has no NUL terminator within its fixed size.
    #[error("string field {field} is not NUL-terminated")]
    NotTerminated {
        /// Field name.
        field: &'static str,
    },
    /// A string field is not valid UTF-8 (or not ASCII where ASCII is required).
    #[error("string field {field} is not valid text")]
    InvalidText {
        /// Field name.
        field: &'static str,
    },
    /// A value does not fit the fixed-size field it is written to.
    #[error("value for {field} is {len} bytes, field holds at most {max}")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Length of the value.
        len: usize,
        /// Largest length the field accepts.
        max: usize,
    },
    /// A field holds a value the specification does not allow.
    #[error("invalid value {value:#x} in {field}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: u64,
    },
    /// An NQN failed validation.
    #[error("invalid NQN: {reason}")]
    InvalidNqn {
        /// Why the NQN was rejected.
        reason: &'static str,
    },
    /// A log page window starts beyond the end of the log.
    #[error("log page offset {offset} is beyond the log length {len}")]
    LogOffsetOutOfRange {
        /// Requested offset.
        offset: u64,
        /// Length of the log page.
        len: usize,
    },
}

/// Result alias for this crate.
pub type Result<T, E = NvmeError> = core::result::Result<T, E>;

/// Checks that `buf` holds at least `needed` bytes for encoding `what`.
pub(crate) fn ensure_out(what: &'static str, buf: &[u8], needed: usize) -> Result<()> {
    if buf.len() < needed {
        return Err(NvmeError::BufferTooSmall {
            what,
            needed,
            got: buf.len(),
        });
    }
    Ok(())
}

/// Checks that `buf` holds at least `needed` bytes for decoding `what`.
pub(crate) fn ensure_in(what: &'static str, buf: &[u8], needed: usize) -> Result<()> {
    if buf.len() < needed {
        return Err(NvmeError::TooShort {
            what,
            needed,
            got: buf.len(),
        });
    }
    Ok(())
}
