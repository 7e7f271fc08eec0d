//! The one RPC client module: connects, calls, and turns every failure into a message that
//! says what to do.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use ferrite_rpc::protocol::{ALREADY_EXISTS, BUSY, INVALID_PARAMS, METHOD_NOT_FOUND, NOT_FOUND};
use ferrite_rpc::{Client, ClientError};
use serde_json::Value;

pub struct Ctl {
    socket: PathBuf,
    timeout: Duration,
}

impl Ctl {
    pub fn new(socket: Option<PathBuf>, timeout: Duration) -> Ctl {
        Ctl {
            socket: socket.unwrap_or_else(ferrite_rpc::default_socket_path),
            timeout,
        }
    }

    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        let mut client =
            Client::connect(&self.socket, self.timeout).map_err(|e| explain(e, method))?;
        client.call(method, params).map_err(|e| explain(e, method))
    }
}

fn explain(e: ClientError, method: &str) -> anyhow::Error {
    match e {
        ClientError::NoDaemon { path, source } => anyhow!(
            "cannot reach ferrited: {source}; is ferrited running? looked at {} (use --socket or FERRITE_RPC_SOCKET)",
            path.display()
        ),
        ClientError::Rpc(err) => {
            let hint = match err.code {
                NOT_FOUND => " (list what exists with `ferritectl subsystem list` / `bdev list`)",
                ALREADY_EXISTS => " (pick another name or id, or remove the existing one first)",
                BUSY => " (remove the namespaces that use it first)",
                METHOD_NOT_FOUND => " (ferrited and ferritectl versions differ?)",
                INVALID_PARAMS => "",
                _ => "",
            };
            anyhow!("{method}: {}{hint}", err.message)
        }
        ClientError::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.kind() == std::io::ErrorKind::TimedOut => {
            anyhow!("{method}: ferrited did not answer in time ({io})")
        }
        other => anyhow!("{method}: {other}"),
    }
}
