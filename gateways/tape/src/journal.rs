//! Replication journals on tape: archive a range of a consistency group's journal (pulled from
//! ferrited's journal stream endpoint, the one ferrite-replicator uses) in sequence order, trim
//! the journal only once the range is on tape durably, and replay an archive onto a namespace
//! up to a sequence number or a timestamp (point-in-time restore on top of a restored backup).
//!
//! ```text
//! ferrited <socket>.journal ── Hello, JournalPull(from, n) ──▶ records in seq order
//!   each record's protocol frame = one tape data block (block i = seq first + i)
//!   trailer + filemark written, part in the catalog ──▶ JournalTrim(last)
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferrite_gateway_protocol::{
    decode, DomainId, GroupId, Hello, JournalPull, JournalStatus, JournalTrim, Message, NodeId,
    RecordOp, Role, SeqNo,
};
use ferrite_tape_device::Library;
use serde::{Deserialize, Serialize};

use crate::backup::{PartWriter, Progress};
use crate::catalog::{Catalog, JobState, PartRow};
use crate::error::TapeError;
use crate::format::{JobHeader, JournalRange, Source, MAX_PAYLOAD};
use crate::mtqueue::BlockId;
use crate::restore::{check_parts, read_part};
use crate::source::Endpoint;
use crate::tapeio::{now_secs, Mounter};

/// The sequence domain the appliance's journal numbers records in.
const DOMAIN: DomainId = DomainId(1);
/// Records asked for per pull.
const PULL: u32 = 256;

/// A blocking client of the journal stream endpoint.
#[derive(Debug)]
pub struct JournalClient {
    s: UnixStream,
    buf: Vec<u8>,
    group: GroupId,
    path: PathBuf,
}

/// One record as pulled: its header fields and its encoded protocol frame.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub seq: u64,
    pub frame: Vec<u8>,
}

impl JournalClient {
    pub fn connect(path: &Path, group: u32) -> Result<JournalClient, TapeError> {
        let s = UnixStream::connect(path)
            .map_err(|e| TapeError::Invalid(format!("journal endpoint {}: {e}", path.display())))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let mut c = JournalClient {
            s,
            buf: Vec::new(),
            group: GroupId(group),
            path: path.to_path_buf(),
        };
        c.send(&Message::Hello(Hello {
            role: Role::Primary,
            min_version: ferrite_gateway_protocol::wire::MIN_VERSION,
            max_version: ferrite_gateway_protocol::wire::VERSION,
            node: NodeId(0),
            nonce: [0; 32],
        }))?;
        c.until_status(&mut Vec::new(), true)?;
        Ok(c)
    }

    fn err(&self, what: impl std::fmt::Display) -> TapeError {
        TapeError::Invalid(format!("journal endpoint {}: {what}", self.path.display()))
    }

    fn send(&mut self, m: &Message<'_>) -> Result<(), TapeError> {
        let mut v = Vec::new();
        m.encode_to_vec(&mut v).map_err(|e| self.err(e))?;
        self.s.write_all(&v).map_err(|e| self.err(e))
    }

    /// Reads frames until a `JournalStatus` (or the endpoint's `Hello` when `hello`); records
    /// go to `out`. A `Refuse` is an error with the endpoint's reason.
    fn until_status(
        &mut self,
        out: &mut Vec<Pulled>,
        hello: bool,
    ) -> Result<Option<JournalStatus>, TapeError> {
        loop {
            while let Some((m, n)) = decode(&self.buf).map_err(|e| self.err(e))? {
                let mut done = None;
                match m {
                    Message::Record(r) => out.push(Pulled {
                        seq: r.header.seq.0,
                        frame: self.buf[..n].to_vec(),
                    }),
                    Message::Refuse(r) => return Err(self.err(format!("refused: {}", r.reason))),
                    Message::JournalStatus(st) => done = Some(Some(st)),
                    Message::Hello(_) if hello => done = Some(None),
                    _ => {}
                }
                self.buf.drain(..n);
                if let Some(d) = done {
                    return Ok(d);
                }
            }
            let mut chunk = vec![0u8; 1 << 16];
            let n = self.s.read(&mut chunk).map_err(|e| self.err(e))?;
            if n == 0 {
                return Err(self.err("closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Up to `max` committed records from `from` (0: from the trim point) and the status.
    pub fn pull(&mut self, from: u64, max: u32) -> Result<(Vec<Pulled>, JournalStatus), TapeError> {
        self.send(&Message::JournalPull(JournalPull {
            group: self.group,
            domain: DOMAIN,
            from_seq: SeqNo(from),
            max_records: max,
        }))?;
        let mut out = Vec::new();
        let st = self.until_status(&mut out, false)?;
        let st = st.ok_or_else(|| self.err("no status after a pull"))?;
        Ok((out, st))
    }

    /// Frees the journal up to `seq`.
    pub fn trim(&mut self, seq: u64) -> Result<JournalStatus, TapeError> {
        self.send(&Message::JournalTrim(JournalTrim {
            group: self.group,
            domain: DOMAIN,
            up_to_seq: SeqNo(seq),
        }))?;
        let st = self.until_status(&mut Vec::new(), false)?;
        st.ok_or_else(|| self.err("no status after a trim"))
    }
}

/// Parameters of a journal archive.
#[derive(Debug, Clone)]
pub struct ArchiveSpec {
    pub job: u64,
    /// ferrited's journal stream endpoint (`<ferrited socket>.journal`).
    pub socket: PathBuf,
    pub group: u32,
    /// First record (default: the oldest the journal holds).
    pub from_seq: Option<u64>,
    /// Last record (default: the newest committed when the job starts).
    pub to_seq: Option<u64>,
    /// Trim the journal up to the last archived record once it is on tape.
    pub trim: bool,
    pub drive: usize,
    /// Automatic recycling (as for backups).
    pub recycle_before: Option<u64>,
}

/// What an archive did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveReport {
    pub job: u64,
    pub group: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    pub bytes: u64,
    pub parts: Vec<PartRow>,
    /// The journal's trim point after the job (0: not trimmed).
    pub trimmed_to: u64,
    pub seconds: f64,
}

/// Archives a range of a journal to tape in sequence order, then trims it (when asked).
pub fn run_journal_archive(
    lib: &mut Library,
    catalog: &Catalog,
    spec: &ArchiveSpec,
    progress: &Progress,
) -> Result<ArchiveReport, TapeError> {
    let t0 = Instant::now();
    let mut c = JournalClient::connect(&spec.socket, spec.group)?;
    let (_, st) = c.pull(0, 1)?;
    let (tail, head) = (st.tail_seq.0, st.head_seq.0);
    let first = spec.from_seq.unwrap_or(tail + 1);
    let last = spec.to_seq.unwrap_or(head);
    if first <= tail {
        return Err(TapeError::Invalid(format!(
            "journal group {}: records up to {tail} are already trimmed, {first} cannot be archived",
            spec.group
        )));
    }
    if last < first || last > head {
        return Err(TapeError::Invalid(format!(
            "journal group {} holds records {}..={head}: nothing to archive in {first}..={last}",
            spec.group,
            tail + 1
        )));
    }
    let total = last - first + 1;
    let header = JobHeader {
        job: spec.job,
        part: 1,
        source: Source {
            address: spec.socket.display().to_string(),
            subnqn: "journal".into(),
            nsid: spec.group,
            name: Some(format!("journal group {}", spec.group)),
        },
        source_bytes: 0,
        lba_size: 0,
        chunk_bytes: MAX_PAYLOAD as u32,
        total_blocks: total,
        first_block: 0,
        started_at: now_secs(),
        base_job: None,
        zero_extents: Vec::new(),
        journal: Some(JournalRange {
            group: spec.group,
            first_seq: first,
            last_seq: last,
        }),
    };
    let mut w = PartWriter::open(
        lib,
        catalog,
        progress,
        header,
        "journal",
        spec.drive,
        spec.recycle_before,
    )?;
    let mut next = first;
    let written = (|| {
        while next <= last {
            if progress.cancelled() {
                return Err(TapeError::Cancelled(spec.job));
            }
            let want = PULL.min((last - next + 1) as u32);
            let (recs, _) = c.pull(next, want)?;
            if recs.is_empty() {
                return Err(TapeError::Invalid(format!(
                    "journal group {}: record {next} is no longer served",
                    spec.group
                )));
            }
            for r in recs.into_iter().take(want as usize) {
                if r.seq != next {
                    return Err(TapeError::Invalid(format!(
                        "journal group {}: record {} arrived where {next} was expected",
                        spec.group, r.seq
                    )));
                }
                if r.frame.len() > MAX_PAYLOAD {
                    return Err(TapeError::Invalid(format!(
                        "journal record {next} is {} bytes, more than a tape block holds",
                        r.frame.len()
                    )));
                }
                w.write_data(BlockId(next - first), next, &r.frame)?;
                next += 1;
            }
        }
        Ok(())
    })();
    if let Err(e) = written {
        w.abandon();
        return Err(e);
    }
    // Trailer and filemark on tape (the drive flushes at the filemark), parts in the catalog:
    // only now may the journal forget the records.
    let parts = w.finish()?;
    let trimmed_to = if spec.trim {
        c.trim(last)?.tail_seq.0
    } else {
        0
    };
    Ok(ArchiveReport {
        job: spec.job,
        group: spec.group,
        first_seq: first,
        last_seq: last,
        records: total,
        bytes: parts.iter().map(|p| p.bytes).sum(),
        parts,
        trimmed_to,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Parameters of a journal replay.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    pub job: u64,
    /// Journal archive jobs, in sequence order (each must continue the one before).
    pub from_jobs: Vec<u64>,
    pub endpoint: std::sync::Arc<dyn Endpoint>,
    /// The journal's namespace id whose records are applied (needed when the group journals
    /// several).
    pub journal_nsid: Option<u32>,
    /// Apply records up to this sequence number (inclusive).
    pub up_to_seq: Option<u64>,
    /// Apply records with timestamps up to this one (inclusive).
    pub up_to_ts: Option<u64>,
    pub drive: usize,
}

/// What a replay did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayReport {
    pub job: u64,
    pub applied: u64,
    /// The last record applied (0: none).
    pub last_seq: u64,
    pub last_ts: u64,
    pub other_namespaces: u64,
    pub seconds: f64,
}

/// Applies archived journal records to a namespace in sequence order, stopping after the
/// sequence number or timestamp limit.
pub fn run_journal_replay(
    lib: &mut Library,
    catalog: &Catalog,
    spec: &ReplaySpec,
    progress: &Progress,
) -> Result<ReplayReport, TapeError> {
    if spec.from_jobs.is_empty() {
        return Err(TapeError::Invalid("no journal archive job given".into()));
    }
    let mut jobs = Vec::new();
    for &id in &spec.from_jobs {
        let j = catalog.job(id)?;
        if j.kind != "journal" || j.state != JobState::Done {
            return Err(TapeError::Invalid(format!(
                "job {id} is a {:?} {} job: only finished journal archives replay",
                j.state, j.kind
            )));
        }
        let parts = catalog.parts(id)?;
        check_parts(id, &parts, j.total_blocks)?;
        jobs.push((j, parts));
    }
    progress.total_bytes.store(
        jobs.iter().map(|(j, _)| j.bytes_written).sum(),
        Ordering::Relaxed,
    );
    let mut ns = spec.endpoint.connect().map_err(TapeError::Namespace)?;
    let (size, lba) = ns.geometry().map_err(TapeError::Namespace)?;
    let lba = u64::from(lba);
    let t0 = Instant::now();
    let mut rep = ReplayReport {
        job: spec.job,
        applied: 0,
        last_seq: 0,
        last_ts: 0,
        other_namespaces: 0,
        seconds: 0.0,
    };
    let mut nsid = spec.journal_nsid;
    let mut group = None;
    let mut done = false;
    let mut m = Mounter::new(lib, spec.drive)?;
    let zeros = vec![0u8; 1 << 20];
    let r = (|| -> Result<(), TapeError> {
        for (j, parts) in &jobs {
            for p in parts {
                if done {
                    return Ok(());
                }
                read_part(&mut m, p, |h, _, seq, frame| {
                    if progress.cancelled() {
                        return Err(TapeError::Cancelled(spec.job));
                    }
                    progress
                        .done_bytes
                        .fetch_add(frame.len() as u64, Ordering::Relaxed);
                    if done {
                        return Ok(());
                    }
                    let range = h.journal.ok_or_else(|| {
                        TapeError::corrupt(format!("job {} is not a journal archive on tape", j.id))
                    })?;
                    if *group.get_or_insert(range.group) != range.group {
                        return Err(TapeError::Invalid(format!(
                            "job {} holds group {}, the jobs before group {}",
                            j.id,
                            range.group,
                            group.unwrap_or(0)
                        )));
                    }
                    let rec = match decode(&frame) {
                        Ok(Some((Message::Record(r), n))) if n == frame.len() => r,
                        _ => {
                            return Err(TapeError::corrupt(format!(
                                "job {} block for record {seq} is not a journal record",
                                j.id
                            )))
                        }
                    };
                    let hd = rec.header;
                    if hd.seq.0 != seq {
                        return Err(TapeError::corrupt(format!(
                            "job {}: record {} stored as {seq}",
                            j.id, hd.seq.0
                        )));
                    }
                    if rep.last_seq != 0 && seq != rep.last_seq + 1 {
                        return Err(TapeError::Invalid(format!(
                            "record {seq} follows {}: the archives leave a gap",
                            rep.last_seq
                        )));
                    }
                    if spec.up_to_seq.is_some_and(|l| seq > l)
                        || spec.up_to_ts.is_some_and(|l| hd.ts.0 > l)
                    {
                        done = true;
                        return Ok(());
                    }
                    rep.last_seq = seq;
                    rep.last_ts = hd.ts.0;
                    if *nsid.get_or_insert(hd.nsid.0) != hd.nsid.0 {
                        rep.other_namespaces += 1;
                        return Ok(());
                    }
                    let at = hd.slba * lba;
                    let len = u64::from(hd.nblocks) * lba;
                    if at + len > size {
                        return Err(TapeError::TargetTooSmall {
                            target: size,
                            backup: at + len,
                        });
                    }
                    match hd.op {
                        RecordOp::Write => {
                            if rec.data.len() as u64 != len {
                                return Err(TapeError::corrupt(format!(
                                    "record {seq}: {} bytes for {} blocks of {lba}",
                                    rec.data.len(),
                                    hd.nblocks
                                )));
                            }
                            ns.write_at(at, rec.data).map_err(TapeError::Namespace)?;
                        }
                        RecordOp::WriteZeroes | RecordOp::Deallocate => {
                            let mut o = at;
                            while o < at + len {
                                let n = (at + len - o).min(zeros.len() as u64) as usize;
                                ns.write_at(o, &zeros[..n]).map_err(TapeError::Namespace)?;
                                o += n as u64;
                            }
                        }
                    }
                    rep.applied += 1;
                    Ok(())
                })?;
            }
        }
        Ok(())
    })();
    let _ = m.dismount();
    r?;
    ns.flush().map_err(TapeError::Namespace)?;
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}
