//! `snapshot_diff`: the extents of a volume or snapshot that differ from an earlier snapshot
//! of the same pool, from the mapping layer's cluster tables (what ferrite-tape's incremental
//! backups read instead of the whole snapshot).

use serde::Deserialize;
use serde_json::Value;

use super::params;
use crate::appliance::Appliance;
use crate::protocol::RpcError;
use crate::volumes::{local_name, split_name};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Diff {
    /// `"<pool>/<snapshot>"`.
    base: String,
    /// `"<pool>/<volume or snapshot>"` (or a bare name in the base's pool).
    target: String,
}

pub(super) fn snapshot_diff(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Diff = params(p)?;
    let (pool_name, base) = split_name(&p.base)?;
    let target = local_name(pool_name, &p.target)?;
    let pool = app
        .pool(pool_name)
        .ok_or_else(|| RpcError::not_found(format!("no pool {pool_name}")))?;
    let d = pool.diff(base, target)?;
    serde_json::to_value(d).map_err(|e| RpcError::internal(e.to_string()))
}
