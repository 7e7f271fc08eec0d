//! `State::check`: the invariants `pool check` reports.

use super::*;

impl State {
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
