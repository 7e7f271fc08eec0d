//! Asymmetric Namespace Access log page (LID 0Ch).
//!
//! Layout: a 16-byte header, then per ANA group a 32-byte descriptor
//! followed by its NSIDs (4 bytes each, none when RGO is set).

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::health::log_parse;
use crate::error::{NvmeError, Result};

/// ANA log header (16 bytes).
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
pub struct AnaLogHeader {
    /// Change count.
    pub chgcnt: U64,
    /// Number of ANA group descriptors.
    pub ngrps: U16,
    /// Reserved.
    pub rsvd10: [u8; 6],
}

const _: () = assert!(size_of::<AnaLogHeader>() == 16);
const _: () = assert!(offset_of!(AnaLogHeader, ngrps) == 8);
log_parse!(AnaLogHeader, "ANA log header");

/// ANA group descriptor (32 bytes, followed by `nnsids` NSIDs).
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
pub struct AnaGroupDescriptor {
    /// ANA group identifier.
    pub anagrpid: U32,
    /// Number of NSIDs that follow.
    pub nnsids: U32,
    /// Change count.
    pub chgcnt: U64,
    /// ANA state (bits 3:0).
    pub state: u8,
    /// Reserved.
    pub rsvd17: [u8; 15],
}

const _: () = assert!(size_of::<AnaGroupDescriptor>() == 32);
const _: () = assert!(offset_of!(AnaGroupDescriptor, chgcnt) == 8);
const _: () = assert!(offset_of!(AnaGroupDescriptor, state) == 16);
log_parse!(AnaGroupDescriptor, "ANA group descriptor");

/// ANA states.
pub mod ana_state {
    /// Optimized.
    pub const OPTIMIZED: u8 = 0x01;
    /// Non-optimized.
    pub const NON_OPTIMIZED: u8 = 0x02;
    /// Inaccessible.
    pub const INACCESSIBLE: u8 = 0x03;
    /// Persistent loss.
    pub const PERSISTENT_LOSS: u8 = 0x04;
    /// Change.
    pub const CHANGE: u8 = 0x0F;
}

/// Get Log Page LSP bit 0 for the ANA log: Return Groups Only (no NSIDs).
pub const ANA_LSP_RGO: u8 = 0x01;

/// One ANA group to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnaGroup<'a> {
    /// Group identifier.
    pub anagrpid: u32,
    /// Group change count.
    pub chgcnt: u64,
    /// ANA state, see [`ana_state`].
    pub state: u8,
    /// Attached NSIDs of the group, ascending.
    pub nsids: &'a [u32],
}

/// Builds the ANA log into `out` (cleared first). With `rgo` the NSID lists
/// are left out.
pub fn encode_ana_log(
    chgcnt: u64,
    groups: &[AnaGroup<'_>],
    rgo: bool,
    out: &mut Vec<u8>,
) -> Result<()> {
    let ngrps = u16::try_from(groups.len()).map_err(|_| NvmeError::InvalidField {
        field: "ANA group count",
        value: groups.len() as u64,
    })?;
    out.clear();
    let header = AnaLogHeader {
        chgcnt: chgcnt.into(),
        ngrps: ngrps.into(),
        rsvd10: [0; 6],
    };
    out.extend_from_slice(header.as_bytes());
    for g in groups {
        let nsids: &[u32] = if rgo { &[] } else { g.nsids };
        let nnsids = u32::try_from(nsids.len()).map_err(|_| NvmeError::InvalidField {
            field: "ANA group nsid count",
            value: nsids.len() as u64,
        })?;
        let desc = AnaGroupDescriptor {
            anagrpid: g.anagrpid.into(),
            nnsids: nnsids.into(),
            chgcnt: g.chgcnt.into(),
            state: g.state & 0xF,
            rsvd17: [0; 15],
        };
        out.extend_from_slice(desc.as_bytes());
        for nsid in nsids {
            out.extend_from_slice(&nsid.to_le_bytes());
        }
    }
    Ok(())
}

/// A decoded ANA group (host side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaGroupInfo {
    /// Descriptor.
    pub descriptor: AnaGroupDescriptor,
    /// NSIDs listed after it.
    pub nsids: Vec<u32>,
}

/// Decodes an ANA log.
pub fn decode_ana_log(bytes: &[u8]) -> Result<(AnaLogHeader, Vec<AnaGroupInfo>)> {
    let header = AnaLogHeader::parse(bytes)?;
    let mut rest = &bytes[AnaLogHeader::SIZE..];
    let mut groups = Vec::new();
    for _ in 0..header.ngrps.get() {
        let descriptor = AnaGroupDescriptor::parse(rest)?;
        rest = &rest[AnaGroupDescriptor::SIZE..];
        let n = descriptor.nnsids.get() as usize;
        let len = n
            .checked_mul(4)
            .filter(|&l| l <= rest.len())
            .ok_or(NvmeError::TooShort {
                what: "ANA group nsid list",
                needed: n.saturating_mul(4),
                got: rest.len(),
            })?;
        let nsids = rest[..len]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        rest = &rest[len..];
        groups.push(AnaGroupInfo { descriptor, nsids });
    }
    Ok((header, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn image() {
        let mut out = Vec::new();
        let groups = [
            AnaGroup {
                anagrpid: 1,
                chgcnt: 5,
                state: ana_state::OPTIMIZED,
                nsids: &[1, 2],
            },
            AnaGroup {
                anagrpid: 2,
                chgcnt: 6,
                state: ana_state::INACCESSIBLE,
                nsids: &[],
            },
        ];
        encode_ana_log(9, &groups, false, &mut out).expect("small");
        assert_eq!(out.len(), 16 + 32 + 8 + 32);
        assert_eq!(&out[8..10], &[2, 0]);
        assert_eq!(&out[16..24], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(out[32], 1);
        assert_eq!(&out[48..56], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(out[56 + 16], 3);
        let (h, g) = decode_ana_log(&out).expect("valid");
        assert_eq!(h.chgcnt.get(), 9);
        assert_eq!(g[0].nsids, vec![1, 2]);
        encode_ana_log(9, &groups, true, &mut out).expect("small");
        assert_eq!(out.len(), 16 + 64);
        assert!(decode_ana_log(&out[..40]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(chg: u64, gs in proptest::collection::vec((any::<u32>(), any::<u64>(), 0u8..16,
                      proptest::collection::vec(any::<u32>(), 0..8)), 0..6)) {
            let groups: Vec<AnaGroup<'_>> = gs.iter().map(|(id, c, s, n)| AnaGroup {
                anagrpid: *id, chgcnt: *c, state: *s, nsids: n }).collect();
            let mut out = Vec::new();
            encode_ana_log(chg, &groups, false, &mut out).expect("small");
            let (h, back) = decode_ana_log(&out).expect("valid");
            prop_assert_eq!(h.ngrps.get() as usize, groups.len());
            for (g, b) in groups.iter().zip(&back) {
                prop_assert_eq!(b.descriptor.anagrpid.get(), g.anagrpid);
                prop_assert_eq!(b.descriptor.state, g.state);
                prop_assert_eq!(&b.nsids[..], g.nsids);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_ana_log(&bytes);
        }
    }
}
