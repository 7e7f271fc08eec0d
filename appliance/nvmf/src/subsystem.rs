//! What a subsystem is: its namespaces, allowed hosts, listeners, ANA states and DH-HMAC-CHAP
//! hosts. The configuration ([`crate::Target`]) holds these and controllers refer to them, so
//! they live apart from both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use ferrite_auth::HostKeys;
use ferrite_bdev::{BdevId, BlockDevice};
use ferrite_nvme::log::ana_state;
use ferrite_nvme::nqn::DISCOVERY_NQN;
use ferrite_nvme::Status;

/// Transport type as the discovery log encodes it (TRTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trtype {
    Rdma,
    Tcp,
}

impl Trtype {
    pub fn code(self) -> u8 {
        match self {
            Trtype::Rdma => 1,
            Trtype::Tcp => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trtype::Rdma => "rdma",
            Trtype::Tcp => "tcp",
        }
    }
}

/// A transport address hosts may connect to (an NVMe-oF "port").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub trtype: Trtype,
    pub addr: SocketAddr,
}

#[derive(Debug)]
pub struct Namespace {
    pub nsid: u32,
    pub bdev_id: BdevId,
    pub bdev_name: String,
    pub bdev: Arc<dyn BlockDevice>,
    pub nguid: [u8; 16],
    pub uuid: [u8; 16],
    /// I/O counters (per reactor, summed by `stats_get`).
    pub stats: crate::ns_stats::NamespaceStats,
    /// ANA group (ANAGRPID), 1..=MAX_ANA_GROUP.
    pub anagrpid: u32,
    /// Persistent reservations, shared by every configuration version that has this namespace.
    pub reservation: crate::resv::NsReservation,
}

#[derive(Debug, Clone)]
pub struct Subsystem {
    pub nqn: String,
    pub serial: String,
    pub model: String,
    pub allow_any_host: bool,
    pub hosts: BTreeSet<String>,
    pub namespaces: BTreeMap<u32, Arc<Namespace>>,
    pub max_namespaces: u32,
    /// Transport addresses hosts may reach this subsystem through (SPDK's subsystem
    /// listeners). The discovery subsystem is reachable through every target listener.
    pub listeners: BTreeSet<Listener>,
    /// ANA state per (listener, group).
    pub ana: AnaTable,
    /// DH-HMAC-CHAP secrets per host NQN: a host listed here must authenticate (see `auth.rs`).
    pub dhchap: BTreeMap<String, DhchapHost>,
}

impl Subsystem {
    /// Whether a host connected over `trtype` to local address `local` may use this subsystem:
    /// a listener of that transport with the same port and the same address (or a wildcard
    /// address) is in its set. A TCP and an RDMA listener on one address and port are different
    /// ports of the subsystem.
    pub fn reachable_over(&self, trtype: Trtype, local: SocketAddr) -> bool {
        self.is_discovery()
            || self.listeners.iter().any(|l| {
                l.trtype == trtype
                    && l.addr.port() == local.port()
                    && (l.addr.ip() == local.ip() || l.addr.ip().is_unspecified())
            })
    }

    pub fn is_discovery(&self) -> bool {
        self.nqn == DISCOVERY_NQN
    }

    pub fn allows(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.contains(hostnqn)
    }

    pub fn namespace(&self, nsid: u32) -> Option<&Arc<Namespace>> {
        self.namespaces.get(&nsid)
    }
}

/// A host's DH-HMAC-CHAP configuration: the secrets, and the keyring names they came from
/// (what `save_config` and `nvmf_get_subsystems` show; secrets never leave the keyring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhchapHost {
    pub keys: Arc<HostKeys>,
    pub key_name: String,
    pub ctrlr_key_name: Option<String>,
}

/// The ANA state of a group as seen through one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum AnaState {
    #[default]
    Optimized,
    NonOptimized,
    Inaccessible,
    PersistentLoss,
    Change,
}

impl AnaState {
    pub const ALL: [AnaState; 5] = [
        AnaState::Optimized,
        AnaState::NonOptimized,
        AnaState::Inaccessible,
        AnaState::PersistentLoss,
        AnaState::Change,
    ];

    /// SPDK's spelling (`nvmf_subsystem_listener_set_ana_state`'s `ana_state`).
    pub fn as_str(self) -> &'static str {
        match self {
            AnaState::Optimized => "optimized",
            AnaState::NonOptimized => "non_optimized",
            AnaState::Inaccessible => "inaccessible",
            AnaState::PersistentLoss => "persistent_loss",
            AnaState::Change => "change",
        }
    }

    /// Parses SPDK's names; `-` is accepted for `_` (`non-optimized`).
    pub fn parse(text: &str) -> Option<AnaState> {
        let t = text.trim().to_ascii_lowercase().replace('-', "_");
        AnaState::ALL.into_iter().find(|s| s.as_str() == t)
    }

    /// The state code in the ANA log.
    pub fn code(self) -> u8 {
        match self {
            AnaState::Optimized => ana_state::OPTIMIZED,
            AnaState::NonOptimized => ana_state::NON_OPTIMIZED,
            AnaState::Inaccessible => ana_state::INACCESSIBLE,
            AnaState::PersistentLoss => ana_state::PERSISTENT_LOSS,
            AnaState::Change => ana_state::CHANGE,
        }
    }

    /// The status an I/O command gets on a path in this state; `None` when it may proceed.
    pub fn io_refusal(self) -> Option<Status> {
        match self {
            AnaState::Optimized | AnaState::NonOptimized => None,
            AnaState::Inaccessible => Some(Status::ANA_INACCESSIBLE),
            AnaState::PersistentLoss => Some(Status::ANA_PERSISTENT_LOSS),
            AnaState::Change => Some(Status::ANA_TRANSITION),
        }
    }
}

impl std::fmt::Display for AnaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ANA states of one subsystem: per listener a state for all its groups (set without a
/// group id), and per (listener, group) overrides. Absent means `optimized`. `change_count` is
/// the log's CHGCNT, bumped on every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnaTable {
    listeners: BTreeMap<Listener, AnaState>,
    groups: BTreeMap<(Listener, u32), AnaState>,
    pub change_count: u64,
}

impl AnaTable {
    pub fn get(&self, listener: &Listener, group: u32) -> AnaState {
        self.groups
            .get(&(listener.clone(), group))
            .or_else(|| self.listeners.get(listener))
            .copied()
            .unwrap_or_default()
    }

    /// Sets the state of one group on `listener`, or of all of them (`None`, which drops the
    /// per-group overrides). Returns whether anything changed.
    pub fn set(&mut self, listener: &Listener, group: Option<u32>, state: AnaState) -> bool {
        let before = self.clone();
        match group {
            Some(g) => {
                let base = self.listeners.get(listener).copied().unwrap_or_default();
                if base == state {
                    self.groups.remove(&(listener.clone(), g));
                } else {
                    self.groups.insert((listener.clone(), g), state);
                }
            }
            None => {
                self.groups.retain(|(l, _), _| l != listener);
                if state == AnaState::Optimized {
                    self.listeners.remove(listener);
                } else {
                    self.listeners.insert(listener.clone(), state);
                }
            }
        }
        let changed = before.listeners != self.listeners || before.groups != self.groups;
        if changed {
            self.change_count = self.change_count.wrapping_add(1).max(1);
        }
        changed
    }

    /// Forgets the states of a listener the subsystem no longer has.
    pub fn forget_listener(&mut self, listener: &Listener) {
        self.listeners.remove(listener);
        self.groups.retain(|(l, _), _| l != listener);
    }

    /// Every stored state: (listener, group or None for all groups, state), listener-wide
    /// entries first so replaying them in order rebuilds the table.
    pub fn entries(&self) -> Vec<(Listener, Option<u32>, AnaState)> {
        let wide = self.listeners.iter().map(|(l, s)| (l.clone(), None, *s));
        let per_group = self
            .groups
            .iter()
            .map(|((l, g), s)| (l.clone(), Some(*g), *s));
        wide.chain(per_group).collect()
    }
}
