//! What the `journal_*` methods need from the daemon: the replication journals of its
//! consistency groups (see `ferrite-journal`). A host without them answers every `journal_*`
//! method with an error saying so.

use serde_json::Value;

use crate::protocol::RpcError;

/// `journal_create` parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalCreate {
    /// Consistency group (1 or more).
    pub group: u32,
    /// Pool the journal volume is allocated in.
    pub pool: String,
    /// Journal volume size in bytes.
    pub size: u64,
    /// Data bytes per record slot (the largest write of a replicated namespace).
    pub slot_size: u32,
}

/// The replication journals of the daemon.
pub trait JournalHost: Send + Sync {
    /// Allocates a thick volume in the pool, formats a journal for the group on it and serves
    /// it on the stream endpoint. Returns the group's `journal_list` entry.
    fn journal_create(&self, p: JournalCreate) -> Result<Value, RpcError>;

    /// Registers bdev `<bdev>@journal`: `bdev` with every modifying request journaled in
    /// `group` as namespace `nsid` of the group. Returns the new bdev's name.
    fn journal_attach(&self, group: u32, bdev: &str, nsid: u32) -> Result<String, RpcError>;

    /// Unregisters a `<bdev>@journal` bdev (refused while exported).
    fn journal_detach(&self, bdev: &str) -> Result<(), RpcError>;

    /// Every journal: group, volume, geometry, sequence numbers, fill, refusals, namespaces.
    fn journal_list(&self) -> Value;

    /// Deletes a journal and its volume (refused while namespaces are attached: detach them
    /// first).
    fn journal_delete(&self, group: u32) -> Result<(), RpcError>;
}
