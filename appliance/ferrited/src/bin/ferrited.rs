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
use ferrite_daemon::{Config, Daemon, DaemonOptions, RpcSocket, StateDir};

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
    /// JSON-RPC control socket (default: /run/ferrite/ferrited.sock for root, else
    /// $XDG_RUNTIME_DIR/ferrite/ferrited.sock).
    #[arg(long, value_name = "PATH", conflicts_with = "no_rpc")]
    rpc_socket: Option<PathBuf>,
    /// Run without a control socket.
    #[arg(long)]
    no_rpc: bool,
    /// Persist every accepted change in DIR/state.toml and restore it at start (it then takes
    /// the place of --config; --listen, --cores, --idle still override).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at ADDR:PORT/metrics (off by default; port 0 picks
    /// one, logged at start).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
}

/// RUST_LOG as a plain level sets the starting level, which `log_set_level` can later raise;
/// module directives are taken as they are.
fn init_logging() {
    let env = std::env::var("RUST_LOG").unwrap_or_default();
    let plain: Option<log::LevelFilter> = if env.is_empty() {
        Some(log::LevelFilter::Info)
    } else {
        env.parse().ok()
    };
    match plain {
        Some(level) => {
            env_logger::Builder::new()
                .filter_level(log::LevelFilter::Trace)
                .init();
            log::set_max_level(level);
        }
        None => env_logger::Builder::from_env(env_logger::Env::default()).init(),
    }
}

fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let state = args.state_dir.as_deref().map(StateDir::open).transpose()?;
    let saved = match &state {
        Some(s) => s.load()?,
        None => None,
    };
    let mut config = match (saved, &args.config) {
        (Some(saved), _) => {
            if let (Some(s), Some(path)) = (&state, &args.config) {
                log::info!(
                    "restoring {} (ignoring {})",
                    s.file().display(),
                    path.display()
                );
            }
            saved
        }
        (None, Some(path)) => Config::load(path)?,
        (None, None) => Config::embedded_default(),
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
    let rpc = match (&args.rpc_socket, args.no_rpc) {
        (_, true) => RpcSocket::Disabled,
        (Some(path), false) => RpcSocket::Path(path.clone()),
        (None, false) => RpcSocket::Default,
    };
    let daemon = Daemon::start_with(
        &config,
        DaemonOptions {
            pin: !args.no_pin,
            rpc,
            state,
        },
    )?;
    // The scrape thread reads the same sources as stats_get; it never runs on a reactor.
    let mut metrics = match args.metrics {
        Some(addr) => {
            let app = Arc::clone(&daemon.control) as Arc<dyn ferrite_rpc::Appliance>;
            Some(ferrite_rpc::metrics::http::MetricsServer::start(addr, app)?)
        }
        None => None,
    };
    log::info!("ferrited ready on {:?}", daemon.listening);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    log::info!("signal received: shutting down");
    if let Some(m) = metrics.as_mut() {
        m.stop();
    }
    daemon.shutdown()
}
