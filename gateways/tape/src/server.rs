//! The gateway's JSON-RPC 2.0 server: a Unix socket (mode 0600), one request object per line,
//! envelopes and error codes of `ferrite-rpc`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use ferrite_rpc::protocol::{self, Request, Response, RpcError};
use serde_json::Value;

use crate::gateway::Gateway;

/// Largest request line accepted.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// Binds the socket (replacing a stale one, refusing a live one).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!(
                "another gateway listens on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves clients until the listener fails.
pub fn serve(listener: UnixListener, gw: Arc<Gateway>) {
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                let gw = gw.clone();
                let r = std::thread::Builder::new()
                    .name("tape-rpc".into())
                    .spawn(move || serve_client(s, &gw));
                if let Err(e) = r {
                    log::warn!("RPC: cannot start a client thread: {e}");
                }
            }
            Err(e) => log::warn!("RPC accept: {e}"),
        }
    }
}

/// Answers one request line.
pub fn handle_line(gw: &Arc<Gateway>, line: &[u8]) -> Option<Response> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Some(Response::err(
                Value::Null,
                RpcError::new(protocol::PARSE_ERROR, format!("invalid JSON: {e}")),
            ))
        }
    };
    let req = match Request::from_value(value) {
        Ok(r) => r,
        Err((id, e)) => return Some(Response::err(id, e)),
    };
    let result = gw.call(&req.method, req.params);
    let id = req.id?;
    Some(match result {
        Ok(v) => Response::ok(id, v),
        Err(e) => Response::err(id, e),
    })
}

fn serve_client(stream: UnixStream, gw: &Arc<Gateway>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        match reader
            .by_ref()
            .take(MAX_REQUEST_BYTES + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() as u64 > MAX_REQUEST_BYTES {
            let e = RpcError::new(
                protocol::INVALID_REQUEST,
                format!("request larger than {MAX_REQUEST_BYTES} bytes"),
            );
            let _ = out.write_all(&Response::err(Value::Null, e).to_bytes());
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some(resp) = handle_line(gw, &line) {
            if out.write_all(&resp.to_bytes()).is_err() {
                return;
            }
        }
    }
}
