#![no_main]
//! The request-head parser of the Prometheus endpoint (`ferrite_rpc::metrics::http`), which
//! reads whatever a TCP client sends: never panics, an accepted request has a path starting
//! with `/` and no query, and the answer's status follows from the parse.

use ferrite_rpc::metrics::http::{parse_request, respond, HttpError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = parse_request(data);
    let (status, _, body) = respond(data, || "m 1\n".to_string());
    match &parsed {
        Ok(r) => {
            assert!(r.path.starts_with('/') && !r.path.contains('?'));
            let expected = if r.path == "/metrics" || r.path == "/" { 200 } else { 404 };
            assert_eq!(status, expected);
        }
        Err(HttpError::Method(m)) => {
            assert!(!m.is_empty() && m != "GET" && m != "HEAD");
            assert_eq!(status, 405);
        }
        Err(_) => assert_eq!(status, 400),
    }
    assert!(!body.is_empty());
});
