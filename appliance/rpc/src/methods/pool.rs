//! `pool_*`: storage pools over registered bdevs (the mapping layer, `ferrite-volume`).

use ferrite_volume::{check_name, Pool, PoolOptions, VolumeError, DEFAULT_CLUSTER};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, Size};
use crate::appliance::Appliance;
use crate::protocol::RpcError;
use crate::volumes;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    bdevs: Vec<String>,
    #[serde(default)]
    cluster_size: Option<Size>,
}

pub(super) fn create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Create = params(p)?;
    check_name(&p.name)
        .map_err(|reason| RpcError::invalid_params(format!("pool name {:?}: {reason}", p.name)))?;
    if p.bdevs.is_empty() {
        return Err(RpcError::invalid_params(
            "bdevs must name at least one bdev",
        ));
    }
    let opts = PoolOptions {
        cluster_size: p.cluster_size.map_or(DEFAULT_CLUSTER, |s| s.0),
    };
    let _guard = app.volume_lock();
    let pool = app.create_pool(&p.name, &p.bdevs, opts)?;
    Ok(pool_json(&pool))
}

/// The pool's figures plus derived byte counts.
pub(crate) fn pool_json(pool: &Pool) -> Value {
    let info = pool.info();
    let cs = info.cluster_size;
    let used_percent = if info.total_clusters == 0 {
        0.0
    } else {
        (info.allocated_clusters as f64 * 1000.0 / info.total_clusters as f64).round() / 10.0
    };
    let mut v = serde_json::to_value(&info).unwrap_or(Value::Null);
    v["capacity_bytes"] = json!(info.total_clusters * cs);
    v["allocated_bytes"] = json!(info.allocated_clusters * cs);
    v["free_bytes"] = json!(info.free_clusters * cs);
    v["shared_bytes"] = json!(info.shared_clusters * cs);
    v["used_percent"] = json!(used_percent);
    v
}

pub(super) fn list(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let _: super::system::NoParams = params(p)?;
    Ok(Value::Array(
        app.pools().iter().map(|p| pool_json(p)).collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

fn find(app: &dyn Appliance, name: &str) -> Result<std::sync::Arc<Pool>, RpcError> {
    app.pool(name)
        .ok_or_else(|| RpcError::not_found(format!("no pool {name}")))
}

pub(super) fn info(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let pool = find(app, &p.name)?;
    let mut v = pool_json(&pool);
    let mut names: Vec<Value> = pool
        .volumes()
        .iter()
        .map(|vol| {
            let i = vol.info();
            json!({"name": vol_bdev(&i.pool, &i.name), "kind": volumes::kind_str(i.kind),
                   "size_bytes": i.size_bytes, "allocated_bytes": i.allocated_bytes})
        })
        .collect();
    names.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    v["volume_list"] = Value::Array(names);
    v["events"] = serde_json::to_value(pool.take_events()).unwrap_or(Value::Null);
    Ok(v)
}

fn vol_bdev(pool: &str, name: &str) -> String {
    volumes::bdev_name(pool, name)
}

pub(super) fn check(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let pool = find(app, &p.name)?;
    let report = pool.check()?;
    Ok(json!({
        "name": p.name,
        "clean": report.errors.is_empty(),
        "errors": report.errors,
        "clusters_checked": report.clusters_checked,
        "volumes_checked": report.volumes_checked,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    name: String,
    #[serde(default)]
    force: bool,
}

pub(super) fn delete(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Delete = params(p)?;
    let _guard = app.volume_lock();
    let pool = find(app, &p.name)?;
    let target = app.target();
    let vols = pool.volumes();
    if !vols.is_empty() && !p.force {
        return Err(VolumeError::NotEmpty {
            pool: p.name,
            volumes: vols.len(),
        }
        .into());
    }
    for v in &vols {
        volumes::refuse_if_exported(target, v.name(), &format!("delete pool {} holding", p.name))?;
    }
    let mut removed = Vec::new();
    let restore = |removed: &[String]| {
        for name in removed {
            volumes::reregister(target, &pool, name);
        }
    };
    for v in &vols {
        if let Err(e) = volumes::unregister(target, v.name(), "delete the pool holding") {
            restore(&removed);
            return Err(e);
        }
        removed.push(v.volume_name());
    }
    drop(vols);
    if let Err(e) = app.delete_pool(&p.name, p.force) {
        restore(&removed);
        return Err(e);
    }
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceWarning {
    name: String,
    percent: u8,
}

pub(super) fn set_space_warning(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: SpaceWarning = params(p)?;
    if !(1..=100).contains(&p.percent) {
        return Err(RpcError::invalid_params(format!(
            "percent {} must be 1 to 100",
            p.percent
        )));
    }
    let _guard = app.volume_lock();
    let pool = find(app, &p.name)?;
    pool.set_space_warning(p.percent);
    app.set_space_warning(&p.name, p.percent)?;
    Ok(json!(true))
}
