#![no_main]
//! Log records and checkpoints: frame checks, op lists and state payloads never panic. The
//! payload parsers are also fed raw bytes (a frame with a valid CRC around garbage).

use ferrite_volume::format::frame::{self, FrameKind};
use ferrite_volume::state::{decode_ops, State};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pool = [7u8; 16];
    for kind in [FrameKind::Record, FrameKind::Checkpoint] {
        let _ = frame::peek(kind, &pool, data, 1 << 20);
        if let Ok((_, payload)) = frame::decode(kind, &pool, data) {
            let _ = decode_ops(payload);
            let _ = State::decode(payload, 1 << 16);
        }
    }
    if let Ok(ops) = decode_ops(data) {
        let mut s = State::new(1 << 20, 64);
        for op in &ops {
            let _ = s.apply(op);
        }
        let _ = s.check();
    }
    if let Ok(s) = State::decode(data, 1 << 16) {
        let _ = s.check();
        let _ = s.encode();
    }
});
