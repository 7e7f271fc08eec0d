//! One load thread: keeps its queue pairs full (up to the rate cap), reaps
//! completions, records latency per target and checks verified reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_host::{Completed, Data, HostError, QueuePair};
use ferrite_nvme::command::opcode;
use ferrite_nvme::io::ReadWrite;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::PerfError;
use crate::stats::Counters;
use crate::verify::{stamp, Oracle};

/// Tries at finding a range no in-flight verified I/O overlaps.
const PICK_TRIES: usize = 8;
/// Empty polls before the thread sleeps on its sockets (busy-poll first, like SPDK perf).
const SPINS_BEFORE_WAIT: u32 = 2000;
/// Longest sleep on the sockets when idle.
const IDLE_WAIT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
struct Inflight {
    start: Instant,
    lba: u64,
    blocks: u32,
    write: bool,
    gen: u64,
}

/// Geometry of one target's namespace as the queues use it.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub nsid: u32,
    pub block_size: u32,
    /// I/O size bounds in blocks (equal when the size is fixed).
    pub min_blocks: u32,
    pub max_blocks: u32,
    /// Blocks I/O may touch, from LBA 0.
    pub span: u64,
}

impl Geometry {
    /// Blocks of one 4 KiB unit, when the block size and the size range allow it, else 1.
    fn granule(&self) -> u32 {
        let g = (4096 / self.block_size).max(1);
        if self.min_blocks % g == 0 && self.max_blocks % g == 0 {
            g
        } else {
            1
        }
    }
}

/// The part of the namespace a queue works on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub first_lba: u64,
    pub blocks: u64,
    /// Where sequential I/O starts, relative to `first_lba`.
    pub cursor: u64,
}

/// Whose queue it is: target and controller index, and the target's name for errors.
#[derive(Debug, Clone)]
pub(crate) struct QueueTag {
    pub target: usize,
    pub controller: usize,
    pub name: Arc<str>,
}

/// One queue pair and the part of the namespace it works on.
#[derive(Debug)]
pub(crate) struct WorkQueue {
    pub target: usize,
    pub name: Arc<str>,
    qp: QueuePair,
    geo: Geometry,
    first_lba: u64,
    blocks: u64,
    /// Next sequential offset, relative to `first_lba`.
    cursor: u64,
    oracle: Option<Oracle>,
    inflight: Vec<Option<Inflight>>,
    out: Vec<Completed>,
    gen: u64,
}

impl WorkQueue {
    /// A queue working on `region`, checking reads against an oracle when `verify`.
    pub fn new(
        tag: QueueTag,
        qp: QueuePair,
        geo: Geometry,
        region: Region,
        verify: bool,
    ) -> WorkQueue {
        let depth = usize::from(qp.depth());
        // Generations are unique per queue: target, controller and queue id in the top bits.
        let gen = ((tag.target as u64) << 56)
            | ((tag.controller as u64 & 0xFFF) << 44)
            | ((u64::from(qp.qid()) & 0xFFF) << 32);
        WorkQueue {
            target: tag.target,
            name: tag.name,
            inflight: vec![None; depth],
            out: Vec::with_capacity(depth),
            oracle: verify.then(|| Oracle::new(region.first_lba, region.blocks)),
            qp,
            geo,
            first_lba: region.first_lba,
            blocks: region.blocks,
            cursor: region.cursor,
            gen,
        }
    }

    fn host_err(&self, source: HostError) -> PerfError {
        PerfError::Host {
            target: self.name.to_string(),
            qid: self.qp.qid(),
            source,
        }
    }

    fn overlaps(&self, lba: u64, blocks: u32) -> bool {
        let end = lba + u64::from(blocks);
        self.inflight
            .iter()
            .flatten()
            .any(|f| lba < f.lba + u64::from(f.blocks) && f.lba < end)
    }

    /// The size of the next I/O in blocks.
    fn pick_blocks(&self, rng: &mut StdRng) -> u32 {
        let g = &self.geo;
        if g.min_blocks == g.max_blocks {
            return g.max_blocks;
        }
        let u = g.granule();
        u * rng.gen_range(g.min_blocks / u..=g.max_blocks / u)
    }

    /// The next LBA for an I/O of `blocks`, or None when every candidate overlaps an
    /// in-flight verified I/O.
    fn pick_lba(&mut self, blocks: u32, random: bool, rng: &mut StdRng) -> Option<u64> {
        let n = u64::from(blocks);
        // Fixed sizes start at multiples of the size; random sizes at 4 KiB units.
        let step = if self.geo.min_blocks == self.geo.max_blocks {
            n
        } else {
            u64::from(self.geo.granule())
        };
        let slots = (self.blocks.saturating_sub(n) / step + 1).max(1);
        for _ in 0..PICK_TRIES {
            let lba = if random {
                self.first_lba + rng.gen_range(0..slots) * step
            } else {
                if self.cursor + n > self.blocks {
                    self.cursor = 0;
                }
                self.first_lba + self.cursor
            };
            if self.oracle.is_none() || !self.overlaps(lba, blocks) {
                if !random {
                    self.cursor += n;
                }
                return Some(lba);
            }
            if !random {
                return None;
            }
        }
        None
    }
}

/// Timing shared by every thread of a run.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// Start of the warmup.
    pub start: Instant,
    /// Start of the measured phase.
    pub measure: Instant,
    /// End of the measured phase.
    pub deadline: Instant,
    /// Width of one IOPS sample.
    pub interval: Duration,
    /// An I/O outstanding this long fails the run; also the drain limit.
    pub timeout: Duration,
}

/// What every thread shares with the controlling thread.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub stop: Arc<AtomicBool>,
    /// Completions so far, for the progress line.
    pub done: Arc<AtomicU64>,
}

/// A load thread's state.
#[derive(Debug)]
pub(crate) struct Worker {
    queues: Vec<WorkQueue>,
    random: bool,
    read_pct: u8,
    /// IOPS cap of this thread.
    rate: Option<f64>,
    submitted: u64,
    rng: StdRng,
    wbuf: Vec<u8>,
    counters: Vec<Counters>,
}

impl Worker {
    pub fn new(
        queues: Vec<WorkQueue>,
        targets: usize,
        random: bool,
        read_pct: u8,
        rate: Option<f64>,
        seed: u64,
    ) -> Worker {
        let max = queues
            .iter()
            .map(|q| q.geo.max_blocks as usize * q.geo.block_size as usize)
            .max()
            .unwrap_or(0);
        Worker {
            queues,
            random,
            read_pct,
            rate,
            submitted: 0,
            rng: StdRng::seed_from_u64(seed),
            // Without verify every write carries this fixed pattern.
            wbuf: (0..max).map(|i| (i % 251) as u8).collect(),
            counters: vec![Counters::default(); targets],
        }
    }

    /// Runs the schedule; returns the counters per target, and the error
    /// that ended the run early if any (the counters are then partial).
    pub fn run(mut self, s: &Schedule, sh: &Shared) -> (Vec<Counters>, Option<PerfError>) {
        let r = self.run_inner(s, sh);
        if r.is_err() {
            sh.stop.store(true, Ordering::Relaxed);
        }
        for q in &mut self.queues {
            q.qp.close();
        }
        (self.counters, r.err())
    }

    fn run_inner(&mut self, s: &Schedule, sh: &Shared) -> Result<(), PerfError> {
        let mut drain_deadline = None;
        let mut last_done = Instant::now();
        let mut spins = 0u32;
        loop {
            let now = Instant::now();
            let submitting = now < s.deadline && !sh.stop.load(Ordering::Relaxed);
            let mut completed = 0;
            let mut outstanding = 0;
            for qi in 0..self.queues.len() {
                if submitting {
                    self.fill(qi, s, now)?;
                }
                completed += self.reap(qi, s)?;
                outstanding += self.queues[qi].qp.outstanding();
            }
            if completed > 0 {
                sh.done.fetch_add(completed as u64, Ordering::Relaxed);
                last_done = now;
                spins = 0;
            } else if outstanding > 0 && now.duration_since(last_done) > s.timeout {
                let q = self
                    .queues
                    .iter()
                    .find(|q| q.qp.outstanding() > 0)
                    .unwrap_or(&self.queues[0]);
                return Err(q.host_err(HostError::Timeout {
                    what: "an I/O completion",
                    after: s.timeout,
                }));
            }
            if !submitting {
                if outstanding == 0 {
                    return Ok(());
                }
                let dl = *drain_deadline.get_or_insert(now + s.timeout);
                if now >= dl {
                    return Err(self.queues[0].host_err(HostError::Timeout {
                        what: "outstanding I/O to drain",
                        after: s.timeout,
                    }));
                }
            }
            if completed == 0 {
                spins += 1;
                if spins >= SPINS_BEFORE_WAIT || outstanding == 0 {
                    self.idle_wait(outstanding == 0)?;
                    spins = 0;
                }
            }
        }
    }

    /// Sleeps briefly on every socket so an idle thread leaves the CPU to the target.
    fn idle_wait(&self, rate_limited: bool) -> Result<(), PerfError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let wait = if rate_limited {
            Duration::from_micros(100)
        } else {
            IDLE_WAIT
        };
        let mut fds: Vec<PollFd<'_>> = self
            .queues
            .iter()
            .map(|q| {
                let mut f = PollFlags::IN;
                if q.qp.pending_tx() > 0 {
                    f |= PollFlags::OUT;
                }
                PollFd::from_borrowed_fd(q.qp.fd(), f)
            })
            .collect();
        let ts = Timespec::try_from(wait).expect("a millisecond fits a timespec");
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(self.queues[0].host_err(HostError::Io(e.into()))),
        }
    }

    fn rate_allows(&self, s: &Schedule, now: Instant) -> bool {
        match self.rate {
            None => true,
            Some(r) => {
                (self.submitted as f64) < r * now.duration_since(s.start).as_secs_f64() + 1.0
            }
        }
    }

    fn fill(&mut self, qi: usize, s: &Schedule, now: Instant) -> Result<(), PerfError> {
        let depth = self.queues[qi].inflight.len();
        while self.queues[qi].qp.outstanding() < depth && self.rate_allows(s, now) {
            let write = self.read_pct < 100 && self.rng.gen_range(0..100u8) >= self.read_pct;
            let random = self.random;
            let q = &mut self.queues[qi];
            let blocks = q.pick_blocks(&mut self.rng);
            let Some(lba) = q.pick_lba(blocks, random, &mut self.rng) else {
                return Ok(());
            };
            let bs = q.geo.block_size as usize;
            let len = blocks as usize * bs;
            let cmd = ReadWrite {
                nsid: q.geo.nsid,
                slba: lba,
                nlb: (blocks - 1) as u16,
                ..ReadWrite::default()
            };
            let mut gen = 0;
            let submitted = if write {
                if q.oracle.is_some() {
                    q.gen += 1;
                    gen = q.gen;
                    stamp(&mut self.wbuf[..len], bs, lba, gen);
                }
                q.qp.submit(
                    &cmd.to_command(opcode::io::WRITE, 0),
                    Data::Write(&self.wbuf[..len]),
                )
            } else {
                q.qp.submit(&cmd.to_command(opcode::io::READ, 0), Data::Read(len as u32))
            };
            let cid = match submitted {
                Ok(cid) => cid,
                Err(HostError::QueueFull { .. }) => {
                    if !random {
                        q.cursor = q.cursor.saturating_sub(u64::from(blocks));
                    }
                    return Ok(());
                }
                Err(e) => return Err(q.host_err(e)),
            };
            q.inflight[usize::from(cid.0)] = Some(Inflight {
                start: Instant::now(),
                lba,
                blocks,
                write,
                gen,
            });
            self.submitted += 1;
        }
        Ok(())
    }

    fn reap(&mut self, qi: usize, s: &Schedule) -> Result<usize, PerfError> {
        let q = &mut self.queues[qi];
        let mut out = std::mem::take(&mut q.out);
        out.clear();
        if let Err(e) = q.qp.poll(&mut out) {
            q.out = out;
            return Err(q.host_err(e));
        }
        let n = out.len();
        let now = Instant::now();
        let measured = now >= s.measure && now <= s.deadline;
        let slot = (now.saturating_duration_since(s.measure).as_nanos()
            / s.interval.as_nanos().max(1)) as usize;
        let bs = q.geo.block_size as usize;
        let counters = &mut self.counters[q.target];
        let mut result = Ok(n);
        for d in &out {
            let Some(f) = q.inflight[usize::from(d.cid.0)].take() else {
                continue;
            };
            let status = d.status();
            if !status.is_success() {
                result = Err(PerfError::IoFailed {
                    target: q.name.to_string(),
                    qid: q.qp.qid(),
                    op: if f.write { "write" } else { "read" },
                    lba: f.lba,
                    status,
                });
                break;
            }
            if let Err(e) = d.check() {
                result = Err(q.host_err(e));
                break;
            }
            if f.write {
                if let Some(o) = q.oracle.as_mut() {
                    o.written(f.lba, f.blocks, f.gen);
                }
            } else if let Some(o) = q.oracle.as_ref() {
                if let Err(mismatch) = o.check_read(q.qp.data(d.cid), bs, f.lba) {
                    result = Err(PerfError::Verify {
                        target: q.name.to_string(),
                        qid: q.qp.qid(),
                        mismatch,
                    });
                    break;
                }
                counters.verified_blocks += u64::from(f.blocks);
            }
            if measured {
                let lat = now.duration_since(f.start).as_nanos() as u64;
                let bytes = u64::from(f.blocks) * bs as u64;
                counters.record(f.write, bytes, lat, slot);
            }
        }
        q.out = out;
        result
    }
}
