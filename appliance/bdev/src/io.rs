//! Requests, the per-reactor channel trait, and the checks every backend applies at submit.

use std::os::fd::BorrowedFd;

use ferrite_reactor::IoBuf;

use crate::BdevError;

/// What a request does. LBAs and block counts are in the device's logical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Read `blocks` blocks into the buffer (its capacity must hold them; on success its
    /// length is set to `blocks * block_size`).
    Read { lba: u64, blocks: u32 },
    /// Write the first `blocks * block_size` bytes of the buffer. `fua`: durable before
    /// completion, even with a volatile write cache.
    Write { lba: u64, blocks: u32, fua: bool },
    /// Make every write completed before this request durable.
    Flush,
    /// Make the range read back zeroes.
    WriteZeroes { lba: u64, blocks: u64 },
    /// Deallocate the range (a hint; see `Capabilities::unmap`).
    Unmap { lba: u64, blocks: u64 },
    /// Copy `blocks` blocks from `src_lba` to `dst_lba` inside the device (see
    /// `Capabilities::copy`; without it callers emulate with Read + Write). Overlapping ranges
    /// are the caller's business: the result of an overlapping copy is undefined.
    Copy {
        src_lba: u64,
        dst_lba: u64,
        blocks: u64,
    },
}

impl IoKind {
    /// `(lba, blocks)` addressed by the request, `None` for Flush.
    pub fn range(&self) -> Option<(u64, u64)> {
        match *self {
            IoKind::Read { lba, blocks } | IoKind::Write { lba, blocks, .. } => {
                Some((lba, u64::from(blocks)))
            }
            IoKind::WriteZeroes { lba, blocks } | IoKind::Unmap { lba, blocks } => {
                Some((lba, blocks))
            }
            IoKind::Copy {
                dst_lba, blocks, ..
            } => Some((dst_lba, blocks)),
            IoKind::Flush => None,
        }
    }

    /// The range read by a Copy, `None` for the other kinds.
    pub fn source_range(&self) -> Option<(u64, u64)> {
        match *self {
            IoKind::Copy {
                src_lba, blocks, ..
            } => Some((src_lba, blocks)),
            _ => None,
        }
    }

    /// True for the kinds that change the medium (refused by a read-only device).
    pub fn modifies(&self) -> bool {
        !matches!(self, IoKind::Read { .. } | IoKind::Flush)
    }

    /// Short name for logs and statistics.
    pub fn name(&self) -> &'static str {
        match self {
            IoKind::Read { .. } => "read",
            IoKind::Write { .. } => "write",
            IoKind::Flush => "flush",
            IoKind::WriteZeroes { .. } => "write_zeroes",
            IoKind::Unmap { .. } => "unmap",
            IoKind::Copy { .. } => "copy",
        }
    }
}

/// One request. The caller's `tag` comes back unchanged with the completion; so does `buf`
/// (an in-flight request owns its buffer).
#[derive(Debug)]
pub struct BdevIo {
    pub tag: u64,
    pub kind: IoKind,
    /// Data for Read/Write (`blocks * block_size` bytes); ignored and returned untouched for
    /// the other kinds.
    pub buf: Option<IoBuf>,
}

impl BdevIo {
    pub fn new(tag: u64, kind: IoKind, buf: Option<IoBuf>) -> Self {
        Self { tag, kind, buf }
    }
}

/// Counters of one channel. Every field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Requests accepted by `submit`.
    pub submitted: u64,
    /// Requests handed back by `poll` (success or error).
    pub completed: u64,
    /// Of `completed`, those with an error.
    pub failed: u64,
    /// `submit` refusals because the queue was full.
    pub queue_full: u64,
    /// `submit` refusals because the request was invalid (range, buffer, size, unsupported).
    pub rejected: u64,
    /// Reads/writes that used an io_uring registered (fixed) buffer.
    pub fixed_buffer_ops: u64,
    /// Partial transfers whose remainder was submitted again.
    pub short_resubmits: u64,
    /// WriteZeroes served by writing zeroes because the file system refused ZERO_RANGE.
    pub emulated_zeroes: u64,
    /// io_uring_enter system calls made by `poll`.
    pub kernel_enters: u64,
}

/// A per-reactor I/O channel (SPDK's io_channel). Not `Send`: it lives and dies on the reactor
/// that opened it. Every submitted `BdevIo` comes back exactly once through `poll`, with its
/// buffer, success or error; requests still in flight when a channel is dropped are waited for
/// (their buffers are then dropped, so drain before dropping).
pub trait IoChannel {
    /// Queues a request. Queue full or invalid request: hands the request back with the
    /// reason (never drops it). Never completes re-entrantly: completions come from `poll`.
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)>;

    /// Pushes queued submissions to the kernel (one system call per poll at most) and reaps up
    /// to `max` completions, calling `done` for each. Returns the number completed.
    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize;

    /// Requests submitted and not yet handed back by `poll`.
    fn in_flight(&self) -> usize;

    /// An fd that becomes readable when completions are pending, for interrupt mode (an
    /// eventfd: the waiter reads its 8-byte counter to reset it, the channel never does).
    /// `None` when completions never wait on the kernel (then `in_flight() > 0` means "poll
    /// me"). Before parking, poll once more: a completion may have arrived before the wait.
    fn wakeup_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Counters of this channel.
    fn stats(&self) -> ChannelStats {
        ChannelStats::default()
    }
}

/// Geometry of a device, with the submit-time checks shared by every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub block_size: u32,
    pub num_blocks: u64,
    pub max_transfer_bytes: u32,
}

impl Geometry {
    /// Validates block size and count given at create/open time.
    pub fn new(
        block_size: u32,
        num_blocks: u64,
        max_transfer_bytes: u32,
    ) -> Result<Self, BdevError> {
        if !block_size.is_power_of_two() || !(512..=4096).contains(&block_size) {
            return Err(BdevError::InvalidConfig(format!(
                "block size {block_size} is not a power of two between 512 and 4096"
            )));
        }
        if num_blocks == 0 {
            return Err(BdevError::InvalidConfig("device has zero blocks".into()));
        }
        if num_blocks
            .checked_mul(u64::from(block_size))
            .is_none_or(|b| b > i64::MAX as u64)
        {
            return Err(BdevError::InvalidConfig(format!(
                "{num_blocks} blocks of {block_size} bytes overflow a file offset"
            )));
        }
        Ok(Self {
            block_size,
            num_blocks,
            max_transfer_bytes,
        })
    }

    /// Byte offset of `lba` (in range: checked by `check`).
    pub fn offset(&self, lba: u64) -> u64 {
        lba * u64::from(self.block_size)
    }

    /// Checks range, transfer size and buffer of a request. Returns the data length in bytes
    /// for Read/Write, 0 otherwise.
    pub fn check(&self, io: &BdevIo) -> Result<usize, BdevError> {
        let Some((lba, blocks)) = io.kind.range() else {
            return Ok(0);
        };
        for (lba, blocks) in std::iter::once((lba, blocks)).chain(io.kind.source_range()) {
            if lba
                .checked_add(blocks)
                .is_none_or(|end| end > self.num_blocks)
            {
                return Err(BdevError::OutOfRange {
                    lba,
                    blocks,
                    num_blocks: self.num_blocks,
                });
            }
        }
        let (bytes, available) = match io.kind {
            IoKind::Read { .. } => (blocks, io.buf.as_ref().map_or(0, IoBuf::capacity)),
            IoKind::Write { .. } => (blocks, io.buf.as_ref().map_or(0, IoBuf::len)),
            _ => return Ok(0),
        };
        // In range, so blocks * block_size fits in u64 (checked in `new`).
        let bytes = bytes * u64::from(self.block_size);
        if bytes > u64::from(self.max_transfer_bytes) {
            return Err(BdevError::TransferTooLarge {
                bytes,
                max: self.max_transfer_bytes,
            });
        }
        let bytes = bytes as usize; // <= max_transfer_bytes: u32
        if available < bytes || io.buf.is_none() {
            return Err(BdevError::BufferTooSmall {
                needed: bytes,
                available,
            });
        }
        Ok(bytes)
    }
}

/// A random RFC 4122 version-4 UUID.
pub(crate) fn random_uuid() -> [u8; 16] {
    let mut uuid: [u8; 16] = rand::random();
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry::new(512, 100, 64 * 1024).expect("valid geometry")
    }

    #[test]
    fn geometry_rejects_bad_config() {
        assert!(Geometry::new(1000, 10, 4096).is_err());
        assert!(Geometry::new(256, 10, 4096).is_err());
        assert!(Geometry::new(8192, 10, 4096).is_err());
        assert!(Geometry::new(512, 0, 4096).is_err());
        assert!(Geometry::new(4096, u64::MAX / 1024, 4096).is_err());
        assert!(Geometry::new(4096, 1 << 20, 4096).is_ok());
    }

    #[test]
    fn check_ranges_and_buffers() {
        let g = geo();
        let read = |lba, blocks, cap: Option<usize>| {
            BdevIo::new(1, IoKind::Read { lba, blocks }, cap.map(IoBuf::new))
        };
        assert_eq!(g.check(&read(0, 8, Some(4096))).expect("fits"), 4096);
        assert_eq!(g.check(&read(92, 8, Some(4096))).expect("fits"), 4096);
        assert!(matches!(
            g.check(&read(93, 8, Some(4096))),
            Err(BdevError::OutOfRange {
                lba: 93,
                blocks: 8,
                num_blocks: 100
            })
        ));
        assert!(matches!(
            g.check(&read(u64::MAX, 1, Some(4096))),
            Err(BdevError::OutOfRange { .. })
        ));
        assert!(matches!(
            g.check(&read(0, 9, Some(4096))),
            Err(BdevError::BufferTooSmall {
                needed: 4608,
                available: 4096
            })
        ));
        assert!(matches!(
            g.check(&read(0, 1, None)),
            Err(BdevError::BufferTooSmall { available: 0, .. })
        ));
        // Writes need valid data, not just capacity.
        let mut buf = IoBuf::new(4096);
        buf.set_len(511);
        let w = BdevIo::new(
            2,
            IoKind::Write {
                lba: 0,
                blocks: 1,
                fua: false,
            },
            Some(buf),
        );
        assert!(matches!(g.check(&w), Err(BdevError::BufferTooSmall { .. })));
        let big = Geometry::new(512, 1 << 20, 4096).expect("valid");
        assert!(matches!(
            big.check(&read(0, 9, Some(8192))),
            Err(BdevError::TransferTooLarge { .. })
        ));
        let wz = BdevIo::new(
            3,
            IoKind::WriteZeroes {
                lba: 50,
                blocks: 51,
            },
            None,
        );
        assert!(matches!(g.check(&wz), Err(BdevError::OutOfRange { .. })));
        let wz = BdevIo::new(
            3,
            IoKind::WriteZeroes {
                lba: 50,
                blocks: 50,
            },
            None,
        );
        assert_eq!(g.check(&wz).expect("fits"), 0);
        assert_eq!(
            g.check(&BdevIo::new(4, IoKind::Flush, None))
                .expect("flush"),
            0
        );
    }

    #[test]
    fn uuid_is_version_4() {
        let u = random_uuid();
        assert_eq!(u[6] >> 4, 4);
        assert_eq!(u[8] >> 6, 0b10);
        assert_ne!(u, random_uuid());
    }
}
