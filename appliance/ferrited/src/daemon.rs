//! Start-up and shutdown of the target: reactors, backends, subsystems, transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ferrite_nvmf::{Listener, NamespaceParams, SubsystemParams, Target, TargetOptions, Trtype};
use ferrite_reactor::{CoreList, IdlePolicy, Runtime, RuntimeConfig};
use ferrite_rpc::{Appliance, RpcServer};

use crate::config::{parse_hex16, Config};
use crate::control::Control;
use crate::state::StateDir;
use crate::transports::Transports;

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
    pub transports: Arc<Transports>,
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
        if let Some(h) = config.housekeeping_reactor {
            if h >= runtime.reactor_count() {
                bail!(
                    "housekeeping_reactor {h}: there are only {} reactors (cores {cores})",
                    runtime.reactor_count()
                );
            }
        }
        // Reservations persist beside the state file, one file per namespace.
        let target = Target::new(TargetOptions {
            reservation_dir: opts.state.as_ref().map(|s| s.dir().join("reservations")),
            ..TargetOptions::default()
        });
        let transports = Arc::new(Transports::new(Arc::clone(&target), runtime.spawner()));
        // NVMe/TCP runs from the start (the listener RPCs of a daemon without listeners use it);
        // other transports start with their first listener.
        transports.get(Trtype::Tcp)?;
        let control = Arc::new(Control::new(
            Arc::clone(&target),
            Arc::clone(&transports),
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
        // Remote controllers after the local bdevs, before the pools that may use them.
        for r in &config.nvme_controllers {
            let names = control
                .attach_remote_params(r)
                .map_err(|e| anyhow!("nvme_controller {}: {}", r.name, e.message))?;
            log::info!("nvme_controller {}: bdevs {names:?}", r.name);
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
        crate::auth_config::apply_keys(&target, &config.keys, config.dhchap.as_ref())?;
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
            crate::auth_config::apply_host_keys(&target, &s.nqn, &s.host_keys)?;
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
                    anagrpid: ns.anagrpid,
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
        let mut top: Vec<Listener> = config
            .listen
            .iter()
            .map(|&addr| Listener {
                trtype: Trtype::Tcp,
                addr,
            })
            .collect();
        for l in &config.listeners {
            top.push(l.listener().map_err(|e| anyhow!(e))?);
        }
        let wanted: Vec<(&str, Vec<Listener>)> = config
            .subsystems
            .iter()
            .map(|s| {
                if s.listen.is_none() && s.listeners.is_empty() {
                    return Ok((s.nqn.as_str(), top.clone()));
                }
                let mut own: Vec<Listener> = s
                    .listen
                    .iter()
                    .flatten()
                    .map(|&addr| Listener {
                        trtype: Trtype::Tcp,
                        addr,
                    })
                    .collect();
                for l in &s.listeners {
                    own.push(
                        l.listener()
                            .map_err(|e| anyhow!("subsystem {}: {e}", s.nqn))?,
                    );
                }
                Ok((s.nqn.as_str(), own))
            })
            .collect::<Result<_>>()?;
        let register = |nqn: &str, listener: Listener| {
            let addr = listener.addr;
            target
                .add_subsystem_listener(nqn, listener)
                .with_context(|| format!("subsystem {nqn} listener {addr}"))
        };
        for (nqn, listeners) in &wanted {
            for l in listeners.iter().filter(|l| l.addr.port() != 0) {
                register(nqn, l.clone())?;
            }
        }
        for s in &config.subsystems {
            for a in &s.ana {
                let state = ferrite_nvmf::AnaState::parse(&a.state).ok_or_else(|| {
                    anyhow!(
                        "subsystem {}: unknown ANA state {:?} (optimized, non_optimized, \
                         inaccessible, persistent_loss, change)",
                        s.nqn,
                        a.state
                    )
                })?;
                let listener = Listener {
                    trtype: Trtype::Tcp,
                    addr: a.listen,
                };
                target
                    .set_ana_state(&s.nqn, &listener, a.anagrpid, state)
                    .with_context(|| format!("subsystem {} ANA state on {}", s.nqn, a.listen))?;
            }
        }
        let mut to_bind = top.clone();
        for (_, listeners) in &wanted {
            for l in listeners {
                if !to_bind.contains(l) {
                    to_bind.push(l.clone());
                }
            }
        }
        let mut listening = Vec::new();
        for l in &to_bind {
            let bound = transports
                .listen(l.trtype, l.addr)
                .with_context(|| format!("{} listener {}", l.trtype.as_str(), l.addr))?;
            listening.push(bound);
            // A port chosen by the kernel (port 0) is known only now.
            if l.addr.port() == 0 {
                for (nqn, listeners) in &wanted {
                    if listeners.contains(l) {
                        register(
                            nqn,
                            Listener {
                                trtype: l.trtype,
                                addr: bound,
                            },
                        )?;
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
            transports,
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
        self.transports.shutdown();
        // Nothing writes any more: checkpoint every pool (their owners run on the reactors).
        self.control.pools.close_all();
        self.runtime
            .shutdown()
            .map_err(|e| anyhow!("stopping reactors: {e}"))?;
        // Pools checkpointed and channels closed: remote members may go now.
        self.control.remotes.close_all();
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
