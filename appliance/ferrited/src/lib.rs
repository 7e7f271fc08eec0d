//! The daemon's wiring: configuration file, embedded default, start-up and shutdown. The
//! binary only parses flags and calls [`Daemon::start`].
#![forbid(unsafe_code)]

pub mod config;
mod daemon;

pub use config::{BdevConfig, Config, ConfigError, NamespaceConfig, SubsystemConfig};
pub use daemon::Daemon;
