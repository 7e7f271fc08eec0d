//! Incremental backups: which extents to read (from ferrited's `snapshot_diff`, the mapping
//! layer's cluster tables, not a scan of the data), how they become tape blocks, and the chain
//! of jobs a restore replays (the full backup, then every incremental in order).

use std::path::Path;
use std::time::Duration;

use ferrite_rpc::{Client, ClientError};
use serde::Deserialize;
use serde_json::json;

use crate::catalog::{Catalog, JobRow, JobState};
use crate::error::TapeError;

/// Longest chain of incrementals a restore follows (a loop in a damaged catalog ends here).
pub const MAX_CHAIN: usize = 1000;

/// What an incremental backup reads and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremental {
    /// The job it applies on top of.
    pub base_job: u64,
    /// `(offset, length)` byte ranges to read, ascending and disjoint.
    pub data: Vec<(u64, u64)>,
    /// `(offset, length)` byte ranges that read zeroes in the source.
    pub zero: Vec<(u64, u64)>,
    /// Size of the source the diff was computed for.
    pub source_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Extent {
    lba: u64,
    blocks: u64,
    zero: bool,
}

/// The part of ferrited's `snapshot_diff` answer the gateway uses.
#[derive(Debug, Deserialize)]
struct Diff {
    block_size: u32,
    size_bytes: u64,
    extents: Vec<Extent>,
}

impl Incremental {
    /// From a `snapshot_diff` answer (docs/rpc.md).
    pub fn from_diff(base_job: u64, diff: serde_json::Value) -> Result<Incremental, TapeError> {
        let d: Diff = serde_json::from_value(diff)
            .map_err(|e| TapeError::Invalid(format!("ferrited's snapshot_diff answer: {e}")))?;
        let bs = u64::from(d.block_size);
        let mut inc = Incremental {
            base_job,
            data: Vec::new(),
            zero: Vec::new(),
            source_bytes: d.size_bytes,
        };
        for e in d.extents {
            let r = (e.lba * bs, e.blocks * bs);
            if e.zero {
                inc.zero.push(r);
            } else {
                inc.data.push(r);
            }
        }
        Ok(inc)
    }

    /// Asks ferrited (JSON-RPC socket `socket`) what changed in `target` since `base`.
    pub fn fetch(
        socket: &Path,
        base_job: u64,
        base: &str,
        target: &str,
    ) -> Result<Incremental, TapeError> {
        let mut c = Client::connect(socket, Duration::from_secs(60))
            .map_err(|e| TapeError::Invalid(format!("appliance socket: {e}")))?;
        let d = c
            .call("snapshot_diff", json!({"base": base, "target": target}))
            .map_err(|e| match e {
                ClientError::Rpc(r) => {
                    TapeError::Invalid(format!("snapshot_diff {base} -> {target}: {}", r.message))
                }
                other => TapeError::Invalid(format!("snapshot_diff: {other}")),
            })?;
        Incremental::from_diff(base_job, d)
    }
}

/// `(source offset, length)` of every data block of a job, in block order: the whole
/// namespace in `chunk` pieces, or each changed extent in `chunk` pieces.
pub fn block_plan(
    size: u64,
    lba: u32,
    chunk: u32,
    inc: Option<&Incremental>,
) -> Result<Vec<(u64, u32)>, TapeError> {
    let chunk64 = u64::from(chunk);
    let Some(inc) = inc else {
        return Ok((0..size.div_ceil(chunk64))
            .map(|i| (i * chunk64, chunk64.min(size - i * chunk64) as u32))
            .collect());
    };
    if inc.source_bytes != size {
        return Err(TapeError::Invalid(format!(
            "the namespace holds {size} bytes but the snapshot diff is for {} bytes: is it the snapshot named?",
            inc.source_bytes
        )));
    }
    let lba = u64::from(lba);
    let mut out = Vec::new();
    let mut end = 0;
    for &(off, len) in inc.data.iter().chain(&inc.zero) {
        if off % lba != 0 || len % lba != 0 || off + len > size {
            return Err(TapeError::Invalid(format!(
                "changed extent {off}+{len} is not whole {lba} byte LBAs within {size} bytes"
            )));
        }
    }
    for &(off, len) in &inc.data {
        if off < end {
            return Err(TapeError::Invalid(format!(
                "changed extents overlap or are out of order at {off}"
            )));
        }
        end = off + len;
        let mut at = off;
        while at < end {
            let n = chunk64.min(end - at);
            out.push((at, n as u32));
            at += n;
        }
    }
    Ok(out)
}

/// The jobs a restore of `job` replays, oldest first: a full backup, then each incremental on
/// top of the one before. Every one must be finished.
pub fn chain(catalog: &Catalog, job: u64) -> Result<Vec<JobRow>, TapeError> {
    let mut out: Vec<JobRow> = Vec::new();
    let mut next = Some(job);
    while let Some(id) = next {
        if out.len() >= MAX_CHAIN || out.iter().any(|j| j.id == id) {
            return Err(TapeError::corrupt(format!(
                "job {job}: the chain of base jobs loops or is longer than {MAX_CHAIN}"
            )));
        }
        let row = catalog.job(id)?;
        if row.state != JobState::Done {
            return Err(TapeError::Invalid(format!(
                "job {job} needs job {id}, which is {:?}: only finished backups can be read back",
                row.state
            )));
        }
        if !matches!(row.kind.as_str(), "backup" | "incremental") {
            return Err(TapeError::Invalid(format!(
                "job {id} is a {} job, not a backup",
                row.kind
            )));
        }
        next = row.base_job;
        out.push(row);
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(data: Vec<(u64, u64)>) -> Incremental {
        Incremental {
            base_job: 1,
            data,
            zero: vec![(8192, 4096)],
            source_bytes: 1 << 20,
        }
    }

    #[test]
    fn plans_split_extents_into_chunks() {
        assert_eq!(
            block_plan(10_000, 512, 4096, None).expect("full"),
            vec![(0, 4096), (4096, 4096), (8192, 1808)]
        );
        let p = block_plan(
            1 << 20,
            512,
            4096,
            Some(&inc(vec![(0, 512), (65536, 10240)])),
        )
        .expect("plan");
        assert_eq!(
            p,
            vec![(0, 512), (65536, 4096), (69632, 4096), (73728, 2048)]
        );
        assert!(block_plan(1 << 20, 512, 4096, Some(&inc(vec![])))
            .expect("nothing changed")
            .is_empty());
        for bad in [
            vec![(100, 512)],
            vec![(1 << 20, 512)],
            vec![(4096, 512), (0, 512)],
        ] {
            assert!(
                block_plan(1 << 20, 512, 4096, Some(&inc(bad.clone()))).is_err(),
                "{bad:?}"
            );
        }
        let e = block_plan(2 << 20, 512, 4096, Some(&inc(vec![]))).expect_err("size");
        assert!(e.to_string().contains("snapshot diff"), "{e}");
    }

    #[test]
    fn a_diff_answer_becomes_byte_ranges() {
        let d = json!({"pool": "p", "base": "s1", "target": "s2", "cluster_size": 65536,
            "block_size": 512, "size_bytes": 1048576, "base_size_bytes": 1048576,
            "changed_bytes": 65536, "zero_bytes": 65536,
            "extents": [{"lba": 128, "blocks": 128, "zero": false},
                        {"lba": 512, "blocks": 128, "zero": true}]});
        let i = Incremental::from_diff(4, d).expect("diff");
        assert_eq!(i.data, vec![(65536, 65536)]);
        assert_eq!(i.zero, vec![(262_144, 65536)]);
        assert_eq!((i.base_job, i.source_bytes), (4, 1 << 20));
        assert!(Incremental::from_diff(4, json!({"extents": 3})).is_err());
    }
}
