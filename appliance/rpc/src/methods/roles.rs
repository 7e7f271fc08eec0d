//! Role changes of a replication pair, one site at a time (issue 10): each is a short sequence
//! of the existing methods (exports, journals, pairs, snapshots), so it follows their checks.
//! The replicator processes are started and stopped by the operator (or Ansible).
//!
//! - `replication_switchover` (on the primary): fences host writes (removes the journaled
//!   exports), waits for zero lag, then ends the pair and its journal and exports the plain
//!   volumes at the same NQN/NSID: the site is a secondary. On timeout the exports come back.
//! - `replication_failover` (on the secondary): snapshots the volumes at the applied point (the
//!   base a failback diffs against) and, with `journal`, makes the site a primary: journal,
//!   journaled exports in place of the plain ones, an async pair.
//! - `replication_failback` (on an old primary that came back): snapshots its diverged image,
//!   fences host writes and ends the pair, but keeps the journal so `ferrite-replicator
//!   diverged` can list what it wrote after the secondary's applied point.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{params, METHODS};
use crate::appliance::Appliance;
use crate::protocol::{RpcError, BUSY};

/// Runs another method of the table.
fn call(app: &dyn Appliance, name: &str, p: Value) -> Result<Value, RpcError> {
    let m = METHODS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| RpcError::internal(format!("no method {name}")))?;
    (m.handler)(app, p)
}

/// One export of a bdev: subsystem, namespace id, the exported bdev and the volume under it.
#[derive(Debug, Clone)]
struct Export {
    nqn: String,
    nsid: u32,
    exported: String,
    volume: String,
    group_nsid: u32,
}

/// The group's journaled bdevs (`[(journaled, volume, group nsid)]`).
fn journaled(app: &dyn Appliance, group: u32) -> Result<Vec<(String, String, u32)>, RpcError> {
    let list = call(app, "journal_list", Value::Null)?;
    let j = list
        .as_array()
        .and_then(|a| a.iter().find(|j| j["group"] == group))
        .ok_or_else(|| RpcError::not_found(format!("group {group} has no journal")))?;
    Ok(j["namespaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| {
                    Some((
                        n["journaled_bdev"].as_str()?.to_string(),
                        n["bdev"].as_str()?.to_string(),
                        n["nsid"].as_u64()? as u32,
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Where each of `bdevs` (exported name, volume, group nsid) is exported.
fn exports_of(
    app: &dyn Appliance,
    bdevs: &[(String, String, u32)],
) -> Result<Vec<Export>, RpcError> {
    let subs = call(app, "nvmf_get_subsystems", json!({}))?;
    let mut out = Vec::new();
    for s in subs.as_array().into_iter().flatten() {
        let nqn = s["nqn"].as_str().unwrap_or_default();
        for n in s["namespaces"].as_array().into_iter().flatten() {
            let name = n["bdev_name"].as_str().unwrap_or_default();
            if let Some((exported, volume, g)) = bdevs.iter().find(|b| b.0 == name) {
                out.push(Export {
                    nqn: nqn.to_string(),
                    nsid: n["nsid"].as_u64().unwrap_or(0) as u32,
                    exported: exported.clone(),
                    volume: volume.clone(),
                    group_nsid: *g,
                });
            }
        }
    }
    Ok(out)
}

fn add_ns(app: &dyn Appliance, nqn: &str, nsid: u32, bdev: &str) -> Result<Value, RpcError> {
    call(
        app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": bdev, "nsid": nsid}}),
    )
}

fn remove_ns(app: &dyn Appliance, e: &Export) -> Result<Value, RpcError> {
    call(
        app,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": e.nqn, "nsid": e.nsid}),
    )
}

fn exports_json(ex: &[Export], plain: bool) -> Value {
    Value::Array(
        ex.iter()
            .map(|e| {
                json!({"nqn": e.nqn, "nsid": e.nsid, "group_nsid": e.group_nsid,
                       "bdev": if plain { &e.volume } else { &e.exported }})
            })
            .collect(),
    )
}

/// Group snapshot `<snapshot>-<volume name>` of each volume (one instant).
fn snapshot(app: &dyn Appliance, volumes: &[String], snapshot: &str) -> Result<Value, RpcError> {
    let group: Vec<Value> = volumes
        .iter()
        .map(|v| {
            let short = v.rsplit('/').next().unwrap_or(v);
            json!({"volume": v, "name": format!("{snapshot}-{short}")})
        })
        .collect();
    call(app, "snapshot_create", json!({ "group": group }))
}

/// Ends the pair and unregisters the journaled bdevs (their exports must be gone).
fn end_pair(app: &dyn Appliance, group: u32, ex: &[(String, String, u32)]) -> Result<(), RpcError> {
    call(app, "replication_delete", json!({ "group": group }))?;
    for (journaled, _, _) in ex {
        call(app, "journal_detach", json!({ "bdev": journaled }))?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Switchover {
    group: u32,
    #[serde(default = "default_drain")]
    timeout_ms: u64,
}

fn default_drain() -> u64 {
    30_000
}

/// `replication_switchover`.
pub(super) fn switchover(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Switchover = params(p)?;
    let st = call(app, "replication_status", json!({"group": p.group}))?;
    let bdevs = journaled(app, p.group)?;
    let ex = exports_of(app, &bdevs)?;
    for e in &ex {
        remove_ns(app, e)?;
    }
    let deadline = Instant::now() + Duration::from_millis(p.timeout_ms);
    let mut lag = st[0]["lag_records"].as_u64().unwrap_or(u64::MAX);
    while lag > 0 {
        if Instant::now() >= deadline {
            for e in &ex {
                add_ns(app, &e.nqn, e.nsid, &e.exported)?;
            }
            return Err(RpcError::new(
                BUSY,
                format!(
                    "group {}: the secondary is still {lag} records behind after {} ms (is its replicator running?); host access restored",
                    p.group, p.timeout_ms
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
        let st = call(app, "replication_status", json!({"group": p.group}))?;
        lag = st[0]["lag_records"].as_u64().unwrap_or(u64::MAX);
    }
    let st = call(app, "replication_status", json!({"group": p.group}))?;
    end_pair(app, p.group, &bdevs)?;
    call(app, "journal_delete", json!({"group": p.group}))?;
    for e in &ex {
        add_ns(app, &e.nqn, e.nsid, &e.volume)?;
    }
    log::info!(
        "group {}: switched over at record {} (this site is now a secondary)",
        p.group,
        st[0]["committed_seq"]
    );
    Ok(json!({
        "group": p.group,
        "role": "secondary",
        "drained_seq": st[0]["committed_seq"],
        "namespaces": exports_json(&ex, true),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalSpec {
    pool: String,
    size: Value,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Failover {
    group: u32,
    /// The group's volumes in group namespace order (group nsid 1, 2, ...).
    volumes: Vec<String>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    journal: Option<JournalSpec>,
}

/// `replication_failover`.
pub(super) fn failover(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Failover = params(p)?;
    if p.volumes.is_empty() {
        return Err(RpcError::invalid_params(
            "volumes must name at least one volume",
        ));
    }
    if p.snapshot.is_none() && p.journal.is_none() {
        return Err(RpcError::invalid_params(
            "give snapshot (the failover point), journal (become a primary), or both",
        ));
    }
    let snaps = match &p.snapshot {
        Some(s) => snapshot(app, &p.volumes, s)?,
        None => Value::Null,
    };
    let mut exports = Value::Null;
    if let Some(j) = &p.journal {
        let bdevs: Vec<(String, String, u32)> = p
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), v.clone(), i as u32 + 1))
            .collect();
        let ex = exports_of(app, &bdevs)?;
        call(
            app,
            "journal_create",
            json!({"group": p.group, "pool": j.pool, "size": j.size}),
        )?;
        let mut names = Vec::new();
        for (v, _, nsid) in &bdevs {
            for e in ex.iter().filter(|e| &e.volume == v) {
                remove_ns(app, e)?;
            }
            let name = call(
                app,
                "journal_attach",
                json!({"group": p.group, "bdev": v, "nsid": nsid}),
            )?;
            names.push(name);
        }
        let mut out = Vec::new();
        for e in &ex {
            let name = format!("{}@journal", e.volume);
            add_ns(app, &e.nqn, e.nsid, &name)?;
            out.push(
                json!({"nqn": e.nqn, "nsid": e.nsid, "bdev": name, "group_nsid": e.group_nsid}),
            );
        }
        call(
            app,
            "replication_create",
            json!({"group": p.group, "mode": j.mode.clone().unwrap_or_else(|| "async".into())}),
        )?;
        exports = Value::Array(out);
    }
    log::info!("group {}: failed over to this site", p.group);
    Ok(json!({
        "group": p.group,
        "role": if p.journal.is_some() { "primary" } else { "promoted" },
        "snapshots": snaps,
        "namespaces": exports,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Failback {
    group: u32,
    snapshot: String,
}

/// `replication_failback`.
pub(super) fn failback(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Failback = params(p)?;
    call(app, "replication_status", json!({"group": p.group}))?;
    let bdevs = journaled(app, p.group)?;
    let volumes: Vec<String> = bdevs.iter().map(|b| b.1.clone()).collect();
    let snaps = snapshot(app, &volumes, &p.snapshot)?;
    let ex = exports_of(app, &bdevs)?;
    for e in &ex {
        remove_ns(app, e)?;
    }
    end_pair(app, p.group, &bdevs)?;
    for e in &ex {
        add_ns(app, &e.nqn, e.nsid, &e.volume)?;
    }
    let list = call(app, "journal_list", Value::Null)?;
    let committed = list
        .as_array()
        .and_then(|a| a.iter().find(|j| j["group"] == p.group))
        .map_or(Value::Null, |j| j["committed_seq"].clone());
    log::info!(
        "group {}: failing back (the journal stays for `ferrite-replicator diverged`)",
        p.group
    );
    Ok(json!({
        "group": p.group,
        "role": "secondary",
        "snapshots": snaps,
        "committed_seq": committed,
        "namespaces": exports_json(&ex, true),
    }))
}
