//! Discovery log page (LID 70h): a 1024-byte header followed by 1024-byte
//! entries, one per subsystem port (or referral) the host may see.

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::health::log_parse;
use crate::error::Result;
use crate::strings::{nul_terminated_str, set_nul_padded, set_space_padded, space_padded_str};

/// Discovery log header (1024 bytes).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DiscoveryLogHeader {
    /// Generation counter: changes whenever the log content changes.
    pub genctr: U64,
    /// Number of records (entries).
    pub numrec: U64,
    /// Record format (0).
    pub recfmt: U16,
    /// Reserved.
    pub rsvd18: [u8; 1006],
}

const _: () = assert!(size_of::<DiscoveryLogHeader>() == 1024);
const _: () = assert!(offset_of!(DiscoveryLogHeader, numrec) == 8);
const _: () = assert!(offset_of!(DiscoveryLogHeader, recfmt) == 16);
log_parse!(DiscoveryLogHeader, "discovery log header");

impl DiscoveryLogHeader {
    /// A header with `genctr` and `numrec`.
    pub fn new(genctr: u64, numrec: u64) -> DiscoveryLogHeader {
        let mut h = DiscoveryLogHeader::new_zeroed();
        h.genctr = genctr.into();
        h.numrec = numrec.into();
        h
    }
}

/// Discovery log entry (1024 bytes).
#[derive(Debug, Clone, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DiscoveryLogEntry {
    /// Transport type, see [`trtype`].
    pub trtype: u8,
    /// Address family, see [`adrfam`].
    pub adrfam: u8,
    /// Subsystem type, see [`subtype`].
    pub subtype: u8,
    /// Transport requirements, see [`treq`].
    pub treq: u8,
    /// Port identifier.
    pub portid: U16,
    /// Controller ID (FFFFh = dynamic controller model).
    pub cntlid: U16,
    /// Admin max SQ size.
    pub asqsz: U16,
    /// Entry flags, see [`eflags`].
    pub eflags: U16,
    /// Reserved.
    pub rsvd12: [u8; 20],
    /// Transport service identifier (TCP: port number as text).
    pub trsvcid: [u8; 32],
    /// Reserved.
    pub rsvd64: [u8; 192],
    /// Subsystem NQN (NUL-terminated).
    pub subnqn: [u8; 256],
    /// Transport address (TCP: IP address as text).
    pub traddr: [u8; 256],
    /// Transport specific address subtype (TCP: byte 0 SECTYPE).
    pub tsas: [u8; 256],
}

const _: () = assert!(size_of::<DiscoveryLogEntry>() == 1024);
const _: () = assert!(offset_of!(DiscoveryLogEntry, portid) == 4);
const _: () = assert!(offset_of!(DiscoveryLogEntry, cntlid) == 6);
const _: () = assert!(offset_of!(DiscoveryLogEntry, asqsz) == 8);
const _: () = assert!(offset_of!(DiscoveryLogEntry, eflags) == 10);
const _: () = assert!(offset_of!(DiscoveryLogEntry, trsvcid) == 32);
const _: () = assert!(offset_of!(DiscoveryLogEntry, subnqn) == 256);
const _: () = assert!(offset_of!(DiscoveryLogEntry, traddr) == 512);
const _: () = assert!(offset_of!(DiscoveryLogEntry, tsas) == 768);
log_parse!(DiscoveryLogEntry, "discovery log entry");

/// Transport types.
pub mod trtype {
    /// RDMA.
    pub const RDMA: u8 = 1;
    /// Fibre Channel.
    pub const FC: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 3;
    /// Intra-host (loopback).
    pub const LOOP: u8 = 254;
}

/// Address families.
pub mod adrfam {
    /// IPv4.
    pub const IPV4: u8 = 1;
    /// IPv6.
    pub const IPV6: u8 = 2;
    /// InfiniBand.
    pub const IB: u8 = 3;
    /// Fibre Channel.
    pub const FC: u8 = 4;
    /// Intra-host.
    pub const LOOP: u8 = 254;
}

/// Subsystem types.
pub mod subtype {
    /// Referral to another discovery service.
    pub const REFERRAL: u8 = 1;
    /// NVM subsystem.
    pub const NVM: u8 = 2;
    /// The current discovery subsystem.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// TREQ bits.
pub mod treq {
    /// Secure channel not specified (bits 1:0 = 00b).
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0;
    /// Secure channel required.
    pub const SECURE_CHANNEL_REQUIRED: u8 = 1;
    /// Secure channel not required.
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 2;
    /// SQ flow control disable supported (bit 2).
    pub const DISABLE_SQFLOW: u8 = 1 << 2;
}

/// EFLAGS bits.
pub mod eflags {
    /// Explicit persistent connection support for discovery.
    pub const EPCSD: u16 = 1 << 1;
    /// Duplicate returned information.
    pub const DUPRETINFO: u16 = 1 << 0;
    /// No CDC connectivity.
    pub const NCC: u16 = 1 << 2;
}

/// TCP TSAS SECTYPE values (byte 0 of TSAS).
pub mod tcp_sectype {
    /// No security.
    pub const NONE: u8 = 0;
    /// TLS 1.2.
    pub const TLS12: u8 = 1;
    /// TLS 1.3.
    pub const TLS13: u8 = 2;
}

/// Controller ID meaning the dynamic controller model.
pub const DISCOVERY_CNTLID_DYNAMIC: u16 = 0xFFFF;

impl DiscoveryLogEntry {
    /// An NVMe/TCP entry without security: `subnqn` reachable at
    /// `traddr`:`trsvcid` through port `portid`.
    pub fn tcp(
        adrfam: u8,
        subtype: u8,
        portid: u16,
        asqsz: u16,
        subnqn: &str,
        traddr: &str,
        trsvcid: &str,
    ) -> Result<DiscoveryLogEntry> {
        let mut e = DiscoveryLogEntry::zeroed();
        e.trtype = trtype::TCP;
        e.adrfam = adrfam;
        e.subtype = subtype;
        e.treq = treq::SECURE_CHANNEL_NOT_REQUIRED;
        e.portid = portid.into();
        e.cntlid = DISCOVERY_CNTLID_DYNAMIC.into();
        e.asqsz = asqsz.into();
        e.tsas[0] = tcp_sectype::NONE;
        e.set_subnqn(subnqn)?;
        e.set_traddr(traddr)?;
        e.set_trsvcid(trsvcid)?;
        Ok(e)
    }

    /// Sets SUBNQN (NUL padded).
    pub fn set_subnqn(&mut self, nqn: &str) -> Result<()> {
        set_nul_padded("subnqn", &mut self.subnqn, nqn)
    }

    /// Sets TRADDR: ASCII, space padded as the Fabrics spec and SPDK do
    /// (Linux hosts trim the padding; Linux nvmet pads with NULs).
    pub fn set_traddr(&mut self, addr: &str) -> Result<()> {
        set_space_padded("traddr", &mut self.traddr, addr)
    }

    /// Sets TRSVCID: ASCII, space padded.
    pub fn set_trsvcid(&mut self, svc: &str) -> Result<()> {
        set_space_padded("trsvcid", &mut self.trsvcid, svc)
    }

    /// SUBNQN.
    pub fn subnqn_str(&self) -> Result<&str> {
        nul_terminated_str("subnqn", &self.subnqn)
    }

    /// TRADDR, accepting space or NUL padding.
    pub fn traddr_str(&self) -> Result<&str> {
        space_padded_str("traddr", &self.traddr)
    }

    /// TRSVCID, accepting space or NUL padding.
    pub fn trsvcid_str(&self) -> Result<&str> {
        space_padded_str("trsvcid", &self.trsvcid)
    }
}

/// Builds a discovery log (header + entries) into `out` (cleared first);
/// serve windows of it with [`super::copy_log_window`].
pub fn encode_discovery_log(genctr: u64, entries: &[DiscoveryLogEntry], out: &mut Vec<u8>) {
    out.clear();
    out.reserve((entries.len() + 1) * 1024);
    out.extend_from_slice(DiscoveryLogHeader::new(genctr, entries.len() as u64).as_bytes());
    for e in entries {
        out.extend_from_slice(e.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entry_image() {
        let e = DiscoveryLogEntry::tcp(
            adrfam::IPV4,
            subtype::NVM,
            1,
            32,
            "nqn.2016-06.io.spdk:cnode1",
            "127.0.0.1",
            "4420",
        )
        .expect("fits");
        let b = e.as_bytes();
        assert_eq!(&b[..4], &[3, 1, 2, 2]);
        assert_eq!(&b[4..12], &[1, 0, 0xFF, 0xFF, 32, 0, 0, 0]);
        assert_eq!(&b[32..38], b"4420  ");
        assert_eq!(&b[512..522], b"127.0.0.1 ");
        assert_eq!(b[768], 0);
        assert_eq!(e.traddr_str(), Ok("127.0.0.1"));
        assert_eq!(e.trsvcid_str(), Ok("4420"));
        assert_eq!(e.subnqn_str(), Ok("nqn.2016-06.io.spdk:cnode1"));
        // A NUL-padded entry (Linux nvmet style) reads the same.
        let mut linux = e.clone();
        linux.trsvcid = [0; 32];
        linux.trsvcid[..4].copy_from_slice(b"4420");
        assert_eq!(linux.trsvcid_str(), Ok("4420"));

        let mut log = Vec::new();
        encode_discovery_log(7, &[e.clone(), e], &mut log);
        assert_eq!(log.len(), 3072);
        let h = DiscoveryLogHeader::parse(&log).expect("1024");
        assert_eq!((h.genctr.get(), h.numrec.get()), (7, 2));
        assert_eq!(log[1024], 3);
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 1024)) {
            let e = DiscoveryLogEntry::parse(&bytes).expect("1024");
            prop_assert_eq!(e.as_bytes(), &bytes[..]);
            let _ = (e.subnqn_str(), e.traddr_str(), e.trsvcid_str());
            let h = DiscoveryLogHeader::parse(&bytes).expect("1024");
            prop_assert_eq!(h.as_bytes(), &bytes[..]);
        }

        #[test]
        fn strings_round_trip(addr in "[0-9a-f.:]{1,64}", svc in "[0-9]{1,5}") {
            let e = DiscoveryLogEntry::tcp(adrfam::IPV6, subtype::NVM, 0, 32, "nqn.2014-08.org.nvmexpress.discovery", &addr, &svc)
                .expect("fits");
            prop_assert_eq!(e.traddr_str().expect("ascii"), addr.as_str());
            prop_assert_eq!(e.trsvcid_str().expect("ascii"), svc.as_str());
        }
    }
}
