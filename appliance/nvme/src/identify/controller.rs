//! Identify Controller data structure (CNS 01h, 4096 bytes).

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{NvmeError, Result};
use crate::strings::{nul_terminated_str, set_nul_padded, set_space_padded, space_padded_str};

/// Power State Descriptor (32 bytes).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct PowerStateDescriptor {
    /// Maximum power (centiwatts or 0.0001 W per MXPS).
    pub mp: U16,
    /// Reserved.
    pub rsvd2: u8,
    /// Bit 0 MXPS (max power scale), bit 1 NOPS (non-operational state).
    pub flags: u8,
    /// Entry latency (microseconds).
    pub enlat: U32,
    /// Exit latency (microseconds).
    pub exlat: U32,
    /// Relative read throughput.
    pub rrt: u8,
    /// Relative read latency.
    pub rrl: u8,
    /// Relative write throughput.
    pub rwt: u8,
    /// Relative write latency.
    pub rwl: u8,
    /// Idle power.
    pub idlp: U16,
    /// Idle power scale (bits 7:6).
    pub ips: u8,
    /// Reserved.
    pub rsvd19: u8,
    /// Active power.
    pub actp: U16,
    /// Active power workload (bits 2:0) and scale (bits 7:6).
    pub apws: u8,
    /// Reserved.
    pub rsvd23: [u8; 9],
}

const _: () = assert!(size_of::<PowerStateDescriptor>() == 32);
const _: () = assert!(offset_of!(PowerStateDescriptor, enlat) == 4);
const _: () = assert!(offset_of!(PowerStateDescriptor, actp) == 20);

/// Identify Controller data structure.
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vid: U16,
    /// PCI Subsystem Vendor ID.
    pub ssvid: U16,
    /// Serial Number (ASCII, space padded).
    pub sn: [u8; 20],
    /// Model Number (ASCII, space padded).
    pub mn: [u8; 40],
    /// Firmware Revision (ASCII, space padded).
    pub fr: [u8; 8],
    /// Recommended Arbitration Burst.
    pub rab: u8,
    /// IEEE OUI Identifier.
    pub ieee: [u8; 3],
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities.
    pub cmic: u8,
    /// Maximum Data Transfer Size (2^n units of CAP.MPSMIN; 0 = no limit).
    pub mdts: u8,
    /// Controller ID.
    pub cntlid: U16,
    /// Version (same encoding as the VS property).
    pub ver: U32,
    /// RTD3 Resume Latency.
    pub rtd3r: U32,
    /// RTD3 Entry Latency.
    pub rtd3e: U32,
    /// Optional Asynchronous Events Supported.
    pub oaes: U32,
    /// Controller Attributes.
    pub ctratt: U32,
    /// Read Recovery Levels Supported.
    pub rrls: U16,
    /// Reserved.
    pub rsvd102: [u8; 9],
    /// Controller Type (1 I/O, 2 discovery, 3 administrative).
    pub cntrltype: u8,
    /// FRU Globally Unique Identifier.
    pub fguid: [u8; 16],
    /// Command Retry Delay Time 1 (100 ms units).
    pub crdt1: U16,
    /// Command Retry Delay Time 2.
    pub crdt2: U16,
    /// Command Retry Delay Time 3.
    pub crdt3: U16,
    /// Reserved.
    pub rsvd134: [u8; 119],
    /// NVM Subsystem Report.
    pub nvmsr: u8,
    /// VPD Write Cycle Information.
    pub vwci: u8,
    /// Management Endpoint Capabilities.
    pub mec: u8,
    /// Optional Admin Command Support.
    pub oacs: U16,
    /// Abort Command Limit (0-based).
    pub acl: u8,
    /// Asynchronous Event Request Limit (0-based).
    pub aerl: u8,
    /// Firmware Updates.
    pub frmw: u8,
    /// Log Page Attributes.
    pub lpa: u8,
    /// Error Log Page Entries (0-based).
    pub elpe: u8,
    /// Number of Power States Support (0-based).
    pub npss: u8,
    /// Admin Vendor Specific Command Configuration.
    pub avscc: u8,
    /// Autonomous Power State Transition Attributes.
    pub apsta: u8,
    /// Warning Composite Temperature Threshold (Kelvin).
    pub wctemp: U16,
    /// Critical Composite Temperature Threshold (Kelvin).
    pub cctemp: U16,
    /// Maximum Time for Firmware Activation.
    pub mtfa: U16,
    /// Host Memory Buffer Preferred Size.
    pub hmpre: U32,
    /// Host Memory Buffer Minimum Size.
    pub hmmin: U32,
    /// Total NVM Capacity (bytes, u128 LE).
    pub tnvmcap: [u8; 16],
    /// Unallocated NVM Capacity (bytes, u128 LE).
    pub unvmcap: [u8; 16],
    /// Replay Protected Memory Block Support.
    pub rpmbs: U32,
    /// Extended Device Self-test Time.
    pub edstt: U16,
    /// Device Self-test Options.
    pub dsto: u8,
    /// Firmware Update Granularity.
    pub fwug: u8,
    /// Keep Alive Support (granularity in 100 ms units; 0 = unsupported).
    pub kas: U16,
    /// Host Controlled Thermal Management Attributes.
    pub hctma: U16,
    /// Minimum Thermal Management Temperature.
    pub mntmt: U16,
    /// Maximum Thermal Management Temperature.
    pub mxtmt: U16,
    /// Sanitize Capabilities.
    pub sanicap: U32,
    /// Host Memory Buffer Minimum Descriptor Entry Size.
    pub hmminds: U32,
    /// Host Memory Maximum Descriptors Entries.
    pub hmmaxd: U16,
    /// NVM Set Identifier Maximum.
    pub nsetidmax: U16,
    /// Endurance Group Identifier Maximum.
    pub endgidmax: U16,
    /// ANA Transition Time (seconds).
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities.
    pub anacap: u8,
    /// ANA Group Identifier Maximum.
    pub anagrpmax: U32,
    /// Number of ANA Group Identifiers.
    pub nanagrpid: U32,
    /// Persistent Event Log Size (4 KiB units).
    pub pels: U32,
    /// Domain Identifier.
    pub domainid: U16,
    /// Reserved.
    pub rsvd358: [u8; 10],
    /// Max Endurance Group Capacity (u128 LE).
    pub megcap: [u8; 16],
    /// Reserved.
    pub rsvd384: [u8; 128],
    /// Submission Queue Entry Size: bits 3:0 required, 7:4 maximum (log2).
    pub sqes: u8,
    /// Completion Queue Entry Size: bits 3:0 required, 7:4 maximum (log2).
    pub cqes: u8,
    /// Maximum Outstanding Commands.
    pub maxcmd: U16,
    /// Number of Namespaces (largest valid NSID).
    pub nn: U32,
    /// Optional NVM Command Support.
    pub oncs: U16,
    /// Fused Operation Support.
    pub fuses: U16,
    /// Format NVM Attributes.
    pub fna: u8,
    /// Volatile Write Cache (bit 0 present; bits 2:1 flush-all-NSID behaviour).
    pub vwc: u8,
    /// Atomic Write Unit Normal (0-based, logical blocks).
    pub awun: U16,
    /// Atomic Write Unit Power Fail (0-based, logical blocks).
    pub awupf: U16,
    /// I/O Command Set Vendor Specific Command Configuration.
    pub icsvscc: u8,
    /// Namespace Write Protection Capabilities.
    pub nwpc: u8,
    /// Atomic Compare & Write Unit (0-based).
    pub acwu: U16,
    /// Optional Copy Formats Supported.
    pub ocfs: U16,
    /// SGL Support.
    pub sgls: U32,
    /// Maximum Number of Allowed Namespaces.
    pub mnan: U32,
    /// Maximum Domain Namespace Attachments (u128 LE).
    pub maxdna: [u8; 16],
    /// Maximum I/O Controller Namespace Attachments.
    pub maxcna: U32,
    /// Reserved.
    pub rsvd564: [u8; 204],
    /// NVM Subsystem NVMe Qualified Name (NUL-terminated).
    pub subnqn: [u8; 256],
    /// Reserved.
    pub rsvd1024: [u8; 768],
    /// I/O Queue Command Capsule Supported Size (16-byte units).
    pub ioccsz: U32,
    /// I/O Queue Response Capsule Supported Size (16-byte units).
    pub iorcsz: U32,
    /// In Capsule Data Offset (16-byte units).
    pub icdoff: U16,
    /// Fabrics Controller Attributes.
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors.
    pub msdbd: u8,
    /// Optional Fabric Commands Support.
    pub ofcs: U16,
    /// Discovery controller type (discovery controllers: 1 DDC, 2 CDC).
    pub dctype: u8,
    /// Reserved.
    pub rsvd1807: [u8; 241],
    /// Power State Descriptors 0..=31.
    pub psd: [PowerStateDescriptor; 32],
    /// Vendor Specific.
    pub vs: [u8; 1024],
}

const _: () = assert!(size_of::<IdentifyController>() == 4096);
const _: () = assert!(offset_of!(IdentifyController, sn) == 4);
const _: () = assert!(offset_of!(IdentifyController, mn) == 24);
const _: () = assert!(offset_of!(IdentifyController, fr) == 64);
const _: () = assert!(offset_of!(IdentifyController, ieee) == 73);
const _: () = assert!(offset_of!(IdentifyController, mdts) == 77);
const _: () = assert!(offset_of!(IdentifyController, cntlid) == 78);
const _: () = assert!(offset_of!(IdentifyController, ver) == 80);
const _: () = assert!(offset_of!(IdentifyController, oaes) == 92);
const _: () = assert!(offset_of!(IdentifyController, ctratt) == 96);
const _: () = assert!(offset_of!(IdentifyController, cntrltype) == 111);
const _: () = assert!(offset_of!(IdentifyController, fguid) == 112);
const _: () = assert!(offset_of!(IdentifyController, crdt1) == 128);
const _: () = assert!(offset_of!(IdentifyController, nvmsr) == 253);
const _: () = assert!(offset_of!(IdentifyController, oacs) == 256);
const _: () = assert!(offset_of!(IdentifyController, npss) == 263);
const _: () = assert!(offset_of!(IdentifyController, wctemp) == 266);
const _: () = assert!(offset_of!(IdentifyController, tnvmcap) == 280);
const _: () = assert!(offset_of!(IdentifyController, kas) == 320);
const _: () = assert!(offset_of!(IdentifyController, anatt) == 342);
const _: () = assert!(offset_of!(IdentifyController, anagrpmax) == 344);
const _: () = assert!(offset_of!(IdentifyController, pels) == 352);
const _: () = assert!(offset_of!(IdentifyController, megcap) == 368);
const _: () = assert!(offset_of!(IdentifyController, sqes) == 512);
const _: () = assert!(offset_of!(IdentifyController, maxcmd) == 514);
const _: () = assert!(offset_of!(IdentifyController, nn) == 516);
const _: () = assert!(offset_of!(IdentifyController, oncs) == 520);
const _: () = assert!(offset_of!(IdentifyController, vwc) == 525);
const _: () = assert!(offset_of!(IdentifyController, awun) == 526);
const _: () = assert!(offset_of!(IdentifyController, icsvscc) == 530);
const _: () = assert!(offset_of!(IdentifyController, acwu) == 532);
const _: () = assert!(offset_of!(IdentifyController, ocfs) == 534);
const _: () = assert!(offset_of!(IdentifyController, sgls) == 536);
const _: () = assert!(offset_of!(IdentifyController, mnan) == 540);
const _: () = assert!(offset_of!(IdentifyController, maxcna) == 560);
const _: () = assert!(offset_of!(IdentifyController, subnqn) == 768);
const _: () = assert!(offset_of!(IdentifyController, ioccsz) == 1792);
const _: () = assert!(offset_of!(IdentifyController, iorcsz) == 1796);
const _: () = assert!(offset_of!(IdentifyController, icdoff) == 1800);
const _: () = assert!(offset_of!(IdentifyController, fcatt) == 1802);
const _: () = assert!(offset_of!(IdentifyController, msdbd) == 1803);
const _: () = assert!(offset_of!(IdentifyController, ofcs) == 1804);
const _: () = assert!(offset_of!(IdentifyController, dctype) == 1806);
const _: () = assert!(offset_of!(IdentifyController, psd) == 2048);
const _: () = assert!(offset_of!(IdentifyController, vs) == 3072);

/// Text fields of Identify Controller, for [`IdentifyController::set_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrlStrField {
    /// Serial Number (20 bytes, space padded).
    Sn,
    /// Model Number (40 bytes, space padded).
    Mn,
    /// Firmware Revision (8 bytes, space padded).
    Fr,
    /// Subsystem NQN (256 bytes, NUL padded).
    Subnqn,
}

/// CNTRLTYPE values.
pub mod cntrltype {
    /// I/O controller.
    pub const IO: u8 = 1;
    /// Discovery controller.
    pub const DISCOVERY: u8 = 2;
    /// Administrative controller.
    pub const ADMIN: u8 = 3;
}

/// ONCS bits (Optional NVM Command Support).
pub mod oncs {
    /// Compare.
    pub const COMPARE: u16 = 1 << 0;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u16 = 1 << 2;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u16 = 1 << 3;
    /// Save field in Set/Get Features.
    pub const SAVE_SELECT: u16 = 1 << 4;
    /// Reservations.
    pub const RESERVATIONS: u16 = 1 << 5;
    /// Timestamp feature.
    pub const TIMESTAMP: u16 = 1 << 6;
    /// Verify.
    pub const VERIFY: u16 = 1 << 7;
    /// Copy.
    pub const COPY: u16 = 1 << 8;
    /// Copy Single Atomicity (NVMCSA): the write portion of a Copy is one atomic write.
    pub const COPY_SINGLE_ATOMICITY: u16 = 1 << 9;
    /// All Fast Copy (NVMAFC): every copy operation is a fast copy.
    pub const ALL_FAST_COPY: u16 = 1 << 10;
}

/// OCFS bits (Optional Copy Formats Supported, bytes 535:534): bit n = descriptor format n.
pub mod ocfs {
    /// Source Range Entries Copy Descriptor Format 0h.
    pub const FORMAT_0: u16 = 1 << 0;
    /// Format 1h (32b/64b guard protection information).
    pub const FORMAT_1: u16 = 1 << 1;
    /// Format 2h (format 0h with a source namespace identifier).
    pub const FORMAT_2: u16 = 1 << 2;
    /// Format 3h (format 1h with a source namespace identifier).
    pub const FORMAT_3: u16 = 1 << 3;
}

/// SGLS bits.
pub mod sgls {
    /// SGLs supported, no alignment requirement (bits 1:0 = 01b).
    pub const SUPPORTED: u32 = 0x1;
    /// Keyed SGL Data Block descriptor supported (bit 2).
    pub const KEYED_DATA_BLOCK: u32 = 1 << 2;
    /// Commands whose data SGL describes more than the data they transfer are supported
    /// (bit 18). Without it such a command fails with Data SGL Length Invalid.
    pub const EXCESS_LENGTH: u32 = 1 << 18;
    /// SGL Offset supported (bit 20): the Offset sub type of data blocks.
    pub const OFFSET: u32 = 1 << 20;
    /// Transport SGL Data Block descriptor supported (bit 22).
    pub const TRANSPORT_DATA_BLOCK: u32 = 1 << 22;
}

/// OAES bits.
pub mod oaes {
    /// Namespace Attribute Notices.
    pub const NS_ATTRIBUTE: u32 = 1 << 8;
    /// Firmware Activation Notices.
    pub const FW_ACTIVATION: u32 = 1 << 9;
    /// Asymmetric Namespace Access Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Discovery Log Page Change Notification.
    pub const DISCOVERY_CHANGE: u32 = 1 << 31;
}

/// LPA bits (Log Page Attributes).
pub mod lpa {
    /// SMART log per namespace.
    pub const SMART_PER_NS: u8 = 1 << 0;
    /// Commands Supported and Effects log.
    pub const CMD_EFFECTS: u8 = 1 << 1;
    /// Extended data for Get Log Page (NUMDU, LPOL/LPOU).
    pub const EXTENDED_DATA: u8 = 1 << 2;
}

/// CTRATT bits.
pub mod ctratt {
    /// 128-bit Host Identifier.
    pub const HOST_ID_128: u32 = 1 << 0;
}

impl IdentifyController {
    /// A zeroed structure.
    pub fn zeroed() -> IdentifyController {
        IdentifyController::new_zeroed()
    }

    /// Decodes from the first 4096 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<IdentifyController> {
        IdentifyController::read_from_prefix(bytes)
            .map(|(d, _)| d)
            .map_err(|_| NvmeError::TooShort {
                what: "identify controller",
                needed: size_of::<IdentifyController>(),
                got: bytes.len(),
            })
    }

    /// Writes a text field: SN/MN/FR space padded ASCII, SUBNQN NUL padded.
    pub fn set_str(&mut self, field: CtrlStrField, value: &str) -> Result<()> {
        match field {
            CtrlStrField::Sn => set_space_padded("sn", &mut self.sn, value),
            CtrlStrField::Mn => set_space_padded("mn", &mut self.mn, value),
            CtrlStrField::Fr => set_space_padded("fr", &mut self.fr, value),
            CtrlStrField::Subnqn => set_nul_padded("subnqn", &mut self.subnqn, value),
        }
    }

    /// Reads a text field (trailing padding removed).
    pub fn get_str(&self, field: CtrlStrField) -> Result<&str> {
        match field {
            CtrlStrField::Sn => space_padded_str("sn", &self.sn),
            CtrlStrField::Mn => space_padded_str("mn", &self.mn),
            CtrlStrField::Fr => space_padded_str("fr", &self.fr),
            CtrlStrField::Subnqn => nul_terminated_str("subnqn", &self.subnqn),
        }
    }

    /// Sets TNVMCAP.
    pub fn set_tnvmcap(&mut self, bytes: u128) {
        self.tnvmcap = bytes.to_le_bytes();
    }

    /// Sets UNVMCAP.
    pub fn set_unvmcap(&mut self, bytes: u128) {
        self.unvmcap = bytes.to_le_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_land_at_spec_offsets() {
        let mut id = IdentifyController::zeroed();
        id.vid = 0x1B36.into();
        id.set_str(CtrlStrField::Sn, "FERRITE0001").expect("fits");
        id.set_str(CtrlStrField::Mn, "Ferrite").expect("fits");
        id.set_str(CtrlStrField::Fr, "0.1").expect("fits");
        id.set_str(CtrlStrField::Subnqn, "nqn.2016-06.io.spdk:cnode1")
            .expect("fits");
        id.cntlid = 0x0102.into();
        id.kas = 1.into();
        id.nn = 32.into();
        id.sgls = (sgls::SUPPORTED | sgls::OFFSET | sgls::TRANSPORT_DATA_BLOCK).into();
        id.ioccsz = 260.into();
        id.msdbd = 1;
        id.set_tnvmcap(1 << 40);
        let b = id.as_bytes();
        assert_eq!(&b[0..2], &[0x36, 0x1B]);
        assert_eq!(&b[4..24], b"FERRITE0001         ");
        assert_eq!(&b[24..31], b"Ferrite");
        assert_eq!(b[63], b' ');
        assert_eq!(&b[64..72], b"0.1     ");
        assert_eq!(&b[78..80], &[0x02, 0x01]);
        assert_eq!(&b[280..286], &[0, 0, 0, 0, 0, 1]);
        assert_eq!(&b[320..322], &[1, 0]);
        assert_eq!(&b[516..520], &[32, 0, 0, 0]);
        assert_eq!(&b[536..540], &[0x01, 0x00, 0x50, 0x00]);
        assert_eq!(&b[768..773], b"nqn.2");
        assert_eq!(&b[1792..1796], &[4, 1, 0, 0]);
        assert_eq!(b[1803], 1);
        let back = IdentifyController::parse(b).expect("4096 bytes");
        assert_eq!(back.get_str(CtrlStrField::Sn), Ok("FERRITE0001"));
        assert_eq!(
            back.get_str(CtrlStrField::Subnqn),
            Ok("nqn.2016-06.io.spdk:cnode1")
        );
        assert!(id.set_str(CtrlStrField::Fr, "123456789").is_err());
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 4096)) {
            let id = IdentifyController::parse(&bytes).expect("4096 bytes");
            prop_assert_eq!(id.as_bytes(), &bytes[..]);
            for f in [CtrlStrField::Sn, CtrlStrField::Mn, CtrlStrField::Fr, CtrlStrField::Subnqn] {
                let _ = id.get_str(f);
            }
        }
    }
}
