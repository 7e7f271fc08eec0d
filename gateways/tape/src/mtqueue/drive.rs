//! A [`WriteQueue`] shared by the connection threads that deliver blocks and the one thread that
//! feeds the drive. The drive thread takes the block at the flush cursor as soon as it is
//! queued and writes it outside the lock, so deliveries continue while the drive works; it
//! waits only when the next block has not arrived. The time between the next block's arrival
//! and the drive thread picking it up is accounted (`idle_with_next_ns`: the aim is zero).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{BlockId, MtQueueError, Offer, SeqNo, WriteQueue, WriteStats};

/// Drive-side accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveQueueStats {
    pub queue: WriteStats,
    /// Time spent writing to the drive.
    pub busy_ns: u64,
    /// Time the drive thread waited with later blocks queued behind a gap.
    pub wait_gap_ns: u64,
    /// Time the drive thread waited with nothing queued.
    pub wait_empty_ns: u64,
    /// Time between the next block's arrival and the drive thread starting on it, summed and
    /// the worst single case.
    pub idle_with_next_ns: u64,
    pub idle_with_next_max_ns: u64,
}

#[derive(Debug)]
struct Inner {
    q: WriteQueue,
    closed: Option<String>,
    /// Set while the drive thread waits: when the next block arrived, if it did.
    writer_waiting: bool,
    next_arrived: Option<Instant>,
    stats: DriveQueueStats,
}

/// The MT queue of one drive, shared between threads.
#[derive(Debug)]
pub struct DriveQueue {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl DriveQueue {
    pub fn new(q: WriteQueue) -> DriveQueue {
        DriveQueue {
            inner: Mutex::new(Inner {
                q,
                closed: None,
                writer_waiting: false,
                next_arrived: None,
                stats: DriveQueueStats::default(),
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers one block. Waits (up to `timeout`) while the block is beyond the queue's window.
    pub fn offer(
        &self,
        seq: SeqNo,
        expected: BlockId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Offer, MtQueueError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(why) = &g.closed {
                return Err(MtQueueError::Closed(why.clone()));
            }
            let block = g.q.session().check(seq, expected)?;
            if g.q.fits(block) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break; // offer() reports WindowExceeded
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let o = g.q.offer(seq, expected, data)?;
        if g.writer_waiting && g.q.next_ready() && g.next_arrived.is_none() {
            g.next_arrived = Some(Instant::now());
        }
        drop(g);
        self.cv.notify_all();
        Ok(o)
    }

    /// Stops the queue: waiting writers and deliverers get the reason.
    pub fn close(&self, why: &str) {
        self.lock().closed.get_or_insert_with(|| why.to_string());
        self.cv.notify_all();
    }

    pub fn stats(&self) -> DriveQueueStats {
        let g = self.lock();
        DriveQueueStats {
            queue: g.q.stats(),
            ..g.stats
        }
    }

    pub fn cursor(&self) -> BlockId {
        self.lock().q.cursor()
    }

    /// The drive thread: writes blocks in exact block order through `sink` until the cursor
    /// reaches `end`, calling `ack` for each sequence number the policy acknowledges on tape.
    /// A sink error closes the queue (the block stays queued) and is returned.
    pub fn run_writer<E: std::fmt::Display>(
        &self,
        end: BlockId,
        idle_timeout: Duration,
        mut sink: impl FnMut(BlockId, SeqNo, &[u8]) -> Result<(), E>,
        ack: &dyn Fn(SeqNo),
    ) -> Result<(), WriterError<E>> {
        loop {
            let (block, seq, data) = {
                let mut g = self.lock();
                loop {
                    if let Some(why) = &g.closed {
                        return Err(WriterError::Closed(why.clone()));
                    }
                    if g.q.cursor() >= end {
                        return Ok(());
                    }
                    if let Some(t) = g.q.take_next() {
                        if let Some(at) = g.next_arrived.take() {
                            let ns = at.elapsed().as_nanos() as u64;
                            g.stats.idle_with_next_ns += ns;
                            g.stats.idle_with_next_max_ns = g.stats.idle_with_next_max_ns.max(ns);
                        }
                        break t;
                    }
                    let gap = g.q.queued() > 0;
                    g.writer_waiting = true;
                    let t0 = Instant::now();
                    let (ng, to) = self
                        .cv
                        .wait_timeout(g, idle_timeout)
                        .unwrap_or_else(|p| p.into_inner());
                    g = ng;
                    g.writer_waiting = false;
                    let ns = t0.elapsed().as_nanos() as u64;
                    if gap {
                        g.stats.wait_gap_ns += ns;
                    } else {
                        g.stats.wait_empty_ns += ns;
                    }
                    if to.timed_out() && !g.q.next_ready() {
                        let why = format!(
                            "no block {} for {idle_timeout:?} ({} queued behind it)",
                            g.q.cursor().0,
                            g.q.queued()
                        );
                        g.closed.get_or_insert(why.clone());
                        drop(g);
                        self.cv.notify_all();
                        return Err(WriterError::Stalled(why));
                    }
                }
            };
            let t0 = Instant::now();
            let r = sink(block, seq, &data);
            let busy = t0.elapsed().as_nanos() as u64;
            let mut g = self.lock();
            g.stats.busy_ns += busy;
            match r {
                Ok(()) => {
                    let a = g.q.written();
                    drop(g);
                    self.cv.notify_all();
                    if let Some(s) = a {
                        ack(s);
                    }
                }
                Err(e) => {
                    g.q.unwritten(data);
                    let why = format!("drive refused {block}: {e}");
                    g.closed.get_or_insert(why);
                    drop(g);
                    self.cv.notify_all();
                    return Err(WriterError::Sink(e));
                }
            }
        }
    }
}

/// Why the drive thread stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WriterError<E: std::fmt::Display> {
    #[error("{0}")]
    Sink(E),
    #[error("queue closed: {0}")]
    Closed(String),
    #[error("stalled: {0}")]
    Stalled(String),
}
