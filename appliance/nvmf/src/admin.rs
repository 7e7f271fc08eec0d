//! Admin commands of I/O and discovery controllers: Identify, Get Log Page, Set/Get Features,
//! Keep Alive, Asynchronous Event Request, Abort.

use std::sync::Arc;

use ferrite_nvme::command::opcode::admin as op;
use ferrite_nvme::identify::{self as id, IDENTIFY_DATA_SIZE};
use ferrite_nvme::{Command, Status};
use ferrite_reactor::{IoBuf, TaskContext};

use crate::admin_result::AdminResult;
use crate::controller::Controller;
use crate::identify;
use crate::logpage;
use crate::poll_group::{ConnId, Exec, GroupEvent, PollGroup};
use crate::request::{DataPlan, Request};
use crate::subsystem::Subsystem;
use crate::{MAX_AERS, MAX_IO_QUEUES, MAX_NSID};

/// Feature identifiers.
mod fid {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MANAGEMENT: u8 = 0x02;
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    pub const HOST_IDENTIFIER: u8 = 0x81;
}

/// Feature capabilities reported by Get Features with SEL = 011b: changeable.
const FEATURE_CHANGEABLE: u32 = 1 << 2;
/// Set/Get Features SV (save) bit.
const SAVE: u32 = 1 << 31;

impl PollGroup {
    pub(crate) fn execute_admin(
        &mut self,
        conn: ConnId,
        req: Request,
        cx: &mut TaskContext,
    ) -> Exec {
        let slot = req.slot;
        let qp = self.qpair(conn).expect("execute checked the qpair");
        let ctrl = Arc::clone(
            qp.ctrl
                .as_ref()
                .expect("active admin queue has a controller"),
        );
        ctrl.keep_alive(cx.now());
        let Some(sub) = self.current_subsystem(conn) else {
            return self.finish(conn, slot, Status::INTERNAL_ERROR, 0, req.buf, cx);
        };
        let local = self.qpair(conn).and_then(|q| q.local);
        let Request {
            cmd, plan, mut buf, ..
        } = req;
        let allowed = if ctrl.discovery {
            matches!(
                cmd.opcode,
                op::IDENTIFY
                    | op::GET_LOG_PAGE
                    | op::SET_FEATURES
                    | op::GET_FEATURES
                    | op::KEEP_ALIVE
                    | op::ASYNC_EVENT_REQUEST
            )
        } else {
            true
        };
        let result = match cmd.opcode {
            _ if !allowed => AdminResult::status(Status::INVALID_OPCODE),
            op::IDENTIFY => {
                with_buffer(plan, &mut buf, |out| self.identify(&cmd, &sub, &ctrl, out))
            }
            op::GET_LOG_PAGE => with_buffer(plan, &mut buf, |out| {
                logpage::get_log_page(&self.target, &cmd, &sub, &ctrl, local, cx.now(), out)
            }),
            op::SET_FEATURES | op::GET_FEATURES
                if crate::resv_cmd::is_reservation_feature(&cmd) =>
            {
                let r = crate::resv_cmd::reservation_feature(&cmd, &sub, &ctrl);
                match r {
                    Ok(dw0) => AdminResult::ok(dw0),
                    Err(status) => AdminResult::status(status),
                }
            }
            op::SET_FEATURES => set_features(&cmd, &ctrl),
            op::GET_FEATURES => get_features(&cmd, &ctrl, plan, &mut buf),
            op::KEEP_ALIVE => AdminResult::ok(0),
            op::ASYNC_EVENT_REQUEST => {
                return self.async_event_request(conn, slot, cmd.cid.get(), buf, cx)
            }
            op::ABORT => self.abort(conn, &cmd, cx),
            _ => AdminResult::status(Status::INVALID_OPCODE),
        };
        if let Some(qp) = self.qpair_mut(conn) {
            qp.slot_mut(slot).data_len = result.data_len;
        }
        self.finish(conn, slot, result.status, result.dw0, buf, cx)
    }

    fn identify(
        &self,
        cmd: &Command,
        sub: &Subsystem,
        ctrl: &Controller,
        out: &mut [u8],
    ) -> AdminResult {
        let cns = (cmd.cdw10.get() & 0xFF) as u8;
        let csi = (cmd.cdw11.get() >> 24) as u8;
        let nsid = cmd.nsid.get();
        let mut page = [0u8; IDENTIFY_DATA_SIZE];
        let discovery_ok = cns == id::CNS_CONTROLLER;
        if ctrl.discovery && !discovery_ok {
            return AdminResult::status(Status::INVALID_FIELD);
        }
        let status = match cns {
            id::CNS_CONTROLLER => {
                let mut data = identify::controller(sub, ctrl);
                if self.keyed_sgl {
                    // NVMe/RDMA hosts require Keyed SGL Data Blocks (SGLS bit 2).
                    let sgls = data.sgls.get() | ferrite_nvme::identify::sgls::KEYED_DATA_BLOCK;
                    data.sgls.set(sgls);
                }
                identify::copy_out(&data, &mut page);
                Status::SUCCESS
            }
            id::CNS_NAMESPACE | id::CNS_NS_DESCRIPTORS | id::CNS_CSI_NAMESPACE => {
                if nsid == 0 || nsid > MAX_NSID {
                    Status::INVALID_NAMESPACE
                } else if cns == id::CNS_CSI_NAMESPACE && csi != id::csi::NVM {
                    Status::INVALID_FIELD
                } else {
                    match (sub.namespace(nsid), cns) {
                        (Some(ns), id::CNS_NAMESPACE) => {
                            identify::copy_out(&identify::namespace(ns), &mut page);
                            Status::SUCCESS
                        }
                        (Some(ns), id::CNS_NS_DESCRIPTORS) => {
                            identify::ns_descriptors(ns, &mut page);
                            Status::SUCCESS
                        }
                        (Some(_), _) => {
                            identify::copy_out(&identify::nvm_namespace(), &mut page);
                            Status::SUCCESS
                        }
                        // An inactive NSID reads as zeroes for Identify Namespace.
                        (None, id::CNS_NAMESPACE) => Status::SUCCESS,
                        (None, _) => Status::INVALID_NAMESPACE,
                    }
                }
            }
            id::CNS_ACTIVE_NAMESPACES | id::CNS_CSI_ACTIVE_NAMESPACES => {
                if nsid >= 0xFFFF_FFFE {
                    Status::INVALID_NAMESPACE
                } else if cns == id::CNS_CSI_ACTIVE_NAMESPACES && csi != id::csi::NVM {
                    Status::INVALID_FIELD
                } else {
                    match id::encode_ns_list(sub.namespaces.keys().copied(), nsid, &mut page) {
                        Ok(_) => Status::SUCCESS,
                        Err(_) => Status::INTERNAL_ERROR,
                    }
                }
            }
            id::CNS_CSI_CONTROLLER if csi == id::csi::NVM => {
                identify::copy_out(&identify::nvm_controller(), &mut page);
                Status::SUCCESS
            }
            id::CNS_IO_COMMAND_SETS => {
                identify::copy_out(&identify::io_command_sets(), &mut page);
                Status::SUCCESS
            }
            _ => Status::INVALID_FIELD,
        };
        if !status.is_success() {
            return AdminResult::status(status);
        }
        let n = out.len().min(IDENTIFY_DATA_SIZE);
        out[..n].copy_from_slice(&page[..n]);
        AdminResult::data(n as u32)
    }

    fn async_event_request(
        &mut self,
        conn: ConnId,
        slot: u16,
        cid: u16,
        buf: Option<IoBuf>,
        cx: &mut TaskContext,
    ) -> Exec {
        if let Some(buf) = buf {
            cx.put_buffer(buf);
        }
        let qp = self.qpair_mut(conn).expect("live");
        if qp.aers.len() >= MAX_AERS {
            return self.finish(
                conn,
                slot,
                Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED,
                0,
                None,
                cx,
            );
        }
        qp.aers.push((slot, cid));
        Exec::Pending
    }

    /// Abort: an outstanding AER can be aborted; commands already at the backend cannot, and the
    /// completion says so (dword 0 bit 0 set).
    fn abort(&mut self, conn: ConnId, cmd: &Command, cx: &mut TaskContext) -> AdminResult {
        let sqid = (cmd.cdw10.get() & 0xFFFF) as u16;
        let target_cid = (cmd.cdw10.get() >> 16) as u16;
        const NOT_ABORTED: u32 = 1;
        if sqid != 0 {
            return AdminResult::ok(NOT_ABORTED);
        }
        let qp = self.qpair_mut(conn).expect("live");
        let Some(pos) = qp.aers.iter().position(|&(_, cid)| cid == target_cid) else {
            return AdminResult::ok(NOT_ABORTED);
        };
        let (slot, _) = qp.aers.remove(pos);
        let resp = self.build_response(conn, slot, Status::ABORTED_BY_REQUEST, 0, None, cx);
        self.defer(GroupEvent::Respond(conn, resp));
        AdminResult::ok(0)
    }
}

/// Runs `fill` on the command's data buffer sized to the plan; a command that should return data
/// but carries no buffer fails with Data SGL Length Invalid.
fn with_buffer(
    plan: DataPlan,
    buf: &mut Option<IoBuf>,
    fill: impl FnOnce(&mut [u8]) -> AdminResult,
) -> AdminResult {
    let (DataPlan::ToHost { len }, Some(b)) = (plan, buf.as_mut()) else {
        return AdminResult::status(Status::DATA_SGL_LENGTH_INVALID);
    };
    b.set_len(len as usize);
    let result = fill(b.as_mut_slice());
    if result.status.is_success() {
        b.set_len(result.data_len as usize);
    }
    result
}

fn set_features(cmd: &Command, ctrl: &Controller) -> AdminResult {
    let cdw10 = cmd.cdw10.get();
    let value = cmd.cdw11.get();
    if cdw10 & SAVE != 0 {
        return AdminResult::status(Status::FEATURE_NOT_SAVEABLE);
    }
    let feature = (cdw10 & 0xFF) as u8;
    if ctrl.discovery && !matches!(feature, fid::KEEP_ALIVE_TIMER | fid::ASYNC_EVENT_CONFIG) {
        return AdminResult::status(Status::INVALID_FIELD);
    }
    let mut st = ctrl.lock();
    match feature {
        fid::ARBITRATION => st.features.arbitration = value,
        fid::POWER_MANAGEMENT if value & 0x1F == 0 => st.features.power_management = value,
        fid::TEMPERATURE_THRESHOLD => st.features.temperature_threshold = value,
        fid::ERROR_RECOVERY => st.features.error_recovery = value,
        fid::VOLATILE_WRITE_CACHE => ctrl.set_write_cache_enabled(value & 1 != 0),
        fid::NUMBER_OF_QUEUES => {
            let (nsqr, ncqr) = ((value & 0xFFFF) as u16, (value >> 16) as u16);
            if nsqr == 0xFFFF || ncqr == 0xFFFF {
                return AdminResult::status(Status::INVALID_FIELD);
            }
            if !st.io_queues.is_empty() {
                return AdminResult::status(Status::COMMAND_SEQUENCE_ERROR);
            }
            let granted = (nsqr.min(MAX_IO_QUEUES - 1), ncqr.min(MAX_IO_QUEUES - 1));
            st.features.number_of_queues = Some(granted);
            return AdminResult::ok(granted.0 as u32 | ((granted.1 as u32) << 16));
        }
        fid::ASYNC_EVENT_CONFIG => st.features.async_event_config = value,
        fid::KEEP_ALIVE_TIMER => ctrl.set_kato_ms(value),
        // Fabrics hosts give their identifier in Connect; it cannot change afterwards (SPDK
        // answers the same). Get Features returns it.
        fid::HOST_IDENTIFIER => return AdminResult::status(Status::COMMAND_SEQUENCE_ERROR),
        _ => return AdminResult::status(Status::INVALID_FIELD),
    }
    AdminResult::ok(0)
}

fn get_features(
    cmd: &Command,
    ctrl: &Controller,
    plan: DataPlan,
    buf: &mut Option<IoBuf>,
) -> AdminResult {
    let cdw10 = cmd.cdw10.get();
    let feature = (cdw10 & 0xFF) as u8;
    let select = (cdw10 >> 8) & 0x7;
    const SEL_SUPPORTED: u32 = 3;
    let st = ctrl.lock();
    let current = match feature {
        fid::ARBITRATION => st.features.arbitration,
        fid::POWER_MANAGEMENT => st.features.power_management,
        fid::TEMPERATURE_THRESHOLD => st.features.temperature_threshold,
        fid::ERROR_RECOVERY => st.features.error_recovery,
        fid::VOLATILE_WRITE_CACHE => ctrl.write_cache_enabled() as u32,
        fid::NUMBER_OF_QUEUES => {
            let (nsq, ncq) = st
                .features
                .number_of_queues
                .unwrap_or((MAX_IO_QUEUES - 1, MAX_IO_QUEUES - 1));
            nsq as u32 | ((ncq as u32) << 16)
        }
        fid::ASYNC_EVENT_CONFIG => st.features.async_event_config,
        fid::KEEP_ALIVE_TIMER => ctrl.kato_ms(),
        fid::HOST_IDENTIFIER => {
            // EXHID must be set: fabrics use 128-bit host identifiers only.
            if cmd.cdw11.get() & 1 == 0 {
                return AdminResult::status(Status::INVALID_FIELD);
            }
            let hostid = ctrl.hostid;
            drop(st);
            return with_buffer(plan, buf, |out| {
                let n = out.len().min(16);
                out[..n].copy_from_slice(&hostid[..n]);
                AdminResult {
                    status: Status::SUCCESS,
                    dw0: 0,
                    data_len: n as u32,
                }
            });
        }
        _ => return AdminResult::status(Status::INVALID_FIELD),
    };
    if select == SEL_SUPPORTED {
        return AdminResult::ok(FEATURE_CHANGEABLE);
    }
    AdminResult::ok(current)
}
