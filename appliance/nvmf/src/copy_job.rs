//! The progress of one Copy command (see `copy.rs`, which drives it from the poll group): which
//! range and block it is at, and the one backend operation it wants next. Pure state, so the
//! poll group can keep a job in a command slot without depending on the driver.

use ferrite_bdev::{BdevId, IoKind};
use ferrite_reactor::IoBuf;

use crate::MAX_TRANSFER_BYTES;

/// Maximum Source Range Count (0-based): 128 descriptors, 4 KiB of data.
pub(crate) const COPY_MSRC: u8 = 127;
/// Bytes one Copy command may move; MCL is this in the namespace's blocks.
pub(crate) const COPY_MAX_BYTES: u64 = 64 << 20;

/// The Copy limits of a namespace with `block_size`-byte blocks (Identify Namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyLimits {
    /// Maximum Single Source Range Length, in blocks.
    pub mssrl: u16,
    /// Maximum Copy Length, in blocks.
    pub mcl: u32,
    /// Maximum Source Range Count, 0-based.
    pub msrc: u8,
}

impl CopyLimits {
    pub fn for_block_size(block_size: u32) -> CopyLimits {
        let mcl = (COPY_MAX_BYTES / u64::from(block_size.max(1))) as u32;
        CopyLimits {
            mssrl: mcl.min(u32::from(u16::MAX)) as u16,
            mcl,
            msrc: COPY_MSRC,
        }
    }
}

/// What the command's one in-flight backend operation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing in flight: the next operation starts a new chunk (or the final flush).
    Idle,
    /// Emulation: reading `blocks` of the current range into the buffer.
    Reading { blocks: u32 },
    /// Emulation: writing those `blocks` to the destination.
    Writing { blocks: u32 },
    /// Native: the backend copies `blocks` (the rest of the current range).
    Offloaded { blocks: u64 },
    /// FUA on an offloaded copy to a device with a volatile cache: flushing at the end.
    Flushing,
}

/// Progress of one Copy command, kept in its slot.
#[derive(Debug)]
pub(crate) struct CopyJob {
    /// (source LBA, blocks) per range, in command order.
    pub(crate) ranges: Vec<(u64, u32)>,
    /// Index of the range being copied (the lowest not yet copied).
    pub(crate) range: usize,
    /// Blocks of `ranges[range]` already copied.
    pub(crate) done_in_range: u32,
    /// Next destination LBA.
    pub(crate) dst: u64,
    pub(crate) fua: bool,
    pub(crate) offload: bool,
    /// A Flush must follow an offloaded copy (FUA with a volatile write cache).
    pub(crate) flush_after: bool,
    /// The namespace's bdev and block size.
    pub(crate) bdev_id: BdevId,
    pub(crate) block_size: u32,
    pub(crate) phase: Phase,
    /// The emulation buffer (between a Read and its Write it holds the data).
    pub(crate) buf: Option<IoBuf>,
}

impl CopyJob {
    /// The emulation buffer, for a queue released with the job still attached.
    pub(crate) fn take_buf(&mut self) -> Option<IoBuf> {
        self.buf.take()
    }

    /// The next backend operation (and the buffer it takes), setting `phase`; `None` when
    /// the copy is complete.
    pub(crate) fn next_op(&mut self) -> Option<(IoKind, Option<IoBuf>)> {
        if let Phase::Reading { blocks } = self.phase {
            // The chunk is in the buffer: write it.
            self.phase = Phase::Writing { blocks };
            let kind = IoKind::Write {
                lba: self.dst,
                blocks,
                fua: self.fua,
            };
            return Some((kind, self.buf.take()));
        }
        let Some(&(src, len)) = self.ranges.get(self.range) else {
            if self.flush_after && self.phase == Phase::Idle {
                self.phase = Phase::Flushing;
                return Some((IoKind::Flush, None));
            }
            return None;
        };
        let src = src + u64::from(self.done_in_range);
        let left = len - self.done_in_range;
        if self.offload && !overlaps(src, self.dst, left) {
            self.phase = Phase::Offloaded {
                blocks: u64::from(left),
            };
            let kind = IoKind::Copy {
                src_lba: src,
                dst_lba: self.dst,
                blocks: u64::from(left),
            };
            return Some((kind, None));
        }
        let blocks = left.min(chunk_blocks(self.block_size));
        self.phase = Phase::Reading { blocks };
        Some((IoKind::Read { lba: src, blocks }, self.buf.take()))
    }

    /// Records the success of the operation in flight.
    pub(crate) fn advance(&mut self) {
        let copied = match self.phase {
            Phase::Idle | Phase::Reading { .. } | Phase::Flushing => return,
            Phase::Writing { blocks } => u64::from(blocks),
            Phase::Offloaded { blocks } => blocks,
        };
        self.phase = Phase::Idle;
        self.dst += copied;
        self.done_in_range += copied as u32;
        if let Some(&(_, len)) = self.ranges.get(self.range) {
            if self.done_in_range >= len {
                self.range += 1;
                self.done_in_range = 0;
            }
        }
    }
}

/// Whether `n` blocks at `src` and at `dst` share a block.
pub(crate) fn overlaps(src: u64, dst: u64, n: u32) -> bool {
    let n = u64::from(n);
    src < dst.saturating_add(n) && dst < src.saturating_add(n)
}

/// Blocks per emulation chunk: one pooled large buffer.
pub(crate) fn chunk_blocks(block_size: u32) -> u32 {
    (MAX_TRANSFER_BYTES / block_size.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ranges: Vec<(u64, u32)>, offload: bool, flush_after: bool) -> CopyJob {
        CopyJob {
            ranges,
            range: 0,
            done_in_range: 0,
            dst: 1000,
            fua: true,
            offload,
            flush_after,
            bdev_id: BdevId(0),
            block_size: 512,
            phase: Phase::Idle,
            buf: None,
        }
    }

    /// Runs a job to completion assuming every operation succeeds; returns the operations.
    fn run(mut j: CopyJob) -> Vec<IoKind> {
        let mut ops = Vec::new();
        while let Some((kind, _)) = j.next_op() {
            ops.push(kind);
            j.advance();
            assert!(ops.len() < 100, "job does not terminate");
        }
        ops
    }

    #[test]
    fn emulation_chunks_each_range_in_order() {
        // 128 KiB chunks of 512-byte blocks: 256 blocks.
        let ops = run(job(vec![(0, 300), (5000, 4)], false, false));
        assert_eq!(
            ops,
            vec![
                IoKind::Read {
                    lba: 0,
                    blocks: 256
                },
                IoKind::Write {
                    lba: 1000,
                    blocks: 256,
                    fua: true
                },
                IoKind::Read {
                    lba: 256,
                    blocks: 44
                },
                IoKind::Write {
                    lba: 1256,
                    blocks: 44,
                    fua: true
                },
                IoKind::Read {
                    lba: 5000,
                    blocks: 4
                },
                IoKind::Write {
                    lba: 1300,
                    blocks: 4,
                    fua: true
                },
            ]
        );
    }

    #[test]
    fn offload_issues_one_copy_per_range_and_a_final_flush_when_asked() {
        let ops = run(job(vec![(0, 300), (5000, 4)], true, true));
        assert_eq!(
            ops,
            vec![
                IoKind::Copy {
                    src_lba: 0,
                    dst_lba: 1000,
                    blocks: 300
                },
                IoKind::Copy {
                    src_lba: 5000,
                    dst_lba: 1300,
                    blocks: 4
                },
                IoKind::Flush,
            ]
        );
        let ops = run(job(vec![(0, 1)], true, false));
        assert_eq!(ops.len(), 1);
        // A range overlapping its destination is emulated even when the bdev offloads.
        let ops = run(job(vec![(990, 20)], true, false));
        assert_eq!(
            ops,
            vec![
                IoKind::Read {
                    lba: 990,
                    blocks: 20
                },
                IoKind::Write {
                    lba: 1000,
                    blocks: 20,
                    fua: true
                },
            ]
        );
        assert!(overlaps(0, 7, 8) && !overlaps(0, 8, 8) && overlaps(8, 0, 9));
    }

    #[test]
    fn failure_index_is_the_range_in_progress() {
        let mut j = job(vec![(0, 8), (100, 300), (900, 1)], false, false);
        for _ in 0..2 {
            j.next_op();
            j.advance();
        }
        assert_eq!(j.range, 1, "range 0 copied");
        j.next_op(); // read of range 1, first chunk
        j.advance();
        j.next_op(); // its write
        j.advance();
        assert_eq!(j.range, 1, "range 1 only partly copied");
    }
}
