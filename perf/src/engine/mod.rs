//! A run: connect every target (one or more controllers each), spread the queue pairs over pinned load
//! threads, keep the admin queues alive and print progress while they run,
//! then merge the counters into a report (partial when the run failed).

mod worker;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_host::{ConnectOptions, Controller};

use crate::config::PerfConfig;
use crate::error::PerfError;
use crate::report::PerfReport;
use crate::stats::Counters;
use crate::target::TransportId;
use worker::{Geometry, QueueTag, Region, Schedule, Shared, WorkQueue, Worker};

/// How often the admin queues get a Keep Alive.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(2);
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a run produced: the report (partial when `error` is set) and the error that ended it.
#[derive(Debug)]
pub struct Outcome {
    /// Results up to the end (or the failure).
    pub report: PerfReport,
    /// Why the run ended early.
    pub error: Option<PerfError>,
}

struct Connected {
    ctrl: Controller,
    name: Arc<str>,
}

/// Connects `cfg.controllers` controllers to one target and splits its namespace over
/// their queue pairs.
fn connect(
    cfg: &PerfConfig,
    index: usize,
    t: &TransportId,
    ctrls: &mut Vec<Connected>,
    queues: &mut Vec<WorkQueue>,
) -> Result<(), PerfError> {
    let name: Arc<str> = Arc::from(t.to_string());
    let err = |source| PerfError::Connect {
        target: name.to_string(),
        source,
    };
    let mut o = ConnectOptions::new(t.addr, t.subnqn.clone());
    o.trtype = t.trtype;
    if let Some(h) = &t.hostnqn {
        o.hostnqn = h.clone();
    }
    o.io_queues = cfg.qpairs;
    o.queue_depth = cfg.queue_depth;
    o.header_digest = cfg.header_digest;
    o.data_digest = cfg.data_digest;
    o.timeout = cfg.timeout;
    o.max_transfer = o.max_transfer.max(cfg.io_size.max);
    let mut first = Controller::connect(o.clone()).map_err(err)?;
    let geo = match geometry(cfg, t, &name, &mut first) {
        Ok(g) => g,
        Err(e) => {
            first.disconnect();
            return Err(e);
        }
    };
    ctrls.push(Connected {
        ctrl: first,
        name: name.clone(),
    });
    for _ in 1..cfg.controllers {
        let ctrl = Controller::connect(o.clone()).map_err(err)?;
        ctrls.push(Connected {
            ctrl,
            name: name.clone(),
        });
    }
    let per_target = usize::from(cfg.controllers);
    let n = u64::from(cfg.qpairs) * u64::from(cfg.controllers);
    // Whole largest I/Os per queue share; verify gives each queue its own
    // share so no two queues (of any controller) ever write the same block.
    let unit = u64::from(geo.max_blocks);
    let share = geo.span / n / unit * unit;
    if share == 0 {
        return Err(PerfError::Config(format!(
            "{name}: namespace span of {} blocks is too small for {n} qpair(s) of {}-byte I/O",
            geo.span, cfg.io_size.max
        )));
    }
    let span_io = geo.span / unit * unit;
    let own = ctrls.len() - per_target;
    let mut i = 0u64;
    for (ci, c) in ctrls[own..].iter_mut().enumerate() {
        for qp in c.ctrl.take_io_queues() {
            let off = i * share;
            let region = if cfg.verify {
                Region {
                    first_lba: off,
                    blocks: share,
                    cursor: 0,
                }
            } else {
                // Whole span, sequential streams start spread out.
                Region {
                    first_lba: 0,
                    blocks: span_io,
                    cursor: off,
                }
            };
            let id = QueueTag {
                target: index,
                controller: ci,
                name: name.clone(),
            };
            queues.push(WorkQueue::new(id, qp, geo.clone(), region, cfg.verify));
            i += 1;
        }
    }
    Ok(())
}

/// Identifies the namespace and checks the configured sizes against it.
fn geometry(
    cfg: &PerfConfig,
    t: &TransportId,
    name: &str,
    ctrl: &mut Controller,
) -> Result<Geometry, PerfError> {
    let err = |source| PerfError::Connect {
        target: name.to_string(),
        source,
    };
    let ns = ctrl.identify_namespace(t.nsid).map_err(err)?;
    let bs = ctrl.block_size(t.nsid).map_err(err)?;
    let bad = |m: String| Err(PerfError::Config(format!("{name}: {m}")));
    if ns.nsze.get() == 0 {
        return bad(format!("namespace {} is not active", t.nsid));
    }
    let size = cfg.io_size;
    if size.min % bs != 0 || size.max % bs != 0 {
        return bad(format!(
            "--io-size {size} is not a multiple of the {bs}-byte block size"
        ));
    }
    if size.max > ctrl.max_transfer() {
        return bad(format!(
            "--io-size {size} exceeds the controller's maximum transfer of {}",
            ctrl.max_transfer()
        ));
    }
    if cfg.verify && (bs as usize) < crate::verify::MIN_BLOCK {
        return bad("block size too small to carry a verify stamp".into());
    }
    let span = cfg
        .span_bytes
        .map_or(ns.nsze.get(), |b| (b / u64::from(bs)).min(ns.nsze.get()));
    Ok(Geometry {
        nsid: t.nsid,
        block_size: bs,
        min_blocks: size.min / bs,
        max_blocks: size.max / bs,
        span,
    })
}

/// Runs `cfg`. Errors before any I/O (configuration, connect) are `Err`;
/// failures during the run come back in [`Outcome::error`] with partial results.
pub fn run(cfg: &PerfConfig) -> Result<Outcome, PerfError> {
    cfg.validate()?;
    let mut ctrls: Vec<Connected> = Vec::new();
    let mut queues = Vec::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        match connect(cfg, i, t, &mut ctrls, &mut queues) {
            Ok(()) => {}
            Err(e) => {
                for c in ctrls {
                    c.ctrl.disconnect();
                }
                return Err(e);
            }
        }
    }
    let outcome = run_connected(cfg, queues, &mut ctrls);
    for c in ctrls {
        c.ctrl.disconnect();
    }
    outcome
}

fn run_connected(
    cfg: &PerfConfig,
    queues: Vec<WorkQueue>,
    ctrls: &mut [Connected],
) -> Result<Outcome, PerfError> {
    let threads = cfg.cores.len().max(1).min(queues.len());
    let mut shares: Vec<Vec<WorkQueue>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, q) in queues.into_iter().enumerate() {
        shares[i % threads].push(q);
    }
    let start = Instant::now();
    let sched = Schedule {
        start,
        measure: start + cfg.warmup,
        deadline: start + cfg.warmup + cfg.time,
        interval: cfg.interval,
        timeout: cfg.timeout,
    };
    let shared = Shared {
        stop: Arc::new(AtomicBool::new(false)),
        done: Arc::new(AtomicU64::new(0)),
    };
    let read_pct = cfg.workload.read_pct(cfg.rwmixread);
    let rate = cfg.rate.map(|r| r as f64 / threads as f64);
    let mut handles = Vec::with_capacity(threads);
    for (i, share) in shares.into_iter().enumerate() {
        let core = cfg.cores.get(i).copied();
        let worker = Worker::new(
            share,
            cfg.targets.len(),
            cfg.workload.is_random(),
            read_pct,
            rate,
            cfg.seed.wrapping_add(i as u64),
        );
        let (sched, sh) = (sched.clone(), shared.clone());
        let h = std::thread::Builder::new()
            .name(format!("ferrite-perf-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    if let Err(e) = affinity::set_thread_affinity([core]) {
                        sh.stop.store(true, Ordering::Relaxed);
                        let e = PerfError::Worker(format!("pin to core {core}: {e}"));
                        return (Vec::new(), Some(e));
                    }
                }
                worker.run(&sched, &sh)
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                log::error!("spawning a load thread: {e}");
                break;
            }
        }
    }
    let admin_err = supervise(cfg, &sched, &shared, ctrls, &handles);
    let ended = Instant::now().min(sched.deadline);
    let mut per_target = vec![Counters::default(); cfg.targets.len()];
    let mut first_err = None;
    let spawned = handles.len();
    for h in handles {
        match h.join() {
            Ok((counters, err)) => {
                for (acc, c) in per_target.iter_mut().zip(&counters) {
                    acc.merge(c);
                }
                if let Some(e) = err {
                    first_err.get_or_insert(e);
                }
            }
            Err(_) => {
                first_err.get_or_insert(PerfError::Worker("a load thread panicked".into()));
            }
        }
    }
    if spawned < threads {
        first_err.get_or_insert(PerfError::Worker(
            "could not start every load thread".into(),
        ));
    }
    let error = first_err.or(admin_err);
    let elapsed = ended.saturating_duration_since(sched.measure);
    let names: Vec<String> = cfg.targets.iter().map(ToString::to_string).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let report = PerfReport::new(cfg, &names, &per_target, elapsed, error.as_ref());
    Ok(Outcome { report, error })
}

/// The controlling thread: Keep Alive on every admin queue, the progress
/// line, and an early stop when a load thread fails. Returns an admin queue failure.
fn supervise(
    cfg: &PerfConfig,
    s: &Schedule,
    shared: &Shared,
    ctrls: &mut [Connected],
    handles: &[std::thread::JoinHandle<(Vec<Counters>, Option<PerfError>)>],
) -> Option<PerfError> {
    let mut admin_err = None;
    let mut last_ka = Instant::now();
    let mut last_progress = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        if cfg
            .interrupt
            .as_ref()
            .is_some_and(|i| i.load(Ordering::Relaxed))
        {
            shared.stop.store(true, Ordering::Relaxed);
        }
        if admin_err.is_none() && now.duration_since(last_ka) >= KEEP_ALIVE_EVERY {
            last_ka = now;
            for c in ctrls.iter_mut() {
                if let Err(source) = c.ctrl.keep_alive() {
                    admin_err = Some(PerfError::Host {
                        target: c.name.to_string(),
                        qid: 0,
                        source,
                    });
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        if cfg.progress && now.duration_since(last_progress.0) >= PROGRESS_EVERY {
            let done = shared.done.load(Ordering::Relaxed);
            let secs = now.duration_since(last_progress.0).as_secs_f64();
            let iops = (done - last_progress.1) as f64 / secs;
            let phase = if now < s.measure { "warmup" } else { "run" };
            let at = now.duration_since(s.start).as_secs_f64();
            let total = (s.deadline - s.start).as_secs_f64();
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r[{phase} {at:5.1}/{total:.0} s] {iops:>12.0} IOPS {:>10.1} MiB/s  ",
                iops * f64::from(cfg.io_size.min / 2 + cfg.io_size.max / 2) / (1024.0 * 1024.0)
            );
            let _ = err.flush();
            last_progress = (now, done);
        }
    }
    if cfg.progress {
        eprintln!();
    }
    admin_err
}
