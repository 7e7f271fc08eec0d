//! Fuzz the NVMe/RDMA wire formats: RDMA_CM connect, accept and reject private data, and keyed
//! SGL descriptors (parse, then re-encode must give the same descriptor).
#![no_main]

use ferrite_nvme::rdma::{parse_accept, parse_reject, CmRequest, KeyedSgl};
use ferrite_nvme::Command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(req) = CmRequest::parse(input) {
        assert_eq!(req.recfmt, 0);
        assert_eq!(CmRequest::parse(&req.encode()), Ok(req));
    }
    let _ = parse_accept(input);
    let _ = parse_reject(input);
    if let Ok(cmd) = Command::parse(input) {
        if let Some(k) = KeyedSgl::parse(&cmd.dptr) {
            assert_eq!(KeyedSgl::parse(&k.descriptor()), Some(k));
            assert_eq!(k.descriptor(), cmd.dptr);
        }
    }
});
