//! The channel of backends that complete synchronously (malloc, null): the work is done at
//! submit, the completion is queued and handed back by the next `poll`, never re-entrantly.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::io::{ChannelStats, Geometry};
use crate::{BdevError, BdevIo, IoChannel};

/// Default number of requests a synchronous channel holds before `QueueFull`.
pub const DEFAULT_QUEUE_DEPTH: usize = 256;

/// A backend whose requests complete during `submit`.
pub(crate) trait SyncBackend: std::fmt::Debug {
    fn geometry(&self) -> Geometry;

    /// Performs a request already checked against the geometry; `bytes` is its data length.
    fn execute(&self, io: &mut BdevIo, bytes: usize) -> Result<(), BdevError>;
}

#[derive(Debug)]
pub(crate) struct SyncChannel<B> {
    backend: Arc<B>,
    depth: usize,
    done: VecDeque<(BdevIo, Result<(), BdevError>)>,
    stats: ChannelStats,
}

impl<B: SyncBackend> SyncChannel<B> {
    pub fn new(backend: Arc<B>, depth: usize) -> Self {
        Self {
            backend,
            depth,
            done: VecDeque::with_capacity(depth),
            stats: ChannelStats::default(),
        }
    }
}

impl<B: SyncBackend> IoChannel for SyncChannel<B> {
    fn submit(&mut self, mut io: BdevIo) -> Result<(), (BdevIo, BdevError)> {
        if self.done.len() >= self.depth {
            self.stats.queue_full += 1;
            return Err((io, BdevError::QueueFull));
        }
        let bytes = match self.backend.geometry().check(&io) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.stats.rejected += 1;
                return Err((io, e));
            }
        };
        let result = self.backend.execute(&mut io, bytes);
        self.stats.submitted += 1;
        self.done.push_back((io, result));
        Ok(())
    }

    fn poll(&mut self, max: usize, done: &mut dyn FnMut(BdevIo, Result<(), BdevError>)) -> usize {
        let n = max.min(self.done.len());
        for _ in 0..n {
            let (io, result) = self.done.pop_front().expect("n <= queue length");
            self.stats.completed += 1;
            if result.is_err() {
                self.stats.failed += 1;
            }
            done(io, result);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}

impl<B> Drop for SyncChannel<B> {
    fn drop(&mut self) {
        if !self.done.is_empty() {
            log::warn!(
                "bdev channel dropped with {} completions not polled",
                self.done.len()
            );
            debug_assert!(
                std::thread::panicking(),
                "bdev channel dropped with completions not polled"
            );
        }
    }
}
