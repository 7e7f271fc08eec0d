//! `stats_get`: per-namespace I/O counters (summed over reactors, with a per-reactor
//! breakdown), a latency summary computed with `hdrhistogram` from the reactors' latency
//! buckets, and reactor busy/idle. Counters are cumulative; clients diff two samples
//! (`uptime_ns` apart) for rates, as `ferritectl stats` does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrite_nvmf::{bucket_bounds_ns, NamespaceCounters};
use ferrite_volume::{Pool, VolumeStats};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::appliance::Appliance;
use crate::protocol::RpcError;
use crate::volumes::kind_str;

/// The previous `stats_get` sample of every volume (by volume UUID, so a rename keeps it):
/// volume rates are averaged since then.
#[derive(Debug, Default)]
pub struct StatsHistory {
    last: Mutex<HashMap<String, (Instant, VolumeStats)>>,
}

/// Percentiles and maximum in microseconds; `null` values when nothing completed.
pub(crate) fn latency_summary(buckets: &[u64]) -> Value {
    let Ok(mut h) = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3) else {
        return Value::Null;
    };
    for (i, &count) in buckets.iter().enumerate().filter(|(_, c)| **c > 0) {
        let (lo, hi) = bucket_bounds_ns(i);
        // The bucket's midpoint stands for its completions.
        let mid = (lo + (hi - lo) / 2).clamp(1, 1 << 40);
        let _ = h.record_n(mid, count);
    }
    if h.is_empty() {
        return json!({"count": 0, "p50": null, "p90": null, "p99": null, "p999": null, "max": null});
    }
    let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
    json!({
        "count": h.len(),
        "p50": us(h.value_at_quantile(0.50)),
        "p90": us(h.value_at_quantile(0.90)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
    })
}

fn counters_json(c: &NamespaceCounters) -> Value {
    json!({
        "read_ops": c.read_ops,
        "write_ops": c.write_ops,
        "bytes_read": c.bytes_read,
        "bytes_written": c.bytes_written,
        "queue_depth": c.in_flight,
        "latency_us": latency_summary(&c.latency),
    })
}

pub(crate) fn collect(app: &dyn Appliance) -> Result<Value, RpcError> {
    let target = app.target();
    let cfg = target.config();
    let reactor_stats = app.reactor_stats();
    let mut namespaces = Vec::new();
    for sub in cfg.subsystems.values().filter(|s| !s.is_discovery()) {
        for ns in sub.namespaces.values() {
            let per_slot = ns.stats.per_reactor();
            let total = ns.stats.total();
            let mut entry = counters_json(&total);
            entry["nqn"] = json!(sub.nqn);
            entry["nsid"] = json!(ns.nsid);
            entry["bdev_name"] = json!(ns.bdev_name);
            entry["per_reactor"] = Value::Array(
                per_slot
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.read_ops + c.write_ops > 0)
                    .map(|(i, c)| {
                        let mut v = counters_json(c);
                        v["reactor"] = json!(i);
                        v
                    })
                    .collect(),
            );
            namespaces.push(entry);
        }
    }
    let connections = app.connections();
    let groups = app.poll_group_stats()?;
    let reactors: Vec<Value> = reactor_stats
        .iter()
        .map(|r| {
            json!({
                "index": r.index,
                "lcore": r.core.map(|c| c.0),
                "busy_ns": r.busy_ns,
                "idle_ns": r.idle_ns,
                "busy_ratio": r.load(),
                "connections": connections.get(r.index).copied().unwrap_or(0),
                "poll_group": groups.get(r.index).map(|g| json!({
                    "qpairs": g.qpairs,
                    "commands": g.commands,
                    "errors": g.errors,
                    "backend_queue_full": g.backend_queue_full,
                    "channels": g.channels,
                })),
            })
        })
        .collect();
    let pools = app.pools();
    Ok(json!({
        "uptime_ns": u64::try_from(target.started().elapsed().as_nanos()).unwrap_or(u64::MAX),
        "namespaces": namespaces,
        "reactors": reactors,
        "volumes": volumes(app, &pools),
        "pools": pools.iter().map(|p| pool_space(p)).collect::<Vec<_>>(),
        "replication": app.replication().map_or(json!([]), |r| r.replication_summary()),
        "caches": app.cache_bdevs().iter().map(|c| crate::methods::cache::cache_json(c)).collect::<Vec<_>>(),
    }))
}

/// The pool's space figures in bytes.
fn pool_space(pool: &Pool) -> Value {
    let i = pool.info();
    let cs = i.cluster_size;
    json!({
        "name": i.name,
        "total_bytes": i.total_clusters * cs,
        "allocated_bytes": i.allocated_clusters * cs,
        "free_bytes": i.free_clusters * cs,
        "shared_bytes": i.shared_clusters * cs,
        "provisioned_bytes": i.provisioned_bytes,
        "overcommit_ratio": i.overcommit_ratio,
        "used_percent": if i.total_clusters == 0 { 0.0 } else {
            (i.allocated_clusters as f64 * 1000.0 / i.total_clusters as f64).round() / 10.0
        },
        "warning_percent": i.warning_percent,
        "online": i.online,
    })
}

/// Per volume: rates averaged since the previous `stats_get` (first call: since the volume
/// was opened or created, whichever is later), average latency over the same interval,
/// maximum latency since it was opened, cumulative counters and space.
fn volumes(app: &dyn Appliance, pools: &[std::sync::Arc<Pool>]) -> Vec<Value> {
    let now = Instant::now();
    let uptime = app.target().started().elapsed();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let history = app.stats_history();
    let mut last = history.last.lock().unwrap_or_else(|p| p.into_inner());
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for pool in pools {
        for v in pool.volumes() {
            let info = v.info();
            let stats = v.stats();
            let (since, base, from) = match last.get(&info.uuid) {
                Some((t, prev)) => (now.duration_since(*t), prev.clone(), "previous_call"),
                None => {
                    let age = Duration::from_secs(wall.saturating_sub(info.created));
                    (
                        uptime.min(age.max(Duration::from_millis(1))),
                        VolumeStats::default(),
                        "start",
                    )
                }
            };
            let secs = since.as_secs_f64().max(1e-9);
            let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
            let ops = d(stats.read_ops, base.read_ops) + d(stats.write_ops, base.write_ops);
            let avg_us = if ops > 0.0 {
                Value::from(
                    (d(stats.latency_sum_ns, base.latency_sum_ns) / ops / 1000.0 * 10.0).round()
                        / 10.0,
                )
            } else {
                Value::Null
            };
            let used = info.allocated_bytes.min(info.size_bytes);
            out.push(json!({
                "name": v.name(),
                "pool": info.pool,
                "kind": kind_str(info.kind),
                "interval_s": (secs * 1000.0).round() / 1000.0,
                "interval_from": from,
                "read_iops": (d(stats.read_ops, base.read_ops) / secs).round(),
                "write_iops": (d(stats.write_ops, base.write_ops) / secs).round(),
                "read_mbps": (d(stats.read_bytes, base.read_bytes) / secs / 1e4).round() / 100.0,
                "write_mbps": (d(stats.write_bytes, base.write_bytes) / secs / 1e4).round() / 100.0,
                "latency_us": {
                    "avg": avg_us,
                    "max": (stats.latency_max_ns as f64 / 100.0).round() / 10.0,
                },
                "read_ops": stats.read_ops,
                "write_ops": stats.write_ops,
                "read_bytes": stats.read_bytes,
                "write_bytes": stats.write_bytes,
                "errors": stats.errors,
                "faults": stats.faults,
                "cow_copies": stats.cow_copies,
                "allocated_bytes": info.allocated_bytes,
                "exclusive_bytes": info.exclusive_bytes,
                "shared_bytes": info.shared_bytes,
                "size": {
                    "total": info.size_bytes,
                    "used": used,
                    "free": info.size_bytes - used,
                },
            }));
            seen.insert(info.uuid.clone(), (now, stats));
        }
    }
    // Deleted volumes are forgotten.
    *last = seen;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_nvmf::NamespaceStats;
    use std::time::Duration;

    #[test]
    fn latency_summary_orders_percentiles() {
        let s = NamespaceStats::default();
        for i in 1..=1000u64 {
            s.submitted(0, false, 4096);
            s.completed(0, Duration::from_micros(i));
        }
        let v = latency_summary(&s.total().latency);
        assert_eq!(v["count"], 1000);
        let p50 = v["p50"].as_f64().expect("p50");
        let p99 = v["p99"].as_f64().expect("p99");
        let max = v["max"].as_f64().expect("max");
        // Quarter-octave buckets: within 25% of the true values.
        assert!((375.0..=625.0).contains(&p50), "{v}");
        assert!(p50 < p99 && p99 <= max, "{v}");
        assert!((800.0..=1250.0).contains(&max), "{v}");
        assert_eq!(latency_summary(&[])["count"], 0);
    }
}
