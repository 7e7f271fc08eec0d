//! `stats_get`: reactor busy/idle and connection counts (cumulative; clients diff two samples
//! for rates).

use serde_json::{json, Value};

use crate::appliance::Appliance;

pub(crate) fn collect(app: &dyn Appliance) -> Value {
    let target = app.target();
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
                "connections": connections.get(r.index).copied().unwrap_or(0),
            })
        })
        .collect();
    json!({
        "uptime_ns": u64::try_from(target.started().elapsed().as_nanos()).unwrap_or(u64::MAX),
        "reactors": reactors,
    })
}
