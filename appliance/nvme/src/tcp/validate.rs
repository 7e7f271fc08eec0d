//! Validation of NVMe/TCP common headers and the resulting PDU layout.

use thiserror::Error;

use super::{
    fes, field_offset, CommonHeader, Direction, PduType, DATA_LAST, DATA_SUCCESS, DDGSTF,
    DIGEST_LEN, HDGSTF, TERM_REQ_MAX_DATA,
};
use crate::digest::{crc32c, read_digest};

/// A protocol violation in a received PDU. Each carries what a TermReq
/// needs: [`PduError::fes`] and [`PduError::fei`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PduError {
    /// Fewer bytes than a common header; buffer more before parsing.
    #[error("incomplete PDU header: need {needed} bytes, have {got}")]
    Incomplete {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// PDU-Type is not defined.
    #[error("unknown PDU type {pdu_type:#x}")]
    UnknownType {
        /// The type byte.
        pdu_type: u8,
    },
    /// PDU type that this side must never receive.
    #[error("PDU type {pdu_type:?} is not valid {direction:?}")]
    WrongDirection {
        /// The type.
        pdu_type: PduType,
        /// Direction the PDU travelled.
        direction: Direction,
    },
    /// A header field holds an invalid value.
    #[error("invalid PDU header field {field} = {value:#x} (offset {offset})")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Byte offset of the field within the PDU header.
        offset: u32,
        /// The value found.
        value: u32,
    },
    /// A parameter this side does not support (e.g. ICReq PFV or HPDA).
    #[error("unsupported parameter {field} = {value:#x} (offset {offset})")]
    Unsupported {
        /// Field name.
        field: &'static str,
        /// Byte offset of the field within the PDU header.
        offset: u32,
        /// The value found.
        value: u32,
    },
    /// The PDU data is longer than allowed (MAXH2CDATA, in-capsule size).
    #[error("PDU data length {len} exceeds the limit {max}")]
    DataLimitExceeded {
        /// Data length of the PDU.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// Data offset/length outside the command's transfer.
    #[error("data transfer out of range (field offset {offset})")]
    DataOutOfRange {
        /// Byte offset of the offending field (DATAO or DATAL).
        offset: u32,
    },
    /// A PDU arrived when the protocol state does not allow it.
    #[error("PDU sequence error: {reason}")]
    Sequence {
        /// What was unexpected.
        reason: &'static str,
    },
    /// Header digest mismatch.
    #[error("header digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// CRC32C over the header.
        computed: u32,
        /// Value on the wire.
        received: u32,
    },
    /// Data digest mismatch (not a TermReq cause: the command fails instead).
    #[error("data digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    DataDigest {
        /// CRC32C over the data.
        computed: u32,
        /// Value on the wire.
        received: u32,
    },
}

impl PduError {
    /// Fatal Error Status for a TermReq reporting this error.
    pub fn fes(&self) -> u16 {
        match self {
            PduError::Incomplete { .. }
            | PduError::UnknownType { .. }
            | PduError::WrongDirection { .. }
            | PduError::InvalidField { .. } => fes::INVALID_HEADER_FIELD,
            PduError::Unsupported { .. } => fes::UNSUPPORTED_PARAMETER,
            PduError::DataLimitExceeded { .. } => fes::DATA_LIMIT_EXCEEDED,
            PduError::DataOutOfRange { .. } => fes::DATA_OUT_OF_RANGE,
            PduError::Sequence { .. } => fes::PDU_SEQUENCE_ERROR,
            // Data digest errors fail the command, not the connection;
            // a peer that insists on terminating reports it as a header digest error.
            PduError::HeaderDigest { .. } | PduError::DataDigest { .. } => fes::HEADER_DIGEST_ERROR,
        }
    }

    /// Fatal Error Information: the byte offset of the offending field for
    /// Invalid Header Field / Unsupported Parameter, otherwise 0.
    pub fn fei(&self) -> u32 {
        match self {
            PduError::InvalidField { offset, .. } | PduError::Unsupported { offset, .. } => *offset,
            PduError::DataLimitExceeded { .. } => field_offset::PLEN,
            PduError::DataOutOfRange { offset } => *offset,
            _ => 0,
        }
    }
}

/// Where the parts of a validated PDU are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduLayout {
    /// The PDU type.
    pub pdu_type: PduType,
    /// Header length (without the header digest).
    pub hlen: u8,
    /// A 4-byte header digest follows the header.
    pub header_digest: bool,
    /// Offset of the data from the PDU start (equals `hlen` for TermReq; 0 if no data).
    pub pdo: u8,
    /// Data bytes (excluding padding and data digest).
    pub data_len: u32,
    /// A 4-byte data digest follows the data.
    pub data_digest: bool,
    /// Total PDU length.
    pub plen: u32,
}

impl PduLayout {
    /// Bytes from the PDU start through the header digest.
    pub fn header_with_digest_len(&self) -> usize {
        usize::from(self.hlen) + if self.header_digest { DIGEST_LEN } else { 0 }
    }

    /// Bytes from the PDU start to the data (header, digest, padding).
    pub fn data_offset(&self) -> usize {
        if self.data_len == 0 {
            self.header_with_digest_len()
        } else {
            usize::from(self.pdo)
        }
    }

    /// Padding between the header digest and the data.
    pub fn padding_len(&self) -> usize {
        self.data_offset() - self.header_with_digest_len()
    }
}

/// What a PDU type may carry.
struct TypeRules {
    from: Direction,
    /// `None`: no data; `Some(required)`: data allowed / required.
    data: Option<bool>,
    digests: bool,
    extra_flags: u8,
}

fn rules(ty: PduType) -> TypeRules {
    use Direction::{FromController, FromHost};
    let r = |from, data, digests, extra_flags| TypeRules {
        from,
        data,
        digests,
        extra_flags,
    };
    match ty {
        PduType::ICReq => r(FromHost, None, false, 0),
        PduType::ICResp => r(FromController, None, false, 0),
        PduType::H2CTermReq => r(FromHost, None, false, 0),
        PduType::C2HTermReq => r(FromController, None, false, 0),
        PduType::CapsuleCmd => r(FromHost, Some(false), true, 0),
        PduType::CapsuleResp => r(FromController, None, true, 0),
        PduType::H2CData => r(FromHost, Some(true), true, DATA_LAST),
        PduType::C2HData => r(FromController, Some(true), true, DATA_LAST | DATA_SUCCESS),
        PduType::R2T => r(FromController, None, true, 0),
    }
}

fn bad(field: &'static str, offset: u32, value: u32) -> PduError {
    PduError::InvalidField {
        field,
        offset,
        value,
    }
}

/// Validates a common header received from `direction`.
///
/// `digests` is the negotiated (header, data) digest pair; `max_data` bounds
/// the data of CapsuleCmd (in-capsule data) and H2CData/C2HData PDUs.
/// Checks: known type valid for the direction, HLEN exactly the type's
/// value, digest flags consistent with negotiation, PLEN large enough for
/// header and digests, PDO within `[hlen + hdgst, plen]` when data is present.
pub fn validate(
    ch: &CommonHeader,
    digests: (bool, bool),
    direction: Direction,
    max_data: u32,
) -> Result<PduLayout, PduError> {
    let ty = ch.pdu_type()?;
    let rules = rules(ty);
    if rules.from != direction {
        return Err(PduError::WrongDirection {
            pdu_type: ty,
            direction,
        });
    }
    if ch.hlen != ty.hlen() {
        return Err(bad("hlen", field_offset::HLEN, u32::from(ch.hlen)));
    }
    let plen = ch.plen();
    let hlen = u32::from(ch.hlen);
    let flags = ch.flags;
    let flag_err = || bad("flags", field_offset::FLAGS, u32::from(flags));
    let (hdgst_on, ddgst_on) = digests;

    if matches!(ty, PduType::H2CTermReq | PduType::C2HTermReq) {
        if flags & (HDGSTF | DDGSTF) != 0 {
            return Err(flag_err());
        }
        if plen < hlen || plen > hlen + TERM_REQ_MAX_DATA as u32 {
            return Err(bad("plen", field_offset::PLEN, plen));
        }
        return Ok(PduLayout {
            pdu_type: ty,
            hlen: ch.hlen,
            header_digest: false,
            pdo: ch.hlen,
            data_len: plen - hlen,
            data_digest: false,
            plen,
        });
    }

    // Reserved flag bits are ignored; only the defined ones are checked.
    let _defined = HDGSTF | DDGSTF | rules.extra_flags;
    let hd = flags & HDGSTF != 0;
    let dd = flags & DDGSTF != 0;
    if !rules.digests {
        if hd || dd {
            return Err(flag_err());
        }
    } else if hd != hdgst_on {
        return Err(flag_err());
    }
    if ty == PduType::C2HData && flags & DATA_SUCCESS != 0 && flags & DATA_LAST == 0 {
        return Err(flag_err());
    }
    let hdr_end = hlen + if hd { DIGEST_LEN as u32 } else { 0 };
    let dd_len = if dd { DIGEST_LEN as u32 } else { 0 };

    let Some(required) = rules.data else {
        if dd {
            return Err(flag_err());
        }
        if plen != hdr_end {
            return Err(bad("plen", field_offset::PLEN, plen));
        }
        return Ok(PduLayout {
            pdu_type: ty,
            hlen: ch.hlen,
            header_digest: hd,
            pdo: 0,
            data_len: 0,
            data_digest: false,
            plen,
        });
    };

    let pdo = u32::from(ch.pdo);
    let data_len = if pdo == 0 {
        if plen != hdr_end + dd_len {
            return Err(bad("plen", field_offset::PLEN, plen));
        }
        0
    } else {
        if pdo < hdr_end {
            return Err(bad("pdo", field_offset::PDO, pdo));
        }
        if plen < pdo + dd_len {
            return Err(bad("plen", field_offset::PLEN, plen));
        }
        plen - pdo - dd_len
    };
    if data_len == 0 && (required || dd) {
        // Data PDUs must carry data; a data digest needs data to cover.
        return Err(if dd {
            flag_err()
        } else if pdo == 0 {
            bad("pdo", field_offset::PDO, pdo)
        } else {
            bad("plen", field_offset::PLEN, plen)
        });
    }
    if data_len > 0 && dd != ddgst_on {
        return Err(flag_err());
    }
    if data_len > max_data {
        return Err(PduError::DataLimitExceeded {
            len: data_len,
            max: max_data,
        });
    }
    Ok(PduLayout {
        pdu_type: ty,
        hlen: ch.hlen,
        header_digest: hd,
        pdo: if data_len > 0 { ch.pdo } else { 0 },
        data_len,
        data_digest: dd,
        plen,
    })
}

impl CommonHeader {
    /// Method form of [`validate`].
    pub fn validate(
        &self,
        digests: (bool, bool),
        direction: Direction,
        max_data: u32,
    ) -> Result<PduLayout, PduError> {
        validate(self, digests, direction, max_data)
    }
}

/// Checks the header digest of a PDU whose first `layout.hlen + 4` bytes
/// are in `header`. A no-op when the layout has no header digest.
pub fn verify_header_digest(header: &[u8], layout: &PduLayout) -> Result<(), PduError> {
    if !layout.header_digest {
        return Ok(());
    }
    let hlen = usize::from(layout.hlen);
    let (Some(covered), Some(received)) =
        (header.get(..hlen), header.get(hlen..).and_then(read_digest))
    else {
        return Err(PduError::Incomplete {
            needed: hlen + DIGEST_LEN,
            got: header.len(),
        });
    };
    let computed = crc32c(covered);
    if computed != received {
        return Err(PduError::HeaderDigest { computed, received });
    }
    Ok(())
}

/// Compares a computed data digest with the received one.
pub fn check_data_digest(computed: u32, received: u32) -> Result<(), PduError> {
    if computed != received {
        return Err(PduError::DataDigest { computed, received });
    }
    Ok(())
}
