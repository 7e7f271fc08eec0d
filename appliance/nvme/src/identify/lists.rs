//! Namespace ID lists (CNS 02h/07h) and Namespace Identification
//! Descriptor lists (CNS 03h).

use super::IDENTIFY_DATA_SIZE;
use crate::error::{ensure_in, NvmeError, Result};

/// Most NSIDs in one namespace list.
pub const NS_LIST_MAX: usize = IDENTIFY_DATA_SIZE / 4;

/// Writes an active namespace list: the NSIDs of `nsids` greater than
/// `after`, ascending, at most 1024, zero-filled after the last.
/// `nsids` must be strictly ascending. Returns the number of entries.
pub fn encode_ns_list(
    nsids: impl IntoIterator<Item = u32>,
    after: u32,
    out: &mut [u8; IDENTIFY_DATA_SIZE],
) -> Result<usize> {
    out.fill(0);
    let mut count = 0;
    let mut prev = 0u32;
    for nsid in nsids {
        if nsid == 0 || (count > 0 && nsid <= prev) {
            return Err(NvmeError::InvalidField {
                field: "namespace list order",
                value: u64::from(nsid),
            });
        }
        if nsid <= after {
            continue;
        }
        if count == NS_LIST_MAX {
            break;
        }
        out[count * 4..count * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
        prev = nsid;
        count += 1;
    }
    Ok(count)
}

/// Reads a namespace list up to its first zero entry.
pub fn decode_ns_list(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&n| n != 0)
        .collect()
}

/// Namespace Identifier Types (NIDT).
pub mod nidt {
    /// IEEE Extended Unique Identifier (8 bytes).
    pub const EUI64: u8 = 1;
    /// Namespace Globally Unique Identifier (16 bytes).
    pub const NGUID: u8 = 2;
    /// Namespace UUID (16 bytes).
    pub const UUID: u8 = 3;
    /// Command Set Identifier (1 byte).
    pub const CSI: u8 = 4;
}

/// The identifiers of a namespace as carried by a Namespace Identification
/// Descriptor list (CNS 03h): entries `{nidt, nidl, rsvd[2], nid}` back to
/// back, ended by an entry with NIDT 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NsDescriptorList {
    /// EUI-64.
    pub eui64: Option<[u8; 8]>,
    /// NGUID.
    pub nguid: Option<[u8; 16]>,
    /// UUID.
    pub uuid: Option<[u8; 16]>,
    /// Command set identifier.
    pub csi: Option<u8>,
}

fn put(out: &mut [u8], pos: &mut usize, nidt: u8, nid: &[u8]) {
    out[*pos] = nidt;
    out[*pos + 1] = nid.len() as u8;
    out[*pos + 2] = 0;
    out[*pos + 3] = 0;
    out[*pos + 4..*pos + 4 + nid.len()].copy_from_slice(nid);
    *pos += 4 + nid.len();
}

impl NsDescriptorList {
    /// Writes the descriptor list into `out` (zero-filled after the last
    /// entry). Returns the bytes used.
    pub fn encode(
        eui64: Option<[u8; 8]>,
        nguid: Option<[u8; 16]>,
        uuid: Option<[u8; 16]>,
        csi: Option<u8>,
        out: &mut [u8; IDENTIFY_DATA_SIZE],
    ) -> usize {
        NsDescriptorList {
            eui64,
            nguid,
            uuid,
            csi,
        }
        .encode_into(out)
    }

    /// Method form of [`NsDescriptorList::encode`].
    pub fn encode_into(&self, out: &mut [u8; IDENTIFY_DATA_SIZE]) -> usize {
        out.fill(0);
        let mut pos = 0;
        if let Some(v) = self.eui64 {
            put(out, &mut pos, nidt::EUI64, &v);
        }
        if let Some(v) = self.nguid {
            put(out, &mut pos, nidt::NGUID, &v);
        }
        if let Some(v) = self.uuid {
            put(out, &mut pos, nidt::UUID, &v);
        }
        if let Some(v) = self.csi {
            put(out, &mut pos, nidt::CSI, &[v]);
        }
        pos
    }

    /// Decodes a descriptor list. Unknown NIDTs are skipped by their NIDL;
    /// a known NIDT with the wrong NIDL, a repeated NIDT or an entry running
    /// past the buffer is an error.
    pub fn decode(bytes: &[u8]) -> Result<NsDescriptorList> {
        let mut list = NsDescriptorList::default();
        let mut pos = 0;
        while pos + 4 <= bytes.len() {
            let (ty, len) = (bytes[pos], usize::from(bytes[pos + 1]));
            if ty == 0 {
                break;
            }
            let start = pos + 4;
            ensure_in("namespace descriptor", bytes, start + len)?;
            let nid = &bytes[start..start + len];
            let bad = |field| NvmeError::InvalidField {
                field,
                value: len as u64,
            };
            match ty {
                nidt::EUI64 => {
                    let v = nid.try_into().map_err(|_| bad("eui64 nidl"))?;
                    if list.eui64.replace(v).is_some() {
                        return Err(bad("duplicate eui64"));
                    }
                }
                nidt::NGUID => {
                    let v = nid.try_into().map_err(|_| bad("nguid nidl"))?;
                    if list.nguid.replace(v).is_some() {
                        return Err(bad("duplicate nguid"));
                    }
                }
                nidt::UUID => {
                    let v = nid.try_into().map_err(|_| bad("uuid nidl"))?;
                    if list.uuid.replace(v).is_some() {
                        return Err(bad("duplicate uuid"));
                    }
                }
                nidt::CSI => {
                    let [v] = nid else {
                        return Err(bad("csi nidl"));
                    };
                    if list.csi.replace(*v).is_some() {
                        return Err(bad("duplicate csi"));
                    }
                }
                _ => {}
            }
            pos = start + len;
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ns_list() {
        let mut out = [0xFFu8; IDENTIFY_DATA_SIZE];
        let n = encode_ns_list([1, 2, 5, 9], 2, &mut out).expect("ascending");
        assert_eq!(n, 2);
        assert_eq!(&out[..12], &[5, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_ns_list(&out), vec![5, 9]);
        assert!(encode_ns_list([3, 2], 0, &mut out).is_err());
        let n = encode_ns_list(1..=2000, 0, &mut out).expect("ascending");
        assert_eq!(n, 1024);
        assert_eq!(&out[4092..], &1024u32.to_le_bytes());
    }

    #[test]
    fn descriptor_image() {
        let mut out = [0u8; IDENTIFY_DATA_SIZE];
        let used =
            NsDescriptorList::encode(None, Some([0x11; 16]), Some([0x22; 16]), Some(0), &mut out);
        assert_eq!(used, 20 + 20 + 5);
        assert_eq!(&out[0..4], &[2, 16, 0, 0]);
        assert_eq!(&out[20..24], &[3, 16, 0, 0]);
        assert_eq!(&out[40..45], &[4, 1, 0, 0, 0]);
        let back = NsDescriptorList::decode(&out).expect("valid");
        assert_eq!(back.nguid, Some([0x11; 16]));
        assert_eq!(back.csi, Some(0));
        assert_eq!(back.eui64, None);
    }

    #[test]
    fn descriptor_errors() {
        assert!(NsDescriptorList::decode(&[1, 4, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(NsDescriptorList::decode(&[2, 16, 0, 0, 1]).is_err());
        let skip = NsDescriptorList::decode(&[9, 2, 0, 0, 7, 7, 4, 1, 0, 0, 2]).expect("skips");
        assert_eq!(skip.csi, Some(2));
    }

    proptest! {
        #[test]
        fn descriptor_round_trip(e: Option<[u8; 8]>, g: Option<[u8; 16]>, u: Option<[u8; 16]>, c: Option<u8>) {
            let mut out = [0u8; IDENTIFY_DATA_SIZE];
            NsDescriptorList::encode(e, g, u, c, &mut out);
            let l = NsDescriptorList::decode(&out).expect("valid");
            prop_assert_eq!(l, NsDescriptorList { eui64: e, nguid: g, uuid: u, csi: c });
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = NsDescriptorList::decode(&bytes);
            let _ = decode_ns_list(&bytes);
        }
    }
}
