//! `ferrite-tape`: the tape gateway daemon and its command line.
//!
//! ```text
//! ferrite-tape daemon --config /etc/ferrite/tape.toml
//! ferrite-tape [--socket S] [--json] library status
//! ferrite-tape cartridge list | import B | label B [--force] | eject B | recycle B [--force]
//! ferrite-tape job start --address A --subnqn N --nsid I [--name POOL/SNAP] [--wait]
//!                        [--base-job J [--base-snapshot POOL/SNAP] [--appliance-socket S]]
//! ferrite-tape job status [JOB] | job cancel JOB | job verify JOB [--wait]
//! ferrite-tape restore --job J --address A --subnqn N --nsid I [--wait]
//! ferrite-tape journal archive --group G [--to-seq S] [--wait]
//! ferrite-tape journal replay --job J --address A --subnqn N --nsid I [--up-to-seq S | --up-to-ts T]
//! ferrite-tape scan [BARCODE]
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferrite_rpc::{Client, ClientError};
use ferrite_tape::gateway::{Config, Gateway};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    name = "ferrite-tape",
    version,
    about = "Ferrite's tape gateway: snapshots to tape libraries in exact block order"
)]
struct Cli {
    /// The gateway's JSON-RPC socket.
    #[arg(
        long,
        env = "FERRITE_TAPE_SOCKET",
        default_value = "/run/ferrite/tape.sock"
    )]
    socket: PathBuf,
    /// Print the JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the gateway.
    Daemon {
        #[arg(long)]
        config: PathBuf,
    },
    /// The library: changer inventory and drives.
    Library {
        #[command(subcommand)]
        cmd: LibraryCmd,
    },
    /// Cartridges.
    Cartridge {
        #[command(subcommand)]
        cmd: CartridgeCmd,
    },
    /// Replication journals: archive to tape, replay to a namespace (point in time).
    Journal {
        #[command(subcommand)]
        cmd: JournalCmd,
    },
    /// Backup jobs.
    Job {
        #[command(subcommand)]
        cmd: JobCmd,
    },
    /// Restore a finished backup to a namespace.
    Restore {
        #[arg(long)]
        job: u64,
        #[command(flatten)]
        ns: NsArgs,
        #[arg(long)]
        connections: Option<usize>,
        /// Wait for the end, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Read cartridges and rebuild the catalog from what they hold.
    Scan { barcode: Option<String> },
}

#[derive(Subcommand, Debug)]
enum LibraryCmd {
    Status,
}

#[derive(Subcommand, Debug)]
enum CartridgeCmd {
    List,
    /// Put a new or exported cartridge into a virtual library.
    Import {
        barcode: String,
    },
    /// Write a label (a blank cartridge; --force erases a labelled or foreign one).
    Label {
        barcode: String,
        #[arg(long)]
        force: bool,
    },
    /// Move a cartridge to the import/export slot (a virtual one leaves the library).
    Eject {
        barcode: String,
    },
    /// Erase a cartridge whose jobs are all past retention (--force: regardless).
    Recycle {
        barcode: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args, Debug)]
struct NsArgs {
    /// NVMe/TCP address of the appliance, host:port.
    #[arg(long)]
    address: SocketAddr,
    #[arg(long)]
    subnqn: String,
    #[arg(long)]
    nsid: u32,
    /// A name for the catalog (snapshot or volume name).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand, Debug)]
enum JournalCmd {
    /// Archive a range of a replication journal to tape, then trim it.
    Archive {
        #[arg(long)]
        group: u32,
        #[arg(long)]
        from_seq: Option<u64>,
        #[arg(long)]
        to_seq: Option<u64>,
        /// Keep the records in the journal after archiving.
        #[arg(long)]
        no_trim: bool,
        /// ferrited's journal stream endpoint (default: appliance_socket + ".journal").
        #[arg(long)]
        journal_socket: Option<PathBuf>,
        #[arg(long)]
        wait: bool,
    },
    /// Apply archived journal records to a namespace up to a sequence number or timestamp.
    Replay {
        /// Journal archive jobs in sequence order (repeat the flag).
        #[arg(long = "job", required = true)]
        jobs: Vec<u64>,
        #[command(flatten)]
        ns: NsArgs,
        #[arg(long)]
        journal_nsid: Option<u32>,
        #[arg(long)]
        up_to_seq: Option<u64>,
        #[arg(long)]
        up_to_ts: Option<u64>,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand, Debug)]
enum JobCmd {
    /// Back up a namespace (e.g. a snapshot exported by ferrited).
    Start {
        #[command(flatten)]
        ns: NsArgs,
        #[arg(long)]
        connections: Option<usize>,
        /// Deliver blocks out of order on purpose (the tape order stays exact).
        #[arg(long)]
        shuffle: bool,
        /// Incremental: only what changed since this finished backup (needs --name).
        #[arg(long)]
        base_job: Option<u64>,
        /// Incremental: the "<pool>/<snapshot>" the base job holds (default: its --name).
        #[arg(long, requires = "base_job")]
        base_snapshot: Option<String>,
        /// Incremental: ferrited's JSON-RPC socket (default: the gateway configuration's).
        #[arg(long, requires = "base_job")]
        appliance_socket: Option<PathBuf>,
        #[arg(long)]
        wait: bool,
    },
    Status {
        job: Option<u64>,
    },
    Cancel {
        job: u64,
    },
    /// Read a finished backup back from tape and check every block.
    Verify {
        job: u64,
        #[arg(long)]
        wait: bool,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ferrite-tape: {e:#}");
        std::process::exit(1);
    }
}

fn ns_params(ns: &NsArgs) -> Value {
    json!({"address": ns.address.to_string(), "subnqn": ns.subnqn, "nsid": ns.nsid, "name": ns.name})
}

fn run(cli: Cli) -> Result<()> {
    let call = |method: &str, params: Value| -> Result<Value> {
        let mut c = Client::connect(&cli.socket, Duration::from_secs(600)).with_context(|| {
            format!("is the gateway running? (socket {})", cli.socket.display())
        })?;
        c.call(method, params).map_err(|e| match e {
            ClientError::Rpc(r) => anyhow::anyhow!("{method}: {}", r.message),
            other => anyhow::anyhow!("{method}: {other}"),
        })
    };
    let out = |v: &Value, text: &dyn Fn(&Value) -> String| {
        if cli.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{}", text(v));
        }
    };
    match &cli.cmd {
        Cmd::Daemon { config } => daemon(config),
        Cmd::Library {
            cmd: LibraryCmd::Status,
        } => {
            let v = call("tape_library_status", json!({}))?;
            out(&v, &library_text);
            Ok(())
        }
        Cmd::Cartridge { cmd } => {
            let v = match cmd {
                CartridgeCmd::List => call("tape_cartridge_list", json!({}))?,
                CartridgeCmd::Import { barcode } => {
                    call("tape_cartridge_import", json!({"barcode": barcode}))?
                }
                CartridgeCmd::Label { barcode, force } => call(
                    "tape_cartridge_label",
                    json!({"barcode": barcode, "force": force}),
                )?,
                CartridgeCmd::Eject { barcode } => {
                    call("tape_cartridge_eject", json!({"barcode": barcode}))?
                }
                CartridgeCmd::Recycle { barcode, force } => call(
                    "tape_cartridge_recycle",
                    json!({"barcode": barcode, "force": force}),
                )?,
            };
            out(&v, &|v| {
                if let Some(rows) = v.as_array() {
                    let mut s = format!(
                        "{:<12} {:>6} {:>14}  {}",
                        "BARCODE", "PARTS", "BYTES", "WHERE"
                    );
                    for r in rows {
                        s += &format!(
                            "\n{:<12} {:>6} {:>14}  {}",
                            r["barcode"].as_str().unwrap_or("?"),
                            r["parts"],
                            r["bytes"],
                            r["element"]
                        );
                    }
                    s
                } else {
                    v.to_string()
                }
            });
            Ok(())
        }
        Cmd::Job {
            cmd:
                JobCmd::Start {
                    ns,
                    connections,
                    shuffle,
                    base_job,
                    base_snapshot,
                    appliance_socket,
                    wait,
                },
        } => {
            let mut p = ns_params(ns);
            p["kind"] = json!("backup");
            if let Some(b) = base_job {
                p["kind"] = json!("incremental");
                p["base_job"] = json!(b);
                p["base_snapshot"] = json!(base_snapshot);
                p["appliance_socket"] = json!(appliance_socket);
            }
            p["shuffle"] = json!(shuffle);
            if let Some(c) = connections {
                p["connections"] = json!(c);
            }
            let v = call("tape_job_start", p)?;
            finish_job(&call, &cli, v, *wait)
        }
        Cmd::Job {
            cmd: JobCmd::Status { job },
        } => {
            let v = call(
                "tape_job_status",
                job.map_or(json!({}), |j| json!({"job": j})),
            )?;
            out(&v, &|v| match v.as_array() {
                Some(rows) => rows.iter().map(job_line).collect::<Vec<_>>().join("\n"),
                None => job_line(v),
            });
            Ok(())
        }
        Cmd::Job {
            cmd: JobCmd::Verify { job, wait },
        } => {
            let v = call("tape_job_verify", json!({"job": job}))?;
            finish_job(&call, &cli, v, *wait)
        }
        Cmd::Job {
            cmd: JobCmd::Cancel { job },
        } => {
            let v = call("tape_job_cancel", json!({"job": job}))?;
            out(&v, &|_| format!("job {job}: cancelling"));
            Ok(())
        }
        Cmd::Restore {
            job,
            ns,
            connections,
            wait,
        } => {
            let mut p = ns_params(ns);
            p["job"] = json!(job);
            if let Some(c) = connections {
                p["connections"] = json!(c);
            }
            let v = call("tape_restore", p)?;
            finish_job(&call, &cli, v, *wait)
        }
        Cmd::Journal {
            cmd:
                JournalCmd::Archive {
                    group,
                    from_seq,
                    to_seq,
                    no_trim,
                    journal_socket,
                    wait,
                },
        } => {
            let p = json!({"group": group, "from_seq": from_seq, "to_seq": to_seq,
                           "trim": !no_trim, "journal_socket": journal_socket});
            let v = call("tape_journal_archive", p)?;
            finish_job(&call, &cli, v, *wait)
        }
        Cmd::Journal {
            cmd:
                JournalCmd::Replay {
                    jobs,
                    ns,
                    journal_nsid,
                    up_to_seq,
                    up_to_ts,
                    wait,
                },
        } => {
            let mut p = ns_params(ns);
            p["jobs"] = json!(jobs);
            p["journal_nsid"] = json!(journal_nsid);
            p["up_to_seq"] = json!(up_to_seq);
            p["up_to_ts"] = json!(up_to_ts);
            let v = call("tape_journal_replay", p)?;
            finish_job(&call, &cli, v, *wait)
        }
        Cmd::Scan { barcode } => {
            let v = call(
                "tape_scan",
                barcode
                    .as_ref()
                    .map_or(json!({}), |b| json!({"barcode": b})),
            )?;
            out(&v, &|v| {
                v.as_array()
                    .map(|rows| {
                        rows.iter()
                            .map(|r| match r.get("error") {
                                Some(e) => {
                                    format!("{}: {}", r["barcode"].as_str().unwrap_or("?"), e)
                                }
                                None => format!(
                                    "{}: {} part(s), {} unfinished",
                                    r["barcode"].as_str().unwrap_or("?"),
                                    r["parts"].as_array().map_or(0, Vec::len),
                                    r["unfinished"].as_array().map_or(0, Vec::len)
                                ),
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
            Ok(())
        }
    }
}

fn library_text(v: &Value) -> String {
    if v["busy"] == json!(true) {
        return format!("busy with job {}", v["running_job"]);
    }
    let mut s = format!("changer {}\n", v["changer"].as_str().unwrap_or("?"));
    let inv = &v["inventory"];
    let list = |k: &str| {
        inv[k].as_array().map_or(String::new(), |a| {
            a.iter()
                .enumerate()
                .map(|(i, b)| format!("  {k} {i}: {}", b.as_str().unwrap_or("(empty)")))
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    s += &list("slots");
    s += "\n";
    s += &list("import_export");
    for (i, d) in v["drives"].as_array().into_iter().flatten().enumerate() {
        s += &format!(
            "\n  drive {i} {}: {}",
            d["name"].as_str().unwrap_or("?"),
            d["status"]["barcode"].as_str().unwrap_or("(empty)")
        );
    }
    s
}

fn job_line(v: &Value) -> String {
    let mib = |k: &str| v[k].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
    let mut s = format!(
        "job {} {} {}: {:.1}/{:.1} MiB",
        v["job"],
        v["kind"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        mib("done_bytes"),
        mib("total_bytes")
    );
    if let Some(e) = v["error"].as_str() {
        s += &format!(" error: {e}");
    }
    s
}

/// Prints the job id, or waits with a progress bar (bytes, rate, ETA) until it ends.
fn finish_job(
    call: &dyn Fn(&str, Value) -> Result<Value>,
    cli: &Cli,
    started: Value,
    wait: bool,
) -> Result<()> {
    let job = started["job"]
        .as_u64()
        .context("the gateway answered without a job id")?;
    if !wait {
        if cli.json {
            println!("{started}");
        } else {
            println!("job {job} started");
        }
        return Ok(());
    }
    let t0 = Instant::now();
    let tty = !cli.json;
    loop {
        let v = call("tape_job_status", json!({"job": job}))?;
        let state = v["state"].as_str().unwrap_or("?").to_string();
        if tty {
            let done = v["done_bytes"].as_u64().unwrap_or(0) as f64;
            let total = v["total_bytes"].as_u64().unwrap_or(0).max(1) as f64;
            let rate = v["bytes_per_second"].as_f64().unwrap_or(0.0);
            let eta = v["eta_seconds"]
                .as_f64()
                .map_or("?".to_string(), |e| format!("{e:.0}s"));
            let width = 30usize;
            let fill = ((done / total) * width as f64).round() as usize;
            eprint!(
                "\rjob {job} [{}{}] {:.1}/{:.1} MiB {:.1} MiB/s ETA {eta}   ",
                "#".repeat(fill.min(width)),
                " ".repeat(width - fill.min(width)),
                done / 1048576.0,
                total / 1048576.0,
                rate / 1048576.0
            );
            let _ = std::io::stderr().flush();
        }
        if state != "running" {
            if tty {
                eprintln!();
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{}", job_line(&v));
            }
            if state != "done" {
                bail!(
                    "job {job} ended {state}: {}",
                    v["error"].as_str().unwrap_or("no reason given")
                );
            }
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(24 * 3600) {
            bail!("job {job} still running after a day; stopped waiting");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn daemon(config: &PathBuf) -> Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("read {}", config.display()))?;
    let cfg: Config =
        toml::from_str(&text).with_context(|| format!("parse {}", config.display()))?;
    let socket = cfg.socket.clone();
    let gw = Arc::new(Gateway::open(cfg).context("open the library and catalog")?);
    let listener = ferrite_tape::server::bind(&socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
    log::info!("ferrite-tape listening on {}", socket.display());
    ferrite_tape::server::serve(listener, gw);
    Ok(())
}
