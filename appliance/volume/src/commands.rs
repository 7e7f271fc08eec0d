//! Control-plane commands run by the metadata owner task.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::info::{CheckReport, MemberInfo, PoolInfo, VolumeInfo};
use crate::owner::Owner;
use crate::shared::{Cmd, Reply};
use crate::state::{Op, VolumeRec, NONE};
use crate::types::{check_name, now_secs, random_uuid, uuid_string, VolId};
use crate::{Provisioning, Volume, VolumeError, VolumeKind};

/// Largest volume: 2^48 clusters of entries would not fit memory long before this.
const MAX_VOLUME_BYTES: u64 = 1 << 60;

impl Owner {
    pub(crate) async fn command(&mut self, cmd: Cmd) -> Result<Reply, VolumeError> {
        match cmd {
            Cmd::Create { name, size, prov } => self
                .create(&name, size, prov)
                .await
                .map(|v| Reply::Volumes(vec![v])),
            Cmd::Resize { name, size, force } => {
                self.resize(&name, size, force).await.map(|()| Reply::Done)
            }
            Cmd::Rename { name, new_name } => {
                self.rename(&name, &new_name).await.map(|()| Reply::Done)
            }
            Cmd::Delete { name } => self.delete(&name).await.map(|()| Reply::Done),
            Cmd::Inflate { name } => self.inflate(&name).await.map(|()| Reply::Done),
            Cmd::Snapshot { pairs } => self.snapshot(&pairs).await.map(Reply::Volumes),
            Cmd::Clone { snapshot, name } => self
                .clone_snap(&snapshot, &name)
                .await
                .map(|v| Reply::Volumes(vec![v])),
            Cmd::Revert { volume, snapshot } => {
                self.revert(&volume, &snapshot).await.map(|()| Reply::Done)
            }
            Cmd::Info => Ok(Reply::Info(Box::new(self.info()))),
            Cmd::VolumeInfo(id) => self
                .volume_info(id)
                .map(|i| Reply::VolumeInfo(Box::new(i)))
                .ok_or_else(|| VolumeError::NoSuchVolume(id.to_string())),
            Cmd::Check => Ok(Reply::Check(self.check())),
            Cmd::Diff { base, target } => {
                self.diff(&base, &target).map(|d| Reply::Diff(Box::new(d)))
            }
            Cmd::Close | Cmd::Destroy { .. } => {
                Err(VolumeError::InvalidConfig("handled by the loop".into()))
            }
        }
    }

    fn find(&self, name: &str) -> Result<VolumeRec, VolumeError> {
        self.state
            .by_name(name)
            .cloned()
            .ok_or_else(|| VolumeError::NoSuchVolume(name.into()))
    }

    fn new_name(&self, name: &str) -> Result<(), VolumeError> {
        check_name(name).map_err(|reason| VolumeError::InvalidName {
            name: name.into(),
            reason,
        })?;
        if self.state.by_name(name).is_some() {
            return Err(VolumeError::Exists(name.into()));
        }
        Ok(())
    }

    fn valid_size(&self, size: u64) -> Result<(), VolumeError> {
        let bs = u64::from(self.shared.block_size);
        let max = MAX_VOLUME_BYTES.min(self.state.max_volume_clusters() * self.state.cluster_size);
        if size == 0 || size % bs != 0 || size > max {
            return Err(VolumeError::InvalidSize {
                size,
                reason: format!("must be a positive multiple of the block size {bs}, at most {max} (64 times the pool)"),
            });
        }
        Ok(())
    }

    fn rec(
        &mut self,
        name: &str,
        kind: VolumeKind,
        size: u64,
        parent: Option<VolId>,
        origin: Option<VolId>,
        prov: Provisioning,
    ) -> VolumeRec {
        let id = VolId(self.state.next_id);
        self.state.next_id += 1;
        VolumeRec {
            id,
            name: name.into(),
            kind,
            size,
            parent,
            origin,
            prov,
            uuid: random_uuid(),
            created: now_secs(),
        }
    }

    /// MapCluster ops giving every unallocated entry in `range` of `vol` a free cluster.
    async fn thick_fill(
        &mut self,
        vol: VolId,
        range: std::ops::Range<u64>,
    ) -> Result<(), VolumeError> {
        let need = range
            .clone()
            .filter(|&vc| self.state.table(vol)[vc as usize] == NONE)
            .count() as u64;
        if need > self.available() {
            return Err(self.full(need));
        }
        self.check_refs(need)?;
        let mut ops = Vec::new();
        for vc in range {
            if self.state.table(vol)[vc as usize] != NONE {
                continue;
            }
            let Some(pc) = self.take_free().await? else {
                return Err(self.full(need));
            };
            let op = Op::MapCluster { vol, vc, pc };
            self.apply(std::slice::from_ref(&op))?;
            ops.push(op);
        }
        self.log(&ops).await
    }

    fn full(&self, needed: u64) -> VolumeError {
        VolumeError::PoolFull {
            pool: self.shared.name.clone(),
            needed,
            free: self.available(),
        }
    }

    async fn create(
        &mut self,
        name: &str,
        size: u64,
        prov: Provisioning,
    ) -> Result<Arc<Volume>, VolumeError> {
        self.new_name(name)?;
        self.valid_size(size)?;
        let n = self.state.clusters_for(size);
        if prov == Provisioning::Thick {
            if n > self.available() {
                return Err(self.full(n));
            }
            self.check_refs(n)?;
        }
        let rec = self.rec(name, VolumeKind::Volume, size, None, None, prov);
        let id = rec.id;
        self.commit(vec![Op::CreateVolume(rec)]).await?;
        if prov == Provisioning::Thick {
            self.thick_fill(id, 0..n).await?;
        }
        self.space_check();
        Ok(self.make_volume(id))
    }

    async fn resize(&mut self, name: &str, size: u64, force: bool) -> Result<(), VolumeError> {
        let rec = self.find(name)?;
        if rec.kind == VolumeKind::Snapshot {
            return Err(VolumeError::ReadOnly(name.into()));
        }
        self.valid_size(size)?;
        let n = self.state.clusters_for(size);
        let mapped_beyond = self
            .state
            .table(rec.id)
            .iter()
            .skip(n as usize)
            .filter(|&&p| p != NONE)
            .count() as u64;
        if mapped_beyond > 0 && !force {
            return Err(VolumeError::HasData {
                volume: name.into(),
                clusters: mapped_beyond,
            });
        }
        let old_n = self.state.table(rec.id).len() as u64;
        if rec.prov == Provisioning::Thick && n > old_n {
            let need = n - old_n;
            if need > self.available() {
                return Err(self.full(need));
            }
            self.check_refs(need)?;
        }
        self.commit(vec![Op::Resize { vol: rec.id, size }]).await?;
        if rec.prov == Provisioning::Thick && n > old_n {
            self.thick_fill(rec.id, old_n..n).await?;
        }
        self.publish_volume(rec.id);
        self.drain(&BTreeSet::from([rec.id])).await?;
        self.space_check();
        Ok(())
    }

    async fn rename(&mut self, name: &str, new_name: &str) -> Result<(), VolumeError> {
        let rec = self.find(name)?;
        self.new_name(new_name)?;
        self.commit(vec![Op::Rename {
            vol: rec.id,
            name: new_name.into(),
        }])
        .await?;
        let pool = Arc::clone(&self.shared);
        let mut reg = pool.volumes.write().expect("volume registry lock");
        if let Some(old) = reg.remove(name) {
            let v = Arc::new(Volume {
                bdev_name: format!("{}/{new_name}", pool.name),
                vol_name: new_name.into(),
                shared: Arc::clone(&old.shared),
            });
            reg.insert(new_name.into(), v);
        }
        Ok(())
    }

    async fn delete(&mut self, name: &str) -> Result<(), VolumeError> {
        let rec = self.find(name)?;
        if let Some(vs) = self.vols.get(&rec.id).cloned() {
            vs.deleted.store(true, Ordering::Release);
            // No request may still use its clusters once they are released.
            self.drain(&BTreeSet::from([rec.id])).await?;
        }
        self.commit(vec![Op::DeleteVolume { vol: rec.id }]).await?;
        self.forget_volume(rec.id, name);
        // Sharing changed for whoever shared clusters with it.
        let ids: Vec<VolId> = self.state.volumes.keys().copied().collect();
        for id in ids {
            self.publish_volume(id);
        }
        log::info!("pool {}: deleted {name}", self.shared.name);
        Ok(())
    }

    async fn inflate(&mut self, name: &str) -> Result<(), VolumeError> {
        let rec = self.find(name)?;
        if rec.kind != VolumeKind::Clone {
            return Err(VolumeError::NotAClone(name.into()));
        }
        let shared: Vec<u64> = (0..self.state.table(rec.id).len() as u64)
            .filter(|&vc| {
                let p = self.state.table(rec.id)[vc as usize];
                p != NONE && self.state.is_shared(p)
            })
            .collect();
        if shared.len() as u64 > self.available() + self.state.reserved.len() {
            return Err(self.full(shared.len() as u64));
        }
        for chunk in shared.chunks(64) {
            let cows: Vec<(VolId, u64)> = chunk.iter().map(|&vc| (rec.id, vc)).collect();
            let (ops, no_room) = self.copy_on_write(&cows).await?;
            self.log(&ops).await?;
            for &(vol, vc) in &cows {
                self.publish_entry(vol, vc);
            }
            if !no_room.is_empty() {
                return Err(self.full(no_room.len() as u64));
            }
        }
        self.commit(vec![Op::Detach { vol: rec.id }]).await?;
        self.space_check();
        Ok(())
    }

    async fn snapshot(
        &mut self,
        pairs: &[(String, String)],
    ) -> Result<Vec<Arc<Volume>>, VolumeError> {
        let mut names = BTreeSet::new();
        let mut srcs = BTreeSet::new();
        let mut added = 0;
        for (vol, snap) in pairs {
            let rec = self.find(vol)?;
            self.new_name(snap)?;
            if !names.insert(snap.clone()) {
                return Err(VolumeError::Exists(snap.clone()));
            }
            srcs.insert(rec.id);
            added += self.state.refs_of(rec.id);
        }
        self.check_refs(added)?;
        let mut ops = Vec::new();
        for (vol, snap) in pairs {
            let src = self.find(vol)?;
            let rec = self.rec(
                snap,
                VolumeKind::Snapshot,
                src.size,
                None,
                Some(src.id),
                src.prov,
            );
            let op = Op::Snapshot { src: src.id, rec };
            self.apply(std::slice::from_ref(&op))?;
            ops.push(op);
        }
        // Freeze: every entry of the sources becomes shared, then wait for writes in flight.
        for &id in &srcs {
            self.publish_volume(id);
        }
        self.drain(&srcs).await?;
        self.flush_members().await?;
        self.log(&ops).await?;
        let mut out = Vec::new();
        for op in &ops {
            if let Op::Snapshot { rec, .. } = op {
                out.push(self.make_volume(rec.id));
            }
        }
        Ok(out)
    }

    async fn clone_snap(&mut self, snapshot: &str, name: &str) -> Result<Arc<Volume>, VolumeError> {
        let snap = self.find(snapshot)?;
        if snap.kind != VolumeKind::Snapshot {
            return Err(VolumeError::NotASnapshot(snapshot.into()));
        }
        self.new_name(name)?;
        self.check_refs(self.state.refs_of(snap.id))?;
        let rec = self.rec(
            name,
            VolumeKind::Clone,
            snap.size,
            Some(snap.id),
            None,
            snap.prov,
        );
        let id = rec.id;
        self.commit(vec![Op::Clone { snap: snap.id, rec }]).await?;
        Ok(self.make_volume(id))
    }

    async fn revert(&mut self, volume: &str, snapshot: &str) -> Result<(), VolumeError> {
        let vol = self.find(volume)?;
        let snap = self.find(snapshot)?;
        if snap.kind != VolumeKind::Snapshot {
            return Err(VolumeError::NotASnapshot(snapshot.into()));
        }
        if vol.kind == VolumeKind::Snapshot {
            return Err(VolumeError::ReadOnly(volume.into()));
        }
        let added = self
            .state
            .refs_of(snap.id)
            .saturating_sub(self.state.refs_of(vol.id));
        self.check_refs(added)?;
        // Drain first: no write in flight may land in a cluster about to be released.
        if let Some(vs) = self.vols.get(&vol.id).cloned() {
            let t = vs.table.load_full();
            for vc in 0..t.len() {
                t.set(
                    vc,
                    crate::entry::Entry::new(
                        crate::entry::EntryState::Error(libc::EAGAIN as u32),
                        0,
                    ),
                );
            }
        }
        self.drain(&BTreeSet::from([vol.id])).await?;
        self.commit(vec![Op::Revert {
            vol: vol.id,
            snap: snap.id,
        }])
        .await?;
        self.publish_volume(vol.id);
        self.drain(&BTreeSet::from([vol.id])).await?;
        Ok(())
    }

    pub(crate) fn info(&self) -> PoolInfo {
        let st = &self.state;
        let pool = Arc::clone(&self.shared);
        let shared = st.refcount.iter().filter(|&&r| r > 1).count() as u64;
        let provisioned: u64 = st
            .volumes
            .values()
            .filter(|v| v.kind != VolumeKind::Snapshot)
            .map(|v| v.size)
            .sum();
        let capacity = st.total_clusters * st.cluster_size;
        PoolInfo {
            name: pool.name.clone(),
            uuid: uuid_string(&pool.uuid),
            cluster_size: st.cluster_size,
            block_size: pool.block_size,
            members: self
                .labels
                .iter()
                .zip(&pool.devs)
                .map(|(l, d)| {
                    let range = l.first_cluster..l.first_cluster + l.data_clusters;
                    MemberInfo {
                        index: l.member_index,
                        device: d.name().into(),
                        uuid: uuid_string(&l.member_uuid),
                        size_bytes: l.member_size,
                        data_start: l.data_start,
                        clusters: l.data_clusters,
                        allocated_clusters: range
                            .clone()
                            .filter(|&c| st.refcount[c as usize] > 0)
                            .count() as u64,
                        free_clusters: range.filter(|&c| st.free.contains(c)).count() as u64,
                    }
                })
                .collect(),
            total_clusters: st.total_clusters,
            allocated_clusters: st.allocated,
            free_clusters: st.free.len(),
            shared_clusters: shared,
            zeroing_clusters: st.needs_zeroing.len(),
            provisioned_bytes: provisioned,
            overcommit_ratio: provisioned as f64 / capacity.max(1) as f64,
            warning_percent: pool.warn_percent.load(Ordering::Relaxed),
            volumes: st
                .volumes
                .values()
                .filter(|v| v.kind != VolumeKind::Snapshot)
                .count(),
            snapshots: st
                .volumes
                .values()
                .filter(|v| v.kind == VolumeKind::Snapshot)
                .count(),
            metadata_refs: st.refs,
            metadata_max_refs: self.max_refs,
            log_seq: self.store.seq,
            online: pool.online.load(Ordering::Acquire),
        }
    }

    pub(crate) fn volume_info(&self, id: VolId) -> Option<VolumeInfo> {
        let st = &self.state;
        let v = st.volumes.get(&id)?;
        let name_of =
            |id: Option<VolId>| id.and_then(|i| st.volumes.get(&i)).map(|r| r.name.clone());
        let t = st.table(id);
        let mapped = t.iter().filter(|&&p| p != NONE).count() as u64;
        let shared = t.iter().filter(|&&p| p != NONE && st.is_shared(p)).count() as u64;
        Some(VolumeInfo {
            name: v.name.clone(),
            pool: self.shared.name.clone(),
            kind: v.kind,
            size_bytes: v.size,
            parent: name_of(v.parent),
            origin: name_of(v.origin),
            clones: st.children(id).map(|c| c.name.clone()).collect(),
            allocated_bytes: mapped * st.cluster_size,
            shared_bytes: shared * st.cluster_size,
            exclusive_bytes: (mapped - shared) * st.cluster_size,
            uuid: uuid_string(&v.uuid),
            read_only: v.kind == VolumeKind::Snapshot,
            provisioning: v.prov,
            created: v.created,
        })
    }

    /// The state invariants plus: the published tables agree with the state.
    pub(crate) fn check(&self) -> CheckReport {
        let st = &self.state;
        let mut errors = st.check();
        for (&id, rec) in &st.volumes {
            let Some(vs) = self.vols.get(&id).cloned() else {
                errors.push(format!("{}: not published", rec.name));
                continue;
            };
            let t = vs.table.load();
            if t.size_bytes != rec.size || t.len() != st.table(id).len() as u64 {
                errors.push(format!(
                    "{}: published size {} differs from {}",
                    rec.name, t.size_bytes, rec.size
                ));
                continue;
            }
            for (vc, &pc) in st.table(id).iter().enumerate() {
                let e = t.get(vc as u64).state();
                let ok = match e {
                    crate::entry::EntryState::Unallocated => pc == NONE,
                    crate::entry::EntryState::Allocated(p) => {
                        p == pc && !st.is_shared(pc) && rec.kind != VolumeKind::Snapshot
                    }
                    crate::entry::EntryState::Shared(p) => p == pc,
                    crate::entry::EntryState::Error(_) => false,
                };
                if !ok {
                    errors.push(format!(
                        "{}: cluster {vc} published as {e:?}, state maps {pc}",
                        rec.name
                    ));
                }
            }
        }
        CheckReport {
            errors,
            clusters_checked: st.total_clusters,
            volumes_checked: st.volumes.len(),
        }
    }
}
