//! The metadata owner: one task per pool, on a reactor, that owns the `State`, the metadata
//! store and its own channels to the members. It answers channel faults (group commit:
//! everything pending is applied and logged in one record), runs control-plane commands,
//! zeroes freed clusters, and drains channels (epoch bump + wait for the in-flight counts)
//! before a cluster stops being usable. Its code is async: member I/O and drains are awaited,
//! so the reactor keeps running its other tasks meanwhile (`task`, `crate::exec`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use ferrite_bdev::BlockDevice;

use crate::disk::Disks;
use crate::entry::{Entry, EntryState, MapTable};
use crate::format::label::{LabelError, MemberLabel};
use crate::format::{round_up_block, META_BLOCK};
use crate::info::{PoolEvent, PoolOptions};
use crate::shared::{
    ChannelShared, Cmd, Counters, Fault, FaultKind, FaultReply, MemberMap, Msg, PoolShared, Reply,
    ReplyError, VolumeShared,
};
use crate::state::{Op, State, NONE};
use crate::store::Store;
use crate::types::{cluster_size_valid, now_secs, random_uuid, VolId};
use crate::{Volume, VolumeError, VolumeKind};

mod faults;
mod layout;
mod run;
mod task;

use layout::{create_layout, open_layout};
pub use task::OwnerTask;
pub(crate) use task::{spawn, Placement, CONTROL_QUEUE};

/// Table references per pool cluster the metadata area is sized for.
pub(crate) const REFS_PER_CLUSTER: u64 = 8;
const SLOT_FLOOR: u64 = 1 << 20;
const LOG_FLOOR: u64 = 2 << 20;
const LOG_CEIL: u64 = 64 << 20;
/// Copy-on-write targets reserved per Reserve record.
const RESERVE_BATCH: u64 = 32;
/// Freed clusters zeroed per owner iteration.
const ZERO_BATCH: usize = 256;

/// A cluster of a volume: (volume, virtual cluster number).
pub(crate) type VolCluster = (VolId, u64);

pub(crate) enum Init {
    Create { name: String, opts: PoolOptions },
    Open,
}

pub(crate) struct Owner {
    pub(crate) shared: Arc<PoolShared>,
    pub(crate) state: State,
    pub(crate) store: Store,
    pub(crate) disks: Disks,
    pub(crate) labels: Vec<MemberLabel>,
    pub(crate) vols: BTreeMap<VolId, Arc<VolumeShared>>,
    pub(crate) generation: u8,
    pub(crate) warned: bool,
    pub(crate) max_refs: u64,
    /// Control messages delivered by the task's inbox, oldest first.
    pub(crate) inbox: task::Inbox,
    /// Replies that did not fit in their channel's ring, retried every loop.
    pub(crate) stalled: Vec<(Arc<ChannelShared>, FaultReply)>,
    pub(crate) offline: Option<String>,
    /// The member the next allocation tries first (allocations rotate over the members).
    pub(crate) next_member: usize,
}

fn dev_name(d: &dyn BlockDevice) -> String {
    d.name().to_owned()
}

/// Reads and checks the label of `dev` on `disks` member `m`.
pub(crate) async fn read_label(
    disks: &mut Disks,
    m: usize,
) -> Result<Option<MemberLabel>, VolumeError> {
    let dev = Arc::clone(&disks.members[m].dev);
    if dev.num_blocks() * u64::from(dev.block_size()) < META_BLOCK as u64 {
        return Ok(None);
    }
    let block = disks.read(m, 0, META_BLOCK as u64).await?;
    match MemberLabel::decode(&block) {
        Ok(l) => Ok(Some(l)),
        Err(LabelError::NotAMember) => Ok(None),
        Err(e) => Err(VolumeError::DamagedLabel {
            device: dev_name(&*dev),
            reason: e.to_string(),
        }),
    }
}

impl Owner {
    /// Creates or opens the pool over `disks` (channels already open on this reactor).
    pub(crate) async fn init(
        init: Init,
        mut disks: Disks,
        waker: ferrite_reactor::ReactorWaker,
        inbox: task::Inbox,
    ) -> Result<Owner, VolumeError> {
        let devs: Vec<Arc<dyn BlockDevice>> =
            disks.members.iter().map(|m| Arc::clone(&m.dev)).collect();
        if devs.is_empty() {
            return Err(VolumeError::InvalidConfig(
                "a pool needs at least one member".into(),
            ));
        }
        let bs = devs[0].block_size();
        if let Some(d) = devs.iter().find(|d| d.block_size() != bs) {
            return Err(VolumeError::InvalidConfig(format!(
                "member {} has {}-byte blocks, {} has {bs}",
                d.name(),
                d.block_size(),
                devs[0].name()
            )));
        }
        let (labels, state, store, fresh) = match init {
            Init::Create { name, opts } => {
                let (labels, state, store) = create_layout(&mut disks, &name, opts).await?;
                (labels, state, store, true)
            }
            Init::Open => {
                let (labels, state, store) = open_layout(&mut disks).await?;
                (labels, state, store, false)
            }
        };
        // Members in label order from here on.
        let devs: Vec<Arc<dyn BlockDevice>> =
            disks.members.iter().map(|m| Arc::clone(&m.dev)).collect();
        let l0 = &labels[0];
        let shared = Arc::new(PoolShared {
            name: l0.pool_name.clone(),
            uuid: l0.pool_uuid,
            cluster_size: l0.cluster_size,
            block_size: bs,
            cluster_blocks: l0.cluster_size / u64::from(bs),
            members: labels
                .iter()
                .map(|l| MemberMap {
                    first: l.first_cluster,
                    count: l.data_clusters,
                    data_lba: l.data_start / u64::from(bs),
                })
                .collect(),
            devs,
            online: AtomicBool::new(true),
            owner: OnceLock::new(),
            waker,
            stop: AtomicBool::new(false),
            volumes: RwLock::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            warn_percent: AtomicU8::new(80),
            last_info: Mutex::new(None),
            hold_timeout_ns: AtomicU64::new(crate::HOLD_TIMEOUT.as_nanos() as u64),
            member_timeout_ns: AtomicU64::new(crate::disk::MEMBER_TIMEOUT.as_nanos() as u64),
            drain_waiting: AtomicBool::new(false),
            faults: ArrayQueue::new(crate::shared::FAULT_RING),
            kick: AtomicBool::new(false),
        });
        let max_refs = l0.max_refs;
        let mut owner = Owner {
            shared,
            state,
            store,
            disks,
            labels,
            vols: BTreeMap::new(),
            generation: 0,
            warned: false,
            max_refs,
            inbox,
            stalled: Vec::new(),
            offline: None,
            next_member: 0,
        };
        owner.next_member = owner.emptiest_member();
        if !fresh {
            // Reserved copy targets may hold partial copies from before a crash.
            let reserved: Vec<u64> = owner.state.reserved.iter().collect();
            if !reserved.is_empty() {
                owner
                    .commit(vec![Op::Unreserve { clusters: reserved }])
                    .await?;
            }
            while !owner.state.needs_zeroing.is_empty() {
                owner.zero_some().await?;
            }
        }
        let ids: Vec<VolId> = owner.state.volumes.keys().copied().collect();
        for id in ids {
            owner.make_volume(id);
        }
        Ok(owner)
    }

    // ---- publication and drains -------------------------------------------------------

    pub(crate) fn entry_for(&self, id: VolId, vc: u64) -> Entry {
        let pc = self
            .state
            .table(id)
            .get(vc as usize)
            .copied()
            .unwrap_or(NONE);
        if pc == NONE {
            return Entry::UNALLOCATED;
        }
        let read_only = self
            .state
            .volumes
            .get(&id)
            .is_some_and(|v| v.kind == VolumeKind::Snapshot);
        let state = if read_only || self.state.is_shared(pc) {
            EntryState::Shared(pc)
        } else {
            EntryState::Allocated(pc)
        };
        Entry::new(state, self.generation)
    }

    pub(crate) fn build_table(&self, id: VolId) -> MapTable {
        let rec = &self.state.volumes[&id];
        let len = self.state.clusters_for(rec.size);
        let t = MapTable::new(rec.size, self.shared.block_size, len);
        for vc in 0..len {
            t.set(vc, self.entry_for(id, vc));
        }
        t
    }

    /// Republishes every entry of `id` in place (or a new table when the size changed).
    pub(crate) fn publish_volume(&mut self, id: VolId) {
        self.generation = self.generation.wrapping_add(1);
        let Some(vs) = self.vols.get(&id) else { return };
        let cur = vs.table.load_full();
        let rec = &self.state.volumes[&id];
        if cur.size_bytes != rec.size || cur.len() != self.state.clusters_for(rec.size) {
            let t = self.build_table(id);
            self.vols[&id].table.store(Arc::new(t));
            return;
        }
        for vc in 0..cur.len() {
            cur.set(vc, self.entry_for(id, vc));
        }
    }

    pub(crate) fn publish_entry(&mut self, id: VolId, vc: u64) {
        if let Some(vs) = self.vols.get(&id) {
            vs.table.load().set(vc, self.entry_for(id, vc));
        }
    }

    /// Bumps the epoch of each volume, then waits until no request that could have seen the
    /// old entries of `ids` is in flight: event-driven (channels wake the owner's reactor as
    /// their requests leave; the reactor runs its other tasks meanwhile). A drain that
    /// outlasts the member timeout (a member that never answers) takes the pool offline
    /// instead of hanging it.
    pub(crate) async fn drain(&mut self, ids: &BTreeSet<VolId>) -> Result<(), VolumeError> {
        let mut waits: Vec<(Arc<VolumeShared>, usize)> = ids
            .iter()
            .filter_map(|id| self.vols.get(id))
            .map(|vs| (Arc::clone(vs), vs.bump_epoch()))
            .collect();
        let timeout = self.disks.timeout;
        let deadline = Instant::now() + timeout;
        let hub = Rc::clone(&self.disks.hub);
        let shared = Arc::clone(&self.shared);
        shared.drain_waiting.store(true, Ordering::SeqCst);
        let stuck = poll_fn(|_| {
            shared.kick.store(false, Ordering::SeqCst);
            waits.retain(|(vs, parity)| !vs.drained(*parity));
            match waits.first() {
                None => Poll::Ready(None),
                Some((vs, _)) if Instant::now() >= deadline => Poll::Ready(Some(vs.id)),
                Some(_) => {
                    hub.wake_at(deadline);
                    Poll::Pending
                }
            }
        })
        .await;
        shared.drain_waiting.store(false, Ordering::SeqCst);
        match stuck {
            Some(id) => Err(self.fatal(format!(
                "requests to volume {id} still in flight after {timeout:?} (a member does not answer)"
            ))),
            None => Ok(()),
        }
    }

    pub(crate) fn make_volume(&mut self, id: VolId) -> Arc<Volume> {
        let rec = self.state.volumes[&id].clone();
        let vs = Arc::new(VolumeShared {
            id,
            pool: Arc::clone(&self.shared),
            table: ArcSwap::from_pointee(self.build_table(id)),
            epoch: AtomicU64::new(0),
            channels: Mutex::new(Vec::new()),
            deleted: AtomicBool::new(false),
            read_only: rec.kind == VolumeKind::Snapshot,
            prov: rec.prov,
            uuid: rec.uuid,
            retired: Counters::default(),
            cow_copies: AtomicU64::new(0),
            last_info: Mutex::new(None),
        });
        self.vols.insert(id, Arc::clone(&vs));
        let v = Arc::new(Volume {
            bdev_name: format!("{}/{}", self.shared.name, rec.name),
            vol_name: rec.name.clone(),
            shared: vs,
        });
        self.shared
            .volumes
            .write()
            .expect("volume registry lock")
            .insert(rec.name, Arc::clone(&v));
        v
    }

    // ---- state changes ------------------------------------------------------------------

    /// Applies and logs a transaction. A failure here means memory and disk may disagree:
    /// the pool goes offline.
    pub(crate) async fn commit(&mut self, ops: Vec<Op>) -> Result<(), VolumeError> {
        self.apply(&ops)?;
        self.log(&ops).await
    }

    pub(crate) fn apply(&mut self, ops: &[Op]) -> Result<(), VolumeError> {
        for op in ops {
            if let Err(e) = self.state.apply(op) {
                return Err(self.fatal(format!("{e}")));
            }
        }
        Ok(())
    }

    pub(crate) async fn log(&mut self, ops: &[Op]) -> Result<(), VolumeError> {
        if let Err(e) = self.store.append(&mut self.disks, ops, &self.state).await {
            return Err(self.fatal(format!("metadata write failed: {e}")));
        }
        Ok(())
    }

    /// A member that did not answer in time takes the pool offline.
    pub(crate) fn check_hung(&mut self) {
        if self.offline.is_some() {
            return;
        }
        if let Some(m) = self.disks.members.iter().find(|m| m.hung) {
            let reason = format!(
                "member {} does not answer within {:?}",
                m.dev.name(),
                self.disks.timeout
            );
            self.fatal(reason);
        }
    }

    pub(crate) fn fatal(&mut self, reason: String) -> VolumeError {
        log::error!("pool {} goes offline: {reason}", self.shared.name);
        self.shared.online.store(false, Ordering::Release);
        self.shared.event(PoolEvent::Offline {
            pool: self.shared.name.clone(),
            reason: reason.clone(),
        });
        self.offline = Some(reason.clone());
        VolumeError::Metadata {
            pool: self.shared.name.clone(),
            reason,
        }
    }

    /// (member, byte offset) of physical cluster `pc`.
    pub(crate) fn cluster_at(&self, pc: u64) -> (usize, u64) {
        let (m, lba) = self.shared.locate(pc);
        (m, lba * u64::from(self.shared.block_size))
    }

    /// Zeroes up to `ZERO_BATCH` freed clusters and returns them to the free set.
    pub(crate) async fn zero_some(&mut self) -> Result<(), VolumeError> {
        let batch: Vec<u64> = self.state.needs_zeroing.iter().take(ZERO_BATCH).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let mut touched = BTreeSet::new();
        for &pc in &batch {
            let (m, off) = self.cluster_at(pc);
            self.disks.zero(m, off, self.shared.cluster_size).await?;
            touched.insert(m);
        }
        for m in touched {
            self.disks.flush(m).await?;
        }
        self.commit(vec![Op::ClustersZeroed { clusters: batch }])
            .await
    }

    /// A free cluster for a new mapping, zeroing freed ones first if that is all there is.
    pub(crate) async fn take_free(&mut self) -> Result<Option<u64>, VolumeError> {
        if self.state.free.is_empty() && !self.state.needs_zeroing.is_empty() {
            self.zero_some().await?;
        }
        Ok(self.pick_free())
    }

    /// The member with the largest share of free clusters (where allocation resumes after a
    /// reopen, so the rotation does not always restart at member 0).
    pub(crate) fn emptiest_member(&self) -> usize {
        let mut best = (0, 0.0f64);
        for (i, mm) in self.shared.members.iter().enumerate() {
            let free = (mm.first..mm.first + mm.count)
                .filter(|&c| self.state.free.contains(c))
                .count();
            let share = free as f64 / mm.count.max(1) as f64;
            if share > best.1 {
                best = (i, share);
            }
        }
        best.0
    }

    /// A free cluster, taking the members in turn so that a volume's clusters (and its I/O)
    /// spread over every member instead of filling member 0 first.
    pub(crate) fn pick_free(&mut self) -> Option<u64> {
        let n = self.shared.members.len();
        for k in 0..n {
            let m = (self.next_member + k) % n;
            let mm = self.shared.members[m];
            match self.state.free.first_from(mm.first) {
                Some(c) if c >= mm.first && c < mm.first + mm.count => {
                    self.next_member = (m + 1) % n;
                    return Some(c);
                }
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// Clusters available for allocation (free and soon free).
    pub(crate) fn available(&self) -> u64 {
        self.state.free.len() + self.state.needs_zeroing.len()
    }

    pub(crate) fn check_refs(&self, added: u64) -> Result<(), VolumeError> {
        if self.state.refs + added > self.max_refs {
            return Err(VolumeError::MetadataFull {
                pool: self.shared.name.clone(),
                refs: self.state.refs + added,
                max: self.max_refs,
            });
        }
        Ok(())
    }

    pub(crate) fn space_check(&mut self) {
        let total = self.state.total_clusters.max(1);
        let pct = (self.state.allocated * 100 / total) as u8;
        let threshold = self.shared.warn_percent.load(Ordering::Relaxed);
        if pct >= threshold && !self.warned {
            self.warned = true;
            self.shared.event(PoolEvent::SpaceWarning {
                pool: self.shared.name.clone(),
                used_percent: pct,
                threshold,
            });
        } else if pct < threshold {
            self.warned = false;
        }
    }

    /// Makes sure `n` copy targets are reserved (durably, before data is copied in).
    pub(crate) async fn reserve(&mut self, n: u64) -> Result<(), VolumeError> {
        let have = self.state.reserved.len();
        if have >= n {
            return Ok(());
        }
        let want = (n - have).max(RESERVE_BATCH);
        let mut clusters = Vec::new();
        while (clusters.len() as u64) < want {
            if self.state.free.len() <= clusters.len() as u64
                && !self.state.needs_zeroing.is_empty()
            {
                self.zero_some().await?;
            }
            let from = clusters.last().map_or(0, |&c| c + 1);
            match self.state.free.first_from(from) {
                Some(c) if !clusters.contains(&c) => clusters.push(c),
                _ => break,
            }
        }
        if !clusters.is_empty() {
            self.commit(vec![Op::Reserve { clusters }]).await?;
        }
        Ok(())
    }

    /// Copies cluster `old` into `target` (data flushed by the caller).
    pub(crate) async fn copy_cluster(
        &mut self,
        vol: VolId,
        old: u64,
        target: u64,
    ) -> Result<usize, VolumeError> {
        let (sm, so) = self.cluster_at(old);
        let (dm, d_o) = self.cluster_at(target);
        self.disks
            .copy((sm, so), (dm, d_o), self.shared.cluster_size)
            .await?;
        if let Some(vs) = self.vols.get(&vol) {
            vs.cow_copies.fetch_add(1, Ordering::Relaxed);
        }
        Ok(dm)
    }

    /// Gives each `(vol, vc)` (mapped to a shared cluster) its own copy. Returns the MapCluster
    /// ops (already applied, not yet logged) and the entries that could not be copied (no
    /// space). Data is flushed before returning.
    pub(crate) async fn copy_on_write(
        &mut self,
        cows: &[(VolId, u64)],
    ) -> Result<(Vec<Op>, Vec<VolCluster>), VolumeError> {
        if cows.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.reserve(cows.len() as u64).await?;
        let targets: Vec<u64> = self.state.reserved.iter().take(cows.len()).collect();
        let mut touched = BTreeSet::new();
        let mut ops = Vec::new();
        for (&(vol, vc), &target) in cows.iter().zip(&targets) {
            let old = self.state.table(vol)[vc as usize];
            touched.insert(self.copy_cluster(vol, old, target).await?);
            ops.push(Op::MapCluster {
                vol,
                vc,
                pc: target,
            });
        }
        for m in touched {
            self.disks.flush(m).await?;
        }
        self.apply(&ops)?;
        Ok((ops, cows[targets.len()..].to_vec()))
    }
}

impl Owner {
    pub(crate) async fn flush_members(&mut self) -> Result<(), VolumeError> {
        Ok(self.disks.flush_all().await?)
    }

    /// Drops a deleted volume from the registries (handles already given out stay, refusing
    /// I/O with NotReady).
    pub(crate) fn forget_volume(&mut self, id: VolId, name: &str) {
        self.vols.remove(&id);
        self.shared
            .volumes
            .write()
            .expect("volume registry lock")
            .remove(name);
    }
}
