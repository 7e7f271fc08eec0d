//! State shared between the owner task, the public handles and the channels, and the
//! messages between them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, RwLock};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use ferrite_bdev::{BdevError, BlockDevice};
use ferrite_reactor::{ReactorWaker, SendError, TaskHandle};

use crate::entry::MapTable;
use crate::info::{CheckReport, PoolEvent, PoolInfo, VolumeInfo, VolumeStats};
use crate::owner::OwnerTask;
use crate::types::VolId;
use crate::{Provisioning, Volume, VolumeError};

/// Where a member's data clusters are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberMap {
    pub first: u64,
    pub count: u64,
    /// First data block on the member.
    pub data_lba: u64,
}

#[derive(Debug)]
pub(crate) struct PoolShared {
    pub name: String,
    pub uuid: [u8; 16],
    pub cluster_size: u64,
    pub block_size: u32,
    /// Blocks per cluster.
    pub cluster_blocks: u64,
    pub members: Vec<MemberMap>,
    pub devs: Vec<Arc<dyn BlockDevice>>,
    pub online: AtomicBool,
    /// The owner task: control messages go through its bounded lock-free inbox. Set by
    /// `Pool` once the owner is running.
    pub owner: OnceLock<TaskHandle<OwnerTask>>,
    /// Rings the owner's reactor after a fault or a drain wake-up (no allocation).
    pub waker: ReactorWaker,
    /// The last `Pool` handle went without `close`: stop at once, no checkpoint.
    pub stop: AtomicBool,
    pub volumes: RwLock<BTreeMap<String, Arc<Volume>>>,
    pub events: Mutex<Vec<PoolEvent>>,
    pub warn_percent: AtomicU8,
    pub last_info: Mutex<Option<PoolInfo>>,
    /// How long channels hold a request for the owner before failing it NotReady (ns).
    pub hold_timeout_ns: AtomicU64,
    /// Faults from every channel to the owner: a bounded lock-free ring (a full ring is
    /// backpressure: the channel keeps the fault and sends it on its next poll).
    pub faults: ArrayQueue<Fault>,
    /// Work for the owner (a fault, a message) since it last looked.
    pub kick: AtomicBool,
    /// Deadline of the owner's member requests and of a drain (ns).
    pub member_timeout_ns: AtomicU64,
    /// A drain waits: channels wake the owner when a request leaves.
    pub drain_waiting: AtomicBool,
}

impl PoolShared {
    /// (member, block on the member) of the first block of physical cluster `pc`.
    pub fn locate(&self, pc: u64) -> (usize, u64) {
        for (i, m) in self.members.iter().enumerate() {
            if pc >= m.first && pc < m.first + m.count {
                return (i, m.data_lba + (pc - m.first) * self.cluster_blocks);
            }
        }
        // Entries only carry clusters below the total (checked by the owner).
        (0, u64::MAX / 2)
    }

    /// Wakes the owner for new work (after a fault was queued or a drained request left).
    pub fn wake_owner(&self) {
        self.kick.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Work the owner has not looked at yet: checked by its reactor before it parks.
    pub fn owner_has_work(&self) -> bool {
        self.kick.load(Ordering::SeqCst)
            || self.stop.load(Ordering::SeqCst)
            || !self.faults.is_empty()
    }

    /// Queues a message in the owner task's bounded inbox (which wakes its reactor). `Full`
    /// is backpressure (counted by the reactor); `Closed` means the owner is gone.
    pub fn send(&self, m: Msg) -> Result<(), SendError> {
        let Some(owner) = self.owner.get() else {
            return Err(SendError::Closed);
        };
        owner.send(move |t, _| t.deliver(m))
    }

    /// Called by a channel after a request left its in-flight count: wakes a waiting drain.
    pub fn request_left(&self) {
        if self.drain_waiting.load(Ordering::SeqCst) {
            self.wake_owner();
        }
    }

    pub fn event(&self, e: PoolEvent) {
        log::warn!("pool {}: {e:?}", self.name);
        self.events.lock().expect("events lock").push(e);
    }
}

/// Counters of one channel: written by its reactor only (relaxed), read by `stats()`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub read_ops: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_ops: AtomicU64,
    pub write_bytes: AtomicU64,
    pub other_ops: AtomicU64,
    pub errors: AtomicU64,
    pub latency_sum_ns: AtomicU64,
    pub latency_max_ns: AtomicU64,
    pub faults: AtomicU64,
    pub held_time_max_ns: AtomicU64,
    pub metadata_ops: AtomicU64,
    pub offloaded_ops: AtomicU64,
    pub emulated_ops: AtomicU64,
    pub zero_reads: AtomicU64,
    pub fault_ring_full: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

pub(crate) fn raise_max(c: &AtomicU64, v: u64) {
    if v > c.load(Ordering::Relaxed) {
        c.store(v, Ordering::Relaxed);
    }
}

impl Counters {
    pub fn add_to(&self, s: &mut VolumeStats) {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.read_ops += l(&self.read_ops);
        s.read_bytes += l(&self.read_bytes);
        s.write_ops += l(&self.write_ops);
        s.write_bytes += l(&self.write_bytes);
        s.other_ops += l(&self.other_ops);
        s.errors += l(&self.errors);
        s.latency_sum_ns += l(&self.latency_sum_ns);
        s.latency_max_ns = s.latency_max_ns.max(l(&self.latency_max_ns));
        s.faults += l(&self.faults);
        s.held_time_max_ns = s.held_time_max_ns.max(l(&self.held_time_max_ns));
        s.metadata_ops += l(&self.metadata_ops);
        s.offloaded_ops += l(&self.offloaded_ops);
        s.emulated_ops += l(&self.emulated_ops);
        s.zero_reads += l(&self.zero_reads);
        s.fault_ring_full += l(&self.fault_ring_full);
    }

    /// Folds a closing channel's counters into the volume's retired totals.
    pub fn absorb(&self, other: &Counters) {
        let mut s = VolumeStats::default();
        other.add_to(&mut s);
        let pairs = [
            (&self.read_ops, s.read_ops),
            (&self.read_bytes, s.read_bytes),
            (&self.write_ops, s.write_ops),
            (&self.write_bytes, s.write_bytes),
            (&self.other_ops, s.other_ops),
            (&self.errors, s.errors),
            (&self.latency_sum_ns, s.latency_sum_ns),
            (&self.faults, s.faults),
            (&self.metadata_ops, s.metadata_ops),
            (&self.offloaded_ops, s.offloaded_ops),
            (&self.emulated_ops, s.emulated_ops),
            (&self.zero_reads, s.zero_reads),
            (&self.fault_ring_full, s.fault_ring_full),
        ];
        for (c, v) in pairs {
            c.fetch_add(v, Ordering::Relaxed);
        }
        self.latency_max_ns
            .fetch_max(s.latency_max_ns, Ordering::Relaxed);
        self.held_time_max_ns
            .fetch_max(s.held_time_max_ns, Ordering::Relaxed);
    }
}

/// Capacity of a channel's reply ring: twice the requests it holds (a request waits for at
/// most a few clusters); the owner keeps what does not fit and retries.
pub(crate) const REPLY_RING: usize = 2 * crate::CHANNEL_DEPTH;

/// Capacity of a pool's fault ring (all channels together).
pub(crate) const FAULT_RING: usize = 4096;

/// What a channel shares with the owner: in-flight counters per epoch parity (the drain),
/// the bounded lock-free ring of replies to its faults, and its counters.
#[derive(Debug)]
pub(crate) struct ChannelShared {
    pub inflight: [AtomicU64; 2],
    pub replies: ArrayQueue<FaultReply>,
    pub counters: Counters,
}

impl ChannelShared {
    pub fn new() -> Self {
        ChannelShared {
            inflight: Default::default(),
            replies: ArrayQueue::new(REPLY_RING),
            counters: Counters::default(),
        }
    }

    /// Queues a reply; gives it back when the ring is full (the owner retries later).
    pub fn reply(&self, r: FaultReply) -> Result<(), FaultReply> {
        self.replies.push(r)
    }
}

#[derive(Debug)]
pub(crate) struct VolumeShared {
    pub id: VolId,
    pub pool: Arc<PoolShared>,
    pub table: ArcSwap<MapTable>,
    pub epoch: AtomicU64,
    pub channels: Mutex<Vec<Arc<ChannelShared>>>,
    pub deleted: AtomicBool,
    pub read_only: bool,
    pub prov: Provisioning,
    pub uuid: [u8; 16],
    pub retired: Counters,
    pub cow_copies: AtomicU64,
    pub last_info: Mutex<Option<VolumeInfo>>,
}

impl VolumeShared {
    /// Bumps the epoch; returns the parity whose counters must drain.
    pub fn bump_epoch(&self) -> usize {
        (self.epoch.fetch_add(1, Ordering::SeqCst) & 1) as usize
    }

    pub fn drained(&self, parity: usize) -> bool {
        self.channels
            .lock()
            .expect("channel registry lock")
            .iter()
            .all(|c| c.inflight[parity].load(Ordering::SeqCst) == 0)
    }
}

/// Why a channel asks the owner for help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    /// A write needs the cluster allocated or copied (copy-on-write).
    Write,
    /// A whole-cluster Unmap/WriteZeroes: unmap in metadata.
    Unmap,
    /// A whole-cluster Copy: map this cluster to the source's (or unmap it).
    CopyFrom(u64),
}

#[derive(Debug)]
pub(crate) struct Fault {
    pub vol: VolId,
    pub vc: u64,
    pub kind: FaultKind,
    pub chan: Arc<ChannelShared>,
    pub token: u64,
}

/// The owner's answer to one fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultReply {
    pub token: u64,
    pub result: Result<(), ReplyError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyError {
    NoSpace,
    ReadOnly,
    NotReady,
    Io(i32),
}

impl ReplyError {
    pub fn to_bdev(self) -> BdevError {
        match self {
            ReplyError::NoSpace => BdevError::NoSpace,
            ReplyError::ReadOnly => BdevError::ReadOnly,
            ReplyError::NotReady => BdevError::NotReady("volume metadata owner unavailable"),
            ReplyError::Io(e) => BdevError::Io(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// Control-plane requests to the owner.
#[derive(Debug)]
pub(crate) enum Cmd {
    Create {
        name: String,
        size: u64,
        prov: Provisioning,
    },
    Resize {
        name: String,
        size: u64,
        force: bool,
    },
    Rename {
        name: String,
        new_name: String,
    },
    Delete {
        name: String,
    },
    Inflate {
        name: String,
    },
    Snapshot {
        pairs: Vec<(String, String)>,
    },
    Clone {
        snapshot: String,
        name: String,
    },
    Revert {
        volume: String,
        snapshot: String,
    },
    Info,
    VolumeInfo(VolId),
    Check,
    /// Clusters of `target` that differ from snapshot `base` (crate::diff).
    Diff {
        base: String,
        target: String,
    },
    Destroy {
        force: bool,
    },
    Close,
}

#[derive(Debug)]
pub(crate) enum Reply {
    Done,
    Volumes(Vec<Arc<Volume>>),
    Info(Box<PoolInfo>),
    VolumeInfo(Box<VolumeInfo>),
    Check(CheckReport),
    Diff(Box<crate::VolumeDiff>),
}

/// Where the owner sends the answer to one command (a one-shot).
pub(crate) type ReplyTx = mpsc::SyncSender<Result<Reply, VolumeError>>;

#[derive(Debug)]
pub(crate) enum Msg {
    Cmd(Cmd, ReplyTx),
    /// A channel's I/O to a member failed (reported at most once per interval per channel,
    /// with the count since the last report) so that the owner raises an event.
    MemberError {
        vol: VolId,
        member: usize,
        errors: u64,
        error: String,
    },
}
