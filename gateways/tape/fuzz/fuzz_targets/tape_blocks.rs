#![no_main]
//! Blocks read from a cartridge are untrusted (another format, damage, a hostile tape): the
//! block parser and the record decoders must return an error, never panic, and a parsed
//! payload stays within the block.
//!
//! Byte 0 chooses the treatment: with bit 0 clear the block gets a valid magic, version, payload
//! length and both CRC32Cs before parsing (random bytes would almost never pass the checksums,
//! so the record decoders would go unfuzzed); with bit 0 set it is parsed as it is.

#[allow(dead_code)]
#[path = "../../src/format.rs"]
mod format;

use format::{
    parse_block, parse_record, JobHeader, Kind, Trailer, VolumeLabel, HEADER_LEN, MAGIC, VERSION,
};
use libfuzzer_sys::fuzz_target;

/// Rewrites the header fields `parse_block` checks so that the block passes them.
fn make_checksums_pass(b: &mut [u8]) {
    if b.len() < HEADER_LEN {
        return;
    }
    let payload_len = (b.len() - HEADER_LEN) as u32;
    b[0..8].copy_from_slice(MAGIC);
    b[8..10].copy_from_slice(&VERSION.to_le_bytes());
    b[40..44].copy_from_slice(&payload_len.to_le_bytes());
    let payload_crc = crc32c::crc32c(&b[HEADER_LEN..]);
    b[44..48].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&b[..60]);
    b[60..64].copy_from_slice(&header_crc.to_le_bytes());
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, bytes)) = input.split_first() else {
        return;
    };
    let mut owned = bytes.to_vec();
    if mode & 1 == 0 {
        make_checksums_pass(&mut owned);
    }
    let data = &owned[..];
    if let Ok((h, payload)) = parse_block(data) {
        assert_eq!(payload.len(), h.payload_len as usize);
        assert_eq!(payload.len() + HEADER_LEN, data.len());
    }
    let _ = parse_record::<VolumeLabel>(data, Kind::Label);
    let _ = parse_record::<JobHeader>(data, Kind::JobHeader);
    let _ = parse_record::<Trailer>(data, Kind::Trailer);
});
