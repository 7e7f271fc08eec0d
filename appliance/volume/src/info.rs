//! What the pool and its volumes report (serialized by the RPC layer).

use crate::{Provisioning, VolumeKind};

/// Options given when a pool is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Cluster size in bytes: a power of two, 64 KiB..=64 MiB, at least the block size.
    pub cluster_size: u64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            cluster_size: crate::DEFAULT_CLUSTER,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    pub index: u32,
    pub device: String,
    pub uuid: String,
    pub size_bytes: u64,
    pub data_start: u64,
    pub clusters: u64,
    /// Clusters of this member referenced by some volume (they sum to the pool's).
    pub allocated_clusters: u64,
    pub free_clusters: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub uuid: String,
    pub cluster_size: u64,
    pub block_size: u32,
    pub members: Vec<MemberInfo>,
    pub total_clusters: u64,
    pub allocated_clusters: u64,
    pub free_clusters: u64,
    /// Clusters referenced more than once (snapshots, clones, metadata copies).
    pub shared_clusters: u64,
    /// Freed clusters not yet zeroed (they become free shortly).
    pub zeroing_clusters: u64,
    /// Sum of the sizes of volumes and clones (snapshots excluded).
    pub provisioned_bytes: u64,
    /// Provisioned bytes / data capacity.
    pub overcommit_ratio: f64,
    pub warning_percent: u8,
    pub volumes: usize,
    pub snapshots: usize,
    pub metadata_refs: u64,
    pub metadata_max_refs: u64,
    pub log_seq: u64,
    pub online: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeInfo {
    pub name: String,
    pub pool: String,
    pub kind: VolumeKind,
    pub size_bytes: u64,
    /// Clones: their snapshot. Snapshots: the volume they were taken of (`origin`).
    pub parent: Option<String>,
    pub origin: Option<String>,
    pub clones: Vec<String>,
    pub allocated_bytes: u64,
    pub shared_bytes: u64,
    pub exclusive_bytes: u64,
    pub uuid: String,
    pub read_only: bool,
    pub provisioning: Provisioning,
    pub created: u64,
}

/// I/O counters of a volume, summed over its channels (and channels already closed).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStats {
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub other_ops: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
    pub latency_max_ns: u64,
    /// Requests held for the owner (allocation, copy-on-write, metadata op).
    pub faults: u64,
    pub held_time_max_ns: u64,
    /// Clusters copied by the owner for copy-on-write or inflate.
    pub cow_copies: u64,
    /// Unmap/WriteZeroes/Copy pieces done in metadata, forwarded to a member, emulated.
    pub metadata_ops: u64,
    pub offloaded_ops: u64,
    pub emulated_ops: u64,
    /// Reads of unallocated clusters served as zeroes without backend I/O.
    pub zero_reads: u64,
    /// Faults the pool's fault ring had no room for (sent later: backpressure).
    pub fault_ring_full: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub clusters_checked: u64,
    pub volumes_checked: usize,
}

/// Raised by the pool (also logged); collected with `Pool::take_events`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PoolEvent {
    /// Allocated clusters crossed the warning threshold upward.
    SpaceWarning {
        pool: String,
        used_percent: u8,
        threshold: u8,
    },
    /// An allocation failed: writes needing new clusters get NoSpace until space is freed.
    PoolFull { pool: String, volume: String },
    /// The owner stopped after a metadata write failed; volumes return NotReady.
    Offline { pool: String, reason: String },
    /// Volume I/O to a member device failed (`errors` failures since the last such event
    /// from the same channel; `error` is the last one). The requests failed with the member's
    /// error; no mapping is changed.
    MemberIoError {
        pool: String,
        device: String,
        volume: String,
        errors: u64,
        error: String,
    },
}
