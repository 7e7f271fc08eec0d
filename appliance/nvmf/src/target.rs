//! The target's configuration: bdevs, subsystems with their namespaces and allowed hosts,
//! listeners. Writers (the control thread) build a new immutable [`TargetConfig`] and publish it;
//! reactors load the current one without locking.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use ferrite_bdev::{BdevId, BlockDevice};
use ferrite_nvme::nqn::{validate_nqn, DISCOVERY_NQN};

use crate::controller::{AsyncEvent, Controller, ControllerInfo};
use crate::error::NvmfError;
use crate::subsystem::{Listener, Namespace, Subsystem};
use crate::MAX_NSID;

#[derive(Debug, Clone)]
pub struct SubsystemParams {
    pub nqn: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub allow_any_host: bool,
    pub max_namespaces: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct NamespaceParams {
    /// None: the lowest free NSID.
    pub nsid: Option<u32>,
    pub bdev_name: String,
    pub nguid: Option<[u8; 16]>,
    pub uuid: Option<[u8; 16]>,
    /// None: the group numbered like the NSID (as SPDK does).
    pub anagrpid: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct BdevEntry {
    pub id: BdevId,
    pub bdev: Arc<dyn BlockDevice>,
}

/// One immutable version of the configuration.
#[derive(Debug, Clone, Default)]
pub struct TargetConfig {
    pub subsystems: BTreeMap<String, Arc<Subsystem>>,
    pub bdevs: BTreeMap<String, BdevEntry>,
    pub listeners: Vec<Listener>,
    /// Bumped on every change a discovery log reader could see (GENCTR).
    pub generation: u64,
    /// Hashes and DH groups DH-HMAC-CHAP may negotiate (`nvmf_set_config`'s dhchap_*).
    pub dhchap_policy: Arc<ferrite_auth::AuthPolicy>,
}

impl TargetConfig {
    pub fn subsystem(&self, nqn: &str) -> Option<&Arc<Subsystem>> {
        self.subsystems.get(nqn)
    }
}

/// Limits and identity of the whole target.
#[derive(Debug, Clone)]
pub struct TargetOptions {
    /// Default model number for subsystems created without one.
    pub model: String,
    /// Where namespaces keep their reservation state across restarts (one file each); None:
    /// reservations live in memory only.
    pub reservation_dir: Option<std::path::PathBuf>,
}

impl Default for TargetOptions {
    fn default() -> Self {
        Self {
            model: "Ferrite".to_string(),
            reservation_dir: None,
        }
    }
}

#[derive(Debug)]
pub struct Target {
    config: ArcSwap<TargetConfig>,
    /// Serializes writers; readers never take it.
    writer: Mutex<()>,
    pub(crate) controllers: Mutex<BTreeMap<u16, Arc<Controller>>>,
    /// Named DH-HMAC-CHAP secrets (`keyring_file_add_key`), see `auth.rs`.
    pub(crate) keyring: Mutex<ferrite_auth::Keyring>,
    next_cntlid: AtomicU16,
    next_bdev_id: std::sync::atomic::AtomicU32,
    /// Mirror of the published configuration's generation, for cheap staleness checks.
    generation: std::sync::atomic::AtomicU64,
    started: Instant,
    pub options: TargetOptions,
    /// I/O limits per bdev and per host (`qos_gate`).
    pub(crate) qos: ferrite_qos::Registry,
}

/// First controller id handed out; 0 is avoided because some hosts treat it specially.
const FIRST_CNTLID: u16 = 1;
/// Controller ids FFF0h and above are reserved.
const LAST_CNTLID: u16 = 0xFFEF;

impl Target {
    pub fn new(options: TargetOptions) -> Arc<Target> {
        let mut config = TargetConfig::default();
        let discovery = Subsystem {
            nqn: DISCOVERY_NQN.to_string(),
            serial: random_serial(),
            model: options.model.clone(),
            allow_any_host: true,
            hosts: BTreeSet::new(),
            namespaces: BTreeMap::new(),
            max_namespaces: 0,
            listeners: BTreeSet::new(),
            ana: Default::default(),
            dhchap: BTreeMap::new(),
        };
        config
            .subsystems
            .insert(discovery.nqn.clone(), Arc::new(discovery));
        Arc::new(Target {
            config: ArcSwap::from_pointee(config),
            writer: Mutex::new(()),
            controllers: Mutex::new(BTreeMap::new()),
            keyring: Mutex::new(ferrite_auth::Keyring::new()),
            next_cntlid: AtomicU16::new(FIRST_CNTLID),
            next_bdev_id: std::sync::atomic::AtomicU32::new(0),
            generation: std::sync::atomic::AtomicU64::new(0),
            started: Instant::now(),
            options,
            qos: ferrite_qos::Registry::default(),
        })
    }

    /// The current configuration (lock-free).
    pub fn config(&self) -> Arc<TargetConfig> {
        self.config.load_full()
    }

    /// Generation of the published configuration; changes whenever it does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` to a copy of the configuration and publishes it if it succeeds.
    pub(crate) fn update<R>(
        &self,
        change: impl FnOnce(&mut TargetConfig) -> Result<R, NvmfError>,
    ) -> Result<R, NvmfError> {
        let _guard = self.lock_writer();
        let mut next = TargetConfig::clone(&self.config.load());
        let result = change(&mut next)?;
        next.generation += 1;
        let generation = next.generation;
        self.config.store(Arc::new(next));
        self.generation.store(generation, Ordering::Release);
        Ok(result)
    }

    pub fn add_bdev(&self, name: &str, bdev: Arc<dyn BlockDevice>) -> Result<BdevId, NvmfError> {
        check_name("bdev name", name)?;
        self.update(|cfg| {
            if cfg.bdevs.contains_key(name) {
                return Err(NvmfError::BdevExists(name.to_string()));
            }
            let id = BdevId(self.next_bdev_id.fetch_add(1, Ordering::Relaxed));
            cfg.bdevs.insert(name.to_string(), BdevEntry { id, bdev });
            Ok(id)
        })
    }

    pub fn remove_bdev(&self, name: &str) -> Result<Arc<dyn BlockDevice>, NvmfError> {
        self.update(|cfg| {
            if !cfg.bdevs.contains_key(name) {
                return Err(NvmfError::NoSuchBdev(name.to_string()));
            }
            for sub in cfg.subsystems.values() {
                if let Some(ns) = sub.namespaces.values().find(|ns| ns.bdev_name == name) {
                    return Err(NvmfError::BdevInUse {
                        bdev: name.to_string(),
                        nqn: sub.nqn.clone(),
                        nsid: ns.nsid,
                    });
                }
            }
            let entry = cfg.bdevs.remove(name).expect("presence checked above");
            Ok(entry.bdev)
        })
    }

    /// A bdev changed size (a volume resized online): queues re-read the namespace geometry
    /// and every controller exporting it gets a Namespace Attribute Changed event. Returns the
    /// (subsystem, NSID) pairs notified.
    pub fn bdev_resized(&self, name: &str) -> Result<Vec<(String, u32)>, NvmfError> {
        let exported = self.update(|cfg| {
            if !cfg.bdevs.contains_key(name) {
                return Err(NvmfError::NoSuchBdev(name.to_string()));
            }
            Ok(exports_in(cfg, name))
        })?;
        for (nqn, nsid) in &exported {
            self.notify_namespace_changed(nqn, *nsid);
        }
        Ok(exported)
    }

    /// Subsystems and NSIDs that export bdev `name`.
    pub fn exports_of(&self, name: &str) -> Vec<(String, u32)> {
        exports_in(&self.config(), name)
    }

    pub fn create_subsystem(&self, params: SubsystemParams) -> Result<(), NvmfError> {
        validate_nqn(&params.nqn).map_err(|e| NvmfError::InvalidNqn {
            nqn: params.nqn.clone(),
            reason: e.to_string(),
        })?;
        if params.nqn == DISCOVERY_NQN {
            return Err(NvmfError::DiscoveryReadOnly);
        }
        let serial = params.serial.unwrap_or_else(random_serial);
        check_ascii_field("serial_number", &serial, 20)?;
        let model = params.model.unwrap_or_else(|| self.options.model.clone());
        check_ascii_field("model_number", &model, 40)?;
        let max_namespaces = params.max_namespaces.unwrap_or(MAX_NSID);
        if max_namespaces == 0 || max_namespaces > MAX_NSID {
            return Err(NvmfError::InvalidParameter {
                field: "max_namespaces",
                reason: format!("must be 1..={MAX_NSID}"),
            });
        }
        self.update(|cfg| {
            if cfg.subsystems.contains_key(&params.nqn) {
                return Err(NvmfError::SubsystemExists(params.nqn.clone()));
            }
            let sub = Subsystem {
                nqn: params.nqn.clone(),
                serial,
                model,
                allow_any_host: params.allow_any_host,
                hosts: BTreeSet::new(),
                namespaces: BTreeMap::new(),
                max_namespaces,
                listeners: BTreeSet::new(),
                ana: Default::default(),
                dhchap: BTreeMap::new(),
            };
            cfg.subsystems.insert(params.nqn.clone(), Arc::new(sub));
            Ok(())
        })
    }

    pub fn delete_subsystem(&self, nqn: &str) -> Result<(), NvmfError> {
        if nqn == DISCOVERY_NQN {
            return Err(NvmfError::DiscoveryReadOnly);
        }
        self.update(|cfg| {
            cfg.subsystems
                .remove(nqn)
                .ok_or_else(|| NvmfError::NoSuchSubsystem(nqn.to_string()))
        })?;
        self.fail_controllers(|c| c.subnqn == nqn);
        Ok(())
    }

    /// Edits one (non-discovery) subsystem in a new configuration version.
    pub(crate) fn update_subsystem<R>(
        &self,
        nqn: &str,
        change: impl FnOnce(&mut Subsystem, &TargetConfig) -> Result<R, NvmfError>,
    ) -> Result<R, NvmfError> {
        if nqn == DISCOVERY_NQN {
            return Err(NvmfError::DiscoveryReadOnly);
        }
        self.update(|cfg| {
            let current = cfg
                .subsystems
                .get(nqn)
                .ok_or_else(|| NvmfError::NoSuchSubsystem(nqn.to_string()))?;
            let mut sub = Subsystem::clone(current);
            let result = change(&mut sub, cfg)?;
            cfg.subsystems.insert(nqn.to_string(), Arc::new(sub));
            Ok(result)
        })
    }

    pub fn add_namespace(&self, nqn: &str, params: NamespaceParams) -> Result<u32, NvmfError> {
        let nsid = self.update_subsystem(nqn, |sub, cfg| {
            let entry = cfg
                .bdevs
                .get(&params.bdev_name)
                .ok_or_else(|| NvmfError::NoSuchBdev(params.bdev_name.clone()))?;
            let nsid = match params.nsid {
                Some(nsid) if nsid == 0 || nsid > sub.max_namespaces => {
                    return Err(NvmfError::InvalidNsid(nsid))
                }
                Some(nsid) if sub.namespaces.contains_key(&nsid) => {
                    return Err(NvmfError::NamespaceInUse {
                        nqn: nqn.to_string(),
                        nsid,
                    })
                }
                Some(nsid) => nsid,
                None => (1..=sub.max_namespaces)
                    .find(|n| !sub.namespaces.contains_key(n))
                    .ok_or_else(|| NvmfError::NamespacesFull {
                        nqn: nqn.to_string(),
                    })?,
            };
            let uuid = params.uuid.unwrap_or_else(|| entry.bdev.uuid());
            let anagrpid = params.anagrpid.unwrap_or(nsid);
            if anagrpid == 0 || anagrpid > crate::ana::MAX_ANA_GROUP {
                return Err(NvmfError::InvalidParameter {
                    field: "anagrpid",
                    reason: format!("{anagrpid} must be 1..={}", crate::ana::MAX_ANA_GROUP),
                });
            }
            let file = self.reservation_file(nqn, nsid)?;
            let reservation = crate::resv::NsReservation::open(file).map_err(|reason| {
                NvmfError::InvalidParameter {
                    field: "reservation state",
                    reason,
                }
            })?;
            let ns = Namespace {
                nsid,
                bdev_id: entry.id,
                bdev_name: params.bdev_name.clone(),
                bdev: Arc::clone(&entry.bdev),
                nguid: params.nguid.unwrap_or(uuid),
                uuid,
                stats: Default::default(),
                anagrpid,
                reservation,
            };
            sub.namespaces.insert(nsid, Arc::new(ns));
            Ok(nsid)
        })?;
        self.notify_namespace_changed(nqn, nsid);
        Ok(nsid)
    }

    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), NvmfError> {
        self.update_subsystem(nqn, |sub, _| {
            sub.namespaces
                .remove(&nsid)
                .map(|ns| ns.reservation.discard())
                .ok_or_else(|| NvmfError::NoSuchNamespace {
                    nqn: nqn.to_string(),
                    nsid,
                })
        })?;
        self.notify_namespace_changed(nqn, nsid);
        Ok(())
    }

    pub fn add_host(&self, nqn: &str, host: &str) -> Result<(), NvmfError> {
        validate_nqn(host).map_err(|e| NvmfError::InvalidNqn {
            nqn: host.to_string(),
            reason: e.to_string(),
        })?;
        self.update_subsystem(nqn, |sub, _| {
            if !sub.hosts.insert(host.to_string()) {
                return Err(NvmfError::HostExists {
                    nqn: nqn.to_string(),
                    host: host.to_string(),
                });
            }
            Ok(())
        })
    }

    /// Removes a host from the allowed list and disconnects its controllers (unless the
    /// subsystem allows any host).
    pub fn remove_host(&self, nqn: &str, host: &str) -> Result<(), NvmfError> {
        let allow_any = self.update_subsystem(nqn, |sub, _| {
            if !sub.hosts.remove(host) {
                return Err(NvmfError::NoSuchHost {
                    nqn: nqn.to_string(),
                    host: host.to_string(),
                });
            }
            sub.dhchap.remove(host);
            Ok(sub.allow_any_host)
        })?;
        if !allow_any {
            self.fail_controllers(|c| c.subnqn == nqn && c.hostnqn == host);
        }
        Ok(())
    }

    pub fn set_allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), NvmfError> {
        self.update_subsystem(nqn, |sub, _| {
            sub.allow_any_host = allow;
            Ok(())
        })?;
        if !allow {
            let cfg = self.config();
            if let Some(sub) = cfg.subsystem(nqn) {
                self.fail_controllers(|c| c.subnqn == nqn && !sub.allows(&c.hostnqn));
            }
        }
        Ok(())
    }

    pub fn add_listener(&self, listener: Listener) -> Result<(), NvmfError> {
        self.update(|cfg| {
            if cfg.listeners.contains(&listener) {
                return Err(NvmfError::InvalidParameter {
                    field: "listen_address",
                    reason: format!(
                        "{} {} is already a listener",
                        listener.trtype.as_str(),
                        listener.addr
                    ),
                });
            }
            cfg.listeners.push(listener);
            Ok(())
        })
    }

    /// Lets hosts reach subsystem `nqn` through `listener`. Register it before the transport
    /// binds the address, so no host can connect in between and be refused; until a transport
    /// listens there it is simply unreachable (and not in the discovery log).
    pub fn add_subsystem_listener(&self, nqn: &str, listener: Listener) -> Result<(), NvmfError> {
        self.update_subsystem(nqn, |sub, _| {
            if !sub.listeners.insert(listener.clone()) {
                return Err(NvmfError::InvalidParameter {
                    field: "listen_address",
                    reason: format!("{nqn} is already listening on {}", listener.addr),
                });
            }
            Ok(())
        })
    }

    /// Removes `listener` from subsystem `nqn`. Returns whether another subsystem still uses
    /// it (when none does, the caller may stop listening). Existing connections stay.
    pub fn remove_subsystem_listener(
        &self,
        nqn: &str,
        listener: &Listener,
    ) -> Result<bool, NvmfError> {
        self.update_subsystem(nqn, |sub, cfg| {
            if !sub.listeners.remove(listener) {
                return Err(NvmfError::InvalidParameter {
                    field: "listen_address",
                    reason: format!("{nqn} is not listening on {}", listener.addr),
                });
            }
            sub.ana.forget_listener(listener);
            Ok(cfg
                .subsystems
                .values()
                .any(|s| s.nqn != nqn && s.listeners.contains(listener)))
        })
    }

    pub fn remove_listener(&self, listener: &Listener) -> Result<(), NvmfError> {
        self.update(|cfg| {
            let before = cfg.listeners.len();
            cfg.listeners.retain(|l| l != listener);
            // No subsystem is reachable through a listener that is gone.
            for sub in cfg.subsystems.values_mut() {
                if sub.listeners.contains(listener) {
                    let mut changed = Subsystem::clone(sub);
                    changed.listeners.remove(listener);
                    changed.ana.forget_listener(listener);
                    *sub = Arc::new(changed);
                }
            }
            if cfg.listeners.len() == before {
                return Err(NvmfError::InvalidParameter {
                    field: "listen_address",
                    reason: format!(
                        "{} {} is not a listener",
                        listener.trtype.as_str(),
                        listener.addr
                    ),
                });
            }
            Ok(())
        })
    }

    /// Creates a controller for an admin-queue Connect; `None` when all ids are in use.
    pub(crate) fn create_controller(
        &self,
        subsystem: &Subsystem,
        hostnqn: &str,
        hostid: [u8; 16],
        kato_ms: u32,
    ) -> Option<Arc<Controller>> {
        let mut table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        for _ in FIRST_CNTLID..=LAST_CNTLID {
            let id = self.next_cntlid.fetch_add(1, Ordering::Relaxed);
            if !(FIRST_CNTLID..=LAST_CNTLID).contains(&id) {
                self.next_cntlid.store(FIRST_CNTLID, Ordering::Relaxed);
                continue;
            }
            if table.contains_key(&id) {
                continue;
            }
            let ctrl = Arc::new(Controller::new(
                id,
                subsystem,
                hostnqn.to_string(),
                hostid,
                kato_ms,
                self.started,
            ));
            table.insert(id, Arc::clone(&ctrl));
            return Some(ctrl);
        }
        None
    }

    pub(crate) fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cntlid)
            .cloned()
    }

    /// Forgets a controller whose admin queue is gone.
    pub(crate) fn destroy_controller(&self, cntlid: u16) {
        let removed = self
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&cntlid);
        if let Some(ctrl) = removed {
            ctrl.fail("admin queue disconnected");
            log::info!(
                "controller {cntlid} ({}, host {}) destroyed",
                ctrl.subnqn,
                ctrl.hostnqn
            );
        }
    }

    pub fn controllers(&self) -> Vec<ControllerInfo> {
        let table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        table.values().map(|c| c.info()).collect()
    }

    /// Marks matching controllers failed: their queues are disconnected by their reactors.
    fn fail_controllers(&self, matches: impl Fn(&Controller) -> bool) {
        let table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        for ctrl in table.values().filter(|c| matches(c)) {
            ctrl.fail("access revoked by configuration change");
        }
    }

    fn notify_namespace_changed(&self, nqn: &str, nsid: u32) {
        let table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        for ctrl in table.values().filter(|c| c.subnqn == nqn) {
            ctrl.namespace_changed(nsid);
            ctrl.raise_event(AsyncEvent::NamespaceAttributeChanged);
        }
    }

    /// Fails every controller (target shutdown): hosts see their queues closed.
    pub fn fail_all_controllers(&self, reason: &str) {
        let table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        for ctrl in table.values() {
            ctrl.fail(reason);
        }
    }
}

fn random_serial() -> String {
    format!("FE{:016X}", rand::random::<u64>())
}

fn exports_in(cfg: &TargetConfig, bdev: &str) -> Vec<(String, u32)> {
    cfg.subsystems
        .values()
        .flat_map(|sub| {
            sub.namespaces
                .values()
                .filter(|ns| ns.bdev_name == bdev)
                .map(|ns| (sub.nqn.clone(), ns.nsid))
        })
        .collect()
}

/// Bdev names: printable, and '/' only as the separator of a volume's "pool/volume" name
/// (SPDK's lvol alias form), so neither part is empty.
fn check_name(field: &'static str, name: &str) -> Result<(), NvmfError> {
    let parts_ok = name.split('/').count() <= 2 && name.split('/').all(|p| !p.is_empty());
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) || !parts_ok {
        return Err(NvmfError::InvalidParameter {
            field,
            reason: format!(
                "{name:?} must be 1 to 255 printable characters, with at most one '/' \
                 between two non-empty parts (pool/volume)"
            ),
        });
    }
    Ok(())
}

fn check_ascii_field(field: &'static str, value: &str, max: usize) -> Result<(), NvmfError> {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(NvmfError::InvalidParameter {
            field,
            reason: format!("{value:?} must be 1 to {max} printable ASCII characters"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subsystem::Trtype;
    use ferrite_bdev::MallocBdev;
    use std::net::SocketAddr;

    const NQN: &str = "nqn.2026-01.io.ferrite:t";

    fn target_with_bdev() -> Arc<Target> {
        let t = Target::new(TargetOptions::default());
        let bdev = MallocBdev::new("ram0", 1024, 512).expect("malloc bdev");
        t.add_bdev("ram0", Arc::new(bdev)).expect("add bdev");
        t.create_subsystem(SubsystemParams {
            nqn: NQN.into(),
            serial: None,
            model: None,
            allow_any_host: false,
            max_namespaces: None,
        })
        .expect("create subsystem");
        t
    }

    #[test]
    fn tcp_and_rdma_listeners_on_one_address_are_distinct_ports() {
        let t = target_with_bdev();
        let addr: SocketAddr = "10.0.2.15:4420".parse().expect("addr");
        let tcp = Listener {
            trtype: Trtype::Tcp,
            addr,
        };
        let rdma = Listener {
            trtype: Trtype::Rdma,
            addr,
        };
        t.add_listener(tcp.clone()).expect("tcp listener");
        t.add_listener(rdma.clone())
            .expect("an rdma listener on the same address");
        t.add_subsystem_listener(NQN, tcp.clone())
            .expect("tcp port");
        let cfg = t.config();
        let sub = cfg.subsystem(NQN).expect("subsystem");
        assert!(sub.reachable_over(Trtype::Tcp, addr));
        assert!(
            !sub.reachable_over(Trtype::Rdma, addr),
            "the subsystem was not added to the RDMA port"
        );
        t.add_subsystem_listener(NQN, rdma.clone())
            .expect("rdma port");
        assert!(t
            .config()
            .subsystem(NQN)
            .expect("s")
            .reachable_over(Trtype::Rdma, addr));
        t.remove_subsystem_listener(NQN, &tcp)
            .expect("tcp port removed");
        let cfg = t.config();
        let sub = cfg.subsystem(NQN).expect("subsystem");
        assert!(!sub.reachable_over(Trtype::Tcp, addr));
        assert!(sub.reachable_over(Trtype::Rdma, addr));
    }

    #[test]
    fn namespaces_hosts_and_bdevs_keep_their_invariants() {
        let t = target_with_bdev();
        let g0 = t.generation();
        let nsid = t
            .add_namespace(
                NQN,
                NamespaceParams {
                    bdev_name: "ram0".into(),
                    ..Default::default()
                },
            )
            .expect("ns");
        assert_eq!(nsid, 1);
        assert!(t.generation() > g0, "changes bump the generation");
        let dup = NamespaceParams {
            nsid: Some(1),
            bdev_name: "ram0".into(),
            ..Default::default()
        };
        assert_eq!(
            t.add_namespace(NQN, dup),
            Err(NvmfError::NamespaceInUse {
                nqn: NQN.into(),
                nsid: 1
            })
        );
        let missing = NamespaceParams {
            bdev_name: "nope".into(),
            ..Default::default()
        };
        assert_eq!(
            t.add_namespace(NQN, missing),
            Err(NvmfError::NoSuchBdev("nope".into()))
        );
        assert!(matches!(
            t.remove_bdev("ram0"),
            Err(NvmfError::BdevInUse { nsid: 1, .. })
        ));
        let host = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
        assert!(!t.config().subsystem(NQN).expect("sub").allows(host));
        t.add_host(NQN, host).expect("add host");
        assert!(t.config().subsystem(NQN).expect("sub").allows(host));
        assert!(matches!(
            t.add_host(NQN, host),
            Err(NvmfError::HostExists { .. })
        ));
        assert!(matches!(
            t.add_host(NQN, "not an nqn"),
            Err(NvmfError::InvalidNqn { .. })
        ));
        t.remove_namespace(NQN, 1).expect("remove ns");
        assert!(t.remove_bdev("ram0").is_ok());
    }

    #[test]
    fn subsystem_validation() {
        let t = target_with_bdev();
        let params = |nqn: &str| SubsystemParams {
            nqn: nqn.into(),
            serial: None,
            model: None,
            allow_any_host: true,
            max_namespaces: None,
        };
        assert!(matches!(
            t.create_subsystem(params(NQN)),
            Err(NvmfError::SubsystemExists(_))
        ));
        assert!(matches!(
            t.create_subsystem(params("bogus")),
            Err(NvmfError::InvalidNqn { .. })
        ));
        assert_eq!(
            t.create_subsystem(params(DISCOVERY_NQN)),
            Err(NvmfError::DiscoveryReadOnly)
        );
        let mut long_serial = params("nqn.2026-01.io.ferrite:s");
        long_serial.serial = Some("X".repeat(21));
        assert!(matches!(
            t.create_subsystem(long_serial),
            Err(NvmfError::InvalidParameter { .. })
        ));
        assert_eq!(
            t.delete_subsystem("nqn.2026-01.io.ferrite:none"),
            Err(NvmfError::NoSuchSubsystem(
                "nqn.2026-01.io.ferrite:none".into()
            ))
        );
        t.delete_subsystem(NQN).expect("delete");
    }
}
