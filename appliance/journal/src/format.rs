//! On-device layout of a journal.
//!
//! ```text
//! block 0             superblock (SuperblockWire, rest zero)
//! block 1 + i*S       slot i: one header block (RecordHeaderWire, rest zero)
//!   .. + S - 1          followed by up to S - 1 data blocks
//! ```
//!
//! Record `seq` lives in slot `(seq - 1) % slots`. A slot is valid for
//! `seq` when its header has the magic, a matching header CRC and that
//! sequence number; its data is checked against `data_crc` when read. All
//! integers are little endian.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Superblock magic.
pub const SUPER_MAGIC: [u8; 4] = *b"FRJS";
/// Record header magic.
pub const RECORD_MAGIC: [u8; 4] = *b"FRJR";
/// Layout version.
pub const VERSION: u32 = 1;

/// Block 0.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SuperblockWire {
    /// `FRJS`.
    pub magic: [u8; 4],
    /// [`VERSION`].
    pub version: U32,
    /// Consistency group.
    pub group: U32,
    /// Block size of the device when formatted.
    pub block_size: U32,
    /// Blocks per slot (header block included).
    pub slot_blocks: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Number of slots.
    pub slots: U64,
    /// Every record up to this one is trimmed (acknowledged by the peer).
    pub trimmed: U64,
    /// The shipped timestamp of record `trimmed` (the ordering of later
    /// timestamps continues from it).
    pub trimmed_ts: U64,
    /// Reserved, zero.
    pub reserved2: [u8; 12],
    /// CRC32C of the bytes before it.
    pub crc: U32,
}

const _: () = assert!(core::mem::size_of::<SuperblockWire>() == 64);

impl SuperblockWire {
    /// Computes the CRC over everything before the `crc` field.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.as_bytes()[..60])
    }
}

/// Operation of a record (same values as the gateway protocol's
/// `RecordOp`).
pub use ferrite_gateway_protocol::RecordOp;

/// First block of a slot.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RecordHeaderWire {
    /// `FRJR`.
    pub magic: [u8; 4],
    /// [`RecordOp`] value.
    pub op: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
    /// Consistency group.
    pub group: U32,
    /// Namespace id within the group (as configured for the namespace).
    pub nsid: U32,
    /// Sequence number.
    pub seq: U64,
    /// Wall-clock nanoseconds taken right after the sequence number was
    /// reserved.
    pub raw_ts: U64,
    /// First LBA.
    pub slba: U64,
    /// Blocks.
    pub nblocks: U32,
    /// Data bytes that follow the header block.
    pub data_len: U32,
    /// CRC32C of the data.
    pub data_crc: U32,
    /// CRC32C of the bytes before it.
    pub header_crc: U32,
    /// Reserved, zero.
    pub reserved2: [u8; 8],
}

const _: () = assert!(core::mem::size_of::<RecordHeaderWire>() == 64);

impl RecordHeaderWire {
    /// Computes the CRC over everything before `header_crc`.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.as_bytes()[..52])
    }
}
