//! `bdev_cache_*`: cached volumes (issue 14 item 3).

use serde::Deserialize;
use serde_json::{json, Value};

use ferrite_bdev::BlockDevice;
use ferrite_cache::{CacheBdev, CacheOptions};

use super::params;
use crate::appliance::{Appliance, BdevSpec};
use crate::protocol::RpcError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    backing_bdev_name: String,
    cache_bdev_name: String,
    #[serde(default)]
    write_policy: Option<String>,
    #[serde(default)]
    line_size: Option<u32>,
    #[serde(default)]
    dirty_limit_percent: Option<u8>,
    #[serde(default)]
    flush: Option<String>,
    #[serde(default)]
    format: bool,
}

pub(super) fn create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Create = params(p)?;
    let options = CacheOptions::from_text(
        p.write_policy.as_deref(),
        p.line_size,
        p.dirty_limit_percent,
        p.flush.as_deref(),
        p.format,
    )
    .map_err(RpcError::invalid_params)?;
    app.create_bdev(BdevSpec::Cache {
        name: p.name.clone(),
        backing: p.backing_bdev_name,
        cache: p.cache_bdev_name,
        options,
    })?;
    Ok(json!(p.name))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

fn cache(app: &dyn Appliance, name: &str) -> Result<std::sync::Arc<CacheBdev>, RpcError> {
    app.cache_bdev(name)
        .ok_or_else(|| RpcError::not_found(format!("no cached volume {name}")))
}

pub(super) fn delete(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    cache(app, &p.name)?;
    app.delete_bdev(&p.name)?;
    Ok(json!(true))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Get {
    #[serde(default)]
    name: Option<String>,
}

pub(super) fn get(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Get = if p.is_null() {
        Get::default()
    } else {
        params(p)?
    };
    let list = match p.name {
        Some(n) => vec![cache(app, &n)?],
        None => app.cache_bdevs(),
    };
    Ok(Value::Array(list.iter().map(|c| cache_json(c)).collect()))
}

pub(super) fn flush(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Named = params(p)?;
    let c = cache(app, &p.name)?;
    c.drain()
        .map_err(|e| RpcError::new(crate::protocol::INTERNAL_ERROR, e))?;
    Ok(json!(true))
}

/// A cached volume's configuration and statistics (`bdev_cache_get`, `stats_get`).
pub(crate) fn cache_json(c: &CacheBdev) -> Value {
    let o = c.options();
    let s = c.stats();
    json!({
        "name": c.name(),
        "backing_bdev_name": c.backing().name(),
        "cache_bdev_name": c.cache_device().name(),
        "write_policy": o.policy.to_string(),
        "line_size": o.line_size,
        "dirty_limit_percent": o.dirty_limit_percent,
        "flush": o.flush.as_str(),
        "volatile_write_cache": c.capabilities().volatile_write_cache,
        "stats": {
            "read_hits": s.read_hits,
            "read_misses": s.read_misses,
            "hit_rate": s.hit_rate,
            "dirty_bytes": s.dirty_bytes,
            "cached_lines": s.cached_lines,
            "capacity_lines": s.capacity_lines,
            "write_back_lag_ms": s.write_back_lag_ms,
            "written_back_bytes": s.written_back_bytes,
            "written_through_bytes": s.written_through_bytes,
            "evictions": s.evictions,
            "throttled_writes": s.throttled_writes,
            "throttled_us": s.throttled_us,
            "write_back_errors": s.write_back_errors,
        },
    })
}
