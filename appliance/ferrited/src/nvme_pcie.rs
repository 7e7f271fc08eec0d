//! Local NVMe controllers over VFIO (`bdev_nvme_attach_controller` with trtype "pcie"). One
//! controller yields a bdev per namespace, `<name>n<nsid>`; each is recorded as an `nvme-pcie`
//! bdev whose `path` is the device's sysfs directory, so a restart re-attaches it.
//!
//! Attaching opens the controller once; its namespace bdevs wait in [`PENDING`] until
//! `open_bdev` registers each of them (at start-up, one configuration entry at a time).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Result};
use ferrite_bdev::nvme_pcie::{self, NvmePcieBdev, PciAddress, DEFAULT_TIMEOUT};
use ferrite_bdev::BlockDevice;

use ferrite_rpc::protocol::ALREADY_EXISTS;
use ferrite_rpc::{Appliance, RpcError};

use crate::config::BdevConfig;
use crate::control::Control;

/// Namespace bdevs of attached controllers not yet registered, by bdev name.
static PENDING: Mutex<Option<HashMap<String, Arc<NvmePcieBdev>>>> = Mutex::new(None);

fn sysfs_path(bdf: &PciAddress) -> PathBuf {
    bdf.sysfs()
}

fn bdf_of(path: &Path) -> Result<PciAddress> {
    let name = path
        .strip_prefix("/sys/bus/pci/devices")
        .ok()
        .and_then(|p| p.to_str())
        .ok_or_else(|| anyhow!("{} is not /sys/bus/pci/devices/<address>", path.display()))?;
    Ok(name.parse()?)
}

/// Attaches the controller at `traddr` and returns the configuration of each namespace bdev
/// (to register with `open`).
pub(crate) fn attach(name: &str, traddr: &str) -> Result<Vec<BdevConfig>> {
    if name.is_empty() || name.contains('/') {
        bail!("controller name {name:?} must be non-empty without '/'");
    }
    let bdevs = nvme_pcie::attach(name, traddr, DEFAULT_TIMEOUT)?;
    let mut pending = PENDING
        .lock()
        .map_err(|_| anyhow!("nvme registry poisoned"))?;
    let pending = pending.get_or_insert_with(HashMap::new);
    Ok(bdevs
        .into_iter()
        .map(|b| {
            let cfg = BdevConfig {
                name: b.name().to_string(),
                kind: "nvme-pcie".into(),
                size: None,
                block_size: None,
                path: Some(sysfs_path(&b.pci_address())),
                base: None,
                latency: None,
                cache: None,
            };
            pending.insert(b.name().to_string(), b);
            cfg
        })
        .collect())
}

/// Drops namespace bdevs attached but never registered (a failed registration).
pub(crate) fn forget(names: &[String]) {
    if let Ok(mut p) = PENDING.lock() {
        if let Some(p) = p.as_mut() {
            for n in names {
                p.remove(n);
            }
        }
    }
}

/// The bdev of an `nvme-pcie` configuration entry: the pending one from `attach`, or (at
/// start-up) attach its controller, named by the part of the bdev name before `n<nsid>`.
pub(crate) fn open(b: &BdevConfig) -> Result<Arc<dyn BlockDevice>> {
    let take =
        |name: &str| -> Option<Arc<NvmePcieBdev>> { PENDING.lock().ok()?.as_mut()?.remove(name) };
    if let Some(bdev) = take(&b.name) {
        return Ok(bdev);
    }
    let path = b.path.as_deref().ok_or_else(|| {
        anyhow!(
            "bdev {}: path (/sys/bus/pci/devices/<address>) is required for nvme-pcie bdevs",
            b.name
        )
    })?;
    let bdf = bdf_of(path)?;
    let ctrl = b
        .name
        .rfind('n')
        .filter(|&i| i > 0 && b.name[i + 1..].parse::<u32>().is_ok())
        .map(|i| &b.name[..i])
        .ok_or_else(|| {
            anyhow!(
                "bdev {}: an nvme-pcie bdev is named <controller>n<nsid>",
                b.name
            )
        })?;
    attach(ctrl, &bdf.to_string()).map_err(|e| anyhow!("bdev {}: {e:#}", b.name))?;
    let bdev = take(&b.name)
        .ok_or_else(|| anyhow!("bdev {}: controller {bdf} has no such namespace", b.name))?;
    Ok(bdev)
}

/// Names of the registered `nvme-pcie` bdevs of controller `name` (`<name>n<nsid>`).
fn namespaces_of(control: &Control, name: &str) -> Vec<String> {
    control
        .bdevs()
        .values()
        .filter(|b| b.kind == "nvme-pcie")
        .filter(|b| {
            b.name
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('n'))
                .is_some_and(|nsid| !nsid.is_empty() && nsid.parse::<u32>().is_ok())
        })
        .map(|b| b.name.clone())
        .collect()
}

/// `bdev_nvme_attach_controller` with trtype "pcie".
pub(crate) fn attach_rpc(
    control: &Control,
    name: &str,
    traddr: &str,
) -> Result<Vec<String>, RpcError> {
    if !namespaces_of(control, name).is_empty() {
        return Err(RpcError::new(
            ALREADY_EXISTS,
            format!("NVMe controller {name} is already attached"),
        ));
    }
    let cfgs = attach(name, traddr).map_err(|e| RpcError::invalid_params(format!("{e:#}")))?;
    let names: Vec<String> = cfgs.iter().map(|c| c.name.clone()).collect();
    if let Some(taken) = names
        .iter()
        .find(|n| control.target.config().bdevs.contains_key(*n))
    {
        forget(&names);
        return Err(RpcError::new(
            ALREADY_EXISTS,
            format!("bdev {taken} already exists"),
        ));
    }
    let mut done: Vec<String> = Vec::new();
    for cfg in &cfgs {
        if let Err(e) = control.add_bdev(cfg) {
            forget(&names);
            for n in &done {
                let _ = control.delete_bdev(n);
            }
            return Err(RpcError::invalid_params(format!("{e:#}")));
        }
        done.push(cfg.name.clone());
    }
    log::info!("NVMe controller {name} ({traddr}) attached over RPC: {names:?}");
    Ok(names)
}

/// `bdev_nvme_detach_controller`: deletes its namespace bdevs; the controller is released
/// when the last of them (and their channels) is gone.
pub(crate) fn detach_rpc(control: &Control, name: &str) -> Result<(), RpcError> {
    let names = namespaces_of(control, name);
    if names.is_empty() {
        return Err(RpcError::not_found(format!("no NVMe controller {name}")));
    }
    for n in &names {
        control.delete_bdev(n)?;
    }
    log::info!("NVMe controller {name} detached over RPC");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names_are_checked() {
        assert!(bdf_of(Path::new("/sys/bus/pci/devices/0000:00:04.0")).is_ok());
        assert!(bdf_of(Path::new("/tmp/x")).is_err());
        let cfg = |name: &str, path: Option<&str>| BdevConfig {
            name: name.into(),
            kind: "nvme-pcie".into(),
            size: None,
            block_size: None,
            path: path.map(PathBuf::from),
            base: None,
            latency: None,
            cache: None,
        };
        let e = open(&cfg("nvme0n1", None)).expect_err("no path");
        assert!(e.to_string().contains("path"), "{e}");
        let e =
            open(&cfg("nvme0", Some("/sys/bus/pci/devices/0000:00:04.0"))).expect_err("no nsid");
        assert!(e.to_string().contains("<controller>n<nsid>"), "{e}");
        let e = open(&cfg("nvme0n1", Some("/sys/bus/pci/devices/ffff:ff:1f.7")))
            .expect_err("no device");
        assert!(e.to_string().contains("no PCI device"), "{e}");
        assert!(attach("a/b", "0000:00:04.0").is_err());
    }
}
