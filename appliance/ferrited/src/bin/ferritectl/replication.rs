//! `ferritectl replication ...`: the replication_* methods.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub(crate) enum ReplicationCmd {
    /// Make GROUP (which has a journal) a replication pair (replication_create).
    Create {
        group: u32,
        #[command(flatten)]
        settings: Settings,
        /// The primary ferrite-replicator's status socket, read for status.
        #[arg(long)]
        replicator_status: Option<String>,
    },
    /// Change a pair's mode, lost-link policy, timeout or RPO (replication_set_mode); what is
    /// not given keeps its current value.
    SetMode {
        group: u32,
        #[command(flatten)]
        changes: Changes,
    },
    /// State, mode, lag (records, bytes, seconds), throughput (replication_status).
    Status { group: Option<u32> },
    /// Stop shipping GROUP's journal (replication_pause).
    Pause { group: u32 },
    /// Resume shipping (replication_resume).
    Resume { group: u32 },
    /// End the pair; the journal stays (replication_delete).
    Delete { group: u32 },
    /// On the primary: fence host writes, drain to zero lag, become a secondary
    /// (replication_switchover).
    Switchover {
        group: u32,
        /// How long to wait for zero lag before giving host access back.
        #[arg(long, default_value_t = 30000)]
        timeout_ms: u64,
    },
    /// On the secondary: snapshot the failover point and/or become a primary
    /// (replication_failover). VOLUMES in group namespace order.
    Failover {
        group: u32,
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Snapshot name prefix (the base a failback diffs against).
        #[arg(long)]
        snapshot: Option<String>,
        /// Become a primary: journal in this pool...
        #[arg(long, requires = "journal_size")]
        journal_pool: Option<String>,
        /// ...of this size.
        #[arg(long)]
        journal_size: Option<String>,
    },
    /// On an old primary that came back: snapshot, fence, end the pair, keep the journal
    /// for `ferrite-replicator diverged` (replication_failback).
    Failback {
        group: u32,
        #[arg(long)]
        snapshot: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct Settings {
    /// async or sync.
    #[arg(long, default_value = "async")]
    mode: String,
    /// Sync mode, lost link: fail (writes fail) or degrade (async until caught up).
    #[arg(long, default_value = "fail")]
    link_policy: String,
    /// Sync mode: how long a write waits for the secondary, in milliseconds.
    #[arg(long)]
    sync_timeout_ms: Option<u64>,
    /// Async mode: recovery point objective in seconds.
    #[arg(long)]
    rpo_s: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct Changes {
    /// async or sync.
    #[arg(long)]
    mode: Option<String>,
    /// Sync mode, lost link: fail (writes fail) or degrade (async until caught up).
    #[arg(long)]
    link_policy: Option<String>,
    /// Sync mode: how long a write waits for the secondary, in milliseconds.
    #[arg(long)]
    sync_timeout_ms: Option<u64>,
    /// Async mode: recovery point objective in seconds.
    #[arg(long)]
    rpo_s: Option<u64>,
}

/// Only the given settings (the daemon keeps the others).
fn changes_json(group: u32, c: &Changes) -> Value {
    let mut p = json!({ "group": group });
    if let Some(m) = &c.mode {
        p["mode"] = json!(m);
    }
    if let Some(l) = &c.link_policy {
        p["link_policy"] = json!(l);
    }
    if let Some(t) = c.sync_timeout_ms {
        p["sync_timeout_ms"] = json!(t);
    }
    if let Some(r) = c.rpo_s {
        p["rpo_s"] = json!(r);
    }
    p
}

fn settings_json(group: u32, s: &Settings) -> Value {
    let mut p = json!({"group": group, "mode": s.mode, "link_policy": s.link_policy});
    if let Some(t) = s.sync_timeout_ms {
        p["sync_timeout_ms"] = json!(t);
    }
    if let Some(r) = s.rpo_s {
        p["rpo_s"] = json!(r);
    }
    p
}

/// The method and parameters of a replication subcommand.
pub(crate) fn request(cmd: &ReplicationCmd) -> (&'static str, Value) {
    match cmd {
        ReplicationCmd::Create {
            group,
            settings,
            replicator_status,
        } => {
            let mut p = settings_json(*group, settings);
            if let Some(s) = replicator_status {
                p["replicator_status_socket"] = json!(s);
            }
            ("replication_create", p)
        }
        ReplicationCmd::SetMode { group, changes } => {
            ("replication_set_mode", changes_json(*group, changes))
        }
        ReplicationCmd::Status { group } => (
            "replication_status",
            group.map_or(Value::Null, |g| json!({ "group": g })),
        ),
        ReplicationCmd::Pause { group } => ("replication_pause", json!({ "group": group })),
        ReplicationCmd::Resume { group } => ("replication_resume", json!({ "group": group })),
        ReplicationCmd::Delete { group } => ("replication_delete", json!({ "group": group })),
        ReplicationCmd::Switchover { group, timeout_ms } => (
            "replication_switchover",
            json!({"group": group, "timeout_ms": timeout_ms}),
        ),
        ReplicationCmd::Failover {
            group,
            volumes,
            snapshot,
            journal_pool,
            journal_size,
        } => {
            let mut p = json!({"group": group, "volumes": volumes});
            if let Some(s) = snapshot {
                p["snapshot"] = json!(s);
            }
            if let (Some(pool), Some(size)) = (journal_pool, journal_size) {
                p["journal"] = json!({"pool": pool, "size": size});
            }
            ("replication_failover", p)
        }
        ReplicationCmd::Failback { group, snapshot } => (
            "replication_failback",
            json!({"group": group, "snapshot": snapshot}),
        ),
    }
}
