//! The daemon's replication journals (issue 10): one per consistency group, on a thick volume
//! `journal-g<group>` allocated in a pool, served on the stream endpoint (a Unix socket) that
//! `ferrite-replicator` pulls from. A replicated namespace is exported through the bdev
//! `<bdev>@journal`, which journals every modifying request before it completes.
//!
//! Kept in the configuration as `[[journal]]` sections (group, volume, attached namespaces);
//! at start they are opened after the pools and before the subsystems that export them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_bdev::BlockDevice;
use ferrite_gateway_protocol::{DomainId, Epoch, GroupId, Nsid};
use ferrite_journal::endpoint::{serve, Groups};
use ferrite_journal::{Journal, JournalReader, JournaledBdev};
use ferrite_nvmf::Target;
use ferrite_rpc::journals::{JournalCreate, JournalHost};
use ferrite_rpc::protocol::{ALREADY_EXISTS, BUSY};
use ferrite_rpc::RpcError;
use ferrite_volume::{Pool, Provisioning};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::control::Control;

/// Suffix of a journaled bdev's name.
const SUFFIX: &str = "@journal";

/// `[[journal]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    pub group: u32,
    /// The journal volume, `"<pool>/journal-g<group>"`.
    pub volume: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<JournaledConfig>,
    /// The group's replication pair (`replication_create`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::replication::ReplicationConfig>,
}

/// A bdev journaled in a group (exported as `<bdev>@journal`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JournaledConfig {
    pub bdev: String,
    pub nsid: u32,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) journal: Arc<Journal>,
    pub(crate) config: JournalConfig,
    /// The previous throughput sample of the pair: (when, bytes acknowledged).
    pub(crate) sample: Option<(std::time::Instant, u64)>,
}

#[derive(Debug, Default)]
pub(crate) struct Journals {
    map: Mutex<BTreeMap<u32, Entry>>,
    groups: Arc<Groups>,
    /// Where the stream endpoint is (to be) bound; it is bound with the first journal.
    endpoint_path: Mutex<Option<PathBuf>>,
    endpoint: Mutex<Option<PathBuf>>,
}

impl Journals {
    pub(crate) fn map(&self) -> MutexGuard<'_, BTreeMap<u32, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn configs(&self) -> Vec<JournalConfig> {
        self.map().values().map(|e| e.config.clone()).collect()
    }

    /// Where to bind the stream endpoint when the first journal appears.
    pub(crate) fn set_endpoint_path(&self, path: PathBuf) {
        *self.endpoint_path.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Binds the stream endpoint (once).
    fn serve(&self) {
        let mut ep = self.endpoint.lock().unwrap_or_else(|p| p.into_inner());
        if ep.is_some() {
            return;
        }
        let Some(path) = self
            .endpoint_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            log::warn!("no journal stream endpoint: set journal_socket or run with an RPC socket");
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match serve(&path, Arc::clone(&self.groups)) {
            Ok(p) => {
                log::info!("journal stream endpoint on {}", p.display());
                *ep = Some(p);
            }
            Err(e) => log::error!("journal stream endpoint {}: {e}", path.display()),
        }
    }

    fn endpoint(&self) -> Option<PathBuf> {
        self.endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn insert(&self, journal: Arc<Journal>, config: JournalConfig) {
        self.groups.insert(JournalReader::new(
            Arc::clone(&journal),
            DomainId(1),
            Epoch(1),
        ));
        self.map().insert(
            config.group,
            Entry {
                journal,
                config,
                sample: None,
            },
        );
        self.serve();
    }

    /// Start-up: opens a configured journal and registers its journaled bdevs. The journal
    /// volume is taken off the bdev list so it cannot be exported.
    pub(crate) fn open_configured(
        &self,
        target: &Target,
        pools: &[Arc<Pool>],
        cfg: &JournalConfig,
    ) -> Result<(), RpcError> {
        let vol = volume_of(pools, &cfg.volume)?;
        let journal = Journal::open(vol, GroupId(cfg.group))
            .map_err(|e| RpcError::internal(format!("group {}: {e}", cfg.group)))?;
        let _ = target.remove_bdev(&cfg.volume);
        if let Some(r) = &cfg.replication {
            crate::replication::apply(&journal, r)
                .map_err(|e| RpcError::invalid_params(format!("group {}: {e}", cfg.group)))?;
        }
        for ns in &cfg.namespaces {
            attach(target, &journal, &ns.bdev, ns.nsid)?;
        }
        log::info!(
            "journal of group {} on {}: records {}..={} held",
            cfg.group,
            cfg.volume,
            journal.trimmed() + 1,
            journal.committed()
        );
        self.insert(journal, cfg.clone());
        Ok(())
    }
}

fn volume_of(pools: &[Arc<Pool>], name: &str) -> Result<Arc<dyn BlockDevice>, RpcError> {
    let (pool, vol) = ferrite_rpc::volumes::split_name(name)?;
    let p = pools
        .iter()
        .find(|p| p.name() == pool)
        .ok_or_else(|| RpcError::not_found(format!("no pool {pool} for journal volume {name}")))?;
    let v = p
        .volume(vol)
        .ok_or_else(|| RpcError::not_found(format!("no journal volume {name}")))?;
    Ok(v as Arc<dyn BlockDevice>)
}

fn attach(
    target: &Target,
    journal: &Arc<Journal>,
    bdev: &str,
    nsid: u32,
) -> Result<String, RpcError> {
    let inner = target
        .config()
        .bdevs
        .get(bdev)
        .map(|e| Arc::clone(&e.bdev))
        .ok_or_else(|| RpcError::not_found(format!("no bdev {bdev}")))?;
    let wrapped = JournaledBdev::new(inner, Arc::clone(journal), Nsid(nsid))
        .map_err(|e| RpcError::invalid_params(format!("bdev {bdev}: {e}")))?;
    let name = wrapped.name().to_string();
    target.add_bdev(&name, Arc::new(wrapped))?;
    Ok(name)
}

fn entry_json(e: &Entry, endpoint: Option<&Path>) -> Value {
    let s = e.journal.stats();
    json!({
        "group": e.config.group,
        "volume": e.config.volume,
        "endpoint": endpoint.map(|p| p.display().to_string()),
        "slots": s.slots,
        "slot_size": s.slot_data_bytes,
        "reserved_seq": s.reserved,
        "committed_seq": s.committed,
        "trimmed_seq": s.trimmed,
        "used_slots": s.reserved - s.trimmed,
        "full_refusals": s.full_refusals,
        "write_errors": s.write_errors,
        "lost_after_hole": s.lost_after_hole,
        "broken": e.journal.is_broken(),
        "namespaces": e.config.namespaces.iter().map(|n| json!({
            "bdev": n.bdev,
            "journaled_bdev": format!("{}{SUFFIX}", n.bdev),
            "nsid": n.nsid,
        })).collect::<Vec<_>>(),
    })
}

impl JournalHost for Control {
    fn journal_create(&self, p: JournalCreate) -> Result<Value, RpcError> {
        if self.journals.map().contains_key(&p.group) {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("group {} already has a journal", p.group),
            ));
        }
        let pool = self
            .pools
            .all()
            .into_iter()
            .find(|x| x.name() == p.pool)
            .ok_or_else(|| RpcError::not_found(format!("no pool {}", p.pool)))?;
        let name = format!("journal-g{}", p.group);
        let vol = pool.create_volume(&name, p.size, Provisioning::Thick)?;
        let bdev_name = ferrite_rpc::volumes::bdev_name(&p.pool, &name);
        let journal =
            match Journal::format(vol as Arc<dyn BlockDevice>, GroupId(p.group), p.slot_size) {
                Ok(j) => j,
                Err(e) => {
                    if let Err(d) = pool.delete_volume(&name) {
                        log::error!("journal volume {bdev_name} left behind: {d}");
                    }
                    return Err(RpcError::invalid_params(format!("group {}: {e}", p.group)));
                }
            };
        log::info!(
            "journal of group {} created on {bdev_name}: {} slots of {} bytes",
            p.group,
            journal.stats().slots,
            journal.slot_data_bytes()
        );
        self.journals.insert(
            journal,
            JournalConfig {
                group: p.group,
                volume: bdev_name,
                namespaces: Vec::new(),
                replication: None,
            },
        );
        let map = self.journals.map();
        Ok(entry_json(
            &map[&p.group],
            self.journals.endpoint().as_deref(),
        ))
    }

    fn journal_attach(&self, group: u32, bdev: &str, nsid: u32) -> Result<String, RpcError> {
        let mut map = self.journals.map();
        if let Some((g, _)) = map
            .iter()
            .find(|(_, e)| e.config.namespaces.iter().any(|n| n.bdev == bdev))
        {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("bdev {bdev} is already journaled in group {g}"),
            ));
        }
        let e = map
            .get_mut(&group)
            .ok_or_else(|| RpcError::not_found(format!("group {group} has no journal")))?;
        if e.config.namespaces.iter().any(|n| n.nsid == nsid) {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("group {group} already has namespace {nsid}"),
            ));
        }
        if bdev.ends_with(SUFFIX) || bdev == e.config.volume {
            return Err(RpcError::invalid_params(format!(
                "bdev {bdev} cannot be journaled"
            )));
        }
        if let Some(pool) = self.pools.pool_of_bdev(bdev) {
            return Err(RpcError::new(
                BUSY,
                format!("bdev {bdev} is a member of pool {pool}"),
            ));
        }
        ferrite_rpc::volumes::refuse_if_exported(&self.target, bdev, "journal")?;
        let name = attach(&self.target, &e.journal, bdev, nsid)?;
        e.config.namespaces.push(JournaledConfig {
            bdev: bdev.to_string(),
            nsid,
        });
        log::info!("{name}: bdev {bdev} journaled in group {group} as namespace {nsid}");
        Ok(name)
    }

    fn journal_detach(&self, bdev: &str) -> Result<(), RpcError> {
        let inner = bdev.strip_suffix(SUFFIX).ok_or_else(|| {
            RpcError::invalid_params(format!("{bdev} is not a journaled bdev (<bdev>{SUFFIX})"))
        })?;
        let mut map = self.journals.map();
        let e = map
            .values_mut()
            .find(|e| e.config.namespaces.iter().any(|n| n.bdev == inner))
            .ok_or_else(|| RpcError::not_found(format!("no journaled bdev {bdev}")))?;
        ferrite_rpc::volumes::unregister(&self.target, bdev, "detach")?;
        e.config.namespaces.retain(|n| n.bdev != inner);
        log::info!("{bdev} detached from group {}", e.config.group);
        Ok(())
    }

    fn journal_list(&self) -> Value {
        let endpoint = self.journals.endpoint();
        Value::Array(
            self.journals
                .map()
                .values()
                .map(|e| entry_json(e, endpoint.as_deref()))
                .collect(),
        )
    }

    fn journal_delete(&self, group: u32) -> Result<(), RpcError> {
        let mut map = self.journals.map();
        let e = map
            .get(&group)
            .ok_or_else(|| RpcError::not_found(format!("group {group} has no journal")))?;
        if e.config.replication.is_some() {
            return Err(RpcError::new(
                BUSY,
                format!("group {group} is a replication pair (replication_delete first)"),
            ));
        }
        if let Some(n) = e.config.namespaces.first() {
            return Err(RpcError::new(
                BUSY,
                format!(
                    "group {group} still journals bdev {} (journal_detach {}{SUFFIX} first)",
                    n.bdev, n.bdev
                ),
            ));
        }
        let (pool, vol) = ferrite_rpc::volumes::split_name(&e.config.volume)?;
        let pool = self
            .pools
            .all()
            .into_iter()
            .find(|p| p.name() == pool)
            .ok_or_else(|| RpcError::not_found(format!("no pool {pool}")))?;
        let vol = vol.to_string();
        self.journals.groups.remove(GroupId(group));
        map.remove(&group);
        drop(map);
        pool.delete_volume(&vol)?;
        log::info!("journal of group {group} deleted");
        Ok(())
    }
}
