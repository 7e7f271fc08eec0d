//! Typed views of NVM command set I/O commands and their data structures
//! (Dataset Management ranges, Copy source ranges).

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::command::{bits, opcode, Command};
use crate::error::{NvmeError, Result};

/// Read (02h), Write (01h), Compare (05h) and Write Zeroes (08h): the
/// fields they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadWrite {
    /// Namespace identifier.
    pub nsid: u32,
    /// Starting LBA (CDW10-11).
    pub slba: u64,
    /// Number of logical blocks, 0-based (CDW12 15:0).
    pub nlb: u16,
    /// Deallocate (Write Zeroes only, CDW12 bit 25).
    pub deac: bool,
    /// Protection information field (CDW12 29:26).
    pub prinfo: u8,
    /// Force Unit Access (CDW12 bit 30).
    pub fua: bool,
    /// Limited Retry (CDW12 bit 31).
    pub lr: bool,
    /// Dataset Management hints (CDW13 7:0, Read/Write).
    pub dsm: u8,
}

impl ReadWrite {
    /// `blocks` (1 to 65,536) blocks at `slba` of namespace `nsid`, no flags.
    pub fn blocks(nsid: u32, slba: u64, blocks: u32) -> ReadWrite {
        ReadWrite {
            nsid,
            slba,
            nlb: blocks.saturating_sub(1) as u16,
            ..ReadWrite::default()
        }
    }

    /// Decodes the fields from `cmd` (no opcode check).
    pub fn parse(cmd: &Command) -> ReadWrite {
        let cdw12 = cmd.cdw12.get();
        ReadWrite {
            nsid: cmd.nsid.get(),
            slba: u64::from(cmd.cdw10.get()) | (u64::from(cmd.cdw11.get()) << 32),
            nlb: bits(cdw12, 0, 16) as u16,
            deac: bits(cdw12, 25, 1) != 0,
            prinfo: bits(cdw12, 26, 4) as u8,
            fua: bits(cdw12, 30, 1) != 0,
            lr: bits(cdw12, 31, 1) != 0,
            dsm: bits(cmd.cdw13.get(), 0, 8) as u8,
        }
    }

    /// Number of logical blocks, 1-based.
    pub fn block_count(&self) -> u32 {
        u32::from(self.nlb) + 1
    }

    /// One past the last LBA, or `None` on overflow (which nvmf reports as
    /// LBA Out of Range).
    pub fn end_lba(&self) -> Option<u64> {
        self.slba.checked_add(u64::from(self.block_count()))
    }

    /// Builds the command with `opcode`.
    pub fn to_command(&self, opcode: u8, cid: u16) -> Command {
        let mut cmd = Command::new(opcode, cid);
        cmd.nsid = self.nsid.into();
        cmd.cdw10 = (self.slba as u32).into();
        cmd.cdw11 = ((self.slba >> 32) as u32).into();
        cmd.cdw12 = (u32::from(self.nlb)
            | (u32::from(self.deac) << 25)
            | (u32::from(self.prinfo & 0xF) << 26)
            | (u32::from(self.fua) << 30)
            | (u32::from(self.lr) << 31))
            .into();
        cmd.cdw13 = u32::from(self.dsm).into();
        cmd
    }
}

/// A Dataset Management range (16 bytes).
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
pub struct DsmRange {
    /// Context attributes.
    pub cattr: U32,
    /// Length in logical blocks (1-based).
    pub nlb: U32,
    /// Starting LBA.
    pub slba: U64,
}

const _: () = assert!(size_of::<DsmRange>() == 16);
const _: () = assert!(offset_of!(DsmRange, nlb) == 4);
const _: () = assert!(offset_of!(DsmRange, slba) == 8);

impl DsmRange {
    /// Size in bytes.
    pub const SIZE: usize = 16;

    /// A range of `nlb` blocks at `slba`.
    pub fn new(slba: u64, nlb: u32) -> DsmRange {
        DsmRange {
            cattr: U32::new(0),
            nlb: U32::new(nlb),
            slba: U64::new(slba),
        }
    }

    /// Decodes `count` ranges from `bytes`.
    pub fn parse_list(bytes: &[u8], count: usize) -> Result<&[DsmRange]> {
        <[DsmRange]>::ref_from_prefix_with_elems(bytes, count)
            .map(|(r, _)| r)
            .map_err(|_| NvmeError::TooShort {
                what: "dataset management ranges",
                needed: count.saturating_mul(Self::SIZE),
                got: bytes.len(),
            })
    }
}

/// Dataset Management (09h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatasetManagement {
    /// Namespace identifier.
    pub nsid: u32,
    /// Number of ranges, 0-based (CDW10 7:0).
    pub nr: u8,
    /// Integral dataset for read (CDW11 bit 0).
    pub idr: bool,
    /// Integral dataset for write (CDW11 bit 1).
    pub idw: bool,
    /// Deallocate (CDW11 bit 2).
    pub ad: bool,
}

impl DatasetManagement {
    /// Decodes the fields from `cmd`.
    pub fn parse(cmd: &Command) -> DatasetManagement {
        let cdw11 = cmd.cdw11.get();
        DatasetManagement {
            nsid: cmd.nsid.get(),
            nr: bits(cmd.cdw10.get(), 0, 8) as u8,
            idr: bits(cdw11, 0, 1) != 0,
            idw: bits(cdw11, 1, 1) != 0,
            ad: bits(cdw11, 2, 1) != 0,
        }
    }

    /// Number of ranges, 1-based.
    pub fn range_count(&self) -> usize {
        usize::from(self.nr) + 1
    }

    /// Bytes of range data the command carries.
    pub fn data_len(&self) -> usize {
        self.range_count() * DsmRange::SIZE
    }

    /// Builds the command.
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::io::DATASET_MANAGEMENT, cid);
        cmd.nsid = self.nsid.into();
        cmd.cdw10 = u32::from(self.nr).into();
        cmd.cdw11 =
            (u32::from(self.idr) | (u32::from(self.idw) << 1) | (u32::from(self.ad) << 2)).into();
        cmd
    }
}

/// Copy (19h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyCommand {
    /// Namespace identifier.
    pub nsid: u32,
    /// Starting destination LBA (CDW10-11).
    pub sdlba: u64,
    /// Number of source ranges, 0-based (CDW12 7:0).
    pub nr: u8,
    /// Descriptor format (CDW12 11:8); 0 = [`CopySourceRange`].
    pub desfmt: u8,
    /// Protection information for reads (CDW12 15:12).
    pub prinfor: u8,
    /// Command extension type (CDW12 19:16).
    pub cetype: u8,
    /// Directive type (CDW12 23:20).
    pub dtype: u8,
    /// Storage Tag Check Write (CDW12 bit 24).
    pub stcw: bool,
    /// Storage Tag Check Read (CDW12 bit 25).
    pub stcr: bool,
    /// Protection information for writes (CDW12 29:26).
    pub prinfow: u8,
    /// Force Unit Access (CDW12 bit 30).
    pub fua: bool,
    /// Limited Retry (CDW12 bit 31).
    pub lr: bool,
}

/// Copy descriptor format 0 (32-byte source ranges).
pub const COPY_DESC_FORMAT_0: u8 = 0;

/// Why a Copy command's source range list was refused by [`CopyCommand::source_ranges`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyRangeError {
    /// DESFMT names a descriptor format other than 0h (the only one parsed here): the target
    /// answers Invalid Field in Command (NVM Command Set, Copy command).
    UnsupportedFormat(u8),
    /// The data holds fewer than NR + 1 descriptors: Data SGL Length Invalid.
    TooShort { needed: usize, got: usize },
}

impl CopyCommand {
    /// Decodes the fields from `cmd`.
    pub fn parse(cmd: &Command) -> CopyCommand {
        let cdw12 = cmd.cdw12.get();
        CopyCommand {
            nsid: cmd.nsid.get(),
            sdlba: u64::from(cmd.cdw10.get()) | (u64::from(cmd.cdw11.get()) << 32),
            nr: bits(cdw12, 0, 8) as u8,
            desfmt: bits(cdw12, 8, 4) as u8,
            prinfor: bits(cdw12, 12, 4) as u8,
            cetype: bits(cdw12, 16, 4) as u8,
            dtype: bits(cdw12, 20, 4) as u8,
            stcw: bits(cdw12, 24, 1) != 0,
            stcr: bits(cdw12, 25, 1) != 0,
            prinfow: bits(cdw12, 26, 4) as u8,
            fua: bits(cdw12, 30, 1) != 0,
            lr: bits(cdw12, 31, 1) != 0,
        }
    }

    /// Number of source ranges, 1-based.
    pub fn range_count(&self) -> usize {
        usize::from(self.nr) + 1
    }

    /// Bytes of descriptor data the command carries (format 0: 32 per range).
    pub fn data_len(&self) -> usize {
        self.range_count() * CopySourceRange::SIZE
    }

    /// The command's source ranges from its `data`: the descriptor format must be 0h and
    /// `data` must hold all NR + 1 entries (trailing bytes are ignored).
    pub fn source_ranges<'a>(
        &self,
        data: &'a [u8],
    ) -> core::result::Result<&'a [CopySourceRange], CopyRangeError> {
        if self.desfmt != COPY_DESC_FORMAT_0 {
            return Err(CopyRangeError::UnsupportedFormat(self.desfmt));
        }
        CopySourceRange::parse_list(data, self.range_count()).map_err(|_| {
            CopyRangeError::TooShort {
                needed: self.data_len(),
                got: data.len(),
            }
        })
    }

    /// Builds the command.
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::io::COPY, cid);
        cmd.nsid = self.nsid.into();
        cmd.cdw10 = (self.sdlba as u32).into();
        cmd.cdw11 = ((self.sdlba >> 32) as u32).into();
        cmd.cdw12 = (u32::from(self.nr)
            | (u32::from(self.desfmt & 0xF) << 8)
            | (u32::from(self.prinfor & 0xF) << 12)
            | (u32::from(self.cetype & 0xF) << 16)
            | (u32::from(self.dtype & 0xF) << 20)
            | (u32::from(self.stcw) << 24)
            | (u32::from(self.stcr) << 25)
            | (u32::from(self.prinfow & 0xF) << 26)
            | (u32::from(self.fua) << 30)
            | (u32::from(self.lr) << 31))
            .into();
        cmd
    }
}

/// Copy source range entry, descriptor format 0 (32 bytes).
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
pub struct CopySourceRange {
    /// Reserved.
    pub rsvd0: [u8; 8],
    /// Starting LBA.
    pub slba: U64,
    /// Number of logical blocks, 0-based (Read Parameters bits 15:0).
    pub nlb: U16,
    /// Read Parameters bits 31:16 (bits 3:0: command extension type).
    pub rpars_hi: U16,
    /// Command extension value.
    pub cev: U16,
    /// Source options (format 0: reserved; FCO is bit 15 in format 2h only).
    pub sopt: U16,
    /// Expected logical block tags (expected initial logical block reference tag).
    pub eilbrt: U32,
    /// Expected logical block application tag.
    pub elbat: U16,
    /// Expected logical block application tag mask.
    pub elbatm: U16,
}

const _: () = assert!(size_of::<CopySourceRange>() == 32);
const _: () = assert!(offset_of!(CopySourceRange, slba) == 8);
const _: () = assert!(offset_of!(CopySourceRange, nlb) == 16);
const _: () = assert!(offset_of!(CopySourceRange, rpars_hi) == 18);
const _: () = assert!(offset_of!(CopySourceRange, cev) == 20);
const _: () = assert!(offset_of!(CopySourceRange, sopt) == 22);
const _: () = assert!(offset_of!(CopySourceRange, eilbrt) == 24);
const _: () = assert!(offset_of!(CopySourceRange, elbat) == 28);
const _: () = assert!(offset_of!(CopySourceRange, elbatm) == 30);

impl CopySourceRange {
    /// Size in bytes.
    pub const SIZE: usize = 32;

    /// A range of `blocks` (1-based, at most 65536) at `slba`.
    pub fn new(slba: u64, blocks: u32) -> Result<CopySourceRange> {
        let nlb = blocks
            .checked_sub(1)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or(NvmeError::InvalidField {
                field: "copy range length",
                value: u64::from(blocks),
            })?;
        Ok(CopySourceRange {
            slba: U64::new(slba),
            nlb: U16::new(nlb),
            ..Default::default()
        })
    }

    /// Number of logical blocks, 1-based.
    pub fn block_count(&self) -> u32 {
        u32::from(self.nlb.get()) + 1
    }

    /// Starting LBA.
    pub fn start_lba(&self) -> u64 {
        self.slba.get()
    }

    /// One past the last LBA, or `None` on overflow (LBA Out of Range).
    pub fn end_lba(&self) -> Option<u64> {
        self.slba.get().checked_add(u64::from(self.block_count()))
    }

    /// Decodes `count` entries from `bytes`.
    pub fn parse_list(bytes: &[u8], count: usize) -> Result<&[CopySourceRange]> {
        <[CopySourceRange]>::ref_from_prefix_with_elems(bytes, count)
            .map(|(r, _)| r)
            .map_err(|_| NvmeError::TooShort {
                what: "copy source ranges",
                needed: count.saturating_mul(Self::SIZE),
                got: bytes.len(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use zerocopy::IntoBytes;

    #[test]
    fn write_zeroes_image() {
        let mut cmd = Command::new(opcode::io::WRITE_ZEROES, 3);
        cmd.nsid = 1.into();
        cmd.cdw10 = 0x1000.into();
        cmd.cdw12 = (0x4200_00FF_u32).into();
        let w = ReadWrite::parse(&cmd);
        assert_eq!((w.slba, w.nlb, w.block_count()), (0x1000, 0xFF, 256));
        assert!(w.fua && w.deac && !w.lr);
        assert_eq!(w.end_lba(), Some(0x1100));
        let overflow = ReadWrite {
            slba: u64::MAX,
            ..w
        };
        assert_eq!(overflow.end_lba(), None);
    }

    #[test]
    fn dsm_ranges() {
        let ranges = [DsmRange::new(0, 8), DsmRange::new(100, 16)];
        let bytes = ranges.as_bytes();
        assert_eq!(&bytes[4..8], &[8, 0, 0, 0]);
        assert_eq!(&bytes[24..32], &[100, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(DsmRange::parse_list(bytes, 2).expect("32 bytes"), &ranges);
        assert!(DsmRange::parse_list(bytes, 3).is_err());
        assert!(DsmRange::parse_list(bytes, usize::MAX).is_err());
        let mut cmd = Command::new(opcode::io::DATASET_MANAGEMENT, 1);
        cmd.cdw10 = 1.into();
        cmd.cdw11 = 4.into();
        let d = DatasetManagement::parse(&cmd);
        assert!(d.ad);
        assert_eq!((d.range_count(), d.data_len()), (2, 32));
    }

    #[test]
    fn copy_ranges() {
        let r = CopySourceRange::new(0x20, 4).expect("valid");
        assert_eq!(&r.as_bytes()[8..18], &[0x20, 0, 0, 0, 0, 0, 0, 0, 3, 0]);
        assert!(CopySourceRange::new(0, 0).is_err());
        assert!(CopySourceRange::new(0, 65537).is_err());
        assert_eq!(
            CopySourceRange::new(0, 65536).expect("max").block_count(),
            65536
        );
        let max = CopySourceRange::new(u64::MAX, 1).expect("valid");
        assert_eq!(max.end_lba(), None);
        assert_eq!(r.end_lba(), Some(0x24));
    }

    #[test]
    fn copy_cdw12_and_descriptor_checks() {
        let mut cmd = Command::new(opcode::io::COPY, 9);
        // NR 1, DESFMT 0, PRINFOR 0x5, CETYPE 0x3, DTYPE 0x2, STCW, STCR, PRINFOW 0x9, FUA, LR.
        cmd.cdw12 = (0x01
            | (0x5 << 12)
            | (0x3 << 16)
            | (0x2 << 20)
            | (1 << 24)
            | (1 << 25)
            | (0x9 << 26)
            | (1 << 30)
            | (1 << 31))
            .into();
        let c = CopyCommand::parse(&cmd);
        assert_eq!(
            (c.nr, c.desfmt, c.prinfor, c.cetype, c.dtype),
            (1, 0, 5, 3, 2)
        );
        assert!(c.stcw && c.stcr && c.fua && c.lr);
        assert_eq!(c.prinfow, 9);
        assert_eq!((c.range_count(), c.data_len()), (2, 64));
        let list = [
            CopySourceRange::new(10, 2).expect("valid"),
            CopySourceRange::new(40, 8).expect("valid"),
        ];
        let bytes = list.as_bytes();
        assert_eq!(c.source_ranges(bytes).expect("two ranges"), &list);
        assert_eq!(
            c.source_ranges(&bytes[..40]),
            Err(CopyRangeError::TooShort {
                needed: 64,
                got: 40
            })
        );
        let f1 = CopyCommand { desfmt: 1, ..c };
        assert_eq!(
            f1.source_ranges(bytes),
            Err(CopyRangeError::UnsupportedFormat(1))
        );
    }

    proptest! {
        #[test]
        fn rw_round_trip(nsid: u32, slba: u64, nlb: u16, deac: bool, prinfo in 0u8..16, fua: bool, lr: bool, dsm: u8) {
            let r = ReadWrite { nsid, slba, nlb, deac, prinfo, fua, lr, dsm };
            prop_assert_eq!(ReadWrite::parse(&r.to_command(opcode::io::WRITE, 1)), r);
        }

        #[test]
        fn dsm_round_trip(nsid: u32, nr: u8, idr: bool, idw: bool, ad: bool) {
            let d = DatasetManagement { nsid, nr, idr, idw, ad };
            prop_assert_eq!(DatasetManagement::parse(&d.to_command(1)), d);
        }

        #[test]
        fn copy_round_trip(nsid: u32, sdlba: u64, nr: u8, desfmt in 0u8..16, prinfor in 0u8..16,
                           cetype in 0u8..16, dtype in 0u8..16, stcw: bool, stcr: bool,
                           prinfow in 0u8..16, fua: bool, lr: bool) {
            let c = CopyCommand { nsid, sdlba, nr, desfmt, prinfor, cetype, dtype, stcw, stcr,
                                  prinfow, fua, lr };
            prop_assert_eq!(CopyCommand::parse(&c.to_command(1)), c);
        }

        #[test]
        fn range_lists_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), count in 0usize..300) {
            if let Ok(r) = DsmRange::parse_list(&bytes, count) {
                prop_assert_eq!(r.len(), count);
            }
            if let Ok(r) = CopySourceRange::parse_list(&bytes, count) {
                prop_assert_eq!(r.len(), count);
            }
        }
    }
}
