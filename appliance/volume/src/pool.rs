//! The public pool handle: every call is a message to the owner thread.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ferrite_bdev::BlockDevice;

use ferrite_bdev::IoKind;
use ferrite_reactor::IoBuf;

use crate::format::label::{LabelError, MemberLabel};
use crate::format::META_BLOCK;
use crate::info::{CheckReport, PoolEvent, PoolInfo, PoolOptions};
use crate::owner::{self, Init};
use crate::shared::{Cmd, Msg, PoolShared, Reply};
use crate::{Provisioning, Volume, VolumeError};

/// A storage pool. `Send + Sync`; owns the metadata owner thread. Dropping the last handle
/// without `close` stops the owner at once without a checkpoint (as a crash would; the log
/// makes that safe).
pub struct Pool {
    shared: Arc<PoolShared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl Pool {
    fn start(init: Init, members: Vec<Arc<dyn BlockDevice>>) -> Result<Arc<Pool>, VolumeError> {
        let (shared, thread) = owner::spawn(init, members)?;
        Ok(Arc::new(Pool {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Creates a pool over blank devices (all with the same block size); zeroes the data area.
    pub fn create(
        name: &str,
        members: Vec<Arc<dyn BlockDevice>>,
        opts: PoolOptions,
    ) -> Result<Arc<Pool>, VolumeError> {
        Self::start(
            Init::Create {
                name: name.into(),
                opts,
            },
            members,
        )
    }

    /// Opens an existing pool: `members` in any order (matched by the member labels).
    pub fn open(members: Vec<Arc<dyn BlockDevice>>) -> Result<Arc<Pool>, VolumeError> {
        Self::start(Init::Open, members)
    }

    /// What is on a device: Ok(None) blank (no label), Ok(Some(label)) a member of a pool,
    /// Err(..) a damaged label (names the problem).
    pub fn probe(dev: &dyn BlockDevice) -> Result<Option<MemberLabel>, VolumeError> {
        let bs = u64::from(dev.block_size());
        if dev.num_blocks() * bs < META_BLOCK as u64 {
            return Ok(None);
        }
        let mut ch = dev.open_channel(&[])?;
        let kind = IoKind::Read {
            lba: 0,
            blocks: (META_BLOCK as u64 / bs) as u32,
        };
        let buf = crate::disk::run(
            &mut *ch,
            kind,
            Some(IoBuf::new(META_BLOCK)),
            crate::disk::MEMBER_TIMEOUT,
        )?
        .expect("reads return their buffer");
        match MemberLabel::decode(buf.as_slice()) {
            Ok(l) => Ok(Some(l)),
            Err(LabelError::NotAMember) => Ok(None),
            Err(e) => Err(VolumeError::DamagedLabel {
                device: dev.name().into(),
                reason: e.to_string(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn uuid(&self) -> [u8; 16] {
        self.shared.uuid
    }

    fn call(&self, cmd: Cmd) -> Result<Reply, VolumeError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let offline = || VolumeError::Offline {
            pool: self.shared.name.clone(),
        };
        if !self.shared.send(Msg::Cmd(cmd, tx)) {
            return Err(offline());
        }
        rx.recv().map_err(|_| offline())?
    }

    fn volumes_of(r: Reply) -> Vec<Arc<Volume>> {
        match r {
            Reply::Volumes(v) => v,
            _ => Vec::new(),
        }
    }

    fn one(r: Result<Reply, VolumeError>) -> Result<Arc<Volume>, VolumeError> {
        Self::volumes_of(r?)
            .pop()
            .ok_or_else(|| VolumeError::InvalidConfig("owner answered without a volume".into()))
    }

    /// Space, members, counts (the last known answer when the pool is offline).
    pub fn info(&self) -> PoolInfo {
        if let Ok(Reply::Info(i)) = self.call(Cmd::Info) {
            *self.shared.last_info.lock().expect("info lock") = Some((*i).clone());
            return *i;
        }
        let mut last = self
            .shared
            .last_info
            .lock()
            .expect("info lock")
            .clone()
            .unwrap_or_else(|| PoolInfo {
                name: self.shared.name.clone(),
                uuid: crate::uuid_string(&self.shared.uuid),
                cluster_size: self.shared.cluster_size,
                block_size: self.shared.block_size,
                members: Vec::new(),
                total_clusters: 0,
                allocated_clusters: 0,
                free_clusters: 0,
                shared_clusters: 0,
                zeroing_clusters: 0,
                provisioned_bytes: 0,
                overcommit_ratio: 0.0,
                warning_percent: self.shared.warn_percent.load(Ordering::Relaxed),
                volumes: 0,
                snapshots: 0,
                metadata_refs: 0,
                metadata_max_refs: 0,
                log_seq: 0,
                online: false,
            });
        last.online = false;
        last
    }

    /// Consistency check (read-only): the state invariants and the published tables.
    pub fn check(&self) -> Result<CheckReport, VolumeError> {
        match self.call(Cmd::Check)? {
            Reply::Check(r) => Ok(r),
            _ => Err(VolumeError::InvalidConfig("unexpected answer".into())),
        }
    }

    /// The extents of `target` that differ from snapshot `base` (from the cluster tables; no
    /// data is read).
    pub fn diff(&self, base: &str, target: &str) -> Result<crate::VolumeDiff, VolumeError> {
        match self.call(Cmd::Diff {
            base: base.into(),
            target: target.into(),
        })? {
            Reply::Diff(d) => Ok(*d),
            _ => Err(VolumeError::InvalidConfig("unexpected answer".into())),
        }
    }

    fn join(&self) {
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }

    /// Writes a checkpoint and stops the owner thread; every volume returns NotReady afterwards.
    pub fn close(&self) -> Result<(), VolumeError> {
        let r = self.call(Cmd::Close).map(|_| ());
        self.join();
        r
    }

    /// Erases the member labels (the pool is gone); refused while volumes exist unless `force`.
    pub fn destroy(&self, force: bool) -> Result<(), VolumeError> {
        self.call(Cmd::Destroy { force })?;
        self.join();
        Ok(())
    }

    pub fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        prov: Provisioning,
    ) -> Result<Arc<Volume>, VolumeError> {
        Self::one(self.call(Cmd::Create {
            name: name.into(),
            size: size_bytes,
            prov,
        }))
    }

    /// Volumes, clones and snapshots by name.
    pub fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        self.shared
            .volumes
            .read()
            .expect("volume registry lock")
            .get(name)
            .cloned()
    }

    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        self.shared
            .volumes
            .read()
            .expect("volume registry lock")
            .values()
            .cloned()
            .collect()
    }

    /// Online; shrinking below clusters that hold data is refused unless `force`.
    pub fn resize_volume(
        &self,
        name: &str,
        size_bytes: u64,
        force: bool,
    ) -> Result<(), VolumeError> {
        self.call(Cmd::Resize {
            name: name.into(),
            size: size_bytes,
            force,
        })
        .map(|_| ())
    }

    /// Handles given out before keep the old bdev name; `volume(new_name)` has the new one.
    pub fn rename_volume(&self, name: &str, new_name: &str) -> Result<(), VolumeError> {
        self.call(Cmd::Rename {
            name: name.into(),
            new_name: new_name.into(),
        })
        .map(|_| ())
    }

    /// Volumes, clones and snapshots. A snapshot with clones is deleted too: its references
    /// go, the clones keep the clusters they share (refcounts), nothing is copied.
    pub fn delete_volume(&self, name: &str) -> Result<(), VolumeError> {
        self.call(Cmd::Delete { name: name.into() }).map(|_| ())
    }

    /// Gives a clone its own copy of every cluster it shares; it no longer depends on its
    /// snapshot.
    pub fn inflate_volume(&self, name: &str) -> Result<(), VolumeError> {
        self.call(Cmd::Inflate { name: name.into() }).map(|_| ())
    }

    pub fn snapshot(&self, volume: &str, snapshot: &str) -> Result<Arc<Volume>, VolumeError> {
        Self::one(self.call(Cmd::Snapshot {
            pairs: vec![(volume.into(), snapshot.into())],
        }))
    }

    /// One instant for all: writes to all of them are drained together, one log record.
    pub fn group_snapshot(
        &self,
        pairs: &[(String, String)],
    ) -> Result<Vec<Arc<Volume>>, VolumeError> {
        self.call(Cmd::Snapshot {
            pairs: pairs.to_vec(),
        })
        .map(Self::volumes_of)
    }

    pub fn clone_snapshot(&self, snapshot: &str, clone: &str) -> Result<Arc<Volume>, VolumeError> {
        Self::one(self.call(Cmd::Clone {
            snapshot: snapshot.into(),
            name: clone.into(),
        }))
    }

    /// In place: the volume's content (and size) become the snapshot's.
    pub fn revert_volume(&self, volume: &str, snapshot: &str) -> Result<(), VolumeError> {
        self.call(Cmd::Revert {
            volume: volume.into(),
            snapshot: snapshot.into(),
        })
        .map(|_| ())
    }

    /// Percent of pool clusters allocated above which a warning event is raised (default 80).
    pub fn set_space_warning(&self, percent: u8) {
        self.shared
            .warn_percent
            .store(percent.min(100), Ordering::Relaxed);
    }

    /// How long a write held for the owner (allocation, copy-on-write) waits before it fails
    /// with `BdevError::NotReady` (default `HOLD_TIMEOUT`, 30 s). Applies to requests
    /// already held too.
    pub fn set_hold_timeout(&self, timeout: Duration) {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.shared.hold_timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// Deadline of the owner's requests to the members and of a drain of in-flight I/O
    /// (default 30 s): a member that does not answer in time takes the pool offline (its
    /// operations fail, dropping it does not hang) instead of hanging it.
    pub fn set_member_timeout(&self, timeout: Duration) {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.shared.member_timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// Events raised since the last call (threshold crossed, pool full, ...), also logged.
    pub fn take_events(&self) -> Vec<PoolEvent> {
        std::mem::take(&mut *self.shared.events.lock().expect("events lock"))
    }

    pub fn is_online(&self) -> bool {
        self.shared.online.load(Ordering::Acquire)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.send(Msg::Stop);
        self.join();
    }
}
