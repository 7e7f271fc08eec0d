//! Volumes as bdevs: every volume, clone and snapshot of an open pool is registered with the
//! target under `"<pool>/<volume>"` (SPDK's lvol alias form), so `nvmf_subsystem_add_ns`
//! exports it like any bdev. Shared by the RPC methods and the daemon's start-up.

use std::sync::Arc;

use ferrite_bdev::BlockDevice;
use ferrite_nvmf::{NvmfError, Target};
use ferrite_volume::{Pool, Volume, VolumeKind};

use crate::protocol::{RpcError, BUSY};

/// `"pool/volume"` -> ("pool", "volume").
pub fn split_name(name: &str) -> Result<(&str, &str), RpcError> {
    match name.split_once('/') {
        Some((pool, vol)) if !pool.is_empty() && !vol.is_empty() && !vol.contains('/') => {
            Ok((pool, vol))
        }
        _ => Err(RpcError::invalid_params(format!(
            "{name:?} is not a volume name: use \"<pool>/<volume>\""
        ))),
    }
}

/// Accepts a plain name or `"<pool>/<name>"` naming `pool`.
pub fn local_name<'a>(pool: &str, name: &'a str) -> Result<&'a str, RpcError> {
    match name.split_once('/') {
        None => Ok(name),
        Some((p, n)) if p == pool && !n.contains('/') => Ok(n),
        Some(_) => Err(RpcError::invalid_params(format!(
            "{name:?} must be a name in pool {pool} (\"<name>\" or \"{pool}/<name>\")"
        ))),
    }
}

pub fn bdev_name(pool: &str, volume: &str) -> String {
    format!("{pool}/{volume}")
}

/// Registers one volume (snapshots are read-only bdevs by their capabilities).
pub fn register(target: &Target, vol: &Arc<Volume>) -> Result<(), NvmfError> {
    let bdev: Arc<dyn BlockDevice> = Arc::clone(vol) as Arc<dyn BlockDevice>;
    target.add_bdev(vol.name(), bdev)?;
    Ok(())
}

/// Registers every volume, clone and snapshot of `pool`.
pub fn register_pool(target: &Target, pool: &Pool) -> Result<usize, NvmfError> {
    let vols = pool.volumes();
    for v in &vols {
        register(target, v)?;
    }
    Ok(vols.len())
}

/// Refuses when a subsystem exports bdev `bdev`, naming the subsystem and NSID.
pub fn refuse_if_exported(target: &Target, bdev: &str, action: &str) -> Result<(), RpcError> {
    let exports = target.exports_of(bdev);
    if exports.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = exports
        .iter()
        .map(|(nqn, nsid)| format!("subsystem {nqn} namespace {nsid}"))
        .collect();
    Err(RpcError::new(
        BUSY,
        format!(
            "cannot {action} {bdev}: exported by {} (remove the namespace first)",
            list.join(", ")
        ),
    ))
}

/// Unregisters a volume bdev; refused (naming the subsystem and NSID) while it is exported.
pub fn unregister(target: &Target, bdev: &str, action: &str) -> Result<(), RpcError> {
    match target.remove_bdev(bdev) {
        Ok(_) | Err(NvmfError::NoSuchBdev(_)) => Ok(()),
        Err(NvmfError::BdevInUse { nqn, nsid, .. }) => Err(RpcError::new(
            BUSY,
            format!(
                "cannot {action} {bdev}: exported by subsystem {nqn} namespace {nsid} (remove the namespace first)"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Registers again what an operation unregistered before it failed (best effort, logged).
pub fn reregister(target: &Target, pool: &Pool, volume: &str) {
    if let Some(v) = pool.volume(volume) {
        if let Err(e) = register(target, &v) {
            log::error!("re-registering {}: {e}", v.name());
        }
    }
}

/// "volume", "snapshot" or "clone".
pub fn kind_str(kind: VolumeKind) -> &'static str {
    match kind {
        VolumeKind::Volume => "volume",
        VolumeKind::Snapshot => "snapshot",
        VolumeKind::Clone => "clone",
    }
}
