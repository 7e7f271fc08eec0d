//! Fuzz the gateway frame decoder: any byte stream, decoded frame by frame
//! as a reader would, must either decode, ask for more, or be refused with
//! an error; whatever decodes must re-encode to the very same bytes.
//!
//! Byte 0 chooses the input's treatment: with bit 0 clear, every frame gets a valid magic,
//! version, body length and both CRC32Cs before decoding (random bytes would almost never pass the
//! checksums, so the body decoders would go unfuzzed); with bit 0 set the bytes are decoded as
//! they are, which keeps the header checks themselves fuzzed.
#![no_main]

use ferrite_gateway_protocol::{decode, frame_len, Message};
use libfuzzer_sys::fuzz_target;

/// Frame header length and the offsets `decode` checks (gateways/protocol/src/wire.rs).
const HEADER_LEN: usize = 24;

/// Rewrites each frame's magic, version, body length and checksums so that it passes them.
fn make_checksums_pass(buf: &mut [u8]) {
    let mut at = 0;
    while buf.len() - at >= HEADER_LEN {
        let room = (buf.len() - at - HEADER_LEN) as u32;
        let f = &mut buf[at..];
        f[0..4].copy_from_slice(b"FRGW");
        f[4] = 1;
        let asked = u32::from_le_bytes([f[8], f[9], f[10], f[11]]);
        let body_len = asked % (room + 1);
        f[8..12].copy_from_slice(&body_len.to_le_bytes());
        let end = HEADER_LEN + body_len as usize;
        let body_crc = crc32c::crc32c(&f[HEADER_LEN..end]);
        f[12..16].copy_from_slice(&body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&f[..20]);
        f[20..24].copy_from_slice(&header_crc.to_le_bytes());
        at += end;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, bytes)) = input.split_first() else {
        return;
    };
    let mut owned = bytes.to_vec();
    if mode & 1 == 0 {
        make_checksums_pass(&mut owned);
    }
    let mut rest = &owned[..];
    for _ in 0..64 {
        let len = frame_len(rest);
        match decode(rest) {
            Ok(Some((m, n))) => {
                assert_eq!(len, Ok(Some(n)));
                assert!(n <= rest.len());
                assert_eq!(m.encoded_len(), n);
                let mut again = Vec::new();
                m.encode_to_vec(&mut again).expect("a decoded message re-encodes");
                assert_eq!(&again[..], &rest[..n]);
                if let Message::Record(r) = m {
                    r.header.check(r.data.len()).expect("decoded record is valid");
                }
                rest = &rest[n..];
            }
            Ok(None) => break,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
});
