//! Error Information, SMART / Health, Firmware Slot, Changed Namespace List
//! and Commands Supported and Effects log pages.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::Result;

macro_rules! log_parse {
    ($t:ty, $name:literal) => {
        impl $t {
            /// Size in bytes.
            pub const SIZE: usize = size_of::<$t>();

            /// A zeroed structure.
            pub fn zeroed() -> $t {
                <$t as zerocopy::FromZeros>::new_zeroed()
            }

            /// Decodes from the start of `bytes`.
            pub fn parse(bytes: &[u8]) -> $crate::error::Result<$t> {
                <$t as zerocopy::FromBytes>::read_from_prefix(bytes)
                    .map(|(d, _)| d)
                    .map_err(|_| $crate::error::NvmeError::TooShort {
                        what: $name,
                        needed: Self::SIZE,
                        got: bytes.len(),
                    })
            }
        }
    };
}
pub(crate) use log_parse;

/// Error Information log entry (64 bytes).
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
pub struct ErrorLogEntry {
    /// Error count: unique, incrementing, 0 = invalid entry.
    pub error_count: U64,
    /// Submission queue identifier.
    pub sqid: U16,
    /// Command identifier.
    pub cid: U16,
    /// Status field including the phase bit in bit 0.
    pub status: U16,
    /// Parameter error location: byte (7:0) and bit (10:8) in the command.
    pub parameter_error_location: U16,
    /// First LBA that experienced the error.
    pub lba: U64,
    /// Namespace identifier.
    pub nsid: U32,
    /// Vendor specific information available (log page id).
    pub vendor: u8,
    /// Transport type.
    pub trtype: u8,
    /// Command set identifier.
    pub csi: u8,
    /// Opcode of the command.
    pub opcode: u8,
    /// Command specific information.
    pub cmd_specific: U64,
    /// Transport type specific information.
    pub trtype_specific: U16,
    /// Reserved.
    pub rsvd42: [u8; 21],
    /// Log page version.
    pub log_page_version: u8,
}

const _: () = assert!(size_of::<ErrorLogEntry>() == 64);
const _: () = assert!(offset_of!(ErrorLogEntry, status) == 12);
const _: () = assert!(offset_of!(ErrorLogEntry, lba) == 16);
const _: () = assert!(offset_of!(ErrorLogEntry, nsid) == 24);
const _: () = assert!(offset_of!(ErrorLogEntry, trtype) == 29);
const _: () = assert!(offset_of!(ErrorLogEntry, cmd_specific) == 32);
const _: () = assert!(offset_of!(ErrorLogEntry, trtype_specific) == 40);
log_parse!(ErrorLogEntry, "error log entry");

/// SMART / Health Information log (512 bytes).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SmartLog {
    /// Critical warning bits.
    pub critical_warning: u8,
    /// Composite temperature (Kelvin).
    pub composite_temperature: U16,
    /// Available spare (percent).
    pub available_spare: u8,
    /// Available spare threshold (percent).
    pub available_spare_threshold: u8,
    /// Percentage used.
    pub percentage_used: u8,
    /// Endurance group critical warning summary.
    pub endurance_group_critical: u8,
    /// Reserved.
    pub rsvd7: [u8; 25],
    /// Data units read (thousands of 512-byte units, u128 LE).
    pub data_units_read: [u8; 16],
    /// Data units written (thousands of 512-byte units, u128 LE).
    pub data_units_written: [u8; 16],
    /// Host read commands.
    pub host_read_commands: [u8; 16],
    /// Host write commands.
    pub host_write_commands: [u8; 16],
    /// Controller busy time (minutes).
    pub controller_busy_time: [u8; 16],
    /// Power cycles.
    pub power_cycles: [u8; 16],
    /// Power on hours.
    pub power_on_hours: [u8; 16],
    /// Unsafe shutdowns.
    pub unsafe_shutdowns: [u8; 16],
    /// Media and data integrity errors.
    pub media_errors: [u8; 16],
    /// Number of error information log entries.
    pub num_err_log_entries: [u8; 16],
    /// Warning composite temperature time (minutes).
    pub warning_temp_time: U32,
    /// Critical composite temperature time (minutes).
    pub critical_temp_time: U32,
    /// Temperature sensors 1..8 (Kelvin).
    pub temp_sensors: [U16; 8],
    /// Thermal management temperature 1 transition count.
    pub thm_temp1_trans_count: U32,
    /// Thermal management temperature 2 transition count.
    pub thm_temp2_trans_count: U32,
    /// Total time for thermal management temperature 1.
    pub thm_temp1_total_time: U32,
    /// Total time for thermal management temperature 2.
    pub thm_temp2_total_time: U32,
    /// Reserved.
    pub rsvd232: [u8; 280],
}

const _: () = assert!(size_of::<SmartLog>() == 512);
const _: () = assert!(offset_of!(SmartLog, available_spare) == 3);
const _: () = assert!(offset_of!(SmartLog, endurance_group_critical) == 6);
const _: () = assert!(offset_of!(SmartLog, data_units_read) == 32);
const _: () = assert!(offset_of!(SmartLog, data_units_written) == 48);
const _: () = assert!(offset_of!(SmartLog, host_read_commands) == 64);
const _: () = assert!(offset_of!(SmartLog, controller_busy_time) == 96);
const _: () = assert!(offset_of!(SmartLog, power_on_hours) == 128);
const _: () = assert!(offset_of!(SmartLog, media_errors) == 160);
const _: () = assert!(offset_of!(SmartLog, num_err_log_entries) == 176);
const _: () = assert!(offset_of!(SmartLog, warning_temp_time) == 192);
const _: () = assert!(offset_of!(SmartLog, temp_sensors) == 200);
const _: () = assert!(offset_of!(SmartLog, thm_temp1_trans_count) == 216);
log_parse!(SmartLog, "SMART log");

/// The 128-bit counters of the SMART log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmartCounter {
    /// Data units read.
    DataUnitsRead,
    /// Data units written.
    DataUnitsWritten,
    /// Host read commands.
    HostReadCommands,
    /// Host write commands.
    HostWriteCommands,
    /// Controller busy time.
    ControllerBusyTime,
    /// Power cycles.
    PowerCycles,
    /// Power on hours.
    PowerOnHours,
    /// Unsafe shutdowns.
    UnsafeShutdowns,
    /// Media errors.
    MediaErrors,
    /// Number of error log entries.
    NumErrLogEntries,
}

impl SmartLog {
    fn counter_slot(&mut self, c: SmartCounter) -> &mut [u8; 16] {
        match c {
            SmartCounter::DataUnitsRead => &mut self.data_units_read,
            SmartCounter::DataUnitsWritten => &mut self.data_units_written,
            SmartCounter::HostReadCommands => &mut self.host_read_commands,
            SmartCounter::HostWriteCommands => &mut self.host_write_commands,
            SmartCounter::ControllerBusyTime => &mut self.controller_busy_time,
            SmartCounter::PowerCycles => &mut self.power_cycles,
            SmartCounter::PowerOnHours => &mut self.power_on_hours,
            SmartCounter::UnsafeShutdowns => &mut self.unsafe_shutdowns,
            SmartCounter::MediaErrors => &mut self.media_errors,
            SmartCounter::NumErrLogEntries => &mut self.num_err_log_entries,
        }
    }

    /// Sets a 128-bit counter.
    pub fn set_counter(&mut self, c: SmartCounter, value: u128) {
        *self.counter_slot(c) = value.to_le_bytes();
    }

    /// Reads a 128-bit counter.
    pub fn counter(&self, c: SmartCounter) -> u128 {
        let raw = match c {
            SmartCounter::DataUnitsRead => self.data_units_read,
            SmartCounter::DataUnitsWritten => self.data_units_written,
            SmartCounter::HostReadCommands => self.host_read_commands,
            SmartCounter::HostWriteCommands => self.host_write_commands,
            SmartCounter::ControllerBusyTime => self.controller_busy_time,
            SmartCounter::PowerCycles => self.power_cycles,
            SmartCounter::PowerOnHours => self.power_on_hours,
            SmartCounter::UnsafeShutdowns => self.unsafe_shutdowns,
            SmartCounter::MediaErrors => self.media_errors,
            SmartCounter::NumErrLogEntries => self.num_err_log_entries,
        };
        u128::from_le_bytes(raw)
    }

    /// Converts bytes transferred to SMART data units (1000 x 512 bytes,
    /// rounded up, as the spec requires).
    pub fn data_units(bytes: u128) -> u128 {
        bytes.div_ceil(512).div_ceil(1000)
    }
}

/// Firmware Slot Information log (512 bytes).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FirmwareSlotLog {
    /// Active firmware info: bits 2:0 active slot, bits 6:4 next slot.
    pub afi: u8,
    /// Reserved.
    pub rsvd1: [u8; 7],
    /// Firmware revision for slots 1..=7 (ASCII, space padded).
    pub frs: [[u8; 8]; 7],
    /// Reserved.
    pub rsvd64: [u8; 448],
}

const _: () = assert!(size_of::<FirmwareSlotLog>() == 512);
const _: () = assert!(offset_of!(FirmwareSlotLog, frs) == 8);
log_parse!(FirmwareSlotLog, "firmware slot log");

impl FirmwareSlotLog {
    /// Slot 1 active with revision `fr` (space padded, at most 8 bytes).
    pub fn single_slot(fr: &str) -> Result<FirmwareSlotLog> {
        let mut log = FirmwareSlotLog::zeroed();
        log.afi = 1;
        crate::strings::set_space_padded("frs1", &mut log.frs[0], fr)?;
        Ok(log)
    }
}

/// Entries in the Changed Namespace List log.
pub const CHANGED_NS_LIST_MAX: usize = 1024;
/// Size of the Changed Namespace List log.
pub const CHANGED_NS_LIST_SIZE: usize = CHANGED_NS_LIST_MAX * 4;

/// Writes a Changed Namespace List: the NSIDs, zero-filled; when more than
/// 1024 changed, a single entry FFFFFFFFh.
pub fn encode_changed_ns_list(nsids: &[u32], out: &mut [u8; CHANGED_NS_LIST_SIZE]) {
    out.fill(0);
    if nsids.len() > CHANGED_NS_LIST_MAX {
        out[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        return;
    }
    for (slot, nsid) in out.chunks_exact_mut(4).zip(nsids) {
        slot.copy_from_slice(&nsid.to_le_bytes());
    }
}

/// Commands Supported and Effects log (4096 bytes).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CommandsSupportedEffects {
    /// Admin commands, indexed by opcode.
    pub acs: [U32; 256],
    /// I/O commands, indexed by opcode.
    pub iocs: [U32; 256],
    /// Reserved.
    pub rsvd2048: [u8; 2048],
}

const _: () = assert!(size_of::<CommandsSupportedEffects>() == 4096);
const _: () = assert!(offset_of!(CommandsSupportedEffects, iocs) == 1024);
log_parse!(
    CommandsSupportedEffects,
    "commands supported and effects log"
);

/// Command effects bits.
pub mod effects {
    /// Command supported.
    pub const CSUPP: u32 = 1 << 0;
    /// Logical block content change.
    pub const LBCC: u32 = 1 << 1;
    /// Namespace capability change.
    pub const NCC: u32 = 1 << 2;
    /// Namespace inventory change.
    pub const NIC: u32 = 1 << 3;
    /// Controller capability change.
    pub const CCC: u32 = 1 << 4;
    /// Command submission and execution (bits 18:16): 1 = one per namespace.
    pub const CSE_SHIFT: u32 = 16;
    /// Mask of the CSE field.
    pub const CSE_MASK: u32 = 0x7 << CSE_SHIFT;
}

/// Critical warning bits of the SMART log.
pub mod critical_warning {
    /// Available spare below threshold.
    pub const SPARE: u8 = 1 << 0;
    /// Temperature outside thresholds.
    pub const TEMPERATURE: u8 = 1 << 1;
    /// Reliability degraded.
    pub const RELIABILITY: u8 = 1 << 2;
    /// Media placed in read only mode.
    pub const READ_ONLY: u8 = 1 << 3;
    /// Volatile memory backup failed.
    pub const VOLATILE_BACKUP: u8 = 1 << 4;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn smart_layout() {
        let mut s = SmartLog::zeroed();
        s.composite_temperature = 310.into();
        s.available_spare = 100;
        s.set_counter(SmartCounter::DataUnitsRead, 0x0102);
        s.set_counter(SmartCounter::PowerOnHours, u128::MAX);
        let b = s.as_bytes();
        assert_eq!(&b[1..3], &310u16.to_le_bytes());
        assert_eq!(b[3], 100);
        assert_eq!(&b[32..34], &[0x02, 0x01]);
        assert_eq!(&b[128..144], &[0xFF; 16]);
        assert_eq!(s.counter(SmartCounter::DataUnitsRead), 0x0102);
        assert_eq!(SmartLog::data_units(1), 1);
        assert_eq!(SmartLog::data_units(512_000), 1);
        assert_eq!(SmartLog::data_units(512_001), 2);
    }

    #[test]
    fn error_entry_and_slots() {
        let mut e = ErrorLogEntry::zeroed();
        e.error_count = 1.into();
        e.status = 0x8005.into();
        e.nsid = 7.into();
        let b = e.as_bytes();
        assert_eq!(&b[12..14], &[0x05, 0x80]);
        assert_eq!(&b[24..28], &[7, 0, 0, 0]);
        let fw = FirmwareSlotLog::single_slot("0.1").expect("fits");
        assert_eq!(&fw.as_bytes()[..1], &[1]);
        assert_eq!(&fw.as_bytes()[8..16], b"0.1     ");
    }

    #[test]
    fn changed_ns_list() {
        let mut out = [0u8; CHANGED_NS_LIST_SIZE];
        encode_changed_ns_list(&[3, 9], &mut out);
        assert_eq!(&out[..12], &[3, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        let many: Vec<u32> = (1..=1025).collect();
        encode_changed_ns_list(&many, &mut out);
        assert_eq!(&out[..8], &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
        let exact: Vec<u32> = (1..=1024).collect();
        encode_changed_ns_list(&exact, &mut out);
        assert_eq!(&out[4092..], &1024u32.to_le_bytes());
    }

    #[test]
    fn effects_layout() {
        let mut c = CommandsSupportedEffects::zeroed();
        c.acs[0x06] = effects::CSUPP.into();
        c.iocs[0x01] = (effects::CSUPP | effects::LBCC).into();
        let b = c.as_bytes();
        assert_eq!(b[24], 1);
        assert_eq!(b[1028], 3);
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 4096)) {
            let e = ErrorLogEntry::parse(&bytes).expect("64");
            prop_assert_eq!(e.as_bytes(), &bytes[..64]);
            let s = SmartLog::parse(&bytes).expect("512");
            prop_assert_eq!(s.as_bytes(), &bytes[..512]);
            let f = FirmwareSlotLog::parse(&bytes).expect("512");
            prop_assert_eq!(f.as_bytes(), &bytes[..512]);
            let c = CommandsSupportedEffects::parse(&bytes).expect("4096");
            prop_assert_eq!(c.as_bytes(), &bytes[..]);
        }

        #[test]
        fn counters_round_trip(v: u128) {
            let mut s = SmartLog::zeroed();
            for c in [SmartCounter::DataUnitsRead, SmartCounter::HostWriteCommands, SmartCounter::NumErrLogEntries] {
                s.set_counter(c, v);
                prop_assert_eq!(s.counter(c), v);
            }
        }
    }
}
