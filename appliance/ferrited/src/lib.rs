//! The daemon's wiring: configuration file, embedded default, start-up and shutdown, the
//! control plane's daemon side ([`Control`]) and `--state-dir` persistence. The binaries only
//! parse flags and call [`Daemon::start_with`] / the RPC client.
#![forbid(unsafe_code)]

pub mod auth_config;
mod backends;
pub mod caches;
pub mod config;
mod control;
mod daemon;
pub mod journals;
mod nvme_pcie;
mod pools;
pub mod qos;
mod remotes;
pub mod replication;
pub mod state;
pub mod transports;

pub use config::{
    BdevConfig, Config, ConfigError, ListenerConfig, NamespaceConfig, PoolConfig, SubsystemConfig,
};
pub use control::Control;
pub use daemon::{Daemon, DaemonOptions, RpcSocket};
pub use state::{StateDir, StateError};
