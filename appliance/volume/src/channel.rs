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
use crate::shared::{
    bump, raise_max, ChannelShared, Fault, FaultKind, FaultReply, Msg, VolumeShared,
};

/// Held requests fail with NotReady after this long without an answer from the owner (the
/// default of `Pool::set_hold_timeout`).
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(30);
/// Member I/O errors are reported to the owner at most this often per channel.
const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Requests one channel accepts before `QueueFull`.
pub const CHANNEL_DEPTH: usize = 256;

const META_TOKEN: u64 = 1 << 63;
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
    backlog: VecDeque<(usize, BdevIo)>,
    replies: Vec<FaultReply>,
    /// Member errors not yet reported to the owner: (member, count, last error).
    unreported: Option<(usize, u64, String)>,
    last_report: Option<Instant>,
    /// The clock as of the last `poll`: request start and end times for the latency
    /// statistics are taken from it, so the fast path reads the clock once per poll instead
    /// of twice per request (latencies are exact to one reactor loop, a few microseconds).
    now: Instant,
}

impl VolumeChannel {
    pub fn open(vol: Arc<VolumeShared>, buffers: &[&[(usize, usize)]]) -> Result<Self, BdevError> {
        if !vol.pool.online.load(Ordering::Acquire) || vol.deleted.load(Ordering::Acquire) {
            return Err(BdevError::NotReady("pool offline or volume deleted"));
        }
        let members = vol
            .pool
            .devs
            .iter()
            .map(|d| d.open_channel(buffers))
            .collect::<Result<Vec<_>, _>>()?;
        let me = Arc::new(ChannelShared::default());
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
                backlog: VecDeque::with_capacity(CHANNEL_DEPTH),
                replies: Vec::with_capacity(CHANNEL_DEPTH),
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

    /// Counts a failed member request (medium and device errors only) for the owner's event.
    /// The error path only: it may allocate.
    fn note_member_error(&mut self, m: usize, e: &BdevError) {
        if !matches!(e, BdevError::Io(_)) {
            return;
        }
        let count = match self.unreported.take() {
            Some((um, n, _)) if um == m => n + 1,
            Some((um, n, last)) => {
                // Another member failed too: report the first one's count now.
                self.send_member_error(um, n, last);
                1
            }
            None => 1,
        };
        self.unreported = Some((m, count, e.to_string()));
        self.report_member_errors();
    }

    /// Sends the pending member error report unless one went out less than an interval ago.
    fn report_member_errors(&mut self) {
        if self.unreported.is_none()
            || self
                .last_report
                .is_some_and(|t| t.elapsed() < ERROR_REPORT_INTERVAL)
        {
            return;
        }
        if let Some((m, n, last)) = self.unreported.take() {
            self.send_member_error(m, n, last);
        }
    }

    fn send_member_error(&mut self, member: usize, errors: u64, error: String) {
        self.last_report = Some(Instant::now());
        let _ = self.vol.pool.tx.send(Msg::MemberError {
            vol: self.vol.id,
            member,
            errors,
            error,
        });
    }

    fn flush_backlog(&mut self, members: &mut [Box<dyn IoChannel>]) {
        while let Some((m, io)) = self.backlog.pop_front() {
            match members[m].submit(io) {
                Ok(()) => {}
                Err((io, BdevError::QueueFull)) => {
                    self.backlog.push_front((m, io));
                    return;
                }
                Err((io, e)) => {
                    self.note_member_error(m, &e);
                    self.member_done(io, Err(e))
                }
            }
        }
    }

    fn hold(&mut self, s: u32, wait: Wait) {
        let slot = &mut self.slots[s as usize];
        slot.wait = wait;
        if slot.held_since.is_none() {
            slot.held_since = Some(Instant::now());
            bump(&self.me.counters.faults, 1);
        }
        self.held.push(s);
    }

    fn send_fault(&mut self, vc: u64, kind: FaultKind, token: u64) -> bool {
        let f = Fault {
            vol: self.vol.id,
            vc,
            kind,
            chan: Arc::clone(&self.me),
            token,
        };
        self.vol.pool.tx.send(Msg::Fault(f)).is_ok()
    }

    /// Holds `s` until cluster `vc` is writable (one fault per cluster per channel).
    fn fault_write(&mut self, s: u32, vc: u64) {
        if !self.outstanding.contains(&vc) {
            if !self.send_fault(vc, FaultKind::Write, vc) {
                self.finish(s, Err(BdevError::NotReady("pool offline")));
                return;
            }
            self.outstanding.push(vc);
        }
        self.hold(s, Wait::Cluster(vc));
    }

    fn fault_meta(&mut self, s: u32, vc: u64, kind: FaultKind) {
        let token = META_TOKEN | u64::from(s);
        bump(&self.me.counters.metadata_ops, 1);
        if !self.send_fault(vc, kind, token) {
            self.finish(s, Err(BdevError::NotReady("pool offline")));
            return;
        }
        self.hold(s, Wait::Token(token));
    }

    fn start(&mut self, members: &mut [Box<dyn IoChannel>], s: u32) {
        let kind = self.slots[s as usize].io.as_ref().expect("busy slot").kind;
        match kind {
            IoKind::Read { lba, blocks } => {
                self.start_rw(members, s, lba, u64::from(blocks), false)
            }
            IoKind::Write { lba, blocks, .. } => {
                self.start_rw(members, s, lba, u64::from(blocks), true)
            }
            IoKind::Flush => {
                let n = members.len();
                self.slots[s as usize].pending = n as u32;
                self.slots[s as usize].stage = Stage::Multi;
                for m in 0..n {
                    self.issue(
                        members,
                        m,
                        BdevIo::new(sub_tag(s, m as u64), IoKind::Flush, None),
                    );
                }
            }
            _ => self.step(members, s),
        }
    }

    fn start_rw(
        &mut self,
        members: &mut [Box<dyn IoChannel>],
        s: u32,
        lba: u64,
        blocks: u64,
        write: bool,
    ) {
        let p = self.enter();
        let table = self.table();
        if self.vol.deleted.load(Ordering::Acquire) {
            self.leave(p);
            return self.finish(s, Err(BdevError::NotReady("volume deleted")));
        }
        if lba + blocks > table.num_blocks {
            self.leave(p);
            let e = BdevError::OutOfRange {
                lba,
                blocks,
                num_blocks: table.num_blocks,
            };
            return self.finish(s, Err(e));
        }
        let cb = self.cb;
        let (first, last) = (lba / cb, (lba + blocks - 1) / cb);
        let mut need: Option<u64> = None;
        for vc in first..=last {
            match table.get(vc).state() {
                EntryState::Error(code) => {
                    self.leave(p);
                    return self.finish(s, Err(entry_error(code)));
                }
                EntryState::Unallocated | EntryState::Shared(_) if write => {
                    if need.is_none() {
                        need = Some(vc);
                    } else if !self.outstanding.contains(&vc)
                        && self.send_fault(vc, FaultKind::Write, vc)
                    {
                        self.outstanding.push(vc);
                    }
                }
                _ => {}
            }
        }
        if let Some(vc) = need {
            self.leave(p);
            return self.fault_write(s, vc);
        }
        self.slots[s as usize].parity = Some(p);
        if first == last {
            let off = lba - first * cb;
            match table.get(first).state() {
                EntryState::Allocated(pc) | EntryState::Shared(pc) => {
                    let (m, mlba) = self.phys(pc, off);
                    let slot = &mut self.slots[s as usize];
                    let io = slot.io.as_mut().expect("busy slot");
                    let kind = match io.kind {
                        IoKind::Write { blocks, fua, .. } => IoKind::Write {
                            lba: mlba,
                            blocks,
                            fua,
                        },
                        _ => IoKind::Read {
                            lba: mlba,
                            blocks: blocks as u32,
                        },
                    };
                    let buf = io.buf.take();
                    slot.pending = 1;
                    slot.stage = Stage::Single;
                    self.issue(members, m, BdevIo::new(sub_tag(s, SINGLE), kind, buf));
                }
                _ => {
                    // Unallocated read: zeroes, no backend I/O.
                    let slot = &mut self.slots[s as usize];
                    let io = slot.io.as_mut().expect("busy slot");
                    if let Some(b) = io.buf.as_mut() {
                        let n = (blocks * self.bs) as usize;
                        b.spare_mut()[..n].fill(0);
                    }
                    bump(&self.me.counters.zero_reads, 1);
                    self.finish(s, Ok(()));
                }
            }
            return;
        }
        // Rare path: several clusters, one temporary buffer per piece.
        self.slots[s as usize].stage = Stage::Multi;
        let mut cur = lba;
        let mut piece = 0u64;
        let mut subs = Vec::new();
        while cur < lba + blocks {
            let vc = cur / cb;
            let off = cur - vc * cb;
            let n = (cb - off).min(lba + blocks - cur);
            let bytes = (n * self.bs) as usize;
            let at = ((cur - lba) * self.bs) as usize;
            let slot = &mut self.slots[s as usize];
            let io = slot.io.as_mut().expect("busy slot");
            match table.get(vc).state() {
                EntryState::Allocated(pc) | EntryState::Shared(pc) => {
                    let (m, mlba) = self.vol.pool.locate(pc);
                    let mut tmp = IoBuf::new(bytes);
                    let kind = if let IoKind::Write { fua, .. } = io.kind {
                        tmp.set_len(bytes);
                        let src = io.buf.as_ref().expect("checked at submit").as_slice();
                        tmp.as_mut_slice().copy_from_slice(&src[at..at + bytes]);
                        IoKind::Write {
                            lba: mlba + off,
                            blocks: n as u32,
                            fua,
                        }
                    } else {
                        IoKind::Read {
                            lba: mlba + off,
                            blocks: n as u32,
                        }
                    };
                    slot.temps.push((at as u64, None));
                    subs.push((m, BdevIo::new(sub_tag(s, piece), kind, Some(tmp))));
                }
                _ => {
                    let b = io.buf.as_mut().expect("checked at submit");
                    b.spare_mut()[at..at + bytes].fill(0);
                    slot.temps.push((at as u64, None));
                }
            }
            piece += 1;
            cur += n;
        }
        let slot = &mut self.slots[s as usize];
        slot.pending = subs.len() as u32;
        if subs.is_empty() {
            bump(&self.me.counters.zero_reads, 1);
            return self.finish(s, Ok(()));
        }
        for (m, io) in subs {
            self.issue(members, m, io);
        }
    }

    /// One piece of an Unmap, WriteZeroes or Copy.
    fn step(&mut self, members: &mut [Box<dyn IoChannel>], s: u32) {
        loop {
            let slot = &self.slots[s as usize];
            let kind = slot.io.as_ref().expect("busy slot").kind;
            let (cursor, stage) = (slot.cursor, slot.stage);
            let Some((_, blocks)) = kind.range() else {
                return self.finish(s, Ok(()));
            };
            if cursor >= blocks {
                return self.finish(s, Ok(()));
            }
            let p = self.enter();
            let table = self.table();
            if self.vol.deleted.load(Ordering::Acquire) {
                self.leave(p);
                return self.finish(s, Err(BdevError::NotReady("volume deleted")));
            }
            let ranges_ok = std::iter::once(kind.range())
                .chain([kind.source_range()])
                .flatten()
                .all(|(l, b)| l + b <= table.num_blocks);
            if !ranges_ok {
                self.leave(p);
                let (lba, blocks) = kind.range().unwrap_or((0, 0));
                return self.finish(
                    s,
                    Err(BdevError::OutOfRange {
                        lba,
                        blocks,
                        num_blocks: table.num_blocks,
                    }),
                );
            }
            let cb = self.cb;
            match kind {
                IoKind::WriteZeroes { lba, .. } | IoKind::Unmap { lba, .. } => {
                    let cur = lba + cursor;
                    let vc = cur / cb;
                    let off = cur - vc * cb;
                    let len = (cb - off).min(blocks - cursor);
                    let whole = off == 0 && (len == cb || cur + len == table.num_blocks);
                    match table.get(vc).state() {
                        EntryState::Error(c) => {
                            self.leave(p);
                            return self.finish(s, Err(entry_error(c)));
                        }
                        EntryState::Unallocated => {
                            self.leave(p);
                            self.slots[s as usize].cursor += len;
                            continue;
                        }
                        _ if whole => {
                            self.leave(p);
                            return self.fault_meta(s, vc, FaultKind::Unmap);
                        }
                        EntryState::Shared(_) => {
                            self.leave(p);
                            return self.fault_write(s, vc);
                        }
                        EntryState::Allocated(pc) => {
                            let (m, mlba) = self.phys(pc, off);
                            return self.zero_piece(members, s, p, m, mlba, len);
                        }
                    }
                }
                IoKind::Copy {
                    src_lba, dst_lba, ..
                } => {
                    let (sc, dc) = (src_lba + cursor, dst_lba + cursor);
                    let (svc, dvc) = (sc / cb, dc / cb);
                    let (soff, doff) = (sc - svc * cb, dc - dvc * cb);
                    let len = (cb - soff).min(cb - doff).min(blocks - cursor);
                    let (es, ed) = (table.get(svc).state(), table.get(dvc).state());
                    if let Stage::CopyWrite(n) = stage {
                        return match ed {
                            EntryState::Allocated(pd) => {
                                let (m, mlba) = self.phys(pd, doff);
                                let slot = &mut self.slots[s as usize];
                                let buf = slot.stage_buf.take();
                                let fua = false;
                                slot.parity = Some(p);
                                slot.pending = 1;
                                slot.stage = Stage::Piece(n);
                                let io = BdevIo::new(
                                    sub_tag(s, 0),
                                    IoKind::Write {
                                        lba: mlba,
                                        blocks: n as u32,
                                        fua,
                                    },
                                    buf,
                                );
                                self.issue(members, m, io);
                            }
                            EntryState::Error(c) => {
                                self.leave(p);
                                self.finish(s, Err(entry_error(c)))
                            }
                            _ => {
                                self.leave(p);
                                self.fault_write(s, dvc)
                            }
                        };
                    }
                    if let (EntryState::Error(c), _) | (_, EntryState::Error(c)) = (es, ed) {
                        self.leave(p);
                        return self.finish(s, Err(entry_error(c)));
                    }
                    if soff == 0 && doff == 0 && len == cb && svc != dvc {
                        self.leave(p);
                        return self.fault_meta(s, dvc, FaultKind::CopyFrom(svc));
                    }
                    match (es, ed) {
                        (EntryState::Unallocated, EntryState::Unallocated) => {
                            self.leave(p);
                            self.slots[s as usize].cursor += len;
                            continue;
                        }
                        (EntryState::Unallocated, EntryState::Allocated(pd)) => {
                            let (m, mlba) = self.phys(pd, doff);
                            return self.zero_piece(members, s, p, m, mlba, len);
                        }
                        (_, EntryState::Unallocated | EntryState::Shared(_)) => {
                            self.leave(p);
                            return self.fault_write(s, dvc);
                        }
                        (
                            EntryState::Allocated(ps) | EntryState::Shared(ps),
                            EntryState::Allocated(pd),
                        ) => {
                            let (ms, slba) = self.phys(ps, soff);
                            let (md, dlba) = self.phys(pd, doff);
                            let slot = &mut self.slots[s as usize];
                            slot.parity = Some(p);
                            slot.pending = 1;
                            if ms == md && self.caps[ms].copy {
                                slot.stage = Stage::Piece(len);
                                bump(&self.me.counters.offloaded_ops, 1);
                                let k = IoKind::Copy {
                                    src_lba: slba,
                                    dst_lba: dlba,
                                    blocks: len,
                                };
                                self.issue(members, ms, BdevIo::new(sub_tag(s, 0), k, None));
                            } else {
                                slot.stage = Stage::CopyRead(len);
                                bump(&self.me.counters.emulated_ops, 1);
                                let buf = IoBuf::new((len * self.bs) as usize);
                                let k = IoKind::Read {
                                    lba: slba,
                                    blocks: len as u32,
                                };
                                self.issue(members, ms, BdevIo::new(sub_tag(s, 0), k, Some(buf)));
                            }
                            return;
                        }
                        _ => {
                            self.leave(p);
                            return self.finish(
                                s,
                                Err(BdevError::Io(std::io::Error::from_raw_os_error(libc::EIO))),
                            );
                        }
                    }
                }
                _ => {
                    self.leave(p);
                    return self.finish(s, Ok(()));
                }
            }
        }
    }

    /// Zeroes `len` blocks of an exclusive cluster: the member's WriteZeroes, else a write.
    fn zero_piece(
        &mut self,
        members: &mut [Box<dyn IoChannel>],
        s: u32,
        p: usize,
        m: usize,
        mlba: u64,
        len: u64,
    ) {
        let slot = &mut self.slots[s as usize];
        slot.parity = Some(p);
        slot.pending = 1;
        slot.stage = Stage::Piece(len);
        let io = if self.caps[m].write_zeroes {
            bump(&self.me.counters.offloaded_ops, 1);
            BdevIo::new(
                sub_tag(s, 0),
                IoKind::WriteZeroes {
                    lba: mlba,
                    blocks: len,
                },
                None,
            )
        } else {
            bump(&self.me.counters.emulated_ops, 1);
            let bytes = (len * self.bs) as usize;
            let mut buf = IoBuf::new(bytes);
            buf.set_len(bytes);
            BdevIo::new(
                sub_tag(s, 0),
                IoKind::Write {
                    lba: mlba,
                    blocks: len as u32,
                    fua: false,
                },
                Some(buf),
            )
        };
        self.issue(members, m, io);
    }

    fn member_done(&mut self, io: BdevIo, r: Result<(), BdevError>) {
        let s = (io.tag >> 32) as u32;
        let piece = io.tag & 0xffff_ffff;
        let bs = self.bs;
        let slot = &mut self.slots[s as usize];
        if let Err(e) = r {
            slot.error.get_or_insert(e);
        }
        match slot.stage {
            Stage::Single => {
                slot.io.as_mut().expect("busy slot").buf = io.buf;
            }
            Stage::Multi => {
                if let (Some(tmp), Some((at, _))) = (io.buf, slot.temps.get(piece as usize)) {
                    let at = *at as usize;
                    let user = slot.io.as_mut().expect("busy slot");
                    if matches!(user.kind, IoKind::Read { .. }) && slot.error.is_none() {
                        let b = user.buf.as_mut().expect("checked at submit");
                        b.spare_mut()[at..at + tmp.len()].copy_from_slice(tmp.as_slice());
                    }
                }
            }
            Stage::CopyRead(n) => {
                slot.stage_buf = io.buf;
                slot.stage = Stage::CopyWrite(n);
            }
            Stage::Piece(n) => {
                slot.cursor += n;
                slot.stage = Stage::Idle;
            }
            Stage::Idle | Stage::CopyWrite(_) => {}
        }
        let _ = bs;
        slot.pending -= 1;
        if slot.pending > 0 {
            return;
        }
        match slot.stage {
            Stage::Single | Stage::Multi => self.finish(s, Ok(())),
            _ if slot.error.is_some() => self.finish(s, Ok(())),
            _ => {
                if let Some(p) = slot.parity.take() {
                    self.leave(p);
                }
                self.runnable.push_back(s);
            }
        }
    }

    fn take_replies(&mut self) {
        if !self.me.has_replies.swap(false, Ordering::AcqRel) {
            return;
        }
        std::mem::swap(
            &mut *self.me.replies.lock().expect("reply lock"),
            &mut self.replies,
        );
        let mut replies = std::mem::take(&mut self.replies);
        for r in replies.drain(..) {
            if r.token & META_TOKEN == 0 {
                self.outstanding.retain(|&vc| vc != r.token);
            }
            let mut i = 0;
            while i < self.held.len() {
                let s = self.held[i];
                let slot = &mut self.slots[s as usize];
                let hit = match slot.wait {
                    Wait::Cluster(vc) => r.token & META_TOKEN == 0 && vc == r.token,
                    Wait::Token(t) => t == r.token,
                    Wait::None => false,
                };
                if !hit {
                    i += 1;
                    continue;
                }
                self.held.swap_remove(i);
                if let Some(t0) = slot.held_since.take() {
                    raise_max(
                        &self.me.counters.held_time_max_ns,
                        t0.elapsed().as_nanos() as u64,
                    );
                }
                let meta = matches!(slot.wait, Wait::Token(_));
                slot.wait = Wait::None;
                match r.result {
                    Ok(()) => {
                        if meta {
                            // The metadata op did the whole piece.
                            let kind = slot.io.as_ref().expect("busy slot").kind;
                            let cb = self.cb;
                            let (cur, blocks, num) = match kind {
                                IoKind::Copy {
                                    dst_lba, blocks, ..
                                } => (dst_lba + slot.cursor, blocks, u64::MAX),
                                IoKind::WriteZeroes { lba, blocks }
                                | IoKind::Unmap { lba, blocks } => {
                                    (lba + slot.cursor, blocks, u64::MAX)
                                }
                                _ => (0, 0, 0),
                            };
                            let _ = num;
                            let off = cur % cb;
                            slot.cursor += (cb - off).min(blocks - slot.cursor);
                        }
                        self.runnable.push_back(s);
                    }
                    Err(e) => self.finish(s, Err(e.to_bdev())),
                }
            }
        }
        self.replies = replies;
    }

    fn expire_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let offline = !self.vol.pool.online.load(Ordering::Acquire);
        let timeout = Duration::from_nanos(self.vol.pool.hold_timeout_ns.load(Ordering::Relaxed));
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            let s = self.held[i];
            let since = self.slots[s as usize].held_since.unwrap_or(now);
            if offline || now.duration_since(since) >= timeout {
                self.held.swap_remove(i);
                raise_max(
                    &self.me.counters.held_time_max_ns,
                    now.duration_since(since).as_nanos() as u64,
                );
                if let Wait::Cluster(vc) = self.slots[s as usize].wait {
                    if !self
                        .held
                        .iter()
                        .any(|&h| self.slots[h as usize].wait == Wait::Cluster(vc))
                    {
                        self.outstanding.retain(|&v| v != vc);
                    }
                }
                let why = if offline {
                    "pool offline"
                } else {
                    "volume metadata owner did not answer in time"
                };
                self.finish(s, Err(BdevError::NotReady(why)));
            } else {
                i += 1;
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
