//! What the wrapping backends (`error`, `delay`, `power-cut`) share: a name of their own over a
//! base device whose geometry, identity and capabilities they pass through.

use std::sync::Arc;

use std::collections::VecDeque;

use crate::{BdevError, BdevIo, BdevKind, BlockDevice, Capabilities, ChannelStats};

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
                $buffers: &[&$crate::PoolRegions],
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

/// A fault-test device with its run-time controls (the stacked kinds of [`BdevKind`]), as the
/// daemon keeps it to inject errors, change latencies or cut the power.
#[derive(Debug, Clone)]
pub enum FaultBdev {
    Error(Arc<crate::ErrorBdev>),
    Delay(Arc<crate::DelayBdev>),
    PowerCut(Arc<crate::PowerCutBdev>),
}

impl FaultBdev {
    /// Stacks a device of `kind` named `name` on `base`; `latencies` for `delay` (zero when
    /// absent). Refused for kinds that are not stacked.
    pub fn create(
        kind: BdevKind,
        name: &str,
        base: Arc<dyn BlockDevice>,
        latencies: Option<crate::delay::Latencies>,
    ) -> Result<FaultBdev, BdevError> {
        Ok(match kind {
            BdevKind::Error => FaultBdev::Error(Arc::new(crate::ErrorBdev::new(name, base)?)),
            BdevKind::Delay => FaultBdev::Delay(Arc::new(crate::DelayBdev::new(
                name,
                base,
                latencies.unwrap_or_default(),
            )?)),
            BdevKind::PowerCut => {
                FaultBdev::PowerCut(Arc::new(crate::PowerCutBdev::new(name, base)?))
            }
            BdevKind::Malloc | BdevKind::File | BdevKind::Null | BdevKind::NvmePcie => {
                return Err(BdevError::InvalidConfig(format!(
                    "bdev {name}: {} is not stacked on a base device",
                    kind.as_str()
                )))
            }
        })
    }

    /// The device to register.
    pub fn device(&self) -> Arc<dyn BlockDevice> {
        match self {
            FaultBdev::Error(d) => Arc::clone(d) as Arc<dyn BlockDevice>,
            FaultBdev::Delay(d) => Arc::clone(d) as Arc<dyn BlockDevice>,
            FaultBdev::PowerCut(d) => Arc::clone(d) as Arc<dyn BlockDevice>,
        }
    }

    pub fn kind(&self) -> BdevKind {
        match self {
            FaultBdev::Error(_) => BdevKind::Error,
            FaultBdev::Delay(_) => BdevKind::Delay,
            FaultBdev::PowerCut(_) => BdevKind::PowerCut,
        }
    }

    /// The device it is stacked on.
    pub fn base(&self) -> &Arc<dyn BlockDevice> {
        match self {
            FaultBdev::Error(d) => d.base(),
            FaultBdev::Delay(d) => d.base(),
            FaultBdev::PowerCut(d) => d.base(),
        }
    }
}

/// Hands up to `max` completions a wrapping channel finished itself to the caller, counting
/// them; returns how many.
pub(crate) fn hand_back(
    queue: &mut VecDeque<(BdevIo, Result<(), BdevError>)>,
    stats: &mut ChannelStats,
    max: usize,
    done: &mut dyn FnMut(BdevIo, Result<(), BdevError>),
) -> usize {
    let mut n = 0;
    while n < max {
        let Some((io, r)) = queue.pop_front() else {
            break;
        };
        stats.completed += 1;
        stats.failed += u64::from(r.is_err());
        done(io, r);
        n += 1;
    }
    n
}
