//! The status endpoint: a Unix socket that answers each connection with one JSON document.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// The latest status, shared with the status thread.
pub type Shared = Arc<Mutex<Value>>;

/// Serves `status` on `path` from a background thread.
pub fn serve(path: &Path, status: Shared) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let text = status
                    .lock()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|p| p.into_inner().to_string());
                let _ = conn.write_all(text.as_bytes());
            }
        })?;
    Ok(())
}

/// Reads the status from `path` (the `status` subcommand, tests).
pub fn read(path: &Path) -> std::io::Result<Value> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text)?;
    serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
