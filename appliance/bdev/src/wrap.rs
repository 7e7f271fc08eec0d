//! What the wrapping backends (`error`, `delay`, `power-cut`) share: a name of their own over a
//! base device whose geometry, identity and capabilities they pass through.

use std::sync::Arc;

use crate::{BdevError, BlockDevice, Capabilities};

/// A device stacked on a base device (SPDK's virtual bdevs).
#[derive(Debug)]
pub(crate) struct Stacked {
    pub name: String,
    pub base: Arc<dyn BlockDevice>,
}

impl Stacked {
    pub fn new(name: &str, base: Arc<dyn BlockDevice>) -> Result<Self, BdevError> {
        if name.is_empty() {
            return Err(BdevError::InvalidConfig("empty bdev name".into()));
        }
        if name == base.name() {
            return Err(BdevError::InvalidConfig(format!(
                "bdev {name} cannot be stacked on itself"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            base,
        })
    }
}

/// Implements the pass-through part of `BlockDevice` for a type with a `stacked: Stacked`
/// field; the type provides `open_channel` in `$open` and optionally overrides capabilities
/// in `$caps`.
macro_rules! stacked_block_device {
    ($device:ty, |$s:ident, $buffers:ident| $open:expr, |$c:ident| $caps:expr) => {
        impl $crate::BlockDevice for $device {
            fn name(&self) -> &str {
                &self.stacked.name
            }

            fn block_size(&self) -> u32 {
                self.stacked.base.block_size()
            }

            fn num_blocks(&self) -> u64 {
                self.stacked.base.num_blocks()
            }

            fn capabilities(&self) -> $crate::Capabilities {
                let $c = self.stacked.base.capabilities();
                $caps
            }

            fn uuid(&self) -> [u8; 16] {
                self.stacked.base.uuid()
            }

            fn open_channel(
                &self,
                $buffers: &[&[(usize, usize)]],
            ) -> Result<Box<dyn $crate::IoChannel>, $crate::BdevError> {
                let $s = self;
                $open
            }

            fn allocated_blocks(&self) -> Option<u64> {
                self.stacked.base.allocated_blocks()
            }
        }
    };
}
pub(crate) use stacked_block_device;

/// Capabilities unchanged.
pub(crate) fn same(c: Capabilities) -> Capabilities {
    c
}
