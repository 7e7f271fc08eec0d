//! `bdev_*`: backends.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{format_uuid, params};
use crate::appliance::{Appliance, BdevSpec};
use crate::protocol::RpcError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MallocCreate {
    name: String,
    num_blocks: u64,
    #[serde(default = "default_block_size")]
    block_size: u32,
}

fn default_block_size() -> u32 {
    4096
}

pub(super) fn malloc_create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: MallocCreate = params(p)?;
    check_block_size(p.block_size)?;
    if p.num_blocks == 0 {
        return Err(RpcError::invalid_params("num_blocks must be at least 1"));
    }
    app.create_bdev(BdevSpec::Malloc {
        name: p.name.clone(),
        num_blocks: p.num_blocks,
        block_size: p.block_size,
    })?;
    Ok(json!(p.name))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCreate {
    name: String,
    filename: PathBuf,
    #[serde(default)]
    block_size: Option<u32>,
    #[serde(default)]
    size: Option<u64>,
}

pub(super) fn file_create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: FileCreate = params(p)?;
    if let Some(bs) = p.block_size {
        check_block_size(bs)?;
    }
    if !p.filename.is_absolute() {
        return Err(RpcError::invalid_params(format!(
            "filename {} must be an absolute path",
            p.filename.display()
        )));
    }
    app.create_bdev(BdevSpec::File {
        name: p.name.clone(),
        filename: p.filename,
        block_size: p.block_size,
        size: p.size,
    })?;
    Ok(json!(p.name))
}

fn check_block_size(bs: u32) -> Result<(), RpcError> {
    if !(512..=4096).contains(&bs) || !bs.is_power_of_two() {
        return Err(RpcError::invalid_params(format!(
            "block_size {bs} must be a power of two from 512 to 4096"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

pub(super) fn delete(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    app.delete_bdev(&p.name)?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    name: Option<String>,
}

pub(super) fn list(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: ListParams = params(p)?;
    let cfg = app.target().config();
    if let Some(name) = &p.name {
        if !cfg.bdevs.contains_key(name) {
            return Err(RpcError::not_found(format!("no bdev {name}")));
        }
    }
    let mut out = Vec::new();
    for (name, entry) in cfg
        .bdevs
        .iter()
        .filter(|(n, _)| p.name.as_ref().is_none_or(|want| want == *n))
    {
        let claimed_by: Vec<Value> = cfg
            .subsystems
            .values()
            .flat_map(|s| {
                s.namespaces
                    .values()
                    .filter(|ns| &ns.bdev_name == name)
                    .map(|ns| json!({"nqn": s.nqn, "nsid": ns.nsid}))
            })
            .collect();
        let origin = app.bdev_origin(name);
        let volume_kind = crate::volumes::split_name(name)
            .ok()
            .and_then(|(pool, vol)| app.pool(pool)?.volume(vol))
            .map(|v| crate::volumes::kind_str(v.info().kind));
        let b = &entry.bdev;
        let caps = b.capabilities();
        out.push(json!({
            "name": name,
            "kind": volume_kind.map(str::to_string).or_else(|| origin.as_ref().map(|o| o.kind.clone())),
            "pool": app.pool_of_bdev(name),
            "filename": origin.and_then(|o| o.filename).map(|f| f.display().to_string()),
            "block_size": b.block_size(),
            "num_blocks": b.num_blocks(),
            "uuid": format_uuid(&b.uuid()),
            "claimed": !claimed_by.is_empty() || app.pool_of_bdev(name).is_some(),
            "claimed_by": claimed_by,
            "supported_io_types": {
                "write_zeroes": caps.write_zeroes,
                "unmap": caps.unmap,
                "copy": caps.copy,
            },
            "read_only": caps.read_only,
            "thin_provisioned": caps.thin_provisioned,
            "volatile_write_cache": caps.volatile_write_cache,
        }));
    }
    Ok(Value::Array(out))
}
