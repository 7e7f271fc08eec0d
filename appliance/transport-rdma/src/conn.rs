//! One NVMe/RDMA queue pair: its capsule rings (in the verbs queue pair), command slots, and the
//! data movement of each command.
//!
//! ```text
//!  RECV capsule --plan--> InCapsule: copy data out --------------------> Executing
//!                    \--> FromHost: RDMA READ --completion-------------> Executing
//!                    \--> ToHost / None ----------------------------------> Executing
//!  Executing --response--> [RDMA WRITE data] + SEND completion --completion--> slot free
//! ```
//! A command waits in `waiting` when its reactor's buffer pool is empty and is retried on the
//! next flush; its capsule's receive entry is reposted only once the capsule has been read.

use std::collections::VecDeque;
use std::net::SocketAddr;

use ferrite_nvme::rdma::KeyedSgl;
use ferrite_nvme::{Command, Status};
use ferrite_nvmf::{
    plan_data, ConnId, DataPlan, Exec, PollGroup, Request, Response, TransportLimits,
    IN_CAPSULE_DATA_BYTES, MAX_COMMAND_SLOTS, MAX_TRANSFER_BYTES,
};
use ferrite_rdma::{PoolRegistration, QueuePair, RdmaError, RemoteBuf, WorkCompletion};
use ferrite_reactor::{IoBuf, TaskContext};
use zerocopy::IntoBytes;

use crate::wr::{encode, Kind};

/// Bytes of a command capsule: the SQE and the in-capsule data we accept.
pub(crate) const CAPSULE_BYTES: usize = 64 + IN_CAPSULE_DATA_BYTES as usize;
/// Bytes of a response capsule (the CQE).
pub(crate) const RESPONSE_BYTES: usize = 16;

const LIMITS: TransportLimits = TransportLimits {
    in_capsule: IN_CAPSULE_DATA_BYTES,
    max_transfer: MAX_TRANSFER_BYTES,
    keyed_sgl: true,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Waiting for a pool buffer (and, for in-capsule data, holding its receive entry).
    AwaitBuffer,
    /// RDMA READ of the host's data in flight.
    Reading,
    Executing,
    /// Completion (and data) sent, waiting for the send completion.
    Sending,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    state: SlotState,
    cmd: Command,
    plan: DataPlan,
    remote: Option<KeyedSgl>,
    /// The receive entry holding this command's in-capsule data, while it waits for a buffer.
    recv_entry: Option<(u16, u32)>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            state: SlotState::Free,
            cmd: Command::new(0, 0),
            plan: DataPlan::None,
            remote: None,
            recv_entry: None,
        }
    }
}

/// Why a connection must close.
#[derive(Debug)]
pub(crate) struct Gone(pub String);

pub(crate) struct Conn {
    pub qp: QueuePair,
    pub key: usize,
    pub peer: Option<SocketAddr>,
    id: ConnId,
    qid: u16,
    slots: Vec<Slot>,
    free: Vec<u16>,
    waiting: VecDeque<u16>,
    responses: VecDeque<Response>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The lkey of a pool buffer under one of the reactor's pool registrations.
pub(crate) fn lkey(pools: &[PoolRegistration], buf: &IoBuf, len: usize) -> Option<u32> {
    pools.iter().find_map(|p| p.lkey(buf, len))
}

impl Conn {
    pub fn new(qp: QueuePair, id: ConnId, qid: u16) -> Conn {
        let key = qp.id().key();
        let peer = qp.id().peer_addr();
        Conn {
            qp,
            key,
            peer,
            id,
            qid,
            slots: vec![Slot::default(); MAX_COMMAND_SLOTS],
            free: (0..MAX_COMMAND_SLOTS as u16).rev().collect(),
            waiting: VecDeque::with_capacity(MAX_COMMAND_SLOTS),
            responses: VecDeque::with_capacity(MAX_COMMAND_SLOTS),
        }
    }

    /// Posts every receive entry (before accepting the connection).
    pub fn post_all_recvs(&mut self, entries: usize) -> Result<(), RdmaError> {
        for i in 0..entries {
            self.qp
                .post_recv(i, encode(self.id.0, Kind::Recv, i as u16))?;
        }
        Ok(())
    }

    fn repost(&mut self, entry: u16) -> Result<(), Gone> {
        self.qp
            .post_recv(usize::from(entry), encode(self.id.0, Kind::Recv, entry))
            .map_err(|e| Gone(format!("cannot repost a receive: {e}")))
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.responses.is_empty()
    }

    pub fn queue_response(&mut self, resp: Response) {
        self.responses.push_back(resp);
    }

    /// A command capsule arrived in receive entry `entry`.
    pub fn on_recv(
        &mut self,
        entry: u16,
        wc: &WorkCompletion,
        nvmf: &mut PollGroup,
        pools: &[PoolRegistration],
        cx: &mut TaskContext,
    ) -> Result<(), Gone> {
        let Some(capsule) = self.qp.received(usize::from(entry), wc) else {
            return Err(Gone("a receive completion for an entry not posted".into()));
        };
        if capsule.len() < 64 {
            return Err(Gone(format!("a {}-byte command capsule", capsule.len())));
        }
        let cmd = Command::parse(&capsule[..64]).map_err(|e| Gone(format!("bad capsule: {e}")))?;
        let icd = (capsule.len() - 64) as u32;
        if self.qid == 0 {
            log::trace!(
                "{:?}: admin command opcode {:#x} cid {} ({icd} bytes in capsule)",
                self.peer,
                cmd.opcode,
                cmd.cid.get()
            );
        }
        if self.qid == 0 {
            self.reclaim_abandoned_aer(cmd.cid.get(), nvmf);
        }
        let Some(slot) = self.free.pop() else {
            return Err(Gone("more commands than the queue holds".into()));
        };
        let planned = nvmf
            .admit(self.id, &cmd)
            .and_then(|()| plan_data(&cmd, icd, &LIMITS));
        let s = &mut self.slots[usize::from(slot)];
        *s = Slot {
            state: SlotState::AwaitBuffer,
            cmd,
            plan: DataPlan::None,
            remote: KeyedSgl::parse(&cmd.dptr),
            recv_entry: None,
        };
        match planned {
            Err(status) => {
                self.repost(entry)?;
                self.reject(slot, status, nvmf, cx);
            }
            Ok(plan) => {
                s.plan = plan;
                if let DataPlan::InCapsule { len } = plan {
                    s.recv_entry = Some((entry, len));
                } else {
                    self.repost(entry)?;
                }
                if !self.start(slot, nvmf, pools, cx)? {
                    self.waiting.push_back(slot);
                }
            }
        }
        Ok(())
    }

    /// A new admin command reuses the CID of an AER still held here: the host abandoned that
    /// AER (SPDK's initiator does so when it detaches, see [`PollGroup::forget_aer`]), so its
    /// slot is freed without a completion, as NVMe/TCP does. Only the admin queue holds AERs.
    fn reclaim_abandoned_aer(&mut self, cid: u16, nvmf: &mut PollGroup) {
        // nvmf checks the slot is an AER's; this only finds the slot holding the cid.
        let held = self
            .slots
            .iter()
            .position(|s| s.state == SlotState::Executing && s.cmd.cid.get() == cid);
        let Some(index) = held else {
            return;
        };
        let slot = index as u16;
        if nvmf.forget_aer(self.id, cid) == Some(slot) {
            log::info!(
                "{:?}: command id {cid} reuses an outstanding AER's: the host abandoned that AER",
                self.peer
            );
            self.slots[index] = Slot::default();
            self.free.push(slot);
        }
    }

    fn reject(&mut self, slot: u16, status: Status, nvmf: &mut PollGroup, cx: &mut TaskContext) {
        let cmd = self.slots[usize::from(slot)].cmd;
        self.slots[usize::from(slot)].state = SlotState::Executing;
        let resp = nvmf.reject(self.id, slot, &cmd, status, cx);
        self.responses.push_back(resp);
    }

    /// Gives a command its buffer and moves its data; false when the pool is empty.
    fn start(
        &mut self,
        slot: u16,
        nvmf: &mut PollGroup,
        pools: &[PoolRegistration],
        cx: &mut TaskContext,
    ) -> Result<bool, Gone> {
        let s = self.slots[usize::from(slot)];
        let len = s.plan.len() as usize;
        let buf = match s.plan {
            DataPlan::None => None,
            _ => match cx.get_buffer(len) {
                Some(b) => Some(b),
                None => return Ok(false),
            },
        };
        match s.plan {
            DataPlan::InCapsule { len } => {
                let (entry, _) = s.recv_entry.expect("in-capsule commands hold their entry");
                let mut buf = buf.expect("planned data has a buffer");
                let data = self
                    .qp
                    .recv_entry(usize::from(entry), 64 + len as usize)
                    .ok_or_else(|| Gone("in-capsule data entry lost".into()))?;
                buf.set_len(len as usize);
                buf.as_mut_slice().copy_from_slice(&data[64..]);
                self.slots[usize::from(slot)].recv_entry = None;
                self.repost(entry)?;
                self.execute(slot, Some(buf), nvmf, cx);
            }
            DataPlan::FromHost { len } => {
                let buf = buf.expect("planned data has a buffer");
                let keyed = s.remote.expect("keyed plans have a keyed SGL");
                let Some(key) = lkey(pools, &buf, len as usize) else {
                    cx.put_buffer(buf);
                    return Err(Gone("a pool buffer without a memory region".into()));
                };
                let remote = RemoteBuf {
                    addr: keyed.addr,
                    len,
                    rkey: keyed.key,
                };
                let wr_id = encode(self.id.0, Kind::Read, slot);
                if let Err((e, buf)) =
                    self.qp
                        .post_rdma_read(usize::from(slot), buf, key, remote, wr_id)
                {
                    cx.put_buffer(buf);
                    return Err(Gone(format!("RDMA READ not posted: {e}")));
                }
                self.slots[usize::from(slot)].state = SlotState::Reading;
            }
            DataPlan::ToHost { .. } | DataPlan::None => self.execute(slot, buf, nvmf, cx),
        }
        Ok(true)
    }

    /// The RDMA READ of `slot` finished.
    pub fn on_read(
        &mut self,
        slot: u16,
        wc: &WorkCompletion,
        nvmf: &mut PollGroup,
        cx: &mut TaskContext,
    ) -> Result<(), Gone> {
        let Some(mut buf) = self.qp.release(usize::from(slot), wc) else {
            return Err(Gone("an RDMA READ completion for no buffer".into()));
        };
        if !wc.is_ok() {
            cx.put_buffer(buf);
            return Err(Gone(format!("RDMA READ failed: {}", wc.status_str())));
        }
        let len = self.slots[usize::from(slot)].plan.len();
        buf.set_len(len as usize);
        self.execute(slot, Some(buf), nvmf, cx);
        Ok(())
    }

    fn execute(
        &mut self,
        slot: u16,
        buf: Option<IoBuf>,
        nvmf: &mut PollGroup,
        cx: &mut TaskContext,
    ) {
        let s = &mut self.slots[usize::from(slot)];
        s.state = SlotState::Executing;
        let req = Request {
            slot,
            cmd: s.cmd,
            plan: s.plan,
            buf,
        };
        if let Exec::Done(resp) = nvmf.execute(self.id, req, cx) {
            self.responses.push_back(resp);
        }
    }

    /// The SEND of `slot`'s completion finished: the slot (and its data buffer) are free.
    pub fn on_send(
        &mut self,
        slot: u16,
        wc: &WorkCompletion,
        cx: &mut TaskContext,
    ) -> Result<(), Gone> {
        self.qp.send_done(usize::from(slot), wc);
        if let Some(buf) = self.qp.release(usize::from(slot), wc) {
            cx.put_buffer(buf);
        }
        if !wc.is_ok() {
            return Err(Gone(format!("send failed: {}", wc.status_str())));
        }
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            if s.state == SlotState::Sending {
                *s = Slot::default();
                self.free.push(slot);
            }
        }
        Ok(())
    }

    /// Retries waiting commands and sends queued responses.
    pub fn flush(
        &mut self,
        nvmf: &mut PollGroup,
        pools: &[PoolRegistration],
        cx: &mut TaskContext,
    ) -> Result<(), Gone> {
        while let Some(&slot) = self.waiting.front() {
            if !self.start(slot, nvmf, pools, cx)? {
                break;
            }
            self.waiting.pop_front();
        }
        while let Some(resp) = self.responses.pop_front() {
            self.send_response(resp, pools, cx)?;
        }
        Ok(())
    }

    fn send_response(
        &mut self,
        resp: Response,
        pools: &[PoolRegistration],
        cx: &mut TaskContext,
    ) -> Result<(), Gone> {
        let slot = resp.slot;
        let index = usize::from(slot);
        if index >= self.slots.len() {
            if let Some(buf) = resp.buf {
                cx.put_buffer(buf);
            }
            return Err(Gone(format!("response for unknown slot {slot}")));
        }
        let s = self.slots[index];
        if self.qid == 0 {
            log::trace!(
                "{:?}: admin response cid {} opcode {:#x} status {:#x} ({} bytes)",
                self.peer,
                resp.cqe.cid.get(),
                s.cmd.opcode,
                resp.cqe.status.get(),
                resp.data_len
            );
        }
        let send_id = encode(self.id.0, Kind::Send, slot);
        match (resp.buf, s.remote) {
            (Some(buf), Some(keyed))
                if resp.data_len > 0 && matches!(s.plan, DataPlan::ToHost { .. }) =>
            {
                let len = resp.data_len.min(keyed.len);
                let Some(key) = lkey(pools, &buf, len as usize) else {
                    cx.put_buffer(buf);
                    return Err(Gone("a pool buffer without a memory region".into()));
                };
                let remote = RemoteBuf {
                    addr: keyed.addr,
                    len,
                    rkey: keyed.key,
                };
                if let Err((e, buf)) = self.qp.post_rdma_write(index, buf, key, remote, send_id) {
                    cx.put_buffer(buf);
                    return Err(Gone(format!("RDMA WRITE not posted: {e}")));
                }
            }
            (Some(buf), _) => cx.put_buffer(buf),
            (None, _) => {}
        }
        let Some(entry) = self.qp.send_entry(index) else {
            return Err(Gone(format!("send entry {slot} still busy")));
        };
        entry[..RESPONSE_BYTES].copy_from_slice(resp.cqe.as_bytes());
        let invalidate = s.remote.filter(|k| k.invalidate).map(|k| k.key);
        self.qp
            .post_send(index, RESPONSE_BYTES, send_id, invalidate)
            .map_err(|e| Gone(format!("SEND not posted: {e}")))?;
        self.slots[index].state = SlotState::Sending;
        Ok(())
    }

    /// Gives back every buffer (connection closing): queued responses' and held ones, after the
    /// queue pair is destroyed.
    pub fn release_all(self, cx: &mut TaskContext) {
        let Conn { qp, responses, .. } = self;
        for resp in responses {
            if let Some(buf) = resp.buf {
                cx.put_buffer(buf);
            }
        }
        let _ = qp.id().disconnect();
        qp.close(&mut |buf| cx.put_buffer(buf));
    }
}
