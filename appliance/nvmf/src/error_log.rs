//! A controller's Error Information log (log page 01h), written by every reactor's error
//! completions without a lock.
//!
//! The log is a ring of [`ERROR_LOG_ENTRIES`] entries made of atomics, each guarded by a
//! sequence number (a seqlock): a writer takes the next error count, marks its entry busy,
//! writes the fields and publishes the count; a reader keeps an entry only when it read the same
//! published count before and after the fields. Two errors exactly `ERROR_LOG_ENTRIES` apart that
//! are recorded at the same instant race for one entry: the later writer gives up, so that entry
//! is lost (the error count still includes it, as the specification allows for a full log).

use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};

use ferrite_nvme::Status;

use crate::ERROR_LOG_ENTRIES;

/// Sequence value of an entry being written.
const WRITING: u64 = u64::MAX;

/// One error log entry as recorded (encoded on Get Log Page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorRecord {
    pub error_count: u64,
    pub sqid: u16,
    pub cid: u16,
    pub status: Status,
    pub nsid: u32,
    pub lba: u64,
}

#[derive(Debug, Default)]
struct Entry {
    /// 0: never written; [`WRITING`]: being written; else the error count it holds.
    seq: AtomicU64,
    sqid: AtomicU16,
    cid: AtomicU16,
    status: AtomicU16,
    nsid: AtomicU32,
    lba: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct ErrorLog {
    count: AtomicU64,
    entries: Box<[Entry]>,
}

impl Default for ErrorLog {
    fn default() -> Self {
        ErrorLog {
            count: AtomicU64::new(0),
            entries: (0..ERROR_LOG_ENTRIES).map(|_| Entry::default()).collect(),
        }
    }
}

impl ErrorLog {
    /// Errors recorded since the controller was created (SMART "Number of Error Information Log
    /// Entries").
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Records an error completion. Lock-free and allocation-free.
    pub fn record(&self, sqid: u16, cid: u16, status: Status, nsid: u32, lba: u64) {
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        let e = &self.entries[(n % ERROR_LOG_ENTRIES as u64) as usize];
        let prev = e.seq.load(Ordering::Relaxed);
        if prev == WRITING
            || prev > n
            || e.seq
                .compare_exchange(prev, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return; // another writer holds (or has already reused) this entry
        }
        fence(Ordering::Release);
        e.sqid.store(sqid, Ordering::Relaxed);
        e.cid.store(cid, Ordering::Relaxed);
        e.status.store(status.raw(), Ordering::Relaxed);
        e.nsid.store(nsid, Ordering::Relaxed);
        e.lba.store(lba, Ordering::Relaxed);
        e.seq.store(n, Ordering::Release);
    }

    /// The entries still in the log, newest first.
    pub fn records(&self) -> Vec<ErrorRecord> {
        let newest = self.count();
        let oldest = newest.saturating_sub(ERROR_LOG_ENTRIES as u64);
        let mut out: Vec<ErrorRecord> = self
            .entries
            .iter()
            .filter_map(|e| {
                let seq = e.seq.load(Ordering::Acquire);
                if seq == 0 || seq == WRITING || seq <= oldest {
                    return None;
                }
                let record = ErrorRecord {
                    error_count: seq,
                    sqid: e.sqid.load(Ordering::Relaxed),
                    cid: e.cid.load(Ordering::Relaxed),
                    status: Status::from_wire(e.status.load(Ordering::Relaxed) << 1),
                    nsid: e.nsid.load(Ordering::Relaxed),
                    lba: e.lba.load(Ordering::Relaxed),
                };
                fence(Ordering::Acquire);
                (e.seq.load(Ordering::Relaxed) == seq).then_some(record)
            })
            .collect();
        out.sort_unstable_by_key(|r| std::cmp::Reverse(r.error_count));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn keeps_the_newest_entries_newest_first() {
        let log = ErrorLog::default();
        assert!(log.records().is_empty());
        for i in 0..100u16 {
            log.record(1, i, Status::LBA_OUT_OF_RANGE, 1, u64::from(i) * 8);
        }
        assert_eq!(log.count(), 100);
        let records = log.records();
        assert_eq!(records.len(), ERROR_LOG_ENTRIES);
        assert_eq!(records[0].error_count, 100);
        assert_eq!(records[0].cid, 99);
        assert_eq!(records[0].lba, 99 * 8);
        assert_eq!(records[0].status, Status::LBA_OUT_OF_RANGE);
        let last = records.last().expect("64 records");
        assert_eq!(last.error_count, 100 - ERROR_LOG_ENTRIES as u64 + 1);
        assert!(records
            .windows(2)
            .all(|w| w[0].error_count == w[1].error_count + 1));
    }

    #[test]
    fn concurrent_writers_never_tear_an_entry() {
        let log = Arc::new(ErrorLog::default());
        let writers: Vec<_> = (0..4u16)
            .map(|w| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..5_000u32 {
                        // Every field derives from (w, i): a torn entry mixes two errors.
                        log.record(w, i as u16, Status::INVALID_FIELD, i, u64::from(i) << 8);
                    }
                })
            })
            .collect();
        let mut seen = 0;
        while writers.iter().any(|t| !t.is_finished()) {
            for r in log.records() {
                assert_eq!(r.lba, u64::from(r.nsid) << 8, "torn entry {r:?}");
                assert_eq!(r.cid, r.nsid as u16, "torn entry {r:?}");
                seen += 1;
            }
        }
        for t in writers {
            t.join().expect("writer");
        }
        assert_eq!(log.count(), 20_000);
        assert!(seen > 0 || !log.records().is_empty());
    }
}
