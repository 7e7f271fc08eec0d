//! Statistics, configuration export, logging, reactors and introspection.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, METHODS};
use crate::appliance::Appliance;
use crate::protocol::RpcError;
use crate::stats;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

pub(super) fn stats_get(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let _: NoParams = params(p)?;
    stats::collect(app)
}

pub(super) fn save_config(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let _: NoParams = params(p)?;
    Ok(json!(app.save_config()?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Level {
    level: String,
}

pub(super) fn log_set_level(_app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Level = params(p)?;
    let level: log::LevelFilter = p.level.parse().map_err(|_| {
        RpcError::invalid_params(format!(
            "level {:?} must be one of off, error, warn, info, debug, trace",
            p.level
        ))
    })?;
    log::set_max_level(level);
    log::info!("log level set to {level}");
    Ok(json!(true))
}

pub(super) fn log_get_level(_app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let _: NoParams = params(p)?;
    Ok(json!(log::max_level().to_string().to_ascii_lowercase()))
}

pub(super) fn framework_get_reactors(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let _: NoParams = params(p)?;
    let connections = app.connections();
    let reactors: Vec<Value> = app
        .reactor_stats()
        .iter()
        .map(|r| {
            json!({
                "index": r.index,
                "lcore": r.core.map(|c| c.0),
                "busy_ns": r.busy_ns,
                "idle_ns": r.idle_ns,
                "busy_ratio": r.load(),
                "iterations": r.iterations,
                "parks": r.parks,
                "parked": r.parked,
                "tasks": r.tasks,
                "messages": r.messages,
                "inbox_full": r.inbox_full,
                "connections": connections.get(r.index).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(json!({ "reactors": reactors }))
}

pub(super) fn rpc_get_methods(_app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let _: NoParams = params(p)?;
    Ok(json!(METHODS.iter().map(|m| m.name).collect::<Vec<_>>()))
}
