//! Byte layouts: the frame header and the fixed body of every message.
//!
//! All integers are little endian. Structures are `zerocopy` views with
//! compile-time size and offset assertions; nothing here allocates.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"FRGW";
/// Lowest protocol version this build speaks.
pub const MIN_VERSION: u8 = 1;
/// Highest protocol version this build speaks (the one it sends).
pub const VERSION: u8 = 1;
/// Largest data payload of one record (4 MiB; NVMe MDTS of the target is
/// smaller, a host write larger than this is split into several records).
pub const MAX_RECORD_DATA: u32 = 4 << 20;
/// Largest frame body.
pub const MAX_BODY: u32 = MAX_RECORD_DATA + size_of::<RecordWire>() as u32;
/// Largest reason text in a `Refuse`.
pub const MAX_REASON: usize = 256;

/// Frame header, 24 bytes.
///
/// ```text
/// 0  magic "FRGW"      4   version      5  kind
/// 6  flags (u16, 0)    8   body_len     12 body_crc (CRC32C of the body)
/// 16 reserved (0)      20  header_crc (CRC32C of bytes 0..20)
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// Protocol version.
    pub version: u8,
    /// Message kind ([`crate::Kind`]).
    pub kind: u8,
    /// Flags, reserved (zero in version 1).
    pub flags: U16,
    /// Bytes that follow the header.
    pub body_len: U32,
    /// CRC32C of the body.
    pub body_crc: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// CRC32C of the 20 bytes before this field.
    pub header_crc: U32,
}
const _: () = assert!(size_of::<FrameHeader>() == 24);
const _: () = assert!(offset_of!(FrameHeader, body_len) == 8);
const _: () = assert!(offset_of!(FrameHeader, header_crc) == 20);
/// Header length.
pub const HEADER_LEN: usize = size_of::<FrameHeader>();

/// `Hello`: first frame each side sends.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HelloWire {
    /// Role of the sender.
    pub role: u8,
    /// Lowest version the sender speaks.
    pub min_version: u8,
    /// Highest version the sender speaks.
    pub max_version: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// Reserved, zero.
    pub reserved2: U32,
    /// Sender identity.
    pub node_id: U64,
    /// Fresh random challenge for the peer's proof.
    pub nonce: [u8; 32],
}
const _: () = assert!(size_of::<HelloWire>() == 48);

/// `AuthProof`: HMAC over the handshake transcript.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AuthProofWire {
    /// The MAC.
    pub mac: [u8; 32],
}
const _: () = assert!(size_of::<AuthProofWire>() == 32);

/// `AuthOk`: the handshake is complete.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AuthOkWire {
    /// Version chosen for the session.
    pub version: u8,
    /// Reserved, zero.
    pub reserved: [u8; 7],
    /// The sender's current epoch.
    pub epoch: U64,
}
const _: () = assert!(size_of::<AuthOkWire>() == 16);

/// `Refuse`: fixed part; `reason_len` bytes of UTF-8 follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RefuseWire {
    /// [`crate::RefuseCode`].
    pub code: U16,
    /// Length of the reason text.
    pub reason_len: U16,
}
const _: () = assert!(size_of::<RefuseWire>() == 4);

/// `Record`: fixed part of one journal record; `data_len` bytes follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordWire {
    /// Consistency group.
    pub group: U32,
    /// Namespace on the appliance.
    pub nsid: U32,
    /// Sequence domain.
    pub domain: U64,
    /// Epoch the record was journaled in.
    pub epoch: U64,
    /// Sequence number in the domain.
    pub seq: U64,
    /// Group timestamp.
    pub ts: U64,
    /// First LBA.
    pub slba: U64,
    /// Number of logical blocks (at least 1).
    pub nblocks: U32,
    /// Bytes of data that follow (0 for zeroes/deallocate).
    pub data_len: U32,
    /// CRC32C of the data.
    pub data_crc: U32,
    /// [`crate::RecordOp`].
    pub op: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
}
const _: () = assert!(size_of::<RecordWire>() == 64);
const _: () = assert!(offset_of!(RecordWire, seq) == 24);
const _: () = assert!(offset_of!(RecordWire, op) == 60);

/// `Heartbeat`: every record of the domain with a timestamp at or before
/// `ts` has a sequence number at or below `last_seq`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HeartbeatWire {
    /// Consistency group.
    pub group: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Sequence domain.
    pub domain: U64,
    /// Epoch.
    pub epoch: U64,
    /// Group timestamp read under the append ordering.
    pub ts: U64,
    /// Highest sequence number appended when `ts` was read.
    pub last_seq: U64,
}
const _: () = assert!(size_of::<HeartbeatWire>() == 40);

/// `Ack`: cumulative acknowledgement.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AckWire {
    /// Consistency group.
    pub group: U32,
    /// Bit 0: the records are durable at the receiver.
    pub flags: U32,
    /// Sequence domain.
    pub domain: U64,
    /// Epoch.
    pub epoch: U64,
    /// Every record with a sequence number at or below this is held.
    pub cum_seq: U64,
    /// The group limit the receiver has applied through (for lag).
    pub applied_ts: U64,
}
const _: () = assert!(size_of::<AckWire>() == 40);

/// `Credit`: the receiver accepts sequence numbers up to `window_end`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CreditWire {
    /// Consistency group.
    pub group: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Sequence domain.
    pub domain: U64,
    /// Epoch.
    pub epoch: U64,
    /// Highest sequence number the sender may send.
    pub window_end: U64,
}
const _: () = assert!(size_of::<CreditWire>() == 32);

/// `Control`: an operation on a group.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ControlWire {
    /// [`crate::ControlOp`].
    pub op: U16,
    /// Reserved, zero.
    pub reserved: U16,
    /// Consistency group.
    pub group: U32,
    /// Operation argument (e.g. the new epoch).
    pub arg: U64,
}
const _: () = assert!(size_of::<ControlWire>() == 16);

/// `JournalPull`: the gateway asks the appliance for records from
/// `from_seq` on.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct JournalPullWire {
    /// Consistency group.
    pub group: U32,
    /// At most this many records in the answer.
    pub max_records: U32,
    /// Sequence domain.
    pub domain: U64,
    /// First sequence number wanted (0: from the trim point).
    pub from_seq: U64,
}
const _: () = assert!(size_of::<JournalPullWire>() == 24);

/// `JournalTrim`: records up to `up_to_seq` may be freed.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct JournalTrimWire {
    /// Consistency group.
    pub group: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Sequence domain.
    pub domain: U64,
    /// Highest sequence number that may be freed.
    pub up_to_seq: U64,
}
const _: () = assert!(size_of::<JournalTrimWire>() == 24);

/// `JournalStatus`: the appliance's view of one domain's journal.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct JournalStatusWire {
    /// Consistency group.
    pub group: U32,
    /// Bit 0: the journal overflowed (the pair needs a resync).
    pub flags: U32,
    /// Sequence domain.
    pub domain: U64,
    /// Oldest sequence number still held (0: empty).
    pub tail_seq: U64,
    /// Highest sequence number appended (0: none).
    pub head_seq: U64,
    /// Bytes in use.
    pub used_bytes: U64,
    /// Capacity in bytes.
    pub capacity: U64,
}
const _: () = assert!(size_of::<JournalStatusWire>() == 48);
