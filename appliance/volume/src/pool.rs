//! The public pool handle: every call is a message to the owner task.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ferrite_reactor::{CoreList, IdlePolicy, Runtime, RuntimeConfig, SendError, TaskHandle};

use ferrite_bdev::BlockDevice;

use ferrite_bdev::IoKind;
use ferrite_reactor::IoBuf;

use crate::format::label::{LabelError, MemberLabel};
use crate::format::META_BLOCK;
use crate::info::{CheckReport, PoolEvent, PoolInfo, PoolOptions};
use crate::owner::{self, Init, OwnerTask, Placement};
use crate::shared::{Cmd, Msg, PoolShared, Reply};
use crate::{Provisioning, Volume, VolumeError};

/// A storage pool. `Send + Sync`; its metadata owner is a task on a reactor (`create_on`,
/// `open_on`: the caller's runtime; `create`, `open`: a private one-reactor runtime). Call it
/// from control threads, not from the owner's reactor. Dropping the last handle without
/// `close` stops the owner at once without a checkpoint (as a crash would; the log makes
/// that safe).
pub struct Pool {
    shared: Arc<PoolShared>,
    owner: TaskHandle<OwnerTask>,
    /// Disconnects when the owner task has gone (and its member channels with it).
    done: Mutex<Option<mpsc::Receiver<()>>>,
    /// The private runtime of a pool opened without one.
    runtime: Mutex<Option<Runtime>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl Pool {
    fn start(
        init: Init,
        members: Vec<Arc<dyn BlockDevice>>,
        place: Option<&Placement>,
    ) -> Result<Arc<Pool>, VolumeError> {
        let (runtime, place) = match place {
            Some(p) => (None, p.clone()),
            None => {
                let rt = private_runtime()?;
                let p = Placement {
                    spawner: rt.spawner(),
                    reactor: 0,
                };
                (Some(rt), p)
            }
        };
        let (shared, owner, done) = owner::spawn(init, members, &place)?;
        Ok(Arc::new(Pool {
            shared,
            owner,
            done: Mutex::new(Some(done)),
            runtime: Mutex::new(runtime),
        }))
    }

    /// Creates a pool over blank devices (all with the same block size); zeroes the data area.
    /// The owner runs on a private one-reactor runtime.
    pub fn create(
        name: &str,
        members: Vec<Arc<dyn BlockDevice>>,
        opts: PoolOptions,
    ) -> Result<Arc<Pool>, VolumeError> {
        Self::start(Self::init_create(name, opts), members, None)
    }

    /// `create` with the owner on reactor `reactor` of the runtime `spawner` belongs to.
    pub fn create_on(
        name: &str,
        members: Vec<Arc<dyn BlockDevice>>,
        opts: PoolOptions,
        spawner: ferrite_reactor::Spawner,
        reactor: usize,
    ) -> Result<Arc<Pool>, VolumeError> {
        let place = Placement { spawner, reactor };
        Self::start(Self::init_create(name, opts), members, Some(&place))
    }

    fn init_create(name: &str, opts: PoolOptions) -> Init {
        Init::Create {
            name: name.into(),
            opts,
        }
    }

    /// Opens an existing pool: `members` in any order (matched by the member labels). The
    /// owner runs on a private one-reactor runtime.
    pub fn open(members: Vec<Arc<dyn BlockDevice>>) -> Result<Arc<Pool>, VolumeError> {
        Self::start(Init::Open, members, None)
    }

    /// `open` with the owner on reactor `reactor` of the runtime `spawner` belongs to.
    pub fn open_on(
        members: Vec<Arc<dyn BlockDevice>>,
        spawner: ferrite_reactor::Spawner,
        reactor: usize,
    ) -> Result<Arc<Pool>, VolumeError> {
        let place = Placement { spawner, reactor };
        Self::start(Init::Open, members, Some(&place))
    }

    /// Index of the reactor the metadata owner runs on (of its runtime).
    pub fn owner_reactor(&self) -> usize {
        self.owner.reactor_index()
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
        match self.shared.send(Msg::Cmd(cmd, tx)) {
            Ok(()) => {}
            Err(SendError::Full) => {
                return Err(VolumeError::Busy {
                    pool: self.shared.name.clone(),
                })
            }
            Err(_) => return Err(offline()),
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

    /// Waits for the owner task to end (its member channels closed), then stops the private
    /// runtime if there is one.
    fn join(&self) {
        if let Some(done) = self.done.lock().expect("done lock").take() {
            if !self.shared.waker.is_current() {
                let _ = done.recv();
            }
        }
        if let Some(rt) = self.runtime.lock().expect("runtime lock").take() {
            if let Err(e) = rt.shutdown() {
                log::warn!("pool {}: stopping its reactor: {e}", self.shared.name);
            }
        }
    }

    /// Writes a checkpoint and stops the owner task; every volume returns NotReady afterwards.
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
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
        self.join();
    }
}

/// The one-reactor runtime of a pool opened without one: unpinned, parking when idle, with
/// token buffer pools (the owner allocates its own buffers) and a small inbox.
fn private_runtime() -> Result<Runtime, VolumeError> {
    let cores = CoreList::first(1).map_err(|e| VolumeError::InvalidConfig(e.to_string()))?;
    Runtime::start(RuntimeConfig {
        cores,
        idle: IdlePolicy::Park {
            after: Duration::from_micros(100),
            max: Duration::from_millis(100),
        },
        small_buffers: 1,
        small_buffer_size: 4096,
        large_buffers: 1,
        large_buffer_size: 4096,
        pin: false,
        inbox_capacity: owner::CONTROL_QUEUE,
        ..RuntimeConfig::default()
    })
    .map_err(VolumeError::Placement)
}
