//! NVMe/RDMA wire formats (NVMe over Fabrics RDMA transport binding): the RDMA_CM private data
//! of connect requests, accepts and rejects, and Keyed SGL Data Block descriptors.

use zerocopy::little_endian::{U32, U64};

use crate::command::{sgl_type, SglDescriptor};

/// Sub type of a keyed data block whose key the controller should invalidate (SEND with
/// Invalidate) when it sends the completion.
pub const KEYED_SUBTYPE_INVALIDATE: u8 = 0xF;
/// Sub type of a keyed data block with a plain address.
pub const KEYED_SUBTYPE_ADDRESS: u8 = 0x0;
/// Largest length a keyed data block carries (24 bits).
pub const KEYED_MAX_LEN: u32 = 0xFF_FFFF;

/// A Keyed SGL Data Block: the host's memory the controller reads or writes with RDMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedSgl {
    pub addr: u64,
    /// 24-bit length.
    pub len: u32,
    pub key: u32,
    /// Sub type 0xF: the host asks for the key to be invalidated with the completion.
    pub invalidate: bool,
}

impl KeyedSgl {
    /// Reads a keyed data block descriptor; None for any other descriptor type or sub type.
    pub fn parse(sgl: &SglDescriptor) -> Option<KeyedSgl> {
        if sgl.id >> 4 != sgl_type::KEYED_DATA_BLOCK {
            return None;
        }
        let invalidate = match sgl.id & 0xF {
            KEYED_SUBTYPE_ADDRESS => false,
            KEYED_SUBTYPE_INVALIDATE => true,
            _ => return None,
        };
        let raw = sgl.length.get();
        let len = raw & KEYED_MAX_LEN;
        let key = (raw >> 24)
            | u32::from(sgl.reserved[0]) << 8
            | u32::from(sgl.reserved[1]) << 16
            | u32::from(sgl.reserved[2]) << 24;
        Some(KeyedSgl {
            addr: sgl.address.get(),
            len,
            key,
            invalidate,
        })
    }

    /// The descriptor bytes (bytes 0-7 address, 8-10 length, 11-14 key, 15 identifier).
    pub fn descriptor(&self) -> SglDescriptor {
        let len = self.len & KEYED_MAX_LEN;
        let k = self.key.to_le_bytes();
        SglDescriptor {
            address: U64::new(self.addr),
            length: U32::new(len | u32::from(k[0]) << 24),
            reserved: [k[1], k[2], k[3]],
            id: sgl_type::KEYED_DATA_BLOCK << 4
                | if self.invalidate {
                    KEYED_SUBTYPE_INVALIDATE
                } else {
                    KEYED_SUBTYPE_ADDRESS
                },
        }
    }
}

/// RDMA_CM private data of a connect request (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmRequest {
    pub recfmt: u16,
    pub qid: u16,
    /// Host receive queue size (entries).
    pub hrqsize: u16,
    /// Host send queue size, 0's based (the NVMe SQ size minus one).
    pub hsqsize: u16,
    pub cntlid: u16,
}

/// RDMA_CM reject status codes (the STS field of the reject private data).
pub mod cm_reject {
    pub const INVALID_PRIVATE_DATA_LENGTH: u16 = 1;
    pub const INVALID_RECFMT: u16 = 2;
    pub const INVALID_QID: u16 = 3;
    pub const INVALID_HSQSIZE: u16 = 4;
    pub const INVALID_HRQSIZE: u16 = 5;
    pub const NO_RESOURCES: u16 = 6;
    pub const INVALID_IRD: u16 = 7;
    pub const INVALID_ORD: u16 = 8;
}

/// Length of the connect request private data.
pub const CM_REQUEST_LEN: usize = 32;
/// Length of the accept private data.
pub const CM_ACCEPT_LEN: usize = 32;

impl CmRequest {
    /// Reads a connect request's private data; the error is the reject status to answer with.
    pub fn parse(bytes: &[u8]) -> Result<CmRequest, u16> {
        if bytes.len() < CM_REQUEST_LEN {
            return Err(cm_reject::INVALID_PRIVATE_DATA_LENGTH);
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let req = CmRequest {
            recfmt: u16_at(0),
            qid: u16_at(2),
            hrqsize: u16_at(4),
            hsqsize: u16_at(6),
            cntlid: u16_at(8),
        };
        if req.recfmt != 0 {
            return Err(cm_reject::INVALID_RECFMT);
        }
        Ok(req)
    }

    pub fn encode(&self) -> [u8; CM_REQUEST_LEN] {
        let mut out = [0u8; CM_REQUEST_LEN];
        out[0..2].copy_from_slice(&self.recfmt.to_le_bytes());
        out[2..4].copy_from_slice(&self.qid.to_le_bytes());
        out[4..6].copy_from_slice(&self.hrqsize.to_le_bytes());
        out[6..8].copy_from_slice(&self.hsqsize.to_le_bytes());
        out[8..10].copy_from_slice(&self.cntlid.to_le_bytes());
        out
    }
}

/// Accept private data: RECFMT 0 and the controller's receive queue size.
pub fn encode_accept(crqsize: u16) -> [u8; CM_ACCEPT_LEN] {
    let mut out = [0u8; CM_ACCEPT_LEN];
    out[2..4].copy_from_slice(&crqsize.to_le_bytes());
    out
}

/// Reads accept private data: the controller's receive queue size.
pub fn parse_accept(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 4 || u16::from_le_bytes([bytes[0], bytes[1]]) != 0 {
        return None;
    }
    Some(u16::from_le_bytes([bytes[2], bytes[3]]))
}

/// Reject private data: RECFMT 0 and the status.
pub fn encode_reject(sts: u16) -> [u8; 4] {
    let mut out = [0u8; 4];
    out[2..4].copy_from_slice(&sts.to_le_bytes());
    out
}

/// Reads reject private data: the status, when the format is known.
pub fn parse_reject(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 4 || u16::from_le_bytes([bytes[0], bytes[1]]) != 0 {
        return None;
    }
    Some(u16::from_le_bytes([bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_sgl_fields_sit_where_the_binding_puts_them() {
        let k = KeyedSgl {
            addr: 0x1122_3344_5566_7788,
            len: 0x02_0000,
            key: 0xAABB_CCDD,
            invalidate: true,
        };
        let d = k.descriptor();
        let bytes = zerocopy::IntoBytes::as_bytes(&d).to_vec();
        assert_eq!(&bytes[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&bytes[8..11], &[0x00, 0x00, 0x02]);
        assert_eq!(&bytes[11..15], &0xAABB_CCDDu32.to_le_bytes());
        assert_eq!(bytes[15], 0x4F);
        assert_eq!(KeyedSgl::parse(&d), Some(k));
        let plain = KeyedSgl {
            invalidate: false,
            ..k
        };
        assert_eq!(plain.descriptor().id, 0x40);
        assert_eq!(KeyedSgl::parse(&plain.descriptor()), Some(plain));
    }

    #[test]
    fn other_descriptors_are_not_keyed() {
        assert_eq!(KeyedSgl::parse(&SglDescriptor::in_capsule(0, 4096)), None);
        assert_eq!(KeyedSgl::parse(&SglDescriptor::transport(4096)), None);
        let mut d = KeyedSgl {
            addr: 0,
            len: 1,
            key: 1,
            invalidate: false,
        }
        .descriptor();
        d.id = 0x41; // keyed, sub type offset: not defined for keyed blocks
        assert_eq!(KeyedSgl::parse(&d), None);
    }

    #[test]
    fn connect_private_data_round_trips_and_bad_ones_get_their_status() {
        let r = CmRequest {
            recfmt: 0,
            qid: 3,
            hrqsize: 128,
            hsqsize: 127,
            cntlid: 0xFFFF,
        };
        assert_eq!(CmRequest::parse(&r.encode()), Ok(r));
        assert_eq!(
            CmRequest::parse(&r.encode()[..31]),
            Err(cm_reject::INVALID_PRIVATE_DATA_LENGTH)
        );
        let mut bad = r.encode();
        bad[0] = 1;
        assert_eq!(CmRequest::parse(&bad), Err(cm_reject::INVALID_RECFMT));
        assert_eq!(parse_accept(&encode_accept(64)), Some(64));
        assert_eq!(
            parse_reject(&encode_reject(cm_reject::INVALID_QID)),
            Some(3)
        );
    }
}
