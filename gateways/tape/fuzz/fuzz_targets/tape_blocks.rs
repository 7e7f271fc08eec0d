#![no_main]
//! Blocks read from a cartridge are untrusted (another format, damage, a hostile tape): the
//! block parser and the record decoders must return an error, never panic, and a parsed
//! payload stays within the block.

#[allow(dead_code)]
#[path = "../../src/format.rs"]
mod format;

use format::{parse_block, parse_record, JobHeader, Kind, Trailer, VolumeLabel, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, payload)) = parse_block(data) {
        assert_eq!(payload.len(), h.payload_len as usize);
        assert_eq!(payload.len() + HEADER_LEN, data.len());
    }
    let _ = parse_record::<VolumeLabel>(data, Kind::Label);
    let _ = parse_record::<JobHeader>(data, Kind::JobHeader);
    let _ = parse_record::<Trailer>(data, Kind::Trailer);
});
