//! One load worker thread: keeps its queues full, reaps completions,
//! records latency and checks reads against the oracle.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrite_nvme::command::opcode;
use ferrite_nvme::io::ReadWrite;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::verify::{stamp, Oracle};
use super::{LoadError, LoadStats, Plan};
use crate::error::HostError;
use crate::qpair::{Completed, Data, QueuePair};

/// Tries at finding a free (non-overlapping) range before giving up for this round.
const PICK_TRIES: usize = 8;
/// How long an idle worker sleeps on its sockets.
const IDLE_WAIT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
struct Inflight {
    start: Instant,
    lba: u64,
    blocks: u32,
    write: bool,
    gen: u64,
}

/// A queue as a worker drives it.
#[derive(Debug)]
pub(super) struct WorkerQueue {
    controller: usize,
    qp: QueuePair,
    first_lba: u64,
    blocks: u64,
    oracle: Option<Oracle>,
    inflight: Vec<Option<Inflight>>,
    out: Vec<Completed>,
    gen: u64,
}

impl WorkerQueue {
    pub fn new(controller: usize, qp: QueuePair) -> WorkerQueue {
        let depth = usize::from(qp.depth());
        WorkerQueue {
            controller,
            qp,
            first_lba: 0,
            blocks: 0,
            oracle: None,
            inflight: vec![None; depth],
            out: Vec::with_capacity(depth),
            gen: 0,
        }
    }

    /// Blocks this queue may touch; `verify` tracks generations over them.
    pub fn set_region(&mut self, first_lba: u64, blocks: u64, verify: bool) {
        self.first_lba = first_lba;
        self.blocks = blocks;
        self.oracle = verify.then(|| Oracle::new(first_lba, blocks));
        // Generations are unique per queue: queue id and controller in the top bits.
        self.gen = ((self.controller as u64) << 48) | (u64::from(self.qp.qid()) << 40);
    }

    fn host_err(&self, source: HostError) -> LoadError {
        LoadError::Host {
            controller: self.controller,
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
}

/// A worker thread's state.
#[derive(Debug)]
pub(super) struct Worker {
    queues: Vec<WorkerQueue>,
    plan: Plan,
    depth: u16,
    rng: StdRng,
    timeout: Duration,
    wbuf: Vec<u8>,
    stats: LoadStats,
}

impl Worker {
    pub fn new(
        _id: usize,
        queues: Vec<WorkerQueue>,
        plan: Plan,
        depth: u16,
        seed: u64,
        timeout: Duration,
    ) -> Worker {
        let max = plan.max_blocks as usize * plan.block_size as usize;
        // Without verify every write carries this fixed pattern.
        let wbuf = (0..max).map(|i| (i % 251) as u8).collect();
        Worker {
            queues,
            plan,
            depth,
            rng: StdRng::seed_from_u64(seed),
            timeout,
            wbuf,
            stats: LoadStats::new(),
        }
    }

    /// Runs until `deadline` (or `stop`), then drains. Sets `stop` on error
    /// so the other workers end early too.
    pub fn run(mut self, deadline: Instant, stop: &AtomicBool) -> Result<LoadStats, LoadError> {
        match self.run_inner(deadline, stop) {
            Ok(()) => Ok(self.stats),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn run_inner(&mut self, deadline: Instant, stop: &AtomicBool) -> Result<(), LoadError> {
        let mut drain_deadline = None;
        loop {
            let now = Instant::now();
            let submitting = now < deadline && !stop.load(Ordering::Relaxed);
            let mut completed = 0;
            let mut outstanding = 0;
            for qi in 0..self.queues.len() {
                if submitting {
                    self.fill(qi)?;
                }
                completed += self.reap(qi)?;
                outstanding += self.queues[qi].qp.outstanding();
            }
            if !submitting {
                if outstanding == 0 {
                    return Ok(());
                }
                let dl = *drain_deadline.get_or_insert(now + self.timeout);
                if now >= dl {
                    let q = &self.queues[0];
                    return Err(q.host_err(HostError::Timeout {
                        what: "outstanding I/O to drain",
                        after: self.timeout,
                    }));
                }
            }
            if completed == 0 {
                self.idle_wait()?;
            }
        }
    }

    /// Sleeps briefly on every socket so an idle worker leaves the CPU to the target.
    fn idle_wait(&self) -> Result<(), LoadError> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds: Vec<PollFd<'_>> = self
            .queues
            .iter()
            .map(|q| {
                let mut f = PollFlags::IN;
                if q.qp.pending_tx() > 0 {
                    f |= PollFlags::OUT;
                }
                PollFd::from_borrowed_fd(q.qp.stream().as_fd(), f)
            })
            .collect();
        let ts = Timespec::try_from(IDLE_WAIT).expect("1 ms fits a timespec");
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(self.queues[0].host_err(HostError::Io(e.into()))),
        }
    }

    fn pick_blocks(&mut self) -> u32 {
        let p = &self.plan;
        if !p.random {
            return p.min_blocks;
        }
        // 4 KiB granularity when the block size and range allow it.
        let g = (4096 / p.block_size).max(1);
        let g = if p.min_blocks % g == 0 && p.max_blocks % g == 0 {
            g
        } else {
            1
        };
        g * self.rng.gen_range(p.min_blocks / g..=p.max_blocks / g)
    }

    fn fill(&mut self, qi: usize) -> Result<(), LoadError> {
        while self.queues[qi].qp.outstanding() < usize::from(self.depth) {
            let blocks = self.pick_blocks();
            let write = self.rng.gen_range(0..100u8) >= self.plan.read_pct;
            let q = &self.queues[qi];
            let slots = q.blocks - u64::from(blocks) + 1;
            let align = u64::from(blocks.min((4096 / self.plan.block_size).max(1)));
            let mut lba = None;
            for _ in 0..PICK_TRIES {
                let cand = q.first_lba + self.rng.gen_range(0..slots) / align * align;
                if q.oracle.is_none() || !q.overlaps(cand, blocks) {
                    lba = Some(cand);
                    break;
                }
            }
            let Some(lba) = lba else {
                return Ok(());
            };
            let len = blocks as usize * self.plan.block_size as usize;
            let q = &mut self.queues[qi];
            let cmd = ReadWrite {
                nsid: self.plan.nsid,
                slba: lba,
                nlb: (blocks - 1) as u16,
                ..ReadWrite::default()
            };
            let mut gen = 0;
            let submitted = if write {
                if q.oracle.is_some() {
                    q.gen += 1;
                    gen = q.gen;
                    stamp(
                        &mut self.wbuf[..len],
                        self.plan.block_size as usize,
                        lba,
                        gen,
                    );
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
                Err(HostError::QueueFull { .. }) => return Ok(()),
                Err(e) => return Err(q.host_err(e)),
            };
            q.inflight[usize::from(cid.0)] = Some(Inflight {
                start: Instant::now(),
                lba,
                blocks,
                write,
                gen,
            });
        }
        Ok(())
    }

    fn reap(&mut self, qi: usize) -> Result<usize, LoadError> {
        let q = &mut self.queues[qi];
        let mut out = std::mem::take(&mut q.out);
        out.clear();
        if let Err(e) = q.qp.poll(&mut out) {
            return Err(q.host_err(e));
        }
        let n = out.len();
        let bs = self.plan.block_size as usize;
        for d in &out {
            let Some(f) = q.inflight[usize::from(d.cid.0)].take() else {
                continue;
            };
            let lat = f.start.elapsed().as_nanos().max(1) as u64;
            let _ = self.stats.latency_ns.record(lat.min(60_000_000_000));
            let status = d.status();
            if !status.is_success() {
                return Err(LoadError::IoFailed {
                    controller: q.controller,
                    qid: q.qp.qid(),
                    lba: f.lba,
                    status,
                });
            }
            if let Err(e) = d.check() {
                return Err(q.host_err(e));
            }
            let bytes = u64::from(f.blocks) * bs as u64;
            if f.write {
                self.stats.writes += 1;
                self.stats.write_bytes += bytes;
                if let Some(o) = q.oracle.as_mut() {
                    o.written(f.lba, f.blocks, f.gen);
                }
            } else {
                self.stats.reads += 1;
                self.stats.read_bytes += bytes;
                if let Some(o) = q.oracle.as_ref() {
                    o.check_read(q.qp.data(d.cid), bs, f.lba)
                        .map_err(|mismatch| LoadError::Verify {
                            controller: q.controller,
                            qid: q.qp.qid(),
                            mismatch,
                        })?;
                    self.stats.verified_blocks += u64::from(f.blocks);
                }
            }
        }
        q.out = out;
        Ok(n)
    }
}
