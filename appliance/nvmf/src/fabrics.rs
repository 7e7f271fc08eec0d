//! Fabrics commands: Connect (admin and I/O queues), Property Get/Set (CAP, VS, CC, CSTS with
//! enable, reset and shutdown), Disconnect.

use std::sync::Arc;

use ferrite_bdev::IoKind;
use ferrite_nvme::command::opcode::fabrics as fctype;
use ferrite_nvme::fabrics::{
    connect_invalid_param_dw0, connect_response_dw0, property, shst, Cap, Cc, ConnectCommand,
    ConnectData, ConnectParamLocation, Csts, PropertyGet, PropertySet, PropertySize, CAP_CSS_NVM,
    CNTLID_DYNAMIC,
};
use ferrite_nvme::Status;
use ferrite_reactor::TaskContext;
use zerocopy::FromBytes;

use crate::identify::VERSION;
use crate::poll_group::{ConnId, Exec, GroupEvent, NsInfo, PollGroup, QpairState, INTERNAL_SLOT};
use crate::request::Request;
use crate::{MAX_ADMIN_QUEUE_ENTRIES, MAX_IO_QUEUES, MAX_QUEUE_ENTRIES};

/// CATTR bit 2: the host disabled SQ flow control for this queue.
const CATTR_SQFLOW_DISABLED: u8 = 1 << 2;
/// Byte offsets of Connect fields, reported in IPO.
const IPO_QID: u16 = 42;
const IPO_SQSIZE: u16 = 44;
const IPO_CNTLID: u16 = ConnectData::CNTLID_OFFSET;
const IPO_SUBNQN: u16 = ConnectData::SUBNQN_OFFSET;
const IPO_HOSTNQN: u16 = ConnectData::HOSTNQN_OFFSET;
/// CAP.TO: worst-case time to become ready, in 500 ms units.
const CAP_TIMEOUT_UNITS: u8 = 10;

/// Outcome of Connect validation that refuses the queue.
struct Refusal {
    status: Status,
    dw0: u32,
}

fn invalid(location: ConnectParamLocation, offset: u16) -> Refusal {
    Refusal {
        status: Status::CONNECT_INVALID_PARAMETERS,
        dw0: connect_invalid_param_dw0(location, offset),
    }
}

impl PollGroup {
    pub(crate) fn execute_fabrics(
        &mut self,
        conn: ConnId,
        req: Request,
        cx: &mut TaskContext,
    ) -> Exec {
        let slot = req.slot;
        let state = self.qpair(conn).map(|q| q.state);
        match req.cmd.fabrics_type() {
            Some(fctype::CONNECT) => self.connect(conn, req, cx),
            _ if state != Some(QpairState::Active) => {
                self.finish(conn, slot, Status::COMMAND_SEQUENCE_ERROR, 0, req.buf, cx)
            }
            Some(fctype::AUTHENTICATION_SEND) => self.auth_send(conn, req, cx),
            Some(fctype::AUTHENTICATION_RECEIVE) => self.auth_receive(conn, req, cx),
            Some(fctype::PROPERTY_GET | fctype::PROPERTY_SET) if self.auth_pending(conn) => {
                self.finish(conn, slot, Status::AUTHENTICATION_REQUIRED, 0, req.buf, cx)
            }
            Some(fctype::PROPERTY_GET) => {
                let (status, value) = self.property_get(conn, &req.cmd);
                self.finish_with_result64(conn, slot, status, value, req.buf, cx)
            }
            Some(fctype::PROPERTY_SET) => {
                let status = self.property_set(conn, &req.cmd, cx);
                self.finish(conn, slot, status, 0, req.buf, cx)
            }
            Some(fctype::DISCONNECT) => {
                // Complete, then close the queue once the response is on its way.
                self.defer(GroupEvent::Close(conn));
                self.finish(conn, slot, Status::SUCCESS, 0, req.buf, cx)
            }
            _ => self.finish(conn, slot, Status::INVALID_OPCODE, 0, req.buf, cx),
        }
    }

    fn finish_with_result64(
        &mut self,
        conn: ConnId,
        slot: u16,
        status: Status,
        value: u64,
        buf: Option<ferrite_reactor::IoBuf>,
        cx: &mut TaskContext,
    ) -> Exec {
        let mut resp = self.build_response(conn, slot, status, value as u32, buf, cx);
        resp.cqe = resp.cqe.with_result64(value);
        Exec::Done(resp)
    }

    fn connect(&mut self, conn: ConnId, req: Request, cx: &mut TaskContext) -> Exec {
        let slot = req.slot;
        let already = self
            .qpair(conn)
            .is_some_and(|q| q.state != QpairState::AwaitingConnect);
        if already {
            return self.finish(conn, slot, Status::COMMAND_SEQUENCE_ERROR, 0, req.buf, cx);
        }
        let params = ConnectCommand::parse(&req.cmd);
        let data = req
            .buf
            .as_ref()
            .and_then(|b| ConnectData::read_from_prefix(b.as_slice()).ok());
        let Some((data, _)) = data else {
            return self.finish(conn, slot, Status::DATA_SGL_LENGTH_INVALID, 0, req.buf, cx);
        };
        let result = self.accept_connect(conn, &params, &data, cx);
        let (status, dw0) = match result {
            Ok(cntlid) => (
                Status::SUCCESS,
                connect_response_dw0(cntlid) | self.start_auth(conn),
            ),
            Err(refusal) => (refusal.status, refusal.dw0),
        };
        if !status.is_success() {
            log::info!(
                "refused Connect qid {} from {:?} to {:?}: {status}",
                params.qid,
                data.hostnqn_str().unwrap_or("<invalid>"),
                data.subnqn_str().unwrap_or("<invalid>")
            );
        }
        self.finish(conn, slot, status, dw0, req.buf, cx)
    }

    fn accept_connect(
        &mut self,
        conn: ConnId,
        params: &ConnectCommand,
        data: &ConnectData,
        cx: &mut TaskContext,
    ) -> Result<u16, Refusal> {
        if params.recfmt != 0 {
            return Err(Refusal {
                status: Status::CONNECT_INCOMPATIBLE_FORMAT,
                dw0: 0,
            });
        }
        let subnqn = data
            .subnqn_str()
            .map_err(|_| invalid(ConnectParamLocation::Data, IPO_SUBNQN))?;
        let hostnqn = data
            .hostnqn_str()
            .map_err(|_| invalid(ConnectParamLocation::Data, IPO_HOSTNQN))?;
        let cfg = self.target.config();
        let sub = cfg
            .subsystem(subnqn)
            .cloned()
            .ok_or_else(|| invalid(ConnectParamLocation::Data, IPO_SUBNQN))?;
        let local = self.qpair(conn).and_then(|q| q.local);
        if !local.is_some_and(|addr| sub.reachable_over(self.trtype(), addr)) {
            // The subsystem does not listen on the port this connection came in on.
            return Err(invalid(ConnectParamLocation::Data, IPO_SUBNQN));
        }
        if hostnqn.is_empty() {
            // SPDK's initiator sends an empty Host NQN unless told one; SPDK's and Linux's targets
            // accept it where any host may connect. A host list needs a name to match.
            if !sub.allow_any_host {
                return Err(Refusal {
                    status: Status::CONNECT_INVALID_HOST,
                    dw0: connect_invalid_param_dw0(ConnectParamLocation::Data, IPO_HOSTNQN),
                });
            }
            log::info!(
                "Connect qid {} to {subnqn} with an empty Host NQN: accepted (any host allowed)",
                params.qid
            );
        }
        if !sub.allows(hostnqn) {
            return Err(Refusal {
                status: Status::CONNECT_INVALID_HOST,
                dw0: connect_invalid_param_dw0(ConnectParamLocation::Data, IPO_HOSTNQN),
            });
        }
        let entries = params.sqsize as u32 + 1;
        let now = cx.now();
        let generation = self.target.generation();
        let sqflow_disabled = params.cattr & CATTR_SQFLOW_DISABLED != 0;
        if params.qid == 0 {
            if params.sqsize < 31 || entries > MAX_ADMIN_QUEUE_ENTRIES as u32 {
                return Err(invalid(ConnectParamLocation::Command, IPO_SQSIZE));
            }
            if data.cntlid() != CNTLID_DYNAMIC {
                return Err(invalid(ConnectParamLocation::Data, IPO_CNTLID));
            }
            let ctrl = self
                .target
                .create_controller(&sub, hostnqn, data.hostid, params.kato)
                .ok_or(Refusal {
                    status: Status::CONNECT_CONTROLLER_BUSY,
                    dw0: 0,
                })?;
            ctrl.keep_alive(now);
            ctrl.lock().queue_reactors.insert(0, cx.reactor_index());
            ctrl.register_counters(Arc::clone(&self.qpair(conn).expect("live").counters));
            let cntlid = ctrl.cntlid;
            // An empty Host NQN (SPDK's default) is named as such, not logged as a blank.
            let host = if hostnqn.is_empty() {
                "(empty Host NQN)"
            } else {
                hostnqn
            };
            log::info!(
                "controller {cntlid}: host {host} connected to {subnqn} (kato {} ms)",
                params.kato
            );
            let qp = self.qpair_mut(conn).expect("live");
            qp.ctrl = Some(ctrl);
            qp.qid = 0;
            qp.sq_entries = entries as u16;
            qp.sqflow_disabled = sqflow_disabled;
            qp.ns_table = NsInfo::table(&sub, qp.local);
            qp.subsystem = Some(sub);
            qp.config_generation = generation;
            qp.state = QpairState::Active;
            self.mark_admin(conn);
            return Ok(cntlid);
        }
        if entries > MAX_QUEUE_ENTRIES as u32 || params.sqsize == 0 {
            return Err(invalid(ConnectParamLocation::Command, IPO_SQSIZE));
        }
        let ctrl = self
            .target
            .controller(data.cntlid())
            .filter(|c| {
                c.subnqn == subnqn
                    && c.hostnqn == hostnqn
                    && c.hostid == data.hostid
                    && !c.is_failed()
            })
            .ok_or_else(|| invalid(ConnectParamLocation::Data, IPO_CNTLID))?;
        if ctrl.discovery {
            return Err(invalid(ConnectParamLocation::Command, IPO_QID));
        }
        let epoch = {
            let mut st = ctrl.lock();
            if !Cc(st.cc).en() || !Csts(st.csts).rdy() {
                return Err(Refusal {
                    status: Status::COMMAND_SEQUENCE_ERROR,
                    dw0: 0,
                });
            }
            let granted = st
                .features
                .number_of_queues
                .map_or(MAX_IO_QUEUES, |(nsq, _)| nsq + 1);
            if params.qid > granted || st.io_queues.contains(&params.qid) {
                return Err(invalid(ConnectParamLocation::Command, IPO_QID));
            }
            st.io_queues.insert(params.qid);
            st.queue_reactors.insert(params.qid, cx.reactor_index());
            ctrl.epoch()
        };
        ctrl.register_counters(Arc::clone(&self.qpair(conn).expect("live").counters));
        let cntlid = ctrl.cntlid;
        let qp = self.qpair_mut(conn).expect("live");
        qp.ctrl = Some(ctrl);
        qp.qid = params.qid;
        qp.epoch = epoch;
        qp.sq_entries = entries as u16;
        qp.sqflow_disabled = sqflow_disabled;
        qp.ns_table = NsInfo::table(&sub, qp.local);
        qp.subsystem = Some(sub);
        qp.config_generation = generation;
        qp.state = QpairState::Active;
        Ok(cntlid)
    }

    fn property_get(&mut self, conn: ConnId, cmd: &ferrite_nvme::Command) -> (Status, u64) {
        let Some(qp) = self.qpair(conn) else {
            return (Status::INTERNAL_ERROR, 0);
        };
        let Some(ctrl) = qp.ctrl.as_ref().filter(|_| qp.is_admin()) else {
            return (Status::INVALID_FIELD, 0);
        };
        let Ok(get) = PropertyGet::parse(cmd) else {
            return (Status::INVALID_FIELD, 0);
        };
        let expected = property::size_of(get.offset);
        let size_ok = match get.size {
            PropertySize::Four => expected == Some(4),
            PropertySize::Eight => expected == Some(8),
        };
        if !size_ok {
            return (Status::INVALID_FIELD, 0);
        }
        let st = ctrl.lock();
        let value = match get.offset {
            property::CAP => cap(ctrl.discovery).0,
            property::VS => VERSION as u64,
            property::CC => st.cc as u64,
            property::CSTS => st.csts as u64,
            _ => 0, // NSSR reads as 0
        };
        (Status::SUCCESS, value)
    }

    fn property_set(
        &mut self,
        conn: ConnId,
        cmd: &ferrite_nvme::Command,
        cx: &mut TaskContext,
    ) -> Status {
        let Some(qp) = self.qpair(conn) else {
            return Status::INTERNAL_ERROR;
        };
        let Some(ctrl) = qp.ctrl.clone().filter(|_| qp.is_admin()) else {
            return Status::INVALID_FIELD;
        };
        let Ok(set) = PropertySet::parse(cmd) else {
            return Status::INVALID_FIELD;
        };
        if set.offset != property::CC || set.size != PropertySize::Four {
            // CAP, VS and CSTS are read-only; NSSR (subsystem reset) is not supported.
            return Status::INVALID_FIELD;
        }
        let new = Cc(set.value as u32);
        let start_shutdown = {
            let mut st = ctrl.lock();
            let old = Cc(st.cc);
            st.cc = new.0;
            if new.en() && !old.en() {
                if new.iosqes() != 6 || new.iocqes() != 4 {
                    st.csts = Csts(st.csts).with_cfs(true).0;
                } else {
                    ctrl.set_ready(&mut st, true);
                }
            } else if !new.en() && old.en() {
                // Controller reset: ready drops, the I/O queues are torn down, shutdown
                // status clears.
                ctrl.reset(&mut st);
                st.csts = Csts(st.csts).with_shst(shst::NORMAL).0;
                log::info!(
                    "controller {}: reset by the host (CC.EN cleared)",
                    ctrl.cntlid
                );
            }
            let mut csts = Csts(st.csts);
            let shutdown = new.shn() != 0 && old.shn() == 0;
            if shutdown {
                csts = csts.with_shst(shst::OCCURRING);
            }
            st.csts = csts.0;
            shutdown
        };
        if start_shutdown {
            self.begin_shutdown(conn, cx);
        }
        Status::SUCCESS
    }

    /// CC.SHN: flush every namespace with a volatile cache; SHST becomes complete when done.
    fn begin_shutdown(&mut self, conn: ConnId, cx: &mut TaskContext) {
        let Some(sub) = self.current_subsystem(conn) else {
            return;
        };
        for ns in sub.namespaces.values() {
            if !ns.bdev.capabilities().volatile_write_cache {
                continue;
            }
            if let Err((_, e)) =
                self.submit(conn, INTERNAL_SLOT, ns.bdev_id, IoKind::Flush, None, cx)
            {
                log::error!(
                    "shutdown flush of namespace {} failed to start: {e}",
                    ns.nsid
                );
            }
        }
        self.maybe_complete_shutdown(conn);
    }

    /// A shutdown flush finished.
    pub(crate) fn shutdown_flush_done(&mut self, conn: ConnId, ok: bool) {
        if !ok {
            log::error!("flush during controller shutdown failed");
        }
        if let Some(qp) = self.qpair_mut(conn) {
            qp.shutdown_flushes = qp.shutdown_flushes.saturating_sub(1);
        }
        self.maybe_complete_shutdown(conn);
    }

    fn maybe_complete_shutdown(&mut self, conn: ConnId) {
        let Some(qp) = self.qpair(conn) else { return };
        if qp.shutdown_flushes > 0 {
            return;
        }
        if let Some(ctrl) = &qp.ctrl {
            let mut st = ctrl.lock();
            if Csts(st.csts).shst() == shst::OCCURRING {
                st.csts = Csts(st.csts).with_shst(shst::COMPLETE).0;
            }
        }
    }
}

/// Controller capabilities: MQES, contiguous queues, 5 s timeout, NVM command set (discovery
/// controllers too, as Linux nvmet reports), 4 KiB pages.
fn cap(_discovery: bool) -> Cap {
    let css = CAP_CSS_NVM;
    Cap::new()
        .with_mqes(MAX_QUEUE_ENTRIES - 1)
        .with_cqr(true)
        .with_to(CAP_TIMEOUT_UNITS)
        .with_css(css)
        .with_mpsmin(0)
        .with_mpsmax(0)
}
