//! QoS limits: `bdev_set_qos_limit` (SPDK's method and parameter names) for a namespace's bdev,
//! `nvmf_set_host_qos_limit` for everything one host does, `qos_get_limits` to read them back.
//! A value is a positive integer; `null` removes that limit; 0, negative and fractional values
//! are refused with the parameter's name (SPDK reads 0 as "no limit", which hides typos).

use serde_json::{json, Map, Value};

use ferrite_qos::{LimitKind, LimitUpdate, Limits, Table};

use crate::appliance::Appliance;
use crate::protocol::RpcError;

/// Splits `p` into the key parameter (`name` or `host`) and a checked limit update.
fn decode(p: Value, key: &str) -> Result<(String, LimitUpdate), RpcError> {
    let Value::Object(map) = p else {
        return Err(RpcError::invalid_params(format!(
            "params must be an object with {key:?} and limits"
        )));
    };
    let mut target = None;
    let mut update = LimitUpdate::default();
    for (field, value) in map {
        if field == key {
            match value {
                Value::String(s) if !s.is_empty() => target = Some(s),
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "{key} must be a non-empty string"
                    )))
                }
            }
            continue;
        }
        let Some(kind) = LimitKind::from_name(&field) else {
            return Err(RpcError::invalid_params(format!(
                "unknown field {field:?}: expected {key} and any of {}",
                LimitKind::ALL.map(LimitKind::name).join(", ")
            )));
        };
        let number = match &value {
            Value::Null => None,
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Some(i128::from(i)),
                (None, Some(u)) => Some(i128::from(u)),
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "{field} must be a positive integer (got {n})"
                    )))
                }
            },
            other => {
                return Err(RpcError::invalid_params(format!(
                    "{field} must be a positive integer or null (got {other})"
                )))
            }
        };
        update
            .set(kind, number)
            .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    }
    let target =
        target.ok_or_else(|| RpcError::invalid_params(format!("missing field {key:?}")))?;
    Ok((target, update))
}

pub(crate) fn limits_json(l: &Limits) -> Value {
    let mut m = Map::new();
    for (k, v) in l.iter() {
        m.insert(k.name().to_string(), json!(v));
    }
    Value::Object(m)
}

pub(super) fn set_bdev(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let (name, update) = decode(p, "name")?;
    let target = app.target();
    if !target.config().bdevs.contains_key(&name) {
        return Err(RpcError::not_found(format!("no bdev named {name:?}")));
    }
    let limits = target
        .qos()
        .set_bdev(&name, &update)
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok(limits_json(&limits))
}

pub(super) fn set_host(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let (host, update) = decode(p, "host")?;
    let limits = app
        .target()
        .qos()
        .set_host(&host, &update)
        .map_err(|e| RpcError::invalid_params(e.to_string()))?;
    Ok(limits_json(&limits))
}

/// Every limit with the I/Os it delayed so far and the reactors sharing it.
pub(crate) fn table_json(table: &Table) -> Value {
    let entries = |map: &std::collections::BTreeMap<String, std::sync::Arc<ferrite_qos::Entry>>,
                   key: &str| {
        map.iter()
            .map(|(name, e)| {
                let mut v = limits_json(&e.limits);
                v[key] = json!(name);
                v["delayed_ios"] = json!(e.delayed());
                v["active_reactors"] = json!(e.active_reactors());
                v
            })
            .collect::<Vec<_>>()
    };
    json!({"bdevs": entries(&table.bdevs, "name"), "hosts": entries(&table.hosts, "host")})
}

pub(super) fn get_limits(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    if !matches!(&p, Value::Null) && p.as_object().is_none_or(|m| !m.is_empty()) {
        return Err(RpcError::invalid_params(
            "qos_get_limits takes no parameters",
        ));
    }
    Ok(table_json(&app.target().qos().table()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(p: Value) -> String {
        decode(p, "name").expect_err("must be refused").message
    }

    #[test]
    fn bad_values_name_the_parameter() {
        assert!(err(json!({"name": "a", "rw_ios_per_sec": 0}))
            .contains("rw_ios_per_sec must be a positive"));
        assert!(err(json!({"name": "a", "r_mbytes_per_sec": -3})).contains("(got -3)"));
        assert!(err(json!({"name": "a", "w_mbytes_per_sec": 1.5})).contains("w_mbytes_per_sec"));
        assert!(err(json!({"name": "a", "w_mbytes_per_sec": "10"})).contains("or null"));
        assert!(err(json!({"name": "a", "rw_iops": 10})).contains("unknown field \"rw_iops\""));
        assert!(err(json!({"rw_ios_per_sec": 10})).contains("missing field \"name\""));
        assert!(err(json!({"name": "", "rw_ios_per_sec": 10})).contains("non-empty"));
        let (name, u) = decode(
            json!({"name": "a", "rw_ios_per_sec": 2000, "r_mbytes_per_sec": null}),
            "name",
        )
        .expect("must succeed");
        assert_eq!(name, "a");
        assert!(!u.is_empty());
    }
}
