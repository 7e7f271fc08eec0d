//! Reading jobs back: restore to a namespace (read-ahead MT queue, several writer connections),
//! and scan (rebuild the catalog from the cartridges' own blocks).
//!
//! ```text
//! drive thread (this thread)                 writer threads (one connection each)
//!   read part files in block order             seq = issuer.acquire()  (window m)
//!   -> ReadQueue::fill while it has room  -->  ReadQueue::request(seq) (held until filled)
//!                                              write at offset; issuer.ack(seq)
//! ```

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrite_tape_device::{Barcode, Library, ReadOutcome};
use serde::{Deserialize, Serialize};

use crate::backup::Progress;
use crate::catalog::{Catalog, JobRow, JobState, PartRow};
use crate::error::TapeError;
use crate::format::{self, JobHeader, Kind, Trailer};
use crate::mtqueue::{BlockId, Issuer, MtQueueError, ReadAnswer, ReadQueue, SeqNo, Session};
use crate::source::{Endpoint, Namespace};
use crate::tapeio::{block_buffer, LabelState, Mounter};

/// Parameters of a restore.
#[derive(Debug, Clone)]
pub struct RestoreSpec {
    pub job: u64,
    /// The job being restored (as recorded in the catalog).
    pub from_job: u64,
    pub endpoint: std::sync::Arc<dyn Endpoint>,
    pub connections: usize,
    pub window: usize,
    pub drive: usize,
}

/// What a finished restore did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreReport {
    pub job: u64,
    pub from_job: u64,
    pub bytes: u64,
    pub blocks: u64,
    pub seconds: f64,
}

/// A read queue shared by the drive thread and the writer threads.
struct Shared {
    q: Mutex<(ReadQueue, Option<String>)>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, (ReadQueue, Option<String>)> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self, why: &str) {
        self.lock().1.get_or_insert_with(|| why.to_string());
        self.cv.notify_all();
    }

    /// Waits until read-ahead has room for `block`.
    fn fill(&self, block: BlockId, data: Vec<u8>, timeout: Duration) -> Result<(), TapeError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(why) = &g.1 {
                return Err(MtQueueError::Closed(why.clone()).into());
            }
            if g.0.wants_fill() == Some(block) {
                g.0.fill(block, data);
                drop(g);
                self.cv.notify_all();
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TapeError::Invalid(format!(
                    "restore writers stalled before {block}"
                )));
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn request(&self, seq: SeqNo, timeout: Duration) -> Result<std::sync::Arc<Vec<u8>>, String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(why) = &g.1 {
                return Err(why.clone());
            }
            match g.0.request(seq, BlockId(seq.0)) {
                Ok(ReadAnswer::Ready(d)) => {
                    drop(g);
                    self.cv.notify_all();
                    return Ok(d);
                }
                Ok(ReadAnswer::Held) => {}
                Err(e) => return Err(e.to_string()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "tape read-ahead did not reach {seq} in {timeout:?}"
                ));
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Checks the catalog's parts of a job form one gap-free run ending in a last part.
pub(crate) fn check_parts(job: u64, parts: &[PartRow], total_blocks: u64) -> Result<(), TapeError> {
    let mut next = 0;
    for (i, p) in parts.iter().enumerate() {
        if p.first_block != next || p.part != i as u64 + 1 {
            return Err(TapeError::corrupt(format!(
                "job {job}: part {} starts at block {} where {next} was expected (a cartridge missing?)",
                p.part, p.first_block
            )));
        }
        next += p.blocks;
    }
    if next != total_blocks || parts.last().is_none_or(|p| p.continued) {
        return Err(TapeError::corrupt(format!(
            "job {job}: the catalog has {next} of {total_blocks} blocks; the job is incomplete"
        )));
    }
    Ok(())
}

/// Reads one part from tape into `sink` in block order, checking every block.
pub(crate) fn read_part(
    m: &mut Mounter<'_>,
    part: &PartRow,
    mut sink: impl FnMut(&JobHeader, BlockId, u64, Vec<u8>) -> Result<(), TapeError>,
) -> Result<JobHeader, TapeError> {
    let barcode = Barcode::new(&part.barcode)?;
    m.mount(&barcode)?;
    m.locate_file(part.file_number)?;
    let mut buf = block_buffer();
    let at = |what: &str| format!("cartridge {barcode} file {}: {what}", part.file_number);
    let n = match m.drive().read_block(&mut buf)? {
        ReadOutcome::Block(n) => n,
        other => {
            return Err(TapeError::corrupt(at(&format!(
                "expected a job header, found {other:?}"
            ))))
        }
    };
    let (_, header): (_, JobHeader) = format::parse_record(&buf[..n], Kind::JobHeader)?;
    if header.job != part.job || header.part != part.part || header.first_block != part.first_block
    {
        return Err(TapeError::corrupt(at(&format!(
            "holds job {} part {} from block {}, the catalog says job {} part {} from {}",
            header.job, header.part, header.first_block, part.job, part.part, part.first_block
        ))));
    }
    let mut crcs = Vec::with_capacity(part.blocks as usize);
    for b in part.first_block..part.first_block + part.blocks {
        let n = match m.drive().read_block(&mut buf) {
            Ok(ReadOutcome::Block(n)) => n,
            Ok(other) => {
                return Err(TapeError::corrupt(at(&format!(
                    "block {b} missing ({other:?})"
                ))))
            }
            Err(e) => return Err(TapeError::corrupt(at(&format!("block {b}: {e}")))),
        };
        let (h, payload) = format::parse_block(&buf[..n])
            .map_err(|e| TapeError::corrupt(at(&format!("block {b}: {e}"))))?;
        if h.kind != Kind::Data || h.job != header.job || h.index != b {
            return Err(TapeError::corrupt(at(&format!(
                "expected data block {b} of job {}, found {:?} {} of job {}",
                header.job, h.kind, h.index, h.job
            ))));
        }
        crcs.push(h.payload_crc);
        sink(&header, BlockId(b), h.offset, payload.to_vec())?;
    }
    let n = match m.drive().read_block(&mut buf)? {
        ReadOutcome::Block(n) => n,
        other => {
            return Err(TapeError::corrupt(at(&format!(
                "expected the trailer, found {other:?}"
            ))))
        }
    };
    let (_, trailer): (_, Trailer) = format::parse_record(&buf[..n], Kind::Trailer)?;
    if trailer.crcs != crcs || trailer.blocks != part.blocks {
        return Err(TapeError::corrupt(at(
            "the trailer's index does not match the blocks read",
        )));
    }
    Ok(header)
}

/// Restores a job from tape to a namespace: for an incremental, its full backup first, then
/// every incremental of the chain in order.
pub fn run_restore(
    lib: &mut Library,
    catalog: &Catalog,
    spec: &RestoreSpec,
    progress: &Progress,
) -> Result<RestoreReport, TapeError> {
    let chain = crate::incremental::chain(catalog, spec.from_job)?;
    let mut parts_of = Vec::with_capacity(chain.len());
    for j in &chain {
        let parts = catalog.parts(j.id)?;
        check_parts(j.id, &parts, j.total_blocks)?;
        parts_of.push(parts);
    }
    let mut first = spec.endpoint.connect().map_err(TapeError::Namespace)?;
    let (size, lba) = first.geometry().map_err(TapeError::Namespace)?;
    let need = chain.iter().map(|j| j.source_bytes).max().unwrap_or(0);
    if size < need {
        return Err(TapeError::TargetTooSmall {
            target: size,
            backup: need,
        });
    }
    if let Some(j) = chain.iter().find(|j| j.source_bytes % u64::from(lba) != 0) {
        return Err(TapeError::Invalid(format!(
            "job {}'s {} bytes are not whole {lba} byte LBAs of the target",
            j.id, j.source_bytes
        )));
    }
    progress.total_bytes.store(
        chain.iter().map(|j| j.bytes_written).sum(),
        Ordering::Relaxed,
    );
    let t0 = Instant::now();
    let mut m = Mounter::new(lib, spec.drive)?;
    let mut first = Some(first);
    let mut blocks = 0;
    let mut r = Ok(());
    for (j, parts) in chain.iter().zip(&parts_of) {
        r = restore_job(&mut m, spec, j, parts, progress, first.take());
        if r.is_err() {
            break;
        }
        blocks += j.total_blocks;
        if chain.len() > 1 {
            log::info!("restore {}: job {} applied", spec.job, j.id);
        }
    }
    let _ = m.dismount();
    r?;
    Ok(RestoreReport {
        job: spec.job,
        from_job: spec.from_job,
        bytes: chain.last().map_or(0, |j| j.source_bytes),
        blocks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Writes zeroes over `(offset, length)` ranges (an incremental's deallocated extents).
fn write_zero_extents(ns: &mut dyn Namespace, extents: &[(u64, u64)]) -> Result<(), String> {
    let zeros = vec![0u8; 1 << 20];
    for &(off, len) in extents {
        let mut at = off;
        while at < off + len {
            let n = (off + len - at).min(zeros.len() as u64) as usize;
            ns.write_at(at, &zeros[..n])
                .map_err(|e| format!("zeroing at {at}: {e}"))?;
            at += n as u64;
        }
    }
    ns.flush()
}

/// Restores the blocks of one job (one link of a chain), each at the source offset its tape
/// block header records.
fn restore_job(
    m: &mut Mounter<'_>,
    spec: &RestoreSpec,
    job: &JobRow,
    parts: &[PartRow],
    progress: &Progress,
    first: Option<Box<dyn Namespace>>,
) -> Result<(), TapeError> {
    let total = job.total_blocks;
    let window = spec.window.max(2);
    let shared = Shared {
        q: Mutex::new((
            ReadQueue::new(
                Session::new(BlockId(0), SeqNo(0)),
                2 * window as u64,
                window as u64,
            ),
            None,
        )),
        cv: Condvar::new(),
    };
    let issuer = Issuer::new(SeqNo(0), SeqNo(total), window);
    // Source offset of each block read ahead and not yet written.
    let offsets: Mutex<HashMap<u64, u64>> = Mutex::new(HashMap::new());
    let writer_error: Mutex<Option<String>> = Mutex::new(None);
    let fail = |why: String| {
        writer_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why.clone());
        issuer.close(&why);
        shared.close(&why);
    };
    let mut header = None;
    let r = std::thread::scope(|s| {
        let mut firstc = first;
        let mut others = Vec::new();
        for c in 0..spec.connections.max(1) {
            let conn = firstc.take();
            let (issuer, shared, fail, offsets) = (&issuer, &shared, &fail, &offsets);
            others.push(s.spawn(move || {
                let mut ns = match conn.map_or_else(|| spec.endpoint.connect(), Ok) {
                    Ok(n) => n,
                    Err(e) => return fail(format!("connection {c}: {e}")),
                };
                loop {
                    let seq = match issuer.acquire(Duration::from_secs(120)) {
                        Ok(Some(s)) => s,
                        Ok(None) => break,
                        Err(e) => return fail(e),
                    };
                    let data = match shared.request(seq, Duration::from_secs(120)) {
                        Ok(d) => d,
                        Err(e) => return fail(e),
                    };
                    let Some(at) = offsets
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&seq.0)
                    else {
                        return fail(format!("block {} has no offset", seq.0));
                    };
                    if let Err(e) = ns.write_at(at, &data) {
                        return fail(format!("connection {c}: write at {at}: {e}"));
                    }
                    progress
                        .done_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    issuer.ack(seq);
                }
                if let Err(e) = ns.flush() {
                    fail(format!("connection {c}: flush: {e}"));
                }
            }));
        }
        let mut result = Ok(());
        for p in parts {
            let r = read_part(m, p, |_, b, offset, data| {
                if progress.cancelled() {
                    return Err(TapeError::Cancelled(spec.job));
                }
                offsets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(b.0, offset);
                shared.fill(b, data, Duration::from_secs(120))
            });
            match r {
                Ok(h) => header = Some(h),
                Err(e) => {
                    fail(e.to_string());
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            shared.lock().0.set_end(BlockId(total));
            result = issuer
                .wait_all_acked(Duration::from_secs(300))
                .map_err(TapeError::Invalid);
        }
        for t in others {
            let _ = t.join();
        }
        result
    });
    if let Some(e) = writer_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        if r.is_ok() {
            return Err(TapeError::Namespace(e));
        }
    }
    r?;
    let zero = header.map(|h| h.zero_extents).unwrap_or_default();
    if !zero.is_empty() {
        let mut ns = spec.endpoint.connect().map_err(TapeError::Namespace)?;
        write_zero_extents(ns.as_mut(), &zero).map_err(TapeError::Namespace)?;
    }
    Ok(())
}

/// Reads every part of a finished backup from tape and checks every block (header and payload
/// checksums, order, the trailer's index) without writing anywhere.
pub fn run_verify(
    lib: &mut Library,
    catalog: &Catalog,
    from_job: u64,
    drive: usize,
    progress: &Progress,
) -> Result<RestoreReport, TapeError> {
    let job = catalog.job(from_job)?;
    let parts = catalog.parts(from_job)?;
    check_parts(from_job, &parts, job.total_blocks)?;
    progress
        .total_bytes
        .store(job.source_bytes, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut m = Mounter::new(lib, drive)?;
    let r = parts.iter().try_for_each(|p| {
        read_part(&mut m, p, |_, _, _, data| {
            if progress.cancelled() {
                return Err(TapeError::Cancelled(progress.job));
            }
            progress
                .done_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .map(|_| ())
    });
    let _ = m.dismount();
    r?;
    Ok(RestoreReport {
        job: progress.job,
        from_job,
        bytes: job.source_bytes,
        blocks: job.total_blocks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// What scanning one cartridge found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanReport {
    pub barcode: String,
    pub parts: Vec<PartRow>,
    /// Files that hold a job header but no trailer (a job that died mid-part).
    pub unfinished: Vec<String>,
}

/// Reads a whole cartridge, checking every block, and records what it holds in the catalog.
pub fn scan_cartridge(
    m: &mut Mounter<'_>,
    barcode: &Barcode,
    catalog: &Catalog,
) -> Result<ScanReport, TapeError> {
    m.mount(barcode)?;
    let label = match m.read_label()? {
        LabelState::Ours(l) => l,
        LabelState::Blank => {
            return Err(TapeError::Invalid(format!("cartridge {barcode} is blank")))
        }
        LabelState::Foreign(why) => {
            return Err(TapeError::Invalid(format!(
                "cartridge {barcode} holds another format: {why}"
            )))
        }
    };
    catalog.add_cartridge(barcode.as_str(), label.labelled_at)?;
    let mut report = ScanReport {
        barcode: barcode.to_string(),
        parts: Vec::new(),
        unfinished: Vec::new(),
    };
    let mut buf = block_buffer();
    for file in 1u64.. {
        let n = match m.drive().read_block(&mut buf)? {
            ReadOutcome::EndOfData => break,
            ReadOutcome::Filemark => continue,
            ReadOutcome::Block(n) => n,
        };
        let (_, h): (_, JobHeader) = format::parse_record(&buf[..n], Kind::JobHeader)?;
        let mut crcs = Vec::new();
        let trailer = loop {
            let n = match m.drive().read_block(&mut buf)? {
                ReadOutcome::Block(n) => n,
                _ => break None,
            };
            let (bh, _) = format::parse_block(&buf[..n])
                .map_err(|e| TapeError::corrupt(format!("cartridge {barcode} file {file}: {e}")))?;
            match bh.kind {
                Kind::Data if bh.index == h.first_block + crcs.len() as u64 => {
                    crcs.push(bh.payload_crc)
                }
                Kind::Trailer => {
                    let (_, t): (_, Trailer) = format::parse_record(&buf[..n], Kind::Trailer)?;
                    // past the trailer's filemark
                    let _ = m.drive().read_block(&mut buf)?;
                    break Some(t);
                }
                k => {
                    return Err(TapeError::corrupt(format!(
                        "cartridge {barcode} file {file}: unexpected {k:?} block {}",
                        bh.index
                    )))
                }
            }
        };
        let job_known = catalog.job(h.job).ok();
        let Some(t) = trailer.filter(|t| t.crcs == crcs) else {
            report.unfinished.push(format!(
                "file {file}: job {} part {} without its trailer",
                h.job, h.part
            ));
            if job_known.is_none() {
                catalog.put_job(&job_row(&h, JobState::Interrupted))?;
            }
            continue;
        };
        let row = PartRow {
            job: h.job,
            part: h.part,
            barcode: barcode.to_string(),
            file_number: file,
            first_block: h.first_block,
            blocks: t.blocks,
            bytes: t.bytes,
            continued: t.continued,
        };
        catalog.put_part(&row)?;
        report.parts.push(row);
        if job_known.is_none_or(|j| j.state != JobState::Done) {
            let parts = catalog.parts(h.job)?;
            let complete = check_parts(h.job, &parts, h.total_blocks).is_ok();
            let mut j = job_row(
                &h,
                if complete {
                    JobState::Done
                } else {
                    JobState::Interrupted
                },
            );
            if complete {
                j.bytes_written = parts.iter().map(|p| p.bytes).sum();
                j.error = None;
            }
            catalog.put_job(&j)?;
        }
    }
    Ok(report)
}

fn job_row(h: &JobHeader, state: JobState) -> JobRow {
    JobRow {
        id: h.job,
        kind: if h.journal.is_some() {
            "journal".into()
        } else if h.base_job.is_some() {
            "incremental".into()
        } else {
            "backup".into()
        },
        base_job: h.base_job,
        source: serde_json::to_value(&h.source).unwrap_or_default(),
        state,
        total_blocks: h.total_blocks,
        source_bytes: h.source_bytes,
        bytes_written: 0,
        started_at: h.started_at,
        finished_at: None,
        error: (state != JobState::Done)
            .then(|| "parts missing from the scanned cartridges".to_string()),
    }
}
