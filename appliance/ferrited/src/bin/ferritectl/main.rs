//! ferritectl: drives a running ferrited over its JSON-RPC socket. Every subcommand is one RPC
//! method (docs/rpc.md); `--json` prints the raw result for scripts.

mod cache;
mod client;
mod device;
mod human;
mod qos;
mod remote;
mod replication;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use ferrite_daemon::config::parse_size;
use serde_json::{json, Value};

use client::Ctl;

#[derive(Debug, Parser)]
#[command(name = "ferritectl", version, about = "Control a running ferrited")]
struct Args {
    /// ferrited's control socket (default: /run/ferrite/ferrited.sock for root, else
    /// $XDG_RUNTIME_DIR/ferrite/ferrited.sock).
    #[arg(long, global = true, env = "FERRITE_RPC_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the JSON result instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Backends (bdev_*).
    #[command(subcommand)]
    Bdev(BdevCmd),
    /// Subsystems (nvmf_create_subsystem, nvmf_delete_subsystem, nvmf_get_subsystems).
    #[command(subcommand)]
    Subsystem(SubsystemCmd),
    /// Namespaces (nvmf_subsystem_add_ns / remove_ns).
    #[command(subcommand)]
    Ns(NsCmd),
    /// Allowed hosts (nvmf_subsystem_add_host / remove_host / set_keys).
    #[command(subcommand)]
    Host(HostCmd),
    /// DH-HMAC-CHAP secrets by name (keyring_file_add_key / remove_key, keyring_get_keys).
    #[command(subcommand)]
    Keyring(KeyringCmd),
    /// DH-HMAC-CHAP: allowed hashes and groups (nvmf_set_config), new secrets.
    #[command(subcommand)]
    Dhchap(DhchapCmd),
    /// Listeners (nvmf_subsystem_add_listener / remove_listener).
    #[command(subcommand)]
    Listener(ListenerCmd),
    /// Storage pools (pool_*).
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Volumes and clones of pools (volume_*); bdev names are POOL/NAME.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Snapshots (snapshot_*).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Clones of snapshots (clone_create).
    #[command(subcommand)]
    Clone(CloneCmd),
    /// Replication journals of consistency groups (journal_*).
    #[command(subcommand)]
    Journal(JournalCmd),
    /// Replication pairs: mode, pause, status with lag (replication_*).
    #[command(subcommand)]
    Replication(replication::ReplicationCmd),
    /// I/O limits per bdev or host (bdev_set_qos_limit, nvmf_set_host_qos_limit).
    #[command(subcommand)]
    Qos(qos::QosCmd),
    /// Cached volumes: create, delete, list with statistics, flush (bdev_cache_*).
    #[command(subcommand)]
    Cache(cache::CacheCmd),
    /// Connected controllers (nvmf_get_controllers).
    Controllers { nqn: Option<String> },
    /// Queue pairs (nvmf_get_qpairs).
    Qpairs { nqn: Option<String> },
    /// Per-namespace and per-reactor statistics (stats_get), rates over --interval.
    Stats {
        /// Seconds between the two samples rates are computed from (0: totals only).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Print the running configuration as a ferrited --config file (save_config).
    SaveConfig,
    /// Set the log level (log_set_level), or print it without LEVEL (log_get_level).
    LogLevel { level: Option<String> },
    /// Reactors and their busy/idle ratio (framework_get_reactors).
    Reactors,
    /// Methods ferrited serves (rpc_get_methods).
    Methods,
    /// PCI devices for the userspace NVMe driver: bind to vfio-pci, unbind (local, no RPC).
    #[command(subcommand)]
    Device(device::DeviceCmd),
    /// Call any method with JSON params: ferritectl call bdev_list '{"name":"ram0"}'.
    Call {
        method: String,
        params: Option<String>,
    },
    /// Print a shell completion script: ferritectl completion bash > /etc/bash_completion.d/ferritectl
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum BdevCmd {
    /// RAM-backed bdev (bdev_malloc_create).
    MallocCreate {
        name: String,
        #[arg(long, conflicts_with = "size", required_unless_present = "size")]
        num_blocks: Option<u64>,
        /// Size instead of a block count: 64MiB, 1GiB, ...
        #[arg(long)]
        size: Option<String>,
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
    },
    /// File or block-device bdev (bdev_file_create); the file is created when --size is given.
    FileCreate {
        name: String,
        filename: PathBuf,
        #[arg(long)]
        block_size: Option<u32>,
        #[arg(long)]
        size: Option<String>,
    },
    /// Delete an unused bdev (bdev_delete).
    Delete { name: String },
    /// Attach an NVMe controller, a bdev per namespace `<name>n<nsid>`
    /// (bdev_nvme_attach_controller). PCIe: the device must be bound to vfio-pci.
    NvmeAttach {
        name: String,
        /// PCI address for trtype pcie: 0000:00:04.0.
        #[arg(long)]
        traddr: String,
        #[arg(long, default_value = "pcie")]
        trtype: String,
    },
    /// Detach an NVMe controller, deleting its namespace bdevs (bdev_nvme_detach_controller).
    NvmeDetach { name: String },
    /// List bdevs (bdev_list).
    List { name: Option<String> },
    /// Attach a remote NVMe-oF/TCP controller; its namespaces become bdevs <name>n<nsid>
    /// (bdev_nvme_attach_controller).
    RemoteAttach(remote::AttachArgs),
    /// Detach a remote controller whose bdevs are unused (bdev_nvme_detach_controller).
    RemoteDetach { name: String },
    /// Remote controllers, their state and namespaces (bdev_nvme_get_controllers).
    RemoteList { name: Option<String> },
}

#[derive(Debug, Subcommand)]
enum SubsystemCmd {
    /// Create a subsystem (nvmf_create_subsystem).
    Add {
        nqn: String,
        #[arg(long)]
        serial_number: Option<String>,
        #[arg(long)]
        model_number: Option<String>,
        #[arg(long)]
        allow_any_host: bool,
        #[arg(long)]
        max_namespaces: Option<u32>,
    },
    /// Delete a subsystem; its controllers are disconnected (nvmf_delete_subsystem).
    Delete { nqn: String },
    /// List subsystems (nvmf_get_subsystems).
    List { nqn: Option<String> },
    /// Allow any host, or only the listed ones (nvmf_subsystem_allow_any_host).
    AllowAnyHost {
        nqn: String,
        #[arg(action = clap::ArgAction::Set)]
        allow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NsCmd {
    /// Add a namespace; connected hosts get a Namespace Attribute Changed event.
    Add {
        nqn: String,
        bdev: String,
        #[arg(long)]
        nsid: Option<u32>,
        #[arg(long)]
        nguid: Option<String>,
        #[arg(long)]
        uuid: Option<String>,
        /// ANA group (default: the NSID).
        #[arg(long)]
        anagrpid: Option<u32>,
    },
    /// Remove a namespace.
    Remove { nqn: String, nsid: u32 },
    /// Registrants and holder of the namespace's reservation (nvmf_ns_get_reservation).
    Reservation { nqn: String, nsid: u32 },
}

#[derive(Debug, Subcommand)]
enum HostCmd {
    /// Allow a host NQN, optionally requiring DH-HMAC-CHAP with keyring keys.
    Add {
        nqn: String,
        host: String,
        /// Keyring name of the host's secret: the host must authenticate.
        #[arg(long)]
        dhchap_key: Option<String>,
        /// Keyring name of the controller's secret (bidirectional authentication).
        #[arg(long, requires = "dhchap_key")]
        dhchap_ctrlr_key: Option<String>,
    },
    /// Disallow a host NQN; its controllers are disconnected.
    Remove { nqn: String, host: String },
    /// Change (or, without --dhchap-key, drop) a host's DH-HMAC-CHAP keys.
    SetKeys {
        nqn: String,
        host: String,
        #[arg(long)]
        dhchap_key: Option<String>,
        #[arg(long, requires = "dhchap_key")]
        dhchap_ctrlr_key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyringCmd {
    /// Add a key from a file holding a DHHC-1: secret (absolute path, mode 0600).
    Add {
        name: String,
        path: std::path::PathBuf,
    },
    /// Remove a key no host uses.
    Remove { name: String },
    /// List the keys (names and paths; never the secrets).
    List,
}

#[derive(Debug, Subcommand)]
enum DhchapCmd {
    /// Hashes and DH groups the target may negotiate, in order of preference.
    Config {
        /// e.g. sha512,sha384,sha256
        #[arg(long, value_delimiter = ',')]
        digests: Option<Vec<String>>,
        /// e.g. ffdhe2048,ffdhe3072,null
        #[arg(long, value_delimiter = ',')]
        dhgroups: Option<Vec<String>>,
    },
    /// Print a new DHHC-1 secret, as `nvme gen-dhchap-key` does (runs locally).
    GenKey {
        /// Transform hash: 0 none, 1 SHA-256, 2 SHA-384, 3 SHA-512.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3))]
        hmac: u8,
        /// Secret length in bytes: 32, 48 or 64 (default: the transform hash's length, or 32).
        #[arg(long)]
        len: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
enum ListenerCmd {
    /// Listen on ADDR:PORT (NVMe/TCP; listeners serve every subsystem).
    Add { nqn: String, addr: SocketAddr },
    /// Stop accepting on ADDR:PORT (established connections stay).
    Remove { nqn: String, addr: SocketAddr },
    /// Set the ANA state of the path through ADDR:PORT: optimized, non_optimized,
    /// inaccessible, persistent_loss or change (nvmf_subsystem_listener_set_ana_state).
    SetAnaState {
        nqn: String,
        addr: SocketAddr,
        state: String,
        /// One ANA group (default: every group of the subsystem).
        #[arg(long)]
        anagrpid: Option<u32>,
    },
    /// The subsystem's listeners and their ANA states (nvmf_subsystem_get_listeners).
    List { nqn: String },
}

#[derive(Debug, Subcommand)]
enum PoolCmd {
    /// Create a pool over blank bdevs (pool_create).
    Create {
        name: String,
        #[arg(required = true)]
        bdevs: Vec<String>,
        /// Cluster size: 64KiB..64MiB, a power of two (default 1MiB).
        #[arg(long)]
        cluster_size: Option<String>,
    },
    /// List pools and their space (pool_list).
    List,
    /// A pool's members, space, volumes and recent events (pool_info).
    Info { name: String },
    /// Verify the pool's metadata; exits 1 when errors are found (pool_check).
    Check { name: String },
    /// Destroy a pool; --force also when it holds volumes (pool_delete).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Percent allocated above which a warning event is raised (pool_set_space_warning).
    SetSpaceWarning { name: String, percent: u8 },
}

#[derive(Debug, Subcommand)]
enum VolumeCmd {
    /// Create a volume, thin unless --thick (volume_create); its bdev is POOL/NAME.
    Create {
        pool: String,
        name: String,
        /// Size: bytes or 10GiB, 512M, ...
        size: String,
        #[arg(long)]
        thick: bool,
    },
    /// List volumes and clones (volume_list).
    List {
        #[arg(long)]
        pool: Option<String>,
    },
    /// One volume, clone or snapshot with its counters (volume_info).
    Info { name: String },
    /// Grow or shrink online; --force drops data beyond the new end (volume_resize).
    Resize {
        name: String,
        size: String,
        #[arg(long)]
        force: bool,
    },
    /// Rename (volume_rename).
    Rename { name: String, new_name: String },
    /// Delete a volume or clone (volume_delete).
    Delete { name: String },
    /// Give a clone its own copy of every shared cluster (volume_inflate).
    Inflate { name: String },
    /// Revert a volume in place to one of its snapshots (volume_revert).
    Revert { name: String, snapshot: String },
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// Snapshot POOL/VOLUME:NAME; several pairs are taken at one instant (snapshot_create).
    Create {
        #[arg(required = true, value_name = "POOL/VOLUME:NAME")]
        pairs: Vec<String>,
    },
    /// List snapshots (snapshot_list).
    List {
        #[arg(long)]
        pool: Option<String>,
    },
    /// Delete a snapshot, also one with clones (snapshot_delete).
    Delete { name: String },
    /// Extents of TARGET that differ from snapshot POOL/BASE (snapshot_diff).
    Diff { base: String, target: String },
}

#[derive(Debug, Subcommand)]
enum JournalCmd {
    /// Allocate and format GROUP's journal in POOL (journal_create).
    Create {
        group: u32,
        pool: String,
        /// Size: bytes or 1GiB, 256M, ...
        size: String,
        /// Data bytes per record (the largest write), 128KiB..4MiB (default 128KiB).
        #[arg(long)]
        slot_size: Option<String>,
    },
    /// Journal BDEV in GROUP as the group's namespace NSID; export BDEV@journal (journal_attach).
    Attach { group: u32, bdev: String, nsid: u32 },
    /// Unregister BDEV@journal (journal_detach).
    Detach { bdev: String },
    /// Journals with their sequence numbers and fill (journal_list).
    List,
    /// Delete GROUP's journal and its volume (journal_delete).
    Delete { group: u32 },
}

#[derive(Debug, Subcommand)]
enum CloneCmd {
    /// A writable clone of POOL/SNAPSHOT named NAME (clone_create).
    Create { snapshot: String, name: String },
}

/// "POOL/VOLUME:NAME" -> {volume, name}.
fn snapshot_pair(text: &str) -> Result<Value> {
    let (volume, name) = text
        .rsplit_once(':')
        .filter(|(v, n)| !v.is_empty() && !n.is_empty())
        .ok_or_else(|| anyhow!("{text:?} is not POOL/VOLUME:NAME"))?;
    Ok(json!({"volume": volume, "name": name}))
}

/// A size argument as the RPC takes it: a number stays a number.
fn size_arg(text: &str) -> Value {
    match text.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(text),
    }
}

fn listen_address(addr: SocketAddr) -> Value {
    json!({
        "trtype": "tcp",
        "adrfam": if addr.is_ipv4() { "ipv4" } else { "ipv6" },
        "traddr": addr.ip().to_string(),
        "trsvcid": addr.port().to_string(),
    })
}

fn size(text: &str) -> Result<u64> {
    parse_size(text).map_err(|e| anyhow!("{e}"))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("ferritectl: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let ctl = Ctl::new(
        args.socket.clone(),
        Duration::from_secs(args.timeout.max(1)),
    );
    let json = args.json;
    let (method, params): (&str, Value) = match args.cmd {
        Cmd::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Args::command(),
                "ferritectl",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Cmd::Stats { interval } => return stats(&ctl, json, interval),
        Cmd::Device(cmd) => return device::run(cmd),
        Cmd::Call { method, params } => {
            let params = match params {
                Some(text) => {
                    serde_json::from_str(&text).context("params must be a JSON object")?
                }
                None => Value::Null,
            };
            let v = ctl.call(&method, params)?;
            return print_json(&v);
        }
        Cmd::Bdev(BdevCmd::MallocCreate {
            name,
            num_blocks,
            size: bytes,
            block_size,
        }) => {
            let num_blocks = match (num_blocks, bytes) {
                (Some(n), _) => n,
                (None, Some(text)) => {
                    let b = size(&text)?;
                    if b % u64::from(block_size) != 0 {
                        bail!("size {text} is not a multiple of the block size {block_size}");
                    }
                    b / u64::from(block_size)
                }
                (None, None) => bail!("give --num-blocks or --size"),
            };
            (
                "bdev_malloc_create",
                json!({"name": name, "num_blocks": num_blocks, "block_size": block_size}),
            )
        }
        Cmd::Bdev(BdevCmd::FileCreate {
            name,
            filename,
            block_size,
            size: bytes,
        }) => {
            let filename = if filename.is_absolute() {
                filename
            } else {
                std::env::current_dir()?.join(filename)
            };
            let mut p = json!({"name": name, "filename": filename});
            if let Some(bs) = block_size {
                p["block_size"] = json!(bs);
            }
            if let Some(text) = bytes {
                p["size"] = json!(size(&text)?);
            }
            ("bdev_file_create", p)
        }
        Cmd::Bdev(BdevCmd::Delete { name }) => ("bdev_delete", json!({ "name": name })),
        Cmd::Bdev(BdevCmd::NvmeAttach {
            name,
            traddr,
            trtype,
        }) => (
            "bdev_nvme_attach_controller",
            json!({"name": name, "trtype": trtype, "traddr": traddr}),
        ),
        Cmd::Bdev(BdevCmd::NvmeDetach { name }) => {
            ("bdev_nvme_detach_controller", json!({ "name": name }))
        }
        Cmd::Bdev(BdevCmd::List { name }) => ("bdev_list", opt("name", name)),
        Cmd::Bdev(BdevCmd::RemoteAttach(a)) => remote::attach(a),
        Cmd::Bdev(BdevCmd::RemoteDetach { name }) => {
            ("bdev_nvme_detach_controller", json!({ "name": name }))
        }
        Cmd::Bdev(BdevCmd::RemoteList { name }) => ("bdev_nvme_get_controllers", opt("name", name)),
        Cmd::Subsystem(SubsystemCmd::Add {
            nqn,
            serial_number,
            model_number,
            allow_any_host,
            max_namespaces,
        }) => {
            let mut p = json!({"nqn": nqn, "allow_any_host": allow_any_host});
            if let Some(s) = serial_number {
                p["serial_number"] = json!(s);
            }
            if let Some(m) = model_number {
                p["model_number"] = json!(m);
            }
            if let Some(n) = max_namespaces {
                p["max_namespaces"] = json!(n);
            }
            ("nvmf_create_subsystem", p)
        }
        Cmd::Subsystem(SubsystemCmd::Delete { nqn }) => {
            ("nvmf_delete_subsystem", json!({ "nqn": nqn }))
        }
        Cmd::Subsystem(SubsystemCmd::List { nqn }) => ("nvmf_get_subsystems", opt("nqn", nqn)),
        Cmd::Subsystem(SubsystemCmd::AllowAnyHost { nqn, allow }) => (
            "nvmf_subsystem_allow_any_host",
            json!({"nqn": nqn, "allow_any_host": allow}),
        ),
        Cmd::Ns(NsCmd::Add {
            nqn,
            bdev,
            nsid,
            nguid,
            uuid,
            anagrpid,
        }) => {
            let mut ns = json!({ "bdev_name": bdev });
            if let Some(g) = anagrpid {
                ns["anagrpid"] = json!(g);
            }
            if let Some(n) = nsid {
                ns["nsid"] = json!(n);
            }
            if let Some(g) = nguid {
                ns["nguid"] = json!(g);
            }
            if let Some(u) = uuid {
                ns["uuid"] = json!(u);
            }
            (
                "nvmf_subsystem_add_ns",
                json!({"nqn": nqn, "namespace": ns}),
            )
        }
        Cmd::Ns(NsCmd::Remove { nqn, nsid }) => (
            "nvmf_subsystem_remove_ns",
            json!({"nqn": nqn, "nsid": nsid}),
        ),
        Cmd::Ns(NsCmd::Reservation { nqn, nsid }) => {
            ("nvmf_ns_get_reservation", json!({"nqn": nqn, "nsid": nsid}))
        }
        Cmd::Host(HostCmd::Add {
            nqn,
            host,
            dhchap_key,
            dhchap_ctrlr_key,
        }) => {
            let mut p = json!({"nqn": nqn, "host": host});
            if let Some(k) = dhchap_key {
                p["dhchap_key"] = json!(k);
            }
            if let Some(k) = dhchap_ctrlr_key {
                p["dhchap_ctrlr_key"] = json!(k);
            }
            ("nvmf_subsystem_add_host", p)
        }
        Cmd::Host(HostCmd::SetKeys {
            nqn,
            host,
            dhchap_key,
            dhchap_ctrlr_key,
        }) => (
            "nvmf_subsystem_set_keys",
            json!({"nqn": nqn, "host": host, "dhchap_key": dhchap_key,
                   "dhchap_ctrlr_key": dhchap_ctrlr_key}),
        ),
        Cmd::Keyring(KeyringCmd::Add { name, path }) => {
            let path = if path.is_absolute() {
                path
            } else {
                std::env::current_dir()?.join(path)
            };
            ("keyring_file_add_key", json!({"name": name, "path": path}))
        }
        Cmd::Keyring(KeyringCmd::Remove { name }) => {
            ("keyring_file_remove_key", json!({ "name": name }))
        }
        Cmd::Keyring(KeyringCmd::List) => ("keyring_get_keys", Value::Null),
        Cmd::Dhchap(DhchapCmd::Config { digests, dhgroups }) => (
            "nvmf_set_config",
            json!({"dhchap_digests": digests, "dhchap_dhgroups": dhgroups}),
        ),
        Cmd::Dhchap(DhchapCmd::GenKey { hmac, len }) => {
            let transform = ferrite_auth::HashId::from_id(hmac);
            let len = len.unwrap_or(transform.map_or(32, |h| h.len()));
            let key = ferrite_auth::DhchapKey::generate(len, transform)?;
            println!("{}", key.to_text());
            return Ok(());
        }
        Cmd::Host(HostCmd::Remove { nqn, host }) => (
            "nvmf_subsystem_remove_host",
            json!({"nqn": nqn, "host": host}),
        ),
        Cmd::Listener(ListenerCmd::Add { nqn, addr }) => (
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": listen_address(addr)}),
        ),
        Cmd::Listener(ListenerCmd::Remove { nqn, addr }) => (
            "nvmf_subsystem_remove_listener",
            json!({"nqn": nqn, "listen_address": listen_address(addr)}),
        ),
        Cmd::Listener(ListenerCmd::SetAnaState {
            nqn,
            addr,
            state,
            anagrpid,
        }) => {
            let mut p =
                json!({"nqn": nqn, "listen_address": listen_address(addr), "ana_state": state});
            if let Some(g) = anagrpid {
                p["anagrpid"] = json!(g);
            }
            ("nvmf_subsystem_listener_set_ana_state", p)
        }
        Cmd::Listener(ListenerCmd::List { nqn }) => {
            ("nvmf_subsystem_get_listeners", json!({ "nqn": nqn }))
        }
        Cmd::Pool(PoolCmd::Create {
            name,
            bdevs,
            cluster_size,
        }) => {
            let mut p = json!({"name": name, "bdevs": bdevs});
            if let Some(c) = cluster_size {
                p["cluster_size"] = size_arg(&c);
            }
            ("pool_create", p)
        }
        Cmd::Pool(PoolCmd::List) => ("pool_list", Value::Null),
        Cmd::Pool(PoolCmd::Info { name }) => ("pool_info", json!({ "name": name })),
        Cmd::Pool(PoolCmd::Check { name }) => {
            let v = ctl.call("pool_check", json!({ "name": name }))?;
            if json {
                print_json(&v)?;
            } else {
                print_human("pool_check", &v)?;
            }
            if v["clean"] != true {
                std::process::exit(1);
            }
            return Ok(());
        }
        Cmd::Pool(PoolCmd::Delete { name, force }) => {
            ("pool_delete", json!({"name": name, "force": force}))
        }
        Cmd::Pool(PoolCmd::SetSpaceWarning { name, percent }) => (
            "pool_set_space_warning",
            json!({"name": name, "percent": percent}),
        ),
        Cmd::Volume(VolumeCmd::Create {
            pool,
            name,
            size,
            thick,
        }) => (
            "volume_create",
            json!({"pool": pool, "name": name, "size": size_arg(&size), "thin": !thick}),
        ),
        Cmd::Volume(VolumeCmd::List { pool }) => ("volume_list", opt("pool", pool)),
        Cmd::Volume(VolumeCmd::Info { name }) => ("volume_info", json!({ "name": name })),
        Cmd::Volume(VolumeCmd::Resize { name, size, force }) => (
            "volume_resize",
            json!({"name": name, "size": size_arg(&size), "force": force}),
        ),
        Cmd::Volume(VolumeCmd::Rename { name, new_name }) => {
            ("volume_rename", json!({"name": name, "new_name": new_name}))
        }
        Cmd::Volume(VolumeCmd::Delete { name }) => ("volume_delete", json!({ "name": name })),
        Cmd::Volume(VolumeCmd::Inflate { name }) => ("volume_inflate", json!({ "name": name })),
        Cmd::Volume(VolumeCmd::Revert { name, snapshot }) => {
            ("volume_revert", json!({"name": name, "snapshot": snapshot}))
        }
        Cmd::Snapshot(SnapshotCmd::Create { pairs }) => {
            let group = pairs
                .iter()
                .map(|p| snapshot_pair(p))
                .collect::<Result<Vec<_>>>()?;
            let p = if group.len() == 1 {
                group[0].clone()
            } else {
                json!({ "group": group })
            };
            ("snapshot_create", p)
        }
        Cmd::Snapshot(SnapshotCmd::List { pool }) => ("snapshot_list", opt("pool", pool)),
        Cmd::Snapshot(SnapshotCmd::Delete { name }) => ("snapshot_delete", json!({ "name": name })),
        Cmd::Snapshot(SnapshotCmd::Diff { base, target }) => {
            ("snapshot_diff", json!({"base": base, "target": target}))
        }
        Cmd::Clone(CloneCmd::Create { snapshot, name }) => {
            ("clone_create", json!({"snapshot": snapshot, "name": name}))
        }
        Cmd::Journal(JournalCmd::Create {
            group,
            pool,
            size,
            slot_size,
        }) => {
            let mut p = json!({"group": group, "pool": pool, "size": size_arg(&size)});
            if let Some(s) = slot_size {
                p["slot_size"] = size_arg(&s);
            }
            ("journal_create", p)
        }
        Cmd::Journal(JournalCmd::Attach { group, bdev, nsid }) => (
            "journal_attach",
            json!({"group": group, "bdev": bdev, "nsid": nsid}),
        ),
        Cmd::Journal(JournalCmd::Detach { bdev }) => ("journal_detach", json!({ "bdev": bdev })),
        Cmd::Journal(JournalCmd::List) => ("journal_list", Value::Null),
        Cmd::Journal(JournalCmd::Delete { group }) => ("journal_delete", json!({ "group": group })),
        Cmd::Replication(r) => replication::request(&r),
        Cmd::Controllers { nqn } => ("nvmf_get_controllers", opt("nqn", nqn)),
        Cmd::Qpairs { nqn } => ("nvmf_get_qpairs", opt("nqn", nqn)),
        Cmd::SaveConfig => ("save_config", Value::Null),
        Cmd::LogLevel { level: Some(level) } => ("log_set_level", json!({ "level": level })),
        Cmd::LogLevel { level: None } => ("log_get_level", Value::Null),
        Cmd::Reactors => ("framework_get_reactors", Value::Null),
        Cmd::Methods => ("rpc_get_methods", Value::Null),
        Cmd::Qos(cmd) => qos::request(cmd)?,
        Cmd::Cache(cmd) => cache::request(cmd)?,
    };
    let result = ctl.call(method, params)?;
    if json {
        return print_json(&result);
    }
    print_human(method, &result)
}

fn opt(key: &str, value: Option<String>) -> Value {
    match value {
        Some(v) => json!({ key: v }),
        None => Value::Null,
    }
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    )?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

fn print_human(method: &str, v: &Value) -> Result<()> {
    let empty = Vec::new();
    let items = v.as_array().unwrap_or(&empty);
    if human::print(method, v)? || remote::print(method, v)? || cache::print(method, v)? {
        return Ok(());
    }
    match method {
        "bdev_list" => table(
            &["NAME", "KIND", "BLOCK", "BLOCKS", "UUID", "USED BY"],
            items
                .iter()
                .map(|b| {
                    let used: Vec<String> = b["claimed_by"]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .map(|c| format!("{}/{}", s(&c["nqn"]), c["nsid"]))
                        .collect();
                    vec![
                        s(&b["name"]),
                        s(&b["kind"]),
                        s(&b["block_size"]),
                        s(&b["num_blocks"]),
                        s(&b["uuid"]),
                        used.join(","),
                    ]
                })
                .collect(),
        ),
        "nvmf_get_subsystems" => {
            for sub in items {
                println!("{} ({})", s(&sub["nqn"]), s(&sub["subtype"]));
                if sub["subtype"] == "NVMe" {
                    println!(
                        "  serial {}  model {}  allow_any_host {}",
                        s(&sub["serial_number"]),
                        s(&sub["model_number"]),
                        sub["allow_any_host"]
                    );
                    for h in sub["hosts"].as_array().unwrap_or(&empty) {
                        println!("  host {}", s(&h["nqn"]));
                    }
                    for ns in sub["namespaces"].as_array().unwrap_or(&empty) {
                        println!(
                            "  ns {}  bdev {}  uuid {}",
                            ns["nsid"],
                            s(&ns["bdev_name"]),
                            s(&ns["uuid"])
                        );
                    }
                }
                for l in sub["listen_addresses"].as_array().unwrap_or(&empty) {
                    println!(
                        "  listen {} {}:{}",
                        s(&l["trtype"]),
                        s(&l["traddr"]),
                        s(&l["trsvcid"])
                    );
                }
            }
            Ok(())
        }
        "nvmf_get_controllers" => table(
            &[
                "CNTLID",
                "SUBSYSTEM",
                "HOST",
                "IO QUEUES",
                "KATO MS",
                "STATE",
            ],
            items
                .iter()
                .map(|c| {
                    vec![
                        s(&c["cntlid"]),
                        s(&c["subnqn"]),
                        s(&c["hostnqn"]),
                        s(&c["num_io_qpairs"]),
                        s(&c["kato_ms"]),
                        if c["failed"] == true {
                            "failed"
                        } else {
                            "active"
                        }
                        .into(),
                    ]
                })
                .collect(),
        ),
        "nvmf_get_qpairs" => table(
            &["CNTLID", "QID", "REACTOR", "SUBSYSTEM", "HOST", "STATE"],
            items
                .iter()
                .map(|q| {
                    vec![
                        s(&q["cntlid"]),
                        s(&q["qid"]),
                        s(&q["reactor"]),
                        s(&q["subnqn"]),
                        s(&q["hostnqn"]),
                        s(&q["state"]),
                    ]
                })
                .collect(),
        ),
        "framework_get_reactors" => table(
            &[
                "REACTOR",
                "CORE",
                "BUSY %",
                "CONNECTIONS",
                "TASKS",
                "PARKED",
            ],
            v["reactors"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|r| {
                    vec![
                        s(&r["index"]),
                        s(&r["lcore"]),
                        format!("{:.1}", r["busy_ratio"].as_f64().unwrap_or(0.0) * 100.0),
                        s(&r["connections"]),
                        s(&r["tasks"]),
                        s(&r["parked"]),
                    ]
                })
                .collect(),
        ),
        "save_config" => {
            print!("{}", v.as_str().unwrap_or_default());
            Ok(())
        }
        "rpc_get_methods" => {
            for m in items {
                println!("{}", s(m));
            }
            Ok(())
        }
        "nvmf_subsystem_add_ns" => {
            println!("nsid {v}");
            Ok(())
        }
        _ => {
            match v {
                Value::Bool(true) => println!("ok"),
                other => println!("{}", s(other)),
            }
            Ok(())
        }
    }
}

/// Two samples `interval` apart: rates from their difference, totals from the second.
fn stats(ctl: &Ctl, json: bool, interval: f64) -> Result<()> {
    let first = ctl.call("stats_get", Value::Null)?;
    let (prev, cur) = if interval > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(interval.min(3600.0)));
        (Some(first), ctl.call("stats_get", Value::Null)?)
    } else {
        (None, first)
    };
    if json {
        return print_json(&cur);
    }
    let empty = Vec::new();
    let elapsed_s = prev
        .as_ref()
        .map(|p| {
            (cur["uptime_ns"].as_u64().unwrap_or(0) as f64
                - p["uptime_ns"].as_u64().unwrap_or(0) as f64)
                / 1e9
        })
        .filter(|s| *s > 0.0);
    let delta = |key: &str, ns: &Value, field: &str| -> Option<f64> {
        let p = prev.as_ref()?;
        let old = p["namespaces"]
            .as_array()?
            .iter()
            .find(|o| o["nqn"] == ns["nqn"] && o["nsid"] == ns["nsid"])?;
        let _ = key;
        Some(ns[field].as_u64()? as f64 - old[field].as_u64()? as f64)
    };
    let rate = |d: Option<f64>| match (d, elapsed_s) {
        (Some(d), Some(s)) => format!("{:.0}", d / s),
        _ => "-".into(),
    };
    table(
        &[
            "SUBSYSTEM",
            "NSID",
            "READ IOPS",
            "WRITE IOPS",
            "READ MB/s",
            "WRITE MB/s",
            "QD",
            "P50 us",
            "P99 us",
            "MAX us",
        ],
        cur["namespaces"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|ns| {
                let mbs = |field: &str| match (delta("", ns, field), elapsed_s) {
                    (Some(d), Some(s)) => format!("{:.1}", d / s / 1e6),
                    _ => "-".into(),
                };
                vec![
                    s(&ns["nqn"]),
                    s(&ns["nsid"]),
                    rate(delta("", ns, "read_ops")),
                    rate(delta("", ns, "write_ops")),
                    mbs("bytes_read"),
                    mbs("bytes_written"),
                    s(&ns["queue_depth"]),
                    s(&ns["latency_us"]["p50"]),
                    s(&ns["latency_us"]["p99"]),
                    s(&ns["latency_us"]["max"]),
                ]
            })
            .collect(),
    )?;
    human::volume_stats(&cur)?;
    println!();
    table(
        &["REACTOR", "CORE", "BUSY %", "CONNECTIONS"],
        cur["reactors"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|r| {
                let busy = prev
                    .as_ref()
                    .and_then(|p| p["reactors"].as_array())
                    .and_then(|a| a.iter().find(|o| o["index"] == r["index"]))
                    .and_then(|o| {
                        let b = r["busy_ns"].as_u64()?.checked_sub(o["busy_ns"].as_u64()?)?;
                        let i = r["idle_ns"].as_u64()?.checked_sub(o["idle_ns"].as_u64()?)?;
                        (b + i > 0).then(|| b as f64 / (b + i) as f64)
                    })
                    .or_else(|| r["busy_ratio"].as_f64())
                    .unwrap_or(0.0);
                vec![
                    s(&r["index"]),
                    s(&r["lcore"]),
                    format!("{:.1}", busy * 100.0),
                    s(&r["connections"]),
                ]
            })
            .collect(),
    )
}
