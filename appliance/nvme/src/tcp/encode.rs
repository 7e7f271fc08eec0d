//! Encoders that write NVMe/TCP PDUs into caller buffers without allocating.
//!
//! Each returns the number of bytes written. For PDUs with data, the
//! encoder writes the header, the header digest and the padding up to PDO;
//! the caller sends the data and, when enabled, its data digest after it
//! ([`crate::digest::Crc32c`]).

use core::mem::size_of;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromZeros, IntoBytes};

use super::{
    align_pdo, CapsuleCmdHeader, CapsuleRespPdu, CommonHeader, DataHeader, Direction, ICReq,
    ICResp, PduType, R2tPdu, TermReqHeader, DATA_LAST, DATA_SUCCESS, DDGSTF, DGST_DATA,
    DGST_HEADER, DIGEST_LEN, HDGSTF, PFV_1_0, TERM_REQ_MAX_DATA,
};
use crate::command::Command;
use crate::completion::Completion;
use crate::digest::crc32c;
use crate::error::{ensure_out, NvmeError, Result};

/// Negotiated digests of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// Header digest enabled.
    pub header: bool,
    /// Data digest enabled.
    pub data: bool,
}

impl Digests {
    /// From a (header, data) pair, the form [`super::validate`] takes.
    pub const fn new(header: bool, data: bool) -> Digests {
        Digests { header, data }
    }

    /// As a (header, data) pair.
    pub const fn pair(self) -> (bool, bool) {
        (self.header, self.data)
    }

    /// The ICReq/ICResp DGST byte.
    pub const fn dgst_byte(self) -> u8 {
        (if self.header { DGST_HEADER } else { 0 }) | (if self.data { DGST_DATA } else { 0 })
    }

    /// Decodes an ICReq/ICResp DGST byte.
    pub const fn from_dgst_byte(b: u8) -> Digests {
        Digests {
            header: b & DGST_HEADER != 0,
            data: b & DGST_DATA != 0,
        }
    }
}

fn digest_len(on: bool) -> usize {
    if on {
        DIGEST_LEN
    } else {
        0
    }
}

fn to_u32(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| NvmeError::InvalidField {
        field: what,
        value: v as u64,
    })
}

/// Writes `hdr` followed by its header digest when `hdgst` is set and zero
/// padding up to `pdo`. Returns the bytes written (`pdo`, or the header
/// length plus digest when `pdo` is smaller).
fn put_header(hdr: &[u8], hdgst: bool, pdo: usize, out: &mut [u8]) -> usize {
    let hlen = hdr.len();
    out[..hlen].copy_from_slice(hdr);
    let mut end = hlen;
    if hdgst {
        out[hlen..hlen + DIGEST_LEN].copy_from_slice(&crc32c(hdr).to_le_bytes());
        end += DIGEST_LEN;
    }
    if pdo > end {
        out[end..pdo].fill(0);
        end = pdo;
    }
    end
}

/// Header part of a PDU with optional data: returns (pdo, header bytes, plen).
fn data_layout(
    hlen: usize,
    data_len: usize,
    digests: Digests,
    pda: u8,
) -> Result<(usize, usize, u32)> {
    let hdr_end = hlen + digest_len(digests.header);
    if data_len == 0 {
        return Ok((0, hdr_end, to_u32("plen", hdr_end)?));
    }
    let pdo = align_pdo(hdr_end, pda);
    let plen = pdo + data_len + digest_len(digests.data);
    Ok((pdo, pdo, to_u32("plen", plen)?))
}

fn flags_for(digests: Digests, has_data: bool) -> u8 {
    (if digests.header { HDGSTF } else { 0 }) | (if digests.data && has_data { DDGSTF } else { 0 })
}

/// Writes an ICReq (128 bytes).
pub fn encode_icreq(hpda: u8, digests: Digests, maxr2t: u32, out: &mut [u8]) -> Result<usize> {
    ensure_out("ICReq", out, ICReq::SIZE)?;
    let mut pdu = ICReq::new_zeroed();
    pdu.ch = CommonHeader::new(PduType::ICReq, 0, 0, ICReq::SIZE as u32);
    pdu.pfv = U16::new(PFV_1_0);
    pdu.hpda = hpda;
    pdu.dgst = digests.dgst_byte();
    pdu.maxr2t = U32::new(maxr2t);
    out[..ICReq::SIZE].copy_from_slice(pdu.as_bytes());
    Ok(ICReq::SIZE)
}

/// Writes an ICResp (128 bytes).
pub fn encode_icresp(cpda: u8, digests: Digests, maxh2cdata: u32, out: &mut [u8]) -> Result<usize> {
    ensure_out("ICResp", out, ICResp::SIZE)?;
    let mut pdu = ICResp::new_zeroed();
    pdu.ch = CommonHeader::new(PduType::ICResp, 0, 0, ICResp::SIZE as u32);
    pdu.pfv = U16::new(PFV_1_0);
    pdu.cpda = cpda;
    pdu.dgst = digests.dgst_byte();
    pdu.maxh2cdata = U32::new(maxh2cdata);
    out[..ICResp::SIZE].copy_from_slice(pdu.as_bytes());
    Ok(ICResp::SIZE)
}

/// Writes a CapsuleCmd header for `cmd` with `data_len` bytes of in-capsule
/// data to follow; `cpda` is the controller's data alignment from ICResp.
/// Returns the bytes written (the data starts right after them).
pub fn encode_capsule_cmd(
    cmd: &Command,
    data_len: usize,
    digests: Digests,
    cpda: u8,
    out: &mut [u8],
) -> Result<usize> {
    let hlen = size_of::<CapsuleCmdHeader>();
    let (pdo, hdr_bytes, plen) = data_layout(hlen, data_len, digests, cpda)?;
    ensure_out("CapsuleCmd", out, hdr_bytes)?;
    let pdu = CapsuleCmdHeader {
        ch: CommonHeader::new(
            PduType::CapsuleCmd,
            flags_for(digests, data_len > 0),
            pdo as u8,
            plen,
        ),
        cmd: *cmd,
    };
    Ok(put_header(pdu.as_bytes(), digests.header, pdo, out))
}

/// Writes a CapsuleResp PDU for `cqe`. Returns 24 or 28 bytes.
pub fn encode_capsule_resp(cqe: &Completion, hdgst: bool, out: &mut [u8]) -> Result<usize> {
    let len = CapsuleRespPdu::SIZE + digest_len(hdgst);
    ensure_out("CapsuleResp", out, len)?;
    let flags = if hdgst { HDGSTF } else { 0 };
    let pdu = CapsuleRespPdu {
        ch: CommonHeader::new(PduType::CapsuleResp, flags, 0, len as u32),
        cqe: *cqe,
    };
    Ok(put_header(pdu.as_bytes(), hdgst, 0, out))
}

/// Options of a C2HData PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct C2hDataFlags {
    /// Last C2HData PDU of the command.
    pub last: bool,
    /// Command succeeded; no CapsuleResp will follow (requires `last`).
    pub success: bool,
}

/// Writes a C2HData header for `datal` bytes at `datao` of command `cccid`;
/// `hpda` is the host's data alignment from ICReq. Returns the bytes
/// written (the data starts right after them). `datal` must be non-zero.
pub fn encode_c2h_data(
    cccid: u16,
    datao: u32,
    datal: u32,
    flags: C2hDataFlags,
    digests: Digests,
    hpda: u8,
    out: &mut [u8],
) -> Result<usize> {
    if datal == 0 {
        return Err(NvmeError::InvalidField {
            field: "datal",
            value: 0,
        });
    }
    if flags.success && !flags.last {
        return Err(NvmeError::InvalidField {
            field: "C2HData flags (SUCCESS without LAST)",
            value: u64::from(DATA_SUCCESS),
        });
    }
    let (pdo, hdr_bytes, plen) = data_layout(DataHeader::SIZE, datal as usize, digests, hpda)?;
    ensure_out("C2HData", out, hdr_bytes)?;
    let f = flags_for(digests, true)
        | if flags.last { DATA_LAST } else { 0 }
        | if flags.success { DATA_SUCCESS } else { 0 };
    let pdu = DataHeader {
        ch: CommonHeader::new(PduType::C2HData, f, pdo as u8, plen),
        cccid: U16::new(cccid),
        ttag: U16::new(0),
        datao: U32::new(datao),
        datal: U32::new(datal),
        reserved: [0; 4],
    };
    Ok(put_header(pdu.as_bytes(), digests.header, pdo, out))
}

/// Writes an H2CData header (host side) answering R2T `ttag`; `cpda` is the
/// controller's data alignment from ICResp. `datal` must be non-zero.
#[allow(clippy::too_many_arguments)]
pub fn encode_h2c_data(
    cccid: u16,
    ttag: u16,
    datao: u32,
    datal: u32,
    last: bool,
    digests: Digests,
    cpda: u8,
    out: &mut [u8],
) -> Result<usize> {
    if datal == 0 {
        return Err(NvmeError::InvalidField {
            field: "datal",
            value: 0,
        });
    }
    let (pdo, hdr_bytes, plen) = data_layout(DataHeader::SIZE, datal as usize, digests, cpda)?;
    ensure_out("H2CData", out, hdr_bytes)?;
    let f = flags_for(digests, true) | if last { DATA_LAST } else { 0 };
    let pdu = DataHeader {
        ch: CommonHeader::new(PduType::H2CData, f, pdo as u8, plen),
        cccid: U16::new(cccid),
        ttag: U16::new(ttag),
        datao: U32::new(datao),
        datal: U32::new(datal),
        reserved: [0; 4],
    };
    Ok(put_header(pdu.as_bytes(), digests.header, pdo, out))
}

/// Writes an R2T PDU asking for `r2tl` bytes at `r2to`. Returns 24 or 28.
pub fn encode_r2t(
    cccid: u16,
    ttag: u16,
    r2to: u32,
    r2tl: u32,
    hdgst: bool,
    out: &mut [u8],
) -> Result<usize> {
    let len = R2tPdu::SIZE + digest_len(hdgst);
    ensure_out("R2T", out, len)?;
    let flags = if hdgst { HDGSTF } else { 0 };
    let pdu = R2tPdu {
        ch: CommonHeader::new(PduType::R2T, flags, 0, len as u32),
        cccid: U16::new(cccid),
        ttag: U16::new(ttag),
        r2to: U32::new(r2to),
        r2tl: U32::new(r2tl),
        reserved: [0; 4],
    };
    Ok(put_header(pdu.as_bytes(), hdgst, 0, out))
}

/// Writes a TermReq sent by `from` (C2HTermReq from the controller,
/// H2CTermReq from the host) with the first 128 bytes at most of the
/// offending PDU header. TermReqs never carry digests.
pub fn encode_term_req(
    from: Direction,
    fes: u16,
    fei: u32,
    offending: &[u8],
    out: &mut [u8],
) -> Result<usize> {
    let data = &offending[..offending.len().min(TERM_REQ_MAX_DATA)];
    let len = TermReqHeader::SIZE + data.len();
    ensure_out("TermReq", out, len)?;
    let ty = match from {
        Direction::FromController => PduType::C2HTermReq,
        Direction::FromHost => PduType::H2CTermReq,
    };
    let pdu = TermReqHeader {
        ch: CommonHeader::new(ty, 0, 0, len as u32),
        fes: U16::new(fes),
        fei: U32::new(fei),
        reserved: [0; 10],
    };
    out[..TermReqHeader::SIZE].copy_from_slice(pdu.as_bytes());
    out[TermReqHeader::SIZE..len].copy_from_slice(data);
    Ok(len)
}
