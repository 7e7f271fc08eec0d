//! ferrite-replicator: `run --config FILE` (primary or secondary, by the file's `role`) and
//! `status --socket PATH`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferrite_replicator::{primary::Primary, secondary::Secondary, status, Config, Role};

#[derive(Debug, Parser)]
#[command(
    name = "ferrite-replicator",
    version,
    about = "Ferrite ordered remote copy"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the side the configuration file names.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a running replicator's status (JSON).
    Status {
        #[arg(long)]
        socket: PathBuf,
    },
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Args::parse().cmd {
        Cmd::Status { socket } => {
            let v = status::read(&socket)
                .with_context(|| format!("status socket {}", socket.display()))?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Run { config } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let cfg = Config::parse(&text).with_context(|| format!("{}", config.display()))?;
            let shared: status::Shared = Arc::new(Mutex::new(serde_json::json!({})));
            if let Some(p) = &cfg.status_socket {
                status::serve(p, Arc::clone(&shared))
                    .with_context(|| format!("status socket {}", p.display()))?;
            }
            let stop = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
            signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
            match cfg.role {
                Role::Primary => Primary::new(cfg, shared, stop)?.run(),
                Role::Secondary => Secondary::new(cfg, shared, stop)?.run(),
            }
        }
    }
}
