//! `bdev_*`: backends.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{format_uuid, params};
use ferrite_bdev::delay::{Latencies, LatencyType};
use ferrite_bdev::inject::{ErrorType, IoClass};
use ferrite_bdev::{BdevKind, FaultBdev};

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
    // Limits die with their bdev (a new bdev of that name starts unlimited).
    app.target().qos().remove_bdev(&p.name);
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

// ---- fault-test backends ----------------------------------------------------------------

fn fault(app: &dyn Appliance, name: &str) -> Result<FaultBdev, RpcError> {
    app.fault_bdev(name).ok_or_else(|| {
        RpcError::not_found(format!("no error, delay or power-cut bdev named {name}"))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorCreate {
    base_name: String,
    #[serde(default)]
    name: Option<String>,
}

pub(super) fn error_create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: ErrorCreate = params(p)?;
    let name = p
        .name
        .unwrap_or_else(|| ferrite_bdev::ErrorBdev::default_name(&p.base_name));
    app.create_bdev(BdevSpec::Fault {
        name: name.clone(),
        kind: BdevKind::Error,
        base: p.base_name,
        latencies: None,
    })?;
    Ok(json!(name))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectError {
    name: String,
    io_type: String,
    error_type: String,
    #[serde(default = "one")]
    num: u64,
    #[serde(default)]
    corrupt_offset: u32,
    #[serde(default = "one_u8")]
    corrupt_value: u8,
}

fn one() -> u64 {
    1
}

fn one_u8() -> u8 {
    1
}

pub(super) fn error_inject(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: InjectError = params(p)?;
    let FaultBdev::Error(dev) = fault(app, &p.name)? else {
        return Err(RpcError::invalid_params(format!(
            "bdev {} is not an error bdev",
            p.name
        )));
    };
    let classes: Vec<IoClass> = if p.io_type == "all" {
        IoClass::ALL.to_vec()
    } else {
        vec![IoClass::ALL
            .into_iter()
            .find(|c| c.as_str() == p.io_type)
            .ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "unknown io_type {:?} (all, read, write, flush, unmap, write_zeroes, copy)",
                    p.io_type
                ))
            })?]
    };
    let error = match p.error_type.as_str() {
        "clear" => {
            dev.clear(&classes);
            return Ok(json!(true));
        }
        "failure" => ErrorType::Failure,
        "nomem" => ErrorType::NoMemory,
        "pending" => ErrorType::Pending,
        "corrupt_data" => ErrorType::CorruptData {
            offset: p.corrupt_offset,
            value: p.corrupt_value,
        },
        other => {
            return Err(RpcError::invalid_params(format!(
                "unknown error_type {other:?} ({}, clear)",
                ErrorType::NAMES.join(", ")
            )))
        }
    };
    if p.num == 0 {
        return Err(RpcError::invalid_params("num must be at least 1"));
    }
    dev.inject(&classes, error, p.num);
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayCreate {
    base_bdev_name: String,
    name: String,
    #[serde(default)]
    avg_read_latency: u64,
    #[serde(default)]
    p99_read_latency: u64,
    #[serde(default)]
    avg_write_latency: u64,
    #[serde(default)]
    p99_write_latency: u64,
}

pub(super) fn delay_create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: DelayCreate = params(p)?;
    let latencies = Latencies {
        avg_read_us: p.avg_read_latency,
        p99_read_us: p.p99_read_latency,
        avg_write_us: p.avg_write_latency,
        p99_write_us: p.p99_write_latency,
    };
    latencies
        .validate()
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    app.create_bdev(BdevSpec::Fault {
        name: p.name.clone(),
        kind: BdevKind::Delay,
        base: p.base_bdev_name,
        latencies: Some(latencies),
    })?;
    Ok(json!(p.name))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayUpdate {
    delay_bdev_name: String,
    latency_type: String,
    latency_us: u64,
}

pub(super) fn delay_update(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: DelayUpdate = params(p)?;
    let t: LatencyType = p
        .latency_type
        .parse()
        .map_err(|e: ferrite_bdev::BdevError| RpcError::invalid_params(e.to_string()))?;
    let FaultBdev::Delay(dev) = fault(app, &p.delay_bdev_name)? else {
        return Err(RpcError::invalid_params(format!(
            "bdev {} is not a delay bdev",
            p.delay_bdev_name
        )));
    };
    dev.update(t, p.latency_us)
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PowerCutCreate {
    base_bdev_name: String,
    name: String,
}

pub(super) fn power_cut_create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: PowerCutCreate = params(p)?;
    app.create_bdev(BdevSpec::Fault {
        name: p.name.clone(),
        kind: BdevKind::PowerCut,
        base: p.base_bdev_name,
        latencies: None,
    })?;
    Ok(json!(p.name))
}

pub(super) fn power_cut(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let FaultBdev::PowerCut(dev) = fault(app, &p.name)? else {
        return Err(RpcError::invalid_params(format!(
            "bdev {} is not a power-cut bdev",
            p.name
        )));
    };
    let volatile_blocks = dev.volatile_blocks();
    dev.cut();
    Ok(json!({ "volatile_blocks": volatile_blocks }))
}
