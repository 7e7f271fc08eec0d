//! What the RPC methods need from the process that hosts them. NVMe-oF configuration goes
//! straight to [`Target`]; the rest (opening backends, sockets, the configuration file format,
//! persistence) belongs to the daemon and is reached through this trait.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferrite_nvmf::Target;
use ferrite_reactor::ReactorStats;

use crate::protocol::RpcError;

/// A backend to create (`bdev_malloc_create`, `bdev_file_create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevSpec {
    Malloc {
        name: String,
        num_blocks: u64,
        block_size: u32,
    },
    File {
        name: String,
        filename: PathBuf,
        /// None: the file's logical block size (4096 when it cannot be found).
        block_size: Option<u32>,
        /// Bytes; required to create a missing file, ignored when it exists.
        size: Option<u64>,
    },
}

impl BdevSpec {
    pub fn name(&self) -> &str {
        match self {
            BdevSpec::Malloc { name, .. } | BdevSpec::File { name, .. } => name,
        }
    }
}

/// How a bdev was made, for `bdev_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevOrigin {
    /// "malloc", "file", "null".
    pub kind: String,
    pub filename: Option<PathBuf>,
}

pub trait Appliance: Send + Sync {
    fn target(&self) -> &Arc<Target>;

    /// Opens the backend and registers it with the target.
    fn create_bdev(&self, spec: BdevSpec) -> Result<(), RpcError>;

    /// Unregisters a bdev no namespace uses (else `BUSY`) and closes it.
    fn delete_bdev(&self, name: &str) -> Result<(), RpcError>;

    fn bdev_origin(&self, name: &str) -> Option<BdevOrigin>;

    /// Starts accepting NVMe/TCP connections on `addr` and publishes it in discovery.
    fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, RpcError>;

    /// Stops accepting on `addr`; established connections stay.
    fn stop_listening(&self, addr: SocketAddr) -> Result<(), RpcError>;

    /// Busy/idle accounting of every reactor.
    fn reactor_stats(&self) -> Vec<ReactorStats>;

    /// Open transport connections (queue pairs) per reactor.
    fn connections(&self) -> Vec<usize>;

    /// The running configuration as a configuration file the daemon reproduces exactly.
    fn save_config(&self) -> Result<String, RpcError>;

    /// Called after every accepted change: persists the state when the daemon keeps one.
    fn persist(&self) -> Result<(), RpcError>;
}
