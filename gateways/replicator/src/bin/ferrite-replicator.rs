//! ferrite-replicator: `run --config FILE` (primary or secondary, by the file's `role`) and
//! `status --socket PATH`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferrite_replicator::{primary::Primary, resync, secondary::Secondary, status, Config, Role};

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
    /// Run only the configuration's `[copy]` (a full copy, or a delta resync with
    /// `ranges_file`) and exit: failback copies what diverged back to the old primary.
    Copy {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the ranges (JSON) that differ after a failover: the records of the old primary's
    /// journal after the sequence number the secondary had applied, plus `snapshot_diff`
    /// results of the new primary (`--snapshot-diff NSID=FILE`).
    Diverged {
        /// The old primary's journal stream endpoint.
        #[arg(long)]
        journal_socket: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        group: u32,
        /// The secondary's `applied` when it was promoted (its state file).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// A `snapshot_diff` result (JSON) for namespace NSID.
        #[arg(long = "snapshot-diff", value_name = "NSID=FILE")]
        snapshot_diff: Vec<String>,
        #[arg(long)]
        out: PathBuf,
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
        Cmd::Copy { config } => {
            let cfg = load(&config)?;
            let copy = cfg
                .copy
                .as_ref()
                .with_context(|| format!("{} has no [copy]", config.display()))?;
            let shared: status::Shared = Arc::new(Mutex::new(serde_json::json!({})));
            let stop = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
            let p = resync::initial_copy(copy, &shared, &stop)?;
            println!("{}", serde_json::to_string_pretty(&p.json())?);
            Ok(())
        }
        Cmd::Diverged {
            journal_socket,
            group,
            after,
            snapshot_diff,
            out,
        } => {
            let mut ranges = Vec::new();
            if let Some(j) = &journal_socket {
                ranges.extend(resync::diverged_ranges(j, group, after)?);
            }
            for d in &snapshot_diff {
                let (nsid, file) = d
                    .split_once('=')
                    .with_context(|| format!("--snapshot-diff {d}: expected NSID=FILE"))?;
                let nsid: u32 = nsid
                    .parse()
                    .with_context(|| format!("--snapshot-diff {d}: NSID is not a number"))?;
                let text =
                    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| file.to_string())?;
                ranges.extend(resync::ranges_of_diff(nsid, &v)?);
            }
            let ranges = resync::normalize(ranges);
            std::fs::write(&out, serde_json::to_string(&ranges)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{} ranges", ranges.len());
            Ok(())
        }
        Cmd::Run { config } => {
            let cfg = load(&config)?;
            let shared: status::Shared = Arc::new(Mutex::new(serde_json::json!({})));
            if let Some(p) = &cfg.status_socket {
                status::serve(p, Arc::clone(&shared))
                    .with_context(|| format!("status socket {}", p.display()))?;
            }
            let stop = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
            signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
            match cfg.role {
                Role::Primary => {
                    if let Some(copy) = &cfg.copy {
                        // Nothing ships (so the journal keeps every write) until the copy is done.
                        let p = resync::initial_copy(copy, &shared, &stop)?;
                        if p.state != "done" {
                            return Ok(());
                        }
                    }
                    Primary::new(cfg, shared, stop)?.run()
                }
                Role::Secondary => Secondary::new(cfg, shared, stop)?.run(),
            }
        }
    }
}

fn load(config: &std::path::Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    Config::parse(&text).with_context(|| format!("{}", config.display()))
}
