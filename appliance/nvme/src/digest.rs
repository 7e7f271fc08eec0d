//! CRC32C digests used by NVMe/TCP header (HDGST) and data (DDGST) digests.
//!
//! A digest is the CRC32C (Castagnoli) of the covered bytes, stored on the
//! wire little-endian.

/// CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Incremental CRC32C for data spread over several buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crc32c {
    state: u32,
}

impl Crc32c {
    /// A fresh digest (CRC of zero bytes).
    pub const fn new() -> Crc32c {
        Crc32c { state: 0 }
    }

    /// Appends `data` to the digest.
    pub fn update(&mut self, data: &[u8]) {
        self.state = crc32c::crc32c_append(self.state, data);
    }

    /// The CRC32C of everything appended so far.
    pub const fn value(&self) -> u32 {
        self.state
    }

    /// The digest as it appears on the wire.
    pub const fn to_le_bytes(&self) -> [u8; 4] {
        self.state.to_le_bytes()
    }
}

/// Reads a wire digest (4 bytes, little-endian) from the start of `bytes`.
pub fn read_digest(bytes: &[u8]) -> Option<u32> {
    let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 B.4 test vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    proptest! {
        #[test]
        fn incremental_matches_whole(data in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
            let split = split.min(data.len());
            let mut d = Crc32c::new();
            d.update(&data[..split]);
            d.update(&data[split..]);
            prop_assert_eq!(d.value(), crc32c(&data));
            prop_assert_eq!(read_digest(&d.to_le_bytes()), Some(d.value()));
        }
    }
}
