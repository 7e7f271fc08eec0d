//! JSON-RPC 2.0 envelopes and error codes.
//!
//! Requests arrive as JSON objects back to back on a stream (SPDK's framing; a newline between
//! them is allowed). Responses are written the same way, each followed by a newline.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// Invalid JSON was received.
pub const PARSE_ERROR: i32 = -32700;
/// The JSON is not a valid request object (or is too large).
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
/// Missing, unknown or mistyped parameters, or values the target refuses.
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;
/// Something with that name already exists (SPDK uses -errno: -EEXIST).
pub const ALREADY_EXISTS: i32 = -17;
/// The named object does not exist (-ENODEV, as SPDK).
pub const NOT_FOUND: i32 = -19;
/// The object is in use (-EBUSY).
pub const BUSY: i32 = -16;
/// The pool has no room left (-ENOSPC).
pub const NO_SPACE: i32 = -28;

/// An error as it goes on the wire: `{"code": .., "message": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(INTERNAL_ERROR, message)
    }

    pub fn not_found(message: impl Into<String>) -> RpcError {
        RpcError::new(NOT_FOUND, message)
    }

    /// The name of the code, for messages and docs.
    pub fn code_name(code: i32) -> &'static str {
        match code {
            PARSE_ERROR => "parse error",
            INVALID_REQUEST => "invalid request",
            METHOD_NOT_FOUND => "method not found",
            INVALID_PARAMS => "invalid params",
            INTERNAL_ERROR => "internal error",
            ALREADY_EXISTS => "already exists",
            NOT_FOUND => "not found",
            BUSY => "busy",
            NO_SPACE => "no space",
            _ => "error",
        }
    }
}

impl From<ferrite_nvmf::NvmfError> for RpcError {
    fn from(e: ferrite_nvmf::NvmfError) -> RpcError {
        use ferrite_nvmf::NvmfError as E;
        let code = match &e {
            E::SubsystemExists(_) | E::BdevExists(_) | E::HostExists { .. } => ALREADY_EXISTS,
            E::NamespaceInUse { .. } => ALREADY_EXISTS,
            E::NoSuchSubsystem(_)
            | E::NoSuchNamespace { .. }
            | E::NoSuchBdev(_)
            | E::NoSuchHost { .. } => NOT_FOUND,
            E::BdevInUse { .. } => BUSY,
            E::InvalidNqn { .. }
            | E::InvalidNsid(_)
            | E::NamespacesFull { .. }
            | E::InvalidParameter { .. }
            | E::DiscoveryReadOnly => INVALID_PARAMS,
        };
        RpcError::new(code, e.to_string())
    }
}

impl From<ferrite_volume::VolumeError> for RpcError {
    fn from(e: ferrite_volume::VolumeError) -> RpcError {
        use ferrite_volume::VolumeError as E;
        let code = match &e {
            E::NoSuchVolume(_) => NOT_FOUND,
            E::Exists(_) => ALREADY_EXISTS,
            E::PoolFull { .. } | E::MetadataFull { .. } => NO_SPACE,
            E::InUse { .. }
            | E::HasClones { .. }
            | E::NotEmpty { .. }
            | E::HasData { .. }
            | E::Busy { .. } => BUSY,
            E::TooSmall { .. }
            | E::DamagedLabel { .. }
            | E::NotASnapshot(_)
            | E::NotAClone(_)
            | E::ReadOnly(_)
            | E::InvalidName { .. }
            | E::InvalidSize { .. }
            | E::InvalidConfig(_)
            | E::BadMembers { .. } => INVALID_PARAMS,
            _ => INTERNAL_ERROR,
        };
        RpcError::new(code, e.to_string())
    }
}

/// Request id: a number, a string or null (notifications without an id get no response).
pub type Id = Value;

/// A request after envelope validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Id>,
    pub method: String,
    pub params: Value,
}

impl Request {
    /// Validates a decoded JSON value as a JSON-RPC 2.0 request. On failure returns the id to
    /// answer with (null when unknown) and the error.
    pub fn from_value(value: Value) -> Result<Request, (Id, RpcError)> {
        let Value::Object(mut obj) = value else {
            let what = if value.is_array() {
                "batch requests are not supported: send one request object at a time"
            } else {
                "a request must be a JSON object"
            };
            return Err((Value::Null, RpcError::new(INVALID_REQUEST, what)));
        };
        let id = obj.remove("id");
        let answer_id = id.clone().unwrap_or(Value::Null);
        if let Some(id) = &id {
            if !(id.is_number() || id.is_string() || id.is_null()) {
                return Err((
                    Value::Null,
                    RpcError::new(INVALID_REQUEST, "id must be a number, a string or null"),
                ));
            }
        }
        match obj.get("jsonrpc") {
            Some(Value::String(v)) if v == "2.0" => {}
            _ => {
                return Err((
                    answer_id,
                    RpcError::new(INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""),
                ))
            }
        }
        let method = match obj.remove("method") {
            Some(Value::String(m)) => m,
            _ => {
                return Err((
                    answer_id,
                    RpcError::new(INVALID_REQUEST, "\"method\" must be a string"),
                ))
            }
        };
        let params = match obj.remove("params") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(p @ Value::Object(_)) => p,
            Some(_) => {
                return Err((
                    answer_id,
                    RpcError::new(
                        INVALID_PARAMS,
                        "params must be an object (named parameters, as SPDK)",
                    ),
                ))
            }
        };
        Ok(Request { id, method, params })
    }
}

/// What one pass over a client's received bytes found (see [`decode_stream`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Every complete JSON value in order, validated as a request, or the id and error to
    /// answer it with.
    pub requests: Vec<Result<Request, (Id, RpcError)>>,
    /// Bytes the complete values used; the rest is the start of a value still arriving.
    pub consumed: usize,
    /// Invalid JSON, or an unfinished value longer than the limit: answer this after the
    /// requests and close the connection (the stream cannot be resynchronized).
    pub fatal: Option<RpcError>,
}

/// The request parser of the server: splits back-to-back JSON values off `buf` and validates
/// each as a request. An incomplete value at the end waits for more bytes unless it is already
/// longer than `max_pending` bytes.
pub fn decode_stream(buf: &[u8], max_pending: usize) -> Decoded {
    let mut out = Decoded {
        requests: Vec::new(),
        consumed: 0,
        fatal: None,
    };
    let mut values = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    loop {
        match values.next() {
            None => {
                out.consumed = values.byte_offset();
                break;
            }
            Some(Ok(value)) => {
                out.consumed = values.byte_offset();
                out.requests.push(Request::from_value(value));
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => {
                out.fatal = Some(RpcError::new(PARSE_ERROR, format!("invalid JSON: {e}")));
                break;
            }
        }
    }
    if out.fatal.is_none() && buf.len() - out.consumed > max_pending {
        out.fatal = Some(RpcError::new(
            INVALID_REQUEST,
            format!("request larger than {max_pending} bytes"),
        ));
    }
    out
}

/// A response envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
    pub id: Id,
}

impl Response {
    pub fn ok(id: Id, result: Value) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            result: Some(result),
            error: None,
            id,
        }
    }

    pub fn err(id: Id, error: RpcError) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            result: None,
            error: Some(error),
            id,
        }
    }

    /// The bytes to write: the JSON text and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_else(|e| {
            // Only non-string map keys can fail, and we never build those.
            format!(
                r#"{{"jsonrpc":"2.0","error":{{"code":{INTERNAL_ERROR},"message":"cannot encode response: {e}"}},"id":null}}"#
            )
            .into_bytes()
        });
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_are_validated() {
        let ok = Request::from_value(json!({"jsonrpc":"2.0","id":1,"method":"bdev_list"}))
            .expect("valid");
        assert_eq!(ok.method, "bdev_list");
        assert_eq!(ok.params, json!({}));
        let (id, e) =
            Request::from_value(json!({"jsonrpc":"1.0","id":7,"method":"x"})).expect_err("version");
        assert_eq!((id, e.code), (json!(7), INVALID_REQUEST));
        let (_, e) = Request::from_value(json!([1, 2])).expect_err("batch");
        assert_eq!(e.code, INVALID_REQUEST);
        let (_, e) = Request::from_value(json!({"jsonrpc":"2.0","id":1,"method":3}))
            .expect_err("method type");
        assert_eq!(e.code, INVALID_REQUEST);
        let (_, e) = Request::from_value(json!({"jsonrpc":"2.0","id":1,"method":"m","params":[1]}))
            .expect_err("positional params");
        assert_eq!(e.code, INVALID_PARAMS);
        let (_, e) = Request::from_value(json!({"jsonrpc":"2.0","id":{},"method":"m"}))
            .expect_err("object id");
        assert_eq!(e.code, INVALID_REQUEST);
    }

    #[test]
    fn streams_split_into_requests() {
        let a = br#"{"jsonrpc":"2.0","id":1,"method":"a"}"#;
        let mut buf = a.to_vec();
        buf.extend_from_slice(b"\n[1]\n{\"jsonrpc\":\"2.0\",\"id\":2,\"met");
        let d = decode_stream(&buf, 1 << 20);
        assert_eq!(d.requests.len(), 2, "{d:?}");
        assert_eq!(d.requests[0].as_ref().map(|r| r.method.as_str()), Ok("a"));
        assert!(d.requests[1].is_err(), "a batch is refused");
        assert_eq!(d.fatal, None);
        // The unfinished third request waits for more bytes, unless it is already too long.
        assert_eq!(&buf[d.consumed..], b"\n{\"jsonrpc\":\"2.0\",\"id\":2,\"met");
        let d = decode_stream(&buf, 8);
        assert_eq!(d.fatal.map(|e| e.code), Some(INVALID_REQUEST));
        let d = decode_stream(b"{\"a\":1} }", 1 << 20);
        assert_eq!(d.requests.len(), 1);
        assert_eq!(d.fatal.map(|e| e.code), Some(PARSE_ERROR));
    }

    #[test]
    fn nvmf_errors_map_to_codes() {
        let e: RpcError = ferrite_nvmf::NvmfError::NoSuchSubsystem("nqn.x".into()).into();
        assert_eq!(e.code, NOT_FOUND);
        assert!(e.message.contains("nqn.x"));
        let e: RpcError = ferrite_nvmf::NvmfError::BdevInUse {
            bdev: "b".into(),
            nqn: "n".into(),
            nsid: 1,
        }
        .into();
        assert_eq!(e.code, BUSY);
    }
}
