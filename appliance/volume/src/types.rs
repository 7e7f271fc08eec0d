//! Small shared types: ids, kinds, name and size rules.

/// Identity of a volume inside its pool (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolId(pub u64);

impl std::fmt::Display for VolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vol{}", self.0)
    }
}

/// Whether clusters are allocated on first write (thin) or all at creation (thick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provisioning {
    Thin,
    Thick,
}

/// What a table in the pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    Volume,
    /// Read-only, frozen at creation.
    Snapshot,
    /// A writable volume with a parent snapshot.
    Clone,
}

impl VolumeKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            VolumeKind::Volume => 0,
            VolumeKind::Snapshot => 1,
            VolumeKind::Clone => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(VolumeKind::Volume),
            1 => Some(VolumeKind::Snapshot),
            2 => Some(VolumeKind::Clone),
            _ => None,
        }
    }
}

pub const MIN_CLUSTER: u64 = 64 << 10;
pub const MAX_CLUSTER: u64 = 64 << 20;
pub const DEFAULT_CLUSTER: u64 = 1 << 20;
pub const MAX_NAME: usize = 63;

/// Power of two, 64 KiB..=64 MiB, at least the block size.
pub fn cluster_size_valid(cluster: u64, block_size: u32) -> bool {
    cluster.is_power_of_two()
        && (MIN_CLUSTER..=MAX_CLUSTER).contains(&cluster)
        && cluster >= u64::from(block_size)
}

/// Pool and volume names: 1..=63 bytes of `[A-Za-z0-9._-]`, not starting with '.' or '-'.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("must be 1 to {MAX_NAME} bytes long"));
    }
    if name.starts_with(['.', '-']) {
        return Err("must not start with '.' or '-'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character {c:?} not allowed (use A-Z a-z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// Canonical text form of a UUID.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random RFC 4122 version-4 UUID.
pub fn random_uuid() -> [u8; 16] {
    let mut uuid: [u8; 16] = rand::random();
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_clusters() {
        assert!(check_name("vol-1.a_b").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(cluster_size_valid(1 << 20, 4096));
        assert!(!cluster_size_valid(32 << 10, 512));
        assert!(!cluster_size_valid(3 << 20, 512));
        assert!(!cluster_size_valid(128 << 20, 512));
        assert_eq!(
            uuid_string(&[0xab; 16]),
            "abababab-abab-abab-abab-abababababab"
        );
    }
}
