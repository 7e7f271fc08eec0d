#![no_main]
//! The JSON-RPC request parser of the control socket (`protocol::decode_stream`, what the
//! server runs on every read): never panics, consumes only whole values, and every request it
//! accepts has a string method and object params. The same bytes arriving in two reads give the
//! same requests when the first read ends between two values.

use ferrite_rpc::protocol::{decode_stream, Decoded, Request};
use ferrite_rpc::MAX_REQUEST_BYTES;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(buf: &[u8], d: &Decoded) {
    assert!(d.consumed <= buf.len());
    for r in &d.requests {
        match r {
            Ok(Request { params, id, .. }) => {
                assert!(params.is_object(), "params {params:?}");
                if let Some(id) = id {
                    assert!(id.is_number() || id.is_string() || id.is_null());
                }
            }
            Err((_, e)) => assert!(!e.message.is_empty()),
        }
    }
    if let Some(e) = &d.fatal {
        assert!(!e.message.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = decode_stream(data, MAX_REQUEST_BYTES);
    check(data, &whole);
    // A small limit: long unfinished values are refused, complete ones still decode.
    let small = decode_stream(data, 64);
    check(data, &small);
    // Re-decoding what was consumed yields the same requests (the server drains exactly that).
    if whole.fatal.is_none() && whole.consumed > 0 {
        let again = decode_stream(&data[..whole.consumed], MAX_REQUEST_BYTES);
        assert_eq!(again.requests, whole.requests);
        // Parse round trip of every accepted value.
        for r in whole.requests.iter().flatten() {
            let mut obj = serde_json::Map::new();
            obj.insert("jsonrpc".into(), Value::from("2.0"));
            obj.insert("method".into(), Value::from(r.method.clone()));
            obj.insert("params".into(), r.params.clone());
            if let Some(id) = &r.id {
                obj.insert("id".into(), id.clone());
            }
            let back = Request::from_value(Value::Object(obj)).expect("re-encoded request");
            assert_eq!(&back, r);
        }
    }
});
