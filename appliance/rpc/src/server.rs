//! The Unix-socket server: an accept thread and one thread per client connection, all off the
//! reactors. Method calls are serialized (one change at a time, persisted in order); the
//! reactors see changes through the target's published configuration.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::appliance::Appliance;
use crate::methods;
use crate::protocol::{decode_stream, Request, Response, RpcError, INVALID_REQUEST};

/// Largest request accepted; a client sending more gets `INVALID_REQUEST` and is disconnected.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Clients served at once; more are told to retry and disconnected.
pub const MAX_CLIENTS: usize = 16;
/// A client that sends nothing for this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot create {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is in use by a running ferrited (stop it, or pass another --rpc-socket)")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ServerError {
    /// Another daemon answers on the socket.
    pub fn is_in_use(&self) -> bool {
        matches!(self, ServerError::InUse { .. })
    }
}

/// The default socket: `/run/ferrite/ferrited.sock` for root, else
/// `$XDG_RUNTIME_DIR/ferrite/ferrited.sock` (or `/tmp/ferrite-UID/ferrited.sock` without one).
pub fn default_socket_path() -> PathBuf {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid == 0 {
        return PathBuf::from("/run/ferrite/ferrited.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("ferrite/ferrited.sock"),
        _ => PathBuf::from(format!("/tmp/ferrite-{uid}/ferrited.sock")),
    }
}

/// A running server; dropping it stops accepting (in-flight calls finish) and removes the
/// socket file.
#[derive(Debug)]
pub struct RpcServer {
    path: PathBuf,
    inode: u64,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    app: Arc<dyn Appliance>,
    /// One method at a time: changes and their persistence stay in order.
    dispatch: Mutex<()>,
    clients: AtomicUsize,
    stop: Arc<AtomicBool>,
}

impl RpcServer {
    /// Binds `path` (mode 0600; its directory is created 0700 when missing). A stale socket
    /// left by a dead daemon is replaced; a live one is `ServerError::InUse`.
    pub fn start(path: &Path, app: Arc<dyn Appliance>) -> Result<RpcServer, ServerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|source| ServerError::CreateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ServerError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse {
                    path: path.to_path_buf(),
                });
            }
            log::info!("removing stale RPC socket {}", path.display());
            let _ = std::fs::remove_file(path);
        }
        let bind_err = |source| ServerError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        let inode = std::fs::metadata(path).map_err(bind_err)?.ino();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            app,
            dispatch: Mutex::new(()),
            clients: AtomicUsize::new(0),
            stop: Arc::clone(&stop),
        });
        let accept = std::thread::Builder::new()
            .name("rpc-accept".into())
            .spawn(move || accept_loop(listener, shared))
            .map_err(bind_err)?;
        log::info!("JSON-RPC listening on {}", path.display());
        Ok(RpcServer {
            path: path.to_path_buf(),
            inode,
            stop,
            accept: Some(accept),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket (if it is still ours).
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("RPC accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if shared.clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            let busy = RpcError::new(
                INVALID_REQUEST,
                format!("too many RPC clients (at most {MAX_CLIENTS}); retry"),
            );
            let _ = stream.write_all(&Response::err(Value::Null, busy).to_bytes());
            continue;
        }
        let s = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("rpc-client".into())
            .spawn(move || {
                serve_client(stream, &s);
                s.clients.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            log::warn!("RPC: cannot start a client thread: {e}");
        }
    }
}

/// Reads back-to-back JSON values and answers each. A syntax error or an oversized request is
/// answered and ends the connection (the stream cannot be resynchronized).
fn serve_client(mut stream: UnixStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        buf.extend_from_slice(&chunk[..n]);
        let decoded = decode_stream(&buf, MAX_REQUEST_BYTES);
        for request in decoded.requests {
            if let Some(reply) = handle_request(request, shared) {
                if stream.write_all(&reply.to_bytes()).is_err() {
                    return;
                }
            }
        }
        buf.drain(..decoded.consumed);
        if let Some(err) = decoded.fatal {
            let _ = stream.write_all(&Response::err(Value::Null, err).to_bytes());
            return;
        }
    }
}

/// Answers one request; `None` for a notification (no `id`).
fn handle_request(
    request: Result<Request, (Value, RpcError)>,
    shared: &Shared,
) -> Option<Response> {
    let req = match request {
        Ok(r) => r,
        Err((id, e)) => return Some(Response::err(id, e)),
    };
    let result = {
        let _one_at_a_time = shared.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        methods::dispatch(shared.app.as_ref(), &req.method, req.params)
    };
    if let Err(e) = &result {
        log::info!("RPC {} failed: {}", req.method, e.message);
    } else {
        log::debug!("RPC {} ok", req.method);
    }
    let id = req.id?;
    Some(match result {
        Ok(v) => Response::ok(id, v),
        Err(e) => Response::err(id, e),
    })
}
