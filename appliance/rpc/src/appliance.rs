//! What the RPC methods need from the process that hosts them. NVMe-oF configuration goes
//! straight to [`Target`]; the rest (opening backends, sockets, the configuration file format,
//! persistence) belongs to the daemon and is reached through this trait.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use ferrite_bdev::delay::Latencies;
use ferrite_bdev::{BdevKind, FaultBdev};
use ferrite_nvmf::{Listener, PollGroupStats, Target};
use ferrite_reactor::ReactorStats;
use ferrite_volume::{Pool, PoolOptions};

use crate::protocol::RpcError;
use crate::stats::StatsHistory;

/// A backend to create (`bdev_malloc_create`, `bdev_file_create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevSpec {
    Malloc {
        name: String,
        num_blocks: u64,
        block_size: u32,
    },
    File {
        name: String,
        filename: PathBuf,
        /// None: the file's logical block size (4096 when it cannot be found).
        block_size: Option<u32>,
        /// Bytes; required to create a missing file, ignored when it exists.
        size: Option<u64>,
    },
    /// `bdev_error_create`, `bdev_delay_create`, `bdev_power_cut_create`: a fault-test device
    /// stacked on the registered bdev `base`.
    Fault {
        name: String,
        kind: BdevKind,
        base: String,
        /// `delay` only.
        latencies: Option<Latencies>,
    },
    /// `bdev_cache_create`: a cached volume of the registered bdev `backing` through the
    /// registered bdev `cache`.
    Cache {
        name: String,
        backing: String,
        cache: String,
        options: ferrite_cache::CacheOptions,
    },
}

impl BdevSpec {
    pub fn name(&self) -> &str {
        match self {
            BdevSpec::Malloc { name, .. }
            | BdevSpec::File { name, .. }
            | BdevSpec::Fault { name, .. }
            | BdevSpec::Cache { name, .. } => name,
        }
    }
}

/// How a bdev was made, for `bdev_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevOrigin {
    /// "malloc", "file", "null".
    pub kind: String,
    pub filename: Option<PathBuf>,
}

pub trait Appliance: Send + Sync {
    fn target(&self) -> &Arc<Target>;

    /// Opens the backend and registers it with the target.
    fn create_bdev(&self, spec: BdevSpec) -> Result<(), RpcError>;

    /// Unregisters a bdev no namespace uses (else `BUSY`) and closes it.
    fn delete_bdev(&self, name: &str) -> Result<(), RpcError>;
    /// A fault-test bdev with its controls (`bdev_error_inject_error`, ...).
    fn fault_bdev(&self, name: &str) -> Option<FaultBdev>;

    fn bdev_origin(&self, name: &str) -> Option<BdevOrigin>;

    /// Attaches the local NVMe controller at PCI address `traddr` (bound to vfio-pci) and
    /// registers a bdev per namespace, `<name>n<nsid>`; returns their names.
    fn attach_nvme_pcie(&self, name: &str, traddr: &str) -> Result<Vec<String>, RpcError> {
        let _ = (name, traddr);
        Err(RpcError::invalid_params(
            "this process has no NVMe PCIe driver",
        ))
    }

    /// Deletes the namespace bdevs of controller `name` (none may be in use) and releases it.
    fn detach_nvme_controller(&self, name: &str) -> Result<(), RpcError> {
        Err(RpcError::not_found(format!("no NVMe controller {name}")))
    }

    /// Starts accepting connections of the listener's transport on its address and publishes
    /// it in discovery.
    fn listen(&self, listener: Listener) -> Result<SocketAddr, RpcError>;

    /// Stops accepting on the listener; established connections stay.
    fn stop_listening(&self, listener: Listener) -> Result<(), RpcError>;

    /// Busy/idle accounting of every reactor.
    fn reactor_stats(&self) -> Vec<ReactorStats>;

    /// Open transport connections (queue pairs) per reactor.
    fn connections(&self) -> Vec<usize>;

    /// Counters of every reactor's NVMe poll group, in reactor order.
    fn poll_group_stats(&self) -> Result<Vec<PollGroupStats>, RpcError>;

    /// The running configuration as a configuration file the daemon reproduces exactly.
    fn save_config(&self) -> Result<String, RpcError>;

    /// Called after every accepted change: persists the state when the daemon keeps one.
    fn persist(&self) -> Result<(), RpcError>;

    /// Open pools, sorted by name.
    fn pools(&self) -> Vec<Arc<Pool>>;

    fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools().into_iter().find(|p| p.name() == name)
    }

    /// Creates a pool over registered bdevs that no pool uses and no namespace exports.
    /// Called with [`Appliance::volume_lock`] held.
    fn create_pool(
        &self,
        name: &str,
        bdevs: &[String],
        opts: PoolOptions,
    ) -> Result<Arc<Pool>, RpcError>;

    /// Destroys a pool (its labels are erased). Its volume bdevs are already unregistered by
    /// the caller. Called with [`Appliance::volume_lock`] held.
    fn delete_pool(&self, name: &str, force: bool) -> Result<(), RpcError>;

    /// Records a pool's space-warning threshold (kept in the configuration).
    fn set_space_warning(&self, pool: &str, percent: u8) -> Result<(), RpcError>;

    /// The pool a bdev belongs to as a member.
    fn pool_of_bdev(&self, bdev: &str) -> Option<String>;

    /// Serializes pool and volume changes with namespace additions, so a bdev cannot become a
    /// pool member and a namespace at the same time.
    fn volume_lock(&self) -> MutexGuard<'_, ()>;

    /// The previous `stats_get` sample per volume (rates are averaged since then).
    fn stats_history(&self) -> &StatsHistory;

    /// A cached volume (`bdev_cache_*`).
    fn cache_bdev(&self, _name: &str) -> Option<Arc<ferrite_cache::CacheBdev>> {
        None
    }

    /// Every cached volume, sorted by name.
    fn cache_bdevs(&self) -> Vec<Arc<ferrite_cache::CacheBdev>> {
        Vec::new()
    }

    /// Replication journals (`journal_*`), when the host has them.
    fn journals(&self) -> Option<&dyn crate::journals::JournalHost> {
        None
    }

    /// Replication pairs (`replication_*`), when the host has them.
    fn replication(&self) -> Option<&dyn crate::replication::ReplicationHost> {
        None
    }

    /// Remote NVMe-oF controllers (`bdev_nvme_*` with trtype tcp), when the host has them.
    fn remotes(&self) -> Option<&dyn crate::remote::RemoteHost> {
        None
    }
}
