//! The NVMe/RDMA queue pair engine (NVMe over Fabrics RDMA transport binding, host side).
//!
//! One RDMA connection-manager id and reliable-connection queue pair per NVMe queue. Command
//! capsules go out with SEND from a registered send ring (write data up to the in-capsule size
//! after the SQE); response capsules land in preposted 16-byte receive entries. Larger writes
//! and every read name a Keyed SGL Data Block: a per-cid buffer registered for remote access,
//! which the controller reads with RDMA READ or fills with RDMA WRITE before it sends the
//! response. The per-cid buffers grow to the largest transfer seen and are reused, so steady
//! state I/O does not allocate or register memory.
//!
//! ```text
//!  connect(): resolve address, route --> RDMA connect (CM private data) --Established-->
//!  AwaitConnect --Fabrics Connect OK--> Ready ; any error --> Failed
//! ```
//!
//! A cid is free again only once both its response arrived and its SEND completed (the send
//! entry is reused by the cid's next command). Waiting sleeps on a completion channel armed
//! when a poll finds nothing, and on the connection manager's channel (disconnects).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrite_nvme::command::PSDT_SGL_MPTR_CONTIGUOUS;
use ferrite_nvme::rdma::{cm_reject, parse_reject, CmRequest, KeyedSgl};
use ferrite_nvme::{Command, Completion, SglDescriptor};
use ferrite_rdma::{
    Access, CmEvent, CmEventKind, CmId, CompletionChannel, CompletionQueue, EventChannel, Opcode,
    OwnedRegion, ProtectionDomain, QpCaps, QueuePair as VerbsQp, RdmaError, WorkCompletion,
};
use rustix::event::{PollFd, PollFlags};
use zerocopy::IntoBytes;

use super::slots::{Dir, Slots};
use super::{
    begin_command, connect_answered, connect_capsule, drive_until_ready, finish_command,
    poll_engine, poll_fds, Completed, Data, Engine, Negotiated, QpState, QueuePairConfig, SglMode,
};
use crate::error::{HostError, Result};
use crate::types::Cid;

/// Bytes of a response capsule (the CQE).
const RESPONSE_BYTES: usize = 16;
/// Bytes of the Fabrics Connect data, which always travels in-capsule.
const CONNECT_DATA_BYTES: u32 = 1024;
/// RDMA READs the controller may have in flight against our memory.
const RDMA_READ_DEPTH: u8 = 16;
/// Completions taken per CQ poll, and CQ polls per [`RdmaQueuePair::poll`].
const CQ_BATCH: usize = 32;
const CQ_POLLS: usize = 8;

const WR_RECV: u64 = 1 << 32;
const WR_SEND: u64 = 2 << 32;

fn rdma_err(what: &str) -> impl Fn(RdmaError) -> HostError + '_ {
    move |e| HostError::Rdma(format!("{what}: {e}"))
}

/// One NVMe/RDMA queue pair.
pub struct RdmaQueuePair {
    // Field order is drop order: the queue pair (and its CM id) before the CQ and channels,
    // the data regions after the queue pair that the controller reached them through.
    qp: VerbsQp,
    cq: CompletionQueue,
    comp: CompletionChannel,
    cm: EventChannel,
    pd: ProtectionDomain,
    data: Vec<Option<OwnedRegion>>,
    cfg: QueuePairConfig,
    state: QpState,
    neg: Negotiated,
    connect_cid: u16,
    slots: Slots,
    /// SEND of the cid's capsule not yet completed.
    send_busy: Vec<bool>,
    /// A response that arrived before its command's SEND completion.
    early: Vec<Option<Completion>>,
    armed: bool,
    wcs: Vec<WorkCompletion>,
    send_size: usize,
    addr: SocketAddr,
}

impl std::fmt::Debug for RdmaQueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaQueuePair")
            .field("addr", &self.addr)
            .field("qid", &self.cfg.qid)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Waits on the connection manager for `want` (or a failure) until `deadline`.
fn cm_wait(
    cm: &EventChannel,
    want: CmEventKind,
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
    what: &'static str,
) -> Result<CmEvent> {
    loop {
        match cm.next_event().map_err(rdma_err("connection manager"))? {
            Some(ev) if ev.kind == want => return Ok(ev),
            Some(ev) if ev.kind == CmEventKind::Rejected => {
                return Err(match parse_reject(ev.private_data()) {
                    Some(sts) => HostError::Rdma(format!(
                        "NVMe/RDMA connect to {addr} rejected: {} (status {sts})",
                        reject_name(sts)
                    )),
                    None => HostError::ConnectionRefused { addr },
                });
            }
            Some(ev) if ev.kind == CmEventKind::Error => {
                return Err(HostError::Rdma(format!(
                    "{what} for {addr} failed (status {})",
                    ev.status
                )))
            }
            Some(_) => continue,
            None => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HostError::Timeout {
                what,
                after: timeout,
            });
        }
        poll_fds(
            &mut [PollFd::from_borrowed_fd(cm.fd(), PollFlags::IN)],
            deadline - now,
        )?;
    }
}

fn reject_name(sts: u16) -> &'static str {
    match sts {
        cm_reject::INVALID_PRIVATE_DATA_LENGTH => "invalid private data length",
        cm_reject::INVALID_RECFMT => "invalid record format",
        cm_reject::INVALID_QID => "invalid queue ID",
        cm_reject::INVALID_HSQSIZE => "invalid host send queue size",
        cm_reject::INVALID_HRQSIZE => "invalid host receive queue size",
        cm_reject::NO_RESOURCES => "no resources",
        cm_reject::INVALID_IRD => "invalid IRD",
        cm_reject::INVALID_ORD => "invalid ORD",
        _ => "unknown status",
    }
}

impl RdmaQueuePair {
    /// Connects queue `cfg.qid` to the NVMe/RDMA listener at `addr` and drives the Fabrics
    /// Connect until the queue is ready.
    pub fn connect(
        addr: SocketAddr,
        cfg: QueuePairConfig,
        timeout: Duration,
    ) -> Result<RdmaQueuePair> {
        if cfg.queue_depth == 0 {
            return Err(HostError::InvalidArgument("queue depth 0".into()));
        }
        let deadline = Instant::now() + timeout;
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let cm = EventChannel::new().map_err(rdma_err("rdma_create_event_channel"))?;
        let id = CmId::new(&cm).map_err(rdma_err("rdma_create_id"))?;
        id.resolve_addr(addr, ms)
            .map_err(rdma_err("rdma_resolve_addr"))?;
        cm_wait(
            &cm,
            CmEventKind::AddrResolved,
            addr,
            deadline,
            timeout,
            "RDMA address resolution",
        )?;
        id.resolve_route(ms)
            .map_err(rdma_err("rdma_resolve_route"))?;
        cm_wait(
            &cm,
            CmEventKind::RouteResolved,
            addr,
            deadline,
            timeout,
            "RDMA route resolution",
        )?;
        let depth = usize::from(cfg.queue_depth);
        let pd = ProtectionDomain::alloc(&id).map_err(rdma_err("ibv_alloc_pd"))?;
        let comp = CompletionChannel::new(&pd).map_err(rdma_err("completion channel"))?;
        let cq_depth = i32::try_from(2 * depth + 2).unwrap_or(i32::MAX);
        let cq = CompletionQueue::with_channel(&pd, cq_depth, CQ_BATCH, &comp)
            .map_err(rdma_err("ibv_create_cq"))?;
        let send_size = 64 + cfg.in_capsule_max.max(CONNECT_DATA_BYTES) as usize;
        let caps = QpCaps {
            recv_entries: depth + 1,
            recv_size: RESPONSE_BYTES,
            send_entries: depth,
            send_size,
            max_send_wr: depth as u32,
            slots: 0,
        };
        let qp = VerbsQp::create(id, &pd, &cq, caps).map_err(rdma_err("rdma_create_qp"))?;
        let mut rq = RdmaQueuePair {
            qp,
            cq,
            comp,
            cm,
            pd,
            data: (0..depth).map(|_| None).collect(),
            slots: Slots::new(cfg.queue_depth),
            send_busy: vec![false; depth],
            early: vec![None; depth],
            cfg,
            state: QpState::AwaitConnect,
            neg: Negotiated::default(),
            connect_cid: 0,
            armed: false,
            wcs: Vec::with_capacity(CQ_BATCH),
            send_size,
            addr,
        };
        for i in 0..=depth {
            rq.qp
                .post_recv(i, WR_RECV | i as u64)
                .map_err(rdma_err("ibv_post_recv"))?;
        }
        let private = CmRequest {
            recfmt: 0,
            qid: rq.cfg.qid,
            hrqsize: rq.cfg.queue_depth + 1,
            hsqsize: rq.cfg.queue_depth,
            cntlid: rq.cfg.cntlid,
        }
        .encode();
        rq.qp
            .id()
            .connect(&private, RDMA_READ_DEPTH)
            .map_err(rdma_err("rdma_connect"))?;
        cm_wait(
            &rq.cm,
            CmEventKind::Established,
            addr,
            deadline,
            timeout,
            "the RDMA connection",
        )?;
        let (cmd, data) = connect_capsule(&rq.cfg)?;
        let cid = rq.queue_command(&cmd, Data::Write(data.as_bytes()), SglMode::InCapsule)?;
        rq.connect_cid = cid.0;
        drive_until_ready(&mut rq, deadline, timeout)?;
        Ok(rq)
    }

    pub fn state(&self) -> QpState {
        self.state
    }

    pub fn negotiated(&self) -> Negotiated {
        self.neg
    }

    pub fn config(&self) -> &QueuePairConfig {
        &self.cfg
    }

    pub fn depth(&self) -> u16 {
        self.slots.depth()
    }

    pub fn outstanding(&self) -> usize {
        self.slots.outstanding()
    }

    /// Changes the in-capsule limit, within what the send ring's entries hold.
    pub fn set_in_capsule_max(&mut self, bytes: u32) {
        self.cfg.in_capsule_max = bytes.min((self.send_size - 64) as u32);
    }

    /// The descriptor that becomes readable when a completion or connection event waits.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.comp.fd()
    }

    /// The read data of completed `cid` (valid until `cid` is reused), or the write data kept
    /// for the controller's RDMA READ.
    pub fn data(&self, cid: Cid) -> &[u8] {
        let (Some(s), Some(Some(region))) =
            (self.slots.get(cid.0), self.data.get(usize::from(cid.0)))
        else {
            return &[];
        };
        let n = match s.dir {
            Dir::FromController => s.received,
            Dir::ToControllerR2t => s.len,
            _ => 0,
        } as usize;
        region.entry(0).map_or(&[][..], |b| &b[..n.min(b.len())])
    }

    pub fn submit_with(&mut self, cmd: &Command, data: Data<'_>, mode: SglMode) -> Result<Cid> {
        if self.state != QpState::Ready {
            return Err(HostError::NotReady(self.state.name()));
        }
        self.queue_command(cmd, data, mode)
    }

    /// The registered buffer of `cid`, at least `len` bytes (grown and registered again when a
    /// larger transfer comes).
    fn buffer(&mut self, cid: u16, len: usize) -> Result<&mut OwnedRegion> {
        let entry = &mut self.data[usize::from(cid)];
        if entry.as_ref().is_none_or(|r| r.entry_len() < len) {
            *entry = None;
            let size = len.next_power_of_two().max(4096);
            *entry = Some(
                OwnedRegion::new(&self.pd, 1, size, Access::Remote)
                    .map_err(rdma_err("ibv_reg_mr"))?,
            );
        }
        Ok(entry.as_mut().expect("set above"))
    }

    fn queue_command(&mut self, cmd: &Command, data: Data<'_>, mode: SglMode) -> Result<Cid> {
        let (cid, mut cmd, dir) = begin_command(&mut self.slots, &self.cfg, cmd, data, mode)?;
        match self.send_capsule(cid, &mut cmd, dir, data, mode) {
            Ok(()) => Ok(Cid(cid)),
            Err(e) => {
                self.slots.unalloc(cid);
                Err(e)
            }
        }
    }

    fn send_capsule(
        &mut self,
        cid: u16,
        cmd: &mut Command,
        dir: Dir,
        data: Data<'_>,
        mode: SglMode,
    ) -> Result<()> {
        let len = data.len();
        let len32 = len as u32;
        if self.send_busy[usize::from(cid)] {
            return Err(HostError::QueueFull {
                depth: self.slots.depth(),
            });
        }
        if dir == Dir::ToControllerInCapsule && 64 + len > self.send_size {
            return Err(HostError::InvalidArgument(format!(
                "{len} bytes of in-capsule data exceed the {} this queue sends",
                self.send_size - 64
            )));
        }
        let keyed = if matches!(dir, Dir::FromController | Dir::ToControllerR2t) {
            let region = self.buffer(cid, len)?;
            if let (Dir::ToControllerR2t, Data::Write(d)) = (dir, data) {
                region.entry_mut(0).expect("one entry")[..len].copy_from_slice(d);
            }
            let remote = region.remote(0);
            KeyedSgl {
                addr: remote.addr,
                len: len32,
                key: remote.rkey,
                invalidate: false,
            }
        } else {
            // No data: a keyed block of length 0, as the binding asks.
            KeyedSgl {
                addr: 0,
                len: 0,
                key: 0,
                invalidate: false,
            }
        };
        if mode != SglMode::AsIs {
            cmd.set_psdt(PSDT_SGL_MPTR_CONTIGUOUS);
            cmd.dptr = match dir {
                Dir::ToControllerInCapsule => SglDescriptor::in_capsule(0, len32),
                _ => keyed.descriptor(),
            };
        }
        let capsule_len = {
            let entry = self
                .qp
                .send_entry(usize::from(cid))
                .ok_or_else(|| HostError::Rdma(format!("send entry {cid} busy")))?;
            entry[..64].copy_from_slice(cmd.as_bytes());
            match (dir, data) {
                (Dir::ToControllerInCapsule, Data::Write(d)) => {
                    entry[64..64 + len].copy_from_slice(d);
                    64 + len
                }
                _ => 64,
            }
        };
        self.qp
            .post_send(
                usize::from(cid),
                capsule_len,
                WR_SEND | u64::from(cid),
                None,
            )
            .map_err(rdma_err("SEND"))?;
        self.send_busy[usize::from(cid)] = true;
        self.slots
            .get_mut(cid)
            .expect("allocated cids index the slot table")
            .begin(dir, len32);
        Ok(())
    }

    /// Takes completions from the CQ (arming it when there were none) and appends command
    /// completions to `out`. A returned error is fatal: the queue pair is failed and closed.
    pub fn poll(&mut self, out: &mut Vec<Completed>) -> Result<usize> {
        poll_engine(self, out)
    }

    fn poll_inner(&mut self, out: &mut Vec<Completed>) -> Result<()> {
        if self
            .comp
            .take_events()
            .map_err(rdma_err("completion channel"))?
            > 0
        {
            self.armed = false;
        }
        while let Some(ev) = self
            .cm
            .next_event()
            .map_err(rdma_err("connection manager"))?
        {
            if matches!(ev.kind, CmEventKind::Disconnected | CmEventKind::Error) {
                return Err(HostError::ConnectionClosed);
            }
        }
        let before = out.len();
        self.drain(out)?;
        if out.len() == before && !self.armed {
            self.cq.arm().map_err(rdma_err("arming the CQ"))?;
            self.armed = true;
            // Completions that came before the arm do not signal: take them now.
            self.drain(out)?;
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<Completed>) -> Result<()> {
        for _ in 0..CQ_POLLS {
            let n = self
                .cq
                .poll(&mut self.wcs)
                .map_err(rdma_err("ibv_poll_cq"))?;
            for i in 0..n {
                let wc = self.wcs[i];
                self.on_completion(&wc, out)?;
            }
            if n < CQ_BATCH {
                break;
            }
        }
        Ok(())
    }

    fn on_completion(&mut self, wc: &WorkCompletion, out: &mut Vec<Completed>) -> Result<()> {
        if !wc.is_ok() {
            return Err(HostError::Rdma(format!(
                "{:?} work request failed: {}",
                wc.opcode,
                wc.status_str()
            )));
        }
        let index = (wc.wr_id & 0xFFFF_FFFF) as usize;
        match (wc.wr_id & !0xFFFF_FFFF, wc.opcode) {
            (WR_SEND, Opcode::Send) => {
                self.qp.send_done(index, wc);
                self.send_busy[index] = false;
                if let Some(cqe) = self.early[index].take() {
                    self.complete(index as u16, cqe, out)?;
                }
                Ok(())
            }
            (WR_RECV, Opcode::Recv) => {
                let cqe = {
                    let bytes = self
                        .qp
                        .received(index, wc)
                        .ok_or_else(|| HostError::Rdma("a receive not posted".into()))?;
                    Completion::parse(bytes).map_err(|e| {
                        HostError::Rdma(format!("a {}-byte response capsule: {e}", bytes.len()))
                    })?
                };
                self.qp
                    .post_recv(index, WR_RECV | index as u64)
                    .map_err(rdma_err("ibv_post_recv"))?;
                let cid = cqe.cid.get();
                if !self.slots.get(cid).is_some_and(|s| s.in_flight)
                    || self.early[usize::from(cid)].is_some()
                {
                    return Err(HostError::Rdma(format!(
                        "response for command {cid}, which is not outstanding"
                    )));
                }
                if self.send_busy[usize::from(cid)] {
                    self.early[usize::from(cid)] = Some(cqe);
                    return Ok(());
                }
                self.complete(cid, cqe, out)
            }
            (_, op) => Err(HostError::Rdma(format!(
                "unexpected completion {op:?} (wr_id {:#x})",
                wc.wr_id
            ))),
        }
    }

    fn complete(&mut self, cid: u16, cqe: Completion, out: &mut Vec<Completed>) -> Result<()> {
        if let Some(s) = self.slots.get_mut(cid) {
            if s.dir == Dir::FromController && cqe.status().is_success() {
                // The controller's RDMA WRITEs precede its SEND on the connection.
                s.received = s.len;
            }
        }
        let done = finish_command(&mut self.slots, cid, cqe, false);
        if self.state == QpState::AwaitConnect && cid == self.connect_cid {
            connect_answered(&self.cfg, cqe, &mut self.neg)?;
            self.set_state(QpState::Ready);
            return Ok(());
        }
        out.push(done);
        Ok(())
    }

    /// Nothing to flush: every capsule is posted when submitted.
    pub fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Blocks until a completion or connection event may be waiting, or `timeout` passes.
    /// The CQ is armed by the last [`RdmaQueuePair::poll`] that found nothing.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        if !self.armed {
            return Ok(true);
        }
        let mut fds = [
            PollFd::from_borrowed_fd(self.comp.fd(), PollFlags::IN),
            PollFd::from_borrowed_fd(self.cm.fd(), PollFlags::IN),
        ];
        poll_fds(&mut fds, timeout)
    }

    /// Disconnects. Outstanding commands are abandoned.
    pub fn close(&mut self) {
        if self.state != QpState::Failed {
            self.set_state(QpState::Failed);
        }
        let _ = self.qp.id().disconnect();
    }

    fn set_state(&mut self, to: QpState) {
        self.state.go(to);
    }
}

impl Engine for RdmaQueuePair {
    fn state(&self) -> QpState {
        self.state
    }
    fn poll_once(&mut self, out: &mut Vec<Completed>) -> Result<()> {
        self.poll_inner(out)
    }
    fn fail(&mut self, e: &HostError) {
        log::debug!("NVMe/RDMA queue {} failed: {e}", self.cfg.qid);
        self.close();
    }
    fn wait(&self, timeout: Duration) -> Result<bool> {
        RdmaQueuePair::wait(self, timeout)
    }
}
