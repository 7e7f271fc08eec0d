//! A blocking client: one connection, one request at a time (what `ferritectl` and tests use).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use thiserror::Error;

use crate::protocol::{Response, RpcError};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}; is ferrited running? looked at {path}")]
    NoDaemon {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied on {path}: the socket is mode 0600, run as the user that started ferrited")]
    PermissionDenied { path: PathBuf },
    #[error("{0}")]
    Rpc(RpcError),
    #[error("talking to ferrited: {0}")]
    Io(#[from] std::io::Error),
    #[error("ferrited sent an invalid response: {0}")]
    Protocol(String),
}

#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| {
            if source.kind() == ErrorKind::PermissionDenied {
                ClientError::PermissionDenied {
                    path: path.to_path_buf(),
                }
            } else {
                ClientError::NoDaemon {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            next_id: 1,
        })
    }

    /// Calls `method`; a JSON-RPC error comes back as `ClientError::Rpc`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if !params.is_null() {
            req["params"] = params;
        }
        let mut bytes =
            serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        self.stream.write_all(&bytes)?;
        let resp = self.read_response()?;
        if resp.id != json!(id) {
            return Err(ClientError::Protocol(format!(
                "response id {} does not match request id {id}",
                resp.id
            )));
        }
        match (resp.result, resp.error) {
            (_, Some(e)) => Err(ClientError::Rpc(e)),
            (Some(v), None) => Ok(v),
            (None, None) => Err(ClientError::Protocol("neither result nor error".into())),
        }
    }

    /// Sends raw bytes (tests of malformed input) and reads one response.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<Response, ClientError> {
        self.stream.write_all(bytes)?;
        self.read_response()
    }

    fn read_response(&mut self) -> Result<Response, ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let mut values =
                serde_json::Deserializer::from_slice(&self.buf).into_iter::<Response>();
            match values.next() {
                Some(Ok(resp)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    return Ok(resp);
                }
                Some(Err(e)) if !e.is_eof() => return Err(ClientError::Protocol(e.to_string())),
                _ => {}
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Protocol(
                    "ferrited closed the connection without answering".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
