//! NVMe completion status (the 15-bit Status field of a CQE, without the phase bit).

use core::fmt;

/// Status Code Type values (SCT, status bits 10:8).
pub mod sct {
    /// Generic command status.
    pub const GENERIC: u8 = 0;
    /// Command specific status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and data integrity errors.
    pub const MEDIA: u8 = 2;
    /// Path related status.
    pub const PATH: u8 = 3;
    /// Vendor specific.
    pub const VENDOR: u8 = 7;
}

/// The Status field of a completion queue entry without the phase bit.
///
/// Layout: SC bits 7:0, SCT bits 10:8, CRD bits 12:11, More bit 13, DNR bit 14.
/// On the wire the CQE's status half-word is `(Status << 1) | phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(pub u16);

const SC_MASK: u16 = 0x00FF;
const SCT_SHIFT: u16 = 8;
const SCT_MASK: u16 = 0x7;
const CRD_SHIFT: u16 = 11;
const MORE_BIT: u16 = 1 << 13;
const DNR_BIT: u16 = 1 << 14;

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status::new(sct::GENERIC, 0x00);

    // Generic command status (SCT 0).
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: Status = Status::new(sct::GENERIC, 0x01);
    /// Invalid Field in Command.
    pub const INVALID_FIELD: Status = Status::new(sct::GENERIC, 0x02);
    /// Command ID Conflict.
    pub const CID_CONFLICT: Status = Status::new(sct::GENERIC, 0x03);
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: Status = Status::new(sct::GENERIC, 0x04);
    /// Commands Aborted due to Power Loss Notification.
    pub const ABORTED_POWER_LOSS: Status = Status::new(sct::GENERIC, 0x05);
    /// Internal Error.
    pub const INTERNAL_ERROR: Status = Status::new(sct::GENERIC, 0x06);
    /// Command Abort Requested.
    pub const ABORTED_BY_REQUEST: Status = Status::new(sct::GENERIC, 0x07);
    /// Command Aborted due to SQ Deletion.
    pub const ABORTED_SQ_DELETION: Status = Status::new(sct::GENERIC, 0x08);
    /// Command Aborted due to Failed Fused Command.
    pub const ABORTED_FAILED_FUSED: Status = Status::new(sct::GENERIC, 0x09);
    /// Command Aborted due to Missing Fused Command.
    pub const ABORTED_MISSING_FUSED: Status = Status::new(sct::GENERIC, 0x0A);
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: Status = Status::new(sct::GENERIC, 0x0B);
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::new(sct::GENERIC, 0x0C);
    /// Invalid SGL Segment Descriptor.
    pub const INVALID_SGL_SEGMENT_DESCRIPTOR: Status = Status::new(sct::GENERIC, 0x0D);
    /// Invalid Number of SGL Descriptors.
    pub const INVALID_SGL_DESCRIPTOR_COUNT: Status = Status::new(sct::GENERIC, 0x0E);
    /// Data SGL Length Invalid.
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::new(sct::GENERIC, 0x0F);
    /// Metadata SGL Length Invalid.
    pub const METADATA_SGL_LENGTH_INVALID: Status = Status::new(sct::GENERIC, 0x10);
    /// SGL Descriptor Type Invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = Status::new(sct::GENERIC, 0x11);
    /// Invalid Use of Controller Memory Buffer.
    pub const INVALID_CMB_USE: Status = Status::new(sct::GENERIC, 0x12);
    /// PRP Offset Invalid.
    pub const PRP_OFFSET_INVALID: Status = Status::new(sct::GENERIC, 0x13);
    /// Atomic Write Unit Exceeded.
    pub const ATOMIC_WRITE_UNIT_EXCEEDED: Status = Status::new(sct::GENERIC, 0x14);
    /// Operation Denied.
    pub const OPERATION_DENIED: Status = Status::new(sct::GENERIC, 0x15);
    /// SGL Offset Invalid.
    pub const INVALID_SGL_OFFSET: Status = Status::new(sct::GENERIC, 0x16);
    /// Host Identifier Inconsistent Format.
    pub const HOST_ID_INCONSISTENT_FORMAT: Status = Status::new(sct::GENERIC, 0x18);
    /// Keep Alive Timer Expired.
    pub const KEEP_ALIVE_EXPIRED: Status = Status::new(sct::GENERIC, 0x19);
    /// Keep Alive Timeout Invalid.
    pub const KEEP_ALIVE_INVALID: Status = Status::new(sct::GENERIC, 0x1A);
    /// Command Aborted due to Preempt and Abort.
    pub const ABORTED_PREEMPT: Status = Status::new(sct::GENERIC, 0x1B);
    /// SGL Data Block Granularity Invalid.
    pub const SGL_DATA_BLOCK_GRANULARITY_INVALID: Status = Status::new(sct::GENERIC, 0x1E);
    /// Namespace is Write Protected.
    pub const NAMESPACE_WRITE_PROTECTED: Status = Status::new(sct::GENERIC, 0x20);
    /// Command Interrupted (retry).
    pub const COMMAND_INTERRUPTED: Status = Status::new(sct::GENERIC, 0x21);
    /// Transient Transport Error.
    pub const TRANSIENT_TRANSPORT_ERROR: Status = Status::new(sct::GENERIC, 0x22);
    /// LBA Out of Range (NVM command set).
    pub const LBA_OUT_OF_RANGE: Status = Status::new(sct::GENERIC, 0x80);
    /// Capacity Exceeded (NVM command set).
    pub const CAPACITY_EXCEEDED: Status = Status::new(sct::GENERIC, 0x81);
    /// Namespace Not Ready (NVM command set).
    pub const NAMESPACE_NOT_READY: Status = Status::new(sct::GENERIC, 0x82);
    /// Reservation Conflict (NVM command set).
    pub const RESERVATION_CONFLICT: Status = Status::new(sct::GENERIC, 0x83);
    /// Format In Progress (NVM command set).
    pub const FORMAT_IN_PROGRESS: Status = Status::new(sct::GENERIC, 0x84);

    // Command specific status (SCT 1).
    /// Completion Queue Invalid.
    pub const COMPLETION_QUEUE_INVALID: Status = Status::new(sct::COMMAND_SPECIFIC, 0x00);
    /// Invalid Queue Identifier.
    pub const INVALID_QUEUE_IDENTIFIER: Status = Status::new(sct::COMMAND_SPECIFIC, 0x01);
    /// Invalid Queue Size.
    pub const INVALID_QUEUE_SIZE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x02);
    /// Abort Command Limit Exceeded.
    pub const ABORT_COMMAND_LIMIT_EXCEEDED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x03);
    /// Asynchronous Event Request Limit Exceeded.
    pub const ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x05);
    /// Invalid Firmware Slot.
    pub const INVALID_FIRMWARE_SLOT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x06);
    /// Invalid Firmware Image.
    pub const INVALID_FIRMWARE_IMAGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x07);
    /// Invalid Interrupt Vector.
    pub const INVALID_INTERRUPT_VECTOR: Status = Status::new(sct::COMMAND_SPECIFIC, 0x08);
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x09);
    /// Invalid Format.
    pub const INVALID_FORMAT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0A);
    /// Invalid Queue Deletion.
    pub const INVALID_QUEUE_DELETION: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0C);
    /// Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0D);
    /// Feature Not Changeable.
    pub const FEATURE_NOT_CHANGEABLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0E);
    /// Feature Not Namespace Specific.
    pub const FEATURE_NOT_NAMESPACE_SPECIFIC: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0F);
    /// Overlapping Range.
    pub const OVERLAPPING_RANGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x14);
    /// Invalid Controller Identifier.
    pub const INVALID_CONTROLLER_ID: Status = Status::new(sct::COMMAND_SPECIFIC, 0x1F);
    /// ANA Group Identifier Invalid.
    pub const ANA_GROUP_ID_INVALID: Status = Status::new(sct::COMMAND_SPECIFIC, 0x24);
    /// I/O Command Set Not Supported.
    pub const IO_COMMAND_SET_NOT_SUPPORTED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x29);
    /// I/O Command Set Not Enabled.
    pub const IO_COMMAND_SET_NOT_ENABLED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x2A);
    /// I/O Command Set Combination Rejected.
    pub const IO_COMMAND_SET_COMBINATION_REJECTED: Status =
        Status::new(sct::COMMAND_SPECIFIC, 0x2B);
    /// Invalid I/O Command Set.
    pub const INVALID_IO_COMMAND_SET: Status = Status::new(sct::COMMAND_SPECIFIC, 0x2C);
    /// Conflicting Attributes (Dataset Management, Read, Write).
    pub const CONFLICTING_ATTRIBUTES: Status = Status::new(sct::COMMAND_SPECIFIC, 0x80);
    /// Invalid Protection Information.
    pub const INVALID_PROTECTION_INFO: Status = Status::new(sct::COMMAND_SPECIFIC, 0x81);
    /// Attempted Write to Read Only Range.
    pub const WRITE_TO_READ_ONLY_RANGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x82);
    /// Command Size Limit Exceeded (Copy: NR > MSRC, a range's NLB > MSSRL, or the sum of
    /// NLBs > MCL; NVM Command Set, Copy command).
    pub const COMMAND_SIZE_LIMIT_EXCEEDED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x83);
    /// Incompatible Namespace or Format (Copy across namespaces of different formats).
    pub const INCOMPATIBLE_NAMESPACE_OR_FORMAT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x85);
    /// Fast Copy Not Possible (a Copy source range with FCO set that would need emulation).
    pub const FAST_COPY_NOT_POSSIBLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x86);
    /// Overlapping I/O Range (Copy formats 2h/3h: a source overlaps the destination).
    pub const OVERLAPPING_IO_RANGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x87);
    /// Insufficient Resources (I/O command set specific).
    pub const INSUFFICIENT_RESOURCES: Status = Status::new(sct::COMMAND_SPECIFIC, 0x89);
    /// Fabrics Connect: Incompatible Format.
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x80);
    /// Fabrics Connect: Controller Busy.
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x81);
    /// Fabrics Connect: Invalid Parameters.
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::new(sct::COMMAND_SPECIFIC, 0x82);
    /// Fabrics Connect: Restart Discovery.
    pub const CONNECT_RESTART_DISCOVERY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x83);
    /// Fabrics Connect: Invalid Host.
    pub const CONNECT_INVALID_HOST: Status = Status::new(sct::COMMAND_SPECIFIC, 0x84);
    /// Fabrics: Invalid Queue Type.
    pub const INVALID_QUEUE_TYPE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x85);
    /// Fabrics: Discover Restart.
    pub const DISCOVER_RESTART: Status = Status::new(sct::COMMAND_SPECIFIC, 0x90);
    /// Fabrics: Authentication Required.
    pub const AUTHENTICATION_REQUIRED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x91);

    // Media and data integrity errors (SCT 2).
    /// Write Fault.
    pub const WRITE_FAULT: Status = Status::new(sct::MEDIA, 0x80);
    /// Unrecovered Read Error.
    pub const UNRECOVERED_READ_ERROR: Status = Status::new(sct::MEDIA, 0x81);
    /// End-to-end Guard Check Error.
    pub const GUARD_CHECK_ERROR: Status = Status::new(sct::MEDIA, 0x82);
    /// End-to-end Application Tag Check Error.
    pub const APP_TAG_CHECK_ERROR: Status = Status::new(sct::MEDIA, 0x83);
    /// End-to-end Reference Tag Check Error.
    pub const REF_TAG_CHECK_ERROR: Status = Status::new(sct::MEDIA, 0x84);
    /// Compare Failure.
    pub const COMPARE_FAILURE: Status = Status::new(sct::MEDIA, 0x85);
    /// Access Denied.
    pub const ACCESS_DENIED: Status = Status::new(sct::MEDIA, 0x86);
    /// Deallocated or Unwritten Logical Block.
    pub const DEALLOCATED_OR_UNWRITTEN: Status = Status::new(sct::MEDIA, 0x87);

    // Path related status (SCT 3).
    /// Internal Path Error.
    pub const INTERNAL_PATH_ERROR: Status = Status::new(sct::PATH, 0x00);
    /// Asymmetric Access Persistent Loss.
    pub const ANA_PERSISTENT_LOSS: Status = Status::new(sct::PATH, 0x01);
    /// Asymmetric Access Inaccessible.
    pub const ANA_INACCESSIBLE: Status = Status::new(sct::PATH, 0x02);
    /// Asymmetric Access Transition.
    pub const ANA_TRANSITION: Status = Status::new(sct::PATH, 0x03);
    /// Controller Pathing Error.
    pub const CONTROLLER_PATHING_ERROR: Status = Status::new(sct::PATH, 0x60);
    /// Host Pathing Error.
    pub const HOST_PATHING_ERROR: Status = Status::new(sct::PATH, 0x70);
    /// Command Aborted By Host.
    pub const ABORTED_BY_HOST: Status = Status::new(sct::PATH, 0x71);

    /// Builds a status from its code type (3 bits, masked) and code.
    pub const fn new(sct: u8, sc: u8) -> Status {
        Status((((sct as u16) & SCT_MASK) << SCT_SHIFT) | sc as u16)
    }

    /// Decodes the 16-bit CQE status half-word (drops the phase bit 0).
    pub const fn from_wire(field: u16) -> Status {
        Status(field >> 1)
    }

    /// Encodes into the CQE status half-word with the given phase bit.
    pub const fn to_wire(self, phase: bool) -> u16 {
        ((self.0 & 0x7FFF) << 1) | phase as u16
    }

    /// Raw 15-bit value.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// Status Code Type (bits 10:8).
    pub const fn sct(self) -> u8 {
        ((self.0 >> SCT_SHIFT) & SCT_MASK) as u8
    }

    /// Status Code (bits 7:0).
    pub const fn sc(self) -> u8 {
        (self.0 & SC_MASK) as u8
    }

    /// Command Retry Delay index (bits 12:11).
    pub const fn crd(self) -> u8 {
        ((self.0 >> CRD_SHIFT) & 0x3) as u8
    }

    /// Sets the Command Retry Delay index (0..=3, masked).
    pub const fn with_crd(self, crd: u8) -> Status {
        Status((self.0 & !(0x3 << CRD_SHIFT)) | (((crd as u16) & 0x3) << CRD_SHIFT))
    }

    /// More bit (bit 13): more status in the Error Information log.
    pub const fn more(self) -> bool {
        self.0 & MORE_BIT != 0
    }

    /// Sets the More bit.
    pub const fn with_more(self) -> Status {
        Status(self.0 | MORE_BIT)
    }

    /// Do Not Retry bit (bit 14).
    pub const fn dnr(self) -> bool {
        self.0 & DNR_BIT != 0
    }

    /// Sets the Do Not Retry bit.
    pub const fn with_dnr(self) -> Status {
        Status(self.0 | DNR_BIT)
    }

    /// Same SCT/SC, with CRD, More and DNR cleared (for comparing codes).
    pub const fn code(self) -> Status {
        Status(self.0 & ((SCT_MASK << SCT_SHIFT) | SC_MASK))
    }

    /// True when SCT and SC are both zero.
    pub const fn is_success(self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }

    /// A readable name for the code, when known. Command-specific codes
    /// 80h..84h are shared by Fabrics Connect and NVM I/O commands; both
    /// meanings are given.
    pub fn name(self) -> Option<&'static str> {
        let name = match (self.sct(), self.sc()) {
            (0, 0x00) => "Success",
            (0, 0x01) => "Invalid Command Opcode",
            (0, 0x02) => "Invalid Field in Command",
            (0, 0x03) => "Command ID Conflict",
            (0, 0x04) => "Data Transfer Error",
            (0, 0x05) => "Commands Aborted due to Power Loss Notification",
            (0, 0x06) => "Internal Error",
            (0, 0x07) => "Command Abort Requested",
            (0, 0x08) => "Command Aborted due to SQ Deletion",
            (0, 0x09) => "Command Aborted due to Failed Fused Command",
            (0, 0x0A) => "Command Aborted due to Missing Fused Command",
            (0, 0x0B) => "Invalid Namespace or Format",
            (0, 0x0C) => "Command Sequence Error",
            (0, 0x0D) => "Invalid SGL Segment Descriptor",
            (0, 0x0E) => "Invalid Number of SGL Descriptors",
            (0, 0x0F) => "Data SGL Length Invalid",
            (0, 0x10) => "Metadata SGL Length Invalid",
            (0, 0x11) => "SGL Descriptor Type Invalid",
            (0, 0x12) => "Invalid Use of Controller Memory Buffer",
            (0, 0x13) => "PRP Offset Invalid",
            (0, 0x14) => "Atomic Write Unit Exceeded",
            (0, 0x15) => "Operation Denied",
            (0, 0x16) => "SGL Offset Invalid",
            (0, 0x18) => "Host Identifier Inconsistent Format",
            (0, 0x19) => "Keep Alive Timer Expired",
            (0, 0x1A) => "Keep Alive Timeout Invalid",
            (0, 0x1B) => "Command Aborted due to Preempt and Abort",
            (0, 0x1C) => "Sanitize Failed",
            (0, 0x1D) => "Sanitize In Progress",
            (0, 0x1E) => "SGL Data Block Granularity Invalid",
            (0, 0x1F) => "Command Not Supported for Queue in CMB",
            (0, 0x20) => "Namespace is Write Protected",
            (0, 0x21) => "Command Interrupted",
            (0, 0x22) => "Transient Transport Error",
            (0, 0x80) => "LBA Out of Range",
            (0, 0x81) => "Capacity Exceeded",
            (0, 0x82) => "Namespace Not Ready",
            (0, 0x83) => "Reservation Conflict",
            (0, 0x84) => "Format In Progress",
            (1, 0x00) => "Completion Queue Invalid",
            (1, 0x01) => "Invalid Queue Identifier",
            (1, 0x02) => "Invalid Queue Size",
            (1, 0x03) => "Abort Command Limit Exceeded",
            (1, 0x05) => "Asynchronous Event Request Limit Exceeded",
            (1, 0x06) => "Invalid Firmware Slot",
            (1, 0x07) => "Invalid Firmware Image",
            (1, 0x08) => "Invalid Interrupt Vector",
            (1, 0x09) => "Invalid Log Page",
            (1, 0x0A) => "Invalid Format",
            (1, 0x0B) => "Firmware Activation Requires Conventional Reset",
            (1, 0x0C) => "Invalid Queue Deletion",
            (1, 0x0D) => "Feature Identifier Not Saveable",
            (1, 0x0E) => "Feature Not Changeable",
            (1, 0x0F) => "Feature Not Namespace Specific",
            (1, 0x14) => "Overlapping Range",
            (1, 0x1F) => "Invalid Controller Identifier",
            (1, 0x24) => "ANA Group Identifier Invalid",
            (1, 0x29) => "I/O Command Set Not Supported",
            (1, 0x2A) => "I/O Command Set Not Enabled",
            (1, 0x2B) => "I/O Command Set Combination Rejected",
            (1, 0x2C) => "Invalid I/O Command Set",
            (1, 0x80) => "Conflicting Attributes / Connect Incompatible Format",
            (1, 0x81) => "Invalid Protection Information / Connect Controller Busy",
            (1, 0x82) => "Attempted Write to Read Only Range / Connect Invalid Parameters",
            (1, 0x83) => "Command Size Limit Exceeded / Connect Restart Discovery",
            (1, 0x84) => "Connect Invalid Host",
            (1, 0x85) => "Incompatible Namespace or Format / Invalid Queue Type",
            (1, 0x86) => "Fast Copy Not Possible",
            (1, 0x87) => "Overlapping I/O Range",
            (1, 0x89) => "Insufficient Resources",
            (1, 0x90) => "Discover Restart",
            (1, 0x91) => "Authentication Required",
            (2, 0x80) => "Write Fault",
            (2, 0x81) => "Unrecovered Read Error",
            (2, 0x82) => "End-to-end Guard Check Error",
            (2, 0x83) => "End-to-end Application Tag Check Error",
            (2, 0x84) => "End-to-end Reference Tag Check Error",
            (2, 0x85) => "Compare Failure",
            (2, 0x86) => "Access Denied",
            (2, 0x87) => "Deallocated or Unwritten Logical Block",
            (3, 0x00) => "Internal Path Error",
            (3, 0x01) => "Asymmetric Access Persistent Loss",
            (3, 0x02) => "Asymmetric Access Inaccessible",
            (3, 0x03) => "Asymmetric Access Transition",
            (3, 0x60) => "Controller Pathing Error",
            (3, 0x70) => "Host Pathing Error",
            (3, 0x71) => "Command Aborted By Host",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}")?,
            None => write!(f, "Unknown status")?,
        }
        write!(f, " (sct {:#x}, sc {:#04x}", self.sct(), self.sc())?;
        if self.dnr() {
            write!(f, ", dnr")?;
        }
        if self.more() {
            write!(f, ", more")?;
        }
        if self.crd() != 0 {
            write!(f, ", crd {}", self.crd())?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn field_layout() {
        let s = Status::new(1, 0x84).with_dnr();
        assert_eq!(s.raw(), 0x4184);
        assert_eq!(s.sct(), 1);
        assert_eq!(s.sc(), 0x84);
        assert!(s.dnr());
        assert!(!s.more());
        assert_eq!(s.to_wire(true), 0x8309);
        assert_eq!(Status::from_wire(0x8309), s);
        assert_eq!(s.code(), Status::CONNECT_INVALID_HOST);
    }

    #[test]
    fn well_known_codes() {
        assert_eq!(Status::INVALID_FIELD.raw(), 0x0002);
        assert_eq!(Status::LBA_OUT_OF_RANGE.raw(), 0x0080);
        assert_eq!(Status::INVALID_LOG_PAGE.raw(), 0x0109);
        assert_eq!(Status::CONNECT_INVALID_PARAMETERS.raw(), 0x0182);
        assert_eq!(Status::COMPARE_FAILURE.raw(), 0x0285);
        assert_eq!(Status::ANA_INACCESSIBLE.raw(), 0x0302);
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::INTERNAL_ERROR.is_success());
        assert!(Status::SUCCESS.with_dnr().is_success());
    }

    #[test]
    fn display_is_readable() {
        let text = Status::INVALID_OPCODE.with_dnr().to_string();
        assert!(text.starts_with("Invalid Command Opcode"), "{text}");
        assert!(text.contains("dnr"), "{text}");
        assert!(Status::new(7, 0xC0).to_string().starts_with("Unknown"));
    }

    proptest! {
        #[test]
        fn new_round_trips(sct in 0u8..8, sc: u8, crd in 0u8..4, dnr: bool, more: bool, phase: bool) {
            let mut s = Status::new(sct, sc).with_crd(crd);
            if dnr { s = s.with_dnr(); }
            if more { s = s.with_more(); }
            prop_assert_eq!(s.sct(), sct);
            prop_assert_eq!(s.sc(), sc);
            prop_assert_eq!(s.crd(), crd);
            prop_assert_eq!(s.dnr(), dnr);
            prop_assert_eq!(s.more(), more);
            let wire = s.to_wire(phase);
            prop_assert_eq!(wire & 1 == 1, phase);
            prop_assert_eq!(Status::from_wire(wire), s);
        }
    }
}
