//! NVMe over Fabrics commands: Connect, Property Get/Set, and the
//! controller properties (CAP, VS, CC, CSTS) they access.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::command::{bits, opcode, Command, SglDescriptor};
use crate::error::{NvmeError, Result};
use crate::strings::{nul_terminated_str, set_nul_padded};

/// Fields of a Connect command (FCTYPE 01h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectCommand {
    /// Record format (CDW10 15:0); only 0 is defined.
    pub recfmt: u16,
    /// Queue identifier (CDW10 31:16); 0 is the admin queue.
    pub qid: u16,
    /// Submission queue size, 0-based (CDW11 15:0).
    pub sqsize: u16,
    /// Connect attributes (CDW11 23:16): bit 2 = I/O queue deletion
    /// disabled, bits 1:0 = priority class.
    pub cattr: u8,
    /// Keep Alive Timeout in milliseconds (CDW12), admin queue only.
    pub kato: u32,
}

impl ConnectCommand {
    /// Decodes the Connect fields from `cmd` (no FCTYPE check).
    pub fn parse(cmd: &Command) -> ConnectCommand {
        let cdw10 = cmd.cdw10.get();
        let cdw11 = cmd.cdw11.get();
        ConnectCommand {
            recfmt: bits(cdw10, 0, 16) as u16,
            qid: bits(cdw10, 16, 16) as u16,
            sqsize: bits(cdw11, 0, 16) as u16,
            cattr: bits(cdw11, 16, 8) as u8,
            kato: cmd.cdw12.get(),
        }
    }

    /// Builds the Connect command; its 1024-byte [`ConnectData`] is sent
    /// in-capsule (SGL Data Block, offset 0).
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new_fabrics(opcode::fabrics::CONNECT, cid);
        cmd.dptr = SglDescriptor::in_capsule(0, ConnectData::SIZE as u32);
        cmd.cdw10 = (u32::from(self.recfmt) | (u32::from(self.qid) << 16)).into();
        cmd.cdw11 = (u32::from(self.sqsize) | (u32::from(self.cattr) << 16)).into();
        cmd.cdw12 = self.kato.into();
        cmd
    }
}

/// Connect command data (1024 bytes).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConnectData {
    /// Host identifier (128-bit).
    pub hostid: [u8; 16],
    /// Requested controller ID: FFFFh = any (dynamic model), FFFEh reserved
    /// for static model "any".
    pub cntlid: U16,
    /// Reserved.
    pub reserved18: [u8; 238],
    /// Subsystem NQN, NUL-terminated.
    pub subnqn: [u8; 256],
    /// Host NQN, NUL-terminated.
    pub hostnqn: [u8; 256],
    /// Reserved.
    pub reserved768: [u8; 256],
}

const _: () = assert!(size_of::<ConnectData>() == 1024);
const _: () = assert!(offset_of!(ConnectData, cntlid) == 16);
const _: () = assert!(offset_of!(ConnectData, subnqn) == 256);
const _: () = assert!(offset_of!(ConnectData, hostnqn) == 512);

/// Controller ID meaning "allocate any controller" (dynamic controller model).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

impl ConnectData {
    /// Size in bytes.
    pub const SIZE: usize = 1024;
    /// Byte offset of HOSTID, for Connect Invalid Parameters IPO.
    pub const HOSTID_OFFSET: u16 = 0;
    /// Byte offset of CNTLID, for IPO.
    pub const CNTLID_OFFSET: u16 = 16;
    /// Byte offset of SUBNQN, for IPO.
    pub const SUBNQN_OFFSET: u16 = 256;
    /// Byte offset of HOSTNQN, for IPO.
    pub const HOSTNQN_OFFSET: u16 = 512;

    /// Builds Connect data; the NQNs must fit in 255 bytes.
    pub fn new(hostid: [u8; 16], cntlid: u16, subnqn: &str, hostnqn: &str) -> Result<ConnectData> {
        let mut d = ConnectData::new_zeroed();
        d.hostid = hostid;
        d.cntlid = U16::new(cntlid);
        set_nul_padded("subnqn", &mut d.subnqn, subnqn)?;
        set_nul_padded("hostnqn", &mut d.hostnqn, hostnqn)?;
        Ok(d)
    }

    /// Decodes Connect data from the first 1024 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<ConnectData> {
        ConnectData::read_from_prefix(bytes)
            .map(|(d, _)| d)
            .map_err(|_| NvmeError::TooShort {
                what: "connect data",
                needed: Self::SIZE,
                got: bytes.len(),
            })
    }

    /// Requested controller ID.
    pub fn cntlid(&self) -> u16 {
        self.cntlid.get()
    }

    /// Subsystem NQN; errors if not NUL-terminated or not UTF-8.
    pub fn subnqn_str(&self) -> Result<&str> {
        nul_terminated_str("subnqn", &self.subnqn)
    }

    /// Host NQN; errors if not NUL-terminated or not UTF-8.
    pub fn hostnqn_str(&self) -> Result<&str> {
        nul_terminated_str("hostnqn", &self.hostnqn)
    }
}

/// Where an invalid Connect parameter is (IATTR bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectParamLocation {
    /// In the Connect command (SQE).
    Command,
    /// In the Connect data.
    Data,
}

/// Completion dword 0 of a successful Connect: the controller ID in bits 15:0.
pub const fn connect_response_dw0(cntlid: u16) -> u32 {
    cntlid as u32
}

/// Completion dword 0 for Connect Invalid Parameters: IATTR in byte 0
/// (0 = command, 1 = data) and the byte offset of the parameter (IPO) in
/// bits 31:16.
pub const fn connect_invalid_param_dw0(location: ConnectParamLocation, offset: u16) -> u32 {
    let iattr = match location {
        ConnectParamLocation::Command => 0,
        ConnectParamLocation::Data => 1,
    };
    ((offset as u32) << 16) | iattr
}

/// Decodes a Connect Invalid Parameters dword 0 into (location, offset).
pub const fn parse_connect_invalid_param(dw0: u32) -> (ConnectParamLocation, u16) {
    let loc = if dw0 & 1 != 0 {
        ConnectParamLocation::Data
    } else {
        ConnectParamLocation::Command
    };
    (loc, (dw0 >> 16) as u16)
}

/// Property offsets.
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset (4 bytes).
    pub const NSSR: u32 = 0x20;

    /// Size in bytes of the property at `offset`, if defined.
    pub const fn size_of(offset: u32) -> Option<u8> {
        match offset {
            CAP => Some(8),
            VS | CC | CSTS | NSSR => Some(4),
            _ => None,
        }
    }
}

/// Property size in the ATTRIB field (CDW10 bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertySize {
    /// 4-byte property (ATTRIB 0).
    Four,
    /// 8-byte property (ATTRIB 1).
    Eight,
}

impl PropertySize {
    /// Decodes ATTRIB bits 2:0; values other than 0 and 1 are reserved.
    pub fn from_attrib(cdw10: u32) -> Result<PropertySize> {
        match cdw10 & 0x7 {
            0 => Ok(PropertySize::Four),
            1 => Ok(PropertySize::Eight),
            v => Err(NvmeError::InvalidField {
                field: "property attrib",
                value: u64::from(v),
            }),
        }
    }

    /// ATTRIB encoding.
    pub const fn attrib(self) -> u32 {
        match self {
            PropertySize::Four => 0,
            PropertySize::Eight => 1,
        }
    }

    /// Bytes.
    pub const fn bytes(self) -> u8 {
        match self {
            PropertySize::Four => 4,
            PropertySize::Eight => 8,
        }
    }
}

/// Property Get (FCTYPE 04h). The value returns in completion dwords 0-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyGet {
    /// Property size.
    pub size: PropertySize,
    /// Property offset (CDW11).
    pub offset: u32,
}

impl PropertyGet {
    /// Decodes from `cmd`; errors on a reserved ATTRIB size.
    pub fn parse(cmd: &Command) -> Result<PropertyGet> {
        Ok(PropertyGet {
            size: PropertySize::from_attrib(cmd.cdw10.get())?,
            offset: cmd.cdw11.get(),
        })
    }

    /// Builds the command.
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new_fabrics(opcode::fabrics::PROPERTY_GET, cid);
        cmd.cdw10 = self.size.attrib().into();
        cmd.cdw11 = self.offset.into();
        cmd
    }
}

/// Property Set (FCTYPE 00h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertySet {
    /// Property size.
    pub size: PropertySize,
    /// Property offset (CDW11).
    pub offset: u32,
    /// Value (CDW12 low, CDW13 high; high ignored for 4-byte properties).
    pub value: u64,
}

impl PropertySet {
    /// Decodes from `cmd`; errors on a reserved ATTRIB size.
    pub fn parse(cmd: &Command) -> Result<PropertySet> {
        let size = PropertySize::from_attrib(cmd.cdw10.get())?;
        let lo = u64::from(cmd.cdw12.get());
        let hi = u64::from(cmd.cdw13.get());
        let value = match size {
            PropertySize::Four => lo,
            PropertySize::Eight => lo | (hi << 32),
        };
        Ok(PropertySet {
            size,
            offset: cmd.cdw11.get(),
            value,
        })
    }

    /// Builds the command.
    pub fn to_command(&self, cid: u16) -> Command {
        let mut cmd = Command::new_fabrics(opcode::fabrics::PROPERTY_SET, cid);
        cmd.cdw10 = self.size.attrib().into();
        cmd.cdw11 = self.offset.into();
        cmd.cdw12 = (self.value as u32).into();
        cmd.cdw13 = ((self.value >> 32) as u32).into();
        cmd
    }
}

/// Encodes a VS property value.
pub const fn version(major: u16, minor: u8, tertiary: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32
}

/// NVMe 1.3 (the version Linux nvmet reports for fabrics controllers).
pub const VS_1_3: u32 = version(1, 3, 0);
/// NVMe 1.4.
pub const VS_1_4: u32 = version(1, 4, 0);
/// NVMe 2.0.
pub const VS_2_0: u32 = version(2, 0, 0);

fn get64(v: u64, shift: u32, width: u32) -> u64 {
    (v >> shift) & ((1u64 << width) - 1)
}

fn set64(v: u64, shift: u32, width: u32, field: u64) -> u64 {
    let mask = ((1u64 << width) - 1) << shift;
    (v & !mask) | ((field << shift) & mask)
}

/// Controller Capabilities (CAP, 8 bytes) builder and decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cap(pub u64);

/// CAP.CSS bit for the NVM command set (bit 37 of CAP, bit 0 of CSS).
pub const CAP_CSS_NVM: u8 = 0x01;
/// CAP.CSS bit: one or more I/O command sets supported (CSS bit 6).
pub const CAP_CSS_IO_COMMAND_SETS: u8 = 0x40;
/// CAP.CSS bit: no I/O command set (admin only, CSS bit 7).
pub const CAP_CSS_ADMIN_ONLY: u8 = 0x80;

impl Cap {
    /// All fields zero.
    pub const fn new() -> Cap {
        Cap(0)
    }
    /// MQES: maximum queue entries, 0-based (bits 15:0).
    pub fn with_mqes(self, v: u16) -> Cap {
        Cap(set64(self.0, 0, 16, u64::from(v)))
    }
    /// CQR: contiguous queues required (bit 16).
    pub fn with_cqr(self, v: bool) -> Cap {
        Cap(set64(self.0, 16, 1, u64::from(v)))
    }
    /// AMS: arbitration mechanisms supported (bits 18:17).
    pub fn with_ams(self, v: u8) -> Cap {
        Cap(set64(self.0, 17, 2, u64::from(v)))
    }
    /// TO: ready timeout in 500 ms units (bits 31:24).
    pub fn with_to(self, v: u8) -> Cap {
        Cap(set64(self.0, 24, 8, u64::from(v)))
    }
    /// DSTRD: doorbell stride (bits 35:32).
    pub fn with_dstrd(self, v: u8) -> Cap {
        Cap(set64(self.0, 32, 4, u64::from(v)))
    }
    /// NSSRS: NVM subsystem reset supported (bit 36).
    pub fn with_nssrs(self, v: bool) -> Cap {
        Cap(set64(self.0, 36, 1, u64::from(v)))
    }
    /// CSS: command sets supported (bits 44:37).
    pub fn with_css(self, v: u8) -> Cap {
        Cap(set64(self.0, 37, 8, u64::from(v)))
    }
    /// MPSMIN: minimum memory page size 2^(12+v) (bits 51:48).
    pub fn with_mpsmin(self, v: u8) -> Cap {
        Cap(set64(self.0, 48, 4, u64::from(v)))
    }
    /// MPSMAX: maximum memory page size 2^(12+v) (bits 55:52).
    pub fn with_mpsmax(self, v: u8) -> Cap {
        Cap(set64(self.0, 52, 4, u64::from(v)))
    }
    /// MQES.
    pub fn mqes(self) -> u16 {
        get64(self.0, 0, 16) as u16
    }
    /// CQR.
    pub fn cqr(self) -> bool {
        get64(self.0, 16, 1) != 0
    }
    /// AMS.
    pub fn ams(self) -> u8 {
        get64(self.0, 17, 2) as u8
    }
    /// TO.
    pub fn to(self) -> u8 {
        get64(self.0, 24, 8) as u8
    }
    /// DSTRD.
    pub fn dstrd(self) -> u8 {
        get64(self.0, 32, 4) as u8
    }
    /// NSSRS.
    pub fn nssrs(self) -> bool {
        get64(self.0, 36, 1) != 0
    }
    /// CSS.
    pub fn css(self) -> u8 {
        get64(self.0, 37, 8) as u8
    }
    /// MPSMIN.
    pub fn mpsmin(self) -> u8 {
        get64(self.0, 48, 4) as u8
    }
    /// MPSMAX.
    pub fn mpsmax(self) -> u8 {
        get64(self.0, 52, 4) as u8
    }
}

/// CC.SHN values.
pub mod shn {
    /// No notification.
    pub const NONE: u8 = 0;
    /// Normal shutdown.
    pub const NORMAL: u8 = 1;
    /// Abrupt shutdown.
    pub const ABRUPT: u8 = 2;
}

/// Controller Configuration (CC, 4 bytes) decoder (and builder for hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cc(pub u32);

impl Cc {
    /// EN (bit 0).
    pub fn en(self) -> bool {
        bits(self.0, 0, 1) != 0
    }
    /// CSS (bits 6:4): 0 = NVM, 6 = all supported I/O command sets, 7 = admin only.
    pub fn css(self) -> u8 {
        bits(self.0, 4, 3) as u8
    }
    /// MPS (bits 10:7): memory page size 2^(12+v).
    pub fn mps(self) -> u8 {
        bits(self.0, 7, 4) as u8
    }
    /// AMS (bits 13:11).
    pub fn ams(self) -> u8 {
        bits(self.0, 11, 3) as u8
    }
    /// SHN (bits 15:14), see [`shn`].
    pub fn shn(self) -> u8 {
        bits(self.0, 14, 2) as u8
    }
    /// IOSQES (bits 19:16): log2 of the I/O SQ entry size.
    pub fn iosqes(self) -> u8 {
        bits(self.0, 16, 4) as u8
    }
    /// IOCQES (bits 23:20): log2 of the I/O CQ entry size.
    pub fn iocqes(self) -> u8 {
        bits(self.0, 20, 4) as u8
    }
    /// Builds a CC value (host side).
    pub fn build(en: bool, css: u8, mps: u8, ams: u8, shn: u8, iosqes: u8, iocqes: u8) -> Cc {
        Cc(u32::from(en)
            | (u32::from(css & 0x7) << 4)
            | (u32::from(mps & 0xF) << 7)
            | (u32::from(ams & 0x7) << 11)
            | (u32::from(shn & 0x3) << 14)
            | (u32::from(iosqes & 0xF) << 16)
            | (u32::from(iocqes & 0xF) << 20))
    }
}

/// CSTS.SHST values.
pub mod shst {
    /// Normal operation.
    pub const NORMAL: u8 = 0;
    /// Shutdown processing occurring.
    pub const OCCURRING: u8 = 1;
    /// Shutdown processing complete.
    pub const COMPLETE: u8 = 2;
}

/// Controller Status (CSTS, 4 bytes) encoder and decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Csts(pub u32);

impl Csts {
    fn set(self, shift: u32, width: u32, v: u32) -> Csts {
        let mask = ((1u32 << width) - 1) << shift;
        Csts((self.0 & !mask) | ((v << shift) & mask))
    }
    /// RDY (bit 0).
    pub fn with_rdy(self, v: bool) -> Csts {
        self.set(0, 1, u32::from(v))
    }
    /// CFS: controller fatal status (bit 1).
    pub fn with_cfs(self, v: bool) -> Csts {
        self.set(1, 1, u32::from(v))
    }
    /// SHST (bits 3:2), see [`shst`].
    pub fn with_shst(self, v: u8) -> Csts {
        self.set(2, 2, u32::from(v))
    }
    /// NSSRO: NVM subsystem reset occurred (bit 4).
    pub fn with_nssro(self, v: bool) -> Csts {
        self.set(4, 1, u32::from(v))
    }
    /// PP: processing paused (bit 5).
    pub fn with_pp(self, v: bool) -> Csts {
        self.set(5, 1, u32::from(v))
    }
    /// RDY.
    pub fn rdy(self) -> bool {
        bits(self.0, 0, 1) != 0
    }
    /// CFS.
    pub fn cfs(self) -> bool {
        bits(self.0, 1, 1) != 0
    }
    /// SHST.
    pub fn shst(self) -> u8 {
        bits(self.0, 2, 2) as u8
    }
    /// NSSRO.
    pub fn nssro(self) -> bool {
        bits(self.0, 4, 1) != 0
    }
    /// PP.
    pub fn pp(self) -> bool {
        bits(self.0, 5, 1) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Linux admin-queue Connect SQE as built from the Fabrics spec:
    /// cid 0, qid 0, sqsize 31, kato 5000 ms, in-capsule data of 1024 bytes.
    #[test]
    fn connect_command_image() {
        let mut sqe = [0u8; 64];
        sqe[0] = 0x7F;
        sqe[1] = 0x40; // PSDT 01b
        sqe[4] = 0x01; // FCTYPE Connect
        sqe[32..36].copy_from_slice(&1024u32.to_le_bytes());
        sqe[39] = 0x01; // SGL data block, offset
        sqe[44..46].copy_from_slice(&31u16.to_le_bytes()); // sqsize
        sqe[48..52].copy_from_slice(&5000u32.to_le_bytes()); // kato
        let cmd = Command::parse(&sqe).expect("64 bytes");
        assert_eq!(cmd.fabrics_type(), Some(opcode::fabrics::CONNECT));
        let c = ConnectCommand::parse(&cmd);
        assert_eq!(
            c,
            ConnectCommand {
                recfmt: 0,
                qid: 0,
                sqsize: 31,
                cattr: 0,
                kato: 5000
            }
        );
        assert_eq!(c.to_command(0).as_bytes(), &sqe);
    }

    #[test]
    fn connect_data_strings() {
        let d = ConnectData::new(
            [7; 16],
            CNTLID_DYNAMIC,
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.h",
        )
        .expect("fits");
        let b = d.as_bytes();
        assert_eq!(&b[16..18], &[0xFF, 0xFF]);
        assert_eq!(&b[256..262], b"nqn.20");
        assert_eq!(&b[512..517], b"nqn.h");
        let back = ConnectData::parse(b).expect("1024 bytes");
        assert_eq!(back.subnqn_str(), Ok("nqn.2016-06.io.spdk:cnode1"));
        assert_eq!(back.hostnqn_str(), Ok("nqn.h"));
        let mut bad = back.clone();
        bad.subnqn = [b'a'; 256];
        assert!(bad.subnqn_str().is_err());
        assert!(ConnectData::parse(&b[..1023]).is_err());
    }

    #[test]
    fn connect_response_fields() {
        assert_eq!(connect_response_dw0(0x21), 0x21);
        let dw0 =
            connect_invalid_param_dw0(ConnectParamLocation::Data, ConnectData::HOSTNQN_OFFSET);
        assert_eq!(dw0, 0x0200_0001);
        assert_eq!(
            parse_connect_invalid_param(dw0),
            (ConnectParamLocation::Data, 512)
        );
    }

    #[test]
    fn property_commands() {
        let get = PropertyGet {
            size: PropertySize::Eight,
            offset: property::CAP,
        };
        let cmd = get.to_command(3);
        assert_eq!(cmd.as_bytes()[4], 0x04);
        assert_eq!(cmd.as_bytes()[40], 0x01);
        assert_eq!(PropertyGet::parse(&cmd), Ok(get));
        let mut bad = cmd;
        bad.cdw10 = 2.into();
        assert!(PropertyGet::parse(&bad).is_err());
        let set = PropertySet {
            size: PropertySize::Four,
            offset: property::CC,
            value: 0x0046_0001,
        };
        assert_eq!(PropertySet::parse(&set.to_command(1)), Ok(set));
        assert_eq!(property::size_of(property::CAP), Some(8));
        assert_eq!(property::size_of(0x10), None);
    }

    #[test]
    fn registers() {
        // CAP as Linux nvmet builds it: MQES 1023, CQR, TO 15, CSS NVM, MPSMIN 0, MPSMAX 0.
        let cap = Cap::new()
            .with_mqes(1023)
            .with_cqr(true)
            .with_to(15)
            .with_css(CAP_CSS_NVM);
        assert_eq!(cap.0, 0x0000_0020_0F01_03FF);
        // CC as a Linux host enables it: EN, IOSQES 6, IOCQES 4.
        let cc = Cc(0x0046_0001);
        assert!(cc.en());
        assert_eq!(
            (cc.iosqes(), cc.iocqes(), cc.css(), cc.mps(), cc.shn()),
            (6, 4, 0, 0, 0)
        );
        assert_eq!(Cc::build(true, 0, 0, 0, 0, 6, 4), cc);
        let csts = Csts::default().with_rdy(true).with_shst(shst::COMPLETE);
        assert_eq!(csts.0, 0x9);
        assert_eq!(VS_1_3, 0x0001_0300);
    }

    proptest! {
        #[test]
        fn connect_round_trip(recfmt: u16, qid: u16, sqsize: u16, cattr: u8, kato: u32, cid: u16) {
            let c = ConnectCommand { recfmt, qid, sqsize, cattr, kato };
            prop_assert_eq!(ConnectCommand::parse(&c.to_command(cid)), c);
        }

        #[test]
        fn connect_data_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(d) = ConnectData::parse(&bytes) {
                let _ = d.subnqn_str();
                let _ = d.hostnqn_str();
                prop_assert_eq!(d.as_bytes(), &bytes[..1024]);
            }
        }

        #[test]
        fn cap_round_trip(mqes: u16, cqr: bool, ams in 0u8..4, to: u8, dstrd in 0u8..16,
                          nssrs: bool, css: u8, mpsmin in 0u8..16, mpsmax in 0u8..16) {
            let cap = Cap::new().with_mqes(mqes).with_cqr(cqr).with_ams(ams).with_to(to)
                .with_dstrd(dstrd).with_nssrs(nssrs).with_css(css).with_mpsmin(mpsmin).with_mpsmax(mpsmax);
            prop_assert_eq!((cap.mqes(), cap.cqr(), cap.ams(), cap.to(), cap.dstrd()), (mqes, cqr, ams, to, dstrd));
            prop_assert_eq!((cap.nssrs(), cap.css(), cap.mpsmin(), cap.mpsmax()), (nssrs, css, mpsmin, mpsmax));
        }

        #[test]
        fn cc_round_trip(en: bool, css in 0u8..8, mps in 0u8..16, ams in 0u8..8, shn in 0u8..4,
                         iosqes in 0u8..16, iocqes in 0u8..16) {
            let cc = Cc::build(en, css, mps, ams, shn, iosqes, iocqes);
            prop_assert_eq!((cc.en(), cc.css(), cc.mps(), cc.ams()), (en, css, mps, ams));
            prop_assert_eq!((cc.shn(), cc.iosqes(), cc.iocqes()), (shn, iosqes, iocqes));
        }

        #[test]
        fn csts_round_trip(rdy: bool, cfs: bool, shst in 0u8..4, nssro: bool, pp: bool) {
            let c = Csts::default().with_rdy(rdy).with_cfs(cfs).with_shst(shst).with_nssro(nssro).with_pp(pp);
            prop_assert_eq!((c.rdy(), c.cfs(), c.shst(), c.nssro(), c.pp()), (rdy, cfs, shst, nssro, pp));
        }
    }
}
