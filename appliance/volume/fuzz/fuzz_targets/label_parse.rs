#![no_main]
//! Member labels from untrusted devices: never panic; whatever decodes re-encodes identically.

use ferrite_volume::MemberLabel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(label) = MemberLabel::decode(data) {
        let again = MemberLabel::decode(&label.encode()).expect("a decoded label re-encodes");
        assert_eq!(again, label);
    }
});
