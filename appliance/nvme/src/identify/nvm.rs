//! I/O command set specific Identify structures for the NVM command set
//! (CSI 00h) and the Identify I/O Command Set data structure (CNS 1Ch).

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{NvmeError, Result};

/// Identify Controller, NVM command set specific (CNS 06h, CSI 00h).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyNvmController {
    /// Verify Size Limit (2^n units of CAP.MPSMIN, 0 = no limit).
    pub vsl: u8,
    /// Write Zeroes Size Limit.
    pub wzsl: u8,
    /// Write Uncorrectable Size Limit.
    pub wusl: u8,
    /// Dataset Management Ranges Limit.
    pub dmrl: u8,
    /// Dataset Management Range Size Limit (logical blocks).
    pub dmrsl: U32,
    /// Dataset Management Size Limit (logical blocks).
    pub dmsl: U64,
    /// Reserved.
    pub rsvd16: [u8; 4080],
}

const _: () = assert!(size_of::<IdentifyNvmController>() == 4096);
const _: () = assert!(offset_of!(IdentifyNvmController, dmrl) == 3);
const _: () = assert!(offset_of!(IdentifyNvmController, dmrsl) == 4);
const _: () = assert!(offset_of!(IdentifyNvmController, dmsl) == 8);

/// Identify Namespace, NVM command set specific (CNS 05h, CSI 00h).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyNvmNamespace {
    /// Logical Block Storage Tag Mask.
    pub lbstm: U64,
    /// Protection Information Capabilities.
    pub pic: u8,
    /// Reserved.
    pub rsvd9: [u8; 3],
    /// Extended LBA Formats 0..=63.
    pub elbaf: [U32; 64],
    /// Reserved.
    pub rsvd268: [u8; 3828],
}

const _: () = assert!(size_of::<IdentifyNvmNamespace>() == 4096);
const _: () = assert!(offset_of!(IdentifyNvmNamespace, pic) == 8);
const _: () = assert!(offset_of!(IdentifyNvmNamespace, elbaf) == 12);

/// Identify I/O Command Set data structure (CNS 1Ch): 512 command set
/// combination vectors; bit n of a vector = CSI n.
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IoCommandSetVectors {
    /// The vectors.
    pub vectors: [U64; 512],
}

const _: () = assert!(size_of::<IoCommandSetVectors>() == 4096);

/// Vector bit for the NVM command set.
pub const IOCS_VECTOR_NVM: u64 = 1 << 0;

macro_rules! zeroed_parse {
    ($t:ty, $name:literal) => {
        impl $t {
            /// A zeroed structure.
            pub fn zeroed() -> $t {
                <$t>::new_zeroed()
            }

            /// Decodes from the first 4096 bytes of `bytes`.
            pub fn parse(bytes: &[u8]) -> Result<$t> {
                <$t>::read_from_prefix(bytes)
                    .map(|(d, _)| d)
                    .map_err(|_| NvmeError::TooShort {
                        what: $name,
                        needed: size_of::<$t>(),
                        got: bytes.len(),
                    })
            }
        }
    };
}

zeroed_parse!(IdentifyNvmController, "identify NVM controller");
zeroed_parse!(IdentifyNvmNamespace, "identify NVM namespace");
zeroed_parse!(IoCommandSetVectors, "identify I/O command set");

impl IoCommandSetVectors {
    /// The structure a controller supporting only the NVM command set returns.
    pub fn nvm_only() -> IoCommandSetVectors {
        let mut v = IoCommandSetVectors::zeroed();
        v.vectors[0] = IOCS_VECTOR_NVM.into();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts() {
        let mut c = IdentifyNvmController::zeroed();
        c.dmrl = 1;
        c.dmrsl = 0xFFFF_FFFF.into();
        c.dmsl = 7.into();
        let b = c.as_bytes();
        assert_eq!(b[3], 1);
        assert_eq!(&b[4..8], &[0xFF; 4]);
        assert_eq!(b[8], 7);
        let v = IoCommandSetVectors::nvm_only();
        assert_eq!(&v.as_bytes()[..9], &[1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut n = IdentifyNvmNamespace::zeroed();
        n.elbaf[1] = 5.into();
        assert_eq!(n.as_bytes()[16], 5);
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 4096)) {
            let v = IdentifyNvmController::parse(&bytes).expect("4096");
            prop_assert_eq!(v.as_bytes(), &bytes[..]);
            let v = IdentifyNvmNamespace::parse(&bytes).expect("4096");
            prop_assert_eq!(v.as_bytes(), &bytes[..]);
            let v = IoCommandSetVectors::parse(&bytes).expect("4096");
            prop_assert_eq!(v.as_bytes(), &bytes[..]);
        }
    }
}
