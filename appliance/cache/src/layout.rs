//! Where things are on the cache device: a header block, the directory (one 32-byte record
//! per slot), then the slots, `line_blocks` blocks each.

use ferrite_bdev::BdevError;

use crate::table::RECORD_BYTES;

const MAGIC: &[u8; 8] = b"FRCACHE1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 52;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u32,
    pub line_blocks: u32,
    pub slots: u32,
    /// First directory block (after the header).
    pub dir_start: u64,
    pub dir_blocks: u64,
    /// First block of slot 0.
    pub data_start: u64,
    /// Lines of the backing device (the last may be short).
    pub lines: u64,
    pub backing_blocks: u64,
    pub backing_uuid: [u8; 16],
}

impl Layout {
    /// The layout for a cache device of `cache_blocks` blocks over a backing device.
    pub fn compute(
        block_size: u32,
        line_blocks: u32,
        cache_blocks: u64,
        backing_blocks: u64,
        backing_uuid: [u8; 16],
    ) -> Result<Layout, BdevError> {
        let rpb = u64::from(block_size) / RECORD_BYTES as u64;
        let lb = u64::from(line_blocks);
        let usable = cache_blocks.saturating_sub(1);
        // Each slot costs its line plus 1/rpb of a directory block.
        let mut slots = usable * rpb / (rpb * lb + 1);
        let fits = |s: u64| 1 + s.div_ceil(rpb) + s * lb <= cache_blocks;
        while slots > 0 && !fits(slots) {
            slots -= 1;
        }
        let slots = slots.min(u64::from(u32::MAX - 1));
        if slots < 2 {
            return Err(BdevError::InvalidConfig(format!(
                "cache device of {cache_blocks} blocks holds fewer than 2 lines of {line_blocks} blocks"
            )));
        }
        let dir_blocks = slots.div_ceil(rpb);
        Ok(Layout {
            block_size,
            line_blocks,
            slots: slots as u32,
            dir_start: 1,
            dir_blocks,
            data_start: 1 + dir_blocks,
            lines: backing_blocks.div_ceil(lb),
            backing_blocks,
            backing_uuid,
        })
    }

    pub fn records_per_block(&self) -> u64 {
        u64::from(self.block_size) / RECORD_BYTES as u64
    }

    pub fn slot_lba(&self, slot: u32) -> u64 {
        self.data_start + u64::from(slot) * u64::from(self.line_blocks)
    }

    pub fn line_lba(&self, line: u64) -> u64 {
        line * u64::from(self.line_blocks)
    }

    /// Blocks of `line` inside the backing device.
    pub fn line_len(&self, line: u64) -> u32 {
        (self.backing_blocks - self.line_lba(line)).min(u64::from(self.line_blocks)) as u32
    }

    pub fn encode_header(&self, out: &mut [u8]) {
        out.fill(0);
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        out[16..20].copy_from_slice(&self.line_blocks.to_le_bytes());
        out[20..24].copy_from_slice(&self.slots.to_le_bytes());
        out[24..32].copy_from_slice(&self.backing_blocks.to_le_bytes());
        out[32..48].copy_from_slice(&self.backing_uuid);
        let crc = crc32c::crc32c(&out[..48]);
        out[48..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    }

    /// What a header block says: `None` when it is not a cache header at all (a blank or
    /// foreign device); an error when it is one this version cannot read.
    pub fn decode_header(block: &[u8]) -> Result<Option<HeaderInfo>, String> {
        if block.len() < HEADER_BYTES || &block[..8] != MAGIC {
            return Ok(None);
        }
        let u32_at = |o: usize| u32::from_le_bytes(block[o..o + 4].try_into().expect("4 bytes"));
        if crc32c::crc32c(&block[..48]) != u32_at(48) {
            return Err("cache header fails its checksum".into());
        }
        if u32_at(8) != VERSION {
            return Err(format!(
                "cache header version {} is not {VERSION}",
                u32_at(8)
            ));
        }
        Ok(Some(HeaderInfo {
            block_size: u32_at(12),
            line_blocks: u32_at(16),
            slots: u32_at(20),
            backing_blocks: u64::from_le_bytes(block[24..32].try_into().expect("8 bytes")),
            backing_uuid: block[32..48].try_into().expect("16 bytes"),
        }))
    }

    pub fn header_info(&self) -> HeaderInfo {
        HeaderInfo {
            block_size: self.block_size,
            line_blocks: self.line_blocks,
            slots: self.slots,
            backing_blocks: self.backing_blocks,
            backing_uuid: self.backing_uuid,
        }
    }
}

/// The identity a cache header records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    pub block_size: u32,
    pub line_blocks: u32,
    pub slots: u32,
    pub backing_blocks: u64,
    pub backing_uuid: [u8; 16],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_fits_the_device() {
        for (bs, lb, blocks) in [
            (512u32, 8u32, 10_000u64),
            (4096, 1, 100),
            (4096, 16, 1 << 20),
        ] {
            let l = Layout::compute(bs, lb, blocks, 1 << 30, [1; 16]).expect("fits");
            assert!(l.slot_lba(l.slots) <= blocks, "{l:?}");
            assert!(l.dir_blocks * l.records_per_block() >= u64::from(l.slots));
            // Not wasteful: one more slot would not fit.
            let one_more = 1
                + (u64::from(l.slots) + 1).div_ceil(l.records_per_block())
                + (u64::from(l.slots) + 1) * u64::from(lb);
            assert!(one_more > blocks, "{l:?}");
        }
        assert!(Layout::compute(4096, 16, 20, 100, [0; 16]).is_err());
    }

    #[test]
    fn header_round_trip_and_refusals() {
        let l = Layout::compute(512, 8, 4096, 777, [9; 16]).expect("fits");
        assert_eq!(l.lines, 98);
        assert_eq!(l.line_len(97), 1);
        let mut b = vec![0u8; 512];
        l.encode_header(&mut b);
        assert_eq!(Layout::decode_header(&b), Ok(Some(l.header_info())));
        assert_eq!(Layout::decode_header(&[0u8; 512]), Ok(None));
        b[30] ^= 1;
        assert!(Layout::decode_header(&b).is_err());
    }
}
