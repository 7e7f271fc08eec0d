//! The metadata state (pure data, owned by the pool's owner thread) and the operations that
//! change it. Every change is an [`Op`] applied by one deterministic [`State::apply`], both live
//! and when the log is replayed; [`State::check`] verifies the invariants (`pool check`).

use std::collections::BTreeMap;

use crate::clusterset::ClusterSet;
use crate::format::codec::{CodecError, Dec, Enc};
use crate::types::{Provisioning, VolId, VolumeKind, MAX_NAME};

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

    /// The invariants; every violation is one line.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut counted = vec![0u32; self.total_clusters as usize];
        let mut refs = 0u64;
        let mut names = std::collections::HashSet::new();
        for (id, v) in &self.volumes {
            if v.id != *id {
                errors.push(format!("{id}: record carries id {}", v.id));
            }
            if !names.insert(v.name.as_str()) {
                errors.push(format!("{id}: duplicate name {:?}", v.name));
            }
            if id.0 >= self.next_id {
                errors.push(format!("{id}: id not below next id {}", self.next_id));
            }
            match (v.kind, v.parent) {
                (VolumeKind::Clone, Some(p)) => match self.volumes.get(&p) {
                    Some(pv) if pv.kind == VolumeKind::Snapshot => {}
                    Some(_) => errors.push(format!("{}: parent {p} is not a snapshot", v.name)),
                    None => errors.push(format!("{}: parent {p} does not exist", v.name)),
                },
                (VolumeKind::Clone, None) => {
                    errors.push(format!("{}: clone without parent", v.name))
                }
                (_, Some(p)) => errors.push(format!("{}: not a clone but has parent {p}", v.name)),
                _ => {}
            }
            if let Some(o) = v.origin {
                if !self.volumes.contains_key(&o) {
                    errors.push(format!("{}: origin {o} does not exist", v.name));
                }
            }
            let Some(t) = self.tables.get(id) else {
                errors.push(format!("{}: no cluster table", v.name));
                continue;
            };
            if t.len() as u64 != self.clusters_for(v.size) {
                errors.push(format!(
                    "{}: table has {} entries, size {} needs {}",
                    v.name,
                    t.len(),
                    v.size,
                    self.clusters_for(v.size)
                ));
            }
            for (vc, &pc) in t.iter().enumerate() {
                if pc == NONE {
                    continue;
                }
                if pc >= self.total_clusters {
                    errors.push(format!("{}: cluster {vc} -> {pc} beyond the pool", v.name));
                    continue;
                }
                counted[pc as usize] += 1;
                refs += 1;
            }
        }
        if self.tables.len() != self.volumes.len() {
            errors.push(format!(
                "{} tables for {} volumes",
                self.tables.len(),
                self.volumes.len()
            ));
        }
        if refs != self.refs {
            errors.push(format!(
                "{refs} table references, state counts {}",
                self.refs
            ));
        }
        let mut allocated = 0;
        for pc in 0..self.total_clusters {
            let rc = self.refcount[pc as usize];
            if rc != counted[pc as usize] {
                errors.push(format!(
                    "cluster {pc}: refcount {rc}, {} table entries point at it",
                    counted[pc as usize]
                ));
            }
            let sets = [
                self.free.contains(pc),
                self.needs_zeroing.contains(pc),
                self.reserved.contains(pc),
            ];
            let in_sets = sets.iter().filter(|&&b| b).count();
            if counted[pc as usize] > 0 {
                allocated += 1;
                if in_sets > 0 {
                    errors.push(format!(
                        "cluster {pc}: referenced and free/zeroing/reserved"
                    ));
                }
            } else if in_sets != 1 {
                errors.push(format!(
                    "cluster {pc}: unreferenced but in {in_sets} of free/zeroing/reserved"
                ));
            }
        }
        if allocated != self.allocated {
            errors.push(format!(
                "{allocated} clusters referenced, state counts {}",
                self.allocated
            ));
        }
        errors
    }
}

// ---- codec -------------------------------------------------------------------------------

const STATE_VERSION: u8 = 1;

fn enc_rec(e: &mut Enc, r: &VolumeRec) {
    e.var(r.id.0);
    e.str(&r.name);
    e.u8(r.kind.code());
    e.var(r.size);
    e.var(r.parent.map_or(0, |p| p.0 + 1));
    e.var(r.origin.map_or(0, |p| p.0 + 1));
    e.u8(match r.prov {
        Provisioning::Thin => 0,
        Provisioning::Thick => 1,
    });
    e.fixed(&r.uuid);
    e.var(r.created);
}

fn dec_rec(d: &mut Dec) -> Result<VolumeRec, CodecError> {
    let opt = |v: u64| v.checked_sub(1).map(VolId);
    Ok(VolumeRec {
        id: VolId(d.var()?),
        name: d.str(MAX_NAME)?,
        kind: VolumeKind::from_code(d.u8()?)
            .ok_or_else(|| CodecError::Invalid("volume kind".into()))?,
        size: d.var()?,
        parent: opt(d.var()?),
        origin: opt(d.var()?),
        prov: match d.u8()? {
            0 => Provisioning::Thin,
            1 => Provisioning::Thick,
            v => return Err(CodecError::Invalid(format!("provisioning {v}"))),
        },
        uuid: d.fixed()?,
        created: d.var()?,
    })
}

pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut e = Enc::new();
    e.var(ops.len() as u64);
    for op in ops {
        match op {
            Op::CreateVolume(r) => {
                e.u8(1);
                enc_rec(&mut e, r);
            }
            Op::MapCluster { vol, vc, pc } => {
                e.u8(2);
                e.var(vol.0);
                e.var(*vc);
                e.var(*pc);
            }
            Op::UnmapCluster { vol, vc } => {
                e.u8(3);
                e.var(vol.0);
                e.var(*vc);
            }
            Op::DeleteVolume { vol } => {
                e.u8(4);
                e.var(vol.0);
            }
            Op::Snapshot { src, rec } => {
                e.u8(5);
                e.var(src.0);
                enc_rec(&mut e, rec);
            }
            Op::Clone { snap, rec } => {
                e.u8(6);
                e.var(snap.0);
                enc_rec(&mut e, rec);
            }
            Op::Resize { vol, size } => {
                e.u8(7);
                e.var(vol.0);
                e.var(*size);
            }
            Op::Rename { vol, name } => {
                e.u8(8);
                e.var(vol.0);
                e.str(name);
            }
            Op::Revert { vol, snap } => {
                e.u8(9);
                e.var(vol.0);
                e.var(snap.0);
            }
            Op::Detach { vol } => {
                e.u8(10);
                e.var(vol.0);
            }
            Op::Reserve { clusters }
            | Op::Unreserve { clusters }
            | Op::ClustersZeroed { clusters } => {
                e.u8(match op {
                    Op::Reserve { .. } => 11,
                    Op::Unreserve { .. } => 12,
                    _ => 13,
                });
                let mut sorted = clusters.clone();
                sorted.sort_unstable();
                e.sorted_list(&sorted);
            }
        }
    }
    e.buf
}

pub fn decode_ops(bytes: &[u8]) -> Result<Vec<Op>, CodecError> {
    let mut d = Dec::new(bytes);
    let n = d.len(usize::MAX)?;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = d.u8()?;
        let op = match tag {
            1 => Op::CreateVolume(dec_rec(&mut d)?),
            2 => Op::MapCluster {
                vol: VolId(d.var()?),
                vc: d.var()?,
                pc: d.var()?,
            },
            3 => Op::UnmapCluster {
                vol: VolId(d.var()?),
                vc: d.var()?,
            },
            4 => Op::DeleteVolume {
                vol: VolId(d.var()?),
            },
            5 => Op::Snapshot {
                src: VolId(d.var()?),
                rec: dec_rec(&mut d)?,
            },
            6 => Op::Clone {
                snap: VolId(d.var()?),
                rec: dec_rec(&mut d)?,
            },
            7 => Op::Resize {
                vol: VolId(d.var()?),
                size: d.var()?,
            },
            8 => Op::Rename {
                vol: VolId(d.var()?),
                name: d.str(MAX_NAME)?,
            },
            9 => Op::Revert {
                vol: VolId(d.var()?),
                snap: VolId(d.var()?),
            },
            10 => Op::Detach {
                vol: VolId(d.var()?),
            },
            11 => Op::Reserve {
                clusters: d.sorted_list()?,
            },
            12 => Op::Unreserve {
                clusters: d.sorted_list()?,
            },
            13 => Op::ClustersZeroed {
                clusters: d.sorted_list()?,
            },
            t => return Err(CodecError::Invalid(format!("op tag {t}"))),
        };
        ops.push(op);
    }
    d.finish()?;
    Ok(ops)
}

impl State {
    /// Checkpoint payload: the volume table and the mapped entries; refcounts and the free set
    /// are derived when decoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(STATE_VERSION);
        e.var(self.cluster_size);
        e.var(self.total_clusters);
        e.var(self.next_id);
        e.var(self.volumes.len() as u64);
        for (id, rec) in &self.volumes {
            enc_rec(&mut e, rec);
            let t = self.table(*id);
            e.var(t.len() as u64);
            let mapped: Vec<(usize, u64)> = t
                .iter()
                .enumerate()
                .filter(|(_, &p)| p != NONE)
                .map(|(i, &p)| (i, p))
                .collect();
            e.var(mapped.len() as u64);
            let mut prev = 0;
            for (vc, pc) in mapped {
                e.var((vc - prev) as u64);
                e.var(pc);
                prev = vc;
            }
        }
        e.sorted_list(&self.needs_zeroing.iter().collect::<Vec<_>>());
        e.sorted_list(&self.reserved.iter().collect::<Vec<_>>());
        e.buf
    }

    /// Decodes a checkpoint of a pool of at most `max_clusters` clusters (refused before
    /// allocating anything bigger).
    pub fn decode(bytes: &[u8], max_clusters: u64) -> Result<State, CodecError> {
        let bad = |s: String| CodecError::Invalid(s);
        let mut d = Dec::new(bytes);
        let v = d.u8()?;
        if v != STATE_VERSION {
            return Err(bad(format!("state version {v}")));
        }
        let cluster_size = d.var()?;
        let total = d.var()?;
        if cluster_size == 0 || total > max_clusters {
            return Err(bad(format!("geometry {cluster_size} x {total}")));
        }
        let mut s = State::new(cluster_size, total);
        s.next_id = d.var()?;
        let nvol = d.len(usize::MAX)?;
        for _ in 0..nvol {
            let rec = dec_rec(&mut d)?;
            let len = d.var()?;
            if len != s.clusters_for(rec.size) || len > s.max_volume_clusters() {
                return Err(bad(format!("{}: table length {len}", rec.name)));
            }
            let mut t = vec![NONE; len as usize];
            let n = d.len(usize::MAX)?;
            let mut vc: u64 = 0;
            for i in 0..n {
                let delta = d.var()?;
                if i > 0 && delta == 0 {
                    return Err(bad("table entries out of order".into()));
                }
                vc = vc
                    .checked_add(delta)
                    .ok_or_else(|| bad("entry overflow".into()))?;
                let pc = d.var()?;
                if vc >= len || pc >= total {
                    return Err(bad(format!(
                        "{}: entry {vc} -> {pc} out of range",
                        rec.name
                    )));
                }
                t[vc as usize] = pc;
                if s.refcount[pc as usize] == 0 {
                    s.free.remove(pc);
                }
                s.take_ref(pc);
            }
            let id = rec.id;
            if s.volumes.insert(id, rec).is_some() {
                return Err(bad(format!("duplicate volume id {id}")));
            }
            s.tables.insert(id, t);
        }
        for (name, target) in [("needs-zeroing", 0), ("reserved", 1)] {
            for c in d.sorted_list()? {
                if c >= total || s.refcount[c as usize] != 0 || !s.free.remove(c) {
                    return Err(bad(format!("{name} cluster {c} invalid")));
                }
                if target == 0 {
                    s.needs_zeroing.insert(c);
                } else {
                    s.reserved.insert(c);
                }
            }
        }
        d.finish()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, name: &str, kind: VolumeKind, size: u64, parent: Option<u64>) -> VolumeRec {
        VolumeRec {
            id: VolId(id),
            name: name.into(),
            kind,
            size,
            parent: parent.map(VolId),
            origin: None,
            prov: Provisioning::Thin,
            uuid: [id as u8; 16],
            created: 1,
        }
    }

    fn apply_all(s: &mut State, ops: &[Op]) {
        for op in ops {
            s.apply(op).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.check(), Vec::<String>::new(), "after {op:?}");
        }
    }

    #[test]
    fn refcounts_follow_snapshots_clones_and_deletes() {
        let mut s = State::new(1 << 20, 16);
        let v = VolId(1);
        apply_all(
            &mut s,
            &[
                Op::CreateVolume(rec(1, "v", VolumeKind::Volume, 4 << 20, None)),
                Op::MapCluster {
                    vol: v,
                    vc: 0,
                    pc: 3,
                },
                Op::MapCluster {
                    vol: v,
                    vc: 1,
                    pc: 4,
                },
                Op::Snapshot {
                    src: v,
                    rec: rec(2, "s", VolumeKind::Snapshot, 4 << 20, None),
                },
                Op::Clone {
                    snap: VolId(2),
                    rec: rec(3, "c", VolumeKind::Clone, 4 << 20, Some(2)),
                },
            ],
        );
        assert_eq!(s.refcount[3], 3);
        assert!(s.is_shared(4));
        // Copy-on-write of cluster 0 of v into reserved cluster 9.
        apply_all(
            &mut s,
            &[
                Op::Reserve { clusters: vec![9] },
                Op::MapCluster {
                    vol: v,
                    vc: 0,
                    pc: 9,
                },
            ],
        );
        assert_eq!((s.refcount[3], s.refcount[9]), (2, 1));
        // Deleting the snapshot keeps the clone's data; the clone becomes independent.
        apply_all(&mut s, &[Op::DeleteVolume { vol: VolId(2) }]);
        assert_eq!(s.refcount[3], 1);
        assert_eq!(s.volumes[&VolId(3)].kind, VolumeKind::Volume);
        apply_all(&mut s, &[Op::DeleteVolume { vol: VolId(3) }]);
        assert!(s.needs_zeroing.contains(3) && !s.free.contains(3));
        apply_all(&mut s, &[Op::ClustersZeroed { clusters: vec![3] }]);
        assert!(s.free.contains(3));
        // Shrink releases, grow adds unallocated entries.
        apply_all(
            &mut s,
            &[
                Op::Resize {
                    vol: v,
                    size: 1 << 20,
                },
                Op::Resize {
                    vol: v,
                    size: 3 << 20,
                },
            ],
        );
        assert_eq!(s.table(v), &[9, NONE, NONE]);
        assert!(s.needs_zeroing.contains(4));
        let stats = (s.allocated, s.refs);
        assert_eq!(stats, (1, 1));
    }

    #[test]
    fn invalid_ops_change_nothing() {
        let mut s = State::new(1 << 20, 4);
        apply_all(
            &mut s,
            &[Op::CreateVolume(rec(
                1,
                "v",
                VolumeKind::Volume,
                2 << 20,
                None,
            ))],
        );
        let before = s.clone();
        let bad = [
            Op::MapCluster {
                vol: VolId(1),
                vc: 2,
                pc: 0,
            },
            Op::MapCluster {
                vol: VolId(1),
                vc: 0,
                pc: 4,
            },
            Op::MapCluster {
                vol: VolId(9),
                vc: 0,
                pc: 0,
            },
            Op::CreateVolume(rec(2, "v", VolumeKind::Volume, 1, None)),
            Op::ClustersZeroed { clusters: vec![0] },
            Op::Unreserve { clusters: vec![0] },
            Op::Revert {
                vol: VolId(1),
                snap: VolId(1),
            },
            Op::Clone {
                snap: VolId(1),
                rec: rec(3, "c", VolumeKind::Clone, 2 << 20, Some(1)),
            },
        ];
        for op in &bad {
            assert!(s.apply(op).is_err(), "{op:?}");
            assert_eq!(s, before, "{op:?} changed the state");
        }
        // A reserved cluster can be mapped; one waiting for zeroing cannot.
        apply_all(
            &mut s,
            &[
                Op::MapCluster {
                    vol: VolId(1),
                    vc: 0,
                    pc: 0,
                },
                Op::UnmapCluster {
                    vol: VolId(1),
                    vc: 0,
                },
            ],
        );
        assert!(s
            .apply(&Op::MapCluster {
                vol: VolId(1),
                vc: 0,
                pc: 0
            })
            .is_err());
    }

    #[test]
    fn check_reports_corruption() {
        let mut s = State::new(1 << 20, 4);
        apply_all(
            &mut s,
            &[
                Op::CreateVolume(rec(1, "v", VolumeKind::Volume, 2 << 20, None)),
                Op::MapCluster {
                    vol: VolId(1),
                    vc: 0,
                    pc: 1,
                },
            ],
        );
        let mut bad = s.clone();
        bad.refcount[1] = 2;
        assert!(bad.check().iter().any(|e| e.contains("refcount 2")));
        let mut bad = s.clone();
        bad.free.insert(1);
        assert!(bad
            .check()
            .iter()
            .any(|e| e.contains("referenced and free")));
        let mut bad = s.clone();
        bad.tables.get_mut(&VolId(1)).expect("table").push(NONE);
        assert!(bad
            .check()
            .iter()
            .any(|e| e.contains("table has 3 entries")));
        let mut bad = s.clone();
        bad.volumes.get_mut(&VolId(1)).expect("vol").parent = Some(VolId(7));
        assert!(!bad.check().is_empty());
    }

    #[test]
    fn codec_round_trips_and_rejects_garbage() {
        let mut s = State::new(1 << 20, 64);
        let ops = vec![
            Op::CreateVolume(rec(1, "v", VolumeKind::Volume, 5 << 20, None)),
            Op::MapCluster {
                vol: VolId(1),
                vc: 4,
                pc: 60,
            },
            Op::MapCluster {
                vol: VolId(1),
                vc: 0,
                pc: 2,
            },
            Op::Snapshot {
                src: VolId(1),
                rec: rec(2, "s", VolumeKind::Snapshot, 5 << 20, None),
            },
            Op::Clone {
                snap: VolId(2),
                rec: rec(3, "c", VolumeKind::Clone, 5 << 20, Some(2)),
            },
            Op::Reserve {
                clusters: vec![7, 5],
            },
            Op::Unreserve { clusters: vec![5] },
            Op::Rename {
                vol: VolId(3),
                name: "c2".into(),
            },
            Op::Resize {
                vol: VolId(1),
                size: 7 << 20,
            },
            Op::UnmapCluster {
                vol: VolId(1),
                vc: 0,
            },
            Op::Revert {
                vol: VolId(3),
                snap: VolId(2),
            },
            Op::Detach { vol: VolId(3) },
        ];
        apply_all(&mut s, &ops);
        let bytes = encode_ops(&ops);
        let mut decoded = decode_ops(&bytes).expect("valid");
        // Cluster lists are stored sorted.
        decoded[5] = Op::Reserve {
            clusters: vec![7, 5],
        };
        assert_eq!(decoded, ops);
        for cut in 0..bytes.len() {
            assert!(decode_ops(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let cp = s.encode();
        let back = State::decode(&cp, 64).expect("valid checkpoint");
        assert_eq!(back, s);
        for cut in 0..cp.len() {
            assert!(State::decode(&cp[..cut], 64).is_err(), "truncated at {cut}");
        }
        assert!(
            State::decode(&cp, 63).is_err(),
            "more clusters than the labels say"
        );
        let mut garbled = cp.clone();
        garbled[0] = 9;
        assert!(State::decode(&garbled, 64).is_err());
        assert!(decode_ops(&[1, 99]).is_err());
    }
}
