//! The engine of `ferrite-load`: N controllers x M I/O queues, random or
//! fixed-size reads and writes at a queue depth for a time, optional
//! write-generation verification, IOPS / bandwidth / latency report.
//!
//! The calling thread connects the controllers and keeps their admin
//! queues alive; worker threads (one per `--cores` entry, pinned, or one
//! unpinned) each drive a share of the I/O queues in a poll loop.

mod verify;
mod worker;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use thiserror::Error;

use crate::controller::{ConnectOptions, Controller};
use crate::error::HostError;
pub use verify::{check_block, stamp, Mismatch, MismatchKind, Oracle};
use worker::{Worker, WorkerQueue};

/// Errors of a load run.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The configuration cannot run.
    #[error("invalid load configuration: {0}")]
    Config(String),
    /// Connecting or running I/O failed.
    #[error("controller {controller}, queue {qid}: {source}")]
    Host {
        /// Controller index.
        controller: usize,
        /// Queue.
        qid: u16,
        /// The error.
        source: HostError,
    },
    /// Connecting a controller failed.
    #[error("connecting controller {controller}: {source}")]
    Connect {
        /// Controller index.
        controller: usize,
        /// The error.
        source: HostError,
    },
    /// A command completed with an error status.
    #[error("controller {controller}, queue {qid}: I/O at LBA {lba} failed: {status}")]
    IoFailed {
        /// Controller index.
        controller: usize,
        /// Queue.
        qid: u16,
        /// First LBA of the I/O.
        lba: u64,
        /// The status.
        status: ferrite_nvme::Status,
    },
    /// Verify mode found wrong data.
    #[error("controller {controller}, queue {qid}: {mismatch}")]
    Verify {
        /// Controller index.
        controller: usize,
        /// Queue.
        qid: u16,
        /// What was wrong.
        mismatch: Mismatch,
    },
    /// A worker thread panicked or could not be pinned.
    #[error("worker: {0}")]
    Worker(String),
}

/// I/O sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    /// Always this many bytes.
    Fixed(u32),
    /// Uniformly random multiples of 4 KiB (or the block size) in `min..=max`.
    Random {
        /// Smallest.
        min: u32,
        /// Largest.
        max: u32,
    },
}

impl SizeSpec {
    /// Parses "4k", "128k", "1m", "4096", or a range "4k..128k".
    pub fn parse(s: &str) -> Result<SizeSpec, LoadError> {
        fn one(s: &str) -> Result<u32, LoadError> {
            let s = s.trim().to_ascii_lowercase();
            let (num, mul) = match s.strip_suffix('k') {
                Some(n) => (n, 1024),
                None => match s.strip_suffix('m') {
                    Some(n) => (n, 1024 * 1024),
                    None => (s.as_str(), 1),
                },
            };
            num.parse::<u32>()
                .ok()
                .and_then(|n| n.checked_mul(mul))
                .filter(|&n| n > 0)
                .ok_or_else(|| LoadError::Config(format!("bad size {s:?}")))
        }
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (one(a)?, one(b)?);
                if min > max {
                    return Err(LoadError::Config(format!("size range {s:?} is reversed")));
                }
                Ok(SizeSpec::Random { min, max })
            }
            None => Ok(SizeSpec::Fixed(one(s)?)),
        }
    }

    /// The largest size.
    pub fn max(&self) -> u32 {
        match *self {
            SizeSpec::Fixed(n) => n,
            SizeSpec::Random { max, .. } => max,
        }
    }
}

/// A load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Target address.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN (None: the library default).
    pub hostnqn: Option<String>,
    /// Namespace.
    pub nsid: u32,
    /// Controllers to connect.
    pub controllers: usize,
    /// I/O queues per controller.
    pub queues: u16,
    /// Commands outstanding per queue.
    pub queue_depth: u16,
    /// How long to run.
    pub duration: Duration,
    /// I/O sizes.
    pub size: SizeSpec,
    /// Percentage of reads (0..=100).
    pub read_pct: u8,
    /// Stamp writes and check reads.
    pub verify: bool,
    /// Restrict I/O to the first this many bytes of the namespace.
    pub span_bytes: Option<u64>,
    /// Cores to pin worker threads to (one worker per core).
    pub cores: Vec<usize>,
    /// Header digests.
    pub header_digest: bool,
    /// Data digests.
    pub data_digest: bool,
    /// Random seed.
    pub seed: u64,
    /// Connect and command timeout.
    pub timeout: Duration,
}

impl LoadConfig {
    /// One controller, one queue, QD 32, 4 KiB random reads for 10 s.
    pub fn new(addr: SocketAddr, subnqn: impl Into<String>) -> LoadConfig {
        LoadConfig {
            addr,
            subnqn: subnqn.into(),
            hostnqn: None,
            nsid: 1,
            controllers: 1,
            queues: 1,
            queue_depth: 32,
            duration: Duration::from_secs(10),
            size: SizeSpec::Fixed(4096),
            read_pct: 100,
            verify: false,
            span_bytes: None,
            cores: Vec::new(),
            header_digest: false,
            data_digest: false,
            seed: 0x5EED,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of one worker or of the whole run.
#[derive(Debug, Clone)]
pub struct LoadStats {
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Blocks checked by verify.
    pub verified_blocks: u64,
    /// Completion latency in nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl LoadStats {
    fn new() -> LoadStats {
        LoadStats {
            reads: 0,
            writes: 0,
            read_bytes: 0,
            write_bytes: 0,
            verified_blocks: 0,
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    fn merge(&mut self, o: &LoadStats) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
        self.verified_blocks += o.verified_blocks;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_ns.add(&o.latency_ns);
    }
}

/// Result of a run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Totals.
    pub stats: LoadStats,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Controllers x queues x depth, for the header line.
    pub shape: (usize, u16, u16),
}

impl LoadReport {
    /// Operations per second.
    pub fn iops(&self) -> f64 {
        (self.stats.reads + self.stats.writes) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// MiB per second, both directions.
    pub fn mib_per_sec(&self) -> f64 {
        (self.stats.read_bytes + self.stats.write_bytes) as f64
            / (1024.0 * 1024.0)
            / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// (average, p50, p99, max) latency in microseconds.
    pub fn latency_us(&self) -> (f64, f64, f64, f64) {
        let h = &self.stats.latency_ns;
        if h.is_empty() {
            return (0.0, 0.0, 0.0, 0.0);
        }
        (
            h.mean() / 1000.0,
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
        )
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        let (c, q, d) = self.shape;
        let (avg, p50, p99, max) = self.latency_us();
        writeln!(
            f,
            "{c} controller(s) x {q} queue(s) x QD {d}, {:.2} s",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "ops {} (reads {}, writes {})  IOPS {:.1}  MiB/s {:.2}",
            s.reads + s.writes,
            s.reads,
            s.writes,
            self.iops(),
            self.mib_per_sec()
        )?;
        write!(
            f,
            "latency us: avg {avg:.1}  p50 {p50:.1}  p99 {p99:.1}  max {max:.1}"
        )?;
        if s.verified_blocks > 0 {
            write!(f, "\nverified blocks {}", s.verified_blocks)?;
        }
        Ok(())
    }
}

/// Connects, runs the load, disconnects.
pub fn run(cfg: &LoadConfig) -> Result<LoadReport, LoadError> {
    if cfg.controllers == 0 || cfg.queues == 0 || cfg.queue_depth == 0 {
        return Err(LoadError::Config(
            "controllers, queues and queue depth must be non-zero".into(),
        ));
    }
    if cfg.read_pct > 100 {
        return Err(LoadError::Config("read percentage above 100".into()));
    }
    let mut ctrls = Vec::with_capacity(cfg.controllers);
    let mut queues = Vec::new();
    let mut geometry = None;
    for i in 0..cfg.controllers {
        let mut o = ConnectOptions::new(cfg.addr, cfg.subnqn.clone());
        if let Some(h) = &cfg.hostnqn {
            o.hostnqn = h.clone();
        }
        o.io_queues = cfg.queues;
        o.queue_depth = cfg.queue_depth;
        o.header_digest = cfg.header_digest;
        o.data_digest = cfg.data_digest;
        o.timeout = cfg.timeout;
        o.max_transfer = o.max_transfer.max(cfg.size.max());
        let connect_err = |source| LoadError::Connect {
            controller: i,
            source,
        };
        let mut c = Controller::connect(o).map_err(connect_err)?;
        if geometry.is_none() {
            let ns = c.identify_namespace(cfg.nsid).map_err(connect_err)?;
            let bs = c.block_size(cfg.nsid).map_err(connect_err)?;
            geometry = Some((bs, ns.nsze.get(), c.max_transfer()));
        }
        for qp in c.take_io_queues() {
            queues.push(WorkerQueue::new(i, qp));
        }
        ctrls.push(c);
    }
    let (bs, nsze, max_transfer) = geometry.expect("at least one controller connected");
    let plan = Plan::new(cfg, bs, nsze, max_transfer)?;
    let report = run_workers(cfg, &plan, queues, &mut ctrls);
    for c in ctrls {
        c.disconnect();
    }
    report
}

/// Sizes and ranges every worker follows.
#[derive(Debug, Clone)]
struct Plan {
    nsid: u32,
    block_size: u32,
    /// Blocks I/O may touch (from LBA 0).
    span_blocks: u64,
    /// I/O size bounds in blocks.
    min_blocks: u32,
    max_blocks: u32,
    random: bool,
    read_pct: u8,
    verify: bool,
}

impl Plan {
    fn new(cfg: &LoadConfig, bs: u32, nsze: u64, max_transfer: u32) -> Result<Plan, LoadError> {
        let span = cfg
            .span_bytes
            .map_or(nsze, |b| (b / u64::from(bs)).min(nsze));
        let (min, max, random) = match cfg.size {
            SizeSpec::Fixed(n) => (n, n, false),
            SizeSpec::Random { min, max } => (min, max, true),
        };
        if min % bs != 0 || max % bs != 0 {
            return Err(LoadError::Config(format!(
                "I/O sizes must be multiples of the {bs}-byte block size"
            )));
        }
        if max > max_transfer {
            return Err(LoadError::Config(format!(
                "I/O size {max} exceeds the controller's maximum transfer of {max_transfer}"
            )));
        }
        if cfg.verify && (bs as usize) < verify::MIN_BLOCK {
            return Err(LoadError::Config("block size too small to verify".into()));
        }
        let max_blocks = max / bs;
        if span < u64::from(max_blocks) {
            return Err(LoadError::Config(
                "span smaller than the largest I/O".into(),
            ));
        }
        Ok(Plan {
            nsid: cfg.nsid,
            block_size: bs,
            span_blocks: span,
            min_blocks: min / bs,
            max_blocks,
            random,
            read_pct: cfg.read_pct,
            verify: cfg.verify,
        })
    }
}

fn run_workers(
    cfg: &LoadConfig,
    plan: &Plan,
    mut queues: Vec<WorkerQueue>,
    ctrls: &mut [Controller],
) -> Result<LoadReport, LoadError> {
    let total_queues = queues.len() as u64;
    if plan.verify {
        // Disjoint regions: no two queues ever touch the same block.
        let per = plan.span_blocks / total_queues;
        if per < u64::from(plan.max_blocks) {
            return Err(LoadError::Config(
                "namespace too small for one verify region per queue".into(),
            ));
        }
        for (i, q) in queues.iter_mut().enumerate() {
            q.set_region(i as u64 * per, per, true);
        }
    } else {
        for q in queues.iter_mut() {
            q.set_region(0, plan.span_blocks, false);
        }
    }
    let threads = cfg.cores.len().max(1);
    let mut shares: Vec<Vec<WorkerQueue>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, q) in queues.into_iter().enumerate() {
        shares[i % threads].push(q);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(i, share)| {
            let core = cfg.cores.get(i).copied();
            let worker = Worker::new(
                i,
                share,
                plan.clone(),
                cfg.queue_depth,
                cfg.seed.wrapping_add(i as u64),
                cfg.timeout,
            );
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("ferrite-load-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        affinity::set_thread_affinity([core])
                            .map_err(|e| LoadError::Worker(format!("pin to core {core}: {e}")))?;
                    }
                    worker.run(deadline, &stop)
                })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| LoadError::Worker(e.to_string()))?;
    // Keep the admin queues alive while the workers run.
    let mut admin_err = None;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200).min(cfg.duration));
        for (i, c) in ctrls.iter_mut().enumerate() {
            if let Err(source) = c.keep_alive() {
                admin_err.get_or_insert(LoadError::Host {
                    controller: i,
                    qid: 0,
                    source,
                });
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
    let mut total = LoadStats::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(LoadError::Worker("a worker panicked".into()));
            }
        }
    }
    if let Some(e) = first_err.or(admin_err) {
        return Err(e);
    }
    Ok(LoadReport {
        stats: total,
        elapsed: start.elapsed(),
        shape: (cfg.controllers, cfg.queues, cfg.queue_depth),
    })
}

#[cfg(test)]
mod tests;
