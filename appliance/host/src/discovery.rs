//! Discovery log page (LID 70h): header and entries, and `discover()`.
//!
//! Layout (NVMe-oF spec, Discovery Log Page): a 1024-byte header (GENCTR
//! at 0, NUMREC at 8, RECFMT at 16) followed by NUMREC 1024-byte entries.

use std::net::SocketAddr;
use std::time::Duration;

use ferrite_nvme::log::{DiscoveryLogEntry, DiscoveryLogHeader as WireHeader};
use ferrite_nvme::nqn::DISCOVERY_NQN;
use zerocopy::{FromZeros, IntoBytes};

use crate::controller::{ConnectOptions, Controller};
use crate::error::{HostError, Result, Violation};

/// The wire layouts, constants and string rules come from `ferrite_nvme::log`; this module only
/// turns them into owned values for callers.
pub use ferrite_nvme::log::{adrfam, subtype, trtype, LID_DISCOVERY};

/// Bytes of the discovery log header and of each entry.
pub const DISCOVERY_RECORD_SIZE: usize = std::mem::size_of::<DiscoveryLogEntry>();

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
    /// Decodes the header from the start of `b` (1024 bytes).
    pub fn parse(b: &[u8]) -> Result<DiscoveryLogHeader> {
        let h = WireHeader::parse(b).map_err(|source| decode("discovery log header", source))?;
        Ok(DiscoveryLogHeader {
            genctr: h.genctr.get(),
            numrec: h.numrec.get(),
            recfmt: h.recfmt.get(),
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
        let e =
            DiscoveryLogEntry::parse(b).map_err(|source| decode("discovery log entry", source))?;
        // Targets differ in padding (spaces per the spec, NULs in Linux nvmet): accept both.
        let text = |what: &'static str, r: ferrite_nvme::error::Result<&str>| -> Result<String> {
            r.map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                .map_err(|source| decode(what, source))
        };
        Ok(DiscoveryEntry {
            trtype: e.trtype,
            adrfam: e.adrfam,
            subtype: e.subtype,
            treq: e.treq,
            portid: e.portid.get(),
            cntlid: e.cntlid.get(),
            asqsz: e.asqsz.get(),
            eflags: e.eflags.get(),
            trsvcid: text("trsvcid", e.trsvcid_str())?,
            subnqn: text("subnqn", e.subnqn_str())?,
            traddr: text("traddr", e.traddr_str())?,
            tsas: e.tsas,
        })
    }

    /// Encodes the entry (for fake targets and tests).
    pub fn encode(&self, out: &mut [u8]) -> Result<()> {
        let Some(out) = out.get_mut(..DISCOVERY_RECORD_SIZE) else {
            return Err(HostError::InvalidArgument(
                "discovery entry buffer under 1024 bytes".into(),
            ));
        };
        let mut e = DiscoveryLogEntry::new_zeroed();
        e.trtype = self.trtype;
        e.adrfam = self.adrfam;
        e.subtype = self.subtype;
        e.treq = self.treq;
        e.portid = self.portid.into();
        e.cntlid = self.cntlid.into();
        e.asqsz = self.asqsz.into();
        e.eflags = self.eflags.into();
        e.set_trsvcid(&self.trsvcid)?;
        e.set_subnqn(&self.subnqn)?;
        e.set_traddr(&self.traddr)?;
        e.tsas = self.tsas;
        out.copy_from_slice(e.as_bytes());
        Ok(())
    }
}

fn decode(what: &'static str, source: ferrite_nvme::NvmeError) -> HostError {
    Violation::Decode { what, source }.into()
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
