//! The reservation commands on I/O queues (Register 0Dh, Report 0Eh, Acquire 11h, Release
//! 15h), the reservation check of every other I/O command, and the Reservation Notification
//! log page (80h) with its asynchronous event.

use ferrite_nvme::Status;
use ferrite_reactor::{IoBuf, TaskContext};

use crate::controller::{AsyncEvent, Controller};
use crate::poll_group::{ConnId, Exec, PollGroup};
use crate::request::{DataPlan, Request};
use crate::resv::{AcquireAction, HostId, Notices, RegisterAction, ResvType};
use crate::subsystem::Namespace;
use crate::target::Target;

/// Reservation command opcodes (NVM command set).
pub(crate) mod op {
    pub const REGISTER: u8 = 0x0D;
    pub const REPORT: u8 = 0x0E;
    pub const ACQUIRE: u8 = 0x11;
    pub const RELEASE: u8 = 0x15;
}

/// Log page identifier of the Reservation Notification log.
pub(crate) const LID_RESERVATION_NOTIFICATION: u8 = 0x80;
/// Reservation Notification log entries a controller keeps; older ones are dropped (and
/// counted as lost through the log page count).
const RESV_LOG_DEPTH: usize = 64;

pub(crate) fn is_reservation_command(opcode: u8) -> bool {
    matches!(
        opcode,
        op::REGISTER | op::REPORT | op::ACQUIRE | op::RELEASE
    )
}

/// Whether an I/O command belongs to the write group of the reservation access rules.
pub(crate) fn is_write_group(opcode: u8) -> bool {
    use ferrite_nvme::command::opcode::io;
    matches!(
        opcode,
        io::WRITE
            | io::WRITE_ZEROES
            | io::DATASET_MANAGEMENT
            | io::COPY
            | io::FLUSH
            | io::WRITE_UNCORRECTABLE
    )
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl PollGroup {
    /// Reservation Conflict when the namespace is reserved against this host.
    pub(crate) fn reservation_check(&self, conn: ConnId, nsid: u32, opcode: u8) -> Option<Status> {
        let qp = self.qpair(conn)?;
        let ns = qp.subsystem.as_ref()?.namespaces.get(&nsid)?;
        let host = qp.ctrl.as_ref()?.hostid;
        (!ns.reservation.allows(&host, is_write_group(opcode)))
            .then_some(Status::RESERVATION_CONFLICT)
    }

    /// Executes a reservation command on namespace `nsid` (known to exist).
    pub(crate) fn execute_reservation(
        &mut self,
        conn: ConnId,
        req: Request,
        cx: &mut TaskContext,
    ) -> Exec {
        let slot = req.slot;
        let nsid = req.cmd.nsid.get();
        let found = self.qpair(conn).and_then(|qp| {
            let ns = qp.subsystem.as_ref()?.namespaces.get(&nsid)?.clone();
            Some((ns, qp.ctrl.clone()?))
        });
        let Some((ns, ctrl)) = found else {
            return self.finish(conn, slot, Status::INVALID_NAMESPACE, 0, req.buf, cx);
        };
        let Request {
            cmd, plan, mut buf, ..
        } = req;
        let cdw10 = cmd.cdw10.get();
        let host = ctrl.hostid;
        let outcome = match cmd.opcode {
            op::REPORT => {
                let (status, len) = report(&ns, &cmd, plan, &mut buf);
                if let Some(qp) = self.qpair_mut(conn) {
                    qp.slot_mut(slot).data_len = len;
                }
                return self.finish(conn, slot, status, 0, buf, cx);
            }
            op::REGISTER => register(&ns, &host, cdw10, buf.as_ref()),
            op::ACQUIRE => acquire(&ns, &host, cdw10, buf.as_ref()),
            op::RELEASE => release(&ns, &host, cdw10, buf.as_ref()),
            _ => Err(Status::INVALID_OPCODE),
        };
        if let Some(b) = buf.take() {
            cx.put_buffer(b);
        }
        let status = match outcome {
            Ok(notices) => {
                self.target.notify_reservation(&ctrl, nsid, &notices);
                Status::SUCCESS
            }
            Err(status) => status,
        };
        self.finish(conn, slot, status, 0, None, cx)
    }
}

/// Command Aborted due to Preempt and Abort for a command of `ctrl`'s host on `nsid` that
/// started under abort epoch `since` and whose host was preempted with abort meanwhile.
pub(crate) fn preempt_abort_status(
    sub: Option<&std::sync::Arc<crate::subsystem::Subsystem>>,
    ctrl: Option<&std::sync::Arc<Controller>>,
    nsid: u32,
    since: u64,
) -> Option<Status> {
    let ns = sub?.namespaces.get(&nsid)?;
    ns.reservation
        .aborts
        .aborted(&ctrl?.hostid, since)
        .then_some(Status::ABORTED_PREEMPT)
}

/// The 16 (Register, Acquire) or 8 (Release) bytes of keys a command carries.
fn keys(buf: Option<&IoBuf>, need: usize) -> Result<&[u8], Status> {
    match buf {
        Some(b) if b.len() >= need => Ok(&b.as_slice()[..need]),
        _ => Err(Status::DATA_SGL_LENGTH_INVALID),
    }
}

/// The action field (CDW10 bits 2:0) of a reservation command; reserved values are Invalid
/// Field.
fn action_of<T: Copy>(cdw10: u32, actions: &[T]) -> Result<T, Status> {
    actions
        .get((cdw10 & 0x7) as usize)
        .copied()
        .ok_or(Status::INVALID_FIELD)
}

fn register(
    ns: &Namespace,
    host: &HostId,
    cdw10: u32,
    buf: Option<&IoBuf>,
) -> Result<Notices, Status> {
    use RegisterAction::*;
    let action = action_of(cdw10, &[Register, Unregister, Replace])?;
    let ignore_key = cdw10 & (1 << 3) != 0;
    // Change Persist Through Power Loss State: 00b no change, 10b clear, 11b set.
    let ptpl = match cdw10 >> 30 {
        0 => None,
        2 => Some(false),
        3 => Some(true),
        _ => return Err(Status::INVALID_FIELD),
    };
    let data = keys(buf, 16)?;
    let (crkey, nrkey) = (u64_at(data, 0), u64_at(data, 8));
    ns.reservation.change(|st| {
        let notices = st.register(host, action, crkey, nrkey, ignore_key)?;
        if let Some(p) = ptpl {
            st.ptpl = p;
        }
        Ok(notices)
    })
}

fn acquire(
    ns: &Namespace,
    host: &HostId,
    cdw10: u32,
    buf: Option<&IoBuf>,
) -> Result<Notices, Status> {
    use AcquireAction::*;
    let action = action_of(cdw10, &[Acquire, Preempt, PreemptAndAbort])?;
    // IEKEY is reserved for Acquire since NVMe 1.3.
    let rtype = ResvType::from_code(((cdw10 >> 8) & 0xFF) as u8).ok_or(Status::INVALID_FIELD)?;
    let data = keys(buf, 16)?;
    let (crkey, prkey) = (u64_at(data, 0), u64_at(data, 8));
    let notices = ns
        .reservation
        .change(|st| st.acquire(host, action, rtype, crkey, prkey))?;
    if action == PreemptAndAbort {
        // Before this command completes: the preempted hosts' outstanding commands are
        // aborted from now on (see resv_abort.rs).
        ns.reservation
            .aborts
            .record(notices.iter().map(|(h, _)| *h));
    }
    Ok(notices)
}

fn release(
    ns: &Namespace,
    host: &HostId,
    cdw10: u32,
    buf: Option<&IoBuf>,
) -> Result<Notices, Status> {
    // Release action: 0 release, 1 clear.
    let clear = action_of(cdw10, &[false, true])?;
    let rtype = ((cdw10 >> 8) & 0xFF) as u8;
    let data = keys(buf, 8)?;
    let crkey = u64_at(data, 0);
    ns.reservation
        .change(|st| st.release(host, clear, rtype, crkey))
}

/// Reservation Report: the extended data structure only. Fabrics hosts are identified by
/// 128-bit host identifiers, which the 64-bit structure cannot carry (Host Identifier
/// Inconsistent Format, as Linux nvmet and SPDK answer).
fn report(
    ns: &Namespace,
    cmd: &ferrite_nvme::Command,
    plan: DataPlan,
    buf: &mut Option<IoBuf>,
) -> (Status, u32) {
    let extended = cmd.cdw11.get() & 1 != 0;
    if !extended {
        return (Status::HOST_ID_INCONSISTENT_FORMAT, 0);
    }
    let want = (cmd.cdw10.get() as u64 + 1) * 4;
    let (DataPlan::ToHost { len }, Some(b)) = (plan, buf.as_mut()) else {
        return (Status::DATA_SGL_LENGTH_INVALID, 0);
    };
    let len = (len as u64).min(want) as usize;
    let page = ns.reservation.lock().report_extended();
    b.set_len(len);
    let out = b.as_mut_slice();
    let n = page.len().min(len);
    out[..n].copy_from_slice(&page[..n]);
    out[n..len].fill(0);
    (Status::SUCCESS, len as u32)
}

impl Target {
    /// The file namespace `nsid` of `nqn` keeps its reservations in (None without a
    /// reservation directory).
    pub(crate) fn reservation_file(
        &self,
        nqn: &str,
        nsid: u32,
    ) -> Result<Option<std::path::PathBuf>, crate::NvmfError> {
        let Some(dir) = &self.options.reservation_dir else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir).map_err(|e| crate::NvmfError::InvalidParameter {
            field: "reservation state",
            reason: format!("cannot create {}: {e}", dir.display()),
        })?;
        // NQNs are at most 223 bytes, so the name fits; '/' is the only byte a file name
        // cannot hold.
        Ok(Some(
            dir.join(format!("{}.ns{nsid}.json", nqn.replace('/', "_"))),
        ))
    }

    /// Queues reservation notifications for every controller of the hosts concerned (in the
    /// issuing controller's subsystem) and raises the Reservation Log Page Available event.
    pub(crate) fn notify_reservation(&self, issuer: &Controller, nsid: u32, notices: &Notices) {
        if notices.is_empty() {
            return;
        }
        let table = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        for (host, notice) in notices {
            for ctrl in table
                .values()
                .filter(|c| c.subnqn == issuer.subnqn && c.hostid == *host)
            {
                {
                    let mut st = ctrl.lock();
                    let mask = st.resv_mask.get(&nsid).copied().unwrap_or(0);
                    if mask & (1 << *notice as u32) != 0 {
                        continue;
                    }
                    st.resv_log_count = st.resv_log_count.wrapping_add(1).max(1);
                    if st.resv_log.len() >= RESV_LOG_DEPTH {
                        st.resv_log.pop_front();
                    }
                    st.resv_log.push_back((*notice as u8, nsid));
                }
                ctrl.raise_event(AsyncEvent::ReservationLogAvailable);
            }
        }
    }
}

/// Features 82h (Reservation Notification Mask, per controller and namespace) and 83h
/// (Reservation Persistence: PTPL of the namespace).
mod feature {
    pub const NOTIFICATION_MASK: u8 = 0x82;
    pub const PERSISTENCE: u8 = 0x83;
}

pub(crate) fn is_reservation_feature(cmd: &ferrite_nvme::Command) -> bool {
    matches!(
        (cmd.cdw10.get() & 0xFF) as u8,
        feature::NOTIFICATION_MASK | feature::PERSISTENCE
    )
}

/// Get or Set Features 82h/83h; the result is completion dword 0.
pub(crate) fn reservation_feature(
    cmd: &ferrite_nvme::Command,
    sub: &crate::subsystem::Subsystem,
    ctrl: &Controller,
) -> Result<u32, Status> {
    use ferrite_nvme::command::opcode::admin;
    const MASK_BITS: u32 = 0b1110;
    let cdw10 = cmd.cdw10.get();
    let set = cmd.opcode == admin::SET_FEATURES;
    let fid = (cdw10 & 0xFF) as u8;
    let nsid = cmd.nsid.get();
    if ctrl.discovery {
        return Err(Status::INVALID_FIELD);
    }
    if set && cdw10 & (1 << 31) != 0 && fid == feature::NOTIFICATION_MASK {
        return Err(Status::FEATURE_NOT_SAVEABLE);
    }
    // Get Features SEL 011b: both are changeable, 83h saveable, both namespace specific.
    if !set && (cdw10 >> 8) & 0x7 == 3 {
        let saveable = if fid == feature::PERSISTENCE { 1 } else { 0 };
        return Ok(saveable | (1 << 1) | (1 << 2));
    }
    let value = cmd.cdw11.get();
    if fid == feature::NOTIFICATION_MASK && set && nsid == 0xFFFF_FFFF {
        // Every namespace at once.
        let mut st = ctrl.lock();
        for n in sub.namespaces.keys() {
            st.resv_mask.insert(*n, value & MASK_BITS);
        }
        return Ok(0);
    }
    let ns = sub.namespace(nsid).ok_or(Status::INVALID_NAMESPACE)?;
    match (fid, set) {
        (feature::NOTIFICATION_MASK, true) => {
            ctrl.lock().resv_mask.insert(nsid, value & MASK_BITS);
            Ok(0)
        }
        (feature::NOTIFICATION_MASK, false) => {
            Ok(ctrl.lock().resv_mask.get(&nsid).copied().unwrap_or(0))
        }
        (_, true) => ns
            .reservation
            .change(|st| {
                st.ptpl = value & 1 != 0;
                Ok(Notices::new())
            })
            .map(|_| 0),
        (_, false) => Ok(ns.reservation.lock().ptpl as u32),
    }
}

/// The Reservation Notification log page: the oldest unread notification (reading consumes
/// it), or an empty page. Reading with RAE clear re-enables the event.
pub(crate) fn notification_log(ctrl: &Controller, retain: bool) -> Vec<u8> {
    let mut page = vec![0u8; 64];
    let mut st = ctrl.lock();
    if let Some((kind, nsid)) = st.resv_log.pop_front() {
        let count = st
            .resv_log_count
            .wrapping_sub(st.resv_log.len() as u64)
            .max(1);
        page[0..8].copy_from_slice(&count.to_le_bytes());
        page[8] = kind;
        page[9] = st.resv_log.len().min(255) as u8;
        page[12..16].copy_from_slice(&nsid.to_le_bytes());
    }
    if !retain {
        ctrl.clear_event(&mut st, AsyncEvent::ReservationLogAvailable);
        if !st.resv_log.is_empty() {
            // More to read: tell the host again.
            drop(st);
            ctrl.raise_event(AsyncEvent::ReservationLogAvailable);
        }
    }
    page
}
