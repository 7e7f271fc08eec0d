//! Errors of the checked parsers and encoders.

use thiserror::Error;

/// Why bytes were refused. Every variant names what was wrong so a peer
/// can be told (in a `Refuse` frame) and an operator can read it in a log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The frame does not start with the protocol magic.
    #[error("bad magic {found:02x?}: not a ferrite gateway frame")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The peer speaks a version this build does not.
    #[error("unsupported protocol version {version} (this build speaks {min}..={max})")]
    UnsupportedVersion {
        /// Version in the frame.
        version: u8,
        /// Lowest version supported here.
        min: u8,
        /// Highest version supported here.
        max: u8,
    },
    /// Unknown message kind.
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// The header checksum does not match.
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum {
        /// Stored CRC32C.
        stored: u32,
        /// Computed CRC32C.
        computed: u32,
    },
    /// The body checksum does not match.
    #[error("body checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BodyChecksum {
        /// Stored CRC32C.
        stored: u32,
        /// Computed CRC32C.
        computed: u32,
    },
    /// A record's data checksum does not match its data.
    #[error("record data checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    DataChecksum {
        /// Stored CRC32C.
        stored: u32,
        /// Computed CRC32C.
        computed: u32,
    },
    /// The body is longer than any frame may be.
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    BodyTooLong {
        /// Announced length.
        len: u32,
        /// Largest accepted.
        max: u32,
    },
    /// The body length does not fit the message kind.
    #[error("{what} body is {got} bytes, expected {expected}")]
    BadBodyLength {
        /// Message kind.
        what: &'static str,
        /// Expected length (the fixed part for variable messages).
        expected: usize,
        /// Length found.
        got: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("invalid value {value:#x} in {field}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: u64,
    },
    /// A text field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidText {
        /// Field name.
        field: &'static str,
    },
    /// The output buffer cannot hold the encoded frame.
    #[error("output buffer too small: need {needed} bytes, have {got}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A value is too long for its field.
    #[error("{field} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, ProtocolError>;
