//! NVMe/TCP PDU header structures.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{PduError, PFV_1_0};
use crate::command::Command;
use crate::completion::Completion;
use crate::error::{NvmeError, Result};

/// PDU types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request.
    ICReq = 0,
    /// Initialize Connection Response.
    ICResp = 1,
    /// Host to Controller Terminate Connection Request.
    H2CTermReq = 2,
    /// Controller to Host Terminate Connection Request.
    C2HTermReq = 3,
    /// Command capsule.
    CapsuleCmd = 4,
    /// Response capsule.
    CapsuleResp = 5,
    /// Host to Controller Data.
    H2CData = 6,
    /// Controller to Host Data.
    C2HData = 7,
    /// Ready to Transfer.
    R2T = 9,
}

impl PduType {
    /// Decodes a PDU-Type byte.
    pub const fn from_u8(v: u8) -> Option<PduType> {
        Some(match v {
            0 => PduType::ICReq,
            1 => PduType::ICResp,
            2 => PduType::H2CTermReq,
            3 => PduType::C2HTermReq,
            4 => PduType::CapsuleCmd,
            5 => PduType::CapsuleResp,
            6 => PduType::H2CData,
            7 => PduType::C2HData,
            9 => PduType::R2T,
            _ => return None,
        })
    }

    /// The fixed HLEN of this PDU type.
    pub const fn hlen(self) -> u8 {
        match self {
            PduType::ICReq | PduType::ICResp => 128,
            PduType::CapsuleCmd => 72,
            PduType::H2CTermReq
            | PduType::C2HTermReq
            | PduType::CapsuleResp
            | PduType::H2CData
            | PduType::C2HData
            | PduType::R2T => 24,
        }
    }
}

impl TryFrom<u8> for PduType {
    type Error = PduError;
    fn try_from(v: u8) -> core::result::Result<PduType, PduError> {
        PduType::from_u8(v).ok_or(PduError::UnknownType { pdu_type: v })
    }
}

/// The 8-byte common header that starts every PDU.
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
pub struct CommonHeader {
    /// PDU type.
    pub pdu_type: u8,
    /// PDU specific flags.
    pub flags: u8,
    /// PDU header length (without the header digest).
    pub hlen: u8,
    /// PDU data offset from the start of the PDU (0 when there is no data).
    pub pdo: u8,
    /// Total PDU length including digests and padding.
    pub plen: U32,
}

const _: () = assert!(size_of::<CommonHeader>() == 8);
const _: () = assert!(offset_of!(CommonHeader, plen) == 4);

impl CommonHeader {
    /// Size of the common header.
    pub const SIZE: usize = 8;

    /// A header for `pdu_type` with its fixed HLEN.
    pub fn new(pdu_type: PduType, flags: u8, pdo: u8, plen: u32) -> CommonHeader {
        CommonHeader {
            pdu_type: pdu_type as u8,
            flags,
            hlen: pdu_type.hlen(),
            pdo,
            plen: U32::new(plen),
        }
    }

    /// Decodes the common header from the first 8 bytes of `bytes` and
    /// checks that the PDU type is known.
    pub fn parse(bytes: &[u8]) -> core::result::Result<(CommonHeader, PduType), PduError> {
        let (ch, _) = CommonHeader::read_from_prefix(bytes).map_err(|_| PduError::Incomplete {
            needed: Self::SIZE,
            got: bytes.len(),
        })?;
        let ty = PduType::try_from(ch.pdu_type)?;
        Ok((ch, ty))
    }

    /// The PDU type, if known.
    pub fn pdu_type(&self) -> core::result::Result<PduType, PduError> {
        PduType::try_from(self.pdu_type)
    }

    /// PLEN.
    pub fn plen(&self) -> u32 {
        self.plen.get()
    }
}

/// Decoding shared by the fixed-size PDU headers.
macro_rules! pdu_parse {
    ($t:ty, $name:literal) => {
        impl $t {
            /// Size of this header in bytes (its HLEN).
            pub const SIZE: usize = size_of::<$t>();

            /// Decodes the header from the start of `bytes`.
            pub fn parse(bytes: &[u8]) -> Result<$t> {
                <$t>::read_from_prefix(bytes)
                    .map(|(h, _)| h)
                    .map_err(|_| NvmeError::TooShort {
                        what: $name,
                        needed: Self::SIZE,
                        got: bytes.len(),
                    })
            }
        }
    };
}

/// Initialize Connection Request (host to controller, 128 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ICReq {
    /// Common header.
    pub ch: CommonHeader,
    /// Protocol format version.
    pub pfv: U16,
    /// Host PDU data alignment: C2H data offsets are multiples of (hpda+1)*4.
    pub hpda: u8,
    /// Digest enables: bit 0 header, bit 1 data.
    pub dgst: u8,
    /// Maximum outstanding R2Ts per command, 0-based.
    pub maxr2t: U32,
    /// Reserved.
    pub reserved: [u8; 112],
}

const _: () = assert!(size_of::<ICReq>() == 128);
const _: () = assert!(offset_of!(ICReq, pfv) == 8);
const _: () = assert!(offset_of!(ICReq, hpda) == 10);
const _: () = assert!(offset_of!(ICReq, dgst) == 11);
const _: () = assert!(offset_of!(ICReq, maxr2t) == 12);
pdu_parse!(ICReq, "ICReq");

impl ICReq {
    /// Checks the parameters a controller must refuse with Unsupported
    /// Parameter: a PFV other than 1.0 or an HPDA above 31.
    pub fn check(&self) -> core::result::Result<(), PduError> {
        if self.pfv.get() != PFV_1_0 {
            return Err(PduError::Unsupported {
                field: "pfv",
                offset: offset_of!(ICReq, pfv) as u32,
                value: u32::from(self.pfv.get()),
            });
        }
        if self.hpda > super::MAX_PDA {
            return Err(PduError::Unsupported {
                field: "hpda",
                offset: offset_of!(ICReq, hpda) as u32,
                value: u32::from(self.hpda),
            });
        }
        Ok(())
    }

    /// Header digest requested.
    pub fn header_digest(&self) -> bool {
        self.dgst & super::DGST_HEADER != 0
    }

    /// Data digest requested.
    pub fn data_digest(&self) -> bool {
        self.dgst & super::DGST_DATA != 0
    }
}

/// Initialize Connection Response (controller to host, 128 bytes).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ICResp {
    /// Common header.
    pub ch: CommonHeader,
    /// Protocol format version.
    pub pfv: U16,
    /// Controller PDU data alignment: H2C data offsets are multiples of (cpda+1)*4.
    pub cpda: u8,
    /// Digest enables: bit 0 header, bit 1 data.
    pub dgst: u8,
    /// Maximum data bytes in one H2CData PDU.
    pub maxh2cdata: U32,
    /// Reserved.
    pub reserved: [u8; 112],
}

const _: () = assert!(size_of::<ICResp>() == 128);
const _: () = assert!(offset_of!(ICResp, cpda) == 10);
const _: () = assert!(offset_of!(ICResp, maxh2cdata) == 12);
pdu_parse!(ICResp, "ICResp");

/// Command capsule PDU header: common header + SQE (HLEN 72).
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
pub struct CapsuleCmdHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// Submission queue entry.
    pub cmd: Command,
}

const _: () = assert!(size_of::<CapsuleCmdHeader>() == 72);
const _: () = assert!(offset_of!(CapsuleCmdHeader, cmd) == 8);
pdu_parse!(CapsuleCmdHeader, "CapsuleCmd");

/// Response capsule PDU: common header + CQE (HLEN 24).
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
pub struct CapsuleRespPdu {
    /// Common header.
    pub ch: CommonHeader,
    /// Completion queue entry.
    pub cqe: Completion,
}

const _: () = assert!(size_of::<CapsuleRespPdu>() == 24);
const _: () = assert!(offset_of!(CapsuleRespPdu, cqe) == 8);
pdu_parse!(CapsuleRespPdu, "CapsuleResp");

/// H2CData and C2HData PDU header (HLEN 24).
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
pub struct DataHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// Command capsule CID the data belongs to.
    pub cccid: U16,
    /// Transfer tag from the R2T (H2CData; reserved in C2HData).
    pub ttag: U16,
    /// Offset of this PDU's data within the command's data.
    pub datao: U32,
    /// Length of this PDU's data.
    pub datal: U32,
    /// Reserved.
    pub reserved: [u8; 4],
}

const _: () = assert!(size_of::<DataHeader>() == 24);
const _: () = assert!(offset_of!(DataHeader, cccid) == 8);
const _: () = assert!(offset_of!(DataHeader, ttag) == 10);
const _: () = assert!(offset_of!(DataHeader, datao) == 12);
const _: () = assert!(offset_of!(DataHeader, datal) == 16);
pdu_parse!(DataHeader, "DataHeader");

impl DataHeader {
    /// Byte offset of DATAO, for TermReq FEI.
    pub const DATAO_OFFSET: u32 = 12;
    /// Byte offset of DATAL, for TermReq FEI.
    pub const DATAL_OFFSET: u32 = 16;
    /// Byte offset of TTAG, for TermReq FEI.
    pub const TTAG_OFFSET: u32 = 10;
    /// Byte offset of CCCID, for TermReq FEI.
    pub const CCCID_OFFSET: u32 = 8;
}

/// Ready to Transfer PDU (HLEN 24).
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
pub struct R2tPdu {
    /// Common header.
    pub ch: CommonHeader,
    /// Command capsule CID.
    pub cccid: U16,
    /// Transfer tag the host echoes in H2CData.
    pub ttag: U16,
    /// Offset of the requested data.
    pub r2to: U32,
    /// Length of the requested data.
    pub r2tl: U32,
    /// Reserved.
    pub reserved: [u8; 4],
}

const _: () = assert!(size_of::<R2tPdu>() == 24);
const _: () = assert!(offset_of!(R2tPdu, r2to) == 12);
const _: () = assert!(offset_of!(R2tPdu, r2tl) == 16);
pdu_parse!(R2tPdu, "R2T");

/// H2CTermReq / C2HTermReq header (HLEN 24); up to 128 bytes of the
/// offending PDU header follow as data.
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
pub struct TermReqHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// Fatal error status.
    pub fes: U16,
    /// Fatal error information (bytes 10..14).
    pub fei: U32,
    /// Reserved.
    pub reserved: [u8; 10],
}

const _: () = assert!(size_of::<TermReqHeader>() == 24);
const _: () = assert!(offset_of!(TermReqHeader, fes) == 8);
const _: () = assert!(offset_of!(TermReqHeader, fei) == 10);
pdu_parse!(TermReqHeader, "TermReq");
