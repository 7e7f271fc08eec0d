//! Which parts of a volume changed since one of its snapshots, from the cluster tables alone
//! (what incremental backups read instead of the whole volume).
//!
//! Two tables of the same pool map virtual cluster `vc` to the same physical cluster only
//! while that cluster is shared, and a shared cluster is never written in place (a write
//! copies it first), so equal entries mean equal content. Every entry that differs is
//! reported: one mapped in the newer table is read (`zero: false`); one unmapped in the newer
//! table (deallocated, or past the base's end) reads as zeroes (`zero: true`).

use serde::Serialize;

use crate::owner::Owner;
use crate::state::NONE;
use crate::{VolumeError, VolumeKind};

/// A run of changed clusters, in blocks of the pool's block size, clipped to the volume size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChangedExtent {
    pub lba: u64,
    pub blocks: u64,
    /// The newer volume reads zeroes here (nothing to read from it).
    pub zero: bool,
}

/// What changed between `base` (a snapshot) and `target` (a later snapshot or the volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeDiff {
    pub pool: String,
    pub base: String,
    pub target: String,
    pub cluster_size: u64,
    pub block_size: u32,
    /// Size of `target` in bytes (what a restore of it needs).
    pub size_bytes: u64,
    pub base_size_bytes: u64,
    /// Bytes of the non-zero extents (what a backup reads).
    pub changed_bytes: u64,
    pub zero_bytes: u64,
    pub extents: Vec<ChangedExtent>,
}

/// Runs of differing entries as `(first vc, count, zero)`, over `target`'s length. Entries past
/// the end of `base` count as changed.
pub fn diff_tables(base: &[u64], target: &[u64]) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (vc, &t) in target.iter().enumerate() {
        let b = base.get(vc).copied();
        if b == Some(t) {
            continue;
        }
        let zero = t == NONE;
        let vc = vc as u64;
        match out.last_mut() {
            Some((first, n, z)) if *z == zero && *first + *n == vc => *n += 1,
            _ => out.push((vc, 1, zero)),
        }
    }
    out
}

impl Owner {
    pub(crate) fn diff(&self, base: &str, target: &str) -> Result<VolumeDiff, VolumeError> {
        let st = &self.state;
        let find = |name: &str| {
            st.by_name(name)
                .cloned()
                .ok_or_else(|| VolumeError::NoSuchVolume(name.into()))
        };
        let b = find(base)?;
        let t = find(target)?;
        // A live base may still change under the diff; a snapshot cannot.
        if b.kind != VolumeKind::Snapshot {
            return Err(VolumeError::NotASnapshot(base.into()));
        }
        let bs = u64::from(self.shared.block_size);
        let cluster_blocks = st.cluster_size / bs;
        let size_blocks = t.size / bs;
        let mut changed = 0;
        let mut zero = 0;
        let extents = diff_tables(st.table(b.id), st.table(t.id))
            .into_iter()
            .filter_map(|(vc, n, z)| {
                let lba = vc * cluster_blocks;
                let blocks = (n * cluster_blocks).min(size_blocks.saturating_sub(lba));
                (blocks > 0).then_some(ChangedExtent {
                    lba,
                    blocks,
                    zero: z,
                })
            })
            .inspect(|e| {
                let bytes = e.blocks * bs;
                if e.zero {
                    zero += bytes;
                } else {
                    changed += bytes;
                }
            })
            .collect();
        Ok(VolumeDiff {
            pool: self.shared.name.clone(),
            base: b.name,
            target: t.name,
            cluster_size: st.cluster_size,
            block_size: self.shared.block_size,
            size_bytes: t.size,
            base_size_bytes: b.size,
            changed_bytes: changed,
            zero_bytes: zero,
            extents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_entries_become_runs() {
        let n = NONE;
        // vc: 0 same, 1-2 remapped, 3 deallocated, 4 newly mapped, 5 same unmapped, 6 past base.
        let base = [1, 2, 3, 4, n, n];
        let target = [1, 9, 8, n, 7, n, n];
        assert_eq!(
            diff_tables(&base, &target),
            vec![(1, 2, false), (3, 1, true), (4, 1, false), (6, 1, true)]
        );
        assert!(diff_tables(&target, &target).is_empty());
        // A shrunk target: only its own length counts.
        assert_eq!(diff_tables(&[1, 2, 3], &[1]), vec![]);
    }
}
