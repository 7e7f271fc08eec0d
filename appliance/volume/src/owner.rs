//! The metadata owner: one thread per pool that owns the `State`, the metadata store and its
//! own channels to the members. It answers channel faults (group commit: everything pending
//! is applied and logged in one record), runs control-plane commands, zeroes freed clusters,
//! and drains channels (epoch bump + wait) before a cluster stops being usable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ferrite_bdev::BlockDevice;

use crate::disk::Disks;
use crate::entry::{Entry, EntryState, MapTable};
use crate::format::label::{LabelError, MemberLabel};
use crate::format::{round_up_block, META_BLOCK};
use crate::info::{PoolEvent, PoolOptions};
use crate::shared::{
    Cmd, Counters, Fault, FaultKind, FaultReply, MemberMap, Msg, PoolShared, Reply, ReplyError,
    VolumeShared,
};
use crate::state::{Op, State, NONE};
use crate::store::Store;
use crate::types::{cluster_size_valid, now_secs, random_uuid, VolId};
use crate::{Volume, VolumeError, VolumeKind};

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
    pub(crate) rx: mpsc::Receiver<Msg>,
    pub(crate) offline: Option<String>,
    /// The member the next allocation tries first (allocations rotate over the members).
    pub(crate) next_member: usize,
}

fn dev_name(d: &dyn BlockDevice) -> String {
    d.name().to_owned()
}

/// Reads and checks the label of `dev` on `disks` member `m`.
pub(crate) fn read_label(disks: &mut Disks, m: usize) -> Result<Option<MemberLabel>, VolumeError> {
    let dev = Arc::clone(&disks.members[m].dev);
    if dev.num_blocks() * u64::from(dev.block_size()) < META_BLOCK as u64 {
        return Ok(None);
    }
    let block = disks.read(m, 0, META_BLOCK as u64)?;
    match MemberLabel::decode(&block) {
        Ok(l) => Ok(Some(l)),
        Err(LabelError::NotAMember) => Ok(None),
        Err(e) => Err(VolumeError::DamagedLabel {
            device: dev_name(&*dev),
            reason: e.to_string(),
        }),
    }
}

/// Starts the owner thread; returns once the pool is created or opened (or refused).
pub(crate) fn spawn(
    init: Init,
    devs: Vec<Arc<dyn BlockDevice>>,
) -> Result<(Arc<PoolShared>, std::thread::JoinHandle<()>), VolumeError> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name("volume-owner".into())
        .spawn(move || {
            let owner = match Owner::init(init, devs, tx, rx) {
                Ok(o) => o,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(Arc::clone(&owner.shared)));
            owner.run();
        })
        .map_err(|e| VolumeError::InvalidConfig(format!("cannot start the owner thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(shared)) => Ok((shared, handle)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(VolumeError::InvalidConfig(
                "the owner thread died while starting".into(),
            ))
        }
    }
}

impl Owner {
    pub(crate) fn init(
        init: Init,
        devs: Vec<Arc<dyn BlockDevice>>,
        tx: mpsc::Sender<Msg>,
        rx: mpsc::Receiver<Msg>,
    ) -> Result<Owner, VolumeError> {
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
        let mut disks = Disks::open(&devs)?;
        let (labels, state, store, fresh) = match init {
            Init::Create { name, opts } => {
                let (labels, state, store) = create_layout(&mut disks, &name, opts)?;
                (labels, state, store, true)
            }
            Init::Open => {
                let (labels, state, store) = open_layout(&mut disks)?;
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
            tx,
            volumes: RwLock::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            warn_percent: AtomicU8::new(80),
            last_info: Mutex::new(None),
            hold_timeout_ns: AtomicU64::new(crate::HOLD_TIMEOUT.as_nanos() as u64),
            member_timeout_ns: AtomicU64::new(crate::disk::MEMBER_TIMEOUT.as_nanos() as u64),
            owner_thread: std::thread::current(),
            drain_waiting: AtomicBool::new(false),
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
            rx,
            offline: None,
            next_member: 0,
        };
        owner.next_member = owner.emptiest_member();
        if !fresh {
            // Reserved copy targets may hold partial copies from before a crash.
            let reserved: Vec<u64> = owner.state.reserved.iter().collect();
            if !reserved.is_empty() {
                owner.commit(vec![Op::Unreserve { clusters: reserved }])?;
            }
            while !owner.state.needs_zeroing.is_empty() {
                owner.zero_some()?;
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

    /// Bumps the epoch of each volume and waits until no channel has a request in flight
    /// that started before (and may use entries published before) the bump.
    /// Waits until no request that could have seen the old entries of `ids` is in flight:
    /// parked, woken by the channels as their requests leave. A drain that outlasts the member
    /// timeout (a member that never answers) takes the pool offline instead of hanging it.
    pub(crate) fn drain(&mut self, ids: &BTreeSet<VolId>) -> Result<(), VolumeError> {
        let waits: Vec<(Arc<VolumeShared>, usize)> = ids
            .iter()
            .filter_map(|id| self.vols.get(id))
            .map(|vs| (Arc::clone(vs), vs.bump_epoch()))
            .collect();
        let timeout = self.disks.timeout;
        let deadline = Instant::now() + timeout;
        self.shared.drain_waiting.store(true, Ordering::SeqCst);
        let mut stuck = None;
        'volumes: for (vs, parity) in waits {
            while !vs.drained(parity) {
                let now = Instant::now();
                if now >= deadline {
                    stuck = Some(vs.id);
                    break 'volumes;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
        self.shared.drain_waiting.store(false, Ordering::SeqCst);
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
    pub(crate) fn commit(&mut self, ops: Vec<Op>) -> Result<(), VolumeError> {
        self.apply(&ops)?;
        self.log(&ops)
    }

    pub(crate) fn apply(&mut self, ops: &[Op]) -> Result<(), VolumeError> {
        for op in ops {
            if let Err(e) = self.state.apply(op) {
                return Err(self.fatal(format!("{e}")));
            }
        }
        Ok(())
    }

    pub(crate) fn log(&mut self, ops: &[Op]) -> Result<(), VolumeError> {
        if let Err(e) = self.store.append(&mut self.disks, ops, &self.state) {
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
    pub(crate) fn zero_some(&mut self) -> Result<(), VolumeError> {
        let batch: Vec<u64> = self.state.needs_zeroing.iter().take(ZERO_BATCH).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let mut touched = BTreeSet::new();
        for &pc in &batch {
            let (m, off) = self.cluster_at(pc);
            self.disks.zero(m, off, self.shared.cluster_size)?;
            touched.insert(m);
        }
        for m in touched {
            self.disks.flush(m)?;
        }
        self.commit(vec![Op::ClustersZeroed { clusters: batch }])
    }

    /// A free cluster for a new mapping, zeroing freed ones first if that is all there is.
    pub(crate) fn take_free(&mut self) -> Result<Option<u64>, VolumeError> {
        if self.state.free.is_empty() && !self.state.needs_zeroing.is_empty() {
            self.zero_some()?;
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
    pub(crate) fn reserve(&mut self, n: u64) -> Result<(), VolumeError> {
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
                self.zero_some()?;
            }
            let from = clusters.last().map_or(0, |&c| c + 1);
            match self.state.free.first_from(from) {
                Some(c) if !clusters.contains(&c) => clusters.push(c),
                _ => break,
            }
        }
        if !clusters.is_empty() {
            self.commit(vec![Op::Reserve { clusters }])?;
        }
        Ok(())
    }

    /// Copies cluster `old` into `target` (data flushed by the caller).
    pub(crate) fn copy_cluster(
        &mut self,
        vol: VolId,
        old: u64,
        target: u64,
    ) -> Result<usize, VolumeError> {
        let (sm, so) = self.cluster_at(old);
        let (dm, d_o) = self.cluster_at(target);
        self.disks
            .copy((sm, so), (dm, d_o), self.shared.cluster_size)?;
        if let Some(vs) = self.vols.get(&vol) {
            vs.cow_copies.fetch_add(1, Ordering::Relaxed);
        }
        Ok(dm)
    }

    /// Gives each `(vol, vc)` (mapped to a shared cluster) its own copy. Returns the MapCluster
    /// ops (already applied, not yet logged) and the entries that could not be copied (no
    /// space). Data is flushed before returning.
    pub(crate) fn copy_on_write(
        &mut self,
        cows: &[(VolId, u64)],
    ) -> Result<(Vec<Op>, Vec<VolCluster>), VolumeError> {
        if cows.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.reserve(cows.len() as u64)?;
        let targets: Vec<u64> = self.state.reserved.iter().take(cows.len()).collect();
        let mut touched = BTreeSet::new();
        let mut ops = Vec::new();
        for (&(vol, vc), &target) in cows.iter().zip(&targets) {
            let old = self.state.table(vol)[vc as usize];
            touched.insert(self.copy_cluster(vol, old, target)?);
            ops.push(Op::MapCluster {
                vol,
                vc,
                pc: target,
            });
        }
        for m in touched {
            self.disks.flush(m)?;
        }
        self.apply(&ops)?;
        Ok((ops, cows[targets.len()..].to_vec()))
    }
}

// ---- faults ---------------------------------------------------------------------------------

impl Owner {
    pub(crate) fn handle_faults(&mut self, faults: Vec<Fault>) -> Result<(), VolumeError> {
        // Coalesce: one resolution per (volume, cluster, kind), answered to every asker.
        let mut groups: BTreeMap<(VolId, u64, FaultKind), Vec<Fault>> = BTreeMap::new();
        for f in faults {
            groups.entry((f.vol, f.vc, f.kind)).or_default().push(f);
        }
        let mut results: BTreeMap<(VolId, u64, FaultKind), Result<(), ReplyError>> =
            BTreeMap::new();
        let mut ops = Vec::new();
        let mut cows = Vec::new();
        let mut publish = Vec::new();
        let mut drain = BTreeSet::new();
        let mut full_for = None;
        for &(vol, vc, kind) in groups.keys() {
            let key = (vol, vc, kind);
            let Some(rec) = self.state.volumes.get(&vol) else {
                results.insert(key, Err(ReplyError::NotReady));
                continue;
            };
            let len = self.state.table(vol).len() as u64;
            if rec.kind == VolumeKind::Snapshot {
                results.insert(key, Err(ReplyError::ReadOnly));
                continue;
            }
            if vc >= len {
                // Shrunk meanwhile: the retry reports the range error.
                results.insert(key, Ok(()));
                continue;
            }
            let pc = self.state.table(vol)[vc as usize];
            match kind {
                FaultKind::Write => {
                    if pc == NONE {
                        match self.take_free()? {
                            Some(new) => {
                                let op = Op::MapCluster { vol, vc, pc: new };
                                self.apply(std::slice::from_ref(&op))?;
                                ops.push(op);
                                publish.push((vol, vc));
                                results.insert(key, Ok(()));
                            }
                            None => {
                                full_for.get_or_insert(vol);
                                results.insert(key, Err(ReplyError::NoSpace));
                            }
                        }
                    } else if self.state.is_shared(pc) {
                        cows.push((vol, vc));
                    } else {
                        // Stale entry (the last sharer went): just republish.
                        publish.push((vol, vc));
                        results.insert(key, Ok(()));
                    }
                }
                FaultKind::Unmap => {
                    if pc != NONE {
                        let op = Op::UnmapCluster { vol, vc };
                        self.apply(std::slice::from_ref(&op))?;
                        ops.push(op);
                        drain.insert(vol);
                    }
                    results.insert(key, Ok(()));
                }
                FaultKind::CopyFrom(src) => {
                    let spc = self
                        .state
                        .table(vol)
                        .get(src as usize)
                        .copied()
                        .unwrap_or(NONE);
                    let op = if spc == NONE {
                        (pc != NONE).then_some(Op::UnmapCluster { vol, vc })
                    } else if spc == pc {
                        None
                    } else if self.state.refs < self.max_refs {
                        Some(Op::MapCluster { vol, vc, pc: spc })
                    } else {
                        // No room to record one more reference: emulate in the channel.
                        None
                    };
                    if let Some(op) = op {
                        self.apply(std::slice::from_ref(&op))?;
                        ops.push(op);
                        drain.insert(vol);
                    }
                    results.insert(key, Ok(()));
                }
            }
        }
        let (cow_ops, no_room) = self.copy_on_write(&cows)?;
        for &(vol, vc) in &cows {
            let ok = !no_room.contains(&(vol, vc));
            if !ok {
                full_for.get_or_insert(vol);
            }
            publish.push((vol, vc));
            results.insert(
                (vol, vc, FaultKind::Write),
                if ok { Ok(()) } else { Err(ReplyError::NoSpace) },
            );
        }
        ops.extend(cow_ops);
        self.log(&ops)?;
        for (vol, vc) in publish {
            self.publish_entry(vol, vc);
        }
        // Metadata unmaps/remaps change entries other than the faulting one (sharing).
        let ids: Vec<VolId> = drain.iter().copied().collect();
        for id in ids {
            self.publish_volume(id);
        }
        if !drain.is_empty() {
            self.drain(&drain)?;
        }
        if let Some(vol) = full_for {
            let volume = self
                .state
                .volumes
                .get(&vol)
                .map_or_else(String::new, |v| v.name.clone());
            self.shared.event(PoolEvent::PoolFull {
                pool: self.shared.name.clone(),
                volume,
            });
        }
        self.space_check();
        for (key, fs) in groups {
            let result = results
                .get(&key)
                .copied()
                .unwrap_or(Err(ReplyError::NotReady));
            for f in fs {
                f.chan.reply(FaultReply {
                    token: f.token,
                    result,
                });
            }
        }
        Ok(())
    }

    // ---- the loop ---------------------------------------------------------------------------

    pub(crate) fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut msgs: Vec<Msg> = first.into_iter().collect();
            while msgs.len() < 4096 {
                match self.rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            self.disks.timeout =
                Duration::from_nanos(self.shared.member_timeout_ns.load(Ordering::Relaxed));
            let mut faults = Vec::new();
            let mut rest = Vec::new();
            for m in msgs {
                match m {
                    Msg::Fault(f) => faults.push(f),
                    other => rest.push(other),
                }
            }
            if self.offline.is_some() {
                if self.refuse(faults, rest) {
                    return self.stop();
                }
                continue;
            }
            if !faults.is_empty() {
                let askers: Vec<_> = faults
                    .iter()
                    .map(|f| (Arc::clone(&f.chan), f.token))
                    .collect();
                let r = self.handle_faults(faults);
                self.check_hung();
                if let Err(e) = r {
                    // Nothing was answered yet: fail the held requests, keep serving.
                    log::error!("pool {}: fault handling failed: {e}", self.shared.name);
                    let result = Err(if self.offline.is_some() {
                        ReplyError::NotReady
                    } else {
                        ReplyError::Io(libc::EIO)
                    });
                    for (chan, token) in askers {
                        chan.reply(FaultReply { token, result });
                    }
                }
            }
            for m in rest {
                match m {
                    Msg::Cmd(Cmd::Close, reply) => {
                        let r = self.close();
                        let _ = reply.send(r.map(|()| Reply::Done));
                        return self.stop();
                    }
                    Msg::Cmd(Cmd::Destroy { force }, reply) => {
                        let r = self.destroy(force);
                        let ok = r.is_ok();
                        let _ = reply.send(r.map(|()| Reply::Done));
                        if ok {
                            return self.stop();
                        }
                    }
                    Msg::Cmd(cmd, reply) => {
                        let r = if self.offline.is_some() {
                            Err(self.offline_err())
                        } else {
                            self.command(cmd)
                        };
                        self.check_hung();
                        let _ = reply.send(r);
                    }
                    Msg::Stop => return self.stop(),
                    Msg::MemberError {
                        vol,
                        member,
                        errors,
                        error,
                    } => self.member_error(vol, member, errors, error),
                    Msg::Fault(_) => {}
                }
            }
            if self.offline.is_none() && !self.state.needs_zeroing.is_empty() {
                if let Err(e) = self.zero_some() {
                    log::error!(
                        "pool {}: zeroing freed clusters failed: {e}",
                        self.shared.name
                    );
                }
            }
        }
    }

    /// Raises (and logs) an event for failed member I/O reported by a channel.
    pub(crate) fn member_error(&mut self, vol: VolId, member: usize, errors: u64, error: String) {
        let device = self
            .shared
            .devs
            .get(member)
            .map_or_else(|| format!("member {member}"), |d| d.name().to_owned());
        let volume = self
            .state
            .volumes
            .get(&vol)
            .map_or_else(|| format!("volume {vol}"), |v| v.name.clone());
        self.shared.event(PoolEvent::MemberIoError {
            pool: self.shared.name.clone(),
            device,
            volume,
            errors,
            error,
        });
    }

    pub(crate) fn offline_err(&self) -> VolumeError {
        VolumeError::Offline {
            pool: self.shared.name.clone(),
        }
    }

    /// Answers what an offline pool cannot do; true when the pool is told to stop (dropping
    /// an offline pool must not hang).
    pub(crate) fn refuse(&mut self, faults: Vec<Fault>, rest: Vec<Msg>) -> bool {
        let mut stop = false;
        for f in faults {
            f.chan.reply(FaultReply {
                token: f.token,
                result: Err(ReplyError::NotReady),
            });
        }
        for m in rest {
            match m {
                Msg::Cmd(Cmd::Info, reply) => {
                    let _ = reply.send(Ok(Reply::Info(Box::new(self.info()))));
                }
                Msg::Cmd(_, reply) => {
                    let _ = reply.send(Err(self.offline_err()));
                }
                Msg::MemberError {
                    vol,
                    member,
                    errors,
                    error,
                } => self.member_error(vol, member, errors, error),
                Msg::Stop => stop = true,
                Msg::Fault(_) => {}
            }
        }
        stop
    }

    /// Stops serving: volumes return NotReady; queued faults are answered NotReady.
    pub(crate) fn stop(self) {
        self.shared.online.store(false, Ordering::Release);
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Fault(f) => f.chan.reply(FaultReply {
                    token: f.token,
                    result: Err(ReplyError::NotReady),
                }),
                Msg::Cmd(_, reply) => {
                    let _ = reply.send(Err(VolumeError::Offline {
                        pool: self.shared.name.clone(),
                    }));
                }
                Msg::Stop | Msg::MemberError { .. } => {}
            }
        }
        log::info!("pool {}: owner stopped", self.shared.name);
    }

    pub(crate) fn close(&mut self) -> Result<(), VolumeError> {
        while !self.state.needs_zeroing.is_empty() {
            self.zero_some()?;
        }
        self.disks.flush_all()?;
        self.store.checkpoint(&mut self.disks, &self.state)?;
        log::info!(
            "pool {}: closed at seq {}",
            self.shared.name,
            self.store.seq
        );
        Ok(())
    }

    pub(crate) fn destroy(&mut self, force: bool) -> Result<(), VolumeError> {
        if !force && !self.state.volumes.is_empty() {
            return Err(VolumeError::NotEmpty {
                pool: self.shared.name.clone(),
                volumes: self.state.volumes.len(),
            });
        }
        for vs in self.vols.values() {
            vs.deleted.store(true, Ordering::Release);
        }
        let all: BTreeSet<VolId> = self.vols.keys().copied().collect();
        self.drain(&all)?;
        let zero = vec![0u8; META_BLOCK];
        for m in 0..self.disks.members.len() {
            self.disks.write(m, 0, &zero)?;
            self.disks.flush(m)?;
        }
        self.shared
            .volumes
            .write()
            .expect("volume registry lock")
            .clear();
        log::info!("pool {} destroyed", self.shared.name);
        Ok(())
    }
}

// ---- creation and opening -------------------------------------------------------------------

fn create_layout(
    disks: &mut Disks,
    name: &str,
    opts: PoolOptions,
) -> Result<(Vec<MemberLabel>, State, Store), VolumeError> {
    crate::types::check_name(name).map_err(|reason| VolumeError::InvalidName {
        name: name.into(),
        reason,
    })?;
    let bs = disks.members[0].bs;
    let cs = opts.cluster_size;
    if !cluster_size_valid(cs, bs as u32) {
        return Err(VolumeError::InvalidConfig(format!(
            "cluster size {cs} must be a power of two from 64 KiB to 64 MiB and at least the block size {bs}"
        )));
    }
    for m in 0..disks.members.len() {
        if let Ok(Some(l)) = read_label(disks, m) {
            return Err(VolumeError::InUse {
                device: disks.members[m].dev.name().into(),
                pool: l.pool_name,
            });
        }
    }
    let sizes: Vec<u64> = disks
        .members
        .iter()
        .map(|m| m.dev.num_blocks() * m.bs)
        .collect();
    let align = cs.min(1 << 20);
    let est: u64 = sizes
        .iter()
        .map(|s| s.saturating_sub(META_BLOCK as u64) / cs)
        .sum();
    let max_refs_est = est.max(1) * REFS_PER_CLUSTER;
    let slot = round_up_block(64 * 1024 + max_refs_est * 20 + est * 10).max(SLOT_FLOOR);
    let log = slot.clamp(LOG_FLOOR, LOG_CEIL);
    let meta_end = META_BLOCK as u64 + 2 * slot + log;
    let pool_uuid = random_uuid();
    let created = now_secs();
    let mut labels = Vec::new();
    let mut first = 0;
    let count = disks.members.len() as u32;
    for (i, &size) in sizes.iter().enumerate() {
        let data_start = if i == 0 { meta_end } else { META_BLOCK as u64 }.div_ceil(align) * align;
        let clusters = size.saturating_sub(data_start) / cs;
        if clusters == 0 {
            return Err(VolumeError::TooSmall {
                device: disks.members[i].dev.name().into(),
                size,
                needed: data_start + cs,
            });
        }
        let (slot_offset, slot_size, log_offset, log_size) = if i == 0 {
            (META_BLOCK as u64, slot, META_BLOCK as u64 + 2 * slot, log)
        } else {
            (0, 0, 0, 0)
        };
        labels.push(MemberLabel {
            pool_name: name.into(),
            pool_uuid,
            member_index: i as u32,
            member_count: count,
            member_uuid: random_uuid(),
            member_size: size,
            block_size: bs as u32,
            cluster_size: cs,
            data_start,
            data_clusters: clusters,
            first_cluster: first,
            slot_offset,
            slot_size,
            log_offset,
            log_size,
            max_refs: 0,
            created,
        });
        first += clusters;
    }
    if first > crate::entry::MAX_PCLUSTER {
        return Err(VolumeError::InvalidConfig(format!(
            "{first} clusters is too many; use larger clusters"
        )));
    }
    for l in &mut labels {
        l.max_refs = first * REFS_PER_CLUSTER;
    }
    // Free clusters always read zero: zero the whole data area once.
    for (m, l) in labels.iter().enumerate() {
        disks.zero(m, l.data_start, l.data_clusters * cs)?;
    }
    disks.flush_all()?;
    let state = State::new(cs, first);
    let store = Store::format(disks, &labels[0], &state)?;
    // Labels last: a pool half-created is not a pool.
    for (m, l) in labels.iter().enumerate() {
        disks.write(m, 0, &l.encode())?;
    }
    disks.flush_all()?;
    log::info!(
        "pool {name} created: {} members, {first} clusters of {cs} bytes",
        labels.len()
    );
    Ok((labels, state, store))
}

fn open_layout(disks: &mut Disks) -> Result<(Vec<MemberLabel>, State, Store), VolumeError> {
    let mut labels = Vec::new();
    for m in 0..disks.members.len() {
        let dev = Arc::clone(&disks.members[m].dev);
        let device = dev.name().to_owned();
        let size = dev.num_blocks() * u64::from(dev.block_size());
        let l = match read_label(disks, m)? {
            Some(l) => l,
            None => {
                return Err(VolumeError::DamagedLabel {
                    device,
                    reason: LabelError::NotAMember.to_string(),
                })
            }
        };
        if l.member_size > size {
            return Err(VolumeError::DamagedLabel {
                device,
                reason: format!(
                    "size mismatch: label says {} bytes, device has {size}",
                    l.member_size
                ),
            });
        }
        if l.block_size != dev.block_size() {
            return Err(VolumeError::DamagedLabel {
                device,
                reason: format!(
                    "block size mismatch: label {}, device {}",
                    l.block_size,
                    dev.block_size()
                ),
            });
        }
        labels.push((l, m));
    }
    let pool = labels[0].0.pool_name.clone();
    let bad = |reason: String| VolumeError::BadMembers {
        pool: pool.clone(),
        reason,
    };
    let uuid = labels[0].0.pool_uuid;
    let dev_of = |m: usize| disks.members[m].dev.name().to_owned();
    if let Some((l, m)) = labels.iter().find(|(l, _)| l.pool_uuid != uuid) {
        let (l0, m0) = &labels[0];
        return Err(bad(format!(
            "{} belongs to pool {} ({}), {} to pool {} ({})",
            dev_of(*m),
            l.pool_name,
            crate::uuid_string(&l.pool_uuid),
            dev_of(*m0),
            l0.pool_name,
            crate::uuid_string(&l0.pool_uuid)
        )));
    }
    let count = labels[0].0.member_count as usize;
    if let Some((l, m)) = labels
        .iter()
        .find(|(l, _)| l.member_count as usize != count)
    {
        return Err(bad(format!(
            "{} says the pool has {} members, {} says {count}",
            dev_of(*m),
            l.member_count,
            dev_of(labels[0].1)
        )));
    }
    labels.sort_by_key(|(l, _)| l.member_index);
    for w in labels.windows(2) {
        if w[0].0.member_index == w[1].0.member_index {
            let (a, b) = (dev_of(w[0].1), dev_of(w[1].1));
            let what = if Arc::ptr_eq(&disks.members[w[0].1].dev, &disks.members[w[1].1].dev) {
                format!("device {a} is given twice")
            } else {
                format!("{a} and {b} both carry member {}", w[0].0.member_index)
            };
            return Err(bad(what));
        }
    }
    let have: BTreeSet<u32> = labels.iter().map(|(l, _)| l.member_index).collect();
    if let Some((l, m)) = labels
        .iter()
        .find(|(l, _)| l.member_index as usize >= count)
    {
        return Err(bad(format!(
            "{} carries member index {} of a {count}-member pool",
            dev_of(*m),
            l.member_index
        )));
    }
    let missing: Vec<u32> = (0..count as u32).filter(|i| !have.contains(i)).collect();
    if !missing.is_empty() {
        let given: Vec<String> = labels
            .iter()
            .map(|(l, m)| format!("{} is member {}", dev_of(*m), l.member_index))
            .collect();
        return Err(bad(format!(
            "member(s) {missing:?} of {count} missing ({})",
            given.join(", ")
        )));
    }
    // Reorder the member channels to label order.
    let order: Vec<usize> = labels.iter().map(|(_, m)| *m).collect();
    let mut slots: Vec<Option<crate::disk::Member>> = disks.members.drain(..).map(Some).collect();
    for m in order {
        disks
            .members
            .push(slots[m].take().expect("each member once"));
    }
    let labels: Vec<MemberLabel> = labels.into_iter().map(|(l, _)| l).collect();
    let total: u64 = labels.iter().map(|l| l.data_clusters).sum();
    let loaded = Store::load(disks, &labels[0], total)?;
    let st = &loaded.state;
    if st.total_clusters != total || st.cluster_size != labels[0].cluster_size {
        return Err(VolumeError::Metadata {
            pool,
            reason: format!(
                "state has {} clusters of {}, labels say {total} of {}",
                st.total_clusters, st.cluster_size, labels[0].cluster_size
            ),
        });
    }
    let errors = st.check();
    if !errors.is_empty() {
        return Err(VolumeError::Inconsistent { pool, errors });
    }
    Ok((labels, loaded.state, loaded.store))
}

impl Owner {
    pub(crate) fn flush_members(&mut self) -> Result<(), VolumeError> {
        Ok(self.disks.flush_all()?)
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
