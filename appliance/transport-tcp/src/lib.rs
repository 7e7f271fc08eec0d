//! NVMe/TCP (NVMe over Fabrics TCP transport binding 1.0): listeners, per-reactor socket groups,
//! PDU framing, R2T/H2CData and C2HData data movement, header and data digests.
//!
//! No NVMe semantics live here: every command capsule goes to the reactor's
//! [`ferrite_nvmf::PollGroup`], which chooses statuses and data plans; this crate moves the bytes.
#![forbid(unsafe_code)]

mod conn;
mod group;
mod listener;
mod transport;

pub use transport::{TcpOptions, TcpTransport, TcpTransportError};

use std::sync::Arc;

use ferrite_nvmf::{Target, Transport, TransportError};
use ferrite_reactor::Spawner;

/// The daemon's entry for NVMe/TCP ([`ferrite_nvmf::StartTransport`]): default options.
pub fn start(target: Arc<Target>, runtime: &Spawner) -> Result<Arc<dyn Transport>, TransportError> {
    Ok(Arc::new(TcpTransport::start_on(
        target,
        runtime,
        TcpOptions::default(),
    )?))
}
