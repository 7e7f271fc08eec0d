//! `ferrite-perf`: NVMe/TCP benchmark harness (thin binary over the library).
//!
//! ```text
//! ferrite-perf -r 'trtype:tcp traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-01.io.ferrite:default' \
//!     -w randread -o 4k -q 32 --qpairs 1 --cores 1 -t 10 --warmup 2 --json out.json --svg plots/
//! ferrite-perf -r 'traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-01.io.ferrite:default' \
//!     --controllers 4 --qpairs 4 -q 8 -w randrw -o 4k..128k --verify -t 20
//! ferrite-perf limit --server-core 0 --cores 1 -w randread -o 4k -q 32 -t 10
//! ferrite-perf compare -r 'traddr:... subnqn:A' -r 'traddr:... subnqn:B' --rounds 5 -w randread
//! ```
//! Exit status: 0 success, 1 the run failed (partial results are still
//! printed), 2 bad command line or configuration.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferrite_perf::config::parse_size;
use ferrite_perf::limit::{self, LimitConfig};
use ferrite_perf::{compare, engine, svg, IoSize, PerfConfig, PerfError, TransportId, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "ferrite-perf",
    version,
    about = "NVMe/TCP benchmark harness",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
    /// Write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The TCP ceiling for the same traffic shape (no storage, no NVMe).
    Limit(LimitArgs),
    /// The same workload against two targets, alternately, several rounds.
    Compare {
        /// Rounds (each runs both targets once, order alternating).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Args)]
struct WorkloadArgs {
    /// randread, randwrite, read, write or randrw.
    #[arg(short = 'w', long, default_value = "randread")]
    workload: String,
    /// Percentage of reads for randrw.
    #[arg(short = 'M', long, default_value_t = 50)]
    rwmixread: u8,
    /// Bytes per I/O ("4k", "128k", "1m"), or a random size per I/O in a range ("4k..128k").
    #[arg(short = 'o', long, default_value = "4k")]
    io_size: String,
    /// Commands outstanding per queue pair.
    #[arg(short = 'q', long, default_value_t = 32)]
    queue_depth: u16,
    /// Queue pairs (connections) per target.
    #[arg(long, default_value_t = 1)]
    qpairs: u16,
    /// Cores for the load threads, one pinned thread each ("1", "1,2", "2-3").
    #[arg(short = 'c', long)]
    cores: Option<String>,
    /// Seconds measured.
    #[arg(short = 't', long, default_value_t = 10.0)]
    time: f64,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Target transport ID: 'trtype:tcp traddr:IP trsvcid:PORT subnqn:NQN [hostnqn:NQN] [ns:N]' (repeatable).
    #[arg(short = 'r', long = "target")]
    targets: Vec<String>,
    #[command(flatten)]
    w: WorkloadArgs,
    /// Controllers (NVMe-oF associations) per target, each with --qpairs queue pairs.
    #[arg(long, default_value_t = 1)]
    controllers: u16,
    /// Seconds of unmeasured load before the measured time.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Cap on total IOPS.
    #[arg(long)]
    rate: Option<u64>,
    /// Stamp every written block with its LBA and a generation; check every read.
    #[arg(long)]
    verify: bool,
    /// Use only the first this many bytes of each namespace ("64m", "1g" as "1024m").
    #[arg(long)]
    span: Option<String>,
    /// Request header digests.
    #[arg(long)]
    header_digest: bool,
    /// Request data digests.
    #[arg(long)]
    data_digest: bool,
    /// Connect and I/O timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Seconds per IOPS-over-time sample.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Write latency.svg and iops.svg into this directory.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Always print the progress line (default: when stderr is a terminal).
    #[arg(long, conflicts_with = "no_progress")]
    progress: bool,
    /// Never print the progress line.
    #[arg(long)]
    no_progress: bool,
    /// Random seed.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Only serve, on this address, until killed.
    #[arg(long, conflicts_with = "client")]
    server: Option<SocketAddr>,
    /// Only run the client against a server at this address.
    #[arg(long)]
    client: Option<SocketAddr>,
    /// Core of the server thread (server-only and combined modes).
    #[arg(long)]
    server_core: Option<usize>,
    #[command(flatten)]
    w: WorkloadArgs,
}

/// Usage errors exit 2, run failures 1.
enum Failure {
    Usage(String),
    Run(String),
}

impl From<PerfError> for Failure {
    fn from(e: PerfError) -> Failure {
        match e {
            PerfError::Config(_) => Failure::Usage(e.to_string()),
            e => Failure::Run(e.to_string()),
        }
    }
}

fn secs(flag: &str, v: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| Failure::Usage(format!("--{flag} {v} is not a duration")))
}

/// "1", "1,3", "2-3", "0,2-3".
fn parse_cores(s: &str) -> Result<Vec<usize>, Failure> {
    let bad = || Failure::Usage(format!("--cores {s:?}: expected a list like 1,2 or 2-3"));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

fn perf_config(a: &RunArgs) -> Result<PerfConfig, Failure> {
    let targets = a
        .targets
        .iter()
        .map(|t| t.parse::<TransportId>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut c = PerfConfig::new(targets);
    c.workload = a.w.workload.parse::<Workload>()?;
    c.rwmixread = a.w.rwmixread;
    c.io_size = IoSize::parse(&a.w.io_size)?;
    c.queue_depth = a.w.queue_depth;
    c.controllers = a.controllers;
    c.qpairs = a.w.qpairs;
    c.cores =
        a.w.cores
            .as_deref()
            .map(parse_cores)
            .transpose()?
            .unwrap_or_default();
    c.time = secs("time", a.w.time)?;
    c.warmup = secs("warmup", a.warmup)?;
    c.rate = a.rate;
    c.verify = a.verify;
    c.span_bytes = a
        .span
        .as_deref()
        .map(parse_size)
        .transpose()?
        .map(u64::from);
    c.header_digest = a.header_digest;
    c.data_digest = a.data_digest;
    c.timeout = secs("timeout", a.timeout)?;
    c.interval = secs("interval", a.interval)?;
    c.progress = a.progress
        || (!a.no_progress && std::io::stderr().is_terminal() && c.time >= Duration::from_secs(3));
    c.seed = a.seed;
    c.validate()?;
    Ok(c)
}

fn write_json<T: serde::Serialize>(path: &Option<PathBuf>, v: &T) -> Result<(), Failure> {
    let Some(path) = path else {
        return Ok(());
    };
    let text =
        serde_json::to_string_pretty(v).map_err(|e| Failure::Run(format!("encoding JSON: {e}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| Failure::Run(format!("writing {}: {e}", path.display())))
}

fn run(a: &RunArgs, json: &Option<PathBuf>) -> Result<(), Failure> {
    let mut cfg = perf_config(a)?;
    // Ctrl-C ends the run early and still reports what was measured.
    let interrupt = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupt))
        .map_err(|e| Failure::Run(format!("installing the SIGINT handler: {e}")))?;
    cfg.interrupt = Some(interrupt);
    let outcome = engine::run(&cfg)?;
    println!("{}", outcome.report);
    write_json(json, &outcome.report)?;
    if let Some(dir) = &a.svg {
        for p in svg::write_report_svgs(&outcome.report, dir, "")
            .map_err(|e| Failure::Run(e.to_string()))?
        {
            eprintln!("wrote {}", p.display());
        }
    }
    match outcome.error {
        Some(e) => Err(Failure::Run(e.to_string())),
        None => Ok(()),
    }
}

fn run_limit(a: &LimitArgs, json: &Option<PathBuf>) -> Result<(), Failure> {
    let workload = a.w.workload.parse::<Workload>()?;
    let io_size = parse_size(&a.w.io_size)?;
    if let Some(addr) = a.server {
        if let Some(core) = a.server_core {
            affinity::set_thread_affinity([core])
                .map_err(|e| Failure::Run(format!("pin to core {core}: {e}")))?;
        }
        let l = TcpListener::bind(addr).map_err(|e| Failure::Run(format!("bind {addr}: {e}")))?;
        eprintln!("ferrite-perf limit: serving on {addr} (until killed)");
        return limit::serve(l, &AtomicBool::new(false)).map_err(Failure::from);
    }
    let mut cfg = LimitConfig::for_workload(
        a.client
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        workload,
        io_size,
    );
    cfg.queue_depth = a.w.queue_depth;
    cfg.connections = a.w.qpairs;
    cfg.cores =
        a.w.cores
            .as_deref()
            .map(parse_cores)
            .transpose()?
            .unwrap_or_default();
    cfg.time = secs("time", a.w.time)?;
    let r = match a.client {
        Some(_) => limit::client(&cfg)?,
        None => limit::run_both(&cfg, a.server_core)?,
    };
    println!("{r}");
    write_json(json, &r)
}

fn run_compare(rounds: usize, a: &RunArgs, json: &Option<PathBuf>) -> Result<(), Failure> {
    let cfg = perf_config(a)?;
    let [ta, tb] = &cfg.targets[..] else {
        return Err(Failure::Usage(
            "compare needs exactly two -r targets".into(),
        ));
    };
    println!("compare: {}\nA: {ta}\nB: {tb}", cfg.describe());
    let r = compare::compare(&cfg, ta, tb, rounds, |r| println!("{r}"))?;
    println!(
        "median A/B over {} round(s): {:.3}",
        r.rounds.len(),
        r.median_ratio
    );
    write_json(json, &r)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let r = match &cli.cmd {
        None => run(&cli.run, &cli.json),
        Some(Cmd::Limit(a)) => run_limit(a, &cli.json),
        Some(Cmd::Compare { rounds, run }) => run_compare(*rounds, run, &cli.json),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("ferrite-perf: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Run(m)) => {
            eprintln!("ferrite-perf: error: {m}");
            ExitCode::FAILURE
        }
    }
}
