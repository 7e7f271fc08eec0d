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

/// What the synchronous backends (malloc, null) share: identity, queue depth and the backend
/// state every channel points at. `sync_block_device!` implements `BlockDevice` and the
/// builder methods on a wrapper holding one of these as `dev`.
#[derive(Debug)]
pub(crate) struct SyncDevice<B> {
    pub name: String,
    pub uuid: [u8; 16],
    pub queue_depth: usize,
    pub inner: Arc<B>,
}

impl<B: SyncBackend> SyncDevice<B> {
    pub fn new(name: &str, inner: B) -> SyncDevice<B> {
        SyncDevice {
            name: name.to_owned(),
            uuid: crate::io::random_uuid(),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            inner: Arc::new(inner),
        }
    }
}

macro_rules! sync_block_device {
    ($device:ty) => {
        impl $device {
            /// Replaces the random UUID (a configuration restoring a saved identity).
            pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
                self.dev.uuid = uuid;
                self
            }

            /// Requests each channel holds before `QueueFull` (default 256; at least 1).
            pub fn with_queue_depth(mut self, depth: usize) -> Self {
                self.dev.queue_depth = depth.max(1);
                self
            }
        }

        impl $crate::BlockDevice for $device {
            fn name(&self) -> &str {
                &self.dev.name
            }

            fn block_size(&self) -> u32 {
                $crate::immediate::SyncBackend::geometry(&*self.dev.inner).block_size
            }

            fn num_blocks(&self) -> u64 {
                $crate::immediate::SyncBackend::geometry(&*self.dev.inner).num_blocks
            }

            fn capabilities(&self) -> $crate::Capabilities {
                $crate::Capabilities {
                    write_zeroes: true,
                    unmap: true,
                    volatile_write_cache: false,
                    max_transfer_bytes: $crate::immediate::SyncBackend::geometry(&*self.dev.inner)
                        .max_transfer_bytes,
                    copy: true,
                    read_only: false,
                    thin_provisioned: false,
                }
            }

            fn uuid(&self) -> [u8; 16] {
                self.dev.uuid
            }

            fn open_channel(
                &self,
                _buffers: &[&$crate::PoolRegions],
            ) -> Result<Box<dyn $crate::IoChannel>, $crate::BdevError> {
                Ok(Box::new($crate::immediate::SyncChannel::new(
                    std::sync::Arc::clone(&self.dev.inner),
                    self.dev.queue_depth,
                )))
            }
        }
    };
}
pub(crate) use sync_block_device;
