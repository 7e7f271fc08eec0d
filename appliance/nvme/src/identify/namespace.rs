//! Identify Namespace data structure (CNS 00h, NVM command set, 4096 bytes).

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{NvmeError, Result};

/// Identify Namespace data structure (NVM command set).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyNamespace {
    /// Namespace Size (logical blocks).
    pub nsze: U64,
    /// Namespace Capacity (logical blocks).
    pub ncap: U64,
    /// Namespace Utilization (logical blocks).
    pub nuse: U64,
    /// Namespace Features.
    pub nsfeat: u8,
    /// Number of LBA Formats (0-based).
    pub nlbaf: u8,
    /// Formatted LBA Size: bits 3:0 format index low, bit 4 extended
    /// metadata, bits 6:5 format index high.
    pub flbas: u8,
    /// Metadata Capabilities.
    pub mc: u8,
    /// End-to-end Data Protection Capabilities.
    pub dpc: u8,
    /// End-to-end Data Protection Type Settings.
    pub dps: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities.
    pub nmic: u8,
    /// Reservation Capabilities.
    pub rescap: u8,
    /// Format Progress Indicator.
    pub fpi: u8,
    /// Deallocate Logical Block Features.
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal.
    pub nawun: U16,
    /// Namespace Atomic Write Unit Power Fail.
    pub nawupf: U16,
    /// Namespace Atomic Compare & Write Unit.
    pub nacwu: U16,
    /// Namespace Atomic Boundary Size Normal.
    pub nabsn: U16,
    /// Namespace Atomic Boundary Offset.
    pub nabo: U16,
    /// Namespace Atomic Boundary Size Power Fail.
    pub nabspf: U16,
    /// Namespace Optimal I/O Boundary.
    pub noiob: U16,
    /// NVM Capacity (bytes, u128 LE).
    pub nvmcap: [u8; 16],
    /// Namespace Preferred Write Granularity (0-based).
    pub npwg: U16,
    /// Namespace Preferred Write Alignment (0-based).
    pub npwa: U16,
    /// Namespace Preferred Deallocate Granularity (0-based).
    pub npdg: U16,
    /// Namespace Preferred Deallocate Alignment (0-based).
    pub npda: U16,
    /// Namespace Optimal Write Size (0-based).
    pub nows: U16,
    /// Maximum Single Source Range Length (Copy).
    pub mssrl: U16,
    /// Maximum Copy Length (Copy).
    pub mcl: U32,
    /// Maximum Source Range Count (Copy, 0-based).
    pub msrc: u8,
    /// Reserved.
    pub rsvd81: [u8; 11],
    /// ANA Group Identifier.
    pub anagrpid: U32,
    /// Reserved.
    pub rsvd96: [u8; 3],
    /// Namespace Attributes (bit 0 write protected).
    pub nsattr: u8,
    /// NVM Set Identifier.
    pub nvmsetid: U16,
    /// Endurance Group Identifier.
    pub endgid: U16,
    /// Namespace Globally Unique Identifier.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBA Format Support 0..=63.
    pub lbaf: [U32; 64],
    /// Reserved.
    pub rsvd384: [u8; 2688],
    /// Vendor Specific.
    pub vs: [u8; 1024],
}

const _: () = assert!(size_of::<IdentifyNamespace>() == 4096);
const _: () = assert!(offset_of!(IdentifyNamespace, nsfeat) == 24);
const _: () = assert!(offset_of!(IdentifyNamespace, flbas) == 26);
const _: () = assert!(offset_of!(IdentifyNamespace, dlfeat) == 33);
const _: () = assert!(offset_of!(IdentifyNamespace, nawun) == 34);
const _: () = assert!(offset_of!(IdentifyNamespace, noiob) == 46);
const _: () = assert!(offset_of!(IdentifyNamespace, nvmcap) == 48);
const _: () = assert!(offset_of!(IdentifyNamespace, npwg) == 64);
const _: () = assert!(offset_of!(IdentifyNamespace, nows) == 72);
const _: () = assert!(offset_of!(IdentifyNamespace, mssrl) == 74);
const _: () = assert!(offset_of!(IdentifyNamespace, mcl) == 76);
const _: () = assert!(offset_of!(IdentifyNamespace, msrc) == 80);
const _: () = assert!(offset_of!(IdentifyNamespace, anagrpid) == 92);
const _: () = assert!(offset_of!(IdentifyNamespace, nsattr) == 99);
const _: () = assert!(offset_of!(IdentifyNamespace, nvmsetid) == 100);
const _: () = assert!(offset_of!(IdentifyNamespace, endgid) == 102);
const _: () = assert!(offset_of!(IdentifyNamespace, nguid) == 104);
const _: () = assert!(offset_of!(IdentifyNamespace, eui64) == 120);
const _: () = assert!(offset_of!(IdentifyNamespace, lbaf) == 128);
const _: () = assert!(offset_of!(IdentifyNamespace, vs) == 3072);

/// NSFEAT bits.
pub mod nsfeat {
    /// Thin provisioning (NCAP may be less than NSZE).
    pub const THIN_PROVISIONING: u8 = 1 << 0;
    /// NAWUN/NAWUPF/NACWU are defined.
    pub const NS_ATOMICS: u8 = 1 << 1;
    /// Deallocated or Unwritten Logical Block error supported.
    pub const DULBE: u8 = 1 << 2;
    /// NGUID/EUI64 are never reused.
    pub const UIDREUSE: u8 = 1 << 3;
    /// NPWG, NPWA, NPDG, NPDA and NOWS are defined.
    pub const OPTPERF: u8 = 1 << 4;
}

/// NSATTR bits.
pub mod nsattr {
    /// The namespace is write protected (Linux marks the disk read-only from it).
    pub const WRITE_PROTECTED: u8 = 1 << 0;
}

/// DLFEAT values.
pub mod dlfeat {
    /// Deallocated blocks read as zeroes (bits 2:0 = 001b).
    pub const READ_ZEROES: u8 = 0x01;
    /// Write Zeroes supports the Deallocate bit (bit 3).
    pub const WRITE_ZEROES_DEALLOCATE: u8 = 1 << 3;
}

/// One LBA format entry: MS bits 15:0, LBADS bits 23:16 (log2 of the data
/// size), RP bits 25:24 (relative performance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbaFormat {
    /// Metadata bytes per block.
    pub ms: u16,
    /// log2 of the logical block data size (9 = 512, 12 = 4096).
    pub lbads: u8,
    /// Relative performance (0 best .. 3 degraded).
    pub rp: u8,
}

impl LbaFormat {
    /// Encodes the 32-bit LBAF entry.
    pub const fn encode(self) -> u32 {
        self.ms as u32 | ((self.lbads as u32) << 16) | (((self.rp & 0x3) as u32) << 24)
    }

    /// Decodes a 32-bit LBAF entry.
    pub const fn decode(v: u32) -> LbaFormat {
        LbaFormat {
            ms: v as u16,
            lbads: (v >> 16) as u8,
            rp: ((v >> 24) & 0x3) as u8,
        }
    }

    /// Block size in bytes, if LBADS is in a sane range (9..=31).
    pub fn block_size(self) -> Option<u32> {
        (9..32).contains(&self.lbads).then(|| 1u32 << self.lbads)
    }
}

impl IdentifyNamespace {
    /// A zeroed structure (what an inactive NSID returns).
    pub fn zeroed() -> IdentifyNamespace {
        IdentifyNamespace::new_zeroed()
    }

    /// Decodes from the first 4096 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<IdentifyNamespace> {
        IdentifyNamespace::read_from_prefix(bytes)
            .map(|(d, _)| d)
            .map_err(|_| NvmeError::TooShort {
                what: "identify namespace",
                needed: size_of::<IdentifyNamespace>(),
                got: bytes.len(),
            })
    }

    /// Index of the formatted LBA format (FLBAS bits 3:0 and 6:5).
    pub fn lba_format_index(&self) -> usize {
        usize::from(self.flbas & 0xF) | (usize::from((self.flbas >> 5) & 0x3) << 4)
    }

    /// Sets FLBAS to format `index` (0..=63), keeping bit 4 (extended metadata).
    pub fn set_lba_format_index(&mut self, index: u8) {
        let index = index & 0x3F;
        self.flbas = (self.flbas & 0x10) | (index & 0xF) | ((index >> 4) << 5);
    }

    /// The LBA format in use.
    pub fn current_lba_format(&self) -> LbaFormat {
        LbaFormat::decode(self.lbaf[self.lba_format_index()].get())
    }

    /// Sets LBA format `index` (0..=63).
    pub fn set_lba_format(&mut self, index: usize, format: LbaFormat) -> Result<()> {
        let slot = self.lbaf.get_mut(index).ok_or(NvmeError::InvalidField {
            field: "lba format index",
            value: index as u64,
        })?;
        *slot = format.encode().into();
        Ok(())
    }

    /// Sets NVMCAP.
    pub fn set_nvmcap(&mut self, bytes: u128) {
        self.nvmcap = bytes.to_le_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        let mut ns = IdentifyNamespace::zeroed();
        ns.nsze = 0x10_0000.into();
        ns.ncap = 0x10_0000.into();
        ns.nsfeat = nsfeat::THIN_PROVISIONING;
        ns.dlfeat = dlfeat::READ_ZEROES | dlfeat::WRITE_ZEROES_DEALLOCATE;
        ns.anagrpid = 1.into();
        ns.nguid = [0xAB; 16];
        ns.eui64 = [0xCD; 8];
        ns.set_lba_format(
            0,
            LbaFormat {
                ms: 0,
                lbads: 9,
                rp: 0,
            },
        )
        .expect("index 0");
        ns.set_lba_format(
            1,
            LbaFormat {
                ms: 8,
                lbads: 12,
                rp: 2,
            },
        )
        .expect("index 1");
        ns.nlbaf = 1;
        ns.set_lba_format_index(1);
        let b = ns.as_bytes();
        assert_eq!(&b[0..8], &[0, 0, 0x10, 0, 0, 0, 0, 0]);
        assert_eq!(b[24], 1);
        assert_eq!(b[25], 1);
        assert_eq!(b[26], 1);
        assert_eq!(b[33], 0x09);
        assert_eq!(&b[92..96], &[1, 0, 0, 0]);
        assert_eq!(b[104], 0xAB);
        assert_eq!(b[120], 0xCD);
        assert_eq!(&b[128..132], &[0, 0, 9, 0]);
        assert_eq!(&b[132..136], &[8, 0, 12, 2]);
        assert_eq!(ns.current_lba_format().block_size(), Some(4096));
        assert!(ns.set_lba_format(64, LbaFormat::default()).is_err());
        ns.set_lba_format_index(0x25);
        assert_eq!(ns.flbas, 0x45);
        assert_eq!(ns.lba_format_index(), 0x25);
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 4096)) {
            let ns = IdentifyNamespace::parse(&bytes).expect("4096 bytes");
            prop_assert_eq!(ns.as_bytes(), &bytes[..]);
            let _ = ns.current_lba_format().block_size();
        }

        #[test]
        fn lbaf_round_trip(ms: u16, lbads: u8, rp in 0u8..4) {
            let f = LbaFormat { ms, lbads, rp };
            prop_assert_eq!(LbaFormat::decode(f.encode()), f);
        }
    }
}
