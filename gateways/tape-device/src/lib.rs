//! Tape drives and medium changers behind one trait each, so the tape gateway runs the same
//! jobs against a real library and a virtual one.
//!
//! - [`TapeDrive`]: one drive with its loaded cartridge: block reads and writes, filemarks,
//!   early warning and end of medium, rewind/space/locate/read position.
//! - [`Changer`]: the robot: an inventory of storage slots, drives and import/export slots with
//!   barcodes, and MOVE MEDIUM between them.
//! - Backends, one directory each, registered in [`open_library`]: [`vtl`] (file-backed
//!   cartridges with real tape semantics) and [`scsi`] (the Linux st driver on `/dev/nstN` and a
//!   changer on `/dev/sgN` through SG_IO, via `ferrite-scsi`).
#![forbid(unsafe_code)]

mod error;
pub mod scsi;
mod types;
pub mod vtl;

pub use error::DeviceError;
pub use types::{
    Barcode, BlockSize, DriveElement, DriveStatus, Element, Inventory, ReadOutcome, Space,
    TapePosition, WriteOutcome,
};

use serde::{Deserialize, Serialize};

/// One tape drive and the cartridge loaded in it.
///
/// Positions are logical objects as SCSI READ POSITION counts them: blocks and filemarks both
/// count, 0 is beginning of tape. Writes go only at end of data (a tape appends; data after the
/// current position would be lost, so the backends refuse instead).
pub trait TapeDrive: Send + std::fmt::Debug {
    /// A stable name for logs and status (`vtl:drive0`, `/dev/nst0`).
    fn name(&self) -> String;
    /// Makes a cartridge the changer moved into the drive ready (threads the tape, BOT).
    fn load(&mut self) -> Result<(), DeviceError>;
    /// Rewinds and ejects so the changer can take the cartridge.
    fn unload(&mut self) -> Result<(), DeviceError>;
    fn status(&mut self) -> Result<DriveStatus, DeviceError>;
    fn set_block_size(&mut self, size: BlockSize) -> Result<(), DeviceError>;
    /// Writes one block at end of data.
    fn write_block(&mut self, data: &[u8]) -> Result<WriteOutcome, DeviceError>;
    /// Writes `count` filemarks at end of data and flushes the drive buffer (count 0: flush).
    fn write_filemarks(&mut self, count: u32) -> Result<WriteOutcome, DeviceError>;
    /// Reads the next block into `buf`.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, DeviceError>;
    fn rewind(&mut self) -> Result<(), DeviceError>;
    fn space(&mut self, space: Space) -> Result<(), DeviceError>;
    /// Moves to a logical object number (as `position()` reports it).
    fn locate(&mut self, logical: u64) -> Result<(), DeviceError>;
    fn position(&mut self) -> Result<TapePosition, DeviceError>;
    /// Erases from the current position to the end of the medium (recycling a cartridge:
    /// rewind, then erase).
    fn erase(&mut self) -> Result<(), DeviceError>;
}

/// A medium changer (the library's robot).
pub trait Changer: Send + std::fmt::Debug {
    fn name(&self) -> String;
    fn inventory(&mut self) -> Result<Inventory, DeviceError>;
    /// Moves the cartridge in `from` to the empty element `to`. A drive must have been
    /// unloaded ([`TapeDrive::unload`]) before its cartridge can move.
    fn move_medium(&mut self, from: Element, to: Element) -> Result<(), DeviceError>;
}

/// Which library a gateway drives, from its configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LibraryConfig {
    /// A file-backed virtual tape library in `dir`.
    Virtual(vtl::VirtualLibraryConfig),
    /// A real library: the changer's SCSI generic node and the drives' non-rewinding st nodes,
    /// in the changer's data-transfer element order.
    Scsi(scsi::ScsiLibraryConfig),
}

/// An opened library: its changer and its drives, indexed like [`Element::Drive`].
#[derive(Debug)]
pub struct Library {
    pub changer: Box<dyn Changer>,
    pub drives: Vec<Box<dyn TapeDrive>>,
}

/// Opens the library a configuration names. This is the one list of tape backends.
pub fn open_library(config: &LibraryConfig) -> Result<Library, DeviceError> {
    match config {
        LibraryConfig::Virtual(c) => vtl::VirtualLibrary::open(c)?.into_library(),
        LibraryConfig::Scsi(c) => scsi::open(c),
    }
}
