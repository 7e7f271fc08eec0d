//! `ferrite-load`: NVMe/TCP load client (the stand-in for ferrite-perf).
//!
//! ```text
//! ferrite-load --addr 127.0.0.1:4420 --subnqn nqn.2024-01.io.ferrite:disk1 \
//!     --controllers 2 --queues 4 --qd 32 --size 4k..128k --read-pct 70 --time 10 --verify
//! ```
//! Exits non-zero on any I/O error or verify mismatch (the message names the LBA).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferrite_host::load::{run, LoadConfig, SizeSpec};

/// NVMe/TCP load generator.
#[derive(Debug, Parser)]
#[command(name = "ferrite-load", version, about)]
struct Args {
    /// Target address (ip:port).
    #[arg(long)]
    addr: SocketAddr,
    /// Subsystem NQN.
    #[arg(long)]
    subnqn: String,
    /// Host NQN (default: the library's UUID host NQN).
    #[arg(long)]
    hostnqn: Option<String>,
    /// Namespace ID.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    /// Controllers to connect.
    #[arg(long, default_value_t = 1)]
    controllers: usize,
    /// I/O queues per controller.
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Queue depth per queue.
    #[arg(long, default_value_t = 32)]
    qd: u16,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    time: f64,
    /// I/O size: fixed ("4k") or a random range ("4k..128k").
    #[arg(long, default_value = "4k")]
    size: String,
    /// Percentage of reads (0 = all writes).
    #[arg(long, default_value_t = 100)]
    read_pct: u8,
    /// Stamp every written block with its LBA and a generation; check reads.
    #[arg(long)]
    verify: bool,
    /// Use only the first this many MiB of the namespace.
    #[arg(long)]
    span_mib: Option<u64>,
    /// Comma-separated cores; one pinned worker thread per core.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Request header digests.
    #[arg(long)]
    header_digest: bool,
    /// Request data digests.
    #[arg(long)]
    data_digest: bool,
    /// Random seed.
    #[arg(long, default_value_t = 0x5EED)]
    seed: u64,
    /// Connect and per-command timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

fn seconds(what: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{what} {v} is not a duration"))
}

fn config(a: Args) -> anyhow::Result<LoadConfig> {
    let mut c = LoadConfig::new(a.addr, a.subnqn);
    c.hostnqn = a.hostnqn;
    c.nsid = a.nsid;
    c.controllers = a.controllers;
    c.queues = a.queues;
    c.queue_depth = a.qd;
    c.duration = seconds("time", a.time)?;
    c.size = SizeSpec::parse(&a.size)?;
    c.read_pct = a.read_pct;
    c.verify = a.verify;
    c.span_bytes = a.span_mib.map(|m| m * 1024 * 1024);
    c.cores = a.cores;
    c.header_digest = a.header_digest;
    c.data_digest = a.data_digest;
    c.seed = a.seed;
    c.timeout = seconds("timeout", a.timeout)?;
    Ok(c)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrite-load: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrite-load: {e}");
            ExitCode::FAILURE
        }
    }
}
