//! The Prometheus endpoint (`ferrited --metrics ADDR:PORT`): [`render`] turns the same sources as
//! `stats_get` into the text exposition format (version 0.0.4), [`http`] serves it on its own
//! thread, so a scrape never runs on a reactor. Counters are cumulative since start; latency is
//! a histogram with power-of-two bounds from 128 ns to 8.6 s, exact for counts (the reactors'
//! quarter-octave buckets nest in them) with `_sum` estimated from bucket midpoints.

pub mod http;

use std::fmt::Write as _;

use ferrite_nvmf::bucket_bounds_ns;
use ferrite_qos::LimitKind;

use crate::appliance::Appliance;

/// Powers of two (in ns) used as histogram bounds: 2^7 ns (128 ns: a RAM namespace completes
/// within one reactor iteration) to 2^33 ns (~8.6 s).
const LE_OCTAVES: std::ops::RangeInclusive<u32> = 7..=33;

/// Builds the exposition text, one family at a time (HELP, TYPE, then its samples).
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one sample per item.
    fn each<T>(
        &mut self,
        items: &[T],
        name: &str,
        kind: &str,
        help: &str,
        labels: impl Fn(&T) -> Vec<(&'static str, String)>,
        value: impl Fn(&T) -> f64,
    ) {
        if items.is_empty() {
            return;
        }
        self.family(name, kind, help);
        for item in items {
            let owned = labels(item);
            let borrowed: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &borrowed, fmt_f64(value(item)));
        }
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

struct NsRow {
    nqn: String,
    nsid: String,
    bdev: String,
    c: ferrite_nvmf::NamespaceCounters,
}

impl NsRow {
    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("nqn", self.nqn.clone()),
            ("nsid", self.nsid.clone()),
            ("bdev", self.bdev.clone()),
        ]
    }
}

/// The whole scrape.
pub fn render(app: &dyn Appliance) -> String {
    let mut out = Exposition::default();
    let target = app.target();
    let cfg = target.config();

    out.family(
        "ferrite_build_info",
        "gauge",
        "Version of the running ferrited.",
    );
    out.sample(
        "ferrite_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(
        "ferrite_uptime_seconds",
        "gauge",
        "Seconds since the target started.",
    );
    out.sample(
        "ferrite_uptime_seconds",
        &[],
        fmt_f64(target.started().elapsed().as_secs_f64()),
    );

    // Namespaces.
    let ns: Vec<NsRow> = cfg
        .subsystems
        .values()
        .filter(|s| !s.is_discovery())
        .flat_map(|s| {
            s.namespaces.values().map(|n| NsRow {
                nqn: s.nqn.clone(),
                nsid: n.nsid.to_string(),
                bdev: n.bdev_name.clone(),
                c: n.stats.total(),
            })
        })
        .collect();
    let l = NsRow::labels;
    out.each(
        &ns,
        "ferrite_namespace_reads_total",
        "counter",
        "Read commands accepted.",
        l,
        |r| r.c.read_ops as f64,
    );
    out.each(
        &ns,
        "ferrite_namespace_writes_total",
        "counter",
        "Write commands accepted.",
        l,
        |r| r.c.write_ops as f64,
    );
    out.each(
        &ns,
        "ferrite_namespace_read_bytes_total",
        "counter",
        "Bytes read by hosts.",
        l,
        |r| r.c.bytes_read as f64,
    );
    out.each(
        &ns,
        "ferrite_namespace_written_bytes_total",
        "counter",
        "Bytes written by hosts.",
        l,
        |r| r.c.bytes_written as f64,
    );
    out.each(
        &ns,
        "ferrite_namespace_queue_depth",
        "gauge",
        "Reads and writes in flight now.",
        l,
        |r| r.c.in_flight as f64,
    );
    if !ns.is_empty() {
        let name = "ferrite_namespace_latency_seconds";
        out.family(
            name,
            "histogram",
            "Read and write latency from dispatch to completion (QoS waiting excluded).",
        );
        for r in &ns {
            histogram(&mut out, name, &r.labels(), &r.c.latency);
        }
    }

    // Reactors.
    let reactors = app.reactor_stats();
    let connections = app.connections();
    let groups = app.poll_group_stats().unwrap_or_default();
    let rl = |r: &ferrite_reactor::ReactorStats| {
        vec![
            ("reactor", r.index.to_string()),
            (
                "lcore",
                r.core.map_or_else(|| "none".into(), |c| c.0.to_string()),
            ),
        ]
    };
    out.each(
        &reactors,
        "ferrite_reactor_busy_seconds_total",
        "counter",
        "Time the reactor spent on work.",
        rl,
        |r| r.busy_ns as f64 / 1e9,
    );
    out.each(
        &reactors,
        "ferrite_reactor_idle_seconds_total",
        "counter",
        "Time the reactor found nothing to do (parked included).",
        rl,
        |r| r.idle_ns as f64 / 1e9,
    );
    out.each(
        &reactors,
        "ferrite_reactor_connections",
        "gauge",
        "Connections (queue pairs) served by the reactor.",
        rl,
        |r| connections.get(r.index).copied().unwrap_or(0) as f64,
    );
    out.each(
        &reactors,
        "ferrite_reactor_commands_total",
        "counter",
        "NVMe commands executed by the reactor's poll group.",
        rl,
        |r| groups.get(r.index).map_or(0.0, |g| g.commands as f64),
    );
    out.each(
        &reactors,
        "ferrite_reactor_command_errors_total",
        "counter",
        "Commands completed with an error status.",
        rl,
        |r| groups.get(r.index).map_or(0.0, |g| g.errors as f64),
    );

    // Pools.
    let pools: Vec<_> = app.pools().iter().map(|p| p.info()).collect();
    let pl = |i: &ferrite_volume::PoolInfo| vec![("pool", i.name.clone())];
    out.each(
        &pools,
        "ferrite_pool_capacity_bytes",
        "gauge",
        "Usable space of the pool.",
        pl,
        |i| (i.total_clusters * i.cluster_size) as f64,
    );
    out.each(
        &pools,
        "ferrite_pool_allocated_bytes",
        "gauge",
        "Space allocated to volumes and snapshots.",
        pl,
        |i| (i.allocated_clusters * i.cluster_size) as f64,
    );
    out.each(
        &pools,
        "ferrite_pool_shared_bytes",
        "gauge",
        "Allocated space shared between volumes, snapshots and clones.",
        pl,
        |i| (i.shared_clusters * i.cluster_size) as f64,
    );
    out.each(
        &pools,
        "ferrite_pool_free_bytes",
        "gauge",
        "Unallocated space.",
        pl,
        |i| (i.free_clusters * i.cluster_size) as f64,
    );
    out.each(
        &pools,
        "ferrite_pool_provisioned_bytes",
        "gauge",
        "Sum of the volumes' sizes.",
        pl,
        |i| i.provisioned_bytes as f64,
    );
    out.each(
        &pools,
        "ferrite_pool_online",
        "gauge",
        "1 when the pool serves I/O.",
        pl,
        |i| f64::from(u8::from(i.online)),
    );

    // Controllers.
    let ctrls = target.controller_snapshots();
    let cl = |c: &ferrite_nvmf::ControllerSnapshot| {
        vec![
            ("cntlid", c.info.cntlid.to_string()),
            ("nqn", c.info.subnqn.clone()),
            ("hostnqn", c.info.hostnqn.clone()),
        ]
    };
    out.each(
        &ctrls,
        "ferrite_controller_io_queues",
        "gauge",
        "I/O queues of the controller.",
        cl,
        |c| c.info.io_queues.len() as f64,
    );
    out.each(
        &ctrls,
        "ferrite_controller_reads_total",
        "counter",
        "Read commands (SMART counter).",
        cl,
        |c| c.read_commands as f64,
    );
    out.each(
        &ctrls,
        "ferrite_controller_writes_total",
        "counter",
        "Write commands (SMART counter).",
        cl,
        |c| c.write_commands as f64,
    );
    out.each(
        &ctrls,
        "ferrite_controller_read_bytes_total",
        "counter",
        "Bytes read.",
        cl,
        |c| c.bytes_read as f64,
    );
    out.each(
        &ctrls,
        "ferrite_controller_written_bytes_total",
        "counter",
        "Bytes written.",
        cl,
        |c| c.bytes_written as f64,
    );
    out.each(
        &ctrls,
        "ferrite_controller_media_errors_total",
        "counter",
        "Commands failed by the backend.",
        cl,
        |c| c.media_errors as f64,
    );
    out.each(
        &ctrls,
        "ferrite_controller_failed",
        "gauge",
        "1 when the controller failed (being torn down).",
        cl,
        |c| f64::from(u8::from(c.info.failed)),
    );

    // Listeners: the address and the subsystems a host reaches through it.
    let listeners: Vec<(String, String, usize)> = cfg
        .listeners
        .iter()
        .map(|l| {
            let reach = cfg
                .subsystems
                .values()
                .filter(|s| !s.is_discovery() && s.reachable_over(l.trtype, l.addr))
                .count();
            (l.trtype.as_str().to_string(), l.addr.to_string(), reach)
        })
        .collect();
    let ll = |l: &(String, String, usize)| vec![("trtype", l.0.clone()), ("address", l.1.clone())];
    out.each(
        &listeners,
        "ferrite_listener_subsystems",
        "gauge",
        "Subsystems (besides discovery) reachable through the listener.",
        ll,
        |l| l.2 as f64,
    );

    // QoS.
    let table = target.qos().table();
    let limits: Vec<(&str, String, LimitKind, f64, u64)> = table
        .bdevs
        .iter()
        .map(|(n, e)| ("bdev", n, e))
        .chain(table.hosts.iter().map(|(n, e)| ("host", n, e)))
        .flat_map(|(scope, name, e)| {
            e.limits.iter().map(move |(k, _)| {
                (
                    scope,
                    name.clone(),
                    k,
                    e.limits.rate(k).unwrap_or(0.0),
                    e.delayed(),
                )
            })
        })
        .collect();
    let dir = |k: LimitKind| match k {
        LimitKind::RwIos | LimitKind::RwBytes => "rw",
        LimitKind::RIos | LimitKind::RBytes => "read",
        LimitKind::WIos | LimitKind::WBytes => "write",
    };
    let ios: Vec<_> = limits.iter().filter(|l| !l.2.is_bytes()).collect();
    let bytes: Vec<_> = limits.iter().filter(|l| l.2.is_bytes()).collect();
    let ql = |l: &&(&str, String, LimitKind, f64, u64)| {
        vec![
            ("scope", l.0.to_string()),
            ("name", l.1.clone()),
            ("direction", dir(l.2).to_string()),
        ]
    };
    out.each(
        &ios,
        "ferrite_qos_limit_ios_per_second",
        "gauge",
        "QoS limit in I/Os per second.",
        ql,
        |l| l.3,
    );
    out.each(
        &bytes,
        "ferrite_qos_limit_bytes_per_second",
        "gauge",
        "QoS limit in bytes per second.",
        ql,
        |l| l.3,
    );
    let delayed: Vec<(&str, String, u64)> = table
        .bdevs
        .iter()
        .map(|(n, e)| ("bdev", n.clone(), e.delayed()))
        .chain(
            table
                .hosts
                .iter()
                .map(|(n, e)| ("host", n.clone(), e.delayed())),
        )
        .collect();
    out.each(
        &delayed,
        "ferrite_qos_delayed_ios_total",
        "counter",
        "I/Os that waited for a QoS limit.",
        |d| vec![("scope", d.0.to_string()), ("name", d.1.clone())],
        |d| d.2 as f64,
    );
    out.text
}

/// One histogram: cumulative `_bucket`s at the power-of-two bounds, `+Inf`, `_sum`, `_count`.
fn histogram(out: &mut Exposition, name: &str, labels: &[(&'static str, String)], buckets: &[u64]) {
    let mut total = 0u64;
    let mut sum_ns = 0f64;
    for (i, &n) in buckets.iter().enumerate() {
        let (lo, hi) = bucket_bounds_ns(i);
        total += n;
        sum_ns += n as f64 * (lo + hi) as f64 / 2.0;
    }
    let base: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bucket_name = format!("{name}_bucket");
    for octave in LE_OCTAVES {
        let le_ns = 1u64 << octave;
        let count: u64 = buckets
            .iter()
            .enumerate()
            .filter(|(i, _)| bucket_bounds_ns(*i).1 <= le_ns)
            .map(|(_, n)| n)
            .sum();
        let le = format!("{}", le_ns as f64 / 1e9);
        let mut l = base.clone();
        l.push(("le", &le));
        out.sample(&bucket_name, &l, count);
    }
    let mut l = base.clone();
    l.push(("le", "+Inf"));
    out.sample(&bucket_name, &l, total);
    out.sample(&format!("{name}_sum"), &base, fmt_f64(sum_ns / 1e9));
    out.sample(&format!("{name}_count"), &base, total);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.sample("m", &[("a", "x\"y\\z\nw")], 1);
        assert_eq!(e.text, "m{a=\"x\\\"y\\\\z\\nw\"} 1\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_exact() {
        let mut buckets = vec![0u64; ferrite_nvmf::LATENCY_BUCKETS];
        // 3 completions in [1024, 1280) ns, 2 in [4096, 5120) ns.
        buckets[40] = 3;
        buckets[48] = 2;
        assert_eq!(bucket_bounds_ns(40).0, 1024);
        assert_eq!(bucket_bounds_ns(48).0, 4096);
        let mut e = Exposition::default();
        histogram(&mut e, "h", &[("ns", "1".into())], &buckets);
        let line = |le: &str| {
            e.text
                .lines()
                .find(|l| l.contains(&format!("le=\"{le}\"")))
                .unwrap_or_else(|| panic!("no le={le} in {}", e.text))
                .rsplit(' ')
                .next()
                .expect("must succeed")
                .to_string()
        };
        assert_eq!(line("0.000001024"), "0");
        assert_eq!(line("0.000002048"), "3");
        assert_eq!(line("0.000008192"), "5");
        assert_eq!(line("+Inf"), "5");
        assert!(e.text.contains("h_count{ns=\"1\"} 5\n"));
    }
}
