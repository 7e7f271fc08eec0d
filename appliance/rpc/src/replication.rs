//! What the `replication_*` methods need from the daemon: the replication pairs of its
//! consistency groups (issue 10). A pair is kept beside the group's journal on the primary
//! appliance; the data moves in `ferrite-replicator`, a separate process whose status socket
//! the pair may name.

use serde_json::Value;

use crate::protocol::RpcError;

/// `replication_create` / `replication_set_mode` parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSettings {
    /// `"async"` or `"sync"`.
    pub mode: String,
    /// `"fail"` or `"degrade"` (what a lost link does in sync mode).
    pub link_policy: String,
    /// Sync mode: how long a write waits for the secondary's acknowledgement.
    pub sync_timeout_ms: u64,
    /// Async mode: the recovery point objective in seconds (status reports whether the lag
    /// is within it).
    pub rpo_s: u64,
}

/// `replication_set_mode` parameters, checked: only the settings given change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairChanges {
    /// New mode, if given.
    pub mode: Option<String>,
    /// New lost-link policy, if given.
    pub link_policy: Option<String>,
    /// New sync timeout, if given.
    pub sync_timeout_ms: Option<u64>,
    /// New RPO, if given.
    pub rpo_s: Option<u64>,
}

impl PairChanges {
    /// The current settings with the given ones replaced.
    pub fn applied_to(&self, old: PairSettings) -> PairSettings {
        PairSettings {
            mode: self.mode.clone().unwrap_or(old.mode),
            link_policy: self.link_policy.clone().unwrap_or(old.link_policy),
            sync_timeout_ms: self.sync_timeout_ms.unwrap_or(old.sync_timeout_ms),
            rpo_s: self.rpo_s.unwrap_or(old.rpo_s),
        }
    }
}

/// The replication pairs of the daemon.
pub trait ReplicationHost: Send + Sync {
    /// Makes `group` (which has a journal) a replicated pair with these settings; `replicator`
    /// is the primary replicator's status socket, if it should be read for status.
    fn replication_create(
        &self,
        group: u32,
        settings: PairSettings,
        replicator: Option<String>,
    ) -> Result<Value, RpcError>;

    /// Changes the given ones of a pair's mode, lost-link policy, timeout and RPO; the others
    /// keep their current values.
    fn replication_set_mode(&self, group: u32, changes: PairChanges) -> Result<Value, RpcError>;

    /// Status of one pair or (None) of every pair.
    fn replication_status(&self, group: Option<u32>) -> Result<Value, RpcError>;

    /// Stops (true) or resumes (false) shipping the group's journal.
    fn replication_pause(&self, group: u32, paused: bool) -> Result<Value, RpcError>;

    /// Ends the pair (the journal stays; writes complete asynchronously again).
    fn replication_delete(&self, group: u32) -> Result<(), RpcError>;

    /// Per pair: group, state, mode, lag (records, bytes, seconds), for `stats_get`.
    fn replication_summary(&self) -> Value;
}
