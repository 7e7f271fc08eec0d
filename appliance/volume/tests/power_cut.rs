//! Power-cut crash loop: a pool over a `power-cut` member (a volatile write cache that loses,
//! or tears at sector granularity, whatever was not flushed) runs writes, flushes, FUA writes
//! and write-zeroes on several volumes while snapshots, clones, deletes, resizes and reverts
//! run beside them; the power goes at a random member request; the pool is reopened from what
//! survived and every sector of every volume is checked against an oracle of acknowledged
//! writes, and `Pool::check` must be clean. Then the loop goes on with the same pool.
//!
//! Iterations: `FERRITE_POWERCUT_ITERATIONS` (default 200, CI); seed: `FERRITE_POWERCUT_SEED`
//! (default below). The overnight run is
//! `FERRITE_POWERCUT_ITERATIONS=10000 cargo nextest run -p ferrite-volume --test power_cut
//! --no-capture`. The seed fixes the workload (every request, every control operation, every
//! cut countdown and the loss pattern); the owner's own background requests can move the cut
//! by a few requests between runs, so a failure is replayed by rerunning the same seed, which
//! the failure message prints with its iteration.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use ferrite_bdev::{BdevError, BdevIo, BlockDevice, IoChannel, IoKind, PowerCutBdev};
use ferrite_reactor::IoBuf;
use ferrite_volume::{Pool, PoolOptions, Provisioning, VolumeError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECTOR: usize = BS as usize;
const SIZES: [u64; 3] = [512 << 10, 1 << 20, 1536 << 10];
const MAX_VOLUMES: usize = 8;
const DEPTH: usize = 6;
const DEFAULT_SEED: u64 = 0xF3_C0DE;
const OP_DEADLINE: Duration = Duration::from_secs(60);

/// Write id `wid` as it lands in sector `lba`: the id, the sector, then a fill that depends on
/// both, so a sector mixing two writes or put at the wrong address is caught.
fn stamp(wid: u64, lba: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&wid.to_le_bytes());
    out[8..16].copy_from_slice(&lba.to_le_bytes());
    for (i, b) in out[16..].iter_mut().enumerate() {
        *b = (wid.wrapping_mul(0x9E37_79B9) ^ lba.wrapping_mul(31) ^ i as u64) as u8 | 1;
    }
}

/// The write id a sector holds (0: zeroes), or what is wrong with it.
fn decode(lba: u64, s: &[u8]) -> Result<u64, String> {
    if s.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let wid = u64::from_le_bytes(s[..8].try_into().expect("8 bytes"));
    let mut want = vec![0u8; s.len()];
    stamp(wid, lba, &mut want);
    if want != s {
        let at = u64::from_le_bytes(s[8..16].try_into().expect("8 bytes"));
        return Err(format!(
            "sector {lba} holds neither zeroes nor an intact write (id {wid}, stamped for sector {at})"
        ));
    }
    Ok(wid)
}

/// What one sector may hold: `base` (values at the last durable point; one unless an
/// operation in progress at a cut left a choice) and the writes since, oldest first, each with
/// the acknowledgement count when it completed (`u64::MAX` while in flight or failed).
#[derive(Debug, Clone)]
struct Sector {
    base: Vec<u64>,
    later: Vec<(u64, u64)>,
}

impl Sector {
    fn zero() -> Self {
        Sector {
            base: vec![0],
            later: Vec::new(),
        }
    }

    /// After a power cut: anything not superseded by a durable point.
    fn after_cut(&self) -> Vec<u64> {
        let mut v = self.base.clone();
        v.extend(self.later.iter().map(|&(w, _)| w));
        v
    }

    /// A read submitted when `acks` acknowledgements had happened: the newest write
    /// acknowledged by then or anything after it.
    fn live(&self, acks: u64) -> Vec<u64> {
        match self.later.iter().rposition(|&(_, a)| a <= acks) {
            Some(i) => self.later[i..].iter().map(|&(w, _)| w).collect(),
            None => self.after_cut(),
        }
    }

    /// Durable point: every write acknowledged by `acks` (the newest of them stays).
    fn durable(&mut self, acks: u64) {
        if let Some(i) = self.later.iter().rposition(|&(_, a)| a <= acks) {
            self.base = vec![self.later[i].0];
            self.later.drain(..=i);
        }
    }

    fn merge(&mut self, other: &Sector) {
        for w in other.after_cut() {
            if !self.base.contains(&w) {
                self.base.push(w);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct VolModel {
    snapshot: bool,
    sectors: Vec<Sector>,
    /// Sizes it may have after a cut (one unless a resize or revert was in progress).
    sizes: Vec<u64>,
    /// May be absent after a cut (created or deleted by an operation in progress).
    maybe: bool,
}

impl VolModel {
    fn new(size: u64, snapshot: bool) -> Self {
        VolModel {
            snapshot,
            sectors: vec![Sector::zero(); (size / SECTOR as u64) as usize],
            sizes: vec![size],
            maybe: false,
        }
    }

    fn resize(&mut self, size: u64) {
        self.sectors
            .resize((size / SECTOR as u64) as usize, Sector::zero());
    }
}

/// A write sent to a volume: (lba, blocks, write id).
type Sent = (u64, u64, u64);

/// A request of the load in flight.
struct Pending {
    vol: String,
    lba: u64,
    blocks: u64,
    /// Writes: the write id (0 for write zeroes); reads: `None`.
    wid: Option<u64>,
    fua: bool,
    flush: bool,
    /// Acknowledgements counted when it was submitted.
    acks: u64,
}

/// The control operation running beside the load.
#[derive(Debug, Clone)]
enum Ctl {
    Snapshot { vol: String, snap: String },
    Clone { snap: String, clone: String },
    Delete { vol: String },
    Resize { vol: String, size: u64 },
    Revert { vol: String, snap: String },
}

impl Ctl {
    fn targets(&self) -> Vec<&str> {
        match self {
            Ctl::Snapshot { .. } => Vec::new(), // written under load on purpose
            Ctl::Clone { snap, clone } => vec![snap, clone],
            Ctl::Delete { vol } | Ctl::Resize { vol, .. } => vec![vol],
            Ctl::Revert { vol, snap } => vec![vol, snap],
        }
    }

    fn run(&self, pool: &Pool) -> Result<(), VolumeError> {
        match self {
            Ctl::Snapshot { vol, snap } => pool.snapshot(vol, snap).map(drop),
            Ctl::Clone { snap, clone } => pool.clone_snapshot(snap, clone).map(drop),
            Ctl::Delete { vol } => pool.delete_volume(vol),
            Ctl::Resize { vol, size } => pool.resize_volume(vol, *size, true),
            Ctl::Revert { vol, snap } => pool.revert_volume(vol, snap),
        }
    }
}

struct Loop {
    seed: u64,
    iteration: u64,
    rng: StdRng,
    dev: Arc<PowerCutBdev>,
    pool: Option<Arc<Pool>>,
    model: BTreeMap<String, VolModel>,
    channels: BTreeMap<String, Box<dyn IoChannel>>,
    next_tag: u64,
    tags: BTreeMap<u64, Pending>,
    acks: u64,
    next_wid: u64,
    next_name: u64,
    /// Which volume each write went to, and when (for failure messages).
    history: BTreeMap<u64, String>,
    /// While a snapshot runs: its source and the writes sent to it meanwhile.
    watch: Option<(String, Vec<Sent>)>,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    writes_acked: u64,
    flushes: u64,
    ops_done: u64,
    ops_cut: u64,
    ops_refused: u64,
    live_reads: u64,
    sectors_checked: u64,
    volatile_blocks: u64,
    rolled_back: u64,
}

impl Loop {
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "power-cut loop, seed {:#x}, iteration {}: {what}\n(rerun: FERRITE_POWERCUT_SEED={:#x} \
             FERRITE_POWERCUT_ITERATIONS={})",
            self.seed,
            self.iteration,
            self.seed,
            self.iteration + 1
        )
    }

    fn pool(&self) -> &Arc<Pool> {
        self.pool.as_ref().expect("pool open")
    }

    fn name(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }

    fn open_channels(&mut self) {
        self.channels.clear();
        for (name, _) in self.model.iter() {
            let v = self
                .pool()
                .volume(name)
                .unwrap_or_else(|| self.fail(format!("volume {name} missing")));
            let ch = v
                .open_channel(&[])
                .unwrap_or_else(|e| self.fail(format!("channel of {name}: {e}")));
            self.channels.insert(name.clone(), ch);
        }
    }

    /// Submits one request; waits for room (and for overlapping writes) first.
    fn submit(&mut self, vol: &str, kind: IoKind, wid: Option<u64>) {
        let (lba, blocks) = kind.range().unwrap_or((0, 0));
        let deadline = Instant::now() + OP_DEADLINE;
        loop {
            let busy = self.tags.values().filter(|p| p.vol == vol).count();
            let overlap = self.tags.values().any(|p| {
                p.vol == vol
                    && (p.wid.is_some() || wid.is_some())
                    && !p.flush
                    && p.lba < lba + blocks
                    && lba < p.lba + p.blocks
            });
            if busy < DEPTH && !overlap {
                break;
            }
            if Instant::now() > deadline {
                self.fail(format!("{vol}: requests never completed"));
            }
            if self.poll() == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let buf = match kind {
            IoKind::Read { blocks, .. } => Some(IoBuf::new(blocks as usize * SECTOR)),
            IoKind::Write { lba, blocks, .. } => {
                let n = blocks as usize * SECTOR;
                let mut b = IoBuf::new(n);
                b.set_len(n);
                let w = wid.expect("writes have an id");
                for (i, s) in b.as_mut_slice().chunks_exact_mut(SECTOR).enumerate() {
                    stamp(w, lba + i as u64, s);
                }
                Some(b)
            }
            _ => None,
        };
        let tag = self.next_tag;
        self.next_tag += 1;
        let p = Pending {
            vol: vol.to_owned(),
            lba,
            blocks,
            wid,
            fua: matches!(kind, IoKind::Write { fua: true, .. }),
            flush: kind == IoKind::Flush,
            acks: self.acks,
        };
        if let Some(w) = wid {
            if w != 0 {
                self.history.insert(
                    w,
                    format!("{kind:?} to {vol}, iteration {}", self.iteration),
                );
            }
            if let Some((src, sent)) = &mut self.watch {
                if src == vol {
                    sent.push((lba, blocks, w));
                }
            }
            let m = self.model.get_mut(vol).expect("modelled");
            for s in &mut m.sectors[lba as usize..(lba + blocks) as usize] {
                s.later.push((w, u64::MAX));
            }
        }
        let Some(ch) = self.channels.get_mut(vol) else {
            if !self.dev.is_cut() {
                self.fail(format!("{vol}: no channel"));
            }
            return;
        };
        if let Err((_, e)) = ch.submit(BdevIo::new(tag, kind, buf)) {
            if !self.dev.is_cut() {
                self.fail(format!("{vol}: submit refused: {e}"));
            }
            return; // a write refused after the cut stays a candidate: harmless
        }
        self.tags.insert(tag, p);
    }

    /// Reaps completions of every channel; returns how many.
    fn poll(&mut self) -> usize {
        let mut done = Vec::new();
        for ch in self.channels.values_mut() {
            ch.poll(64, &mut |io, r| done.push((io, r)));
        }
        let n = done.len();
        for (io, r) in done {
            let p = self.tags.remove(&io.tag).expect("tag of ours");
            self.complete(p, io, r);
        }
        n
    }

    fn complete(&mut self, p: Pending, io: BdevIo, r: Result<(), BdevError>) {
        if let Err(e) = r {
            if !self.dev.is_cut() {
                self.fail(format!("{} {:?}: {e} without a power cut", p.vol, io.kind));
            }
            return;
        }
        self.acks += 1;
        let acks = self.acks;
        let Some(m) = self.model.get_mut(&p.vol) else {
            return;
        };
        if p.flush {
            self.stats.flushes += 1;
            for s in &mut m.sectors {
                s.durable(p.acks);
            }
            return;
        }
        let range = p.lba as usize..(p.lba + p.blocks) as usize;
        if let Some(w) = p.wid {
            self.stats.writes_acked += 1;
            for s in &mut m.sectors[range] {
                let e = s
                    .later
                    .iter_mut()
                    .rev()
                    .find(|e| e.0 == w)
                    .expect("recorded");
                e.1 = acks;
                if p.fua {
                    s.durable(acks);
                }
            }
            return;
        }
        // A read: each sector must hold something it may hold now.
        self.stats.live_reads += 1;
        let buf = io.buf.expect("read buffer back");
        let mut bad = None;
        for (i, s) in buf.as_slice().chunks_exact(SECTOR).enumerate() {
            let lba = p.lba + i as u64;
            let allowed = m.sectors[lba as usize].live(p.acks);
            match decode(lba, s) {
                Ok(w) if allowed.contains(&w) => {}
                Ok(w) => bad = Some(format!("holds write {w}, expected one of {allowed:?}")),
                Err(e) => bad = Some(e),
            }
            if let Some(b) = bad.take() {
                self.fail(format!("live read of {} sector {lba}: {b}", p.vol));
            }
        }
    }

    /// Polls until nothing of the load is in flight.
    fn settle(&mut self) {
        let deadline = Instant::now() + OP_DEADLINE;
        while !self.tags.is_empty() {
            if Instant::now() > deadline {
                self.fail(format!("{} request(s) never completed", self.tags.len()));
            }
            if self.poll() == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    fn writable(&self, exclude: &[&str]) -> Vec<String> {
        self.model
            .iter()
            .filter(|(n, m)| !m.snapshot && !exclude.contains(&n.as_str()))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// One request of the load on a volume not in `exclude`.
    fn load_step(&mut self, exclude: &[&str]) {
        let names: Vec<String> = self
            .model
            .keys()
            .filter(|n| !exclude.contains(&n.as_str()))
            .cloned()
            .collect();
        if names.is_empty() {
            return;
        }
        let vol = names[self.rng.gen_range(0..names.len())].clone();
        let m = &self.model[&vol];
        let total = m.sectors.len() as u64;
        let blocks = self.rng.gen_range(1..=32u64).min(total);
        let lba = self.rng.gen_range(0..=total - blocks);
        let pick = self.rng.gen_range(0..100);
        if m.snapshot || pick < 25 {
            let kind = IoKind::Read {
                lba,
                blocks: blocks as u32,
            };
            return self.submit(&vol, kind, None);
        }
        match pick {
            25..=34 => self.submit(&vol, IoKind::Flush, None),
            35..=39 => {
                let kind = IoKind::WriteZeroes { lba, blocks };
                self.submit(&vol, kind, Some(0))
            }
            _ => {
                self.next_wid += 1;
                let kind = IoKind::Write {
                    lba,
                    blocks: blocks as u32,
                    fua: pick >= 92,
                };
                self.submit(&vol, kind, Some(self.next_wid))
            }
        }
    }

    /// A control operation valid for the current model.
    fn pick_ctl(&mut self) -> Option<Ctl> {
        let vols = self.writable(&[]);
        let snaps: Vec<String> = self
            .model
            .iter()
            .filter(|(_, m)| m.snapshot)
            .map(|(n, _)| n.clone())
            .collect();
        let all: Vec<String> = self.model.keys().cloned().collect();
        let choose = |rng: &mut StdRng, v: &[String]| v[rng.gen_range(0..v.len())].clone();
        if self.model.len() >= MAX_VOLUMES {
            return Some(Ctl::Delete {
                vol: choose(&mut self.rng, &all),
            });
        }
        match self.rng.gen_range(0..6) {
            0 | 1 if !vols.is_empty() => Some(Ctl::Snapshot {
                vol: choose(&mut self.rng, &vols),
                snap: self.name("s"),
            }),
            2 if !snaps.is_empty() => Some(Ctl::Clone {
                snap: choose(&mut self.rng, &snaps),
                clone: self.name("c"),
            }),
            3 if all.len() > 2 => Some(Ctl::Delete {
                vol: choose(&mut self.rng, &all),
            }),
            4 if !vols.is_empty() => Some(Ctl::Resize {
                vol: choose(&mut self.rng, &vols),
                size: SIZES[self.rng.gen_range(0..SIZES.len())],
            }),
            5 if !vols.is_empty() && !snaps.is_empty() => Some(Ctl::Revert {
                vol: choose(&mut self.rng, &vols),
                snap: choose(&mut self.rng, &snaps),
            }),
            _ => None,
        }
    }

    /// Runs `ctl` on a thread while the load goes on around its targets; updates the model.
    fn control(&mut self, ctl: Ctl) {
        let targets: Vec<String> = ctl.targets().into_iter().map(String::from).collect();
        let exclude: Vec<&str> = targets.iter().map(String::as_str).collect();
        // The targets' own requests finish first (the load goes on elsewhere).
        let deadline = Instant::now() + OP_DEADLINE;
        while self
            .tags
            .values()
            .any(|p| exclude.contains(&p.vol.as_str()))
        {
            if Instant::now() > deadline {
                self.fail("requests to a control target never completed");
            }
            if self.poll() == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let acks_at_start = self.acks;
        // Snapshot under load: what the source may hold now, and what it is sent meanwhile.
        let mut snap_model = match &ctl {
            Ctl::Snapshot { vol, .. } => {
                let mut m = self.model[vol].clone();
                m.snapshot = true;
                for s in &mut m.sectors {
                    s.base = s.live(acks_at_start);
                    s.later.clear();
                }
                Some(m)
            }
            _ => None,
        };
        if let Ctl::Snapshot { vol, .. } = &ctl {
            self.watch = Some((vol.clone(), Vec::new()));
        }
        let pool = Arc::clone(self.pool());
        let job = ctl.clone();
        let worker: JoinHandle<Result<(), VolumeError>> =
            std::thread::spawn(move || job.run(&pool));
        let deadline = Instant::now() + OP_DEADLINE;
        let mut steps = 0u32;
        while !worker.is_finished() {
            if Instant::now() > deadline {
                self.fail(format!("{ctl:?} never returned"));
            }
            if steps < 16 && !self.dev.is_cut() {
                self.load_step(&exclude);
                steps += 1;
            }
            if self.poll() == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let r = worker.join().expect("control thread");
        // Writes sent to a snapshot's source meanwhile may be in the snapshot.
        if let (Some(sm), Some((_, sent))) = (&mut snap_model, self.watch.take()) {
            for (lba, blocks, w) in sent {
                for s in &mut sm.sectors[lba as usize..(lba + blocks) as usize] {
                    s.base.push(w);
                }
            }
        }
        let cut = self.dev.is_cut();
        match (r, cut) {
            (Ok(()), _) => {
                self.stats.ops_done += 1;
                if let Ctl::Snapshot { vol, .. } = &ctl {
                    // A snapshot flushes the members: what the source had acknowledged
                    // before it began is durable.
                    for s in &mut self.model.get_mut(vol).expect("modelled").sectors {
                        s.durable(acks_at_start);
                    }
                }
                self.apply(&ctl, snap_model, false);
            }
            (Err(VolumeError::PoolFull { .. } | VolumeError::MetadataFull { .. }), false) => {
                self.stats.ops_refused += 1;
            }
            (Err(e), false) => self.fail(format!("{ctl:?} failed without a power cut: {e}")),
            (Err(_), true) => {
                self.stats.ops_cut += 1;
                self.apply(&ctl, snap_model, true);
            }
        }
    }

    /// The model after `ctl`; `uncertain`: it was cut short, either outcome may survive.
    fn apply(&mut self, ctl: &Ctl, snap_model: Option<VolModel>, uncertain: bool) {
        match ctl {
            Ctl::Snapshot { snap, .. } => {
                let mut m = snap_model.expect("built for snapshots");
                m.maybe = uncertain;
                self.model.insert(snap.clone(), m);
                if !uncertain {
                    self.pin(snap);
                }
            }
            Ctl::Clone { snap, clone } => {
                let mut m = self.model[snap].clone();
                m.snapshot = false;
                m.maybe = uncertain || m.maybe;
                self.model.insert(clone.clone(), m);
            }
            Ctl::Delete { vol } => {
                if uncertain {
                    self.model.get_mut(vol).expect("modelled").maybe = true;
                } else {
                    self.model.remove(vol);
                    self.channels.remove(vol);
                }
            }
            Ctl::Resize { vol, size } => {
                let m = self.model.get_mut(vol).expect("modelled");
                if uncertain {
                    m.sizes.push(*size);
                } else {
                    m.resize(*size);
                    m.sizes = vec![*size];
                }
            }
            Ctl::Revert { vol, snap } => {
                let mut new = self.model[snap].clone();
                new.snapshot = false;
                let m = self.model.get_mut(vol).expect("modelled");
                if uncertain {
                    // Either the old or the snapshot's content, and either size.
                    let old = m.clone();
                    let n = old.sectors.len().max(new.sectors.len());
                    m.sectors.resize(n, Sector::zero());
                    for (i, s) in m.sectors.iter_mut().enumerate() {
                        s.merge(new.sectors.get(i).unwrap_or(&Sector::zero()));
                    }
                    m.sizes.extend(new.sizes);
                } else {
                    new.maybe = m.maybe;
                    *m = new;
                }
            }
        }
        if !uncertain {
            if let Some(name) = match ctl {
                Ctl::Clone { clone: name, .. } | Ctl::Snapshot { snap: name, .. } => Some(name),
                Ctl::Revert { vol, .. } | Ctl::Resize { vol, .. } => Some(vol),
                _ => None,
            } {
                // A handle opened before a resize or revert keeps working; a new one sees
                // the new size.
                self.reopen_channel(name);
            }
        }
    }

    fn reopen_channel(&mut self, name: &str) {
        let v = self
            .pool()
            .volume(name)
            .unwrap_or_else(|| self.fail(format!("{name} missing after its operation")));
        match v.open_channel(&[]) {
            Ok(ch) => {
                self.channels.insert(name.to_owned(), ch);
            }
            // The power went after the operation returned: the pool is offline.
            Err(_) if self.dev.is_cut() => {
                self.channels.remove(name);
            }
            Err(e) => self.fail(format!("channel of {name}: {e}")),
        }
    }

    /// Reads a whole volume back and makes what it holds the model (checked first).
    fn pin(&mut self, name: &str) {
        let Some(v) = self.pool().volume(name) else {
            self.fail(format!("{name} missing"));
        };
        let size = v.size_bytes();
        let mut ch = match v.open_channel(&[]) {
            Ok(ch) => ch,
            Err(_) if self.dev.is_cut() => return,
            Err(e) => self.fail(format!("channel of {name}: {e}")),
        };
        let m = self.model.get(name).expect("modelled").clone();
        if !m.sizes.contains(&size) {
            self.fail(format!(
                "{name} has size {size}, expected one of {:?}",
                m.sizes
            ));
        }
        let mut m = m;
        m.resize(size);
        m.sizes = vec![size];
        m.maybe = false;
        let chunk = 256u64;
        let total = size / SECTOR as u64;
        let mut lba = 0;
        while lba < total {
            let n = chunk.min(total - lba);
            let data = match read(&mut *ch, lba, n as u32) {
                Ok(d) => d,
                Err(_) if self.dev.is_cut() => return,
                Err(e) => self.fail(format!("reading {name} at {lba}: {e}")),
            };
            for (i, s) in data.chunks_exact(SECTOR).enumerate() {
                let l = lba + i as u64;
                let sector = &mut m.sectors[l as usize];
                let allowed = sector.after_cut();
                match decode(l, s) {
                    Ok(w) if allowed.contains(&w) => {
                        *sector = Sector {
                            base: vec![w],
                            later: Vec::new(),
                        }
                    }
                    Ok(w) => self.fail(format!(
                        "{name} sector {l} holds write {w} ({:?}), expected one of {allowed:?}",
                        self.history.get(&w)
                    )),
                    Err(e) => self.fail(format!("{name}: {e}")),
                }
                self.stats.sectors_checked += 1;
            }
            lba += n;
        }
        self.model.insert(name.to_owned(), m);
    }

    /// One iteration: load and control operations until the power goes, then reopen and check.
    fn iteration(&mut self) {
        let countdown = self.rng.gen_range(1..=400u64);
        self.dev.arm(countdown);
        let steps = self.rng.gen_range(50..300u32);
        for _ in 0..steps {
            if self.dev.is_cut() {
                break;
            }
            if self.rng.gen_range(0..100) < 6 {
                if let Some(ctl) = self.pick_ctl() {
                    self.control(ctl);
                    continue;
                }
            }
            self.load_step(&[]);
            self.poll();
        }
        self.dev.cut();
        self.settle();
        // Power off: every user of the member goes (the owner stops without a checkpoint).
        self.channels.clear();
        if let Some(pool) = self.pool.take() {
            match Arc::try_unwrap(pool) {
                Ok(pool) => drop(pool),
                Err(_) => self.fail("the pool is still referenced"),
            }
        }
        let loss_seed = self.rng.gen();
        let report = self
            .dev
            .restore(loss_seed)
            .unwrap_or_else(|e| self.fail(format!("restore: {e}")));
        self.stats.volatile_blocks += report.volatile_blocks;
        self.stats.rolled_back += report.rolled_back;
        let member: Arc<dyn BlockDevice> = Arc::clone(&self.dev) as Arc<dyn BlockDevice>;
        let pool = Pool::open(vec![member]).unwrap_or_else(|e| self.fail(format!("reopen: {e}")));
        match pool.check() {
            Ok(r) if r.errors.is_empty() => {}
            Ok(r) => self.fail(format!("pool check: {:?}", r.errors)),
            Err(e) => self.fail(format!("pool check: {e}")),
        }
        let present: Vec<String> = pool.volumes().iter().map(|v| v.volume_name()).collect();
        self.pool = Some(pool);
        for name in &present {
            if !self.model.contains_key(name) {
                self.fail(format!("{name} exists but was never created"));
            }
        }
        let names: Vec<String> = self.model.keys().cloned().collect();
        for name in names {
            let m = &self.model[&name];
            if !present.contains(&name) {
                if !m.maybe {
                    self.fail(format!("{name} lost"));
                }
                self.model.remove(&name);
                continue;
            }
            self.pin(&name);
        }
        self.open_channels();
    }
}

#[test]
fn power_cut_loop_over_a_pool() {
    let env = |k: &str| std::env::var(k).ok();
    let iterations: u64 = env("FERRITE_POWERCUT_ITERATIONS")
        .map(|s| s.parse().expect("FERRITE_POWERCUT_ITERATIONS is a number"))
        .unwrap_or(200);
    let seed = env("FERRITE_POWERCUT_SEED")
        .map(|s| {
            let s = s.trim_start_matches("0x");
            u64::from_str_radix(s, 16).expect("FERRITE_POWERCUT_SEED is hexadecimal")
        })
        .unwrap_or(DEFAULT_SEED);
    let base = malloc("pc-base", 24);
    let dev = Arc::new(PowerCutBdev::new("pc0", base).expect("power-cut bdev"));
    let member: Arc<dyn BlockDevice> = Arc::clone(&dev) as Arc<dyn BlockDevice>;
    let pool = Pool::create(
        "pcut",
        vec![member],
        PoolOptions {
            cluster_size: CLUSTER,
        },
    )
    .expect("pool");
    let mut l = Loop {
        seed,
        iteration: 0,
        rng: StdRng::seed_from_u64(seed),
        dev,
        pool: Some(pool),
        model: BTreeMap::new(),
        channels: BTreeMap::new(),
        next_tag: 1,
        tags: BTreeMap::new(),
        acks: 0,
        next_wid: 0,
        next_name: 0,
        history: BTreeMap::new(),
        watch: None,
        stats: Stats::default(),
    };
    for i in 0..3 {
        let name = format!("v{i}");
        l.pool()
            .create_volume(&name, SIZES[1], Provisioning::Thin)
            .expect("volume");
        l.model.insert(name, VolModel::new(SIZES[1], false));
    }
    l.open_channels();
    let started = Instant::now();
    for i in 0..iterations {
        l.iteration = i;
        l.iteration();
        if l.model.values().filter(|m| !m.snapshot).count() == 0 {
            let name = l.name("v");
            l.pool()
                .create_volume(&name, SIZES[1], Provisioning::Thin)
                .expect("volume");
            l.model.insert(name.clone(), VolModel::new(SIZES[1], false));
            l.reopen_channel(&name);
        }
    }
    let s = &l.stats;
    println!(
        "power-cut loop: {iterations} iterations run, seed {seed:#x}, {:.1} s; {} writes and {} \
         flushes acknowledged, {} live reads checked; control operations: {} done, {} cut short, \
         {} refused; {} volatile blocks at the cuts, {} rolled back; {} sectors checked",
        started.elapsed().as_secs_f64(),
        s.writes_acked,
        s.flushes,
        s.live_reads,
        s.ops_done,
        s.ops_cut,
        s.ops_refused,
        s.volatile_blocks,
        s.rolled_back,
        s.sectors_checked
    );
    assert!(
        s.writes_acked > 0 && s.ops_done > 0 && s.rolled_back > 0,
        "{s:?}"
    );
}
