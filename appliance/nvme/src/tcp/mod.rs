//! NVMe/TCP transport PDUs (NVMe/TCP Transport Specification 1.0).
//!
//! Every PDU starts with an 8-byte [`CommonHeader`]; the PDU-specific header
//! follows up to `hlen`, then an optional header digest (HDGST, 4 bytes),
//! optional padding up to `pdo`, the data, and an optional data digest
//! (DDGST, 4 bytes). [`validate`] checks a common header against the
//! negotiated digests and the direction and returns the [`PduLayout`];
//! the `encode_*` functions write PDUs into caller buffers.

mod encode;
mod headers;
mod validate;

pub use encode::*;
pub use headers::*;
pub use validate::*;

/// Protocol format version 1.0 (ICReq/ICResp PFV).
pub const PFV_1_0: u16 = 0;

/// Flag: a header digest follows the PDU header.
pub const HDGSTF: u8 = 0x01;
/// Flag: a data digest follows the PDU data.
pub const DDGSTF: u8 = 0x02;
/// Flag (H2CData/C2HData): last PDU of the data transfer.
pub const DATA_LAST: u8 = 0x04;
/// Flag (C2HData): the command completed successfully, no CapsuleResp follows.
pub const DATA_SUCCESS: u8 = 0x08;

/// ICReq/ICResp DGST byte: header digest enable (bit 0).
pub const DGST_HEADER: u8 = 0x01;
/// ICReq/ICResp DGST byte: data digest enable (bit 1).
pub const DGST_DATA: u8 = 0x02;

/// Size of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// Largest PDU data alignment value (HPDA/CPDA), meaning 128-byte alignment.
pub const MAX_PDA: u8 = 31;
/// Largest number of bytes of the offending PDU header a TermReq carries.
pub const TERM_REQ_MAX_DATA: usize = 128;
/// Largest PLEN of a TermReq PDU (24-byte header + 128 bytes).
pub const TERM_REQ_MAX_PLEN: u32 = 152;

/// Fatal Error Status values (TermReq FES).
pub mod fes {
    /// Invalid PDU Header Field (FEI = byte offset of the field).
    pub const INVALID_HEADER_FIELD: u16 = 0x01;
    /// PDU Sequence Error.
    pub const PDU_SEQUENCE_ERROR: u16 = 0x02;
    /// Header Digest Error.
    pub const HEADER_DIGEST_ERROR: u16 = 0x03;
    /// Data Transfer Out of Range.
    pub const DATA_OUT_OF_RANGE: u16 = 0x04;
    /// Data Transfer Limit Exceeded (called R2T Limit Exceeded in early drafts).
    pub const DATA_LIMIT_EXCEEDED: u16 = 0x05;
    /// Alias of [`DATA_LIMIT_EXCEEDED`] under its older name.
    pub const R2T_LIMIT_EXCEEDED: u16 = 0x05;
    /// Unsupported Parameter (FEI = byte offset of the parameter).
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

/// Byte offsets of common header fields, for TermReq FEI values.
pub mod field_offset {
    /// PDU-Type.
    pub const PDU_TYPE: u32 = 0;
    /// FLAGS.
    pub const FLAGS: u32 = 1;
    /// HLEN.
    pub const HLEN: u32 = 2;
    /// PDO.
    pub const PDO: u32 = 3;
    /// PLEN.
    pub const PLEN: u32 = 4;
}

/// Who sent a PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the host (H2C).
    FromHost,
    /// Sent by the controller (C2H).
    FromController,
}

/// Rounds `len` up to the PDU data alignment `(pda + 1) * 4`.
pub(crate) fn align_pdo(len: usize, pda: u8) -> usize {
    let align = (usize::from(pda.min(MAX_PDA)) + 1) * 4;
    len.div_ceil(align) * align
}

#[cfg(test)]
mod tests;
