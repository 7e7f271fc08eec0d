//! The owner's I/O on the member devices: asynchronous requests on the owner's own channels
//! (opened on its reactor), each with a deadline. `probe`, which runs on a control thread
//! before any owner exists, keeps a blocking one-request helper (`run`).
//!
//! A member that does not answer within the deadline (`Pool::set_member_timeout`, default
//! [`MEMBER_TIMEOUT`]) fails the request with ETIMEDOUT and is marked hung: later requests to
//! it fail at once, and its channel, which still owns the request, is leaked rather than
//! dropped when the pool stops (dropping may wait for the request forever).

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, BlockDevice, Capabilities, IoChannel, IoKind};
use ferrite_reactor::IoBuf;
use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::exec::Hub;

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
    pub hub: Rc<Hub>,
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

pub(crate) fn timed_out() -> BdevError {
    BdevError::Io(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
}

/// Runs one request to completion on `ch`, blocking the calling (control) thread in poll(2)
/// on the channel's wakeup fd; ETIMEDOUT once `timeout` has passed. For `Pool::probe` only.
pub(crate) fn run(
    ch: &mut dyn IoChannel,
    kind: IoKind,
    buf: Option<IoBuf>,
    timeout: Duration,
) -> Result<Option<IoBuf>, BdevError> {
    let deadline = Instant::now() + timeout;
    if let Err((_, e)) = ch.submit(BdevIo::new(0, kind, buf)) {
        return Err(e);
    }
    let mut out = None;
    while out.is_none() {
        if ch.poll(1, &mut |io, r| out = Some(r.map(|()| io.buf))) > 0 {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        match ch.wakeup_fd() {
            Some(fd) => {
                let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
                let ts =
                    Timespec::try_from(left.min(Duration::from_millis(10))).unwrap_or(Timespec {
                        tv_sec: 0,
                        tv_nsec: 10_000_000,
                    });
                let _ = poll(&mut fds, Some(&ts));
            }
            // Completes in `poll` itself (memory, fault wrappers): a control thread, once.
            None => std::thread::sleep(Duration::from_micros(50).min(left)),
        }
    }
    out.expect("loop ends with a completion")
}

/// One request on `ch`, asynchronously: submitted, then reaped on the owner's polls until it
/// completes or `deadline` passes (the request then stays in the channel).
async fn submit_and_wait(
    hub: &Hub,
    ch: &mut dyn IoChannel,
    io: BdevIo,
    deadline: Instant,
) -> Result<Option<IoBuf>, BdevError> {
    let mut queued = Some(io);
    let r = poll_fn(|_| {
        if let Some(io) = queued.take() {
            match ch.submit(io) {
                Ok(()) => {}
                Err((back, BdevError::QueueFull)) => queued = Some(back),
                Err((_, e)) => return Poll::Ready(Err(e)),
            }
        }
        let mut out = None;
        if queued.is_none() {
            ch.poll(1, &mut |io, r| out = Some(r.map(|()| io.buf)));
        }
        if let Some(r) = out {
            return Poll::Ready(r);
        }
        if Instant::now() >= deadline {
            return Poll::Ready(Err(timed_out()));
        }
        // A registered wakeup fd rings the reactor on completion; without one the channel
        // completes in `poll` and must be polled again.
        if queued.is_some() || ch.wakeup_fd().is_none() {
            hub.busy();
        }
        hub.wake_at(deadline);
        Poll::Pending
    })
    .await;
    if hub.spend() {
        hub.yield_now().await;
    }
    r
}

impl Disks {
    /// Opens a channel on every member (on the owner's reactor: the channels stay there).
    pub fn open(devs: &[Arc<dyn BlockDevice>], hub: Rc<Hub>) -> Result<Self, BdevError> {
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
            hub,
        })
    }

    /// Runs one request on member `m` within the deadline.
    async fn run_on(
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
        let deadline = Instant::now() + timeout;
        let io = BdevIo::new(0, kind, buf);
        let r = submit_and_wait(&self.hub, &mut *mem.ch, io, deadline).await;
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
    pub async fn read(&mut self, m: usize, offset: u64, len: u64) -> Result<Vec<u8>, BdevError> {
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
                .run_on(m, kind, Some(IoBuf::new(n as usize)))
                .await?
                .expect("reads return their buffer");
            out.extend_from_slice(&buf.as_slice()[..n as usize]);
            done += n;
        }
        Ok(out)
    }

    /// Writes `data` (a whole number of blocks) at byte `offset`.
    pub async fn write(&mut self, m: usize, offset: u64, data: &[u8]) -> Result<(), BdevError> {
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
            self.run_on(m, kind, Some(buf)).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self, m: usize) -> Result<(), BdevError> {
        self.run_on(m, IoKind::Flush, None).await.map(|_| ())
    }

    pub async fn flush_all(&mut self) -> Result<(), BdevError> {
        for m in 0..self.members.len() {
            self.flush(m).await?;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` read zero.
    pub async fn zero(&mut self, m: usize, offset: u64, len: u64) -> Result<(), BdevError> {
        let mem = &self.members[m];
        if mem.caps.write_zeroes {
            let kind = IoKind::WriteZeroes {
                lba: offset / mem.bs,
                blocks: len / mem.bs,
            };
            return self.run_on(m, kind, None).await.map(|_| ());
        }
        let chunk = self.chunk(m);
        let zeros = vec![0u8; chunk.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            self.write(m, offset + done, &zeros[..n as usize]).await?;
            done += n;
        }
        Ok(())
    }

    /// Copies `len` bytes between members/offsets: the member's Copy when both are on one
    /// member that offers it, else read + write.
    pub async fn copy(
        &mut self,
        src: (usize, u64),
        dst: (usize, u64),
        len: u64,
    ) -> Result<(), BdevError> {
        if src.0 == dst.0 && self.members[src.0].caps.copy {
            let mem = &self.members[src.0];
            let kind = IoKind::Copy {
                src_lba: src.1 / mem.bs,
                dst_lba: dst.1 / mem.bs,
                blocks: len / mem.bs,
            };
            match self.run_on(src.0, kind, None).await {
                Err(BdevError::Unsupported(_)) => {}
                other => return other.map(|_| ()),
            }
        }
        let chunk = self.chunk(src.0).min(self.chunk(dst.0));
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let data = self.read(src.0, src.1 + done, n).await?;
            self.write(dst.0, dst.1 + done, &data).await?;
            done += n;
        }
        Ok(())
    }
}
