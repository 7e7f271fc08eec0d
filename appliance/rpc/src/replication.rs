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

    /// Changes a pair's mode, lost-link policy, timeout or RPO.
    fn replication_set_mode(&self, group: u32, settings: PairSettings) -> Result<Value, RpcError>;

    /// Status of one pair or (None) of every pair.
    fn replication_status(&self, group: Option<u32>) -> Result<Value, RpcError>;

    /// Stops (true) or resumes (false) shipping the group's journal.
    fn replication_pause(&self, group: u32, paused: bool) -> Result<Value, RpcError>;

    /// Ends the pair (the journal stays; writes complete asynchronously again).
    fn replication_delete(&self, group: u32) -> Result<(), RpcError>;

    /// Per pair: group, state, mode, lag (records, bytes, seconds), for `stats_get`.
    fn replication_summary(&self) -> Value;
}
