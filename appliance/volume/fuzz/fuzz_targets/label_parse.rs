#![no_main]
//! Member labels from untrusted devices: never panic; whatever decodes re-encodes identically.
//!
//! The decoder wants a 4096-byte block whose CRC32C over bytes 0..4092 matches, so raw mutated
//! inputs almost never get past the checksum. Byte 0 of the input is a set of flags, the rest is
//! the block (zero padded): unless a flag says to keep the input's own bytes, the target writes
//! the magic, the known version and the right checksum before decoding, so the mutations reach
//! the field checks behind them. The raw input is decoded too (truncation, magic, bad CRC).

use ferrite_volume::format::label::{LABEL_MAGIC, LABEL_VERSION};
use ferrite_volume::format::META_BLOCK;
use ferrite_volume::MemberLabel;
use libfuzzer_sys::fuzz_target;

/// Where the label's checksum sits.
const CRC_AT: usize = META_BLOCK - 4;
/// Flag bits of byte 0: keep the input's magic, version, checksum.
const RAW_MAGIC: u8 = 1;
const RAW_VERSION: u8 = 2;
const RAW_CRC: u8 = 4;

fn check(b: &[u8]) {
    if let Ok(label) = MemberLabel::decode(b) {
        let again = MemberLabel::decode(&label.encode()).expect("a decoded label re-encodes");
        assert_eq!(again, label);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let mut block = [0u8; META_BLOCK];
    let n = body.len().min(META_BLOCK);
    block[..n].copy_from_slice(&body[..n]);
    if flags & RAW_MAGIC == 0 {
        block[..8].copy_from_slice(&LABEL_MAGIC);
    }
    if flags & RAW_VERSION == 0 {
        block[8..12].copy_from_slice(&LABEL_VERSION.to_le_bytes());
    }
    if flags & RAW_CRC == 0 {
        let crc = crc32c::crc32c(&block[..CRC_AT]);
        block[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    }
    check(&block);
});
