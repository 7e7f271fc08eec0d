//! The metadata state (pure data, owned by the pool's owner task) and the operations that
//! change it. Every change is an [`Op`] applied by one deterministic [`State::apply`], both live
//! and when the log is replayed; [`State::check`] verifies the invariants (`pool check`).

use std::collections::BTreeMap;

use crate::clusterset::ClusterSet;
use crate::format::codec::{CodecError, Dec, Enc};
use crate::types::{Provisioning, VolId, VolumeKind, MAX_NAME};

mod apply;
mod check;
mod codec;
#[cfg(test)]
mod tests;

pub use codec::{decode_ops, encode_ops};

/// Table entry value of an unallocated cluster.
pub const NONE: u64 = u64::MAX;

/// One row of the volume table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRec {
    pub id: VolId,
    pub name: String,
    pub kind: VolumeKind,
    pub size: u64,
    /// Clones: the snapshot they were made from.
    pub parent: Option<VolId>,
    /// Snapshots: the volume they were taken of (while it exists).
    pub origin: Option<VolId>,
    pub prov: Provisioning,
    pub uuid: [u8; 16],
    pub created: u64,
}

/// One change to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new volume with an empty table (thick ones are filled by MapCluster ops).
    CreateVolume(VolumeRec),
    /// Points `vc` of `vol` at `pc` (taken from free/reserved, or shared when already
    /// referenced); the previous cluster, if any, loses a reference.
    MapCluster {
        vol: VolId,
        vc: u64,
        pc: u64,
    },
    UnmapCluster {
        vol: VolId,
        vc: u64,
    },
    DeleteVolume {
        vol: VolId,
    },
    /// A snapshot of `src`: a copy of its table, every cluster +1.
    Snapshot {
        src: VolId,
        rec: VolumeRec,
    },
    /// A clone of snapshot `snap`: a copy of its table, every cluster +1.
    Clone {
        snap: VolId,
        rec: VolumeRec,
    },
    /// New size; entries past the end lose their reference.
    Resize {
        vol: VolId,
        size: u64,
    },
    Rename {
        vol: VolId,
        name: String,
    },
    /// The table and size of `vol` become a copy of `snap`'s.
    Revert {
        vol: VolId,
        snap: VolId,
    },
    /// A clone no longer depends on its snapshot (after inflate).
    Detach {
        vol: VolId,
    },
    /// Free clusters set aside as copy-on-write targets (durable before data is copied in).
    Reserve {
        clusters: Vec<u64>,
    },
    /// Reserved clusters given back (after a restart: they may hold partial copies).
    Unreserve {
        clusters: Vec<u64>,
    },
    /// Clusters that needed zeroing were zeroed: they are free again.
    ClustersZeroed {
        clusters: Vec<u64>,
    },
}

/// An op that does not fit the state (a bug, or a damaged log record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply {op}: {reason}")]
pub struct ApplyError {
    pub op: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub cluster_size: u64,
    pub total_clusters: u64,
    pub next_id: u64,
    pub volumes: BTreeMap<VolId, VolumeRec>,
    pub tables: BTreeMap<VolId, Vec<u64>>,
    pub refcount: Vec<u32>,
    pub free: ClusterSet,
    pub needs_zeroing: ClusterSet,
    pub reserved: ClusterSet,
    /// Clusters with refcount > 0.
    pub allocated: u64,
    /// Table entries that point at a cluster (what the checkpoint slots are sized for).
    pub refs: u64,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateVolume(_) => "CreateVolume",
            Op::MapCluster { .. } => "MapCluster",
            Op::UnmapCluster { .. } => "UnmapCluster",
            Op::DeleteVolume { .. } => "DeleteVolume",
            Op::Snapshot { .. } => "Snapshot",
            Op::Clone { .. } => "Clone",
            Op::Resize { .. } => "Resize",
            Op::Rename { .. } => "Rename",
            Op::Revert { .. } => "Revert",
            Op::Detach { .. } => "Detach",
            Op::Reserve { .. } => "Reserve",
            Op::Unreserve { .. } => "Unreserve",
            Op::ClustersZeroed { .. } => "ClustersZeroed",
        }
    }
}

impl State {
    /// A new pool: every cluster free (the data area was zeroed at creation).
    pub fn new(cluster_size: u64, total_clusters: u64) -> Self {
        let mut free = ClusterSet::new(total_clusters);
        for c in 0..total_clusters {
            free.insert(c);
        }
        Self {
            cluster_size,
            total_clusters,
            next_id: 1,
            volumes: BTreeMap::new(),
            tables: BTreeMap::new(),
            refcount: vec![0; total_clusters as usize],
            free,
            needs_zeroing: ClusterSet::new(total_clusters),
            reserved: ClusterSet::new(total_clusters),
            allocated: 0,
            refs: 0,
        }
    }

    /// Longest table a volume may have: thin volumes may overcommit the pool 64 times (at
    /// least 2^20 clusters), which bounds table memory (and what a damaged record can ask for).
    pub fn max_volume_clusters(&self) -> u64 {
        (self.total_clusters * 64).max(1 << 20)
    }

    /// Table length of a volume of `size` bytes.
    pub fn clusters_for(&self, size: u64) -> u64 {
        size.div_ceil(self.cluster_size)
    }

    pub fn by_name(&self, name: &str) -> Option<&VolumeRec> {
        self.volumes.values().find(|v| v.name == name)
    }

    pub fn children(&self, snap: VolId) -> impl Iterator<Item = &VolumeRec> {
        self.volumes
            .values()
            .filter(move |v| v.parent == Some(snap))
    }

    /// Mapped entries of a volume (references a copy of its table adds).
    pub fn refs_of(&self, vol: VolId) -> u64 {
        self.table(vol).iter().filter(|&&p| p != NONE).count() as u64
    }

    pub fn table(&self, vol: VolId) -> &[u64] {
        self.tables.get(&vol).map_or(&[], Vec::as_slice)
    }

    /// Whether a mapped cluster is shared (writes must copy it first).
    pub fn is_shared(&self, pc: u64) -> bool {
        self.refcount.get(pc as usize).is_some_and(|&r| r > 1)
    }

    fn take_ref(&mut self, pc: u64) {
        let rc = &mut self.refcount[pc as usize];
        if *rc == 0 {
            self.allocated += 1;
        }
        *rc += 1;
        self.refs += 1;
    }

    fn release(&mut self, pc: u64) {
        if pc == NONE {
            return;
        }
        let rc = &mut self.refcount[pc as usize];
        *rc -= 1;
        self.refs -= 1;
        if *rc == 0 {
            self.allocated -= 1;
            self.needs_zeroing.insert(pc);
        }
    }

    fn release_table(&mut self, table: Vec<u64>) {
        for pc in table {
            self.release(pc);
        }
    }

    fn copy_table(&mut self, src: VolId) -> Vec<u64> {
        let t = self.table(src).to_vec();
        for &pc in &t {
            if pc != NONE {
                self.take_ref(pc);
            }
        }
        t
    }
}
