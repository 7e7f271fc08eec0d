//! Discovery log page (LID 70h): header and entries, and `discover()`.
//!
//! Layout (NVMe-oF spec, Discovery Log Page): a 1024-byte header (GENCTR
//! at 0, NUMREC at 8, RECFMT at 16) followed by NUMREC 1024-byte entries.

use std::net::SocketAddr;
use std::time::Duration;

use ferrite_nvme::nqn::DISCOVERY_NQN;
use ferrite_nvme::strings::{nul_terminated_str, space_padded_str};

use crate::controller::{ConnectOptions, Controller};
use crate::error::{HostError, Result, Violation};

/// Log identifier of the discovery log page.
pub const LID_DISCOVERY: u8 = 0x70;
/// Size of the header and of each entry.
pub const DISCOVERY_RECORD_SIZE: usize = 1024;

/// Transport types (TRTYPE).
pub mod trtype {
    /// RDMA.
    pub const RDMA: u8 = 1;
    /// Fibre Channel.
    pub const FC: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 3;
    /// Intra-host (loop).
    pub const LOOP: u8 = 254;
}

/// Address families (ADRFAM).
pub mod adrfam {
    /// IPv4.
    pub const IPV4: u8 = 1;
    /// IPv6.
    pub const IPV6: u8 = 2;
}

/// Subsystem types (SUBTYPE).
pub mod subtype {
    /// A referral to another discovery service.
    pub const REFERRAL: u8 = 1;
    /// An NVM subsystem.
    pub const NVM: u8 = 2;
    /// The current discovery subsystem.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// The discovery log page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryLogHeader {
    /// Generation counter: changes whenever the log changes.
    pub genctr: u64,
    /// Number of records.
    pub numrec: u64,
    /// Record format (0).
    pub recfmt: u16,
}

impl DiscoveryLogHeader {
    /// Decodes the header from the start of `b`.
    pub fn parse(b: &[u8]) -> Result<DiscoveryLogHeader> {
        if b.len() < 18 {
            return Err(short("discovery log header", 18, b.len()));
        }
        Ok(DiscoveryLogHeader {
            genctr: le64(&b[0..8]),
            numrec: le64(&b[8..16]),
            recfmt: u16::from_le_bytes([b[16], b[17]]),
        })
    }
}

/// One discovery log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Transport type ([`trtype`]).
    pub trtype: u8,
    /// Address family ([`adrfam`]).
    pub adrfam: u8,
    /// Subsystem type ([`subtype`]).
    pub subtype: u8,
    /// Transport requirements.
    pub treq: u8,
    /// Port ID.
    pub portid: u16,
    /// Controller ID (FFFFh: dynamic).
    pub cntlid: u16,
    /// Admin max SQ size.
    pub asqsz: u16,
    /// Entry flags.
    pub eflags: u16,
    /// Transport service identifier (the TCP port, as text).
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address (the IP address, as text).
    pub traddr: String,
    /// Transport specific address subtype (raw).
    pub tsas: [u8; 256],
}

impl DiscoveryEntry {
    /// Decodes an entry from the first 1024 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<DiscoveryEntry> {
        if b.len() < DISCOVERY_RECORD_SIZE {
            return Err(short("discovery log entry", DISCOVERY_RECORD_SIZE, b.len()));
        }
        let text = |what: &'static str, r: ferrite_nvme::error::Result<&str>| -> Result<String> {
            r.map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                .map_err(|source| Violation::Decode { what, source }.into())
        };
        let mut tsas = [0u8; 256];
        tsas.copy_from_slice(&b[768..1024]);
        Ok(DiscoveryEntry {
            trtype: b[0],
            adrfam: b[1],
            subtype: b[2],
            treq: b[3],
            portid: u16::from_le_bytes([b[4], b[5]]),
            cntlid: u16::from_le_bytes([b[6], b[7]]),
            asqsz: u16::from_le_bytes([b[8], b[9]]),
            eflags: u16::from_le_bytes([b[10], b[11]]),
            trsvcid: text("trsvcid", space_padded_str("trsvcid", &b[32..64]))?,
            subnqn: text("subnqn", nul_terminated_str("subnqn", &b[256..512]))?,
            traddr: text("traddr", space_padded_str("traddr", &b[512..768]))?,
            tsas,
        })
    }

    /// Encodes the entry (for fake targets and tests).
    pub fn encode(&self, out: &mut [u8]) -> Result<()> {
        if out.len() < DISCOVERY_RECORD_SIZE {
            return Err(HostError::InvalidArgument(
                "discovery entry buffer under 1024 bytes".into(),
            ));
        }
        let out = &mut out[..DISCOVERY_RECORD_SIZE];
        out.fill(0);
        out[0] = self.trtype;
        out[1] = self.adrfam;
        out[2] = self.subtype;
        out[3] = self.treq;
        out[4..6].copy_from_slice(&self.portid.to_le_bytes());
        out[6..8].copy_from_slice(&self.cntlid.to_le_bytes());
        out[8..10].copy_from_slice(&self.asqsz.to_le_bytes());
        out[10..12].copy_from_slice(&self.eflags.to_le_bytes());
        ferrite_nvme::strings::set_space_padded("trsvcid", &mut out[32..64], &self.trsvcid)?;
        ferrite_nvme::strings::set_nul_padded("subnqn", &mut out[256..512], &self.subnqn)?;
        ferrite_nvme::strings::set_space_padded("traddr", &mut out[512..768], &self.traddr)?;
        out[768..1024].copy_from_slice(&self.tsas);
        Ok(())
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn short(what: &'static str, needed: usize, got: usize) -> HostError {
    Violation::Decode {
        what,
        source: ferrite_nvme::NvmeError::TooShort { what, needed, got },
    }
    .into()
}

/// Tries at reading a log whose generation counter keeps changing.
const DISCOVERY_TRIES: usize = 3;
/// Most entries fetched (bounds what a broken target can make us allocate).
const DISCOVERY_MAX_RECORDS: u64 = 4096;

impl Controller {
    /// Reads the whole discovery log: header, then the entries, then the
    /// header again, retrying while the generation counter moves.
    pub fn discovery_log(&mut self) -> Result<(DiscoveryLogHeader, Vec<DiscoveryEntry>)> {
        for _ in 0..DISCOVERY_TRIES {
            let head = self.get_log_page(LID_DISCOVERY, 0, DISCOVERY_RECORD_SIZE as u32, 0)?;
            let header = DiscoveryLogHeader::parse(&head)?;
            let count = header.numrec.min(DISCOVERY_MAX_RECORDS);
            let mut entries = Vec::with_capacity(count as usize);
            if count > 0 {
                let len = (count as usize * DISCOVERY_RECORD_SIZE) as u32;
                let body =
                    self.get_log_page(LID_DISCOVERY, 0, len, DISCOVERY_RECORD_SIZE as u64)?;
                for rec in body.chunks_exact(DISCOVERY_RECORD_SIZE) {
                    entries.push(DiscoveryEntry::parse(rec)?);
                }
            }
            let again = self.get_log_page(LID_DISCOVERY, 0, DISCOVERY_RECORD_SIZE as u32, 0)?;
            if DiscoveryLogHeader::parse(&again)?.genctr == header.genctr {
                return Ok((header, entries));
            }
        }
        Err(HostError::Timeout {
            what: "a stable discovery log generation counter",
            after: Duration::ZERO,
        })
    }

    /// Connects to the discovery controller at `addr` and returns its log entries.
    pub fn discover(addr: SocketAddr) -> Result<Vec<DiscoveryEntry>> {
        let mut opts = ConnectOptions::new(addr, DISCOVERY_NQN);
        opts.io_queues = 0;
        opts.kato_ms = 0;
        Controller::discover_with(opts)
    }

    /// [`Controller::discover`] with explicit options (host NQN, digests, ...).
    pub fn discover_with(mut opts: ConnectOptions) -> Result<Vec<DiscoveryEntry>> {
        opts.io_queues = 0;
        let mut ctrl = Controller::connect(opts)?;
        let (_, entries) = ctrl.discovery_log()?;
        ctrl.disconnect();
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip_and_offsets() {
        let e = DiscoveryEntry {
            trtype: trtype::TCP,
            adrfam: adrfam::IPV4,
            subtype: subtype::NVM,
            treq: 0,
            portid: 7,
            cntlid: 0xFFFF,
            asqsz: 32,
            eflags: 0,
            trsvcid: "4420".into(),
            subnqn: "nqn.2024-01.io.ferrite:disk1".into(),
            traddr: "127.0.0.1".into(),
            tsas: [0; 256],
        };
        let mut b = [0u8; 1024];
        e.encode(&mut b).expect("fits");
        assert_eq!(b[0], 3);
        assert_eq!(&b[4..6], &[7, 0]);
        assert_eq!(&b[32..36], b"4420");
        assert_eq!(b[36], b' ');
        assert_eq!(&b[256..260], b"nqn.");
        assert_eq!(&b[512..521], b"127.0.0.1");
        assert_eq!(DiscoveryEntry::parse(&b).expect("valid"), e);
        assert!(DiscoveryEntry::parse(&b[..1000]).is_err());
    }

    #[test]
    fn header() {
        let mut b = [0u8; 1024];
        b[0] = 5;
        b[8] = 2;
        let h = DiscoveryLogHeader::parse(&b).expect("valid");
        assert_eq!((h.genctr, h.numrec, h.recfmt), (5, 2, 0));
        assert!(DiscoveryLogHeader::parse(&b[..10]).is_err());
    }
}
