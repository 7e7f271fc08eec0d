//! Synchronous I/O on the member devices for the owner thread (and `probe`): submit one
//! request on the thread's own channel and poll until it completes. Never used by reactors.

use std::sync::Arc;

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, Capabilities, IoChannel, IoKind};
use ferrite_reactor::IoBuf;

/// Largest single transfer the owner issues (further capped by each member).
const CHUNK: u64 = 1 << 20;

pub(crate) struct Member {
    pub dev: Arc<dyn BlockDevice>,
    pub ch: Box<dyn IoChannel>,
    pub bs: u64,
    pub caps: Capabilities,
}

pub(crate) struct Disks {
    pub members: Vec<Member>,
}

impl std::fmt::Debug for Disks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disks")
            .field("members", &self.members.len())
            .finish()
    }
}

/// Runs one request to completion on `ch`.
pub(crate) fn run(
    ch: &mut dyn IoChannel,
    kind: IoKind,
    buf: Option<IoBuf>,
) -> Result<Option<IoBuf>, BdevError> {
    let mut io = BdevIo::new(0, kind, buf);
    loop {
        match ch.submit(io) {
            Ok(()) => break,
            Err((back, BdevError::QueueFull)) => {
                io = back;
                ch.poll(16, &mut |_, _| {});
                std::thread::yield_now();
            }
            Err((_, e)) => return Err(e),
        }
    }
    let mut out = None;
    while out.is_none() {
        if ch.poll(1, &mut |io, r| out = Some(r.map(|()| io.buf))) == 0 {
            std::thread::yield_now();
        }
    }
    out.expect("loop ends with a completion")
}

impl Disks {
    pub fn open(devs: &[Arc<dyn BlockDevice>]) -> Result<Self, BdevError> {
        let members = devs
            .iter()
            .map(|d| {
                Ok(Member {
                    ch: d.open_channel(&[])?,
                    bs: u64::from(d.block_size()),
                    caps: d.capabilities(),
                    dev: Arc::clone(d),
                })
            })
            .collect::<Result<_, BdevError>>()?;
        Ok(Self { members })
    }

    fn chunk(&self, m: usize) -> u64 {
        CHUNK.min(u64::from(self.members[m].caps.max_transfer_bytes.max(4096)))
    }

    /// Reads `len` bytes at byte `offset` (both block-aligned).
    pub fn read(&mut self, m: usize, offset: u64, len: u64) -> Result<Vec<u8>, BdevError> {
        let mut out = Vec::with_capacity(len as usize);
        let chunk = self.chunk(m);
        let mem = &mut self.members[m];
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let kind = IoKind::Read {
                lba: (offset + done) / mem.bs,
                blocks: (n / mem.bs) as u32,
            };
            let buf = run(&mut *mem.ch, kind, Some(IoBuf::new(n as usize)))?
                .expect("reads return their buffer");
            out.extend_from_slice(&buf.as_slice()[..n as usize]);
            done += n;
        }
        Ok(out)
    }

    /// Writes `data` (a whole number of blocks) at byte `offset`.
    pub fn write(&mut self, m: usize, offset: u64, data: &[u8]) -> Result<(), BdevError> {
        let chunk = self.chunk(m) as usize;
        let mem = &mut self.members[m];
        for (i, part) in data.chunks(chunk).enumerate() {
            let mut buf = IoBuf::new(part.len());
            buf.set_len(part.len());
            buf.as_mut_slice().copy_from_slice(part);
            let kind = IoKind::Write {
                lba: (offset + (i * chunk) as u64) / mem.bs,
                blocks: (part.len() as u64 / mem.bs) as u32,
                fua: false,
            };
            run(&mut *mem.ch, kind, Some(buf))?;
        }
        Ok(())
    }

    pub fn flush(&mut self, m: usize) -> Result<(), BdevError> {
        run(&mut *self.members[m].ch, IoKind::Flush, None).map(|_| ())
    }

    pub fn flush_all(&mut self) -> Result<(), BdevError> {
        (0..self.members.len()).try_for_each(|m| self.flush(m))
    }

    /// Makes `len` bytes at `offset` read zero.
    pub fn zero(&mut self, m: usize, offset: u64, len: u64) -> Result<(), BdevError> {
        let mem = &mut self.members[m];
        if mem.caps.write_zeroes {
            let kind = IoKind::WriteZeroes {
                lba: offset / mem.bs,
                blocks: len / mem.bs,
            };
            return run(&mut *mem.ch, kind, None).map(|_| ());
        }
        let chunk = self.chunk(m);
        let zeros = vec![0u8; chunk.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            self.write(m, offset + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// Copies `len` bytes between members/offsets: the member's Copy when both are on one
    /// member that offers it, else read + write.
    pub fn copy(
        &mut self,
        src: (usize, u64),
        dst: (usize, u64),
        len: u64,
    ) -> Result<(), BdevError> {
        if src.0 == dst.0 && self.members[src.0].caps.copy {
            let mem = &mut self.members[src.0];
            let kind = IoKind::Copy {
                src_lba: src.1 / mem.bs,
                dst_lba: dst.1 / mem.bs,
                blocks: len / mem.bs,
            };
            match run(&mut *mem.ch, kind, None) {
                Err(BdevError::Unsupported(_)) => {}
                other => return other.map(|_| ()),
            }
        }
        let chunk = self.chunk(src.0).min(self.chunk(dst.0));
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let data = self.read(src.0, src.1 + done, n)?;
            self.write(dst.0, dst.1 + done, &data)?;
            done += n;
        }
        Ok(())
    }
}
