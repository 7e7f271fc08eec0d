//! The 64-byte submission queue entry (SQE), its SGL descriptor and opcodes.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{NvmeError, Result};

/// Command opcodes.
pub mod opcode {
    /// Admin command set opcodes.
    pub mod admin {
        /// Delete I/O Submission Queue.
        pub const DELETE_IO_SQ: u8 = 0x00;
        /// Create I/O Submission Queue.
        pub const CREATE_IO_SQ: u8 = 0x01;
        /// Get Log Page.
        pub const GET_LOG_PAGE: u8 = 0x02;
        /// Delete I/O Completion Queue.
        pub const DELETE_IO_CQ: u8 = 0x04;
        /// Create I/O Completion Queue.
        pub const CREATE_IO_CQ: u8 = 0x05;
        /// Identify.
        pub const IDENTIFY: u8 = 0x06;
        /// Abort.
        pub const ABORT: u8 = 0x08;
        /// Set Features.
        pub const SET_FEATURES: u8 = 0x09;
        /// Get Features.
        pub const GET_FEATURES: u8 = 0x0A;
        /// Asynchronous Event Request.
        pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
        /// Namespace Management.
        pub const NAMESPACE_MANAGEMENT: u8 = 0x0D;
        /// Namespace Attachment.
        pub const NAMESPACE_ATTACHMENT: u8 = 0x15;
        /// Keep Alive.
        pub const KEEP_ALIVE: u8 = 0x18;
        /// Fabrics command (the FCTYPE is in byte 4).
        pub const FABRICS: u8 = 0x7F;
    }

    /// NVM command set I/O opcodes.
    pub mod io {
        /// Flush.
        pub const FLUSH: u8 = 0x00;
        /// Write.
        pub const WRITE: u8 = 0x01;
        /// Read.
        pub const READ: u8 = 0x02;
        /// Write Uncorrectable.
        pub const WRITE_UNCORRECTABLE: u8 = 0x04;
        /// Compare.
        pub const COMPARE: u8 = 0x05;
        /// Write Zeroes.
        pub const WRITE_ZEROES: u8 = 0x08;
        /// Dataset Management.
        pub const DATASET_MANAGEMENT: u8 = 0x09;
        /// Verify.
        pub const VERIFY: u8 = 0x0C;
        /// Copy.
        pub const COPY: u8 = 0x19;
        /// Fabrics command (the FCTYPE is in byte 4), valid on I/O queues too.
        pub const FABRICS: u8 = 0x7F;
    }

    /// Fabrics command types (FCTYPE, byte 4 of a Fabrics command).
    pub mod fabrics {
        /// Property Set.
        pub const PROPERTY_SET: u8 = 0x00;
        /// Connect.
        pub const CONNECT: u8 = 0x01;
        /// Property Get.
        pub const PROPERTY_GET: u8 = 0x04;
        /// Authentication Send.
        pub const AUTHENTICATION_SEND: u8 = 0x05;
        /// Authentication Receive.
        pub const AUTHENTICATION_RECEIVE: u8 = 0x06;
        /// Disconnect.
        pub const DISCONNECT: u8 = 0x08;
    }
}

/// Direction of the data transfer of a command, from opcode bits 1:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataDirection {
    /// No data transfer (00b).
    None,
    /// Host to controller, e.g. Write (01b).
    HostToController,
    /// Controller to host, e.g. Read (10b).
    ControllerToHost,
    /// Both directions (11b).
    Bidirectional,
}

impl DataDirection {
    /// Decodes the two transfer bits of an opcode or FCTYPE.
    pub const fn from_bits(bits: u8) -> DataDirection {
        match bits & 0x3 {
            0 => DataDirection::None,
            1 => DataDirection::HostToController,
            2 => DataDirection::ControllerToHost,
            _ => DataDirection::Bidirectional,
        }
    }
}

/// A 16-byte SGL descriptor (NVMe Base spec, SGL descriptor formats).
///
/// The identifier byte carries the descriptor type in bits 7:4 and the
/// sub type in bits 3:0.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct SglDescriptor {
    /// Address (or offset into in-capsule data for the Offset sub type).
    pub address: U64,
    /// Length in bytes.
    pub length: U32,
    /// Reserved (keyed descriptors use these for the key).
    pub reserved: [u8; 3],
    /// SGL identifier: type bits 7:4, sub type bits 3:0.
    pub id: u8,
}

const _: () = assert!(size_of::<SglDescriptor>() == 16);
const _: () = assert!(offset_of!(SglDescriptor, length) == 8);
const _: () = assert!(offset_of!(SglDescriptor, id) == 15);

/// SGL descriptor types (identifier bits 7:4).
pub mod sgl_type {
    /// SGL Data Block.
    pub const DATA_BLOCK: u8 = 0x0;
    /// SGL Bit Bucket.
    pub const BIT_BUCKET: u8 = 0x1;
    /// SGL Segment.
    pub const SEGMENT: u8 = 0x2;
    /// SGL Last Segment.
    pub const LAST_SEGMENT: u8 = 0x3;
    /// Keyed SGL Data Block (RDMA).
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    /// Transport SGL Data Block.
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// SGL descriptor sub types (identifier bits 3:0).
pub mod sgl_subtype {
    /// Address field is a memory address.
    pub const ADDRESS: u8 = 0x0;
    /// Address field is an offset (into in-capsule data for fabrics).
    pub const OFFSET: u8 = 0x1;
    /// Transport specific (NVMe/TCP: data moved by R2T/H2CData or C2HData).
    pub const TRANSPORT_SPECIFIC: u8 = 0xA;
}

impl SglDescriptor {
    /// Identifier of a Data Block descriptor with the Offset sub type: data is
    /// in the command capsule, `address` is the offset from the capsule data start.
    pub const SGL_DATA_BLOCK_OFFSET: u8 = 0x01;
    /// Identifier of a Transport SGL Data Block (NVMe/TCP: data via R2T/H2CData or C2HData).
    pub const SGL_TRANSPORT_DATA_BLOCK: u8 = 0x5A;

    /// In-capsule data descriptor: `length` bytes at `offset` in the capsule data.
    pub fn in_capsule(offset: u64, length: u32) -> SglDescriptor {
        SglDescriptor {
            address: U64::new(offset),
            length: U32::new(length),
            reserved: [0; 3],
            id: Self::SGL_DATA_BLOCK_OFFSET,
        }
    }

    /// Transport data block descriptor: `length` bytes moved by the transport.
    pub fn transport(length: u32) -> SglDescriptor {
        SglDescriptor {
            address: U64::new(0),
            length: U32::new(length),
            reserved: [0; 3],
            id: Self::SGL_TRANSPORT_DATA_BLOCK,
        }
    }

    /// Descriptor type (identifier bits 7:4).
    pub const fn descriptor_type(&self) -> u8 {
        self.id >> 4
    }

    /// Descriptor sub type (identifier bits 3:0).
    pub const fn subtype(&self) -> u8 {
        self.id & 0xF
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.length.get()
    }

    /// True when the descriptor describes no data.
    pub fn is_empty(&self) -> bool {
        self.length.get() == 0
    }
}

/// The 64-byte submission queue entry.
///
/// For Fabrics commands (opcode 7Fh) byte 4, where `nsid` sits for other
/// commands, is the FCTYPE; see [`Command::fabrics_type`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct Command {
    /// Opcode (CDW0 bits 7:0).
    pub opcode: u8,
    /// FUSE bits 1:0, PSDT bits 7:6 (CDW0 bits 15:8).
    pub flags: u8,
    /// Command identifier (CDW0 bits 31:16).
    pub cid: U16,
    /// Namespace identifier (CDW1); FCTYPE in its low byte for Fabrics commands.
    pub nsid: U32,
    /// Command dword 2.
    pub cdw2: U32,
    /// Command dword 3.
    pub cdw3: U32,
    /// Metadata pointer.
    pub mptr: U64,
    /// Data pointer: SGL descriptor 1 (fabrics always uses SGLs).
    pub dptr: SglDescriptor,
    /// Command dword 10.
    pub cdw10: U32,
    /// Command dword 11.
    pub cdw11: U32,
    /// Command dword 12.
    pub cdw12: U32,
    /// Command dword 13.
    pub cdw13: U32,
    /// Command dword 14.
    pub cdw14: U32,
    /// Command dword 15.
    pub cdw15: U32,
}

const _: () = assert!(size_of::<Command>() == 64);
const _: () = assert!(offset_of!(Command, cid) == 2);
const _: () = assert!(offset_of!(Command, nsid) == 4);
const _: () = assert!(offset_of!(Command, mptr) == 16);
const _: () = assert!(offset_of!(Command, dptr) == 24);
const _: () = assert!(offset_of!(Command, cdw10) == 40);
const _: () = assert!(offset_of!(Command, cdw15) == 60);

/// PSDT value (flags bits 7:6) meaning "SGLs are used, MPTR is an address".
pub const PSDT_SGL_MPTR_CONTIGUOUS: u8 = 0x1;
/// PSDT value meaning "SGLs are used, MPTR points at an SGL segment".
pub const PSDT_SGL_MPTR_SGL: u8 = 0x2;

impl Command {
    /// Size of an SQE in bytes.
    pub const SIZE: usize = 64;

    /// A zeroed command with the given opcode and command identifier.
    pub fn new(opcode: u8, cid: u16) -> Command {
        let mut cmd = Command::new_zeroed();
        cmd.opcode = opcode;
        cmd.cid = U16::new(cid);
        cmd
    }

    /// A zeroed Fabrics command (opcode 7Fh) with the given FCTYPE.
    pub fn new_fabrics(fctype: u8, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::admin::FABRICS, cid);
        cmd.nsid = U32::new(u32::from(fctype));
        // Fabrics commands always use SGLs.
        cmd.set_psdt(PSDT_SGL_MPTR_CONTIGUOUS);
        cmd
    }

    /// Decodes a command from the first 64 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Command> {
        Command::read_from_prefix(bytes)
            .map(|(cmd, _)| cmd)
            .map_err(|_| NvmeError::TooShort {
                what: "command",
                needed: Self::SIZE,
                got: bytes.len(),
            })
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.cid.get()
    }

    /// Namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.nsid.get()
    }

    /// Fused operation bits (flags 1:0).
    pub const fn fuse(&self) -> u8 {
        self.flags & 0x3
    }

    /// PRP or SGL for Data Transfer (flags 7:6).
    pub const fn psdt(&self) -> u8 {
        self.flags >> 6
    }

    /// Sets PSDT (2 bits, masked).
    pub fn set_psdt(&mut self, psdt: u8) {
        self.flags = (self.flags & 0x3F) | ((psdt & 0x3) << 6);
    }

    /// True for Fabrics commands (opcode 7Fh).
    pub const fn is_fabrics(&self) -> bool {
        self.opcode == opcode::admin::FABRICS
    }

    /// The FCTYPE of a Fabrics command (byte 4), `None` for other opcodes.
    pub fn fabrics_type(&self) -> Option<u8> {
        if self.is_fabrics() {
            Some(self.nsid.get().to_le_bytes()[0])
        } else {
            None
        }
    }

    /// Data transfer direction from opcode bits 1:0, or FCTYPE bits 1:0 for
    /// Fabrics commands.
    pub fn data_direction(&self) -> DataDirection {
        match self.fabrics_type() {
            Some(fctype) => DataDirection::from_bits(fctype),
            None => DataDirection::from_bits(self.opcode),
        }
    }

    /// Command dword `n` for `n` in 10..=15; `None` otherwise.
    pub fn cdw(&self, n: usize) -> Option<u32> {
        let v = match n {
            10 => self.cdw10,
            11 => self.cdw11,
            12 => self.cdw12,
            13 => self.cdw13,
            14 => self.cdw14,
            15 => self.cdw15,
            _ => return None,
        };
        Some(v.get())
    }

    /// Sets command dword `n` (10..=15).
    pub fn set_cdw(&mut self, n: usize, value: u32) -> Result<()> {
        let slot = match n {
            10 => &mut self.cdw10,
            11 => &mut self.cdw11,
            12 => &mut self.cdw12,
            13 => &mut self.cdw13,
            14 => &mut self.cdw14,
            15 => &mut self.cdw15,
            _ => {
                return Err(NvmeError::InvalidField {
                    field: "command dword index",
                    value: n as u64,
                })
            }
        };
        *slot = U32::new(value);
        Ok(())
    }
}

/// Extracts `width` bits starting at `shift` (helper for CDW fields).
pub(crate) const fn bits(v: u32, shift: u32, width: u32) -> u32 {
    (v >> shift) & ((1u32 << width) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Linux host Read of 8 blocks at LBA 0x1234 on nsid 1, cid 5,
    /// with a transport SGL of 4096 bytes (built by hand from the spec).
    const READ_SQE: [u8; 64] = [
        0x02, 0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, // opcode, psdt=1, cid, nsid
        0, 0, 0, 0, 0, 0, 0, 0, // cdw2-3
        0, 0, 0, 0, 0, 0, 0, 0, // mptr
        0, 0, 0, 0, 0, 0, 0, 0, // sgl address
        0x00, 0x10, 0x00, 0x00, 0, 0, 0, 0x5A, // sgl length 4096, id 5Ah
        0x34, 0x12, 0, 0, 0, 0, 0, 0, // cdw10-11 slba
        0x07, 0, 0, 0, 0, 0, 0, 0, // cdw12 nlb 7 (0-based), cdw13
        0, 0, 0, 0, 0, 0, 0, 0, // cdw14-15
    ];

    #[test]
    fn decode_read_image() {
        let cmd = Command::parse(&READ_SQE).expect("64 bytes");
        assert_eq!(cmd.opcode, opcode::io::READ);
        assert_eq!(cmd.cid(), 5);
        assert_eq!(cmd.nsid(), 1);
        assert_eq!(cmd.psdt(), PSDT_SGL_MPTR_CONTIGUOUS);
        assert_eq!(cmd.dptr.id, SglDescriptor::SGL_TRANSPORT_DATA_BLOCK);
        assert_eq!(cmd.dptr.descriptor_type(), sgl_type::TRANSPORT_DATA_BLOCK);
        assert_eq!(cmd.dptr.subtype(), sgl_subtype::TRANSPORT_SPECIFIC);
        assert_eq!(cmd.dptr.len(), 4096);
        assert_eq!(cmd.data_direction(), DataDirection::ControllerToHost);
        assert_eq!(cmd.cdw(12), Some(7));
        assert_eq!(cmd.fabrics_type(), None);
        assert_eq!(cmd.as_bytes(), &READ_SQE);
    }

    #[test]
    fn fabrics_type_and_direction() {
        let cmd = Command::new_fabrics(opcode::fabrics::CONNECT, 9);
        assert_eq!(cmd.as_bytes()[4], 0x01);
        assert_eq!(cmd.fabrics_type(), Some(opcode::fabrics::CONNECT));
        assert_eq!(cmd.data_direction(), DataDirection::HostToController);
        let get = Command::new_fabrics(opcode::fabrics::PROPERTY_GET, 1);
        assert_eq!(get.data_direction(), DataDirection::None);
        let write = Command::new(opcode::io::WRITE, 1);
        assert_eq!(write.data_direction(), DataDirection::HostToController);
    }

    #[test]
    fn short_input_is_an_error() {
        assert!(Command::parse(&READ_SQE[..63]).is_err());
        assert!(Command::new(0, 0).set_cdw(9, 1).is_err());
        assert_eq!(Command::new(0, 0).cdw(16), None);
    }

    #[test]
    fn sgl_constructors() {
        let s = SglDescriptor::in_capsule(0, 512);
        assert_eq!(s.as_bytes()[15], 0x01);
        assert_eq!(s.descriptor_type(), sgl_type::DATA_BLOCK);
        assert_eq!(s.subtype(), sgl_subtype::OFFSET);
        let t = SglDescriptor::transport(8192);
        assert_eq!(t.as_bytes()[8..12], [0x00, 0x20, 0, 0]);
    }

    proptest! {
        #[test]
        fn command_round_trips(bytes in proptest::collection::vec(any::<u8>(), 64)) {
            let cmd = Command::parse(&bytes).expect("64 bytes");
            prop_assert_eq!(cmd.as_bytes(), &bytes[..]);
            let _ = cmd.data_direction();
        }

        #[test]
        fn cdw_set_get(n in 10usize..=15, v: u32) {
            let mut cmd = Command::new(1, 2);
            cmd.set_cdw(n, v).expect("valid index");
            prop_assert_eq!(cmd.cdw(n), Some(v));
            prop_assert_eq!(&cmd.as_bytes()[40 + (n - 10) * 4..44 + (n - 10) * 4], &v.to_le_bytes()[..]);
        }
    }
}
