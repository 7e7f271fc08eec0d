//! NVMe/RDMA (NVMe over Fabrics RDMA transport binding): an RDMA CM listener, queue pairs
//! pinned to reactors, commands received into preposted capsule buffers, host data moved with
//! RDMA READ (host to controller) and RDMA WRITE (controller to host) through keyed SGLs, and
//! completions sent with SEND (or SEND with Invalidate when the host asks for it).
//!
//! No NVMe semantics live here: every command goes to the reactor's
//! [`ferrite_nvmf::PollGroup`], as NVMe/TCP's do. Every verbs call goes through
//! `ferrite-rdma` (`bindings/rdma`); this crate has no `unsafe`.
#![forbid(unsafe_code)]

mod acceptor;
mod conn;
mod group;
mod transport;
mod wr;

use std::sync::Arc;

use ferrite_nvmf::{Target, Transport, TransportError};
use ferrite_reactor::Spawner;

pub use transport::RdmaTransport;

/// The daemon's entry for NVMe/RDMA ([`ferrite_nvmf::StartTransport`]).
pub fn start(target: Arc<Target>, runtime: &Spawner) -> Result<Arc<dyn Transport>, TransportError> {
    Ok(Arc::new(RdmaTransport::start(target, runtime)?))
}
