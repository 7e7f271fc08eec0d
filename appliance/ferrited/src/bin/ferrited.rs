//! ferrited: the Ferrite NVMe-oF target. With no arguments it serves the embedded default:
//! NVMe/TCP and discovery on 127.0.0.1:4420, subsystem nqn.2026-01.io.ferrite:default allowing
//! any host, NSID 1 = 1 GiB of RAM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ferrite_daemon::{Config, Daemon};

#[derive(Debug, Parser)]
#[command(name = "ferrited", version, about = "Ferrite NVMe-oF target")]
struct Args {
    /// TOML configuration file (see docs/operations.md); without it the embedded default runs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (repeatable); replaces the configuration's listeners.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Reactor cores: a list ("0,1", "0-3") or a mask ("0x3").
    #[arg(long)]
    cores: Option<String>,
    /// Idle policy: "poll" (pure polling) or "park:AFTER:MAX" (sleep when idle).
    #[arg(long)]
    idle: Option<String>,
    /// Do not pin reactors to their cores (tests on shared machines).
    #[arg(long)]
    no_pin: bool,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if args.cores.is_some() {
        config.cores = args.cores.clone();
    }
    if args.idle.is_some() {
        config.idle = args.idle.clone();
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let daemon = Daemon::start(&config, !args.no_pin)?;
    log::info!("ferrited ready on {:?}", daemon.listening);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    log::info!("signal received: shutting down");
    daemon.shutdown()
}
