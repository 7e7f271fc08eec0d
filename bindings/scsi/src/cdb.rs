//! Command descriptor blocks and parsers of device answers (SPC-4, SSC-3, SMC-3).
//!
//! Every parser takes untrusted bytes: it checks lengths before it reads and returns
//! [`ScsiError::Malformed`] instead of panicking.

use std::fmt;

use crate::error::ScsiError;

/// SPC operation codes used here.
pub mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const INQUIRY: u8 = 0x12;
    pub const MOVE_MEDIUM: u8 = 0xA5;
    pub const READ_ELEMENT_STATUS: u8 = 0xB8;
}

/// Peripheral device types (INQUIRY byte 0, bits 4..0).
pub mod device_type {
    pub const SEQUENTIAL_ACCESS: u8 = 0x01;
    pub const MEDIUM_CHANGER: u8 = 0x08;
}

/// TEST UNIT READY (SPC-4 6.37): six bytes, all zero but the opcode.
pub fn test_unit_ready() -> [u8; 6] {
    [opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0]
}

/// Standard INQUIRY (SPC-4 6.6): EVPD 0, page 0, allocation length in bytes 3..5 big-endian.
pub fn inquiry(allocation_length: u16) -> [u8; 6] {
    let len = allocation_length.to_be_bytes();
    [opcode::INQUIRY, 0, 0, len[0], len[1], 0]
}

/// MOVE MEDIUM (SMC-3 6.3): transport element, source and destination addresses big-endian.
pub fn move_medium(transport: u16, source: u16, destination: u16) -> [u8; 12] {
    let t = transport.to_be_bytes();
    let s = source.to_be_bytes();
    let d = destination.to_be_bytes();
    [
        opcode::MOVE_MEDIUM,
        0,
        t[0],
        t[1],
        s[0],
        s[1],
        d[0],
        d[1],
        0,
        0,
        0,
        0,
    ]
}

/// Element type codes (SMC-3 table 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementKind {
    /// A robot arm (medium transport element).
    Transport,
    /// A storage slot.
    Storage,
    /// An import/export slot (mail slot).
    ImportExport,
    /// A drive (data transfer element).
    DataTransfer,
}

impl ElementKind {
    pub fn code(self) -> u8 {
        match self {
            ElementKind::Transport => 1,
            ElementKind::Storage => 2,
            ElementKind::ImportExport => 3,
            ElementKind::DataTransfer => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<ElementKind> {
        match code {
            1 => Some(ElementKind::Transport),
            2 => Some(ElementKind::Storage),
            3 => Some(ElementKind::ImportExport),
            4 => Some(ElementKind::DataTransfer),
            _ => None,
        }
    }
}

/// READ ELEMENT STATUS (SMC-3 6.11): VOLTAG set so barcodes come back; `kind` None = all types;
/// allocation length in bytes 7..10 (24 bits, big-endian).
pub fn read_element_status(
    kind: Option<ElementKind>,
    start: u16,
    count: u16,
    allocation_length: u32,
) -> [u8; 12] {
    let s = start.to_be_bytes();
    let c = count.to_be_bytes();
    let a = allocation_length.min(0x00ff_ffff).to_be_bytes();
    let voltag = 0x10;
    [
        opcode::READ_ELEMENT_STATUS,
        voltag | kind.map_or(0, ElementKind::code),
        s[0],
        s[1],
        c[0],
        c[1],
        0,
        a[1],
        a[2],
        a[3],
        0,
        0,
    ]
}

fn ascii_field(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .trim_start()
        .to_string()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

/// Standard INQUIRY data (SPC-4 6.6.2), the fields the gateway shows and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    pub qualifier: u8,
    pub device_type: u8,
    pub removable: bool,
    pub vendor: String,
    pub product: String,
    pub revision: String,
}

impl Inquiry {
    /// Parses at least the first 36 bytes of standard INQUIRY data.
    pub fn parse(b: &[u8]) -> Result<Inquiry, ScsiError> {
        if b.len() < 36 {
            return Err(ScsiError::malformed(
                "inquiry data",
                format!("{} bytes, the standard data is 36", b.len()),
            ));
        }
        Ok(Inquiry {
            qualifier: b[0] >> 5,
            device_type: b[0] & 0x1f,
            removable: b[1] & 0x80 != 0,
            vendor: ascii_field(&b[8..16]),
            product: ascii_field(&b[16..32]),
            revision: ascii_field(&b[32..36]),
        })
    }
}

/// One element descriptor of a READ ELEMENT STATUS answer (SMC-3 6.11.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementStatus {
    pub kind: ElementKind,
    pub address: u16,
    /// The element holds a cartridge.
    pub full: bool,
    /// The element is in an abnormal state (ASC/ASCQ say why).
    pub except: bool,
    pub asc: u8,
    pub ascq: u8,
    /// Where the cartridge came from, if the library knows (SVALID).
    pub source: Option<u16>,
    /// The primary volume tag (barcode), trimmed; None when not reported or blank.
    pub barcode: Option<String>,
}

/// Parses a READ ELEMENT STATUS answer: the 8-byte header, then element status pages each with
/// an 8-byte page header and fixed-length descriptors. Stops at the report length the header
/// gives or the buffer's end, whichever is first (the allocation length may have cut it).
pub fn parse_element_status(b: &[u8]) -> Result<Vec<ElementStatus>, ScsiError> {
    const WHAT: &str = "element status data";
    if b.len() < 8 {
        return Err(ScsiError::malformed(
            WHAT,
            format!("{} bytes, header is 8", b.len()),
        ));
    }
    let report = be24(b, 5) as usize;
    let end = (8 + report).min(b.len());
    let mut at = 8;
    let mut out = Vec::new();
    while at + 8 <= end {
        let code = b[at] & 0x0f;
        let kind = ElementKind::from_code(code)
            .ok_or_else(|| ScsiError::malformed(WHAT, format!("element type code {code}")))?;
        let pvoltag = b[at + 1] & 0x80 != 0;
        let desc_len = be16(b, at + 2) as usize;
        let page_bytes = be24(b, at + 5) as usize;
        if desc_len < 12 {
            return Err(ScsiError::malformed(
                WHAT,
                format!("descriptor length {desc_len}"),
            ));
        }
        at += 8;
        let page_end = (at + page_bytes).min(end);
        while at + desc_len <= page_end {
            let d = &b[at..at + desc_len];
            let flags = d[2];
            let barcode = if pvoltag && desc_len >= 12 + 36 {
                Some(ascii_field(&d[12..44])).filter(|s| !s.is_empty())
            } else {
                None
            };
            out.push(ElementStatus {
                kind,
                address: be16(d, 0),
                full: flags & 0x01 != 0,
                except: flags & 0x04 != 0,
                asc: d[4],
                ascq: d[5],
                source: (d[9] & 0x80 != 0).then(|| be16(d, 10)),
                barcode,
            });
            at += desc_len;
        }
        at = page_end;
    }
    Ok(out)
}

/// Sense keys (SPC-4 table 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKey {
    NoSense,
    RecoveredError,
    NotReady,
    MediumError,
    HardwareError,
    IllegalRequest,
    UnitAttention,
    DataProtect,
    BlankCheck,
    VolumeOverflow,
    Other(u8),
}

impl SenseKey {
    pub fn from_code(code: u8) -> SenseKey {
        match code & 0x0f {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0xd => SenseKey::VolumeOverflow,
            other => SenseKey::Other(other),
        }
    }
}

/// Sense data (SPC-4 4.5), fixed (0x70/0x71) or descriptor (0x72/0x73) format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    /// Fixed format only: a filemark was read (SSC).
    pub filemark: bool,
    /// Fixed format only: end of medium / early warning (SSC).
    pub eom: bool,
}

impl Sense {
    pub fn parse(b: &[u8]) -> Result<Sense, ScsiError> {
        const WHAT: &str = "sense data";
        let code = b.first().map(|c| c & 0x7f);
        match code {
            Some(0x70 | 0x71) if b.len() >= 14 => Ok(Sense {
                key: SenseKey::from_code(b[2]),
                asc: b[12],
                ascq: b[13],
                filemark: b[2] & 0x80 != 0,
                eom: b[2] & 0x40 != 0,
            }),
            Some(0x72 | 0x73) if b.len() >= 4 => Ok(Sense {
                key: SenseKey::from_code(b[1]),
                asc: b[2],
                ascq: b[3],
                filemark: false,
                eom: false,
            }),
            Some(c) => Err(ScsiError::malformed(
                WHAT,
                format!("response code {c:#04x} with {} bytes", b.len()),
            )),
            None => Err(ScsiError::malformed(WHAT, "empty")),
        }
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sense key {:?}, asc/ascq {:#04x}/{:#04x}",
            self.key, self.asc, self.ascq
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unit_ready_is_six_zero_bytes() {
        assert_eq!(test_unit_ready(), [0u8; 6]);
    }

    #[test]
    fn inquiry_cdb_layout_spc4_table_142() {
        assert_eq!(inquiry(0x0160), [0x12, 0x00, 0x00, 0x01, 0x60, 0x00]);
    }

    #[test]
    fn move_medium_cdb_layout_smc3_table_23() {
        assert_eq!(
            move_medium(0x0001, 0x1002, 0x0100),
            [0xA5, 0, 0x00, 0x01, 0x10, 0x02, 0x01, 0x00, 0, 0, 0, 0]
        );
    }

    #[test]
    fn read_element_status_cdb_layout_smc3_table_37() {
        let cdb = read_element_status(Some(ElementKind::Storage), 0x1000, 0x0040, 0x01_2345);
        assert_eq!(
            cdb,
            [0xB8, 0x12, 0x10, 0x00, 0x00, 0x40, 0, 0x01, 0x23, 0x45, 0, 0]
        );
        let all = read_element_status(None, 0, 0xffff, u32::MAX);
        assert_eq!(all[1], 0x10, "voltag set, all element types");
        assert_eq!(
            &all[7..10],
            &[0xff, 0xff, 0xff],
            "24-bit allocation length saturates"
        );
    }

    fn inquiry_bytes(pdt: u8, vendor: &[u8; 8], product: &[u8; 16]) -> Vec<u8> {
        let mut b = vec![0u8; 36];
        b[0] = pdt;
        b[1] = 0x80;
        b[2] = 0x06;
        b[4] = 31;
        b[8..16].copy_from_slice(vendor);
        b[16..32].copy_from_slice(product);
        b[32..36].copy_from_slice(b"1.0 ");
        b
    }

    #[test]
    fn inquiry_parse_reads_type_and_identification() {
        let b = inquiry_bytes(0x08, b"STK     ", b"L700            ");
        let inq = Inquiry::parse(&b).expect("36 bytes");
        assert_eq!(inq.device_type, device_type::MEDIUM_CHANGER);
        assert_eq!(inq.qualifier, 0);
        assert!(inq.removable);
        assert_eq!(inq.vendor, "STK");
        assert_eq!(inq.product, "L700");
        assert_eq!(inq.revision, "1.0");
        let tape =
            Inquiry::parse(&inquiry_bytes(0x01, b"IBM     ", b"ULT3580-TD8     ")).expect("parses");
        assert_eq!(tape.device_type, device_type::SEQUENTIAL_ACCESS);
        assert!(Inquiry::parse(&b[..35]).is_err());
    }

    /// An answer laid out as SMC-3 tables 40/41/42 describe: header, one storage page with two
    /// 52-byte descriptors (12 + 36-byte primary volume tag + 4), one drive page without tags.
    fn element_answer() -> Vec<u8> {
        let mut storage = Vec::new();
        for (addr, full, tag) in [
            (0x1000u16, true, &b"F00001L8"[..]),
            (0x1001, false, &b""[..]),
        ] {
            let mut d = vec![0u8; 52];
            d[0..2].copy_from_slice(&addr.to_be_bytes());
            d[2] = u8::from(full) | 0x08;
            let mut t = [b' '; 32];
            t[..tag.len()].copy_from_slice(tag);
            d[12..44].copy_from_slice(&t);
            storage.extend(d);
        }
        let mut drive = vec![0u8; 12];
        drive[0..2].copy_from_slice(&0x0100u16.to_be_bytes());
        drive[2] = 0x05; // full + except
        drive[4] = 0x3a;
        drive[9] = 0x80;
        drive[10..12].copy_from_slice(&0x1002u16.to_be_bytes());
        let mut pages = Vec::new();
        pages.extend([2u8, 0x80, 0, 52, 0]);
        pages.extend(&(storage.len() as u32).to_be_bytes()[1..]);
        pages.extend(storage);
        pages.extend([4u8, 0x00, 0, 12, 0]);
        pages.extend(&(drive.len() as u32).to_be_bytes()[1..]);
        pages.extend(drive);
        let mut b = vec![0x10, 0x00, 0x00, 0x03, 0];
        b.extend(&(pages.len() as u32).to_be_bytes()[1..]);
        b.extend(pages);
        b
    }

    #[test]
    fn element_status_parses_pages_and_barcodes() {
        let els = parse_element_status(&element_answer()).expect("well formed");
        assert_eq!(els.len(), 3);
        assert_eq!(els[0].kind, ElementKind::Storage);
        assert_eq!(els[0].address, 0x1000);
        assert!(els[0].full);
        assert_eq!(els[0].barcode.as_deref(), Some("F00001L8"));
        assert!(!els[1].full);
        assert_eq!(els[1].barcode, None, "a blank tag is no barcode");
        assert_eq!(els[2].kind, ElementKind::DataTransfer);
        assert!(els[2].full && els[2].except);
        assert_eq!(els[2].asc, 0x3a);
        assert_eq!(els[2].source, Some(0x1002));
        assert_eq!(els[2].barcode, None);
    }

    #[test]
    fn element_status_truncated_by_allocation_length_keeps_whole_descriptors() {
        let b = element_answer();
        let els = parse_element_status(&b[..8 + 8 + 52 + 10]).expect("truncation is not an error");
        assert_eq!(els.len(), 1);
        assert!(parse_element_status(&b[..7]).is_err());
    }

    #[test]
    fn element_status_rejects_unknown_type_and_tiny_descriptors() {
        let mut b = element_answer();
        b[8] = 0x07;
        assert!(parse_element_status(&b).is_err());
        let mut b = element_answer();
        b[11] = 4;
        assert!(parse_element_status(&b).is_err());
    }

    #[test]
    fn sense_fixed_and_descriptor_formats() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0xf0;
        fixed[2] = 0x40 | 0x0d;
        fixed[12] = 0x00;
        fixed[13] = 0x02;
        let s = Sense::parse(&fixed).expect("fixed");
        assert_eq!(s.key, SenseKey::VolumeOverflow);
        assert!(s.eom && !s.filemark);
        assert_eq!((s.asc, s.ascq), (0x00, 0x02));
        let d = Sense::parse(&[0x72, 0x07, 0x27, 0x00]).expect("descriptor");
        assert_eq!(d.key, SenseKey::DataProtect);
        assert_eq!(d.asc, 0x27);
        assert!(Sense::parse(&[]).is_err());
        assert!(Sense::parse(&[0x70, 0, 0]).is_err());
        assert!(Sense::parse(&[0x05]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_element_status(&bytes);
            let _ = Inquiry::parse(&bytes);
            let _ = Sense::parse(&bytes);
        }
    }
}
