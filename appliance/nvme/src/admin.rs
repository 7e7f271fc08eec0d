//! Typed views of admin commands: each is a plain struct decoded from (and
//! encoded into) the command dwords. Decoding never fails: every bit
//! pattern maps to some field values; range checks belong to `nvmf`.

use crate::command::{bits, opcode, Command};

/// Get Log Page (opcode 02h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetLogPage {
    /// Log page identifier (CDW10 7:0).
    pub lid: u8,
    /// Log specific parameter (CDW10 14:8).
    pub lsp: u8,
    /// Retain asynchronous event (CDW10 bit 15).
    pub rae: bool,
    /// Number of dwords to transfer, 1-based (from the 0-based NUMDU:NUMDL).
    pub numd: u64,
    /// Log specific identifier (CDW11 31:16).
    pub lsi: u16,
    /// Log page offset in bytes (CDW12-13).
    pub lpo: u64,
    /// UUID index (CDW14 6:0).
    pub uuid_index: u8,
    /// Offset type: LPO is an index, not bytes (CDW14 bit 23).
    pub ot: bool,
    /// Command set identifier (CDW14 31:24).
    pub csi: u8,
    /// Namespace identifier.
    pub nsid: u32,
}

impl GetLogPage {
    /// Decodes the fields of a Get Log Page command.
    pub fn parse(cmd: &Command) -> GetLogPage {
        let cdw10 = cmd.cdw10.get();
        let cdw11 = cmd.cdw11.get();
        let cdw14 = cmd.cdw14.get();
        let numd0 = u64::from(bits(cdw10, 16, 16)) | (u64::from(bits(cdw11, 0, 16)) << 16);
        GetLogPage {
            lid: bits(cdw10, 0, 8) as u8,
            lsp: bits(cdw10, 8, 7) as u8,
            rae: bits(cdw10, 15, 1) != 0,
            numd: numd0 + 1,
            lsi: bits(cdw11, 16, 16) as u16,
            lpo: u64::from(cmd.cdw12.get()) | (u64::from(cmd.cdw13.get()) << 32),
            uuid_index: bits(cdw14, 0, 7) as u8,
            ot: bits(cdw14, 23, 1) != 0,
            csi: bits(cdw14, 24, 8) as u8,
            nsid: cmd.nsid.get(),
        }
    }

    /// Bytes to transfer (NUMD * 4).
    pub fn len_bytes(&self) -> u64 {
        self.numd * 4
    }

    /// Builds the command. `numd` must be 1..=2^32 (it is stored 0-based).
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::admin::GET_LOG_PAGE, cid);
        let numd0 = self.numd.saturating_sub(1) as u32;
        cmd.nsid = self.nsid.into();
        cmd.cdw10 = (u32::from(self.lid)
            | (u32::from(self.lsp & 0x7F) << 8)
            | (u32::from(self.rae) << 15)
            | ((numd0 & 0xFFFF) << 16))
            .into();
        cmd.cdw11 = ((numd0 >> 16) | (u32::from(self.lsi) << 16)).into();
        cmd.cdw12 = (self.lpo as u32).into();
        cmd.cdw13 = ((self.lpo >> 32) as u32).into();
        cmd.cdw14 = (u32::from(self.uuid_index & 0x7F)
            | (u32::from(self.ot) << 23)
            | (u32::from(self.csi) << 24))
            .into();
        cmd
    }
}

/// Identify (opcode 06h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identify {
    /// Controller or namespace structure (CDW10 7:0), see `identify::CNS_*`.
    pub cns: u8,
    /// Controller identifier (CDW10 31:16).
    pub cntid: u16,
    /// CNS specific identifier (CDW11 15:0).
    pub cnssid: u16,
    /// Command set identifier (CDW11 31:24).
    pub csi: u8,
    /// Namespace identifier.
    pub nsid: u32,
}

impl Identify {
    /// Decodes the fields of an Identify command.
    pub fn parse(cmd: &Command) -> Identify {
        let cdw10 = cmd.cdw10.get();
        let cdw11 = cmd.cdw11.get();
        Identify {
            cns: bits(cdw10, 0, 8) as u8,
            cntid: bits(cdw10, 16, 16) as u16,
            cnssid: bits(cdw11, 0, 16) as u16,
            csi: bits(cdw11, 24, 8) as u8,
            nsid: cmd.nsid.get(),
        }
    }

    /// Builds the command.
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::admin::IDENTIFY, cid);
        cmd.nsid = self.nsid.into();
        cmd.cdw10 = (u32::from(self.cns) | (u32::from(self.cntid) << 16)).into();
        cmd.cdw11 = (u32::from(self.cnssid) | (u32::from(self.csi) << 24)).into();
        cmd
    }
}

/// Feature identifiers.
pub mod fid {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x02;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    /// Error Recovery.
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache (CDW11 bit 0 WCE).
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    /// Number of Queues (CDW11: NSQR 15:0, NCQR 31:16, both 0-based).
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Interrupt Coalescing.
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    /// Interrupt Vector Configuration.
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = 0x0A;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    /// Autonomous Power State Transition.
    pub const AUTONOMOUS_POWER_STATE: u8 = 0x0C;
    /// Host Memory Buffer.
    pub const HOST_MEMORY_BUFFER: u8 = 0x0D;
    /// Timestamp.
    pub const TIMESTAMP: u8 = 0x0E;
    /// Keep Alive Timer (CDW11: KATO in milliseconds).
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
    /// Host Behavior Support.
    pub const HOST_BEHAVIOR: u8 = 0x16;
    /// Host Identifier.
    pub const HOST_IDENTIFIER: u8 = 0x81;
    /// Reservation Notification Mask.
    pub const RESERVATION_NOTIFICATION_MASK: u8 = 0x82;
    /// Reservation Persistence.
    pub const RESERVATION_PERSISTENCE: u8 = 0x83;
}

/// Get Features SEL values (CDW10 10:8).
pub mod sel {
    /// Current value.
    pub const CURRENT: u8 = 0;
    /// Default value.
    pub const DEFAULT: u8 = 1;
    /// Saved value.
    pub const SAVED: u8 = 2;
    /// Supported capabilities.
    pub const SUPPORTED_CAPABILITIES: u8 = 3;
}

/// Set Features (09h) and Get Features (0Ah).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Feature identifier (CDW10 7:0).
    pub fid: u8,
    /// Save (Set Features CDW10 bit 31).
    pub sv: bool,
    /// Select (Get Features CDW10 10:8).
    pub sel: u8,
    /// Feature specific value (CDW11).
    pub value: u32,
    /// Namespace identifier.
    pub nsid: u32,
}

impl Features {
    /// Decodes Set/Get Features fields (SV and SEL are both decoded; each
    /// is meaningful only for its opcode).
    pub fn parse(cmd: &Command) -> Features {
        let cdw10 = cmd.cdw10.get();
        Features {
            fid: bits(cdw10, 0, 8) as u8,
            sv: bits(cdw10, 31, 1) != 0,
            sel: bits(cdw10, 8, 3) as u8,
            value: cmd.cdw11.get(),
            nsid: cmd.nsid.get(),
        }
    }

    /// Builds a Set Features command (SEL is not encoded).
    pub fn to_set_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::admin::SET_FEATURES, cid);
        cmd.nsid = self.nsid.into();
        cmd.cdw10 = (u32::from(self.fid) | (u32::from(self.sv) << 31)).into();
        cmd.cdw11 = self.value.into();
        cmd
    }

    /// Builds a Get Features command (SV is not encoded).
    pub fn to_get_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::admin::GET_FEATURES, cid);
        cmd.nsid = self.nsid.into();
        cmd.cdw10 = (u32::from(self.fid) | (u32::from(self.sel & 0x7) << 8)).into();
        cmd.cdw11 = self.value.into();
        cmd
    }
}

/// Number of Queues feature value: (NSQR, NCQR), both 0-based.
pub const fn number_of_queues(nsqr: u16, ncqr: u16) -> u32 {
    nsqr as u32 | ((ncqr as u32) << 16)
}

/// Splits a Number of Queues value into (NSQR, NCQR), both 0-based.
pub const fn parse_number_of_queues(v: u32) -> (u16, u16) {
    (v as u16, (v >> 16) as u16)
}

/// Abort (opcode 08h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Abort {
    /// Submission queue of the command to abort (CDW10 15:0).
    pub sqid: u16,
    /// Command identifier to abort (CDW10 31:16).
    pub cid: u16,
}

impl Abort {
    /// Decodes the fields of an Abort command.
    pub fn parse(cmd: &Command) -> Abort {
        let cdw10 = cmd.cdw10.get();
        Abort {
            sqid: bits(cdw10, 0, 16) as u16,
            cid: bits(cdw10, 16, 16) as u16,
        }
    }

    /// Builds the command.
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new(opcode::admin::ABORT, cid);
        cmd.cdw10 = (u32::from(self.sqid) | (u32::from(self.cid) << 16)).into();
        cmd
    }
}

/// Asynchronous Event completion dword 0: type 2:0, info 15:8, log page 23:16.
pub const fn async_event_dw0(event_type: u8, info: u8, lid: u8) -> u32 {
    (event_type as u32 & 0x7) | ((info as u32) << 8) | ((lid as u32) << 16)
}

/// Asynchronous event types and notice information values.
pub mod async_event {
    /// Error status.
    pub const TYPE_ERROR: u8 = 0;
    /// SMART / health status.
    pub const TYPE_SMART: u8 = 1;
    /// Notice.
    pub const TYPE_NOTICE: u8 = 2;
    /// Notice: namespace attribute changed (Changed Namespace List log).
    pub const NOTICE_NS_CHANGED: u8 = 0x00;
    /// Notice: firmware activation starting.
    pub const NOTICE_FW_ACTIVATION: u8 = 0x01;
    /// Notice: ANA change.
    pub const NOTICE_ANA_CHANGE: u8 = 0x03;
    /// Notice: discovery log page change.
    pub const NOTICE_DISCOVERY_CHANGE: u8 = 0xF0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn get_log_page_image() {
        // Linux host: Get Log Page, SMART (02h), 512 bytes, RAE set.
        let mut cmd = Command::new(opcode::admin::GET_LOG_PAGE, 1);
        cmd.nsid = 0xFFFF_FFFF.into();
        cmd.cdw10 = 0x007F_8002.into();
        let g = GetLogPage::parse(&cmd);
        assert_eq!((g.lid, g.rae, g.numd, g.len_bytes()), (2, true, 128, 512));
        assert_eq!(g.to_command(1), cmd);
    }

    #[test]
    fn identify_image() {
        let mut cmd = Command::new(opcode::admin::IDENTIFY, 4);
        cmd.cdw10 = 0x0001_0001.into();
        cmd.cdw11 = 0x0200_0000.into();
        let id = Identify::parse(&cmd);
        assert_eq!((id.cns, id.cntid, id.csi), (1, 1, 2));
        assert_eq!(id.to_command(4), cmd);
    }

    #[test]
    fn queues_value() {
        assert_eq!(number_of_queues(7, 3), 0x0003_0007);
        assert_eq!(parse_number_of_queues(0x0003_0007), (7, 3));
        assert_eq!(async_event_dw0(2, 0, 4), 0x0004_0002);
    }

    proptest! {
        #[test]
        fn get_log_page_round_trip(lid: u8, lsp in 0u8..128, rae: bool, numd in 1u64..=(1u64 << 32),
                                   lsi: u16, lpo: u64, uuid_index in 0u8..128, ot: bool, csi: u8, nsid: u32) {
            let g = GetLogPage { lid, lsp, rae, numd, lsi, lpo, uuid_index, ot, csi, nsid };
            prop_assert_eq!(GetLogPage::parse(&g.to_command(0)), g);
        }

        #[test]
        fn identify_round_trip(cns: u8, cntid: u16, cnssid: u16, csi: u8, nsid: u32) {
            let i = Identify { cns, cntid, cnssid, csi, nsid };
            prop_assert_eq!(Identify::parse(&i.to_command(0)), i);
        }

        #[test]
        fn features_round_trip(fid: u8, sv: bool, sel in 0u8..8, value: u32, nsid: u32) {
            let f = Features { fid, sv, sel: 0, value, nsid };
            prop_assert_eq!(Features::parse(&f.to_set_command(0)), f);
            let g = Features { fid, sv: false, sel, value, nsid };
            prop_assert_eq!(Features::parse(&g.to_get_command(0)), g);
        }

        #[test]
        fn abort_round_trip(sqid: u16, cid: u16) {
            let a = Abort { sqid, cid };
            prop_assert_eq!(Abort::parse(&a.to_command(9)), a);
        }
    }
}
