//! Fuzz the gateway frame decoder: any byte stream, decoded frame by frame
//! as a reader would, must either decode, ask for more, or be refused with
//! an error; whatever decodes must re-encode to the very same bytes.
#![no_main]

use ferrite_gateway_protocol::{decode, frame_len, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut rest = input;
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
