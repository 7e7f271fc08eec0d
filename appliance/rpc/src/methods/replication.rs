//! `replication_*`: replication pairs of consistency groups (the journal's mode, lost-link
//! policy, pause and status).

use serde::Deserialize;
use serde_json::{json, Value};

use super::journal::check_group;
use super::params;
use crate::appliance::Appliance;
use crate::protocol::RpcError;
use crate::replication::{PairChanges, PairSettings, ReplicationHost};

/// Default wait for the secondary in sync mode.
const DEFAULT_SYNC_TIMEOUT_MS: u64 = 5000;
/// Default async RPO.
const DEFAULT_RPO_S: u64 = 60;

fn host(app: &dyn Appliance) -> Result<&dyn ReplicationHost, RpcError> {
    app.replication()
        .ok_or_else(|| RpcError::internal("this process has no replication pairs"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    group: u32,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    link_policy: Option<String>,
    #[serde(default)]
    sync_timeout_ms: Option<u64>,
    #[serde(default)]
    rpo_s: Option<u64>,
    #[serde(default)]
    replicator_status_socket: Option<String>,
}

fn check_mode(mode: &str) -> Result<(), RpcError> {
    if !matches!(mode, "async" | "sync") {
        return Err(RpcError::invalid_params(format!(
            "mode {mode:?} must be \"async\" or \"sync\""
        )));
    }
    Ok(())
}

fn check_link_policy(link_policy: &str) -> Result<(), RpcError> {
    if !matches!(link_policy, "fail" | "degrade") {
        return Err(RpcError::invalid_params(format!(
            "link_policy {link_policy:?} must be \"fail\" or \"degrade\""
        )));
    }
    Ok(())
}

fn check_sync_timeout(sync_timeout_ms: u64) -> Result<(), RpcError> {
    if !(10..=600_000).contains(&sync_timeout_ms) {
        return Err(RpcError::invalid_params(format!(
            "sync_timeout_ms {sync_timeout_ms} must be from 10 to 600000"
        )));
    }
    Ok(())
}

fn check_rpo(rpo_s: u64) -> Result<(), RpcError> {
    if !(1..=86_400 * 7).contains(&rpo_s) {
        return Err(RpcError::invalid_params(format!(
            "rpo_s {rpo_s} must be from 1 to 604800"
        )));
    }
    Ok(())
}

/// Only the given settings, each checked.
fn changes(p: &Settings) -> Result<PairChanges, RpcError> {
    check_group(p.group)?;
    p.mode.as_deref().map(check_mode).transpose()?;
    p.link_policy
        .as_deref()
        .map(check_link_policy)
        .transpose()?;
    p.sync_timeout_ms.map(check_sync_timeout).transpose()?;
    p.rpo_s.map(check_rpo).transpose()?;
    Ok(PairChanges {
        mode: p.mode.clone(),
        link_policy: p.link_policy.clone(),
        sync_timeout_ms: p.sync_timeout_ms,
        rpo_s: p.rpo_s,
    })
}

/// The given settings, the others at their defaults.
fn settings(p: &Settings) -> Result<PairSettings, RpcError> {
    let defaults = PairSettings {
        mode: "async".into(),
        link_policy: "fail".into(),
        sync_timeout_ms: DEFAULT_SYNC_TIMEOUT_MS,
        rpo_s: DEFAULT_RPO_S,
    };
    Ok(changes(p)?.applied_to(defaults))
}

pub(super) fn create(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Settings = params(p)?;
    let s = settings(&p)?;
    host(app)?.replication_create(p.group, s, p.replicator_status_socket)
}

pub(super) fn set_mode(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Settings = params(p)?;
    if p.replicator_status_socket.is_some() {
        return Err(RpcError::invalid_params(
            "replication_set_mode does not change replicator_status_socket",
        ));
    }
    let c = changes(&p)?;
    if c == PairChanges::default() {
        return Err(RpcError::invalid_params(
            "replication_set_mode: give at least one of mode, link_policy, sync_timeout_ms, rpo_s",
        ));
    }
    host(app)?.replication_set_mode(p.group, c)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaybeGroup {
    #[serde(default)]
    group: Option<u32>,
}

pub(super) fn status(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: MaybeGroup = if p.is_null() {
        MaybeGroup { group: None }
    } else {
        params(p)?
    };
    if let Some(g) = p.group {
        check_group(g)?;
    }
    host(app)?.replication_status(p.group)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    group: u32,
}

pub(super) fn pause(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Group = params(p)?;
    check_group(p.group)?;
    host(app)?.replication_pause(p.group, true)
}

pub(super) fn resume(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Group = params(p)?;
    check_group(p.group)?;
    host(app)?.replication_pause(p.group, false)
}

pub(super) fn delete(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Group = params(p)?;
    check_group(p.group)?;
    host(app)?.replication_delete(p.group)?;
    Ok(json!(true))
}
