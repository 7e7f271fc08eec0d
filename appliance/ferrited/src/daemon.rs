//! Start-up and shutdown of the target: reactors, backends, subsystems, transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ferrite_bdev::{BdevKind, BlockDevice, FaultBdev, FileBdev, MallocBdev, NullBdev};
use ferrite_nvmf::{Listener, NamespaceParams, SubsystemParams, Target, TargetOptions, Trtype};
use ferrite_reactor::{CoreList, IdlePolicy, Runtime, RuntimeConfig};
use ferrite_rpc::{Appliance, RpcServer};
use ferrite_transport_tcp::{TcpOptions, TcpTransport};

use crate::config::{parse_hex16, parse_size, BdevConfig, Config};
use crate::control::Control;
use crate::state::StateDir;

/// Where the JSON-RPC server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcSocket {
    /// No control socket (library users, benchmarks).
    Disabled,
    /// [`ferrite_rpc::default_socket_path`]; when another daemon holds it, ferrited runs
    /// without a control socket and says so.
    Default,
    /// This path; failing to bind it stops the start.
    Path(PathBuf),
}

/// How to start the daemon beyond its configuration.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Pin reactors to their cores.
    pub pin: bool,
    pub rpc: RpcSocket,
    /// `--state-dir`: every accepted change is written there (the caller loads it first).
    pub state: Option<StateDir>,
}

/// A running target.
#[derive(Debug)]
pub struct Daemon {
    pub target: Arc<Target>,
    pub transport: Arc<TcpTransport>,
    pub control: Arc<Control>,
    runtime: Runtime,
    rpc: Option<RpcServer>,
    pub listening: Vec<SocketAddr>,
}

impl Daemon {
    /// Starts everything `config` describes without a control socket; `pin` pins reactors.
    pub fn start(config: &Config, pin: bool) -> Result<Daemon> {
        Daemon::start_with(
            config,
            DaemonOptions {
                pin,
                rpc: RpcSocket::Disabled,
                state: None,
            },
        )
    }

    /// Starts reactors, backends, subsystems, listeners, then the control socket.
    pub fn start_with(config: &Config, opts: DaemonOptions) -> Result<Daemon> {
        let cores: CoreList = match &config.cores {
            Some(text) => text
                .parse()
                .map_err(|e| anyhow!("invalid cores {text:?}: {e}"))?,
            None => CoreList::default(),
        };
        let idle: IdlePolicy = match &config.idle {
            Some(text) => text
                .parse()
                .map_err(|e| anyhow!("invalid idle policy {text:?}: {e}"))?,
            None => IdlePolicy::default(),
        };
        let runtime = Runtime::start(RuntimeConfig {
            cores: cores.clone(),
            idle,
            pin: opts.pin,
            ..RuntimeConfig::default()
        })
        .with_context(|| format!("starting reactors on cores {cores}"))?;
        log::info!(
            "{} reactor(s) on cores {cores}, idle policy {idle}",
            runtime.reactor_count()
        );
        let target = Target::new(TargetOptions::default());
        let transport = Arc::new(TcpTransport::start(
            Arc::clone(&target),
            &runtime,
            TcpOptions::default(),
        )?);
        let control = Arc::new(Control::new(
            Arc::clone(&target),
            Arc::clone(&transport),
            runtime.spawner(),
            config,
            opts.state.clone(),
        ));
        for b in &config.bdevs {
            let bdev = control.add_bdev(b)?;
            log::info!(
                "bdev {}: {} x {} bytes ({})",
                b.name,
                bdev.num_blocks(),
                bdev.block_size(),
                b.kind
            );
        }
        // Pools after their members, before the subsystems that export their volumes.
        for p in &config.pools {
            let pool = control.pools.open_configured(&target, p)?;
            let n = ferrite_rpc::volumes::register_pool(&target, &pool)
                .with_context(|| format!("pool {}: registering its volumes", p.name))?;
            let info = pool.info();
            log::info!(
                "pool {}: {} volumes/snapshots, {} of {} clusters allocated",
                p.name,
                n,
                info.allocated_clusters,
                info.total_clusters
            );
        }
        // Journals after the pools that hold them, before the subsystems exporting `@journal`
        // bdevs. The stream endpoint is bound with the first journal.
        let journal_socket = config.journal_socket.clone().or(match &opts.rpc {
            RpcSocket::Disabled => None,
            RpcSocket::Path(p) => Some(journal_socket_of(p)),
            RpcSocket::Default => Some(journal_socket_of(&ferrite_rpc::default_socket_path())),
        });
        if let Some(path) = journal_socket {
            control.journals.set_endpoint_path(path);
        }
        for j in &config.journals {
            control
                .journals
                .open_configured(&target, &control.pools.all(), j)
                .map_err(|e| anyhow!("journal of group {}: {}", j.group, e.message))?;
        }
        for s in &config.subsystems {
            target
                .create_subsystem(SubsystemParams {
                    nqn: s.nqn.clone(),
                    serial: s.serial_number.clone(),
                    model: s.model_number.clone(),
                    allow_any_host: s.allow_any_host,
                    max_namespaces: s.max_namespaces,
                })
                .with_context(|| format!("subsystem {}", s.nqn))?;
            for host in &s.hosts {
                target
                    .add_host(&s.nqn, host)
                    .with_context(|| format!("subsystem {} host {host}", s.nqn))?;
            }
            for ns in &s.namespaces {
                if let Some(pool) = control.pools.pool_of_bdev(&ns.bdev) {
                    bail!(
                        "subsystem {}: bdev {} is a member of pool {pool} and cannot be exported",
                        s.nqn,
                        ns.bdev
                    );
                }
                let hex = |field: &str, v: &Option<String>| -> Result<Option<[u8; 16]>> {
                    v.as_deref()
                        .map(|t| {
                            parse_hex16(t)
                                .ok_or_else(|| anyhow!("{field} {t:?} is not 32 hex digits"))
                        })
                        .transpose()
                };
                let params = NamespaceParams {
                    nsid: ns.nsid,
                    bdev_name: ns.bdev.clone(),
                    uuid: hex("uuid", &ns.uuid)?,
                    nguid: hex("nguid", &ns.nguid)?,
                };
                let nsid = target
                    .add_namespace(&s.nqn, params)
                    .with_context(|| format!("subsystem {} namespace", s.nqn))?;
                log::info!("subsystem {}: namespace {nsid} = bdev {}", s.nqn, ns.bdev);
            }
        }
        crate::qos::apply(&target, &config.qos)?;
        // Each subsystem listens on its own addresses (default: every top-level one). They are
        // registered before the ports are bound, so a host connecting the moment a port opens is
        // not refused; an address only a subsystem names is bound too.
        let wanted: Vec<(&str, Vec<SocketAddr>)> = config
            .subsystems
            .iter()
            .map(|s| {
                (
                    s.nqn.as_str(),
                    s.listen.clone().unwrap_or_else(|| config.listen.clone()),
                )
            })
            .collect();
        let register = |nqn: &str, addr: SocketAddr| {
            target
                .add_subsystem_listener(
                    nqn,
                    Listener {
                        trtype: Trtype::Tcp,
                        addr,
                    },
                )
                .with_context(|| format!("subsystem {nqn} listener {addr}"))
        };
        for (nqn, addrs) in &wanted {
            for addr in addrs.iter().filter(|a| a.port() != 0) {
                register(nqn, *addr)?;
            }
        }
        let mut to_bind = config.listen.clone();
        for (_, addrs) in &wanted {
            to_bind.extend(
                addrs
                    .iter()
                    .filter(|a| !to_bind.contains(a))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
        let mut listening = Vec::new();
        for addr in &to_bind {
            let bound = transport.listen(*addr)?;
            listening.push(bound);
            // A port chosen by the kernel (port 0) is known only now.
            if addr.port() == 0 {
                for (nqn, addrs) in &wanted {
                    if addrs.contains(addr) {
                        register(nqn, bound)?;
                    }
                }
            }
        }
        if let Some(state) = &opts.state {
            control.save_state()?;
            log::info!("state kept in {}", state.file().display());
        }
        let app: Arc<dyn Appliance> = Arc::clone(&control) as Arc<dyn Appliance>;
        let rpc = match &opts.rpc {
            RpcSocket::Disabled => None,
            RpcSocket::Path(path) => {
                Some(RpcServer::start(path, app).with_context(|| "starting the JSON-RPC server")?)
            }
            RpcSocket::Default => {
                let path = ferrite_rpc::default_socket_path();
                match RpcServer::start(&path, app) {
                    Ok(server) => Some(server),
                    Err(e) if e.is_in_use() => {
                        log::warn!("{e}: running without a control socket");
                        None
                    }
                    Err(e) => return Err(e).context("starting the JSON-RPC server"),
                }
            }
        };
        Ok(Daemon {
            target,
            transport,
            control,
            runtime,
            rpc,
            listening,
        })
    }

    /// The control socket, when one is served.
    pub fn rpc_socket(&self) -> Option<&std::path::Path> {
        self.rpc.as_ref().map(|r| r.path())
    }

    /// Controlled stop: the control socket closes, controllers fail (hosts see their queues
    /// close), listeners and connections close, reactors stop, pools write a checkpoint and
    /// close, backing files are synced.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(mut rpc) = self.rpc.take() {
            rpc.stop();
        }
        self.target.fail_all_controllers("target shutting down");
        self.transport.shutdown();
        self.runtime
            .shutdown()
            .map_err(|e| anyhow!("stopping reactors: {e}"))?;
        // Nothing writes any more: checkpoint every pool.
        self.control.pools.close_all();
        for path in self.control.files() {
            if let Err(e) = std::fs::File::open(&path).and_then(|f| f.sync_all()) {
                log::warn!("sync {}: {e}", path.display());
            }
        }
        log::info!("ferrited stopped");
        Ok(())
    }

    pub fn reactor_stats(&self) -> Vec<ferrite_reactor::ReactorStats> {
        self.runtime.stats()
    }
}

/// The default journal stream endpoint: the RPC socket's path with `.journal` appended.
fn journal_socket_of(rpc: &std::path::Path) -> PathBuf {
    let mut s = rpc.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// Opens the backend `b` describes; a fault-test kind is stacked on `base(name)` and also
/// returned with its controls.
pub(crate) fn open_bdev(
    b: &BdevConfig,
    base: &dyn Fn(&str) -> Option<Arc<dyn BlockDevice>>,
) -> Result<(Arc<dyn BlockDevice>, Option<FaultBdev>)> {
    let kind: BdevKind = b
        .kind
        .parse()
        .map_err(|e| anyhow!("bdev {}: {e}", b.name))?;
    if !kind.is_stacked() && (b.base.is_some() || b.latency.is_some()) {
        bail!(
            "bdev {}: base and latency are only for error, delay and power-cut bdevs",
            b.name
        );
    }
    let block_size = b.block_size.unwrap_or(4096);
    let size = b.size.as_deref().map(parse_size).transpose()?;
    let blocks = |size: Option<u64>| -> Result<u64> {
        let size =
            size.ok_or_else(|| anyhow!("bdev {}: size is required for {} bdevs", b.name, b.kind))?;
        if size == 0 || size % block_size as u64 != 0 {
            bail!(
                "bdev {}: size {size} is not a positive multiple of the block size {block_size}",
                b.name
            );
        }
        Ok(size / block_size as u64)
    };
    Ok((
        match kind {
            BdevKind::Malloc => Arc::new(MallocBdev::new(&b.name, blocks(size)?, block_size)?),
            BdevKind::Null => Arc::new(NullBdev::new(&b.name, blocks(size)?, block_size)?),
            BdevKind::File => {
                let path = b
                    .path
                    .as_ref()
                    .ok_or_else(|| anyhow!("bdev {}: path is required for file bdevs", b.name))?;
                let bdev = if path.exists() {
                    FileBdev::open(&b.name, path, b.block_size)?
                } else {
                    let size = size.ok_or_else(|| {
                        anyhow!(
                            "bdev {}: {} does not exist and no size was given to create it",
                            b.name,
                            path.display()
                        )
                    })?;
                    FileBdev::create(&b.name, path, size, block_size)?
                };
                Arc::new(bdev)
            }
            BdevKind::Error | BdevKind::Delay | BdevKind::PowerCut => {
                return open_stacked(b, kind, base)
            }
        },
        None,
    ))
}

/// An `error`, `delay` or `power-cut` bdev over its base.
fn open_stacked(
    b: &BdevConfig,
    kind: BdevKind,
    base: &dyn Fn(&str) -> Option<Arc<dyn BlockDevice>>,
) -> Result<(Arc<dyn BlockDevice>, Option<FaultBdev>)> {
    let base_name = b
        .base
        .as_deref()
        .ok_or_else(|| anyhow!("bdev {}: base is required for {} bdevs", b.name, b.kind))?;
    if b.size.is_some() || b.path.is_some() || b.block_size.is_some() {
        bail!(
            "bdev {}: a {} bdev takes its size and block size from its base (no size, block_size or path)",
            b.name,
            b.kind
        );
    }
    if b.latency.is_some() && kind != BdevKind::Delay {
        bail!("bdev {}: latency is only for delay bdevs", b.name);
    }
    let base_dev =
        base(base_name).ok_or_else(|| anyhow!("bdev {}: no base bdev {base_name}", b.name))?;
    let fault = FaultBdev::create(kind, &b.name, base_dev, b.latency.map(Into::into))
        .map_err(|e| anyhow!("bdev {}: {e}", b.name))?;
    Ok((fault.device(), Some(fault)))
}
