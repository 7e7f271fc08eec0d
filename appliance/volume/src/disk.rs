//! Synchronous I/O on the member devices for the owner thread (and `probe`): submit one
//! request on the thread's own channel and poll until it completes or its deadline passes.
//! Never used by reactors.
//!
//! A member that does not answer within the deadline (`Pool::set_member_timeout`, default
//! [`MEMBER_TIMEOUT`]) fails the request with ETIMEDOUT and is marked hung: later requests to
//! it fail at once, and its channel, which still owns the request, is leaked rather than
//! dropped when the pool stops (dropping may wait for the request forever).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, Capabilities, IoChannel, IoKind};
use ferrite_reactor::IoBuf;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// Largest single transfer the owner issues (further capped by each member).
const CHUNK: u64 = 1 << 20;

/// How long the owner waits for one member request by default.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Member {
    pub dev: Arc<dyn BlockDevice>,
    pub ch: Box<dyn IoChannel>,
    pub bs: u64,
    pub caps: Capabilities,
    /// A request timed out: the channel still holds it.
    pub hung: bool,
}

pub(crate) struct Disks {
    pub members: Vec<Member>,
    /// Deadline of each member request.
    pub timeout: Duration,
}

impl Drop for Disks {
    fn drop(&mut self) {
        for m in self.members.drain(..) {
            if m.hung {
                log::error!(
                    "member {}: channel with an unanswered request left open",
                    m.dev.name()
                );
                std::mem::forget(m.ch);
            }
        }
    }
}

impl std::fmt::Debug for Disks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disks")
            .field("members", &self.members.len())
            .finish()
    }
}

fn timed_out() -> BdevError {
    BdevError::Io(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
}

/// Runs one request to completion on `ch`; ETIMEDOUT once `timeout` has passed (the request
/// then stays in the channel).
pub(crate) fn run(
    ch: &mut dyn IoChannel,
    kind: IoKind,
    buf: Option<IoBuf>,
    timeout: Duration,
) -> Result<Option<IoBuf>, BdevError> {
    let deadline = Instant::now() + timeout;
    let mut io = BdevIo::new(0, kind, buf);
    loop {
        match ch.submit(io) {
            Ok(()) => break,
            Err((back, BdevError::QueueFull)) => {
                io = back;
                ch.poll(16, &mut |_, _| {});
                if Instant::now() > deadline {
                    return Err(timed_out());
                }
                std::thread::yield_now();
            }
            Err((_, e)) => return Err(e),
        }
    }
    let mut out = None;
    let mut waits = 0u32;
    while out.is_none() {
        if ch.poll(1, &mut |io, r| out = Some(r.map(|()| io.buf))) == 0 {
            if Instant::now() > deadline {
                return Err(timed_out());
            }
            wait(ch, deadline, &mut waits);
        }
    }
    out.expect("loop ends with a completion")
}

/// Waits for `ch` to have a completion, at most until `deadline`: blocked on its wakeup fd
/// when it has one (io_uring members: no spinning), else yielding a few times and then
/// sleeping 50 us at a time (members that complete in `poll` itself).
fn wait(ch: &dyn IoChannel, deadline: Instant, waits: &mut u32) {
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some(fd) = ch.wakeup_fd() {
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
        let Ok(ts) = Timespec::try_from(left.min(Duration::from_millis(10))) else {
            return;
        };
        if let Ok(n) = poll(&mut fds, Some(&ts)) {
            if n > 0 {
                // Reset the eventfd (the channel never reads it).
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(fd, &mut counter);
            }
        }
        return;
    }
    *waits += 1;
    if *waits < 64 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(50).min(left));
    }
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
                    hung: false,
                })
            })
            .collect::<Result<_, BdevError>>()?;
        Ok(Self {
            members,
            timeout: MEMBER_TIMEOUT,
        })
    }

    /// Runs one request on member `m` within the deadline.
    fn run_on(
        &mut self,
        m: usize,
        kind: IoKind,
        buf: Option<IoBuf>,
    ) -> Result<Option<IoBuf>, BdevError> {
        let timeout = self.timeout;
        let mem = &mut self.members[m];
        if mem.hung {
            return Err(timed_out());
        }
        let r = run(&mut *mem.ch, kind, buf, timeout);
        if matches!(&r, Err(BdevError::Io(e)) if e.raw_os_error() == Some(libc::ETIMEDOUT)) {
            log::error!(
                "member {}: no answer within {timeout:?} to {}",
                mem.dev.name(),
                kind.name()
            );
            mem.hung = true;
        }
        r
    }

    fn chunk(&self, m: usize) -> u64 {
        CHUNK.min(u64::from(self.members[m].caps.max_transfer_bytes.max(4096)))
    }

    /// Reads `len` bytes at byte `offset` (both block-aligned).
    pub fn read(&mut self, m: usize, offset: u64, len: u64) -> Result<Vec<u8>, BdevError> {
        let mut out = Vec::with_capacity(len as usize);
        let chunk = self.chunk(m);
        let bs = self.members[m].bs;
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let kind = IoKind::Read {
                lba: (offset + done) / bs,
                blocks: (n / bs) as u32,
            };
            let buf = self
                .run_on(m, kind, Some(IoBuf::new(n as usize)))?
                .expect("reads return their buffer");
            out.extend_from_slice(&buf.as_slice()[..n as usize]);
            done += n;
        }
        Ok(out)
    }

    /// Writes `data` (a whole number of blocks) at byte `offset`.
    pub fn write(&mut self, m: usize, offset: u64, data: &[u8]) -> Result<(), BdevError> {
        let chunk = self.chunk(m) as usize;
        let bs = self.members[m].bs;
        for (i, part) in data.chunks(chunk).enumerate() {
            let mut buf = IoBuf::new(part.len());
            buf.set_len(part.len());
            buf.as_mut_slice().copy_from_slice(part);
            let kind = IoKind::Write {
                lba: (offset + (i * chunk) as u64) / bs,
                blocks: (part.len() as u64 / bs) as u32,
                fua: false,
            };
            self.run_on(m, kind, Some(buf))?;
        }
        Ok(())
    }

    pub fn flush(&mut self, m: usize) -> Result<(), BdevError> {
        self.run_on(m, IoKind::Flush, None).map(|_| ())
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
            return self.run_on(m, kind, None).map(|_| ());
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
            match self.run_on(src.0, kind, None) {
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
