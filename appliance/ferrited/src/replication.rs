//! The daemon's replication pairs (issue 10): a consistency group with a journal becomes a pair
//! with `replication_create`, which sets how its host writes complete (`async`, or `sync` with a
//! lost-link policy) and lets `replication_status` / `stats_get` report lag and state. The
//! records themselves move in `ferrite-replicator`; a pair may name that process's status
//! socket to include its view (connections, retransmits, what the secondary applied).
//!
//! Kept in the configuration as `[journal.replication]` under the group's `[[journal]]`.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrite_journal::{Journal, LinkPolicy, Mode, SyncPolicy, SyncState};
use ferrite_rpc::protocol::ALREADY_EXISTS;
use ferrite_rpc::replication::{PairChanges, PairSettings, ReplicationHost};
use ferrite_rpc::RpcError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::control::Control;
use crate::journals::Entry;

/// How long reading the replicator's status socket may take.
const REPLICATOR_STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// `[journal.replication]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// `"async"` or `"sync"`.
    pub mode: String,
    /// `"fail"` or `"degrade"`.
    pub link_policy: String,
    pub sync_timeout_ms: u64,
    pub rpo_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicator_status_socket: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// The journal's sync policy of a pair.
fn policy_of(c: &ReplicationConfig) -> Result<SyncPolicy, String> {
    let mode = match c.mode.as_str() {
        "async" => Mode::Async,
        "sync" => Mode::Sync,
        m => {
            return Err(format!(
                "replication mode {m:?} is not \"async\" or \"sync\""
            ))
        }
    };
    let link_policy = match c.link_policy.as_str() {
        "fail" => LinkPolicy::Fail,
        "degrade" => LinkPolicy::Degrade,
        p => return Err(format!("link_policy {p:?} is not \"fail\" or \"degrade\"")),
    };
    if c.sync_timeout_ms == 0 {
        return Err("sync_timeout_ms must be more than 0".into());
    }
    Ok(SyncPolicy {
        mode,
        link_policy,
        timeout: Duration::from_millis(c.sync_timeout_ms),
    })
}

/// Sets the journal's mode and pause flag from a pair's configuration.
pub(crate) fn apply(journal: &Journal, c: &ReplicationConfig) -> Result<(), String> {
    journal.set_sync_policy(policy_of(c)?);
    journal.set_paused(c.paused);
    Ok(())
}

fn config_of(s: PairSettings, socket: Option<PathBuf>, paused: bool) -> ReplicationConfig {
    ReplicationConfig {
        mode: s.mode,
        link_policy: s.link_policy,
        sync_timeout_ms: s.sync_timeout_ms,
        rpo_s: s.rpo_s,
        replicator_status_socket: socket,
        paused,
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Records, bytes and seconds the secondary is behind. Seconds: 0 when caught up, otherwise
/// the age of the last acknowledged record's timestamp (None: nothing acknowledged yet).
fn lag(j: &Journal) -> (u64, u64, Option<f64>) {
    let records = j.committed().saturating_sub(j.sync_stats().remote_acked);
    let secs = if records == 0 {
        Some(0.0)
    } else {
        match j.acked_ts() {
            0 => None,
            t => Some(now_ns().saturating_sub(t) as f64 / 1e9),
        }
    };
    (records, j.lag_bytes(), secs)
}

fn state_of(j: &Journal, c: &ReplicationConfig) -> &'static str {
    if j.is_broken() {
        "broken"
    } else if c.paused {
        "paused"
    } else if j.sync_state() == SyncState::Degraded {
        "degraded"
    } else {
        "replicating"
    }
}

/// The replicator's status document, or why it could not be read.
fn replicator_status(path: &Path) -> Value {
    let read = || -> std::io::Result<Value> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(REPLICATOR_STATUS_TIMEOUT))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    read().unwrap_or_else(|e| json!({ "error": format!("{}: {e}", path.display()) }))
}

fn status_json(group: u32, e: &mut Entry, c: &ReplicationConfig) -> Value {
    let j = &e.journal;
    let (records, bytes, secs) = lag(j);
    let s = j.sync_stats();
    let acked_bytes = j.trimmed_bytes();
    let now = Instant::now();
    let throughput = e.sample.map(|(t, b)| {
        let dt = now.duration_since(t).as_secs_f64();
        if dt > 0.0 {
            acked_bytes.saturating_sub(b) as f64 / dt
        } else {
            0.0
        }
    });
    e.sample = Some((now, acked_bytes));
    json!({
        "group": group,
        "state": state_of(j, c),
        "mode": c.mode,
        "sync_state": j.sync_state().as_str(),
        "link_policy": c.link_policy,
        "sync_timeout_ms": c.sync_timeout_ms,
        "rpo_s": c.rpo_s,
        "rpo_met": secs.map(|x| x <= c.rpo_s as f64),
        "paused": c.paused,
        "committed_seq": j.committed(),
        "acked_seq": s.remote_acked,
        "lag_records": records,
        "lag_bytes": bytes,
        "lag_seconds": secs,
        "throughput_bytes_per_s": throughput,
        "last_applied_ts_ns": j.acked_ts(),
        "journal_full_refusals": j.stats().full_refusals,
        "sync": {
            "waits": s.waits,
            "timeouts": s.timeouts,
            "degrades": s.degrades,
            "recoveries": s.recoveries,
        },
        "replicator": c.replicator_status_socket.as_deref().map(replicator_status),
    })
}

fn no_pair(group: u32) -> RpcError {
    RpcError::not_found(format!("group {group} is not a replication pair"))
}

impl ReplicationHost for Control {
    fn replication_create(
        &self,
        group: u32,
        settings: PairSettings,
        replicator: Option<String>,
    ) -> Result<Value, RpcError> {
        let mut map = self.journals.map();
        let e = map.get_mut(&group).ok_or_else(|| {
            RpcError::not_found(format!(
                "group {group} has no journal (journal_create it first)"
            ))
        })?;
        if e.config.replication.is_some() {
            return Err(RpcError::new(
                ALREADY_EXISTS,
                format!("group {group} is already a replication pair"),
            ));
        }
        let c = config_of(settings, replicator.map(PathBuf::from), false);
        apply(&e.journal, &c).map_err(RpcError::invalid_params)?;
        log::info!("group {group}: replication pair created ({} mode)", c.mode);
        let v = status_json(group, e, &c);
        e.config.replication = Some(c);
        Ok(v)
    }

    fn replication_set_mode(&self, group: u32, changes: PairChanges) -> Result<Value, RpcError> {
        let mut map = self.journals.map();
        let e = map.get_mut(&group).ok_or_else(|| no_pair(group))?;
        let old = e.config.replication.clone().ok_or_else(|| no_pair(group))?;
        // Settings not given keep their current values.
        let s = changes.applied_to(PairSettings {
            mode: old.mode,
            link_policy: old.link_policy,
            sync_timeout_ms: old.sync_timeout_ms,
            rpo_s: old.rpo_s,
        });
        let c = config_of(s, old.replicator_status_socket, old.paused);
        apply(&e.journal, &c).map_err(RpcError::invalid_params)?;
        let v = status_json(group, e, &c);
        e.config.replication = Some(c);
        Ok(v)
    }

    fn replication_status(&self, group: Option<u32>) -> Result<Value, RpcError> {
        let mut map = self.journals.map();
        if let Some(g) = group {
            let e = map.get_mut(&g).ok_or_else(|| no_pair(g))?;
            let c = e.config.replication.clone().ok_or_else(|| no_pair(g))?;
            return Ok(json!([status_json(g, e, &c)]));
        }
        Ok(Value::Array(
            map.iter_mut()
                .filter_map(|(g, e)| {
                    let c = e.config.replication.clone()?;
                    Some(status_json(*g, e, &c))
                })
                .collect(),
        ))
    }

    fn replication_pause(&self, group: u32, paused: bool) -> Result<Value, RpcError> {
        let mut map = self.journals.map();
        let e = map.get_mut(&group).ok_or_else(|| no_pair(group))?;
        let c = e
            .config
            .replication
            .as_mut()
            .ok_or_else(|| no_pair(group))?;
        c.paused = paused;
        e.journal.set_paused(paused);
        log::info!(
            "group {group}: shipping {}",
            if paused { "paused" } else { "resumed" }
        );
        let c = c.clone();
        Ok(status_json(group, e, &c))
    }

    fn replication_delete(&self, group: u32) -> Result<(), RpcError> {
        let mut map = self.journals.map();
        let e = map.get_mut(&group).ok_or_else(|| no_pair(group))?;
        if e.config.replication.take().is_none() {
            return Err(no_pair(group));
        }
        e.journal.set_sync_policy(SyncPolicy::default());
        e.journal.set_paused(false);
        log::info!("group {group}: replication pair deleted (the journal stays)");
        Ok(())
    }

    fn replication_summary(&self) -> Value {
        let map = self.journals.map();
        Value::Array(
            map.iter()
                .filter_map(|(g, e)| {
                    let c = e.config.replication.as_ref()?;
                    let (records, bytes, secs) = lag(&e.journal);
                    Some(json!({
                        "group": g,
                        "state": state_of(&e.journal, c),
                        "mode": c.mode,
                        "sync_state": e.journal.sync_state().as_str(),
                        "lag_records": records,
                        "lag_bytes": bytes,
                        "lag_seconds": secs,
                    }))
                })
                .collect(),
        )
    }
}
