//! Identify data this target reports (CNS 00h, 01h, 02h, 03h, 05h, 06h, 1Ch).

use ferrite_nvme::identify::{
    cntrltype, ctratt, dlfeat, lpa, nsattr, nsfeat, oaes, ocfs, oncs, sgls, CtrlStrField,
    IdentifyController, IdentifyNamespace, IdentifyNvmController, IdentifyNvmNamespace,
    IoCommandSetVectors, LbaFormat, NsDescriptorList, IDENTIFY_DATA_SIZE,
};
use zerocopy::IntoBytes;

use crate::controller::Controller;
use crate::subsystem::{Namespace, Subsystem};
use crate::{
    ERROR_LOG_ENTRIES, FIRMWARE_REVISION, IN_CAPSULE_DATA_BYTES, MAX_AERS, MAX_NSID,
    MAX_QUEUE_ENTRIES, MDTS,
};

/// NVMe version this target implements (VS and Identify VER): 1.4.
pub(crate) const VERSION: u32 = 0x0001_0400;
/// Keep Alive granularity reported in KAS, in units of 100 ms.
const KAS_100MS: u16 = 1;
/// Abort commands outstanding at once (ACL is 0-based).
const ABORT_LIMIT: u8 = 3;

/// Identify Controller for an I/O or discovery controller.
pub(crate) fn controller(sub: &Subsystem, ctrl: &Controller) -> IdentifyController {
    let mut id = IdentifyController::zeroed();
    // Strings come from validated configuration; errors would mean a bug there.
    let _ = id.set_str(CtrlStrField::Sn, &sub.serial);
    let _ = id.set_str(CtrlStrField::Mn, &sub.model);
    let _ = id.set_str(CtrlStrField::Fr, FIRMWARE_REVISION);
    let _ = id.set_str(CtrlStrField::Subnqn, &sub.nqn);
    id.cntlid.set(ctrl.cntlid);
    id.ver.set(VERSION);
    id.mdts = MDTS;
    id.ctratt.set(ctratt::HOST_ID_128);
    id.kas.set(KAS_100MS);
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.maxcmd.set(MAX_QUEUE_ENTRIES);
    id.sgls.set(sgls::SUPPORTED | sgls::OFFSET);
    // Fabrics fields: capsule sizes in 16-byte units.
    id.ioccsz.set((64 + IN_CAPSULE_DATA_BYTES) / 16);
    id.iorcsz.set(1);
    id.msdbd = 1;
    id.ofcs.set(1); // Disconnect command supported.
    id.elpe = (ERROR_LOG_ENTRIES - 1) as u8;
    id.aerl = (MAX_AERS - 1) as u8;
    id.lpa = lpa::EXTENDED_DATA | if ctrl.discovery { 0 } else { lpa::CMD_EFFECTS };
    if ctrl.discovery {
        id.cntrltype = cntrltype::DISCOVERY;
        id.oaes.set(oaes::DISCOVERY_CHANGE);
        return id;
    }
    id.cntrltype = cntrltype::IO;
    id.rab = 6;
    // Several ports (bit 0) and controllers (bit 1) may share the subsystem, with ANA
    // reporting (bit 3): hosts build one multipath device over every path.
    id.cmic = (1 << 3) | (1 << 1) | 1;
    id.anacap = crate::ana::ANACAP;
    id.anatt = crate::ana::ANATT_SECONDS;
    id.anagrpmax.set(crate::ana::MAX_ANA_GROUP);
    id.nanagrpid.set(crate::ana::MAX_ANA_GROUP);
    id.oaes.set(oaes::NS_ATTRIBUTE | oaes::ANA_CHANGE);
    id.acl = ABORT_LIMIT;
    id.frmw = (1 << 1) | 1; // one slot, read-only
    id.nn.set(MAX_NSID);
    // MNAN: Linux's ANA support sizes its log buffer from it and refuses 0.
    id.mnan.set(MAX_NSID);
    // Copy on every namespace: offloaded where the bdev can, emulated otherwise. Not Copy
    // Single Atomicity nor All Fast Copy: emulation is neither atomic nor fast.
    id.oncs.set(
        oncs::COMPARE
            | oncs::DATASET_MANAGEMENT
            | oncs::WRITE_ZEROES
            | oncs::COPY
            | oncs::RESERVATIONS,
    );
    id.ocfs.set(ocfs::FORMAT_0);
    let cache = sub
        .namespaces
        .values()
        .any(|ns| ns.bdev.capabilities().volatile_write_cache);
    // Bit 0: a volatile write cache is present; bits 2:1 = 11b: Flush with NSID FFFFFFFFh works.
    id.vwc = if cache { 0x07 } else { 0x06 };
    let capacity: u128 = sub
        .namespaces
        .values()
        .map(|ns| ns.bdev.num_blocks() as u128 * ns.bdev.block_size() as u128)
        .sum();
    id.set_tnvmcap(capacity);
    id.set_unvmcap(0);
    id.psd[0].mp.set(100); // 1 W in 0.01 W units: a nominal figure, there is no power control.
    id
}

/// Identify Namespace (CNS 00h).
pub(crate) fn namespace(ns: &Namespace) -> IdentifyNamespace {
    let mut id = IdentifyNamespace::zeroed();
    let blocks = ns.bdev.num_blocks();
    let caps = ns.bdev.capabilities();
    id.nsze.set(blocks);
    // NCAP = NSZE even when thin (as Linux nvmet and SPDK report): the host may write every
    // block; what is allocated now shows in NUSE.
    id.ncap.set(blocks);
    let used = if caps.thin_provisioned {
        ns.bdev.allocated_blocks().unwrap_or(blocks).min(blocks)
    } else {
        blocks
    };
    id.nuse.set(used);
    if caps.thin_provisioned {
        id.nsfeat |= nsfeat::THIN_PROVISIONING;
    }
    if caps.read_only {
        id.nsattr |= nsattr::WRITE_PROTECTED;
    }
    id.nlbaf = 0;
    id.flbas = 0;
    id.nmic = 1; // may be attached to several controllers
                 // Persist Through Power Loss, all six reservation types, IEKEY semantics of NVMe 1.3.
    id.rescap = 0xFF;
    id.anagrpid.set(ns.anagrpid);
    // Deallocated blocks read as zeroes when the backend really deallocates.
    id.dlfeat = if caps.unmap {
        dlfeat::READ_ZEROES
    } else {
        0x00
    };
    let limits = crate::copy_job::CopyLimits::for_block_size(ns.bdev.block_size());
    id.mssrl.set(limits.mssrl);
    id.mcl.set(limits.mcl);
    id.msrc = limits.msrc;
    id.nguid = ns.nguid;
    let lbads = ns.bdev.block_size().trailing_zeros() as u8;
    let _ = id.set_lba_format(
        0,
        LbaFormat {
            ms: 0,
            lbads,
            rp: 0,
        },
    );
    id.set_nvmcap(blocks as u128 * ns.bdev.block_size() as u128);
    id
}

/// Namespace identification descriptors (CNS 03h).
pub(crate) fn ns_descriptors(ns: &Namespace, out: &mut [u8; IDENTIFY_DATA_SIZE]) {
    NsDescriptorList::encode(None, Some(ns.nguid), Some(ns.uuid), Some(0), out);
}

/// NVM command set specific Identify Controller (CNS 06h, CSI 0).
pub(crate) fn nvm_controller() -> IdentifyNvmController {
    let mut id = IdentifyNvmController::zeroed();
    // Write Zeroes and DSM limits: no tighter than MDTS for zeroes; 256 ranges per DSM.
    id.wzsl = 0;
    id.dmrl = 0;
    id
}

/// NVM command set specific Identify Namespace (CNS 05h, CSI 0).
pub(crate) fn nvm_namespace() -> IdentifyNvmNamespace {
    IdentifyNvmNamespace::zeroed()
}

/// Identify I/O Command Set data structure (CNS 1Ch): NVM only.
pub(crate) fn io_command_sets() -> IoCommandSetVectors {
    IoCommandSetVectors::nvm_only()
}

/// Copies an identify structure into the command's buffer.
pub(crate) fn copy_out<T: IntoBytes + zerocopy::Immutable>(data: &T, dst: &mut [u8]) {
    let src = data.as_bytes();
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    dst[n..].fill(0);
}
