//! `journal_*`: replication journals of consistency groups.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, Size};
use crate::appliance::Appliance;
use crate::journals::{JournalCreate, JournalHost};
use crate::protocol::RpcError;

/// Default data bytes per record slot.
const DEFAULT_SLOT: u64 = 128 << 10;

fn host(app: &dyn Appliance) -> Result<&dyn JournalHost, RpcError> {
    app.journals()
        .ok_or_else(|| RpcError::internal("this process has no replication journals"))
}

pub(super) fn check_group(group: u32) -> Result<(), RpcError> {
    if group == 0 {
        return Err(RpcError::invalid_params("group must be at least 1"));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    group: u32,
    pool: String,
    size: Size,
    #[serde(default)]
    slot_size: Option<Size>,
}

pub(super) fn create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Create = params(p)?;
    check_group(p.group)?;
    let slot = p.slot_size.map_or(DEFAULT_SLOT, |s| s.0);
    // A host write is one record: a slot holds the largest write the target accepts.
    let min = u64::from(ferrite_nvmf::MAX_TRANSFER_BYTES);
    if !(min..=(4 << 20)).contains(&slot) {
        return Err(RpcError::invalid_params(format!(
            "slot_size {slot} must be from {} KiB (the target's largest transfer) to 4 MiB",
            min >> 10
        )));
    }
    let _guard = app.volume_lock();
    host(app)?.journal_create(JournalCreate {
        group: p.group,
        pool: p.pool,
        size: p.size.0,
        slot_size: slot as u32,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attach {
    group: u32,
    bdev: String,
    nsid: u32,
}

pub(super) fn attach(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Attach = params(p)?;
    check_group(p.group)?;
    if p.nsid == 0 || p.nsid == u32::MAX {
        return Err(RpcError::invalid_params(format!(
            "nsid {} must be from 1 to 4294967294",
            p.nsid
        )));
    }
    let _guard = app.volume_lock();
    Ok(json!(host(app)?.journal_attach(p.group, &p.bdev, p.nsid)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Detach {
    bdev: String,
}

pub(super) fn detach(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Detach = params(p)?;
    let _guard = app.volume_lock();
    host(app)?.journal_detach(&p.bdev)?;
    Ok(json!(true))
}

pub(super) fn list(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    if !(p.is_null() || p.as_object().is_some_and(|o| o.is_empty())) {
        return Err(RpcError::invalid_params("journal_list takes no parameters"));
    }
    Ok(host(app)?.journal_list())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    group: u32,
}

pub(super) fn delete(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Group = params(p)?;
    let _guard = app.volume_lock();
    host(app)?.journal_delete(p.group)?;
    Ok(json!(true))
}
