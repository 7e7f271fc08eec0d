//! Errors of the mapping layer. Each user-visible refusal has its own variant naming the thing.

use ferrite_bdev::BdevError;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no volume or snapshot named {0:?}")]
    NoSuchVolume(String),
    #[error("a volume or snapshot named {0:?} already exists")]
    Exists(String),
    #[error("pool {pool} is full: {needed} clusters needed, {free} free")]
    PoolFull {
        pool: String,
        needed: u64,
        free: u64,
    },
    #[error("pool {pool}: metadata area full ({refs} cluster references, room for {max})")]
    MetadataFull { pool: String, refs: u64, max: u64 },
    #[error("device {device} is too small for a pool: {size} bytes, at least {needed} needed")]
    TooSmall {
        device: String,
        size: u64,
        needed: u64,
    },
    #[error("device {device} is already a member of pool {pool}")]
    InUse { device: String, pool: String },
    #[error("device {device}: damaged label: {reason}")]
    DamagedLabel { device: String, reason: String },
    #[error(
        "volume {volume}: {clusters} clusters hold data beyond the new size (use force to discard them)"
    )]
    HasData { volume: String, clusters: u64 },
    #[error("{0:?} is not a snapshot")]
    NotASnapshot(String),
    #[error("{0:?} is not a clone")]
    NotAClone(String),
    #[error("{0:?} is read-only (a snapshot)")]
    ReadOnly(String),
    #[error("snapshot {snapshot:?} has clones: {clones:?}")]
    HasClones {
        snapshot: String,
        clones: Vec<String>,
    },
    #[error("pool {pool} still holds {volumes} volumes (use force to destroy it anyway)")]
    NotEmpty { pool: String, volumes: usize },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid size {size}: {reason}")]
    InvalidSize { size: u64, reason: String },
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot start the {what}: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pool {pool}: members do not form a pool: {reason}")]
    BadMembers { pool: String, reason: String },
    #[error("pool {pool}: metadata unreadable: {reason}")]
    Metadata { pool: String, reason: String },
    #[error("pool {pool}: consistency check failed: {}", errors.join("; "))]
    Inconsistent { pool: String, errors: Vec<String> },
    #[error("pool {pool} is offline")]
    Offline { pool: String },
    #[error(
        "pool {pool}: member {device} did not answer within {timeout:?} (the pool is offline)"
    )]
    MemberTimeout {
        pool: String,
        device: String,
        timeout: std::time::Duration,
    },
    #[error("pool {pool}: too many requests queued for its metadata owner (try again)")]
    Busy { pool: String },
    #[error("cannot place the metadata owner on its reactor: {0}")]
    Placement(#[source] ferrite_reactor::ReactorError),
    #[error("I/O error: {0}")]
    Io(#[from] BdevError),
}

impl VolumeError {
    /// True when the same call may succeed later without the caller changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            VolumeError::Io(e) => e.is_retryable(),
            VolumeError::Busy { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_things() {
        let e = VolumeError::HasData {
            volume: "db".into(),
            clusters: 3,
        };
        assert!(e.to_string().contains("3 clusters") && e.to_string().contains("force"));
        let e = VolumeError::InUse {
            device: "nvme0n1".into(),
            pool: "tank".into(),
        };
        assert!(e.to_string().contains("tank"));
        assert!(VolumeError::Io(BdevError::QueueFull).is_retryable());
        assert!(!VolumeError::NoSuchVolume("x".into()).is_retryable());
    }
}
