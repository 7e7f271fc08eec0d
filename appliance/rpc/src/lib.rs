//! The JSON-RPC 2.0 control plane of `ferrited`: a Unix-socket server ([`RpcServer`]), the
//! method table ([`methods::METHODS`], SPDK names and parameters), typed errors
//! ([`RpcError`]) and a blocking [`Client`] for `ferritectl` and tests. The reference of every
//! method is docs/rpc.md.
//!
//! The server runs on its own threads, never on a reactor: NVMe-oF changes go to the
//! [`ferrite_nvmf::Target`], which publishes a new configuration snapshot the reactors pick up;
//! everything else goes through the daemon's [`Appliance`] implementation.
#![forbid(unsafe_code)]

mod appliance;
pub mod client;
pub mod journals;
pub mod methods;
pub mod metrics;
pub mod protocol;
pub mod remote;
pub mod replication;
mod server;
mod stats;
pub mod volumes;

pub use appliance::{Appliance, BdevOrigin, BdevSpec};
pub use client::{Client, ClientError};
pub use protocol::{Request, Response, RpcError};
pub use server::{
    default_socket_path, RpcServer, ServerError, IDLE_TIMEOUT, MAX_CLIENTS, MAX_REQUEST_BYTES,
};
pub use stats::StatsHistory;
