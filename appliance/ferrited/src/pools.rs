//! The daemon's pools: opened (or created over blank members) at start from `[[pool]]`,
//! created and destroyed over RPC, closed with a checkpoint at shutdown. A bdev is a member
//! of at most one pool; members stay registered with the target (so `bdev_list` shows them)
//! but cannot be exported or deleted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_bdev::BlockDevice;
use ferrite_nvmf::Target;
use ferrite_reactor::Spawner;
use ferrite_rpc::protocol::{ALREADY_EXISTS, BUSY};
use ferrite_rpc::RpcError;
use ferrite_volume::{Pool, PoolOptions, VolumeError};
use thiserror::Error;

use crate::config::{format_size, parse_size, PoolConfig};

#[derive(Debug, Error)]
pub enum PoolSetupError {
    #[error("pool {pool}: {message}")]
    Config { pool: String, message: String },
    #[error("pool {pool}: {source}")]
    Volume { pool: String, source: VolumeError },
}

impl From<PoolSetupError> for RpcError {
    fn from(e: PoolSetupError) -> RpcError {
        match e {
            PoolSetupError::Config { .. } => RpcError::invalid_params(e.to_string()),
            PoolSetupError::Volume { source, .. } => source.into(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    pool: Arc<Pool>,
    /// As save_config writes it.
    config: PoolConfig,
}

#[derive(Debug)]
pub(crate) struct Pools {
    map: Mutex<BTreeMap<String, Entry>>,
    /// Where the pools' metadata owners run: the housekeeping reactor.
    spawner: Spawner,
    reactor: usize,
}

impl Pools {
    pub(crate) fn new(spawner: Spawner, reactor: usize) -> Pools {
        Pools {
            map: Mutex::default(),
            spawner,
            reactor,
        }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn all(&self) -> Vec<Arc<Pool>> {
        self.map().values().map(|e| Arc::clone(&e.pool)).collect()
    }

    pub(crate) fn configs(&self) -> Vec<PoolConfig> {
        self.map().values().map(|e| e.config.clone()).collect()
    }

    pub(crate) fn pool_of_bdev(&self, bdev: &str) -> Option<String> {
        self.map()
            .values()
            .find(|e| e.config.bdevs.iter().any(|b| b == bdev))
            .map(|e| e.config.name.clone())
    }

    pub(crate) fn set_space_warning(&self, pool: &str, percent: u8) -> Result<(), RpcError> {
        let mut map = self.map();
        let e = map
            .get_mut(pool)
            .ok_or_else(|| RpcError::not_found(format!("no pool {pool}")))?;
        e.config.space_warning = Some(percent);
        Ok(())
    }

    /// The member devices, checked: registered, listed once, in no other pool, not exported,
    /// not themselves volumes.
    fn members(
        &self,
        target: &Target,
        pool: &str,
        bdevs: &[String],
    ) -> Result<Vec<Arc<dyn BlockDevice>>, PoolSetupError> {
        let cfg = target.config();
        let err = |message: String| PoolSetupError::Config {
            pool: pool.to_string(),
            message,
        };
        if bdevs.is_empty() {
            return Err(err("bdevs must name at least one bdev".into()));
        }
        let mut out = Vec::new();
        for (i, name) in bdevs.iter().enumerate() {
            if bdevs[..i].contains(name) {
                return Err(err(format!("bdev {name} is listed twice")));
            }
            let entry = cfg
                .bdevs
                .get(name)
                .ok_or_else(|| err(format!("no bdev {name} (create it first)")))?;
            if let Some(other) = self.pool_of_bdev(name) {
                return Err(err(format!(
                    "bdev {name} is already a member of pool {other}"
                )));
            }
            if name.contains('/') {
                return Err(err(format!(
                    "bdev {name} is a volume; a pool is made of backends"
                )));
            }
            if let Some((nqn, nsid)) = target.exports_of(name).into_iter().next() {
                return Err(err(format!(
                    "bdev {name} is exported by subsystem {nqn} namespace {nsid} (remove the namespace first)"
                )));
            }
            out.push(Arc::clone(&entry.bdev));
        }
        Ok(out)
    }

    fn insert(&self, pool: Arc<Pool>, config: PoolConfig) {
        if let Some(p) = config.space_warning {
            pool.set_space_warning(p);
        }
        self.map()
            .insert(config.name.clone(), Entry { pool, config });
    }

    /// Start-up: opens the pool when its members carry its labels, creates it when they are
    /// all blank, and refuses anything else without writing.
    pub(crate) fn open_configured(
        &self,
        target: &Target,
        cfg: &PoolConfig,
    ) -> Result<Arc<Pool>, PoolSetupError> {
        let name = &cfg.name;
        let verr = |source| PoolSetupError::Volume {
            pool: name.clone(),
            source,
        };
        let err = |message: String| PoolSetupError::Config {
            pool: name.clone(),
            message,
        };
        if self.map().contains_key(name) {
            return Err(err("defined twice".into()));
        }
        let members = self.members(target, name, &cfg.bdevs)?;
        let mut blank = Vec::new();
        let mut labelled = Vec::new();
        for dev in &members {
            match Pool::probe(dev.as_ref()).map_err(verr)? {
                None => blank.push(dev.name().to_string()),
                Some(label) if label.pool_name == *name => labelled.push(dev.name().to_string()),
                Some(label) => {
                    return Err(err(format!(
                        "device {} belongs to pool {}, not {name}",
                        dev.name(),
                        label.pool_name
                    )))
                }
            }
        }
        let pool = if labelled.is_empty() {
            let cluster_size = cfg
                .cluster_size
                .as_deref()
                .map(parse_size)
                .transpose()
                .map_err(|e| err(e.to_string()))?;
            let opts = PoolOptions {
                cluster_size: cluster_size.unwrap_or(ferrite_volume::DEFAULT_CLUSTER),
            };
            log::info!(
                "pool {name}: members {:?} are blank: creating it",
                cfg.bdevs
            );
            Pool::create_on(name, members, opts, self.spawner.clone(), self.reactor)
                .map_err(verr)?
        } else if blank.is_empty() {
            Pool::open_on(members, self.spawner.clone(), self.reactor).map_err(verr)?
        } else {
            return Err(err(format!(
                "devices {blank:?} are blank but {labelled:?} are members of it: refusing to guess"
            )));
        };
        let mut config = cfg.clone();
        config.cluster_size = Some(format_size(pool.info().cluster_size));
        self.insert(Arc::clone(&pool), config);
        Ok(pool)
    }

    /// `pool_create`: blank members only (a valid label is refused by the pool as in use, a
    /// damaged one here, so nothing that might be a pool is overwritten).
    pub(crate) fn create(
        &self,
        target: &Target,
        name: &str,
        bdevs: &[String],
        opts: PoolOptions,
    ) -> Result<Arc<Pool>, RpcError> {
        if self.map().contains_key(name) {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("pool {name} already exists"),
            ));
        }
        let members = self.members(target, name, bdevs)?;
        for dev in &members {
            Pool::probe(dev.as_ref())?;
        }
        let pool = Pool::create_on(name, members, opts, self.spawner.clone(), self.reactor)?;
        log::info!(
            "pool {name} created over {bdevs:?} (cluster {} bytes)",
            opts.cluster_size
        );
        self.insert(
            Arc::clone(&pool),
            PoolConfig {
                name: name.to_string(),
                bdevs: bdevs.to_vec(),
                cluster_size: Some(format_size(opts.cluster_size)),
                space_warning: None,
            },
        );
        Ok(pool)
    }

    pub(crate) fn destroy(&self, name: &str, force: bool) -> Result<(), RpcError> {
        let pool = self
            .map()
            .get(name)
            .map(|e| Arc::clone(&e.pool))
            .ok_or_else(|| RpcError::not_found(format!("no pool {name}")))?;
        pool.destroy(force).map_err(|e| match e {
            VolumeError::NotEmpty { .. } => RpcError::new(BUSY, e.to_string()),
            other => other.into(),
        })?;
        self.map().remove(name);
        log::info!("pool {name} destroyed");
        Ok(())
    }

    /// Shutdown: a checkpoint per pool (after the transport stopped, so nothing writes; before
    /// the reactors stop, since the owners run on one).
    pub(crate) fn close_all(&self) {
        let entries: Vec<Arc<Pool>> = std::mem::take(&mut *self.map())
            .into_values()
            .map(|e| e.pool)
            .collect();
        for pool in entries {
            match pool.close() {
                Ok(()) => log::info!("pool {} closed (checkpoint written)", pool.name()),
                Err(e) => log::error!("pool {}: close: {e}", pool.name()),
            }
        }
    }
}
