//! Fuzz the sealed-frame reader of the replicator link: any byte stream opened frame by frame
//! must give frames, ask for more, or fail; never panic.
//!
//! Byte 0 chooses: bit 0 clear opens the rest as it is (the length checks and the AEAD refusal);
//! bit 0 set first seals the rest as frames (lengths from its bytes), flips the bit that byte 1
//! and 2 name, and then everything opened before the flipped frame must equal what was sealed
//! and nothing from the flipped frame on may open (a tampered frame never passes).
#![no_main]

use ferrite_link_crypto::{Psk, Session, Side};
use libfuzzer_sys::fuzz_target;

fn pair() -> (Session, Session) {
    let psk = Psk::from_bytes([9; 32]);
    let (np, ns) = ([1; 32], [2; 32]);
    (
        Session::new(&psk, Side::Primary, &np, &ns),
        Session::new(&psk, Side::Secondary, &np, &ns),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut tx, mut rx) = pair();
    if mode & 1 == 0 {
        let mut off = 0;
        while let Ok(Some((_, n))) = rx.open(&rest[off..]) {
            off += n;
        }
        return;
    }
    if rest.len() < 2 {
        return;
    }
    let flip = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
    let body = &rest[2..];
    let mut frames: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let n = (usize::from(body[at]) % 64).min(body.len() - at - 1) + 1;
        frames.push(&body[at..at + n]);
        at += n;
    }
    let mut wire = Vec::new();
    let mut starts = Vec::new();
    for f in &frames {
        starts.push(wire.len());
        tx.seal(f, &mut wire).expect("small frames seal");
    }
    if wire.is_empty() {
        return;
    }
    let bit = flip % (wire.len() * 8);
    wire[bit / 8] ^= 1 << (bit % 8);
    let bad = starts.iter().rposition(|&s| s <= bit / 8).unwrap_or(0);
    let mut off = 0;
    for (i, f) in frames.iter().enumerate() {
        match rx.open(&wire[off..]) {
            Ok(Some((plain, n))) => {
                assert!(i < bad, "tampered frame {i} opened");
                assert_eq!(&plain[..], *f);
                off += n;
            }
            Ok(None) | Err(_) => {
                assert!(i >= bad, "untouched frame {i} refused");
                return;
            }
        }
    }
    assert!(bad >= frames.len(), "the tampered frame was never refused");
});
