//! A device with no storage: writes are discarded and reads return zeroes. For benchmarks of
//! everything above the backend.

use crate::immediate::{sync_block_device, SyncBackend, SyncDevice};
use crate::io::Geometry;
use crate::malloc::MAX_TRANSFER_BYTES;
use crate::{BdevError, BdevIo, IoKind};

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
    dev: SyncDevice<NullInner>,
}

impl NullBdev {
    pub fn new(name: &str, num_blocks: u64, block_size: u32) -> Result<Self, BdevError> {
        let geometry = Geometry::new(block_size, num_blocks, MAX_TRANSFER_BYTES)?;
        Ok(Self {
            dev: SyncDevice::new(name, NullInner { geometry }),
        })
    }
}

sync_block_device!(NullBdev);
