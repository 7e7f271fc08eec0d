//! The secondary's durable receive log: every record the secondary accepts is appended here
//! and made durable before it is acknowledged, so an acknowledgement (which trims the
//! primary's journal and releases sync-mode host writes) never covers a record the secondary
//! could lose. One writer thread does group commit: it writes every record queued since its
//! last `fdatasync`, syncs once, and reports how many queued records are now durable. A sync
//! write therefore costs about one round trip plus one shared `fdatasync`, not a state-file
//! rewrite per acknowledgement.
//!
//! On disk: entries `[u32 length][u32 crc32c][frame]`, `frame` the record's plaintext protocol
//! frame. Reading stops at the first short or damaged entry (a torn tail after a crash: it was
//! never acknowledged) and cuts the file there. Once the applier has applied everything in the
//! file, the file is emptied.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use anyhow::{Context, Result};
use mio::Waker;

/// Largest entry accepted when reading back (a record frame is at most a slot plus headers).
const MAX_ENTRY: usize = 8 << 20;

/// What the event loop sends the log writer.
#[derive(Debug)]
pub(crate) enum LogMsg {
    /// Append this record frame (sequence number, frame).
    Record(u64, Vec<u8>),
    /// Everything up to this sequence number is applied (and the applied point is durable).
    Applied(u64),
}

/// The receive log file.
#[derive(Debug)]
pub struct RecvLog {
    path: PathBuf,
    file: File,
    /// Highest sequence number in the file (0: none).
    max_seq: u64,
}

impl RecvLog {
    /// Opens (creating) the log and returns the record frames it holds, in append order, with
    /// the highest sequence number among them given by `seq_of`.
    pub fn open(
        path: &Path,
        seq_of: impl Fn(&[u8]) -> Option<u64>,
    ) -> Result<(RecvLog, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("receive log {}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading receive log {}", path.display()))?;
        let mut frames = Vec::new();
        let mut at = 0;
        let mut max_seq = 0;
        while let Some(frame) = entry_at(&bytes, at) {
            let Some(seq) = seq_of(frame) else { break };
            max_seq = max_seq.max(seq);
            frames.push(frame.to_vec());
            at += 8 + frame.len();
        }
        if at < bytes.len() {
            log::warn!(
                "receive log {}: {} bytes of a torn or damaged tail dropped (never acknowledged)",
                path.display(),
                bytes.len() - at
            );
            file.set_len(at as u64)?;
            file.sync_data()?;
        }
        Ok((
            RecvLog {
                path: path.to_path_buf(),
                file,
                max_seq,
            },
            frames,
        ))
    }

    /// Appends entries (not yet durable).
    fn append(&mut self, batch: &[(u64, Vec<u8>)], buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        for (seq, frame) in batch {
            buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32c::crc32c(frame).to_le_bytes());
            buf.extend_from_slice(frame);
            self.max_seq = self.max_seq.max(*seq);
        }
        self.file
            .write_all(buf)
            .with_context(|| format!("appending to {}", self.path.display()))
    }

    /// Makes every appended entry durable.
    fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("fdatasync {}", self.path.display()))
    }

    /// Empties the log once every record in it is applied.
    fn applied(&mut self, seq: u64) -> Result<()> {
        if self.max_seq != 0 && seq >= self.max_seq {
            self.file.set_len(0)?;
            self.max_seq = 0;
        }
        Ok(())
    }
}

fn entry_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len == 0 || len > MAX_ENTRY {
        return None;
    }
    let frame = bytes.get(at + 8..at + 8 + len)?;
    (crc32c::crc32c(frame) == crc).then_some(frame)
}

/// The log writer thread: group commit. Reports, after each `fdatasync`, the count of
/// `LogMsg::Record`s received so far (all durable now) on `durable`, then wakes the loop.
pub(crate) fn writer(
    mut log: RecvLog,
    rx: Receiver<LogMsg>,
    durable: Sender<u64>,
    waker: Arc<Waker>,
) -> Result<()> {
    let mut count: u64 = 0;
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut applied = None;
        let mut take = |m: LogMsg, batch: &mut Vec<(u64, Vec<u8>)>| match m {
            LogMsg::Record(seq, frame) => batch.push((seq, frame)),
            LogMsg::Applied(s) => applied = Some(s),
        };
        take(first, &mut batch);
        // Everything that queued up while the last sync ran goes into this one.
        while let Ok(m) = rx.try_recv() {
            take(m, &mut batch);
        }
        if !batch.is_empty() {
            log.append(&batch, &mut buf)?;
            log.sync()?;
            count += batch.len() as u64;
            batch.clear();
            if durable.send(count).is_err() {
                break;
            }
            waker.wake()?;
        }
        if let Some(s) = applied {
            log.applied(s)?;
        }
    }
    Ok(())
}

/// The acknowledgement the durable log allows: the event loop notes, for each record it sends
/// to the log (the n-th), the received gap-free prefix right after accepting it; every record
/// at or below that prefix had been sent to the log by then. When the first n records are
/// durable, so is every record up to the prefix noted with the n-th.
#[derive(Debug, Default)]
pub(crate) struct DurableAck {
    sent: u64,
    marks: std::collections::VecDeque<(u64, u64)>,
    acked: u64,
}

impl DurableAck {
    /// Starts at `acked` (what is already durable: applied, or replayed from the log).
    pub(crate) fn new(acked: u64) -> DurableAck {
        DurableAck {
            acked,
            ..DurableAck::default()
        }
    }

    /// A record was sent to the log; the received prefix is now `prefix`.
    pub(crate) fn sent(&mut self, prefix: u64) {
        self.sent += 1;
        self.marks.push_back((self.sent, prefix));
    }

    /// The first `count` records sent are durable. Returns the new acknowledgement.
    pub(crate) fn durable(&mut self, count: u64) -> u64 {
        while let Some(&(n, p)) = self.marks.front() {
            if n > count {
                break;
            }
            self.acked = self.acked.max(p);
            self.marks.pop_front();
        }
        self.acked
    }

    /// The highest sequence number the secondary holds durably with all before it.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq_of(f: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(f.get(..8)?.try_into().ok()?))
    }

    fn frame(seq: u64) -> Vec<u8> {
        let mut f = seq.to_le_bytes().to_vec();
        f.extend_from_slice(&[seq as u8; 40]);
        f
    }

    #[test]
    fn entries_come_back_a_torn_tail_is_cut_and_applied_empties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.log");
        let (mut log, frames) = RecvLog::open(&path, seq_of).expect("open");
        assert!(frames.is_empty());
        let mut buf = Vec::new();
        log.append(&[(1, frame(1)), (3, frame(3)), (2, frame(2))], &mut buf)
            .expect("append");
        log.sync().expect("sync");
        drop(log);
        // A crash in the middle of the next append leaves half an entry.
        let mut f = OpenOptions::new().append(true).open(&path).expect("file");
        f.write_all(&[60, 0, 0, 0, 1, 2, 3, 4, 9, 9]).expect("torn");
        drop(f);
        let (mut log, frames) = RecvLog::open(&path, seq_of).expect("reopen");
        assert_eq!(frames, vec![frame(1), frame(3), frame(2)]);
        assert_eq!(log.max_seq, 3);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 3 * 56);
        // A damaged entry ends the log there too.
        log.append(&[(4, frame(4))], &mut buf).expect("append");
        drop(log);
        let mut bytes = std::fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let (mut log, frames) = RecvLog::open(&path, seq_of).expect("reopen");
        assert_eq!(frames.len(), 3);
        log.applied(2).expect("applied");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            3 * 56,
            "3 is not applied"
        );
        log.applied(3).expect("applied");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
    }

    #[test]
    fn the_acknowledgement_never_passes_what_is_durable() {
        let mut a = DurableAck::new(10);
        // Records 12, 11, 13 arrive (prefix after each: 10, 12, 13), then 15.
        a.sent(10);
        a.sent(12);
        a.sent(13);
        a.sent(13);
        assert_eq!(a.durable(0), 10);
        assert_eq!(a.durable(1), 10, "12 is durable but 11 is not");
        assert_eq!(a.durable(2), 12);
        assert_eq!(a.durable(4), 13);
        assert_eq!(a.durable(4), 13);
        assert_eq!(a.acked(), 13);
    }
}
