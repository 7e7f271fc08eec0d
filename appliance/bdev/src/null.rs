//! A device with no storage: writes are discarded and reads return zeroes. For benchmarks of
//! everything above the backend.

use std::sync::Arc;

use crate::immediate::{SyncBackend, SyncChannel, DEFAULT_QUEUE_DEPTH};
use crate::io::{random_uuid, Geometry};
use crate::malloc::MAX_TRANSFER_BYTES;
use crate::{BdevError, BdevIo, BlockDevice, Capabilities, IoChannel, IoKind};

#[derive(Debug)]
struct NullInner {
    geometry: Geometry,
}

impl SyncBackend for NullInner {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn execute(&self, io: &mut BdevIo, bytes: usize) -> Result<(), BdevError> {
        if let IoKind::Read { .. } = io.kind {
            let buf = io
                .buf
                .as_mut()
                .expect("checked at submit: reads carry a buffer");
            buf.spare_mut()[..bytes].fill(0);
            buf.set_len(bytes);
        }
        Ok(())
    }
}

/// A device of `num_blocks` blocks that stores nothing.
#[derive(Debug)]
pub struct NullBdev {
    name: String,
    uuid: [u8; 16],
    queue_depth: usize,
    inner: Arc<NullInner>,
}

impl NullBdev {
    pub fn new(name: &str, num_blocks: u64, block_size: u32) -> Result<Self, BdevError> {
        let geometry = Geometry::new(block_size, num_blocks, MAX_TRANSFER_BYTES)?;
        Ok(Self {
            name: name.to_owned(),
            uuid: random_uuid(),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            inner: Arc::new(NullInner { geometry }),
        })
    }

    /// Replaces the random UUID (a configuration restoring a saved identity).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = uuid;
        self
    }

    /// Requests each channel holds before `QueueFull` (default 256; at least 1).
    pub fn with_queue_depth(mut self, depth: usize) -> Self {
        self.queue_depth = depth.max(1);
        self
    }
}

impl BlockDevice for NullBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn block_size(&self) -> u32 {
        self.inner.geometry.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.inner.geometry.num_blocks
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            write_zeroes: true,
            unmap: true,
            volatile_write_cache: false,
            max_transfer_bytes: MAX_TRANSFER_BYTES,
        }
    }

    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    fn open_channel(
        &self,
        _buffers: &[&[(usize, usize)]],
    ) -> Result<Box<dyn IoChannel>, BdevError> {
        Ok(Box::new(SyncChannel::new(
            Arc::clone(&self.inner),
            self.queue_depth,
        )))
    }
}
