//! RAM-backed block device.
//!
//! The memory is one zeroed allocation of `AtomicU64` words shared by every channel: no lock
//! per I/O and no data race (concurrent overlapping writes to one LBA interleave per 8-byte
//! word, as a real disk may tear them). The allocation is zeroed by the allocator, so the OS
//! maps pages lazily: a large namespace costs memory only where it is written.

use std::sync::atomic::{AtomicU64, Ordering};

use zerocopy::FromZeros;

use crate::immediate::{sync_block_device, SyncBackend, SyncDevice};
use crate::io::Geometry;
use crate::{BdevError, BdevIo, IoKind};

/// Largest Read/Write accepted by malloc and null devices.
pub const MAX_TRANSFER_BYTES: u32 = 4 << 20;

const WORD: usize = std::mem::size_of::<u64>();

#[derive(Debug)]
struct MallocInner {
    geometry: Geometry,
    words: Box<[AtomicU64]>,
}

impl MallocInner {
    fn words(&self, lba: u64, bytes: usize) -> &[AtomicU64] {
        // In range (checked at submit) and the whole device fits in memory, so these fit usize.
        let start = self.geometry.offset(lba) as usize / WORD;
        &self.words[start..start + bytes / WORD]
    }

    fn zero(&self, lba: u64, blocks: u64) {
        let bytes = blocks as usize * self.geometry.block_size as usize;
        for w in self.words(lba, bytes) {
            // Reading first leaves never-written pages unmapped (they read as the zero page).
            if w.load(Ordering::Relaxed) != 0 {
                w.store(0, Ordering::Relaxed);
            }
        }
    }
}

impl SyncBackend for MallocInner {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn execute(&self, io: &mut BdevIo, bytes: usize) -> Result<(), BdevError> {
        match io.kind {
            IoKind::Read { lba, .. } => {
                let buf = io
                    .buf
                    .as_mut()
                    .expect("checked at submit: reads carry a buffer");
                let words = self.words(lba, bytes);
                for (chunk, w) in buf.spare_mut()[..bytes].chunks_exact_mut(WORD).zip(words) {
                    chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
                }
                buf.set_len(bytes);
            }
            IoKind::Write { lba, .. } => {
                let buf = io
                    .buf
                    .as_ref()
                    .expect("checked at submit: writes carry a buffer");
                let words = self.words(lba, bytes);
                for (chunk, w) in buf.as_slice()[..bytes].chunks_exact(WORD).zip(words) {
                    let value = u64::from_ne_bytes(chunk.try_into().expect("chunks of 8 bytes"));
                    w.store(value, Ordering::Relaxed);
                }
            }
            IoKind::Flush => {}
            IoKind::WriteZeroes { lba, blocks } | IoKind::Unmap { lba, blocks } => {
                self.zero(lba, blocks)
            }
            IoKind::Copy {
                src_lba,
                dst_lba,
                blocks,
            } => {
                let bytes = blocks as usize * self.geometry.block_size as usize;
                let (src, dst) = (self.words(src_lba, bytes), self.words(dst_lba, bytes));
                for (s, d) in src.iter().zip(dst) {
                    d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}

/// A RAM disk. Contents are lost when the last reference (device or channel) goes.
#[derive(Debug)]
pub struct MallocBdev {
    dev: SyncDevice<MallocInner>,
}

impl MallocBdev {
    /// A zero-filled device of `num_blocks` blocks of `block_size` bytes, with a random UUID.
    pub fn new(name: &str, num_blocks: u64, block_size: u32) -> Result<Self, BdevError> {
        let geometry = Geometry::new(block_size, num_blocks, MAX_TRANSFER_BYTES)?;
        let bytes = num_blocks * u64::from(block_size);
        let nwords =
            usize::try_from(bytes / WORD as u64).map_err(|_| BdevError::NoMemory { bytes })?;
        let words = <[AtomicU64]>::new_box_zeroed_with_elems(nwords)
            .map_err(|_| BdevError::NoMemory { bytes })?;
        ferrite_uring::sys::advise_hugepages(&words);
        log::info!("malloc bdev {name}: {num_blocks} blocks of {block_size} bytes");
        Ok(Self {
            dev: SyncDevice::new(name, MallocInner { geometry, words }),
        })
    }
}

sync_block_device!(MallocBdev);
