//! The daemon's side of the control plane: what `ferrite-rpc` methods need beyond the
//! [`Target`] (opening backends, listeners, the configuration-file format, persistence).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_bdev::BlockDevice;
use ferrite_nvmf::{Listener, PollGroupStats, Target, Trtype};

use crate::transports::Transports;
use ferrite_reactor::{ReactorStats, Spawner};
use ferrite_rpc::protocol::{ALREADY_EXISTS, BUSY, INVALID_PARAMS};
use ferrite_rpc::{Appliance, BdevOrigin, BdevSpec, RpcError, StatsHistory};
use ferrite_volume::{Pool, PoolOptions};

use crate::backends::open_bdev;
use crate::config::{format_size, BdevConfig, Config, NamespaceConfig, SubsystemConfig};
use crate::pools::Pools;
use crate::state::StateDir;
use anyhow::Context as _;
use ferrite_bdev::FaultBdev;

/// Shared by the daemon and the RPC server threads.
#[derive(Debug)]
pub struct Control {
    pub(crate) target: Arc<Target>,
    pub(crate) transports: Arc<Transports>,
    spawner: Spawner,
    /// How each bdev was made, normalized (actual block size and size), for save_config.
    bdevs: Mutex<BTreeMap<String, BdevConfig>>,
    /// The fault-test bdevs (`error`, `delay`, `power-cut`) with their run-time controls.
    faults: Mutex<BTreeMap<String, FaultBdev>>,
    /// Cached volumes (`bdev_cache_*`).
    caches: crate::caches::Caches,
    cores: Option<String>,
    idle: Option<String>,
    /// As configured (`None`: the last reactor), for save_config.
    housekeeping: Option<usize>,
    state: Option<StateDir>,
    pub(crate) pools: Pools,
    volume_lock: Mutex<()>,
    stats_history: StatsHistory,
    pub(crate) journals: crate::journals::Journals,
    journal_socket: Option<PathBuf>,
    /// Remote NVMe-oF controllers (`bdev_nvme_*`).
    pub(crate) remotes: crate::remotes::Remotes,
}

/// The reactor that runs the pools' metadata owners: as configured (checked at start), else
/// the last one.
pub(crate) fn housekeeping_reactor(config: &Config, spawner: &Spawner) -> usize {
    config
        .housekeeping_reactor
        .unwrap_or(spawner.reactor_count().saturating_sub(1))
}

impl Control {
    pub(crate) fn new(
        target: Arc<Target>,
        transports: Arc<Transports>,
        spawner: Spawner,
        config: &Config,
        state: Option<StateDir>,
    ) -> Control {
        Control {
            target,
            transports,
            housekeeping: config.housekeeping_reactor,
            bdevs: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(BTreeMap::new()),
            caches: Default::default(),
            cores: config.cores.clone(),
            idle: config.idle.clone(),
            state,
            pools: Pools::new(spawner.clone(), housekeeping_reactor(config, &spawner)),
            volume_lock: Mutex::new(()),
            stats_history: StatsHistory::default(),
            journals: crate::journals::Journals::default(),
            journal_socket: config.journal_socket.clone(),
            remotes: crate::remotes::Remotes::default(),
            spawner,
        }
    }

    pub(crate) fn bdevs(&self) -> MutexGuard<'_, BTreeMap<String, BdevConfig>> {
        self.bdevs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, BTreeMap<String, FaultBdev>> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn caches(&self) -> MutexGuard<'_, crate::caches::CacheMap> {
        self.caches.lock()
    }

    /// Opens the backend `b` describes (a fault-test kind over a registered base), registers
    /// it with the target and records it as it will be written back.
    pub(crate) fn add_bdev(&self, b: &BdevConfig) -> anyhow::Result<Arc<dyn BlockDevice>> {
        let target = &self.target;
        let lookup = |name: &str| target.config().bdevs.get(name).map(|e| Arc::clone(&e.bdev));
        let (bdev, fault, cache) = if b.kind == crate::caches::KIND {
            let c = crate::caches::open(b, &lookup, &self.caches())?;
            (Arc::clone(&c) as Arc<dyn BlockDevice>, None, Some(c))
        } else {
            let (bdev, fault) = open_bdev(b, &lookup)?;
            (bdev, fault, None)
        };
        target
            .add_bdev(&b.name, Arc::clone(&bdev))
            .with_context(|| format!("bdev {}", b.name))?;
        let bytes = bdev.num_blocks() * u64::from(bdev.block_size());
        let stacked = fault.is_some() || cache.is_some();
        let normalized = BdevConfig {
            name: b.name.clone(),
            kind: b.kind.clone(),
            size: (!stacked).then(|| format_size(bytes)),
            block_size: (!stacked).then(|| bdev.block_size()),
            path: b.path.clone(),
            base: b.base.clone(),
            latency: b.latency,
            // `format` is for this creation only: a restart must find the dirty data.
            cache: b
                .cache
                .clone()
                .map(|c| crate::caches::CacheConfig { format: false, ..c }),
        };
        self.bdevs().insert(b.name.clone(), normalized);
        if let Some(f) = fault {
            self.faults().insert(b.name.clone(), f);
        }
        if let Some(c) = cache {
            self.caches().insert(b.name.clone(), c);
        }
        Ok(bdev)
    }

    /// Files backing bdevs (synced at shutdown).
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        self.bdevs()
            .values()
            .filter(|b| b.kind != "nvme-pcie") // path names the PCI device, not a file
            .filter_map(|b| b.path.clone())
            .collect()
    }

    /// The running configuration in the configuration-file format. Everything a restart could
    /// choose differently (serial numbers, NSIDs, UUIDs, NGUIDs, actual ports) is explicit.
    pub fn running_config(&self) -> Config {
        let cfg = self.target.config();
        let bdevs = self.bdevs();
        let subsystems = cfg
            .subsystems
            .values()
            .filter(|s| !s.is_discovery())
            .map(|s| SubsystemConfig {
                nqn: s.nqn.clone(),
                serial_number: Some(s.serial.clone()),
                model_number: Some(s.model.clone()),
                max_namespaces: (s.max_namespaces != ferrite_nvmf::MAX_NSID)
                    .then_some(s.max_namespaces),
                allow_any_host: s.allow_any_host,
                hosts: s.hosts.iter().cloned().collect(),
                host_keys: crate::auth_config::running_host_keys(s),
                listen: Some(
                    s.listeners
                        .iter()
                        .filter(|l| l.trtype == Trtype::Tcp)
                        .map(|l| l.addr)
                        .collect(),
                ),
                listeners: other_transports(&s.listeners),
                namespaces: s
                    .namespaces
                    .values()
                    .map(|ns| NamespaceConfig {
                        nsid: Some(ns.nsid),
                        bdev: ns.bdev_name.clone(),
                        uuid: Some(ferrite_rpc::methods::format_uuid(&ns.uuid)),
                        nguid: Some(ferrite_rpc::methods::format_nguid(&ns.nguid)),
                        anagrpid: (ns.anagrpid != ns.nsid).then_some(ns.anagrpid),
                    })
                    .collect(),
                ana: s
                    .ana
                    .entries()
                    .into_iter()
                    .map(|(l, anagrpid, state)| crate::config::AnaConfig {
                        listen: l.addr,
                        anagrpid,
                        state: state.as_str().to_string(),
                    })
                    .collect(),
            })
            .collect();
        let (keys, dhchap) = crate::auth_config::running_keys(&self.target);
        Config {
            keys,
            dhchap,
            cores: self.cores.clone(),
            idle: self.idle.clone(),
            listen: cfg
                .listeners
                .iter()
                .filter(|l| l.trtype == Trtype::Tcp)
                .map(|l| l.addr)
                .collect(),
            listeners: other_transports(&cfg.listeners),
            nvme_controllers: self.remotes.configs(),
            bdevs: self.bdev_configs(&cfg.bdevs.keys().cloned().collect::<Vec<_>>(), &bdevs),
            pools: self.pools.configs(),
            subsystems,
            journals: self.journals.configs(),
            journal_socket: self.journal_socket.clone(),
            housekeeping_reactor: self.housekeeping,
            qos: crate::qos::configs(&self.target.qos().table()),
        }
    }

    /// The records of `names`, each base before the bdevs stacked on it, with the delay
    /// bdevs' current latencies.
    fn bdev_configs(
        &self,
        names: &[String],
        records: &BTreeMap<String, BdevConfig>,
    ) -> Vec<BdevConfig> {
        let depth = |name: &str| {
            let mut d = 0;
            let mut at = records.get(name);
            while let Some(base) = at.and_then(|r| r.base.as_deref()) {
                d += 1;
                // A cached volume also comes after its cache device.
                if let Some(c) = at.and_then(|r| r.cache.as_ref()) {
                    d += depth_of_cache(records, &c.device);
                }
                at = records.get(base);
                if d > records.len() {
                    break;
                }
            }
            d
        };
        let faults = self.faults();
        let mut out: Vec<BdevConfig> = names
            .iter()
            .filter_map(|name| records.get(name).cloned())
            .map(|mut r| {
                if let Some(FaultBdev::Delay(d)) = faults.get(&r.name) {
                    r.latency = Some(d.latencies().into());
                }
                r
            })
            .collect();
        out.sort_by_key(|r| depth(&r.name));
        out
    }

    /// A bdev stacked on `base`, if any.
    pub(crate) fn bdev_stacked_on(&self, base: &str) -> Option<String> {
        self.bdevs()
            .values()
            .find(|b| b.base.as_deref() == Some(base))
            .map(|b| b.name.clone())
    }

    /// Writes the state file (when `--state-dir` is set).
    pub fn save_state(&self) -> Result<(), crate::state::StateError> {
        match &self.state {
            Some(state) => state.save(&self.running_config()),
            None => Ok(()),
        }
    }
}

impl Appliance for Control {
    fn target(&self) -> &Arc<Target> {
        &self.target
    }

    fn create_bdev(&self, spec: BdevSpec) -> Result<(), RpcError> {
        let name = spec.name().to_string();
        if self.target.config().bdevs.contains_key(&name) {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("bdev {name} already exists"),
            ));
        }
        let made_from = match spec {
            BdevSpec::Malloc {
                name,
                num_blocks,
                block_size,
            } => BdevConfig {
                name,
                kind: "malloc".into(),
                size: Some(
                    num_blocks
                        .checked_mul(u64::from(block_size))
                        .ok_or_else(|| RpcError::invalid_params("num_blocks is too large"))?
                        .to_string(),
                ),
                block_size: Some(block_size),
                path: None,
                base: None,
                latency: None,
                cache: None,
            },
            BdevSpec::File {
                name,
                filename,
                block_size,
                size,
            } => BdevConfig {
                name,
                kind: "file".into(),
                size: size.map(|s| s.to_string()),
                block_size,
                path: Some(filename),
                base: None,
                latency: None,
                cache: None,
            },
            BdevSpec::Fault {
                name,
                kind,
                base,
                latencies,
            } => BdevConfig {
                name,
                kind: kind.as_str().into(),
                size: None,
                block_size: None,
                path: None,
                base: Some(base),
                latency: latencies.map(Into::into),
                cache: None,
            },
            BdevSpec::Cache {
                name,
                backing,
                cache,
                options,
            } => BdevConfig {
                name,
                kind: crate::caches::KIND.into(),
                size: None,
                block_size: None,
                path: None,
                base: Some(backing),
                latency: None,
                cache: Some(crate::caches::CacheConfig::from_options(cache, options)),
            },
        };
        let bdev = self
            .add_bdev(&made_from)
            .map_err(|e| RpcError::invalid_params(format!("{e:#}")))?;
        log::info!(
            "bdev {name}: {} x {} bytes ({}) created over RPC",
            bdev.num_blocks(),
            bdev.block_size(),
            made_from.kind
        );
        Ok(())
    }

    fn fault_bdev(&self, name: &str) -> Option<FaultBdev> {
        self.faults().get(name).cloned()
    }

    fn cache_bdev(&self, name: &str) -> Option<Arc<ferrite_cache::CacheBdev>> {
        self.caches().get(name).cloned()
    }

    fn cache_bdevs(&self) -> Vec<Arc<ferrite_cache::CacheBdev>> {
        self.caches().values().cloned().collect()
    }

    fn delete_bdev(&self, name: &str) -> Result<(), RpcError> {
        let _guard = self.volume_lock();
        if let Some(pool) = self.pools.pool_of_bdev(name) {
            return Err(RpcError::new(
                BUSY,
                format!("bdev {name} is a member of pool {pool} (delete the pool first)"),
            ));
        }
        if let Some(ctrl) = self.remotes.controller_of(name) {
            return Err(RpcError::new(
                BUSY,
                format!("bdev {name} is a namespace of NVMe controller {ctrl}: detach it with bdev_nvme_detach_controller"),
            ));
        }
        if !self.bdevs().contains_key(name) && self.target.config().bdevs.contains_key(name) {
            return Err(RpcError::new(
                BUSY,
                format!("bdev {name} is a volume: delete it with volume_delete or snapshot_delete"),
            ));
        }
        let over: Vec<String> = self
            .bdevs()
            .values()
            .filter(|b| {
                b.base.as_deref() == Some(name)
                    || b.cache.as_ref().is_some_and(|c| c.device == name)
            })
            .map(|b| b.name.clone())
            .collect();
        if !over.is_empty() {
            return Err(RpcError::new(
                BUSY,
                format!("bdev {name} is the base of {over:?} (delete those first)"),
            ));
        }
        let bdev = self.target.remove_bdev(name)?;
        self.faults().remove(name);
        // The last reference: dropping it stops the cache engine (its directory saved).
        self.caches().remove(name);
        let record = self.bdevs().remove(name);
        if let Some(path) = record.and_then(|r| r.path) {
            if let Err(e) = std::fs::File::open(&path).and_then(|f| f.sync_all()) {
                log::warn!("sync {}: {e}", path.display());
            }
        }
        drop(bdev);
        log::info!("bdev {name} deleted over RPC");
        Ok(())
    }

    fn bdev_origin(&self, name: &str) -> Option<BdevOrigin> {
        if self.remotes.controller_of(name).is_some() {
            return Some(BdevOrigin {
                kind: "remote".into(),
                filename: None,
            });
        }
        self.bdevs().get(name).map(|b| BdevOrigin {
            kind: b.kind.clone(),
            filename: b.path.clone(),
        })
    }

    fn attach_nvme_pcie(&self, name: &str, traddr: &str) -> Result<Vec<String>, RpcError> {
        crate::nvme_pcie::attach_rpc(self, name, traddr)
    }

    fn detach_nvme_controller(&self, name: &str) -> Result<(), RpcError> {
        crate::nvme_pcie::detach_rpc(self, name)
    }

    fn listen(&self, listener: Listener) -> Result<SocketAddr, RpcError> {
        let addr = listener.addr;
        if self.target.config().listeners.contains(&listener) {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("already listening on {} {addr}", listener.trtype.as_str()),
            ));
        }
        self.transports
            .listen(listener.trtype, addr)
            .map_err(|e| RpcError::new(INVALID_PARAMS, e.to_string()))
    }

    fn stop_listening(&self, listener: Listener) -> Result<(), RpcError> {
        let addr = listener.addr;
        if !self.target.config().listeners.contains(&listener) {
            return Err(RpcError::not_found(format!(
                "not listening on {} {addr}",
                listener.trtype.as_str()
            )));
        }
        self.transports
            .stop_listening(listener.trtype, addr)
            .map_err(|e| RpcError::internal(e.to_string()))
    }

    fn reactor_stats(&self) -> Vec<ReactorStats> {
        self.spawner.stats()
    }

    fn connections(&self) -> Vec<usize> {
        self.transports.connections()
    }

    fn poll_group_stats(&self) -> Result<Vec<PollGroupStats>, RpcError> {
        self.transports
            .poll_group_stats()
            .map_err(|e| RpcError::internal(e.to_string()))
    }

    fn save_config(&self) -> Result<String, RpcError> {
        toml::to_string(&self.running_config())
            .map_err(|e| RpcError::internal(format!("cannot encode the configuration: {e}")))
    }

    fn persist(&self) -> Result<(), RpcError> {
        self.save_state().map_err(|e| {
            log::error!("{e}");
            RpcError::internal(format!("the change is live but was not persisted: {e}"))
        })
    }

    fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.all()
    }

    fn create_pool(
        &self,
        name: &str,
        bdevs: &[String],
        opts: PoolOptions,
    ) -> Result<Arc<Pool>, RpcError> {
        self.pools.create(&self.target, name, bdevs, opts)
    }

    fn delete_pool(&self, name: &str, force: bool) -> Result<(), RpcError> {
        self.pools.destroy(name, force)
    }

    fn set_space_warning(&self, pool: &str, percent: u8) -> Result<(), RpcError> {
        self.pools.set_space_warning(pool, percent)
    }

    fn pool_of_bdev(&self, bdev: &str) -> Option<String> {
        self.pools.pool_of_bdev(bdev)
    }

    fn volume_lock(&self) -> MutexGuard<'_, ()> {
        self.volume_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats_history(&self) -> &StatsHistory {
        &self.stats_history
    }

    fn journals(&self) -> Option<&dyn ferrite_rpc::journals::JournalHost> {
        Some(self)
    }

    fn replication(&self) -> Option<&dyn ferrite_rpc::replication::ReplicationHost> {
        Some(self)
    }

    fn remotes(&self) -> Option<&dyn ferrite_rpc::remote::RemoteHost> {
        Some(self)
    }
}

/// The non-TCP listeners of a set, as configuration entries (TCP ones go in `listen`).
fn other_transports<'a>(
    listeners: impl IntoIterator<Item = &'a Listener>,
) -> Vec<crate::config::ListenerConfig> {
    listeners
        .into_iter()
        .filter(|l| l.trtype != Trtype::Tcp)
        .map(|l| crate::config::ListenerConfig {
            trtype: l.trtype.as_str().to_string(),
            address: l.addr,
        })
        .collect()
}

/// Stacking depth of a cached volume's cache device (0 for a plain bdev).
fn depth_of_cache(records: &BTreeMap<String, BdevConfig>, device: &str) -> usize {
    let mut d = 1;
    let mut at = records.get(device);
    while let Some(base) = at.and_then(|r| r.base.as_deref()) {
        d += 1;
        at = records.get(base);
        if d > records.len() {
            break;
        }
    }
    d
}
