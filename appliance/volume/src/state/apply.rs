//! `State::apply`: one function per kind of op, each validating before it changes anything.

use super::*;

type Applied = Result<(), String>;

impl State {
    /// Applies one op. Validates first and changes nothing when it fails.
    pub fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        let r = match op {
            Op::CreateVolume(rec) | Op::Snapshot { rec, .. } | Op::Clone { rec, .. } => {
                self.create(op, rec)
            }
            Op::MapCluster { vol, vc, pc } => self.map_cluster(*vol, *vc, *pc),
            Op::UnmapCluster { vol, vc } => self.unmap_cluster(*vol, *vc),
            Op::DeleteVolume { vol } => self.delete(*vol),
            Op::Resize { vol, size } => self.resize(*vol, *size),
            Op::Rename { vol, name } => self.rename(*vol, name),
            Op::Revert { vol, snap } => self.revert(*vol, *snap),
            Op::Detach { vol } => self.detach(*vol),
            Op::Reserve { clusters } => self.move_clusters(clusters, Set::Free, Set::Reserved),
            Op::Unreserve { clusters } => {
                self.move_clusters(clusters, Set::Reserved, Set::NeedsZeroing)
            }
            Op::ClustersZeroed { clusters } => {
                self.move_clusters(clusters, Set::NeedsZeroing, Set::Free)
            }
        };
        r.map_err(|reason| ApplyError {
            op: op.name(),
            reason,
        })
    }

    /// CreateVolume, Snapshot or Clone of `rec`.
    fn create(&mut self, op: &Op, rec: &VolumeRec) -> Applied {
        if self.volumes.contains_key(&rec.id) {
            return Err(format!("{} exists", rec.id));
        }
        if self.by_name(&rec.name).is_some() || rec.name.len() > MAX_NAME {
            return Err(format!("name {:?} taken or too long", rec.name));
        }
        let table = match op {
            Op::Snapshot { src, .. } => {
                let s = self
                    .volumes
                    .get(src)
                    .ok_or_else(|| format!("no source {src}"))?;
                if rec.kind != VolumeKind::Snapshot || rec.size != s.size {
                    return Err("snapshot record does not match its source".into());
                }
                self.copy_table(*src)
            }
            Op::Clone { snap, .. } => {
                let s = self
                    .volumes
                    .get(snap)
                    .ok_or_else(|| format!("no snapshot {snap}"))?;
                if s.kind != VolumeKind::Snapshot
                    || rec.kind != VolumeKind::Clone
                    || rec.parent != Some(*snap)
                    || rec.size != s.size
                {
                    return Err("clone record does not match its snapshot".into());
                }
                self.copy_table(*snap)
            }
            _ => {
                if self.clusters_for(rec.size) > self.max_volume_clusters() {
                    return Err(format!("size {} too large", rec.size));
                }
                if rec.kind != VolumeKind::Volume || rec.parent.is_some() {
                    return Err("a created volume has no parent".into());
                }
                vec![NONE; self.clusters_for(rec.size) as usize]
            }
        };
        self.next_id = self.next_id.max(rec.id.0 + 1);
        self.tables.insert(rec.id, table);
        self.volumes.insert(rec.id, rec.clone());
        Ok(())
    }

    fn map_cluster(&mut self, vol: VolId, vc: u64, pc: u64) -> Applied {
        let len = self
            .tables
            .get(&vol)
            .map(Vec::len)
            .ok_or_else(|| format!("no volume {vol}"))?;
        if vc >= len as u64 || pc >= self.total_clusters {
            return Err(format!("cluster {vc} -> {pc} out of range"));
        }
        if self.refcount[pc as usize] == 0 && !self.free.remove(pc) && !self.reserved.remove(pc) {
            return Err(format!("cluster {pc} is neither free nor reserved"));
        }
        self.take_ref(pc);
        let old = std::mem::replace(
            &mut self.tables.get_mut(&vol).expect("checked")[vc as usize],
            pc,
        );
        self.release(old);
        Ok(())
    }

    fn unmap_cluster(&mut self, vol: VolId, vc: u64) -> Applied {
        let t = self
            .tables
            .get_mut(&vol)
            .ok_or_else(|| format!("no volume {vol}"))?;
        let e = t
            .get_mut(vc as usize)
            .ok_or_else(|| format!("cluster {vc} out of range"))?;
        let old = std::mem::replace(e, NONE);
        self.release(old);
        Ok(())
    }

    fn delete(&mut self, vol: VolId) -> Applied {
        if self.volumes.remove(&vol).is_none() {
            return Err(format!("no volume {vol}"));
        }
        let t = self.tables.remove(&vol).unwrap_or_default();
        self.release_table(t);
        for v in self.volumes.values_mut() {
            if v.parent == Some(vol) {
                v.parent = None;
                v.kind = VolumeKind::Volume;
            }
            if v.origin == Some(vol) {
                v.origin = None;
            }
        }
        Ok(())
    }

    fn resize(&mut self, vol: VolId, size: u64) -> Applied {
        if self.clusters_for(size) > self.max_volume_clusters() {
            return Err(format!("size {size} too large"));
        }
        let n = self.clusters_for(size) as usize;
        let v = self
            .volumes
            .get_mut(&vol)
            .ok_or_else(|| format!("no volume {vol}"))?;
        if v.kind == VolumeKind::Snapshot {
            return Err("snapshots are not resized".into());
        }
        v.size = size;
        let t = self.tables.get_mut(&vol).expect("every volume has a table");
        let cut = if t.len() > n {
            t.split_off(n)
        } else {
            Vec::new()
        };
        t.resize(n, NONE);
        self.release_table(cut);
        Ok(())
    }

    fn rename(&mut self, vol: VolId, name: &str) -> Applied {
        if self.by_name(name).is_some() || name.len() > MAX_NAME {
            return Err(format!("name {name:?} taken or too long"));
        }
        let v = self
            .volumes
            .get_mut(&vol)
            .ok_or_else(|| format!("no volume {vol}"))?;
        v.name = name.to_owned();
        Ok(())
    }

    fn revert(&mut self, vol: VolId, snap: VolId) -> Applied {
        let (Some(v), Some(s)) = (self.volumes.get(&vol), self.volumes.get(&snap)) else {
            return Err(format!("no volume {vol} or {snap}"));
        };
        if s.kind != VolumeKind::Snapshot || v.kind == VolumeKind::Snapshot {
            return Err("revert needs a writable volume and a snapshot".into());
        }
        let size = s.size;
        let t = self.copy_table(snap);
        let old = self.tables.insert(vol, t).unwrap_or_default();
        self.release_table(old);
        self.volumes.get_mut(&vol).expect("checked").size = size;
        Ok(())
    }

    fn detach(&mut self, vol: VolId) -> Applied {
        let v = self
            .volumes
            .get_mut(&vol)
            .ok_or_else(|| format!("no volume {vol}"))?;
        v.parent = None;
        if v.kind == VolumeKind::Clone {
            v.kind = VolumeKind::Volume;
        }
        Ok(())
    }

    /// Reserve (free -> reserved), Unreserve (reserved -> needs zeroing), ClustersZeroed
    /// (needs zeroing -> free): every cluster must be in `from`.
    fn move_clusters(&mut self, clusters: &[u64], from: Set, to: Set) -> Applied {
        if let Some(c) = clusters.iter().find(|&&c| !self.set(from).contains(c)) {
            return Err(format!("cluster {c} is not {}", from.name()));
        }
        for &c in clusters {
            self.set(from).remove(c);
            self.set(to).insert(c);
        }
        Ok(())
    }

    fn set(&mut self, s: Set) -> &mut ClusterSet {
        match s {
            Set::Free => &mut self.free,
            Set::Reserved => &mut self.reserved,
            Set::NeedsZeroing => &mut self.needs_zeroing,
        }
    }
}

/// The cluster sets besides the tables.
#[derive(Debug, Clone, Copy)]
enum Set {
    Free,
    Reserved,
    NeedsZeroing,
}

impl Set {
    fn name(self) -> &'static str {
        match self {
            Set::Free => "free",
            Set::Reserved => "reserved",
            Set::NeedsZeroing => "waiting for zeroing",
        }
    }
}
