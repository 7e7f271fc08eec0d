#![no_main]
//! Authentication Send payloads (untrusted host bytes) into the parser and the controller.

use std::sync::Arc;

use ferrite_auth::{AuthPolicy, ControllerAuth, DhGroup, DhchapKey, HashId, HostAuth, HostKeys, Message};
use libfuzzer_sys::fuzz_target;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000000";
const SUB: &str = "nqn.2026-01.io.ferrite:fuzz";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(m) = Message::parse(rest) {
                assert_eq!(Message::parse(&m.encode()).expect("own encoding parses"), m);
            }
        }
        1 => {
            let key = DhchapKey::from_secret(&[7u8; 32], None).expect("32 bytes");
            let keys = HostKeys { host: key.clone(), ctrl: Some(key.clone()) };
            // The null group keeps each run cheap; DH values still reach the length checks.
            let policy = AuthPolicy { digests: vec![HashId::Sha256], dhgroups: vec![DhGroup::Null] };
            let mut c = ControllerAuth::new(HOST, SUB, Arc::new(keys), Arc::new(policy));
            let h = HostAuth::new(HOST, SUB, key, None, 0);
            c.send(&h.negotiate());
            let _ = c.receive();
            // The fuzzer's bytes, split at 0xFF 0xFF into several sends.
            for chunk in rest.split(|&b| b == 0xff).filter(|c| !c.is_empty()) {
                c.send(chunk);
                let out = c.receive();
                Message::parse(&out).expect("the controller's own messages parse");
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(k) = DhchapKey::parse(text) {
                    assert_eq!(DhchapKey::parse(&k.to_text()).expect("round trip"), k);
                }
            }
        }
    }
});
