//! Asymmetric Namespace Access: every namespace belongs to an ANA group (by default the group
//! numbered like its NSID, as SPDK does), and each (subsystem listener, group) pair has a state.
//! Hosts learn the states from the ANA log page (0Ch), are told of changes by an ANA Change
//! notice, and I/O sent down a path whose group is not accessible completes with the path
//! status (SCT 3h) so the host's multipath layer retries it on another path.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ferrite_nvme::log::{encode_ana_log, AnaGroup};

use crate::controller::AsyncEvent;
use crate::error::NvmfError;
use crate::subsystem::{AnaState, Listener, Subsystem};
use crate::target::Target;
use crate::MAX_NSID;

/// Highest ANA group id (ANAGRPMAX) and the number of groups (NANAGRPID): one per possible
/// namespace, so the default group-per-namespace layout always fits.
pub const MAX_ANA_GROUP: u32 = MAX_NSID;
/// ANA Transition Time reported in Identify (seconds): how long a host waits in `change`.
pub const ANATT_SECONDS: u8 = 10;
/// ANACAP: every state may be reported, and a namespace's group does not change while attached.
pub const ANACAP: u8 = 0b0101_1111;

impl Subsystem {
    /// The subsystem listener a connection to local address `local` came through.
    pub fn listener_for(&self, local: SocketAddr) -> Option<&Listener> {
        let matching = |l: &&Listener| l.addr.port() == local.port();
        self.listeners
            .iter()
            .filter(matching)
            .find(|l| l.addr.ip() == local.ip())
            .or_else(|| {
                self.listeners
                    .iter()
                    .filter(matching)
                    .find(|l| l.addr.ip().is_unspecified())
            })
    }

    /// ANA state of `group` on the path through local address `local` (optimized when the
    /// path matches no listener: the discovery subsystem, or a listener removed since Connect).
    pub fn ana_state(&self, local: Option<SocketAddr>, group: u32) -> AnaState {
        local
            .and_then(|a| self.listener_for(a))
            .map_or(AnaState::Optimized, |l| self.ana.get(l, group))
    }

    /// ANA groups that have namespaces, with their NSIDs ascending.
    pub fn ana_groups(&self) -> BTreeMap<u32, Vec<u32>> {
        let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for ns in self.namespaces.values() {
            groups.entry(ns.anagrpid).or_default().push(ns.nsid);
        }
        groups
    }
}

impl Target {
    /// `nvmf_subsystem_listener_set_ana_state`: sets the state of `group` (every group of the
    /// subsystem when `None`) on `listener`, and sends an ANA Change notice to the subsystem's
    /// controllers when anything changed. Returns whether it did.
    pub fn set_ana_state(
        &self,
        nqn: &str,
        listener: &Listener,
        group: Option<u32>,
        state: AnaState,
    ) -> Result<bool, NvmfError> {
        let changed = self.update_subsystem(nqn, |sub, _| {
            if !sub.listeners.contains(listener) {
                return Err(NvmfError::InvalidParameter {
                    field: "listen_address",
                    reason: format!("{nqn} is not listening on {}", listener.addr),
                });
            }
            if let Some(g) = group.filter(|g| *g == 0 || *g > MAX_ANA_GROUP) {
                return Err(NvmfError::InvalidParameter {
                    field: "anagrpid",
                    reason: format!("{g} must be 1..={MAX_ANA_GROUP}"),
                });
            }
            Ok(sub.ana.set(listener, group, state))
        })?;
        if changed {
            let table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
            for ctrl in table.values().filter(|c| c.subnqn == nqn) {
                ctrl.raise_event(AsyncEvent::AnaChange);
            }
            log::info!(
                "{nqn}: ANA group {} on {} is now {state}",
                group.map_or("*".to_string(), |g| g.to_string()),
                listener.addr
            );
        }
        Ok(changed)
    }
}

/// The ANA log page (LID 0Ch) for a controller connected through `local`. With `rgo` (Return
/// Groups Only) the NSID lists are left out.
pub(crate) fn ana_log(sub: &Subsystem, local: Option<SocketAddr>, rgo: bool) -> Vec<u8> {
    let groups = sub.ana_groups();
    let descs: Vec<AnaGroup<'_>> = groups
        .iter()
        .map(|(group, nsids)| AnaGroup {
            anagrpid: *group,
            chgcnt: sub.ana.change_count,
            state: sub.ana_state(local, *group).code(),
            nsids,
        })
        .collect();
    let mut page = Vec::new();
    // At most MAX_NSID groups and NSIDs: the encoder's u16/u32 counts cannot overflow.
    if encode_ana_log(sub.ana.change_count, &descs, rgo, &mut page).is_err() {
        page.clear();
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subsystem::{AnaTable, Trtype};
    use ferrite_nvme::Status;

    fn listener(port: u16) -> Listener {
        Listener {
            trtype: Trtype::Tcp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn states_parse_by_spdk_name_and_map_to_codes_and_statuses() {
        for s in AnaState::ALL {
            assert_eq!(AnaState::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            AnaState::parse("Non-Optimized"),
            Some(AnaState::NonOptimized)
        );
        assert_eq!(AnaState::parse("standby"), None);
        assert_eq!(AnaState::parse(""), None);
        assert_eq!(AnaState::Inaccessible.code(), 0x03);
        assert_eq!(AnaState::Change.code(), 0x0F);
        assert_eq!(AnaState::Optimized.io_refusal(), None);
        assert_eq!(AnaState::NonOptimized.io_refusal(), None);
        assert_eq!(
            AnaState::Inaccessible.io_refusal(),
            Some(Status::ANA_INACCESSIBLE)
        );
        assert_eq!(
            AnaState::PersistentLoss.io_refusal(),
            Some(Status::ANA_PERSISTENT_LOSS)
        );
        assert_eq!(AnaState::Change.io_refusal(), Some(Status::ANA_TRANSITION));
    }

    #[test]
    fn table_keeps_states_per_listener_and_group_and_counts_changes() {
        let mut t = AnaTable::default();
        let (a, b) = (listener(4420), listener(4421));
        assert_eq!(t.get(&a, 1), AnaState::Optimized);
        assert!(t.set(&a, Some(1), AnaState::Inaccessible));
        assert!(
            !t.set(&a, Some(1), AnaState::Inaccessible),
            "no change, no count"
        );
        assert_eq!(t.change_count, 1);
        assert_eq!(t.get(&a, 1), AnaState::Inaccessible);
        assert_eq!(t.get(&b, 1), AnaState::Optimized);
        assert_eq!(t.get(&a, 2), AnaState::Optimized);
        assert!(t.set(&a, Some(1), AnaState::Optimized));
        assert!(
            t.entries().is_empty(),
            "optimized is the default, not stored"
        );
        // Listener-wide, then one group back to optimized.
        assert!(t.set(&b, None, AnaState::NonOptimized));
        assert_eq!(t.get(&b, 7), AnaState::NonOptimized);
        assert!(t.set(&b, Some(7), AnaState::Optimized));
        assert_eq!(t.get(&b, 7), AnaState::Optimized);
        assert_eq!(t.get(&b, 8), AnaState::NonOptimized);
        assert_eq!(
            t.entries(),
            vec![
                (b.clone(), None, AnaState::NonOptimized),
                (b.clone(), Some(7), AnaState::Optimized)
            ]
        );
        // A listener-wide state replaces the overrides.
        assert!(t.set(&b, None, AnaState::Change));
        assert_eq!(t.get(&b, 7), AnaState::Change);
        t.forget_listener(&b);
        assert_eq!(t.get(&b, 3), AnaState::Optimized);
        assert_eq!(t.change_count, 5);
    }
}
