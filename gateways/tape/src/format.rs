//! The on-tape format: every tape block starts with a 64-byte header that says what it is, so a
//! cartridge can be read and restored without the catalog (docs/tape-format.md).
//!
//! ```text
//! header (little-endian)
//!  0  8  magic "FERRTAPE"
//!  8  2  format version (1)
//! 10  2  kind: 1 volume label, 2 job header, 3 data, 4 job trailer
//! 12  4  flags (0)
//! 16  8  job id (0 in a label)
//! 24  8  data: the job's block number; job header and trailer: the part number
//! 32  8  data: byte offset in the source; otherwise 0
//! 40  4  payload length
//! 44  4  CRC32C of the payload
//! 48 12  reserved (0)
//! 60  4  CRC32C of bytes 0..60
//! payload: data bytes (data blocks) or JSON (label, job header, trailer)
//! ```
//!
//! Layout on a cartridge: file 0 holds the label; each part of a job is one file: job header,
//! data blocks in block order, trailer (the part's index), filemark. A job that reaches early
//! warning ends its part with a trailer marked `continued` and goes on in part 2 on the next
//! cartridge.

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"FERRTAPE";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
/// The largest payload a block carries (the virtual drive takes 16 MiB blocks).
pub const MAX_PAYLOAD: usize = 8 << 20;

/// What a tape block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Label,
    JobHeader,
    Data,
    Trailer,
}

impl Kind {
    fn code(self) -> u16 {
        match self {
            Kind::Label => 1,
            Kind::JobHeader => 2,
            Kind::Data => 3,
            Kind::Trailer => 4,
        }
    }

    fn from_code(c: u16) -> Option<Kind> {
        Some(match c {
            1 => Kind::Label,
            2 => Kind::JobHeader,
            3 => Kind::Data,
            4 => Kind::Trailer,
            _ => return None,
        })
    }
}

/// Why a block is not a valid block of this format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error(
        "not a ferrite-tape block ({0} bytes, magic {1:02x?}): a cartridge of another format?"
    )]
    ForeignBlock(usize, Vec<u8>),
    #[error("ferrite-tape format version {0} is not supported (this build reads {VERSION})")]
    Version(u16),
    #[error("block header checksum mismatch")]
    HeaderChecksum,
    #[error("unknown block kind {0}")]
    UnknownKind(u16),
    #[error(
        "payload length {declared} does not match the block ({actual} bytes after the header)"
    )]
    Length { declared: u32, actual: usize },
    #[error(
        "payload checksum mismatch in {kind:?} block {index} of job {job}: the block is corrupt"
    )]
    PayloadChecksum { kind: Kind, job: u64, index: u64 },
    #[error("{0:?} payload is not valid: {1}")]
    Payload(Kind, String),
    #[error("expected a {want:?} block, found {got:?}")]
    Unexpected { want: Kind, got: Kind },
}

/// A decoded block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub kind: Kind,
    pub job: u64,
    pub index: u64,
    pub offset: u64,
    pub payload_len: u32,
    pub payload_crc: u32,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Encodes a header for `payload` into the first [`HEADER_LEN`] bytes of `out`.
pub fn encode_header(
    out: &mut [u8; HEADER_LEN],
    kind: Kind,
    job: u64,
    index: u64,
    offset: u64,
    payload: &[u8],
) {
    out.fill(0);
    out[0..8].copy_from_slice(MAGIC);
    out[8..10].copy_from_slice(&VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&kind.code().to_le_bytes());
    out[16..24].copy_from_slice(&job.to_le_bytes());
    out[24..32].copy_from_slice(&index.to_le_bytes());
    out[32..40].copy_from_slice(&offset.to_le_bytes());
    out[40..44].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    out[44..48].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&out[..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// One whole block: header then payload.
pub fn encode_block(kind: Kind, job: u64, index: u64, offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    encode_header(&mut h, kind, job, index, offset, payload);
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&h);
    v.extend_from_slice(payload);
    v
}

/// The payload CRC32C recorded in the header of a block made by [`encode_block`].
pub fn payload_crc(block: &[u8]) -> u32 {
    block.get(44..48).map_or(0, |_| le32(block, 44))
}

/// A block with a JSON payload.
pub fn encode_record<T: Serialize>(kind: Kind, job: u64, index: u64, value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail; an empty payload would fail to parse back.
    let payload = serde_json::to_vec(value).unwrap_or_default();
    encode_block(kind, job, index, 0, &payload)
}

/// Parses and checks a block read from tape: header checksum, lengths, payload checksum.
/// Returns the header and the payload slice.
pub fn parse_block(b: &[u8]) -> Result<(BlockHeader, &[u8]), FormatError> {
    if b.len() < HEADER_LEN || &b[0..8] != MAGIC {
        return Err(FormatError::ForeignBlock(
            b.len(),
            b[..b.len().min(8)].to_vec(),
        ));
    }
    let version = le16(b, 8);
    if crc32c::crc32c(&b[..60]) != le32(b, 60) {
        return Err(FormatError::HeaderChecksum);
    }
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let code = le16(b, 10);
    let kind = Kind::from_code(code).ok_or(FormatError::UnknownKind(code))?;
    let h = BlockHeader {
        kind,
        job: le64(b, 16),
        index: le64(b, 24),
        offset: le64(b, 32),
        payload_len: le32(b, 40),
        payload_crc: le32(b, 44),
    };
    let payload = &b[HEADER_LEN..];
    if h.payload_len as usize != payload.len() {
        return Err(FormatError::Length {
            declared: h.payload_len,
            actual: payload.len(),
        });
    }
    if crc32c::crc32c(payload) != h.payload_crc {
        return Err(FormatError::PayloadChecksum {
            kind,
            job: h.job,
            index: h.index,
        });
    }
    Ok((h, payload))
}

/// Parses a JSON record of the expected kind.
pub fn parse_record<T: for<'de> Deserialize<'de>>(
    b: &[u8],
    want: Kind,
) -> Result<(BlockHeader, T), FormatError> {
    let (h, payload) = parse_block(b)?;
    if h.kind != want {
        return Err(FormatError::Unexpected { want, got: h.kind });
    }
    let v =
        serde_json::from_slice(payload).map_err(|e| FormatError::Payload(want, e.to_string()))?;
    Ok((h, v))
}

/// File 0 of every cartridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeLabel {
    pub barcode: String,
    /// Unix seconds.
    pub labelled_at: u64,
    pub writer: String,
}

/// Where a job's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// NVMe/TCP address of the appliance, `host:port`.
    pub address: String,
    pub subnqn: String,
    pub nsid: u32,
    /// The snapshot or volume name the operator gave, if any.
    #[serde(default)]
    pub name: Option<String>,
}

/// First block of every part of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHeader {
    pub job: u64,
    pub part: u64,
    pub source: Source,
    /// Size of the source in bytes.
    pub source_bytes: u64,
    pub lba_size: u32,
    /// Bytes per data block (the last may be shorter).
    pub chunk_bytes: u32,
    /// Data blocks of the whole job.
    pub total_blocks: u64,
    /// The first data block in this part.
    pub first_block: u64,
    /// Unix seconds.
    pub started_at: u64,
    /// Incremental backups: the job this one applies on top of. Its data blocks hold only the
    /// changed extents, each at the source offset in its block header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_job: Option<u64>,
    /// Incremental backups: `(offset, length)` byte ranges that read zeroes in the source
    /// (deallocated since the base); a restore writes zeroes there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zero_extents: Vec<(u64, u64)>,
    /// Journal archives: the range of a replication journal the data blocks hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalRange>,
}

/// A range of one consistency group's replication journal: data block `i` of the job holds
/// record `first_seq + i`, as the gateway protocol's encoded `Record` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRange {
    pub group: u32,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Last block of every part: its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub job: u64,
    pub part: u64,
    pub first_block: u64,
    /// Data blocks in this part.
    pub blocks: u64,
    pub bytes: u64,
    /// The job goes on in the next part on another cartridge.
    pub continued: bool,
    /// CRC32C of each data block's payload, in block order.
    pub crcs: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_block_round_trip_and_layout() {
        let b = encode_block(Kind::Data, 7, 42, 42 << 20, b"payload");
        assert_eq!(&b[0..8], b"FERRTAPE");
        assert_eq!(b[10], 3);
        assert_eq!(le64(&b, 16), 7);
        assert_eq!(le64(&b, 24), 42);
        assert_eq!(le32(&b, 40), 7);
        assert_eq!(payload_crc(&b), crc32c::crc32c(b"payload"));
        let (h, p) = parse_block(&b).expect("parse");
        assert_eq!(
            (h.kind, h.job, h.index, h.offset),
            (Kind::Data, 7, 42, 42 << 20)
        );
        assert_eq!(p, b"payload");
    }

    #[test]
    fn corruption_is_detected_where_it_is() {
        let mut b = encode_block(Kind::Data, 1, 2, 0, &[5u8; 100]);
        b[HEADER_LEN + 10] ^= 1;
        assert!(matches!(
            parse_block(&b),
            Err(FormatError::PayloadChecksum {
                job: 1,
                index: 2,
                ..
            })
        ));
        let mut b = encode_block(Kind::Data, 1, 2, 0, &[5u8; 100]);
        b[20] ^= 1;
        assert_eq!(parse_block(&b), Err(FormatError::HeaderChecksum));
        let b = encode_block(Kind::Data, 1, 2, 0, &[5u8; 100]);
        assert!(matches!(
            parse_block(&b[..90]),
            Err(FormatError::Length {
                declared: 100,
                actual: 26
            })
        ));
        assert!(matches!(
            parse_block(b"VOL1 ANSI label"),
            Err(FormatError::ForeignBlock(..))
        ));
        let e = parse_block(&[0u8; 80]).expect_err("foreign");
        assert!(e.to_string().contains("another format"), "{e}");
    }

    #[test]
    fn records_check_their_kind() {
        let l = VolumeLabel {
            barcode: "A1".into(),
            labelled_at: 1,
            writer: "t".into(),
        };
        let b = encode_record(Kind::Label, 0, 0, &l);
        let (_, back): (_, VolumeLabel) = parse_record(&b, Kind::Label).expect("label");
        assert_eq!(back, l);
        assert!(matches!(
            parse_record::<Trailer>(&b, Kind::Trailer),
            Err(FormatError::Unexpected {
                want: Kind::Trailer,
                got: Kind::Label
            })
        ));
        let bad = encode_block(Kind::Trailer, 0, 0, 0, b"{not json");
        assert!(matches!(
            parse_record::<Trailer>(&bad, Kind::Trailer),
            Err(FormatError::Payload(..))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_block(&bytes);
            let _ = parse_record::<JobHeader>(&bytes, Kind::JobHeader);
        }
    }
}
