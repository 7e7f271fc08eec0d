//! The member label: the first 4 KiB of every pool member.
//!
//! ```text
//! 0    magic "FERRVOL\0"          8 bytes
//! 8    format version u32         1
//! 12   member index u32
//! 16   member count u32
//! 20   block size u32
//! 24   pool uuid                  16 bytes
//! 40   member uuid                16 bytes
//! 56   member size u64            bytes of the device at creation
//! 64   cluster size u64           bytes
//! 72   data start u64             byte offset of the first data cluster on this member
//! 80   data clusters u64          clusters on this member
//! 88   first cluster u64          pool-wide number of this member's first cluster
//! 96   checkpoint slot A u64      byte offset (member 0; 0 elsewhere)
//! 104  checkpoint slot size u64   bytes per slot (slot B follows slot A)
//! 112  log offset u64
//! 120  log size u64
//! 128  max table references u64   what the slots were sized for
//! 136  created u64                unix seconds
//! 144  pool name length u8, then the name (at most 63 bytes), zero padded to 208
//! 4092 crc32c over bytes 0..4092
//! ```

use super::META_BLOCK;

pub const LABEL_MAGIC: [u8; 8] = *b"FERRVOL\0";
pub const LABEL_VERSION: u32 = 1;
pub const MAX_POOL_NAME: usize = 63;
const CRC_AT: usize = META_BLOCK - 4;

/// What the label of one member says (returned by `Pool::probe`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberLabel {
    pub pool_name: String,
    pub pool_uuid: [u8; 16],
    pub member_index: u32,
    pub member_count: u32,
    pub member_uuid: [u8; 16],
    pub member_size: u64,
    pub block_size: u32,
    pub cluster_size: u64,
    pub data_start: u64,
    pub data_clusters: u64,
    pub first_cluster: u64,
    pub slot_offset: u64,
    pub slot_size: u64,
    pub log_offset: u64,
    pub log_size: u64,
    pub max_refs: u64,
    pub created: u64,
}

/// Why a label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("not a pool member (no label magic)")]
    NotAMember,
    #[error("label checksum mismatch")]
    BadCrc,
    #[error("unknown label format version {0}")]
    UnknownVersion(u32),
    #[error("label truncated: {0} bytes")]
    Truncated(usize),
    #[error("label invalid: {0}")]
    Invalid(String),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl MemberLabel {
    pub fn encode(&self) -> [u8; META_BLOCK] {
        let mut b = [0u8; META_BLOCK];
        b[0..8].copy_from_slice(&LABEL_MAGIC);
        b[8..12].copy_from_slice(&LABEL_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.member_index.to_le_bytes());
        b[16..20].copy_from_slice(&self.member_count.to_le_bytes());
        b[20..24].copy_from_slice(&self.block_size.to_le_bytes());
        b[24..40].copy_from_slice(&self.pool_uuid);
        b[40..56].copy_from_slice(&self.member_uuid);
        let words = [
            self.member_size,
            self.cluster_size,
            self.data_start,
            self.data_clusters,
            self.first_cluster,
            self.slot_offset,
            self.slot_size,
            self.log_offset,
            self.log_size,
            self.max_refs,
            self.created,
        ];
        for (i, w) in words.iter().enumerate() {
            b[56 + 8 * i..64 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        let name = self.pool_name.as_bytes();
        let n = name.len().min(MAX_POOL_NAME);
        b[144] = n as u8;
        b[145..145 + n].copy_from_slice(&name[..n]);
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and validates a label block. Checks the magic first ("not a pool member"), then
    /// the checksum, the version and the internal consistency of the fields.
    pub fn decode(b: &[u8]) -> Result<MemberLabel, LabelError> {
        if b.len() < META_BLOCK {
            return Err(LabelError::Truncated(b.len()));
        }
        if b[0..8] != LABEL_MAGIC {
            return Err(LabelError::NotAMember);
        }
        if crc32c::crc32c(&b[..CRC_AT]) != u32_at(b, CRC_AT) {
            return Err(LabelError::BadCrc);
        }
        let version = u32_at(b, 8);
        if version != LABEL_VERSION {
            return Err(LabelError::UnknownVersion(version));
        }
        let n = b[144] as usize;
        if n == 0 || n > MAX_POOL_NAME {
            return Err(LabelError::Invalid(format!("pool name length {n}")));
        }
        let pool_name = std::str::from_utf8(&b[145..145 + n])
            .map_err(|_| LabelError::Invalid("pool name is not UTF-8".into()))?
            .to_owned();
        let l = MemberLabel {
            pool_name,
            member_index: u32_at(b, 12),
            member_count: u32_at(b, 16),
            block_size: u32_at(b, 20),
            pool_uuid: b[24..40].try_into().expect("16 bytes"),
            member_uuid: b[40..56].try_into().expect("16 bytes"),
            member_size: u64_at(b, 56),
            cluster_size: u64_at(b, 64),
            data_start: u64_at(b, 72),
            data_clusters: u64_at(b, 80),
            first_cluster: u64_at(b, 88),
            slot_offset: u64_at(b, 96),
            slot_size: u64_at(b, 104),
            log_offset: u64_at(b, 112),
            log_size: u64_at(b, 120),
            max_refs: u64_at(b, 128),
            created: u64_at(b, 136),
        };
        l.validate()?;
        Ok(l)
    }

    fn validate(&self) -> Result<(), LabelError> {
        let bad = |s: String| Err(LabelError::Invalid(s));
        if self.member_count == 0 || self.member_index >= self.member_count {
            return bad(format!(
                "member {} of {}",
                self.member_index, self.member_count
            ));
        }
        if !self.block_size.is_power_of_two() || !(512..=4096).contains(&self.block_size) {
            return bad(format!("block size {}", self.block_size));
        }
        if !crate::cluster_size_valid(self.cluster_size, self.block_size) {
            return bad(format!("cluster size {}", self.cluster_size));
        }
        let data_end = self
            .data_clusters
            .checked_mul(self.cluster_size)
            .and_then(|d| d.checked_add(self.data_start));
        if data_end.is_none_or(|end| end > self.member_size) || self.data_clusters == 0 {
            return bad(format!(
                "{} data clusters at {} do not fit {} bytes",
                self.data_clusters, self.data_start, self.member_size
            ));
        }
        if self.first_cluster.checked_add(self.data_clusters).is_none() {
            return bad("cluster numbers overflow".into());
        }
        if self.member_index == 0 {
            let meta_end = self
                .slot_size
                .checked_mul(2)
                .and_then(|s| s.checked_add(self.slot_offset))
                .filter(|&e| e <= self.log_offset)
                .and_then(|_| self.log_offset.checked_add(self.log_size));
            let aligned = [
                self.slot_offset,
                self.slot_size,
                self.log_offset,
                self.log_size,
            ]
            .iter()
            .all(|v| v % META_BLOCK as u64 == 0);
            if self.slot_offset < META_BLOCK as u64
                || self.slot_size == 0
                || self.log_size == 0
                || !aligned
                || meta_end.is_none_or(|e| e > self.data_start)
            {
                return bad("metadata area does not fit before the data".into());
            }
        }
        if self.data_start < META_BLOCK as u64 || self.data_start % u64::from(self.block_size) != 0
        {
            return bad(format!("data start {}", self.data_start));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> MemberLabel {
        MemberLabel {
            pool_name: "tank".into(),
            pool_uuid: [1; 16],
            member_index: 0,
            member_count: 2,
            member_uuid: [2; 16],
            member_size: 64 << 20,
            block_size: 512,
            cluster_size: 1 << 20,
            data_start: 8 << 20,
            data_clusters: 56,
            first_cluster: 0,
            slot_offset: 4096,
            slot_size: 1 << 20,
            log_offset: 4096 + (2 << 20),
            log_size: 2 << 20,
            max_refs: 1000,
            created: 1_700_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let l = sample();
        assert_eq!(MemberLabel::decode(&l.encode()).expect("valid"), l);
    }

    #[test]
    fn damage_cases() {
        let good = sample().encode();
        assert_eq!(
            MemberLabel::decode(&[0u8; 4096]),
            Err(LabelError::NotAMember)
        );
        assert_eq!(
            MemberLabel::decode(&good[..100]),
            Err(LabelError::Truncated(100))
        );
        let mut b = good;
        b[200] ^= 1;
        assert_eq!(MemberLabel::decode(&b), Err(LabelError::BadCrc));
        let mut b = good;
        b[0] = b'X';
        assert_eq!(MemberLabel::decode(&b), Err(LabelError::NotAMember));
        let reseal = |mut b: [u8; 4096]| {
            let crc = crc32c::crc32c(&b[..CRC_AT]);
            b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let mut b = good;
        b[8] = 2;
        assert_eq!(
            MemberLabel::decode(&reseal(b)),
            Err(LabelError::UnknownVersion(2))
        );
        let mut l = sample();
        l.data_clusters = 57;
        assert!(matches!(
            MemberLabel::decode(&l.encode()),
            Err(LabelError::Invalid(_))
        ));
        let mut l = sample();
        l.member_index = 2;
        assert!(matches!(
            MemberLabel::decode(&l.encode()),
            Err(LabelError::Invalid(_))
        ));
        let mut l = sample();
        l.cluster_size = 3 << 20;
        assert!(matches!(
            MemberLabel::decode(&l.encode()),
            Err(LabelError::Invalid(_))
        ));
        let mut l = sample();
        l.log_size = 8 << 20;
        assert!(matches!(
            MemberLabel::decode(&l.encode()),
            Err(LabelError::Invalid(_))
        ));
    }
}
