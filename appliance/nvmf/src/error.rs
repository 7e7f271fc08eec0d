//! Errors of configuration changes on the target (not NVMe statuses: those go on the wire).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NvmfError {
    #[error("invalid NQN {nqn:?}: {reason}")]
    InvalidNqn { nqn: String, reason: String },
    #[error("subsystem {0} already exists")]
    SubsystemExists(String),
    #[error("no subsystem {0}")]
    NoSuchSubsystem(String),
    #[error("subsystem {nqn} already has namespace {nsid}")]
    NamespaceInUse { nqn: String, nsid: u32 },
    #[error("subsystem {nqn} has no namespace {nsid}")]
    NoSuchNamespace { nqn: String, nsid: u32 },
    #[error("invalid namespace id {0}: must be 1..={max}", max = crate::MAX_NSID)]
    InvalidNsid(u32),
    #[error("subsystem {nqn} has no free namespace id")]
    NamespacesFull { nqn: String },
    #[error("bdev {0} already exists")]
    BdevExists(String),
    #[error("no bdev {0}")]
    NoSuchBdev(String),
    #[error("bdev {bdev} is in use by subsystem {nqn} namespace {nsid}")]
    BdevInUse {
        bdev: String,
        nqn: String,
        nsid: u32,
    },
    #[error("host {host} already allowed on {nqn}")]
    HostExists { nqn: String, host: String },
    #[error("host {host} is not on the allowed list of {nqn}")]
    NoSuchHost { nqn: String, host: String },
    #[error("invalid {field}: {reason}")]
    InvalidParameter { field: &'static str, reason: String },
    #[error("the discovery subsystem cannot be changed this way")]
    DiscoveryReadOnly,
}
