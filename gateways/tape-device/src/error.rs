//! Errors of tape drives and changers.

use ferrite_scsi::ScsiError;

use crate::Element;

/// What a drive or changer refused or failed to do.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Scsi(#[from] ScsiError),
    #[error("drive {0} has no cartridge loaded")]
    NotLoaded(String),
    #[error("cartridge {0} is write protected")]
    WriteProtected(String),
    #[error(
        "write at logical object {position} refused: a tape appends only at end of data ({end})"
    )]
    NotAtEndOfData { position: u64, end: u64 },
    #[error("end of medium: {0} bytes do not fit on the cartridge")]
    EndOfMedium(usize),
    #[error("end of data reached while spacing or locating")]
    EndOfData,
    #[error("beginning of medium reached while spacing backwards")]
    BeginningOfMedium,
    #[error("filemark encountered with {remaining} blocks left to space")]
    FilemarkEncountered { remaining: i64 },
    #[error("block of {len} bytes does not fit the {buf} byte buffer (position now after it)")]
    BlockTooLarge { len: usize, buf: usize },
    #[error("block of {len} bytes refused: {reason}")]
    InvalidBlockSize { len: usize, reason: String },
    #[error("medium error reading logical object {0}: the block's checksum does not match")]
    MediumError(u64),
    #[error("{0} is not a cartridge file of this virtual library: {1}")]
    NotACartridge(String, String),
    #[error("invalid barcode {0:?}: 1 to 32 characters of A-Z a-z 0-9 - _ .")]
    InvalidBarcode(String),
    #[error("{0} does not exist in this library")]
    NoSuchElement(Element),
    #[error("{0} is empty")]
    SourceEmpty(Element),
    #[error("{0} is full")]
    DestinationFull(Element),
    #[error("drive {0} still holds its cartridge threaded: unload it first")]
    DriveLoaded(u16),
    #[error("cartridge {0} is already in the library")]
    DuplicateBarcode(String),
    #[error("no cartridge {0} in the library")]
    NoSuchCartridge(String),
    #[error("library configuration: {0}")]
    Config(String),
}

impl DeviceError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> DeviceError {
        DeviceError::Io {
            context: context.into(),
            source,
        }
    }

    /// The medium is full: the job must change cartridges.
    pub fn is_end_of_medium(&self) -> bool {
        matches!(self, DeviceError::EndOfMedium(_))
    }
}
