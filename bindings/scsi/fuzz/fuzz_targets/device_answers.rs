#![no_main]
//! What a drive or changer answers is untrusted: element status pages, INQUIRY data and sense
//! data must parse or fail with an error, never panic, and parsed descriptors stay in bounds.

use ferrite_scsi::cdb::parse_element_status;
use ferrite_scsi::{Inquiry, Sense};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(elements) = parse_element_status(data) {
        assert!(elements.len() <= data.len() / 12 + 1);
        for e in &elements {
            if let Some(b) = &e.barcode {
                assert!(!b.is_empty() && b.len() <= 32 * 3);
            }
        }
    }
    let _ = Inquiry::parse(data);
    let _ = Sense::parse(data);
});
