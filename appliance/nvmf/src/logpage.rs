//! Log pages: error information, SMART / health, firmware slots, changed namespaces, commands
//! supported and effects, discovery. Each page is built whole and the requested window copied
//! out (admin path only, so the allocation is fine).

use std::time::Instant;

use ferrite_nvme::command::opcode::{admin as aop, io as iop};
use ferrite_nvme::log::{
    self as lp, CommandsSupportedEffects, DiscoveryLogEntry, DiscoveryLogHeader, ErrorLogEntry,
    FirmwareSlotLog, SmartCounter, SmartLog,
};
use ferrite_nvme::Command;
use ferrite_nvme::Status;
use zerocopy::{FromZeros, IntoBytes};

use crate::admin_result::AdminResult;
use crate::controller::{AsyncEvent, Controller};
use crate::subsystem::Subsystem;
use crate::target::Target;
use crate::{ERROR_LOG_ENTRIES, FIRMWARE_REVISION};

/// Get Log Page CDW10 bit 15: retain asynchronous event.
const RAE: u32 = 1 << 15;
const NSID_ALL: u32 = 0xFFFF_FFFF;

pub(crate) fn get_log_page(
    target: &Target,
    cmd: &Command,
    sub: &Subsystem,
    ctrl: &Controller,
    local: Option<std::net::SocketAddr>,
    now: Instant,
    out: &mut [u8],
) -> AdminResult {
    let cdw10 = cmd.cdw10.get();
    let lid = (cdw10 & 0xFF) as u8;
    let retain = cdw10 & RAE != 0;
    let numd = (((cmd.cdw11.get() & 0xFFFF) << 16) | (cdw10 >> 16)) as u64 + 1;
    let offset = cmd.cdw12.get() as u64 | ((cmd.cdw13.get() as u64) << 32);
    let len = numd * 4;
    if len > out.len() as u64 {
        return status(Status::DATA_SGL_LENGTH_INVALID);
    }
    if offset % 4 != 0 {
        return status(Status::INVALID_FIELD);
    }
    let nsid = cmd.nsid.get();
    let page = match (lid, ctrl.discovery) {
        (lp::LID_DISCOVERY, true) => discovery(target, &ctrl.hostnqn),
        (_, true) => return status(Status::INVALID_LOG_PAGE),
        (lp::LID_ERROR, _) => error_log(ctrl),
        (lp::LID_SMART, _) if nsid != 0 && nsid != NSID_ALL => {
            return status(Status::INVALID_FIELD)
        }
        (lp::LID_SMART, _) => smart(ctrl, now),
        (lp::LID_FIRMWARE_SLOT, _) => firmware_slots(),
        (lp::LID_CHANGED_NAMESPACES, _) => changed_namespaces(ctrl, retain),
        (lp::LID_COMMANDS_SUPPORTED, _) => commands_supported(),
        (lp::LID_ANA, _) => {
            let rgo = (cdw10 >> 8) & u32::from(lp::ANA_LSP_RGO) != 0;
            if !retain {
                let mut st = ctrl.lock();
                ctrl.clear_event(&mut st, AsyncEvent::AnaChange);
            }
            crate::ana::ana_log(sub, local, rgo)
        }
        (crate::resv_cmd::LID_RESERVATION_NOTIFICATION, _) => {
            crate::resv_cmd::notification_log(ctrl, retain)
        }
        _ => return status(Status::INVALID_LOG_PAGE),
    };
    let out = &mut out[..len as usize];
    if offset > page.len() as u64 {
        return status(Status::INVALID_FIELD);
    }
    let start = offset as usize;
    let n = (page.len() - start).min(out.len());
    out[..n].copy_from_slice(&page[start..start + n]);
    out[n..].fill(0);
    AdminResult {
        status: Status::SUCCESS,
        dw0: 0,
        data_len: len as u32,
    }
}

fn status(s: Status) -> AdminResult {
    AdminResult {
        status: s,
        dw0: 0,
        data_len: 0,
    }
}

fn error_log(ctrl: &Controller) -> Vec<u8> {
    let mut page = vec![0u8; ERROR_LOG_ENTRIES * std::mem::size_of::<ErrorLogEntry>()];
    for (record, chunk) in ctrl
        .error_log()
        .records()
        .iter()
        .zip(page.chunks_exact_mut(std::mem::size_of::<ErrorLogEntry>()))
    {
        let mut entry = ErrorLogEntry::new_zeroed();
        entry.error_count.set(record.error_count);
        entry.sqid.set(record.sqid);
        entry.cid.set(record.cid);
        // The status field carries the phase tag in bit 0.
        entry.status.set(record.status.raw() << 1);
        entry.parameter_error_location.set(0xFFFF);
        entry.lba.set(record.lba);
        entry.nsid.set(record.nsid);
        entry.trtype = 3;
        chunk.copy_from_slice(entry.as_bytes());
    }
    page
}

fn smart(ctrl: &Controller, now: Instant) -> Vec<u8> {
    let totals = ctrl.health_totals();
    let errors = ctrl.error_log().count();
    let critical = ctrl.lock().csts & (1 << 1) != 0;
    let mut log = SmartLog::new_zeroed();
    log.critical_warning = if critical { 1 << 3 } else { 0 }; // bit 3: reliability degraded
    log.available_spare = 100;
    log.available_spare_threshold = 10;
    let counters = [
        (
            SmartCounter::DataUnitsRead,
            SmartLog::data_units(totals.bytes_read as u128),
        ),
        (
            SmartCounter::DataUnitsWritten,
            SmartLog::data_units(totals.bytes_written as u128),
        ),
        (SmartCounter::HostReadCommands, totals.read_commands as u128),
        (
            SmartCounter::HostWriteCommands,
            totals.write_commands as u128,
        ),
        (
            SmartCounter::ControllerBusyTime,
            (totals.busy_ns / 60_000_000_000) as u128,
        ),
        (SmartCounter::PowerCycles, 1),
        (
            SmartCounter::PowerOnHours,
            (ctrl.uptime(now).as_secs() / 3600) as u128,
        ),
        (SmartCounter::MediaErrors, totals.media_errors as u128),
        (SmartCounter::NumErrLogEntries, errors as u128),
    ];
    for (counter, value) in counters {
        log.set_counter(counter, value);
    }
    log.as_bytes().to_vec()
}

fn firmware_slots() -> Vec<u8> {
    match FirmwareSlotLog::single_slot(FIRMWARE_REVISION) {
        Ok(log) => log.as_bytes().to_vec(),
        Err(_) => vec![0u8; std::mem::size_of::<FirmwareSlotLog>()],
    }
}

fn changed_namespaces(ctrl: &Controller, retain: bool) -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    let mut st = ctrl.lock();
    if st.changed_overflow {
        page[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    } else {
        for (nsid, chunk) in st.changed_namespaces.iter().zip(page.chunks_exact_mut(4)) {
            chunk.copy_from_slice(&nsid.to_le_bytes());
        }
    }
    if !retain {
        st.changed_namespaces.clear();
        st.changed_overflow = false;
        ctrl.clear_event(&mut st, AsyncEvent::NamespaceAttributeChanged);
    }
    page
}

fn commands_supported() -> Vec<u8> {
    let mut log = CommandsSupportedEffects::new_zeroed();
    let supported = lp::effects::CSUPP;
    for opcode in [
        aop::GET_LOG_PAGE,
        aop::IDENTIFY,
        aop::ABORT,
        aop::SET_FEATURES,
        aop::GET_FEATURES,
        aop::ASYNC_EVENT_REQUEST,
        aop::KEEP_ALIVE,
    ] {
        log.acs[opcode as usize].set(supported);
    }
    for opcode in [
        iop::READ,
        iop::COMPARE,
        iop::FLUSH,
        crate::resv_cmd::op::REGISTER,
        crate::resv_cmd::op::REPORT,
        crate::resv_cmd::op::ACQUIRE,
        crate::resv_cmd::op::RELEASE,
    ] {
        log.iocs[opcode as usize].set(supported);
    }
    for opcode in [
        iop::WRITE,
        iop::WRITE_ZEROES,
        iop::DATASET_MANAGEMENT,
        iop::COPY,
    ] {
        log.iocs[opcode as usize].set(supported | lp::effects::LBCC);
    }
    log.as_bytes().to_vec()
}

/// The discovery log a host sees: one entry per (subsystem it may access, listener), plus the
/// discovery subsystem itself on every listener.
fn discovery(target: &Target, hostnqn: &str) -> Vec<u8> {
    let cfg = target.config();
    let mut entries = Vec::new();
    for (portid, listener) in cfg.listeners.iter().enumerate() {
        for sub in cfg.subsystems.values() {
            let listed = sub.is_discovery() || sub.listeners.contains(listener);
            if !listed || (!sub.is_discovery() && !sub.allows(hostnqn)) {
                continue;
            }
            let mut e = DiscoveryLogEntry::new_zeroed();
            e.trtype = listener.trtype.code();
            e.adrfam = if listener.addr.is_ipv4() { 1 } else { 2 };
            e.subtype = if sub.is_discovery() { 3 } else { 2 };
            e.treq = 0; // secure channel not specified; SQ flow control may not be disabled by default
            e.portid.set(portid as u16);
            e.cntlid.set(0xFFFF);
            e.asqsz.set(crate::MAX_ADMIN_QUEUE_ENTRIES);
            let _ = e.set_trsvcid(&listener.addr.port().to_string());
            let _ = e.set_traddr(&listener.addr.ip().to_string());
            let _ = e.set_subnqn(&sub.nqn);
            entries.push(e);
        }
    }
    let mut header = DiscoveryLogHeader::new_zeroed();
    header.genctr.set(cfg.generation);
    header.numrec.set(entries.len() as u64);
    let mut page = header.as_bytes().to_vec();
    for e in &entries {
        page.extend_from_slice(e.as_bytes());
    }
    page
}
