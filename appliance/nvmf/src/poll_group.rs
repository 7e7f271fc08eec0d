//! The NVMe side of one reactor: the queue pairs whose connections live there and that reactor's
//! I/O channels to every backend it touches (SPDK's nvmf poll group).
//!
//! Queue pair lifecycle, driven by the transport:
//!
//! ```text
//!   add_qpair --> AwaitingConnect --Connect ok--> Active --remove_qpair--> Closing --drained--> (freed)
//!                       |                           |  controller failed /
//!                       +--------remove_qpair-------+  keep-alive expired: GroupEvent::Close
//! ```
//!
//! Every command handed to [`PollGroup::execute`] produces exactly one [`Response`], at once or
//! later from [`PollGroup::poll`], unless its queue pair is removed first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevError, BdevId, BdevIo, BlockDevice, IoChannel};
use ferrite_nvme::{Command, Completion, Status};
use ferrite_reactor::{IoBuf, TaskContext};

use crate::controller::{Controller, HealthCounters};
use crate::request::{Request, Response};
use crate::subsystem::Subsystem;
use crate::target::Target;

/// The transport's identifier of a connection (one queue pair) on this reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// What the poll group asks of the transport.
#[derive(Debug)]
pub enum GroupEvent {
    Respond(ConnId, Response),
    /// Close the connection (controller failed, keep-alive expired, access revoked).
    Close(ConnId),
}

/// How often failed controllers and keep-alive timers are checked.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_millis(50);
/// Backend completions reaped per channel per poll.
const REAP_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QpairState {
    AwaitingConnect,
    Active,
    /// Removed by the transport; waiting for backend I/O to drain.
    Closing,
}

/// A command's progress while backend operations are outstanding.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub in_use: bool,
    pub cid: u16,
    pub opcode: u8,
    /// Backend operations still outstanding.
    pub pending: u16,
    pub status: Status,
    /// Data buffer (host data for writes, read data for reads).
    pub buf: Option<IoBuf>,
    /// Second buffer (Compare reads the medium into it).
    pub aux: Option<IoBuf>,
    /// Bytes of `buf` that go to the host on success.
    pub data_len: u32,
    pub nsid: u32,
    pub lba: u64,
    /// When a Read or Write counted in the namespace statistics was accepted.
    pub started: Option<Instant>,
    /// A Copy command's progress (one boxed job per Copy; Copy is not on the Read/Write
    /// fast path).
    pub copy: Option<Box<crate::copy_job::CopyJob>>,
    /// The namespace's Preempt and Abort epoch when an I/O command passed the reservation
    /// check (see `resv_abort.rs`).
    pub resv_epoch: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Qpair {
    pub generation: u16,
    pub state: QpairState,
    pub ctrl: Option<Arc<Controller>>,
    pub qid: u16,
    /// The controller's enable epoch this I/O queue connected in (see `Controller::reset`).
    pub epoch: u32,
    /// Submission queue entries (SQSIZE + 1).
    pub sq_entries: u16,
    pub sqhd: u16,
    pub sqflow_disabled: bool,
    pub subsystem: Option<Arc<Subsystem>>,
    /// Plain copies of what the I/O path needs per namespace, indexed by NSID: no shared
    /// reference counts are touched per I/O.
    pub ns_table: Vec<Option<NsInfo>>,
    pub config_generation: u64,
    pub counters: Arc<HealthCounters>,
    pub slots: Vec<Slot>,
    pub outstanding: usize,
    /// Outstanding Asynchronous Event Requests: (slot, cid).
    pub aers: Vec<(u16, u16)>,
    /// Flushes still running for a CC.SHN shutdown.
    pub shutdown_flushes: u16,
    /// The target address the connection arrived on.
    pub local: Option<std::net::SocketAddr>,
    /// The DH-HMAC-CHAP transaction of a host that must authenticate (see `auth.rs`).
    pub auth: Option<Box<ferrite_auth::ControllerAuth>>,
    /// When the current authentication transaction must have succeeded (see `auth.rs`).
    pub auth_deadline: Option<Instant>,
}

impl Qpair {
    fn new(generation: u16) -> Qpair {
        Qpair {
            generation,
            state: QpairState::AwaitingConnect,
            ctrl: None,
            qid: 0,
            epoch: 0,
            sq_entries: crate::MAX_ADMIN_QUEUE_ENTRIES,
            sqhd: 0,
            sqflow_disabled: false,
            subsystem: None,
            ns_table: Vec::new(),
            config_generation: 0,
            counters: Arc::new(HealthCounters::default()),
            // Preallocated: the command path never grows them.
            slots: (0..crate::MAX_COMMAND_SLOTS)
                .map(|_| Slot::default())
                .collect(),
            outstanding: 0,
            aers: Vec::with_capacity(crate::MAX_AERS),
            shutdown_flushes: 0,
            local: None,
            auth: None,
            auth_deadline: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.qid == 0
    }

    /// Slot `slot` (below [`crate::MAX_COMMAND_SLOTS`]: `begin` refuses others).
    pub fn slot_mut(&mut self, slot: u16) -> &mut Slot {
        &mut self.slots[slot as usize]
    }
}

/// What the I/O path needs of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NsInfo {
    pub bdev_id: BdevId,
    pub block_size: u32,
    pub num_blocks: u64,
    pub volatile_cache: bool,
    pub unmap: bool,
    /// The bdev serves `IoKind::Copy`; otherwise Copy is emulated with Read + Write.
    pub copy: bool,
    /// Write-protected (a snapshot): modifying commands are refused.
    pub read_only: bool,
    /// The namespace's ANA group state on this queue's path.
    pub ana: crate::subsystem::AnaState,
}

impl NsInfo {
    /// The table of a queue that arrived on local address `local` (its ANA path).
    pub fn table(sub: &Subsystem, local: Option<std::net::SocketAddr>) -> Vec<Option<NsInfo>> {
        let max = sub.namespaces.keys().next_back().copied().unwrap_or(0) as usize;
        let mut table = vec![None; max + 1];
        for (nsid, ns) in &sub.namespaces {
            let caps = ns.bdev.capabilities();
            table[*nsid as usize] = Some(NsInfo {
                bdev_id: ns.bdev_id,
                block_size: ns.bdev.block_size(),
                num_blocks: ns.bdev.num_blocks(),
                volatile_cache: caps.volatile_write_cache,
                unmap: caps.unmap,
                copy: caps.copy,
                read_only: caps.read_only,
                ana: sub.ana_state(local, ns.anagrpid),
            });
        }
        table
    }
}

/// Counters of one poll group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollGroupStats {
    pub qpairs: usize,
    pub commands: u64,
    pub errors: u64,
    pub backend_queue_full: u64,
    /// AERs dropped because the host reused their CID (see [`PollGroup::forget_aer`]).
    pub abandoned_aers: u64,
    pub channels: usize,
}

struct ChannelEntry {
    bdev: Arc<dyn BlockDevice>,
    chan: Box<dyn IoChannel>,
}

/// The slot id used for backend I/O that belongs to no command (shutdown flushes).
pub(crate) const INTERNAL_SLOT: u16 = u16::MAX;

pub struct PollGroup {
    pub(crate) target: Arc<Target>,
    pub(crate) qpairs: Vec<Option<Qpair>>,
    channels: Vec<Option<ChannelEntry>>,
    /// Backend submissions refused with a full queue, retried on the next poll.
    retry: VecDeque<(BdevId, BdevIo)>,
    completions: Vec<(BdevIo, Result<(), BdevError>)>,
    /// Responses produced outside `execute` (AERs, internal completions), emitted by `poll`.
    deferred: Vec<GroupEvent>,
    admin_qpairs: Vec<ConnId>,
    next_housekeeping: Option<Instant>,
    next_generation: u16,
    pub(crate) stats: PollGroupStats,
    /// The transport moves data by Keyed SGL Data Blocks (NVMe/RDMA), as Identify reports.
    pub(crate) keyed_sgl: bool,
    /// I/O limits (QoS): this reactor's token buckets and waiting commands.
    pub(crate) qos: crate::qos_gate::QosGate,
}

impl std::fmt::Debug for PollGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollGroup")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Result of handing a command to the poll group.
#[derive(Debug)]
pub enum Exec {
    Done(Response),
    /// The response will come from `poll`.
    Pending,
}

impl PollGroup {
    pub fn new(target: Arc<Target>) -> PollGroup {
        PollGroup {
            target,
            qpairs: Vec::new(),
            channels: Vec::new(),
            retry: VecDeque::new(),
            completions: Vec::with_capacity(REAP_BATCH),
            deferred: Vec::new(),
            admin_qpairs: Vec::new(),
            next_housekeeping: None,
            next_generation: 0,
            stats: PollGroupStats::default(),
            qos: Default::default(),
            keyed_sgl: false,
        }
    }

    /// A poll group for a transport that names host memory with Keyed SGL Data Blocks
    /// (NVMe/RDMA): Identify Controller advertises them.
    pub fn with_keyed_sgl(target: Arc<Target>) -> PollGroup {
        PollGroup {
            keyed_sgl: true,
            ..PollGroup::new(target)
        }
    }

    /// The transport of this group's connections (RDMA is the one with keyed SGLs).
    pub fn trtype(&self) -> crate::subsystem::Trtype {
        if self.keyed_sgl {
            crate::subsystem::Trtype::Rdma
        } else {
            crate::subsystem::Trtype::Tcp
        }
    }

    pub fn stats(&self) -> PollGroupStats {
        PollGroupStats {
            qpairs: self.qpairs.iter().flatten().count(),
            channels: self.channels.iter().flatten().count(),
            ..self.stats
        }
    }

    /// Registers a new connection. `conn` must not be in use (see [`PollGroup::is_released`]).
    /// Registers a new connection that arrived on local address `local` (which decides the
    /// subsystems it may reach). `conn` must not be in use (see [`PollGroup::is_released`]).
    pub fn add_qpair(&mut self, conn: ConnId, local: std::net::SocketAddr) {
        let index = conn.0 as usize;
        if self.qpairs.len() <= index {
            self.qpairs.resize_with(index + 1, || None);
        }
        debug_assert!(
            self.qpairs[index].is_none(),
            "ConnId {conn:?} reused before release"
        );
        self.next_generation = self.next_generation.wrapping_add(1);
        let mut qp = Qpair::new(self.next_generation);
        qp.local = Some(local);
        self.qpairs[index] = Some(qp);
    }

    /// The connection is gone. Outstanding AERs are dropped; backend I/O drains in `poll`, after
    /// which the id is released.
    pub fn remove_qpair(&mut self, conn: ConnId, cx: &mut TaskContext) {
        let Some(qp) = self
            .qpairs
            .get_mut(conn.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        for (slot, _) in std::mem::take(&mut qp.aers) {
            let s = qp.slot_mut(slot);
            s.in_use = false;
            qp.outstanding -= 1;
        }
        qp.state = QpairState::Closing;
        self.admin_qpairs.retain(|c| *c != conn);
        // Responses not yet handed out for this connection have nowhere to go.
        let mut kept = Vec::with_capacity(self.deferred.len());
        for event in self.deferred.drain(..) {
            match event {
                GroupEvent::Respond(c, resp) if c == conn => {
                    if let Some(buf) = resp.buf {
                        cx.put_buffer(buf);
                    }
                }
                GroupEvent::Close(c) if c == conn => {}
                other => kept.push(other),
            }
        }
        self.deferred = kept;
        self.qos_purge(conn, cx);
        self.try_release(conn, cx);
    }

    /// The host sent a command whose CID belongs to an Asynchronous Event Request still held
    /// here. By the base specification a CID stays in use until its completion is posted, so the
    /// host is at fault; but SPDK's initiator completes its own AERs locally when it detaches (no
    /// Abort is sent) and reuses their CIDs for the shutdown Property Set, and both SPDK's and
    /// Linux's targets accept that. An abandoned AER has no data and no side effect, so it is
    /// dropped without a completion. Returns the AER's slot, or None when `cid` is no AER here.
    pub fn forget_aer(&mut self, conn: ConnId, cid: u16) -> Option<u16> {
        let qp = self.qpair_mut(conn)?;
        let pos = qp.aers.iter().position(|&(_, c)| c == cid)?;
        let (slot, _) = qp.aers.remove(pos);
        qp.slot_mut(slot).in_use = false;
        qp.outstanding -= 1;
        self.stats.abandoned_aers += 1;
        Some(slot)
    }

    /// True when `conn` may be given to `add_qpair` again.
    pub fn is_released(&self, conn: ConnId) -> bool {
        self.qpairs.get(conn.0 as usize).is_none_or(Option::is_none)
    }

    /// Whether responses on this queue may omit the completion capsule when successful.
    pub fn sqflow_disabled(&self, conn: ConnId) -> bool {
        self.qpair(conn).is_some_and(|q| q.sqflow_disabled)
    }

    fn try_release(&mut self, conn: ConnId, cx: &mut TaskContext) {
        let index = conn.0 as usize;
        let drained = self.qpairs[index].as_ref().is_some_and(|q| {
            q.state == QpairState::Closing && q.outstanding == 0 && q.shutdown_flushes == 0
        });
        if !drained {
            return;
        }
        let qp = self.qpairs[index].take().expect("checked above");
        for slot in qp.slots {
            let job_buf = slot.copy.and_then(|mut j| j.take_buf());
            for buf in [slot.buf, slot.aux, job_buf].into_iter().flatten() {
                cx.put_buffer(buf);
            }
        }
        if let Some(ctrl) = qp.ctrl {
            ctrl.retire_counters(&qp.counters);
            if qp.qid == 0 {
                self.target.destroy_controller(ctrl.cntlid);
            } else {
                ctrl.release_io_queue(qp.qid, qp.epoch);
            }
        }
    }

    pub(crate) fn qpair(&self, conn: ConnId) -> Option<&Qpair> {
        self.qpairs.get(conn.0 as usize).and_then(Option::as_ref)
    }

    pub(crate) fn qpair_mut(&mut self, conn: ConnId) -> Option<&mut Qpair> {
        self.qpairs
            .get_mut(conn.0 as usize)
            .and_then(Option::as_mut)
    }

    pub(crate) fn mark_admin(&mut self, conn: ConnId) {
        if !self.admin_qpairs.contains(&conn) {
            self.admin_qpairs.push(conn);
        }
    }

    /// Whether a command may go ahead on this queue before its data is transferred: only a
    /// Fabrics command (Connect) is admitted before the queue is connected.
    pub fn admit(&self, conn: ConnId, cmd: &Command) -> Result<(), Status> {
        match self.qpair(conn) {
            Some(qp) if qp.state == QpairState::Active || cmd.is_fabrics() => Ok(()),
            Some(_) => Err(Status::COMMAND_SEQUENCE_ERROR),
            None => Err(Status::INTERNAL_ERROR),
        }
    }

    /// Accounts a newly received command: SQ head, slot. False for an unknown connection.
    fn begin(&mut self, conn: ConnId, slot: u16, cmd: &Command) -> bool {
        self.stats.commands += 1;
        let Some(qp) = self.qpair_mut(conn) else {
            debug_assert!(false, "command on unknown connection {conn:?}");
            return false;
        };
        if slot as usize >= qp.slots.len() {
            debug_assert!(false, "transport used slot {slot} beyond MAX_COMMAND_SLOTS");
            return false;
        }
        qp.sqhd = (qp.sqhd + 1) % qp.sq_entries.max(1);
        let s = qp.slot_mut(slot);
        debug_assert!(!s.in_use, "transport reused busy slot {slot}");
        *s = Slot {
            in_use: true,
            cid: cmd.cid.get(),
            opcode: cmd.opcode,
            ..Slot::default()
        };
        qp.outstanding += 1;
        true
    }

    /// Completes a command the transport could not carry out (bad SGL, data digest error) with
    /// `status`, chosen here by `plan_data` or by the transport-specific rules.
    pub fn reject(
        &mut self,
        conn: ConnId,
        slot: u16,
        cmd: &Command,
        status: Status,
        cx: &mut TaskContext,
    ) -> Response {
        if !self.begin(conn, slot, cmd) {
            return self.plain_response(slot, cmd.cid.get(), status);
        }
        self.build_response(conn, slot, status, 0, None, cx)
    }

    /// Executes one command. Exactly one response follows, now or from `poll`.
    pub fn execute(&mut self, conn: ConnId, req: Request, cx: &mut TaskContext) -> Exec {
        if !self.begin(conn, req.slot, &req.cmd) {
            if let Some(buf) = req.buf {
                cx.put_buffer(buf);
            }
            return Exec::Done(self.plain_response(
                req.slot,
                req.cmd.cid.get(),
                Status::INTERNAL_ERROR,
            ));
        }
        let qp = self.qpair(conn).expect("begin checked the qpair");
        let state = qp.state;
        let is_admin = qp.is_admin();

        if req.cmd.fuse() != 0 {
            return self.finish(conn, req.slot, Status::INVALID_FIELD, 0, req.buf, cx);
        }
        if req.cmd.is_fabrics() {
            return self.execute_fabrics(conn, req, cx);
        }
        if state != QpairState::Active {
            return self.finish(
                conn,
                req.slot,
                Status::COMMAND_SEQUENCE_ERROR,
                0,
                req.buf,
                cx,
            );
        }
        if self.auth_pending(conn) {
            return self.finish(
                conn,
                req.slot,
                Status::AUTHENTICATION_REQUIRED,
                0,
                req.buf,
                cx,
            );
        }
        if let Err(status) = self.check_enabled(conn) {
            return self.finish(conn, req.slot, status, 0, req.buf, cx);
        }
        if is_admin {
            self.execute_admin(conn, req, cx)
        } else {
            self.execute_io_shaped(conn, req, cx)
        }
    }

    /// Commands other than Fabrics ones need an enabled controller (CC.EN = 1, CSTS.RDY = 1):
    /// Command Sequence Error otherwise. An I/O queue from before a controller reset is torn
    /// down: its commands fail and its connection is closed. One atomic load per command.
    fn check_enabled(&mut self, conn: ConnId) -> Result<(), Status> {
        let qp = self.qpair(conn).expect("execute checked the qpair");
        let Some(ctrl) = qp.ctrl.as_ref() else {
            return Err(Status::COMMAND_SEQUENCE_ERROR);
        };
        if qp.is_admin() {
            return if ctrl.is_ready() {
                Ok(())
            } else {
                Err(Status::COMMAND_SEQUENCE_ERROR)
            };
        }
        if qp.epoch == ctrl.epoch() {
            return Ok(());
        }
        self.defer(GroupEvent::Close(conn));
        Err(Status::COMMAND_SEQUENCE_ERROR)
    }

    fn plain_response(&self, slot: u16, cid: u16, status: Status) -> Response {
        Response {
            slot,
            cqe: Completion::new(cid, status),
            buf: None,
            data_len: 0,
            may_elide_completion: false,
        }
    }

    /// Completes a command: frees its slot, records errors, builds the response. A data buffer
    /// is passed to the host when `status` is success and the command read data; otherwise it is
    /// returned to the pool.
    pub(crate) fn finish(
        &mut self,
        conn: ConnId,
        slot: u16,
        status: Status,
        dw0: u32,
        buf: Option<IoBuf>,
        cx: &mut TaskContext,
    ) -> Exec {
        Exec::Done(self.build_response(conn, slot, status, dw0, buf, cx))
    }

    pub(crate) fn build_response(
        &mut self,
        conn: ConnId,
        slot: u16,
        status: Status,
        dw0: u32,
        buf: Option<IoBuf>,
        cx: &mut TaskContext,
    ) -> Response {
        let qp = self.qpairs[conn.0 as usize]
            .as_mut()
            .expect("caller holds a live qpair");
        let (cid, data_len, nsid, lba, aux, started, resv_epoch) = {
            let s = qp.slot_mut(slot);
            s.in_use = false;
            (
                s.cid,
                s.data_len,
                s.nsid,
                s.lba,
                s.aux.take(),
                s.started.take(),
                s.resv_epoch.take(),
            )
        };
        let status = resv_epoch
            .and_then(|since| {
                crate::resv_cmd::preempt_abort_status(
                    qp.subsystem.as_ref(),
                    qp.ctrl.as_ref(),
                    nsid,
                    since,
                )
            })
            .unwrap_or(status);
        if let Some(started) = started {
            if let Some(ns) = qp.subsystem.as_ref().and_then(|s| s.namespaces.get(&nsid)) {
                ns.stats.completed(
                    cx.reactor_index(),
                    cx.now().saturating_duration_since(started),
                );
            }
        }
        if let Some(aux) = aux {
            cx.put_buffer(aux);
        }
        qp.outstanding -= 1;
        let cqe = Completion::new(cid, status)
            .with_result(dw0)
            .with_sq(qp.sqhd, qp.qid);
        let send_data = status.is_success() && data_len > 0;
        let buf = match buf {
            Some(b) if send_data => Some(b),
            Some(b) => {
                cx.put_buffer(b);
                None
            }
            None => None,
        };
        if !status.is_success() {
            self.stats.errors += 1;
            if let Some(ctrl) = &qp.ctrl {
                ctrl.record_error(qp.qid, cid, status, nsid, lba);
            }
        }
        Response {
            slot,
            cqe,
            data_len: if buf.is_some() { data_len } else { 0 },
            buf,
            may_elide_completion: status.is_success() && qp.sqflow_disabled,
        }
    }

    /// The channel of bdev `id` on this reactor, opened on first use.
    pub(crate) fn channel(
        &mut self,
        id: BdevId,
        cx: &mut TaskContext,
    ) -> Result<&mut Box<dyn IoChannel>, BdevError> {
        let index = id.0 as usize;
        if self.channels.len() <= index {
            self.channels.resize_with(index + 1, || None);
        }
        if self.channels[index].is_none() {
            let cfg = self.target.config();
            let bdev = cfg
                .bdevs
                .values()
                .find(|b| b.id == id)
                .map(|b| Arc::clone(&b.bdev))
                .ok_or(BdevError::Unsupported("the bdev was deleted"))?;
            let small = cx.small_pool().regions().clone();
            let large = cx.large_pool().regions().clone();
            let chan = bdev.open_channel(&[&small, &large])?;
            if let Some(fd) = chan.wakeup_fd() {
                if let Err(e) = cx.register_wakeup_fd(fd) {
                    log::warn!(
                        "bdev {} channel: no interrupt-mode wakeups: {e}",
                        bdev.name()
                    );
                }
            }
            self.channels[index] = Some(ChannelEntry { bdev, chan });
        }
        Ok(&mut self.channels[index].as_mut().expect("opened above").chan)
    }

    /// Submits one backend operation for `slot` of `conn`. On refusal other than a full queue the
    /// buffer comes back with the error.
    pub(crate) fn submit(
        &mut self,
        conn: ConnId,
        slot: u16,
        bdev_id: BdevId,
        kind: ferrite_bdev::IoKind,
        buf: Option<IoBuf>,
        cx: &mut TaskContext,
    ) -> Result<(), (Option<IoBuf>, BdevError)> {
        let generation = self.qpairs[conn.0 as usize]
            .as_ref()
            .map_or(0, |q| q.generation);
        let tag = encode_tag(conn, generation, slot);
        let io = BdevIo::new(tag, kind, buf);
        let chan = match self.channel(bdev_id, cx) {
            Ok(chan) => chan,
            Err(e) => return Err((io.buf, e)),
        };
        match chan.submit(io) {
            Ok(()) => {}
            Err((io, BdevError::QueueFull)) => {
                self.stats.backend_queue_full += 1;
                self.retry.push_back((bdev_id, io));
            }
            Err((io, e)) => return Err((io.buf, e)),
        }
        if let Some(qp) = self.qpairs[conn.0 as usize].as_mut() {
            if slot != INTERNAL_SLOT {
                qp.slot_mut(slot).pending += 1;
            } else {
                qp.shutdown_flushes += 1;
            }
        }
        Ok(())
    }

    /// Reaps backend completions, retries refused submissions, delivers events and checks
    /// controller liveness. Returns whether anything happened.
    pub fn poll(&mut self, cx: &mut TaskContext, out: &mut dyn FnMut(GroupEvent)) -> bool {
        let mut busy = false;
        for event in self.deferred.drain(..) {
            out(event);
            busy = true;
        }
        busy |= self.retry_submissions();
        busy |= self.qos_poll(cx, out);
        for index in 0..self.channels.len() {
            let Some(entry) = self.channels[index].as_mut() else {
                continue;
            };
            if entry.chan.in_flight() == 0 {
                continue;
            }
            let completions = &mut self.completions;
            entry
                .chan
                .poll(REAP_BATCH, &mut |io, result| completions.push((io, result)));
            let mut done = std::mem::take(&mut self.completions);
            for (io, result) in done.drain(..) {
                busy = true;
                if let Some(event) = self.backend_completion(io, result, cx) {
                    out(event);
                }
            }
            self.completions = done;
        }
        busy |= self.deliver_events(cx, out);
        let now = cx.now();
        if self.next_housekeeping.is_none_or(|t| now >= t) {
            self.next_housekeeping = Some(now + HOUSEKEEPING_PERIOD);
            self.housekeeping(now, out);
        }
        busy
    }

    /// Time of the next housekeeping pass, for interrupt-mode wakeups.
    pub fn next_deadline(&self) -> Option<Instant> {
        let qos = self.qos.next_deadline();
        match (self.next_housekeeping, qos) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn retry_submissions(&mut self) -> bool {
        let mut progressed = false;
        for _ in 0..self.retry.len() {
            let Some((id, io)) = self.retry.pop_front() else {
                break;
            };
            let Some(entry) = self
                .channels
                .get_mut(id.0 as usize)
                .and_then(Option::as_mut)
            else {
                // Channel vanished: impossible while I/O is queued for it.
                debug_assert!(false, "retry for closed channel");
                continue;
            };
            match entry.chan.submit(io) {
                Ok(()) => progressed = true,
                Err((io, _)) => {
                    self.retry.push_front((id, io));
                    break;
                }
            }
        }
        progressed
    }

    fn backend_completion(
        &mut self,
        io: BdevIo,
        result: Result<(), BdevError>,
        cx: &mut TaskContext,
    ) -> Option<GroupEvent> {
        let (conn, generation, slot) = decode_tag(io.tag);
        let live = self.qpair(conn).is_some_and(|q| q.generation == generation);
        if !live {
            if let Some(buf) = io.buf {
                cx.put_buffer(buf);
            }
            return None;
        }
        if slot == INTERNAL_SLOT {
            self.shutdown_flush_done(conn, result.is_ok());
            if let Some(buf) = io.buf {
                cx.put_buffer(buf);
            }
            self.try_release(conn, cx);
            return None;
        }
        let closing = self
            .qpair(conn)
            .is_some_and(|q| q.state == QpairState::Closing);
        let response = self.io_completion(conn, slot, io, result, cx);
        if closing {
            if let Some(resp) = response {
                if let Some(buf) = resp.buf {
                    cx.put_buffer(buf);
                }
            }
            self.try_release(conn, cx);
            return None;
        }
        response.map(|r| GroupEvent::Respond(conn, r))
    }

    /// Completes outstanding AERs for controllers with pending events.
    fn deliver_events(&mut self, cx: &mut TaskContext, out: &mut dyn FnMut(GroupEvent)) -> bool {
        let mut busy = false;
        for i in 0..self.admin_qpairs.len() {
            let conn = self.admin_qpairs[i];
            let Some(qp) = self.qpair_mut(conn) else {
                continue;
            };
            let Some(ctrl) = qp.ctrl.clone() else {
                continue;
            };
            if qp.aers.is_empty() || !ctrl.has_pending_event() {
                continue;
            }
            let Some(event) = ctrl.take_event() else {
                continue;
            };
            let (slot, _cid) = qp.aers.remove(0);
            let resp = self.build_response(conn, slot, Status::SUCCESS, event.dw0(), None, cx);
            out(GroupEvent::Respond(conn, resp));
            busy = true;
        }
        busy
    }

    fn housekeeping(&mut self, now: Instant, out: &mut dyn FnMut(GroupEvent)) {
        for (index, qp) in self.qpairs.iter().enumerate() {
            let Some(qp) = qp else { continue };
            if qp.state != QpairState::Active {
                continue;
            }
            let Some(ctrl) = &qp.ctrl else { continue };
            if qp.is_admin() && !ctrl.is_failed() && ctrl.keep_alive_expired(now) {
                ctrl.fail("keep-alive timeout expired");
            }
            // A failed controller loses every queue; a reset one its I/O queues; a host that
            // stopped in the middle of authenticating loses the queue.
            if ctrl.is_failed()
                || (!qp.is_admin() && qp.epoch != ctrl.epoch())
                || crate::auth::auth_expired(qp, now)
            {
                out(GroupEvent::Close(ConnId(index as u32)));
            }
        }
    }

    pub(crate) fn defer(&mut self, event: GroupEvent) {
        self.deferred.push(event);
    }

    /// Closes channels whose bdev left the configuration and that have nothing in flight.
    pub fn prune_channels(&mut self) {
        let cfg = self.target.config();
        for entry in self.channels.iter_mut() {
            let gone = entry.as_ref().is_some_and(|e| {
                e.chan.in_flight() == 0
                    && !cfg.bdevs.values().any(|b| Arc::ptr_eq(&b.bdev, &e.bdev))
            });
            if gone && self.retry.is_empty() {
                *entry = None;
            }
        }
    }
}

fn encode_tag(conn: ConnId, generation: u16, slot: u16) -> u64 {
    ((conn.0 as u64) << 32) | ((generation as u64) << 16) | slot as u64
}

fn decode_tag(tag: u64) -> (ConnId, u16, u16) {
    (ConnId((tag >> 32) as u32), (tag >> 16) as u16, tag as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let tag = encode_tag(ConnId(70_000), 513, 127);
        assert_eq!(decode_tag(tag), (ConnId(70_000), 513, 127));
        assert_eq!(
            decode_tag(encode_tag(ConnId(1), 0, INTERNAL_SLOT)).2,
            INTERNAL_SLOT
        );
    }
}
