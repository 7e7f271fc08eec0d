//! `stats_get`: per-namespace I/O counters (summed over reactors, with a per-reactor
//! breakdown), a latency summary computed with `hdrhistogram` from the reactors' latency
//! buckets, and reactor busy/idle. Counters are cumulative; clients diff two samples
//! (`uptime_ns` apart) for rates, as `ferritectl stats` does.

use ferrite_nvmf::{bucket_bounds_ns, NamespaceCounters};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::appliance::Appliance;

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

pub(crate) fn collect(app: &dyn Appliance) -> Value {
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
            })
        })
        .collect();
    json!({
        "uptime_ns": u64::try_from(target.started().elapsed().as_nanos()).unwrap_or(u64::MAX),
        "namespaces": namespaces,
        "reactors": reactors,
    })
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
