//! Opening the backends a `[[bdev]]` section (or `bdev_create`) describes: used by start-up
//! and by the control plane, below both.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use ferrite_bdev::{BdevKind, BlockDevice, FaultBdev, FileBdev, MallocBdev, NullBdev};

use crate::config::{parse_size, BdevConfig};

/// Opens the backend `b` describes; a fault-test kind is stacked on `base(name)` and also
/// returned with its controls.
pub(crate) fn open_bdev(
    b: &BdevConfig,
    base: &dyn Fn(&str) -> Option<Arc<dyn BlockDevice>>,
) -> Result<(Arc<dyn BlockDevice>, Option<FaultBdev>)> {
    let kind: BdevKind = b
        .kind
        .parse()
        .map_err(|e| anyhow!("bdev {}: {e}", b.name))?;
    if !kind.is_stacked() && (b.base.is_some() || b.latency.is_some()) {
        bail!(
            "bdev {}: base and latency are only for error, delay and power-cut bdevs",
            b.name
        );
    }
    let block_size = b.block_size.unwrap_or(4096);
    let size = b.size.as_deref().map(parse_size).transpose()?;
    let blocks = |size: Option<u64>| -> Result<u64> {
        let size =
            size.ok_or_else(|| anyhow!("bdev {}: size is required for {} bdevs", b.name, b.kind))?;
        if size == 0 || size % block_size as u64 != 0 {
            bail!(
                "bdev {}: size {size} is not a positive multiple of the block size {block_size}",
                b.name
            );
        }
        Ok(size / block_size as u64)
    };
    Ok((
        match kind {
            BdevKind::Malloc => Arc::new(MallocBdev::new(&b.name, blocks(size)?, block_size)?),
            BdevKind::Null => Arc::new(NullBdev::new(&b.name, blocks(size)?, block_size)?),
            BdevKind::File => {
                let path = b
                    .path
                    .as_ref()
                    .ok_or_else(|| anyhow!("bdev {}: path is required for file bdevs", b.name))?;
                let bdev = if path.exists() {
                    FileBdev::open(&b.name, path, b.block_size)?
                } else {
                    let size = size.ok_or_else(|| {
                        anyhow!(
                            "bdev {}: {} does not exist and no size was given to create it",
                            b.name,
                            path.display()
                        )
                    })?;
                    FileBdev::create(&b.name, path, size, block_size)?
                };
                Arc::new(bdev)
            }
            BdevKind::NvmePcie => crate::nvme_pcie::open(b)?,
            BdevKind::Error | BdevKind::Delay | BdevKind::PowerCut => {
                return open_stacked(b, kind, base)
            }
        },
        None,
    ))
}

/// An `error`, `delay` or `power-cut` bdev over its base.
fn open_stacked(
    b: &BdevConfig,
    kind: BdevKind,
    base: &dyn Fn(&str) -> Option<Arc<dyn BlockDevice>>,
) -> Result<(Arc<dyn BlockDevice>, Option<FaultBdev>)> {
    let base_name = b
        .base
        .as_deref()
        .ok_or_else(|| anyhow!("bdev {}: base is required for {} bdevs", b.name, b.kind))?;
    if b.size.is_some() || b.path.is_some() || b.block_size.is_some() {
        bail!(
            "bdev {}: a {} bdev takes its size and block size from its base (no size, block_size or path)",
            b.name,
            b.kind
        );
    }
    if b.latency.is_some() && kind != BdevKind::Delay {
        bail!("bdev {}: latency is only for delay bdevs", b.name);
    }
    let base_dev =
        base(base_name).ok_or_else(|| anyhow!("bdev {}: no base bdev {base_name}", b.name))?;
    let fault = FaultBdev::create(kind, &b.name, base_dev, b.latency.map(Into::into))
        .map_err(|e| anyhow!("bdev {}: {e}", b.name))?;
    Ok((fault.device(), Some(fault)))
}
