//! `volume_*`, `snapshot_*`, `clone_create`: volumes of a pool, each registered with the
//! target as bdev `"<pool>/<volume>"` so `nvmf_subsystem_add_ns` exports it unchanged.

use std::sync::Arc;

use ferrite_volume::{check_name, Pool, Provisioning, Volume, VolumeError, VolumeKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, Size};
use crate::appliance::Appliance;
use crate::protocol::RpcError;
use crate::volumes::{self, bdev_name, local_name, split_name};

fn pool_of(app: &dyn Appliance, name: &str) -> Result<Arc<Pool>, RpcError> {
    app.pool(name)
        .ok_or_else(|| RpcError::not_found(format!("no pool {name}")))
}

/// Resolves `"pool/volume"`.
fn resolve(app: &dyn Appliance, name: &str) -> Result<(Arc<Pool>, Arc<Volume>), RpcError> {
    let (pool_name, vol) = split_name(name)?;
    let pool = pool_of(app, pool_name)?;
    let v = pool
        .volume(vol)
        .ok_or_else(|| RpcError::from(VolumeError::NoSuchVolume(name.to_string())))?;
    Ok((pool, v))
}

fn check_new_name(name: &str) -> Result<(), RpcError> {
    check_name(name).map_err(|reason| RpcError::invalid_params(format!("name {name:?}: {reason}")))
}

/// Info, the bdev name and who exports it.
fn volume_json(app: &dyn Appliance, v: &Volume) -> Value {
    let info = v.info();
    let bdev = bdev_name(&info.pool, &info.name);
    let exported: Vec<Value> = app
        .target()
        .exports_of(&bdev)
        .into_iter()
        .map(|(nqn, nsid)| json!({"nqn": nqn, "nsid": nsid}))
        .collect();
    let mut out = serde_json::to_value(&info).unwrap_or(Value::Null);
    out["bdev_name"] = json!(bdev);
    out["exported_by"] = Value::Array(exported);
    out
}

/// Registers a volume made by the pool; undoes the pool change when that fails.
fn publish(app: &dyn Appliance, pool: &Pool, v: &Arc<Volume>) -> Result<(), RpcError> {
    if let Err(e) = volumes::register(app.target(), v) {
        if let Err(undo) = pool.delete_volume(&v.volume_name()) {
            log::error!("undoing {} after a failed registration: {undo}", v.name());
        }
        return Err(e.into());
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    pool: String,
    name: String,
    size: Size,
    #[serde(default = "yes")]
    thin: bool,
}

fn yes() -> bool {
    true
}

pub(super) fn create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Create = params(p)?;
    check_new_name(&p.name)?;
    let _guard = app.volume_lock();
    let pool = pool_of(app, &p.pool)?;
    let prov = if p.thin {
        Provisioning::Thin
    } else {
        Provisioning::Thick
    };
    let v = pool.create_volume(&p.name, p.size.0, prov)?;
    publish(app, &pool, &v)?;
    Ok(volume_json(app, &v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionalPool {
    #[serde(default)]
    pool: Option<String>,
}

/// Volumes of `kinds` in one pool or every pool, sorted by bdev name.
fn list_kinds(app: &dyn Appliance, p: Value, kinds: &[VolumeKind]) -> Result<Value, RpcError> {
    let p: OptionalPool = params(p)?;
    let pools = match &p.pool {
        Some(name) => vec![pool_of(app, name)?],
        None => app.pools(),
    };
    let mut out: Vec<Value> = pools
        .iter()
        .flat_map(|pool| pool.volumes())
        .filter(|v| kinds.contains(&v.info().kind))
        .map(|v| volume_json(app, &v))
        .collect();
    out.sort_by(|a, b| a["bdev_name"].as_str().cmp(&b["bdev_name"].as_str()));
    Ok(Value::Array(out))
}

pub(super) fn list(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    list_kinds(app, p, &[VolumeKind::Volume, VolumeKind::Clone])
}

pub(super) fn snapshot_list(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    list_kinds(app, p, &[VolumeKind::Snapshot])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

pub(super) fn info(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let (_, v) = resolve(app, &p.name)?;
    let mut out = volume_json(app, &v);
    out["stats"] = serde_json::to_value(v.stats()).unwrap_or(Value::Null);
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    name: String,
    size: Size,
    #[serde(default)]
    force: bool,
}

pub(super) fn resize(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Resize = params(p)?;
    let _guard = app.volume_lock();
    let (pool, v) = resolve(app, &p.name)?;
    pool.resize_volume(&v.volume_name(), p.size.0, p.force)?;
    let notified = notify_resized(app, &v);
    Ok(json!({"name": p.name, "size_bytes": v.size_bytes(), "notified": notified}))
}

/// Hosts of every export get a Namespace Attribute Changed event.
fn notify_resized(app: &dyn Appliance, v: &Volume) -> Vec<Value> {
    match app.target().bdev_resized(v.name()) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(nqn, nsid)| json!({"nqn": nqn, "nsid": nsid}))
            .collect(),
        Err(e) => {
            log::warn!("{}: resize notification: {e}", v.name());
            Vec::new()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: String,
    new_name: String,
}

pub(super) fn rename(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Rename = params(p)?;
    let _guard = app.volume_lock();
    let (pool, v) = resolve(app, &p.name)?;
    let new = local_name(pool.name(), &p.new_name)?.to_string();
    check_new_name(&new)?;
    let old = v.volume_name();
    let target = app.target();
    volumes::unregister(target, v.name(), "rename")?;
    if let Err(e) = pool.rename_volume(&old, &new) {
        volumes::reregister(target, &pool, &old);
        return Err(e.into());
    }
    let renamed = pool
        .volume(&new)
        .ok_or_else(|| RpcError::internal(format!("{new} vanished after its rename")))?;
    volumes::register(target, &renamed)?;
    Ok(json!(bdev_name(pool.name(), &new)))
}

/// Deletes a volume/clone (`snapshot` false) or a snapshot (`snapshot` true).
fn delete_kind(app: &dyn Appliance, name: &str, snapshot: bool) -> Result<Value, RpcError> {
    let _guard = app.volume_lock();
    let (pool, v) = resolve(app, name)?;
    let is_snapshot = v.info().kind == VolumeKind::Snapshot;
    if snapshot && !is_snapshot {
        return Err(VolumeError::NotASnapshot(name.to_string()).into());
    }
    if !snapshot && is_snapshot {
        return Err(RpcError::invalid_params(format!(
            "{name} is a snapshot: delete it with snapshot_delete"
        )));
    }
    let vol = v.volume_name();
    let target = app.target();
    volumes::unregister(target, v.name(), "delete")?;
    drop(v);
    if let Err(e) = pool.delete_volume(&vol) {
        volumes::reregister(target, &pool, &vol);
        return Err(e.into());
    }
    Ok(json!(true))
}

pub(super) fn delete(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    delete_kind(app, &p.name, false)
}

pub(super) fn snapshot_delete(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    delete_kind(app, &p.name, true)
}

pub(super) fn inflate(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let _guard = app.volume_lock();
    let (pool, v) = resolve(app, &p.name)?;
    pool.inflate_volume(&v.volume_name())?;
    Ok(volume_json(app, &v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revert {
    name: String,
    snapshot: String,
}

pub(super) fn revert(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Revert = params(p)?;
    let _guard = app.volume_lock();
    let (pool, v) = resolve(app, &p.name)?;
    let snap = local_name(pool.name(), &p.snapshot)?;
    let before = v.size_bytes();
    pool.revert_volume(&v.volume_name(), snap)?;
    if v.size_bytes() != before {
        notify_resized(app, &v);
    }
    Ok(volume_json(app, &v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    volume: String,
    name: String,
}

/// Either `{volume, name}` or `{group: [{volume, name}, ..]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotCreate {
    #[serde(default)]
    volume: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    group: Option<Vec<Pair>>,
}

pub(super) fn snapshot_create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: SnapshotCreate = params(p)?;
    let pairs = match (p.volume, p.name, p.group) {
        (Some(volume), Some(name), None) => vec![Pair { volume, name }],
        (None, None, Some(group)) if !group.is_empty() => group,
        _ => {
            return Err(RpcError::invalid_params(
                "give either volume and name, or a non-empty group of {volume, name}",
            ))
        }
    };
    let (pool_name, _) = split_name(&pairs[0].volume)?;
    let pool_name = pool_name.to_string();
    let mut local = Vec::with_capacity(pairs.len());
    for pair in &pairs {
        let (pn, vol) = split_name(&pair.volume)?;
        if pn != pool_name {
            return Err(RpcError::invalid_params(format!(
                "a group snapshot is taken within one pool: {} is not in pool {pool_name}",
                pair.volume
            )));
        }
        let snap = local_name(&pool_name, &pair.name)?;
        check_new_name(snap)?;
        local.push((vol.to_string(), snap.to_string()));
    }
    let _guard = app.volume_lock();
    let pool = pool_of(app, &pool_name)?;
    let snaps = if local.len() == 1 {
        vec![pool.snapshot(&local[0].0, &local[0].1)?]
    } else {
        pool.group_snapshot(&local)?
    };
    let mut out = Vec::new();
    for s in &snaps {
        publish(app, &pool, s)?;
        out.push(json!(s.name()));
    }
    Ok(Value::Array(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneCreate {
    snapshot: String,
    name: String,
}

pub(super) fn clone_create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: CloneCreate = params(p)?;
    let _guard = app.volume_lock();
    let (pool, snap) = resolve(app, &p.snapshot)?;
    let name = local_name(pool.name(), &p.name)?;
    check_new_name(name)?;
    let c = pool.clone_snapshot(&snap.volume_name(), name)?;
    publish(app, &pool, &c)?;
    Ok(volume_json(app, &c))
}
