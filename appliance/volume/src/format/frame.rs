//! Framing of metadata log records and checkpoints.
//!
//! ```text
//! 0  magic u32     "FVLG" (log record) or "FVCP" (checkpoint)
//! 4  version u16   1
//! 6  reserved u16  0
//! 8  pool uuid     16 bytes
//! 24 seq u64       record: its sequence number; checkpoint: last sequence number it covers
//! 32 length u32    payload bytes
//! 36 crc32c u32    over bytes 0..36, then 40..48, then the payload
//! 40 reserved      8 bytes of zero
//! 48 payload, then zero padding to a multiple of 4 KiB
//! ```

use super::{round_up_block, META_BLOCK};

pub const HEADER_LEN: usize = 48;
pub const FRAME_VERSION: u16 = 1;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Record,
    Checkpoint,
}

impl FrameKind {
    fn magic(self) -> [u8; 4] {
        match self {
            FrameKind::Record => *b"FVLG",
            FrameKind::Checkpoint => *b"FVCP",
        }
    }
}

/// Why a frame was not accepted (a torn tail, stale data, or corruption).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated: {have} bytes, need {need}")]
    Truncated { have: usize, need: usize },
    #[error("bad magic")]
    BadMagic,
    #[error("unknown frame version {0}")]
    BadVersion(u16),
    #[error("frame belongs to another pool")]
    WrongPool,
    #[error("frame checksum mismatch")]
    BadCrc,
    #[error("frame length {0} exceeds the region")]
    TooLong(u64),
}

fn crc(header: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&header[0..36]);
    let c = crc32c::crc32c_append(c, &header[40..48]);
    crc32c::crc32c_append(c, payload)
}

/// Frames `payload`; the result is padded to a multiple of 4 KiB.
pub fn encode(kind: FrameKind, pool: &[u8; 16], seq: u64, payload: &[u8]) -> Vec<u8> {
    let total = round_up_block((HEADER_LEN + payload.len()) as u64) as usize;
    let mut out = vec![0u8; total];
    out[0..4].copy_from_slice(&kind.magic());
    out[4..6].copy_from_slice(&FRAME_VERSION.to_le_bytes());
    out[8..24].copy_from_slice(pool);
    out[24..32].copy_from_slice(&seq.to_le_bytes());
    let len = u32::try_from(payload.len()).expect("metadata payloads are far below 4 GiB");
    out[32..36].copy_from_slice(&len.to_le_bytes());
    out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
    let c = crc(&out[..HEADER_LEN], payload);
    out[36..40].copy_from_slice(&c.to_le_bytes());
    out
}

/// Checks a header alone and returns `(seq, frame bytes incl. padding)` so the caller knows
/// how much to read. `max` bounds the frame size (the region it lives in).
pub fn peek(
    kind: FrameKind,
    pool: &[u8; 16],
    bytes: &[u8],
    max: u64,
) -> Result<(u64, usize), FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Truncated {
            have: bytes.len(),
            need: HEADER_LEN,
        });
    }
    if bytes[0..4] != kind.magic() {
        return Err(FrameError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FRAME_VERSION {
        return Err(FrameError::BadVersion(version));
    }
    if bytes[8..24] != pool[..] {
        return Err(FrameError::WrongPool);
    }
    let seq = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
    let total = round_up_block(HEADER_LEN as u64 + u64::from(len));
    if total > max {
        return Err(FrameError::TooLong(total));
    }
    Ok((seq, total as usize))
}

/// Checks a whole frame; returns `(seq, payload)`.
pub fn decode<'a>(
    kind: FrameKind,
    pool: &[u8; 16],
    bytes: &'a [u8],
) -> Result<(u64, &'a [u8]), FrameError> {
    let (seq, total) = peek(kind, pool, bytes, u64::MAX)?;
    if bytes.len() < total {
        return Err(FrameError::Truncated {
            have: bytes.len(),
            need: total,
        });
    }
    let len = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")) as usize;
    let payload = &bytes[HEADER_LEN..HEADER_LEN + len];
    let stored = u32::from_le_bytes(bytes[36..40].try_into().expect("4 bytes"));
    if crc(&bytes[..HEADER_LEN], payload) != stored {
        return Err(FrameError::BadCrc);
    }
    Ok((seq, payload))
}

const _: () = assert!(HEADER_LEN < META_BLOCK);

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: [u8; 16] = [7; 16];

    #[test]
    fn round_trip_and_padding() {
        for len in [0usize, 1, 4048, 4049, 10_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = encode(FrameKind::Record, &POOL, 42, &payload);
            assert_eq!(f.len() % META_BLOCK, 0);
            assert_eq!(
                peek(FrameKind::Record, &POOL, &f, u64::MAX)
                    .expect("header")
                    .1,
                f.len()
            );
            let (seq, p) = decode(FrameKind::Record, &POOL, &f).expect("valid frame");
            assert_eq!((seq, p), (42, &payload[..]));
        }
    }

    #[test]
    fn rejects_damage() {
        let f = encode(FrameKind::Checkpoint, &POOL, 9, b"state bytes");
        assert_eq!(
            decode(FrameKind::Record, &POOL, &f),
            Err(FrameError::BadMagic)
        );
        assert_eq!(
            decode(FrameKind::Checkpoint, &[1; 16], &f),
            Err(FrameError::WrongPool)
        );
        assert!(matches!(
            decode(FrameKind::Checkpoint, &POOL, &f[..100]),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            decode(FrameKind::Checkpoint, &POOL, &f[..20]),
            Err(FrameError::Truncated { .. })
        ));
        // Every single-bit flip in header or payload is caught.
        for byte in (0..HEADER_LEN + 11).filter(|b| !(24..36).contains(b)) {
            let mut g = f.clone();
            g[byte] ^= 0x10;
            assert!(
                decode(FrameKind::Checkpoint, &POOL, &g).is_err(),
                "flip at {byte}"
            );
        }
        for byte in 24..32 {
            let mut g = f.clone();
            g[byte] ^= 1;
            assert_eq!(
                decode(FrameKind::Checkpoint, &POOL, &g),
                Err(FrameError::BadCrc)
            );
        }
        let mut g = f.clone();
        g[4] = 9;
        assert_eq!(
            decode(FrameKind::Checkpoint, &POOL, &g),
            Err(FrameError::BadVersion(9))
        );
        assert!(matches!(
            peek(FrameKind::Checkpoint, &POOL, &f, 100),
            Err(FrameError::TooLong(_))
        ));
        // A huge claimed length fails as truncated, not by reading past the buffer.
        let mut g = f.clone();
        g[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(FrameKind::Checkpoint, &POOL, &g).is_err());
    }
}
