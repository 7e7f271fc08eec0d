//! The RDMA group of one reactor (SPDK's RDMA poll group): the queue pairs placed on this
//! reactor, one completion queue they all share, the reactor's buffer pools registered with the
//! device, and the reactor's NVMe poll group.
//!
//! Each poll: the completion queue is drained (capsules received, RDMA READs and sends
//! finished), the NVMe poll group reaps backend completions into responses, and connections
//! with responses or waiting commands are flushed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferrite_nvme::rdma::{cm_reject, encode_accept, encode_reject, CmRequest};
use ferrite_nvmf::{
    dispatch_events, reap_released, ConnId, GroupEvent, PollGroup, PollGroupStats,
    QueuePair as NvmfQueuePair, Response, Routing, Target, MAX_COMMAND_SLOTS,
};
use ferrite_rdma::{
    CmId, CompletionChannel, CompletionQueue, Opcode, PoolRegistration, ProtectionDomain, QpCaps,
    QueuePair, RdmaError, WorkCompletion,
};
use ferrite_reactor::{PollStatus, Task, TaskContext};

use crate::conn::{Conn, Gone, CAPSULE_BYTES, RESPONSE_BYTES};
use crate::wr::{decode, Kind};

/// Completion queue entries per reactor; each queue pair reserves what it can have in flight.
const CQ_DEPTH: usize = 16384;
/// Completions taken per poll.
const CQ_BATCH: usize = 64;
/// RDMA READs in flight per queue pair each way (IRD/ORD).
const RDMA_READ_DEPTH: u8 = 16;

/// What this reactor has on the device its first connection came through.
struct Device {
    pd: ProtectionDomain,
    cq: CompletionQueue,
    /// Signals the reactor's poller when the armed CQ completes, so a parked reactor wakes.
    comp: CompletionChannel,
    /// The CQ is armed (an idle poll asked for the next completion's event).
    armed: bool,
    pools: Vec<PoolRegistration>,
    /// CQ entries reserved by open queue pairs.
    cq_used: usize,
}

pub(crate) struct RdmaGroup {
    nvmf: PollGroup,
    dev: Option<Device>,
    conns: Vec<Option<Conn>>,
    /// CQ entries each connection reserved.
    reserved: Vec<usize>,
    free_ids: Vec<u32>,
    zombies: Vec<u32>,
    wcs: Vec<WorkCompletion>,
    group_events: Vec<GroupEvent>,
    dirty: Vec<u32>,
    closing: Vec<u32>,
    connections: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RdmaGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaGroup")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl RdmaGroup {
    pub fn new(
        target: Arc<Target>,
        connections: Arc<AtomicUsize>,
        _cx: &mut TaskContext,
    ) -> RdmaGroup {
        RdmaGroup {
            nvmf: PollGroup::with_keyed_sgl(target),
            dev: None,
            conns: Vec::new(),
            reserved: Vec::new(),
            free_ids: Vec::new(),
            zombies: Vec::new(),
            wcs: Vec::with_capacity(CQ_BATCH),
            group_events: Vec::new(),
            dirty: Vec::with_capacity(64),
            closing: Vec::with_capacity(64),
            connections,
        }
    }

    pub fn nvmf_stats(&self) -> PollGroupStats {
        self.nvmf.stats()
    }

    /// The device state for `id`'s device: made with the first connection (PD, CQ, and the
    /// reactor's pools registered once).
    fn device(&mut self, id: &CmId, cx: &mut TaskContext) -> Result<&mut Device, RdmaError> {
        if let Some(dev) = &self.dev {
            if !dev.pd.serves(id) {
                return Err(RdmaError::Invalid(
                    "a second RDMA device on one reactor is not supported".into(),
                ));
            }
        } else {
            let pd = ProtectionDomain::alloc(id)?;
            let comp = CompletionChannel::new(&pd)?;
            let cq = CompletionQueue::with_channel(&pd, CQ_DEPTH as i32, CQ_BATCH, &comp)?;
            if let Err(e) = cx.register_wakeup_fd(comp.fd()) {
                log::warn!("rdma: completions cannot wake a parked reactor: {e}");
            }
            let small = PoolRegistration::new(&pd, cx.small_pool().regions())?;
            let large = PoolRegistration::new(&pd, cx.large_pool().regions())?;
            log::info!(
                "reactor {}: RDMA device ready ({small:?}, {large:?})",
                cx.reactor_index()
            );
            self.dev = Some(Device {
                pd,
                cq,
                comp,
                armed: false,
                pools: vec![small, large],
                cq_used: 0,
            });
        }
        Ok(self.dev.as_mut().expect("set above"))
    }

    /// Takes a connect request placed on this reactor: queue pair, receives posted, accept.
    pub fn adopt(&mut self, id: CmId, req: CmRequest, cx: &mut TaskContext) {
        let entries = usize::from(req.hsqsize) + 1;
        // Receives, sends and RDMA READs each complete once per command at most.
        let cq_need = entries + 2 * MAX_COMMAND_SLOTS;
        let refuse = |id: CmId, sts: u16, why: String| {
            log::warn!("NVMe/RDMA connect from {:?} refused: {why}", id.peer_addr());
            let _ = id.reject(&encode_reject(sts));
        };
        let (pd, cq_ok) = match self.device(&id, cx) {
            Ok(dev) => (dev.pd.clone(), dev.cq_used + cq_need <= CQ_DEPTH),
            Err(e) => {
                self.connections.fetch_sub(1, Ordering::Relaxed);
                return refuse(id, cm_reject::NO_RESOURCES, e.to_string());
            }
        };
        if !cq_ok {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return refuse(
                id,
                cm_reject::NO_RESOURCES,
                "reactor's completion queue is full".into(),
            );
        }
        let caps = QpCaps {
            recv_entries: entries,
            recv_size: CAPSULE_BYTES,
            send_entries: MAX_COMMAND_SLOTS,
            send_size: RESPONSE_BYTES,
            max_send_wr: (3 * MAX_COMMAND_SLOTS) as u32,
            slots: MAX_COMMAND_SLOTS,
        };
        let dev = self.dev.as_ref().expect("device made above");
        let qp = match QueuePair::create(id, &pd, &dev.cq, caps) {
            Ok(qp) => qp,
            Err(e) => {
                // The id went with the failed call; the host sees its connect time out.
                self.connections.fetch_sub(1, Ordering::Relaxed);
                log::warn!("NVMe/RDMA queue pair not created: {e}");
                return;
            }
        };
        let conn_id = self.free_ids.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.reserved.push(0);
            (self.conns.len() - 1) as u32
        });
        let mut conn = Conn::new(qp, ConnId(conn_id), req.qid);
        let local = conn.qp.id().local_addr();
        let ready = conn.post_all_recvs(entries).and_then(|()| {
            conn.qp
                .id()
                .accept(&encode_accept(entries as u16), RDMA_READ_DEPTH)
        });
        let local = match (ready, local) {
            (Ok(()), Some(local)) => local,
            (Err(e), _) => {
                log::warn!("NVMe/RDMA connect from {:?} not accepted: {e}", conn.peer);
                self.free_ids.push(conn_id);
                self.connections.fetch_sub(1, Ordering::Relaxed);
                conn.release_all(cx);
                return;
            }
            (Ok(()), None) => {
                log::warn!("NVMe/RDMA connection without a local address");
                self.free_ids.push(conn_id);
                self.connections.fetch_sub(1, Ordering::Relaxed);
                conn.release_all(cx);
                return;
            }
        };
        if let Some(dev) = self.dev.as_mut() {
            dev.cq_used += cq_need;
        }
        self.reserved[conn_id as usize] = cq_need;
        log::info!(
            "{:?}: NVMe/RDMA queue {} ({entries} entries) on reactor {} as connection {conn_id}",
            conn.peer,
            req.qid,
            cx.reactor_index()
        );
        self.nvmf.add_qpair(ConnId(conn_id), local);
        self.conns[conn_id as usize] = Some(conn);
    }

    /// The connection manager saw the connection with id `key` go.
    pub fn disconnected(&mut self, key: usize, why: &str, cx: &mut TaskContext) {
        let found = self
            .conns
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.key == key));
        if let Some(index) = found {
            self.close(index as u32, why, cx);
        }
    }

    fn close(&mut self, id: u32, why: &str, cx: &mut TaskContext) {
        let Some(conn) = self.conns.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        log::info!("{:?}: NVMe/RDMA connection closed: {why}", conn.peer);
        conn.release_all(cx);
        if let Some(dev) = self.dev.as_mut() {
            dev.cq_used -= std::mem::take(&mut self.reserved[id as usize]);
        }
        self.nvmf.remove_qpair(ConnId(id), cx);
        self.zombies.push(id);
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn close_all(&mut self, cx: &mut TaskContext) {
        for id in 0..self.conns.len() as u32 {
            if self.conns[id as usize].is_some() {
                self.close(id, "target shutting down", cx);
            }
        }
    }

    fn mark_dirty(&mut self, id: u32) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    fn handle_completions(&mut self, cx: &mut TaskContext) -> bool {
        let Some(dev) = self.dev.as_mut() else {
            return false;
        };
        if dev.armed {
            // Take the event (the fd stays readable until then); the CQ is disarmed by it.
            match dev.comp.take_events() {
                Ok(n) if n > 0 => dev.armed = false,
                Ok(_) => {}
                Err(e) => log::warn!("completion channel: {e}"),
            }
        }
        if let Err(e) = dev.cq.poll(&mut self.wcs) {
            log::warn!("polling the completion queue: {e}");
            return false;
        }
        if self.wcs.is_empty() && !dev.armed {
            // Idle: ask for an event at the next completion (what wakes a parked reactor),
            // then look once more for completions that came before the arm.
            match dev.cq.arm() {
                Ok(()) => dev.armed = true,
                Err(e) => log::warn!("arming the completion queue: {e}"),
            }
            if let Err(e) = dev.cq.poll(&mut self.wcs) {
                log::warn!("polling the completion queue: {e}");
                return false;
            }
        }
        let busy = !self.wcs.is_empty();
        for i in 0..self.wcs.len() {
            let wc = self.wcs[i];
            let Some((conn_id, kind, index)) = decode(wc.wr_id) else {
                continue;
            };
            let dev = self.dev.as_ref().expect("polled above");
            let Some(conn) = self
                .conns
                .get_mut(conn_id as usize)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            if wc.qp_num != conn.qp.qp_num() {
                continue; // a completion of an earlier connection with this number
            }
            let result = match (kind, wc.opcode) {
                (Kind::Recv, _) if !wc.is_ok() => {
                    Err(Gone(format!("receive failed: {}", wc.status_str())))
                }
                (Kind::Recv, Opcode::Recv) => {
                    conn.on_recv(index, &wc, &mut self.nvmf, &dev.pools, cx)
                }
                (Kind::Read, _) => conn.on_read(index, &wc, &mut self.nvmf, cx),
                (Kind::Send, _) => conn.on_send(index, &wc, cx),
                (_, op) => Err(Gone(format!("unexpected completion {op:?}"))),
            };
            match result {
                Ok(()) => self.mark_dirty(conn_id),
                Err(Gone(why)) => self.close(conn_id, &why, cx),
            }
        }
        busy
    }

    fn handle_group_events(&mut self, cx: &mut TaskContext) -> bool {
        let mut routing = Routing {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            closing: &mut self.closing,
        };
        let mut any = dispatch_events(&mut self.nvmf, &mut routing, &mut self.group_events, cx);
        while let Some(id) = self.closing.pop() {
            self.flush_one(id, cx);
            self.close(
                id,
                "controller gone (keep-alive timeout, disconnect or access revoked)",
                cx,
            );
            any = true;
        }
        any
    }

    fn flush_one(&mut self, id: u32, cx: &mut TaskContext) -> bool {
        let Some(dev) = self.dev.as_ref() else {
            return false;
        };
        let Some(conn) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else {
            return false;
        };
        match conn.flush(&mut self.nvmf, &dev.pools, cx) {
            Ok(()) => conn.has_work(),
            Err(Gone(why)) => {
                self.close(id, &why, cx);
                false
            }
        }
    }

    fn flush_dirty(&mut self, cx: &mut TaskContext) {
        let mut i = 0;
        while i < self.dirty.len() {
            let id = self.dirty[i];
            if self.flush_one(id, cx) {
                i += 1;
            } else {
                self.dirty.swap_remove(i);
            }
        }
    }

    fn reap_zombies(&mut self) {
        reap_released(&self.nvmf, &mut self.zombies, &mut self.free_ids);
    }
}

impl Task for RdmaGroup {
    fn poll(&mut self, cx: &mut TaskContext) -> PollStatus {
        let mut busy = self.handle_completions(cx);
        busy |= self.handle_group_events(cx);
        if !self.dirty.is_empty() {
            self.flush_dirty(cx);
        }
        if !self.zombies.is_empty() {
            self.reap_zombies();
        }
        if let Some(deadline) = self.nvmf.next_deadline() {
            cx.wake_at(deadline);
        }
        PollStatus::from_busy(busy)
    }

    fn on_shutdown(&mut self, cx: &mut TaskContext) {
        self.close_all(cx);
    }

    fn is_finished(&self) -> bool {
        self.zombies
            .iter()
            .all(|id| self.nvmf.is_released(ConnId(*id)))
    }
}

impl NvmfQueuePair for Conn {
    fn queue_response(&mut self, resp: Response, _cx: &mut TaskContext) {
        Conn::queue_response(self, resp);
    }
}
