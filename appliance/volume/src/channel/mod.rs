//! The per-reactor I/O channel of a volume.
//!
//! Fast path (one cluster, the usual case): enter the epoch, one Acquire load of the entry,
//! translate, hand the caller's request (same buffer) to the member's channel. No lock, no
//! allocation, no system call of our own. Requests spanning clusters use temporary buffers
//! per piece (the rare path). Writes that need a cluster (unallocated or shared) are held here
//! and one fault per cluster goes to the owner; Unmap/WriteZeroes/Copy go piece by piece:
//! metadata when whole clusters, the member's capability when it has one, else emulated.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevIo, Capabilities, IoChannel, IoKind};
use ferrite_reactor::IoBuf;

use crate::entry::{EntryState, MapTable};
use crate::shared::{bump, raise_max, ChannelShared, Fault, FaultKind, Msg, VolumeShared};

mod link;
mod rw;

/// Held requests fail with NotReady after this long without an answer from the owner (the
/// default of `Pool::set_hold_timeout`).
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(30);
/// Member I/O errors are reported to the owner at most this often per channel.
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Requests one channel accepts before `QueueFull`.
pub const CHANNEL_DEPTH: usize = 256;

const META_TOKEN: u64 = 1 << 63;
/// Temporary buffers a channel keeps for requests spanning clusters.
const SPARE_TEMPS: usize = 64;
const SINGLE: u64 = 0xffff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    None,
    /// A write fault for this cluster (coalesced per channel).
    Cluster(u64),
    /// A metadata op answered by token.
    Token(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    /// Fast path: the caller's buffer is with the member.
    Single,
    /// Several pieces with temporary buffers.
    Multi,
    /// Slow op: one piece of `len` blocks in flight.
    Piece(u64),
    /// Copy emulation: reading the source piece.
    CopyRead(u64),
    /// Copy emulation: the source piece is in `stage_buf`, write it next.
    CopyWrite(u64),
}

#[derive(Debug)]
struct Slot {
    io: Option<BdevIo>,
    pending: u32,
    parity: Option<usize>,
    error: Option<BdevError>,
    started: Instant,
    held_since: Option<Instant>,
    wait: Wait,
    stage: Stage,
    cursor: u64,
    temps: Vec<(u64, Option<IoBuf>)>,
    stage_buf: Option<IoBuf>,
}

impl Slot {
    fn new() -> Self {
        Self {
            io: None,
            pending: 0,
            parity: None,
            error: None,
            started: Instant::now(),
            held_since: None,
            wait: Wait::None,
            stage: Stage::Idle,
            cursor: 0,
            temps: Vec::new(),
            stage_buf: None,
        }
    }
}

type Done = (BdevIo, Result<(), BdevError>);

pub(crate) struct VolumeChannel {
    members: Vec<Box<dyn IoChannel>>,
    core: Core,
}

struct Core {
    vol: Arc<VolumeShared>,
    me: Arc<ChannelShared>,
    caps: Vec<Capabilities>,
    bs: u64,
    cb: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    done: VecDeque<Done>,
    runnable: VecDeque<u32>,
    held: Vec<u32>,
    outstanding: Vec<u64>,
    /// Faults the pool's ring had no room for, sent on the next poll.
    unsent: VecDeque<Fault>,
    /// Temporary buffers of requests spanning clusters, kept for reuse.
    spare: Vec<IoBuf>,
    backlog: VecDeque<(usize, BdevIo)>,
    /// Member errors not yet reported to the owner: (member, count, last error).
    unreported: Option<(usize, u64, String)>,
    last_report: Option<Instant>,
    /// The clock as of the last `poll`: request start and end times for the latency
    /// statistics are taken from it, so the fast path reads the clock once per poll instead
    /// of twice per request (latencies are exact to one reactor loop, a few microseconds).
    now: Instant,
}

impl VolumeChannel {
    pub fn open(
        vol: Arc<VolumeShared>,
        buffers: &[&ferrite_bdev::PoolRegions],
    ) -> Result<Self, BdevError> {
        if !vol.pool.online.load(Ordering::Acquire) || vol.deleted.load(Ordering::Acquire) {
            return Err(BdevError::NotReady("pool offline or volume deleted"));
        }
        let members = vol
            .pool
            .devs
            .iter()
            .map(|d| d.open_channel(buffers))
            .collect::<Result<Vec<_>, _>>()?;
        let me = Arc::new(ChannelShared::new());
        vol.channels
            .lock()
            .expect("channel registry lock")
            .push(Arc::clone(&me));
        let mut slots = Vec::with_capacity(CHANNEL_DEPTH);
        slots.resize_with(CHANNEL_DEPTH, Slot::new);
        Ok(Self {
            members,
            core: Core {
                caps: vol.pool.devs.iter().map(|d| d.capabilities()).collect(),
                bs: u64::from(vol.pool.block_size),
                cb: vol.pool.cluster_blocks,
                slots,
                free: (0..CHANNEL_DEPTH as u32).rev().collect(),
                done: VecDeque::with_capacity(CHANNEL_DEPTH),
                runnable: VecDeque::with_capacity(CHANNEL_DEPTH),
                held: Vec::with_capacity(CHANNEL_DEPTH),
                outstanding: Vec::with_capacity(CHANNEL_DEPTH),
                unsent: VecDeque::with_capacity(CHANNEL_DEPTH),
                spare: Vec::with_capacity(SPARE_TEMPS),
                backlog: VecDeque::with_capacity(CHANNEL_DEPTH),
                unreported: None,
                last_report: None,
                now: Instant::now(),
                me,
                vol,
            },
        })
    }
}

impl Drop for VolumeChannel {
    fn drop(&mut self) {
        let c = &self.core;
        c.vol
            .channels
            .lock()
            .expect("channel registry lock")
            .retain(|x| !Arc::ptr_eq(x, &c.me));
        c.vol.retired.absorb(&c.me.counters);
    }
}

/// The error an Error entry fails requests with: EAGAIN marks a cluster in transition (a revert
/// draining), which hosts should retry; any other code is a medium error.
fn entry_error(code: u32) -> BdevError {
    if code as i32 == libc::EAGAIN {
        BdevError::NotReady("volume is being reverted")
    } else {
        BdevError::Io(std::io::Error::from_raw_os_error(code as i32))
    }
}

fn sub_tag(slot: u32, piece: u64) -> u64 {
    (u64::from(slot) << 32) | piece
}

impl Core {
    fn enter(&self) -> usize {
        loop {
            let e = self.vol.epoch.load(Ordering::SeqCst);
            let p = (e & 1) as usize;
            self.me.inflight[p].fetch_add(1, Ordering::SeqCst);
            if self.vol.epoch.load(Ordering::SeqCst) == e {
                return p;
            }
            self.leave(p);
        }
    }

    fn leave(&self, p: usize) {
        self.me.inflight[p].fetch_sub(1, Ordering::SeqCst);
        self.vol.pool.request_left();
    }

    /// The current table through arc-swap's per-thread debt slots: no shared reference count
    /// is touched per request (a `load_full` would bounce one cache line between reactors).
    fn table(&self) -> arc_swap::Guard<Arc<MapTable>> {
        self.vol.table.load()
    }

    /// Member and member LBA of block `off` inside physical cluster `pc`.
    fn phys(&self, pc: u64, off: u64) -> (usize, u64) {
        let (m, lba) = self.vol.pool.locate(pc);
        (m, lba + off)
    }

    fn finish(&mut self, s: u32, result: Result<(), BdevError>) {
        if let Some(p) = self.slots[s as usize].parity.take() {
            self.leave(p);
        }
        let slot = &mut self.slots[s as usize];
        let mut io = slot.io.take().expect("a busy slot holds its request");
        let result = match slot.error.take() {
            Some(e) => Err(e),
            None => result,
        };
        slot.temps.clear();
        slot.stage_buf = None;
        slot.stage = Stage::Idle;
        slot.wait = Wait::None;
        slot.held_since = None;
        slot.pending = 0;
        let c = &self.me.counters;
        let ns = self.now.saturating_duration_since(slot.started).as_nanos() as u64;
        bump(&c.latency_sum_ns, ns);
        raise_max(&c.latency_max_ns, ns);
        if result.is_err() {
            bump(&c.errors, 1);
        }
        match io.kind {
            IoKind::Read { blocks, .. } => {
                bump(&c.read_ops, 1);
                if result.is_ok() {
                    let bytes = u64::from(blocks) * self.bs;
                    bump(&c.read_bytes, bytes);
                    if let Some(b) = io.buf.as_mut() {
                        b.set_len(bytes as usize);
                    }
                }
            }
            IoKind::Write { blocks, .. } => {
                bump(&c.write_ops, 1);
                if result.is_ok() {
                    bump(&c.write_bytes, u64::from(blocks) * self.bs);
                }
            }
            _ => bump(&c.other_ops, 1),
        }
        self.done.push_back((io, result));
        self.free.push(s);
    }

    /// Submits to a member; a full member queue is retried from the backlog.
    fn issue(&mut self, members: &mut [Box<dyn IoChannel>], m: usize, io: BdevIo) {
        if !self.backlog.is_empty() {
            self.backlog.push_back((m, io));
            return;
        }
        match members[m].submit(io) {
            Ok(()) => {}
            Err((io, BdevError::QueueFull)) => self.backlog.push_back((m, io)),
            Err((io, e)) => {
                self.note_member_error(m, &e);
                self.member_done(io, Err(e))
            }
        }
    }

    fn run(&mut self, members: &mut [Box<dyn IoChannel>]) {
        let mut budget = self.runnable.len();
        while budget > 0 {
            budget -= 1;
            let Some(s) = self.runnable.pop_front() else {
                break;
            };
            self.start(members, s);
        }
    }

    /// Submit-time checks (the caller gets the request back).
    fn check(&self, io: &BdevIo) -> Result<(), BdevError> {
        if !self.vol.pool.online.load(Ordering::Acquire) {
            return Err(BdevError::NotReady("pool offline"));
        }
        if self.vol.deleted.load(Ordering::Acquire) {
            return Err(BdevError::NotReady("volume deleted"));
        }
        if self.vol.read_only && io.kind.modifies() {
            return Err(BdevError::ReadOnly);
        }
        let num_blocks = self.vol.table.load().num_blocks;
        for (lba, blocks) in io.kind.range().into_iter().chain(io.kind.source_range()) {
            if lba.checked_add(blocks).is_none_or(|e| e > num_blocks) || blocks == 0 {
                return Err(BdevError::OutOfRange {
                    lba,
                    blocks,
                    num_blocks,
                });
            }
        }
        let need = match io.kind {
            IoKind::Read { blocks, .. } => {
                Some((blocks, io.buf.as_ref().map_or(0, IoBuf::capacity)))
            }
            IoKind::Write { blocks, .. } => Some((blocks, io.buf.as_ref().map_or(0, IoBuf::len))),
            _ => None,
        };
        if let Some((blocks, have)) = need {
            let bytes = u64::from(blocks) * self.bs;
            if bytes > u64::from(crate::volume::MAX_TRANSFER) {
                return Err(BdevError::TransferTooLarge {
                    bytes,
                    max: crate::volume::MAX_TRANSFER,
                });
            }
            if (have as u64) < bytes || io.buf.is_none() {
                return Err(BdevError::BufferTooSmall {
                    needed: bytes as usize,
                    available: have,
                });
            }
        }
        Ok(())
    }
}

impl IoChannel for VolumeChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        let core = &mut self.core;
        if let Err(e) = core.check(&io) {
            return Err((io, e));
        }
        if core.free.len() == CHANNEL_DEPTH && core.done.is_empty() {
            // Idle channels are not polled, so the cached clock may be old: refresh it.
            core.now = Instant::now();
        }
        let Some(s) = core.free.pop() else {
            return Err((io, BdevError::QueueFull));
        };
        let slot = &mut core.slots[s as usize];
        slot.io = Some(io);
        slot.started = core.now;
        slot.cursor = 0;
        slot.error = None;
        core.start(&mut self.members, s);
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        let core = &mut self.core;
        core.now = Instant::now();
        core.send_unsent();
        core.take_replies();
        core.expire_held();
        core.run(&mut self.members);
        core.flush_backlog(&mut self.members);
        for m in 0..self.members.len() {
            let ch = &mut self.members[m];
            ch.poll(CHANNEL_DEPTH, &mut |io, r| {
                if let Err(e) = &r {
                    core.note_member_error(m, e);
                }
                core.member_done(io, r)
            });
        }
        if core.unreported.is_some() {
            core.report_member_errors();
        }
        core.run(&mut self.members);
        core.flush_backlog(&mut self.members);
        let n = max.min(core.done.len());
        for _ in 0..n {
            let (io, r) = core.done.pop_front().expect("n <= queue length");
            done(io, r);
        }
        n
    }

    fn in_flight(&self) -> usize {
        CHANNEL_DEPTH - self.core.free.len() + self.core.done.len()
    }
}
