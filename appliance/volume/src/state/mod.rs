//! The metadata state (pure data, owned by the pool's owner thread) and the operations that
//! change it. Every change is an [`Op`] applied by one deterministic [`State::apply`], both live
//! and when the log is replayed; [`State::check`] verifies the invariants (`pool check`).

use std::collections::BTreeMap;

use crate::clusterset::ClusterSet;
use crate::format::codec::{CodecError, Dec, Enc};
use crate::types::{Provisioning, VolId, VolumeKind, MAX_NAME};

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

    /// Applies one op. Validates first and changes nothing when it fails.
    pub fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        let fail = |reason: String| {
            Err(ApplyError {
                op: op.name(),
                reason,
            })
        };
        let vol_of = |s: &State, id: VolId| s.volumes.get(&id).cloned();
        match op {
            Op::CreateVolume(rec) | Op::Snapshot { rec, .. } | Op::Clone { rec, .. } => {
                if self.volumes.contains_key(&rec.id) {
                    return fail(format!("{} exists", rec.id));
                }
                if self.by_name(&rec.name).is_some() || rec.name.len() > MAX_NAME {
                    return fail(format!("name {:?} taken or too long", rec.name));
                }
                let table = match op {
                    Op::Snapshot { src, .. } => {
                        let Some(s) = vol_of(self, *src) else {
                            return fail(format!("no source {src}"));
                        };
                        if rec.kind != VolumeKind::Snapshot || rec.size != s.size {
                            return fail("snapshot record does not match its source".into());
                        }
                        self.copy_table(*src)
                    }
                    Op::Clone { snap, .. } => {
                        let Some(s) = vol_of(self, *snap) else {
                            return fail(format!("no snapshot {snap}"));
                        };
                        if s.kind != VolumeKind::Snapshot
                            || rec.kind != VolumeKind::Clone
                            || rec.parent != Some(*snap)
                            || rec.size != s.size
                        {
                            return fail("clone record does not match its snapshot".into());
                        }
                        self.copy_table(*snap)
                    }
                    _ => {
                        if self.clusters_for(rec.size) > self.max_volume_clusters() {
                            return fail(format!("size {} too large", rec.size));
                        }
                        if rec.kind != VolumeKind::Volume || rec.parent.is_some() {
                            return fail("a created volume has no parent".into());
                        }
                        vec![NONE; self.clusters_for(rec.size) as usize]
                    }
                };
                self.next_id = self.next_id.max(rec.id.0 + 1);
                self.tables.insert(rec.id, table);
                self.volumes.insert(rec.id, rec.clone());
            }
            Op::MapCluster { vol, vc, pc } => {
                let Some(len) = self.tables.get(vol).map(Vec::len) else {
                    return fail(format!("no volume {vol}"));
                };
                if *vc >= len as u64 || *pc >= self.total_clusters {
                    return fail(format!("cluster {vc} -> {pc} out of range"));
                }
                if self.refcount[*pc as usize] == 0
                    && !self.free.remove(*pc)
                    && !self.reserved.remove(*pc)
                {
                    return fail(format!("cluster {pc} is neither free nor reserved"));
                }
                self.take_ref(*pc);
                let old = std::mem::replace(
                    &mut self.tables.get_mut(vol).expect("checked")[*vc as usize],
                    *pc,
                );
                self.release(old);
            }
            Op::UnmapCluster { vol, vc } => {
                let Some(t) = self.tables.get_mut(vol) else {
                    return fail(format!("no volume {vol}"));
                };
                let Some(e) = t.get_mut(*vc as usize) else {
                    return fail(format!("cluster {vc} out of range"));
                };
                let old = std::mem::replace(e, NONE);
                self.release(old);
            }
            Op::DeleteVolume { vol } => {
                if !self.volumes.contains_key(vol) {
                    return fail(format!("no volume {vol}"));
                }
                self.volumes.remove(vol);
                let t = self.tables.remove(vol).unwrap_or_default();
                self.release_table(t);
                for v in self.volumes.values_mut() {
                    if v.parent == Some(*vol) {
                        v.parent = None;
                        v.kind = VolumeKind::Volume;
                    }
                    if v.origin == Some(*vol) {
                        v.origin = None;
                    }
                }
            }
            Op::Resize { vol, size } => {
                if self.clusters_for(*size) > self.max_volume_clusters() {
                    return fail(format!("size {size} too large"));
                }
                let n = self.clusters_for(*size) as usize;
                let Some(v) = self.volumes.get_mut(vol) else {
                    return fail(format!("no volume {vol}"));
                };
                if v.kind == VolumeKind::Snapshot {
                    return fail("snapshots are not resized".into());
                }
                v.size = *size;
                let t = self.tables.get_mut(vol).expect("every volume has a table");
                let cut = if t.len() > n {
                    t.split_off(n)
                } else {
                    Vec::new()
                };
                t.resize(n, NONE);
                self.release_table(cut);
            }
            Op::Rename { vol, name } => {
                if self.by_name(name).is_some() || name.len() > MAX_NAME {
                    return fail(format!("name {name:?} taken or too long"));
                }
                let Some(v) = self.volumes.get_mut(vol) else {
                    return fail(format!("no volume {vol}"));
                };
                v.name = name.clone();
            }
            Op::Revert { vol, snap } => {
                let (Some(v), Some(s)) = (vol_of(self, *vol), vol_of(self, *snap)) else {
                    return fail(format!("no volume {vol} or {snap}"));
                };
                if s.kind != VolumeKind::Snapshot || v.kind == VolumeKind::Snapshot {
                    return fail("revert needs a writable volume and a snapshot".into());
                }
                let t = self.copy_table(*snap);
                let old = self.tables.insert(*vol, t).unwrap_or_default();
                self.release_table(old);
                self.volumes.get_mut(vol).expect("checked").size = s.size;
            }
            Op::Detach { vol } => {
                let Some(v) = self.volumes.get_mut(vol) else {
                    return fail(format!("no volume {vol}"));
                };
                v.parent = None;
                if v.kind == VolumeKind::Clone {
                    v.kind = VolumeKind::Volume;
                }
            }
            Op::Reserve { clusters } => {
                if let Some(c) = clusters.iter().find(|&&c| !self.free.contains(c)) {
                    return fail(format!("cluster {c} is not free"));
                }
                for &c in clusters {
                    self.free.remove(c);
                    self.reserved.insert(c);
                }
            }
            Op::Unreserve { clusters } => {
                if let Some(c) = clusters.iter().find(|&&c| !self.reserved.contains(c)) {
                    return fail(format!("cluster {c} is not reserved"));
                }
                for &c in clusters {
                    self.reserved.remove(c);
                    self.needs_zeroing.insert(c);
                }
            }
            Op::ClustersZeroed { clusters } => {
                if let Some(c) = clusters.iter().find(|&&c| !self.needs_zeroing.contains(c)) {
                    return fail(format!("cluster {c} was not waiting for zeroing"));
                }
                for &c in clusters {
                    self.needs_zeroing.remove(c);
                    self.free.insert(c);
                }
            }
        }
        Ok(())
    }
}
