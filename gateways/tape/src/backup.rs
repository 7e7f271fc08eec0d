//! The backup job: read a namespace over several NVMe/TCP connections at once, let the MT queue
//! put the blocks back in order, and stream them onto tape, spanning cartridges at early
//! warning.
//!
//! ```text
//! reader threads (one connection each)      drive thread (this thread)
//!   seq = issuer.acquire()  (window m)        queue.run_writer: block at the flush cursor
//!   read chunk seq                              -> PartWriter::write_data -> drive
//!   queue.offer(seq, block, data)  -------->  ack(seq) -> issuer (window opens)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_tape_device::{Barcode, DeviceError, Library, WriteOutcome};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, JobRow, JobState, PartRow};
use crate::error::TapeError;
use crate::format::{self, JobHeader, Kind, Trailer, MAX_PAYLOAD};
use crate::incremental::{block_plan, Incremental};
use crate::mtqueue::{
    AckPolicy, BlockId, DriveQueue, DriveQueueStats, Issuer, SeqNo, Session, WriteQueue,
};
use crate::source::Endpoint;
use crate::tapeio::{now_secs, Mounter};

/// What a job reports while it runs (shared with the RPC thread).
#[derive(Debug)]
pub struct Progress {
    pub job: u64,
    pub kind: &'static str,
    pub total_bytes: AtomicU64,
    pub done_bytes: AtomicU64,
    pub cancel: AtomicBool,
    pub started: Instant,
    pub state: Mutex<JobState>,
    pub error: Mutex<Option<String>>,
    pub cartridges: Mutex<Vec<String>>,
    pub queue: Mutex<Option<DriveQueueStats>>,
    /// The finished job's report (job status shows it).
    pub result: Mutex<Option<serde_json::Value>>,
}

impl Progress {
    pub fn new(job: u64, kind: &'static str) -> Progress {
        Progress {
            job,
            kind,
            total_bytes: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            started: Instant::now(),
            state: Mutex::new(JobState::Running),
            error: Mutex::new(None),
            cartridges: Mutex::new(Vec::new()),
            queue: Mutex::new(None),
            result: Mutex::new(None),
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub(crate) fn add_cartridge(&self, b: &Barcode) {
        let mut c = self.cartridges.lock().unwrap_or_else(|p| p.into_inner());
        if !c.iter().any(|x| x == b.as_str()) {
            c.push(b.to_string());
        }
    }
}

/// Parameters of a backup.
#[derive(Debug, Clone)]
pub struct BackupSpec {
    pub job: u64,
    pub endpoint: Arc<dyn Endpoint>,
    pub connections: usize,
    pub chunk_bytes: u32,
    /// Issuer window m (requests in flight) and MT queue window.
    pub window: usize,
    /// Deliver each reader's batches in a shuffled order (tests and demonstrations of the
    /// reordering; the tape order is the same).
    pub shuffle: bool,
    pub drive: usize,
    /// Only the extents changed since an earlier job (None: the whole namespace).
    pub incremental: Option<Incremental>,
    /// Automatic recycling: full cartridges whose jobs all finished before this may be reused.
    pub recycle_before: Option<u64>,
}

/// What a finished backup did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupReport {
    pub job: u64,
    pub bytes: u64,
    pub blocks: u64,
    pub parts: Vec<PartRow>,
    pub seconds: f64,
    pub queue: DriveQueueStats,
}

/// Writes the parts of one job onto cartridges.
pub(crate) struct PartWriter<'a, 'l> {
    m: Mounter<'l>,
    catalog: &'a Catalog,
    progress: &'a Progress,
    header: JobHeader,
    barcode: Barcode,
    file_number: u64,
    blocks: u64,
    bytes: u64,
    crcs: Vec<u32>,
    used: Vec<Barcode>,
    parts: Vec<PartRow>,
}

impl<'a, 'l> PartWriter<'a, 'l> {
    /// Records the job as running, mounts a cartridge to append to and starts part 1.
    pub(crate) fn open(
        lib: &'l mut Library,
        catalog: &'a Catalog,
        progress: &'a Progress,
        header: JobHeader,
        kind: &str,
        drive: usize,
        recycle_before: Option<u64>,
    ) -> Result<PartWriter<'a, 'l>, TapeError> {
        catalog.put_job(&JobRow {
            id: header.job,
            kind: kind.into(),
            source: serde_json::to_value(&header.source).unwrap_or_default(),
            state: JobState::Running,
            total_blocks: header.total_blocks,
            source_bytes: header.source_bytes,
            bytes_written: 0,
            started_at: header.started_at,
            finished_at: None,
            error: None,
            base_job: header.base_job,
        })?;
        let mut m = Mounter::new(lib, drive)?.recycling(recycle_before);
        let barcode = m.mount_for_append(&[], catalog)?;
        let mut w = PartWriter {
            m,
            catalog,
            progress,
            header,
            barcode,
            file_number: 0,
            blocks: 0,
            bytes: 0,
            crcs: Vec::new(),
            used: Vec::new(),
            parts: Vec::new(),
        };
        w.start_part()?;
        Ok(w)
    }

    /// Ends the last part (trailer, filemark: on tape durably), returns the cartridge and
    /// marks the job done.
    pub(crate) fn finish(mut self) -> Result<Vec<PartRow>, TapeError> {
        self.end_part(false)?;
        let bytes: u64 = self.parts.iter().map(|p| p.bytes).sum();
        self.m.dismount()?;
        self.catalog
            .finish_job(self.header.job, JobState::Done, bytes, now_secs(), None)?;
        Ok(self.parts)
    }

    /// Closes the file of a job that failed, so the next job appends after it; the part has
    /// no trailer, which scan reports as an unfinished part.
    pub(crate) fn abandon(&mut self) {
        let _ = self.m.drive().write_filemarks(1);
    }

    fn start_part(&mut self) -> Result<(), TapeError> {
        let d = self.m.drive();
        let pos = d.position()?;
        self.file_number = pos.file_number;
        self.blocks = 0;
        self.bytes = 0;
        self.crcs.clear();
        let h = format::encode_record(
            Kind::JobHeader,
            self.header.job,
            self.header.part,
            &self.header,
        );
        d.write_block(&h)?;
        self.progress.add_cartridge(&self.barcode);
        Ok(())
    }

    fn end_part(&mut self, continued: bool) -> Result<(), TapeError> {
        let t = Trailer {
            job: self.header.job,
            part: self.header.part,
            first_block: self.header.first_block,
            blocks: self.blocks,
            bytes: self.bytes,
            continued,
            crcs: std::mem::take(&mut self.crcs),
        };
        let d = self.m.drive();
        d.write_block(&format::encode_record(Kind::Trailer, t.job, t.part, &t))?;
        d.write_filemarks(1)?;
        let row = PartRow {
            job: t.job,
            part: t.part,
            barcode: self.barcode.to_string(),
            file_number: self.file_number,
            first_block: t.first_block,
            blocks: t.blocks,
            bytes: t.bytes,
            continued,
        };
        self.catalog.put_part(&row)?;
        self.parts.push(row);
        Ok(())
    }

    /// Closes this cartridge's part and continues the job on the next cartridge.
    fn span(&mut self, next_block: u64) -> Result<(), TapeError> {
        self.end_part(true)?;
        self.used.push(self.barcode.clone());
        log::info!(
            "job {}: cartridge {} full, spanning",
            self.header.job,
            self.barcode
        );
        self.m.dismount()?;
        self.barcode = self.m.mount_for_append(&self.used, self.catalog)?;
        self.header.part += 1;
        self.header.first_block = next_block;
        self.start_part()
    }

    pub(crate) fn write_data(
        &mut self,
        block: BlockId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), TapeError> {
        let framed = format::encode_block(Kind::Data, self.header.job, block.0, offset, data);
        let outcome = match self.m.drive().write_block(&framed) {
            Err(DeviceError::EndOfMedium(_)) if self.blocks > 0 => {
                // The block did not fit in the early-warning zone: it goes on the next cartridge.
                self.span(block.0)?;
                self.m.drive().write_block(&framed)?
            }
            r => r?,
        };
        self.blocks += 1;
        self.bytes += data.len() as u64;
        // The frame's header already holds the payload's CRC32C: no second pass over the data.
        self.crcs.push(format::payload_crc(&framed));
        self.progress
            .done_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if outcome == WriteOutcome::EarlyWarning && block.0 + 1 < self.header.total_blocks {
            self.span(block.0 + 1)?;
        }
        Ok(())
    }
}

/// Runs a backup to the end (or the first error), recording it in the catalog.
pub fn run_backup(
    lib: &mut Library,
    catalog: &Catalog,
    spec: &BackupSpec,
    progress: &Progress,
) -> Result<BackupReport, TapeError> {
    if spec.chunk_bytes == 0 || spec.chunk_bytes as usize > MAX_PAYLOAD {
        return Err(TapeError::Invalid(format!(
            "chunk_bytes must be 1..={MAX_PAYLOAD}"
        )));
    }
    let mut first = spec.endpoint.connect().map_err(TapeError::Namespace)?;
    let (size, lba) = first.geometry().map_err(TapeError::Namespace)?;
    if spec.chunk_bytes % lba != 0 {
        return Err(TapeError::Invalid(format!(
            "chunk_bytes {} is not a multiple of the {lba} byte LBA",
            spec.chunk_bytes
        )));
    }
    // (source offset, length) of every data block, in block order.
    let blocks = block_plan(size, lba, spec.chunk_bytes, spec.incremental.as_ref())?;
    let total_blocks = blocks.len() as u64;
    let to_read: u64 = blocks.iter().map(|b| u64::from(b.1)).sum();
    progress.total_bytes.store(to_read, Ordering::Relaxed);
    let header = JobHeader {
        job: spec.job,
        part: 1,
        source: spec.endpoint.describe(),
        source_bytes: size,
        lba_size: lba,
        chunk_bytes: spec.chunk_bytes,
        total_blocks,
        first_block: 0,
        started_at: now_secs(),
        base_job: spec.incremental.as_ref().map(|i| i.base_job),
        zero_extents: spec
            .incremental
            .as_ref()
            .map(|i| i.zero.clone())
            .unwrap_or_default(),
        journal: None,
    };
    let kind = if header.base_job.is_some() {
        "incremental"
    } else {
        "backup"
    };
    let mut w = PartWriter::open(
        lib,
        catalog,
        progress,
        header,
        kind,
        spec.drive,
        spec.recycle_before,
    )?;

    let window = spec.window.max(2);
    let queue = DriveQueue::new(WriteQueue::new(
        Session::new(BlockId(0), SeqNo(0)),
        window as u64,
        AckPolicy::OnTape,
    ));
    let issuer = Issuer::new(SeqNo(0), SeqNo(total_blocks), window);
    let reader_error: Mutex<Option<String>> = Mutex::new(None);
    let t0 = Instant::now();
    let fail = |why: String| {
        reader_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why.clone());
        issuer.close(&why);
        queue.close(&why);
    };
    let written = std::thread::scope(|s| {
        let blocks = &blocks;
        let mut firstc = Some(first);
        for c in 0..spec.connections.max(1) {
            let conn = firstc.take();
            let (issuer, queue, fail) = (&issuer, &queue, &fail);
            s.spawn(move || {
                let mut ns = match conn.map_or_else(|| spec.endpoint.connect(), Ok) {
                    Ok(ns) => ns,
                    Err(e) => return fail(format!("connection {c}: {e}")),
                };
                let mut rng = StdRng::seed_from_u64(spec.job * 1000 + c as u64);
                let mut batch: Vec<(SeqNo, Vec<u8>)> = Vec::new();
                loop {
                    if progress.cancelled() {
                        return fail(format!("job {} cancelled", spec.job));
                    }
                    let want = if spec.shuffle { 4 } else { 1 };
                    let mut wait = Duration::from_secs(120);
                    while batch.len() < want {
                        match issuer.acquire(wait) {
                            Ok(Some(seq)) => {
                                let (off, len) = blocks[seq.0 as usize];
                                let mut buf = vec![0u8; len as usize];
                                if let Err(e) = ns.read_at(off, &mut buf) {
                                    return fail(format!("connection {c}: read at {off}: {e}"));
                                }
                                batch.push((seq, buf));
                                wait = Duration::from_millis(1);
                            }
                            Ok(None) => break,
                            Err(_) if !batch.is_empty() => break,
                            Err(e) => return fail(e),
                        }
                    }
                    if batch.is_empty() {
                        return;
                    }
                    if spec.shuffle {
                        batch.shuffle(&mut rng);
                    }
                    for (seq, data) in batch.drain(..) {
                        if let Err(e) =
                            queue.offer(seq, BlockId(seq.0), data, Duration::from_secs(120))
                        {
                            return fail(e.to_string());
                        }
                    }
                }
            });
        }
        let r = queue.run_writer(
            BlockId(total_blocks),
            Duration::from_secs(120),
            |b, _s, d: &[u8]| w.write_data(b, blocks[b.0 as usize].0, d),
            &|seq| {
                issuer.ack(seq);
            },
        );
        if let Err(e) = &r {
            let why = e.to_string();
            issuer.close(&why);
            queue.close(&why);
        }
        r
    });
    *progress.queue.lock().unwrap_or_else(|p| p.into_inner()) = Some(queue.stats());
    if let Err(e) = written {
        // Close the file so the next job appends after it; the part has no trailer, which
        // scan reports as an unfinished part.
        w.abandon();
        if progress.cancelled() {
            return Err(TapeError::Cancelled(spec.job));
        }
        let reader = reader_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        return Err(match e {
            crate::mtqueue::WriterError::Sink(t) => t,
            other => TapeError::Invalid(reader.unwrap_or_else(|| other.to_string())),
        });
    }
    let parts = w.finish()?;
    Ok(BackupReport {
        job: spec.job,
        bytes: parts.iter().map(|p| p.bytes).sum(),
        blocks: total_blocks,
        parts,
        seconds: t0.elapsed().as_secs_f64(),
        queue: queue.stats(),
    })
}
