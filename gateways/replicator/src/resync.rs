//! Initial copy: before a new pair ships its first journal record, the primary replicator
//! copies every namespace of the group from the primary appliance to the secondary one
//! (NVMe/TCP reads on one side, writes on the other), with progress (bytes, rate, ETA) in the
//! status and a checkpoint file so a restart resumes where it stopped.
//!
//! Why the result is exact: change tracking (the group's journal) is on before the copy
//! starts, and nothing is shipped (so nothing is trimmed) until the copy is done. Every write
//! that could have raced with a copied chunk is therefore still in the journal and is applied
//! on the secondary after the copy, in order. A chunk may hold data newer than some of those
//! records; replaying them over it is harmless because a later record for the same blocks
//! follows, and the last write to a block is the last one applied.
//!
//! During the copy the secondary image is not consistent (it never was: the pair is new), and
//! host writes fill the journal; a journal smaller than the writes made during the copy makes
//! them wait for space (see the journal's full policy).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferrite_gateway_protocol::{decode, DomainId, GroupId, JournalPull, Message, Role, SeqNo};
use ferrite_host::{ConnectOptions, Controller};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::status::Shared;

/// `[copy]` in the primary's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// The primary ferrited's NVMe/TCP listener (same site as this replicator).
    pub source: std::net::SocketAddr,
    /// The subsystem exporting the group's namespaces there.
    pub source_nqn: String,
    /// The secondary ferrited's NVMe/TCP listener.
    pub target: std::net::SocketAddr,
    /// Its subsystem.
    pub target_nqn: String,
    /// Source namespace -> target namespace pairs to copy.
    pub namespaces: Vec<(u32, u32)>,
    /// The checkpoint (what is copied so far; `done` once finished).
    pub state_file: PathBuf,
    /// Bytes per copy step (read, write); at most 16 MiB.
    #[serde(default = "default_chunk")]
    pub chunk_kib: u32,
    /// A delta resync: copy only these ranges (a JSON list of [`Range`], source namespace
    /// numbers), as `ferrite-replicator diverged` writes it, instead of whole namespaces.
    #[serde(default)]
    pub ranges_file: Option<PathBuf>,
}

/// Blocks of one namespace that differ between the sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Range {
    /// Namespace.
    pub nsid: u32,
    /// First block.
    pub lba: u64,
    /// Blocks (at least 1).
    pub blocks: u64,
}

/// Sorts ranges and merges the overlapping or adjacent ones of a namespace.
pub fn normalize(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.retain(|r| r.blocks > 0);
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(l) if l.nsid == r.nsid && r.lba <= l.lba + l.blocks => {
                l.blocks = l.blocks.max(r.lba + r.blocks - l.lba);
            }
            _ => out.push(r),
        }
    }
    out
}

/// Reads a ranges file.
pub fn load_ranges(path: &Path) -> Result<Vec<Range>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("ranges file {}", path.display()))?;
    let r: Vec<Range> =
        serde_json::from_str(&text).with_context(|| format!("ranges file {}", path.display()))?;
    Ok(normalize(r))
}

/// The ranges of a `snapshot_diff` result (`extents: [{lba, blocks, zero}]`) as ranges of
/// namespace `nsid` (zeroed extents included: they differ too).
pub fn ranges_of_diff(nsid: u32, diff: &Value) -> Result<Vec<Range>> {
    let extents = diff["extents"]
        .as_array()
        .context("a snapshot_diff result has an extents array")?;
    extents
        .iter()
        .map(|e| {
            Ok(Range {
                nsid,
                lba: e["lba"].as_u64().context("extent lba")?,
                blocks: e["blocks"].as_u64().context("extent blocks")?,
            })
        })
        .collect()
}

/// The ranges written by the journal's records after `after` (what a primary wrote that its
/// secondary never applied: the secondary's `applied` when it was promoted), pulled from the
/// journal stream endpoint at `socket`. Failback copies them back from the new primary.
pub fn diverged_ranges(socket: &Path, group: u32, after: u64) -> Result<Vec<Range>> {
    let s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("journal endpoint {}", socket.display()))?;
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
    let mut f = crate::conn::Framed::new(s, None);
    f.queue_hello(&Message::Hello(crate::primary::hello(
        Role::Primary,
        [0; 32],
    )))?;
    // The first answer tells where the journal starts (its trim point) and ends.
    let (_, head, tail) = pull(&mut f, group, 0, 1)?;
    // Records trimmed before `after` were applied on the secondary.
    let mut next = after.max(tail) + 1;
    let mut out = Vec::new();
    while next <= head {
        let (records, _, _) = pull(&mut f, group, next, 256)?;
        if records.is_empty() {
            break;
        }
        for (seq, r) in records {
            if seq > after {
                out.push(r);
            }
            next = next.max(seq + 1);
        }
    }
    Ok(normalize(out))
}

/// One pull's records (sequence number, range), the journal's head and its trim point.
type Pulled = (Vec<(u64, Range)>, u64, u64);

/// One `JournalPull`: the records' sequence numbers and ranges, the head and the trim point.
fn pull(
    f: &mut crate::conn::Framed<std::os::unix::net::UnixStream>,
    group: u32,
    from: u64,
    max: u32,
) -> Result<Pulled> {
    let e = |e: crate::conn::ConnError| anyhow::anyhow!("journal endpoint: {e}");
    f.queue(&Message::JournalPull(JournalPull {
        group: GroupId(group),
        domain: DomainId(1),
        from_seq: SeqNo(from),
        max_records: max,
    }))?;
    f.flush().map_err(e)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let mut records = Vec::new();
    loop {
        if Instant::now() > deadline {
            bail!("the journal endpoint did not answer");
        }
        f.fill().map_err(e)?;
        while let Some(fr) = f.next_frame().map_err(e)? {
            match decode(&fr)? {
                Some((Message::Record(r), _)) => records.push((
                    r.header.seq.0,
                    Range {
                        nsid: r.header.nsid.0,
                        lba: r.header.slba,
                        blocks: u64::from(r.header.nblocks),
                    },
                )),
                Some((Message::JournalStatus(st), _)) => {
                    return Ok((records, st.head_seq.0, st.tail_seq.0))
                }
                Some((Message::Refuse(r), _)) => bail!("the journal refused: {}", r.reason),
                _ => {}
            }
        }
    }
}

fn default_chunk() -> u32 {
    1024
}

impl CopyConfig {
    /// Checks ranges.
    pub fn check(&self) -> Result<(), String> {
        if self.namespaces.is_empty() {
            return Err("[copy] needs at least one namespace pair".into());
        }
        if !(4..=16 * 1024).contains(&self.chunk_kib) {
            return Err("[copy] chunk_kib must be 4..=16384".into());
        }
        Ok(())
    }
}

/// The checkpoint file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    /// The whole copy finished (and was flushed on the target).
    pub done: bool,
    /// Per source namespace, the next block to copy.
    pub next: Vec<(u32, u64)>,
}

impl CopyState {
    /// Reads the checkpoint (missing: nothing copied).
    pub fn load(path: &Path) -> Result<CopyState> {
        crate::state_file::load(path, "copy state")
    }

    fn save(&self, path: &Path) -> Result<()> {
        crate::state_file::save(path, self)
    }

    fn next_of(&self, nsid: u32) -> u64 {
        self.next
            .iter()
            .find(|(n, _)| *n == nsid)
            .map_or(0, |(_, b)| *b)
    }

    fn set_next(&mut self, nsid: u32, block: u64) {
        match self.next.iter_mut().find(|(n, _)| *n == nsid) {
            Some(e) => e.1 = block,
            None => self.next.push((nsid, block)),
        }
    }
}

/// Bytes, rate and ETA of a copy, as the status shows them.
#[derive(Debug, Clone)]
pub struct Progress {
    /// `copying` or `done`.
    pub state: &'static str,
    /// Bytes of all namespaces.
    pub total: u64,
    /// Bytes copied (including what a previous run copied).
    pub done: u64,
    /// Bytes copied by this run, and since when (the rate is over this run).
    run_bytes: u64,
    started: Instant,
    /// Chunks that were all zeroes and went as Write Zeroes.
    pub zero_chunks: u64,
}

impl Progress {
    fn new(total: u64, done: u64) -> Progress {
        Progress {
            state: "copying",
            total,
            done,
            run_bytes: 0,
            started: Instant::now(),
            zero_chunks: 0,
        }
    }

    /// Bytes per second over this run.
    pub fn rate(&self) -> f64 {
        let s = self.started.elapsed().as_secs_f64();
        if s > 0.0 {
            self.run_bytes as f64 / s
        } else {
            0.0
        }
    }

    /// The status document.
    pub fn json(&self) -> Value {
        let rate = self.rate();
        let left = self.total.saturating_sub(self.done);
        let eta = if left == 0 {
            Some(0.0)
        } else if rate > 0.0 {
            Some(left as f64 / rate)
        } else {
            None
        };
        json!({
            "state": self.state,
            "bytes_total": self.total,
            "bytes_done": self.done,
            "percent": if self.total == 0 { 100.0 } else { self.done as f64 * 100.0 / self.total as f64 },
            "rate_bytes_per_s": rate,
            "eta_s": eta,
            "zero_chunks": self.zero_chunks,
        })
    }
}

/// Puts `copy` into the shared status document (keeping what else is there).
pub fn publish(status: &Shared, p: &Progress) {
    if let Ok(mut s) = status.lock() {
        if !s.is_object() {
            *s = json!({});
        }
        s["copy"] = p.json();
    }
}

fn connect(addr: std::net::SocketAddr, nqn: &str, what: &str) -> Result<Controller> {
    let mut o = ConnectOptions::new(addr, nqn);
    o.io_queues = 1;
    o.kato_ms = 0;
    Controller::connect(o).with_context(|| format!("connecting to the {what} appliance {addr}"))
}

/// Namespace size in blocks and block size.
fn geometry(c: &mut Controller, nsid: u32, what: &str) -> Result<(u64, u32)> {
    let id = c
        .identify_namespace(nsid)
        .with_context(|| format!("identify {what} namespace {nsid}"))?;
    let bs = c
        .block_size(nsid)
        .with_context(|| format!("{what} namespace {nsid} is not active"))?;
    Ok((id.nsze.get(), bs))
}

/// Per namespace pair: source, target, block size, extents `[start, end)` to copy.
type Plan = (u32, u32, u32, Vec<(u64, u64)>);

/// How often the checkpoint is written (and the target flushed) while copying.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs the initial copy unless the checkpoint says it is done; returns the final progress.
/// Stops early (Ok, with the checkpoint written) when `stop` is set.
pub fn initial_copy(cfg: &CopyConfig, status: &Shared, stop: &AtomicBool) -> Result<Progress> {
    cfg.check().map_err(anyhow::Error::msg)?;
    let mut state = CopyState::load(&cfg.state_file)?;
    let mut src = connect(cfg.source, &cfg.source_nqn, "primary")?;
    let mut dst = connect(cfg.target, &cfg.target_nqn, "secondary")?;
    let mut geo = Vec::new();
    for &(s, d) in &cfg.namespaces {
        let (blocks, bs) = geometry(&mut src, s, "primary")?;
        let (dblocks, dbs) = geometry(&mut dst, d, "secondary")?;
        if bs != dbs {
            bail!("block sizes differ: primary namespace {s} has {bs}, secondary namespace {d} has {dbs}");
        }
        if dblocks < blocks {
            bail!(
                "the secondary namespace {d} ({} bytes) is smaller than the primary namespace {s} ({} bytes)",
                dblocks * u64::from(dbs),
                blocks * u64::from(bs)
            );
        }
        geo.push((s, d, blocks, bs));
    }
    // What to copy per namespace pair: everything, or the delta's ranges (clipped).
    let delta = match &cfg.ranges_file {
        Some(f) => Some(load_ranges(f)?),
        None => None,
    };
    let plan: Vec<Plan> = geo
        .iter()
        .map(|&(s, d, blocks, bs)| {
            let extents = match &delta {
                None => vec![(0, blocks)],
                Some(r) => r
                    .iter()
                    .filter(|r| r.nsid == s && r.lba < blocks)
                    .map(|r| (r.lba, (r.lba + r.blocks).min(blocks)))
                    .collect(),
            };
            (s, d, bs, extents)
        })
        .collect();
    let bytes = |bs: u32, e: &[(u64, u64)], from: u64| -> u64 {
        e.iter()
            .map(|&(a, b)| b.saturating_sub(a.max(from)) * u64::from(bs))
            .sum()
    };
    let total: u64 = plan.iter().map(|(_, _, bs, e)| bytes(*bs, e, 0)).sum();
    if state.done {
        let mut p = Progress::new(total, total);
        p.state = "done";
        publish(status, &p);
        return Ok(p);
    }
    let left: u64 = plan
        .iter()
        .map(|(s, _, bs, e)| bytes(*bs, e, state.next_of(*s)))
        .sum();
    let mut p = Progress::new(total, total - left);
    publish(status, &p);
    log::info!(
        "{}: {left} of {total} bytes left",
        if delta.is_some() {
            "delta resync"
        } else {
            "initial copy"
        }
    );
    let piece = src.max_transfer().min(dst.max_transfer()).max(4096) as usize;
    let mut last_checkpoint = Instant::now();
    let mut buf = Vec::new();
    for (s, d, bs, extents) in &plan {
        let (s, d, bs) = (*s, *d, *bs);
        let chunk_blocks = (u64::from(cfg.chunk_kib) * 1024 / u64::from(bs)).max(1);
        for &(start, end) in extents {
            let mut at = start.max(state.next_of(s));
            while at < end {
                if stop.load(Ordering::Relaxed) {
                    dst.flush(1, d).context("flush the secondary")?;
                    state.save(&cfg.state_file)?;
                    log::info!("copy interrupted at block {at} of namespace {s}");
                    return Ok(p);
                }
                let n = chunk_blocks.min(end - at);
                let len = (n * u64::from(bs)) as usize;
                buf.resize(len, 0);
                src.read_pipelined(1, s, at, &mut buf, piece)
                    .with_context(|| format!("reading primary namespace {s} at block {at}"))?;
                if buf.iter().all(|&b| b == 0) {
                    // Write Zeroes carries no data over the link.
                    let mut z = 0;
                    while z < n {
                        let k = (n - z).min(65536);
                        dst.write_zeroes(1, d, at + z, k as u32, false)
                            .with_context(|| format!("zeroing secondary namespace {d}"))?;
                        z += k;
                    }
                    p.zero_chunks += 1;
                } else {
                    dst.write_pipelined(1, d, at, &buf, piece)
                        .with_context(|| {
                            format!("writing secondary namespace {d} at block {at}")
                        })?;
                }
                at += n;
                p.done += len as u64;
                p.run_bytes += len as u64;
                state.set_next(s, at);
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    dst.flush(1, d).context("flush the secondary")?;
                    state.save(&cfg.state_file)?;
                    last_checkpoint = Instant::now();
                    publish(status, &p);
                }
            }
        }
        dst.flush(1, d).context("flush the secondary")?;
        state.save(&cfg.state_file)?;
    }
    state.done = true;
    state.save(&cfg.state_file)?;
    p.state = "done";
    publish(status, &p);
    log::info!(
        "copy done: {} bytes at {:.1} MiB/s",
        p.total,
        p.rate() / (1 << 20) as f64
    );
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_tracks_namespaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("copy.state");
        let mut s = CopyState::load(&f).expect("missing is empty");
        assert_eq!(s, CopyState::default());
        s.set_next(1, 10);
        s.set_next(2, 7);
        s.set_next(1, 20);
        s.save(&f).expect("save");
        let t = CopyState::load(&f).expect("load");
        assert_eq!((t.next_of(1), t.next_of(2), t.next_of(3)), (20, 7, 0));
        assert!(!t.done);
    }

    #[test]
    fn progress_reports_rate_and_eta() {
        let mut p = Progress::new(1000, 200);
        assert_eq!(p.json()["eta_s"], Value::Null, "no rate yet");
        p.run_bytes = 100;
        p.done = 300;
        std::thread::sleep(std::time::Duration::from_millis(5));
        let v = p.json();
        assert_eq!(v["bytes_done"], 300);
        assert!(v["rate_bytes_per_s"].as_f64().expect("rate") > 0.0);
        assert!(v["eta_s"].as_f64().expect("eta") > 0.0);
        p.done = 1000;
        assert_eq!(p.json()["eta_s"], 0.0);
    }

    #[test]
    fn ranges_merge_per_namespace() {
        let r = |nsid, lba, blocks| Range { nsid, lba, blocks };
        assert_eq!(
            normalize(vec![
                r(2, 0, 4),
                r(1, 10, 5),
                r(1, 0, 3),
                r(1, 3, 2),
                r(1, 12, 8),
                r(1, 30, 0)
            ]),
            vec![r(1, 0, 5), r(1, 10, 10), r(2, 0, 4)]
        );
        let diff = json!({"extents": [{"lba": 128, "blocks": 128, "zero": false}, {"lba": 512, "blocks": 64, "zero": true}]});
        assert_eq!(
            ranges_of_diff(3, &diff).expect("diff"),
            vec![r(3, 128, 128), r(3, 512, 64)]
        );
        assert!(ranges_of_diff(3, &json!({})).is_err());
    }

    #[test]
    fn config_is_checked() {
        let c = CopyConfig {
            source: "127.0.0.1:1".parse().expect("addr"),
            source_nqn: "a".into(),
            target: "127.0.0.1:2".parse().expect("addr"),
            target_nqn: "b".into(),
            namespaces: vec![],
            state_file: "/x".into(),
            chunk_kib: 1024,
            ranges_file: None,
        };
        assert!(c.check().expect_err("no namespaces").contains("namespace"));
        let c = CopyConfig {
            namespaces: vec![(1, 1)],
            chunk_kib: 1,
            ..c
        };
        assert!(c
            .check()
            .expect_err("chunk too small")
            .contains("chunk_kib"));
    }
}
