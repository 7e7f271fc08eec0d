//! Tables and summaries for pools, volumes and snapshots.

use anyhow::Result;
use serde_json::Value;

use super::{s, table};

/// 1536 -> "1.5KiB"; exact values keep no decimals.
pub fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return "-".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if x.fract() == 0.0 {
        format!("{x:.0}{}", units[u])
    } else {
        format!("{x:.1}{}", units[u])
    }
}

fn exports(v: &Value) -> String {
    v["exported_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("{}/{}", s(&e["nqn"]), e["nsid"]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn pool_summary(p: &Value) {
    println!("pool {} ({})", s(&p["name"]), s(&p["uuid"]));
    println!(
        "  capacity {}  allocated {} ({}%)  free {}  shared {}  zeroing {} clusters",
        bytes(&p["capacity_bytes"]),
        bytes(&p["allocated_bytes"]),
        s(&p["used_percent"]),
        bytes(&p["free_bytes"]),
        bytes(&p["shared_bytes"]),
        s(&p["zeroing_clusters"])
    );
    println!(
        "  provisioned {}  overcommit {:.2}  warning at {}%  cluster {}  block {}  online {}",
        bytes(&p["provisioned_bytes"]),
        p["overcommit_ratio"].as_f64().unwrap_or(0.0),
        s(&p["warning_percent"]),
        bytes(&p["cluster_size"]),
        s(&p["block_size"]),
        s(&p["online"])
    );
    for m in p["members"].as_array().into_iter().flatten() {
        println!(
            "  member {} {}  {}  {} clusters",
            s(&m["index"]),
            s(&m["device"]),
            bytes(&m["size_bytes"]),
            s(&m["clusters"])
        );
    }
    for v in p["volume_list"].as_array().into_iter().flatten() {
        println!(
            "  {} {}  size {}  allocated {}",
            s(&v["kind"]),
            s(&v["name"]),
            bytes(&v["size_bytes"]),
            bytes(&v["allocated_bytes"])
        );
    }
    for e in p["events"].as_array().into_iter().flatten() {
        println!("  event {e}");
    }
}

fn volume_summary(v: &Value) {
    println!(
        "{} ({}, {})",
        s(&v["bdev_name"]),
        s(&v["kind"]),
        s(&v["provisioning"])
    );
    println!(
        "  size {}  allocated {}  exclusive {}  shared {}  read-only {}",
        bytes(&v["size_bytes"]),
        bytes(&v["allocated_bytes"]),
        bytes(&v["exclusive_bytes"]),
        bytes(&v["shared_bytes"]),
        s(&v["read_only"])
    );
    println!("  uuid {}", s(&v["uuid"]));
    if !v["parent"].is_null() {
        println!("  parent {}", s(&v["parent"]));
    }
    if !v["origin"].is_null() {
        println!("  origin {}", s(&v["origin"]));
    }
    let clones: Vec<String> = v["clones"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    if !clones.is_empty() {
        println!("  clones {}", clones.join(","));
    }
    let ex = exports(v);
    if !ex.is_empty() {
        println!("  exported by {ex}");
    }
    let st = &v["stats"];
    if st.is_object() {
        println!(
            "  reads {} ({})  writes {} ({})  errors {}  faults {}  cow copies {}",
            s(&st["read_ops"]),
            bytes(&st["read_bytes"]),
            s(&st["write_ops"]),
            bytes(&st["write_bytes"]),
            s(&st["errors"]),
            s(&st["faults"]),
            s(&st["cow_copies"])
        );
    }
}

fn volume_rows(items: &[Value]) -> Result<()> {
    table(
        &[
            "NAME",
            "KIND",
            "PROV",
            "SIZE",
            "ALLOCATED",
            "EXCLUSIVE",
            "PARENT",
            "EXPORTED BY",
        ],
        items
            .iter()
            .map(|v| {
                let parent = if v["parent"].is_null() {
                    &v["origin"]
                } else {
                    &v["parent"]
                };
                vec![
                    s(&v["bdev_name"]),
                    s(&v["kind"]),
                    s(&v["provisioning"]),
                    bytes(&v["size_bytes"]),
                    bytes(&v["allocated_bytes"]),
                    bytes(&v["exclusive_bytes"]),
                    s(parent),
                    exports(v),
                ]
            })
            .collect(),
    )
}

/// Prints the result of a pool/volume method; false when `method` is not one of them.
pub fn print(method: &str, v: &Value) -> Result<bool> {
    let empty = Vec::new();
    let items = v.as_array().unwrap_or(&empty);
    match method {
        "pool_list" => table(
            &[
                "NAME",
                "MEMBERS",
                "CLUSTER",
                "CAPACITY",
                "ALLOCATED",
                "FREE",
                "USED %",
                "PROVISIONED",
                "OVERCOMMIT",
                "VOLUMES",
                "SNAPSHOTS",
            ],
            items
                .iter()
                .map(|p| {
                    let members: Vec<String> = p["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| s(&m["device"]))
                        .collect();
                    vec![
                        s(&p["name"]),
                        members.join(","),
                        bytes(&p["cluster_size"]),
                        bytes(&p["capacity_bytes"]),
                        bytes(&p["allocated_bytes"]),
                        bytes(&p["free_bytes"]),
                        s(&p["used_percent"]),
                        bytes(&p["provisioned_bytes"]),
                        format!("{:.2}", p["overcommit_ratio"].as_f64().unwrap_or(0.0)),
                        s(&p["volumes"]),
                        s(&p["snapshots"]),
                    ]
                })
                .collect(),
        )?,
        "pool_create" | "pool_info" => pool_summary(v),
        "pool_check" => {
            let errors: Vec<String> = v["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            if errors.is_empty() {
                println!(
                    "pool {}: clean ({} clusters, {} volumes checked)",
                    s(&v["name"]),
                    s(&v["clusters_checked"]),
                    s(&v["volumes_checked"])
                );
            } else {
                println!("pool {}: {} errors", s(&v["name"]), errors.len());
                for e in errors {
                    println!("  {e}");
                }
            }
        }
        "volume_list" | "snapshot_list" => volume_rows(items)?,
        "volume_create" | "volume_info" | "volume_inflate" | "volume_revert" | "clone_create" => {
            volume_summary(v)
        }
        "volume_resize" => {
            let notified: Vec<String> = v["notified"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("{}/{}", s(&e["nqn"]), e["nsid"]))
                .collect();
            println!(
                "{}: size {}{}",
                s(&v["name"]),
                bytes(&v["size_bytes"]),
                if notified.is_empty() {
                    String::new()
                } else {
                    format!(" (hosts notified: {})", notified.join(","))
                }
            );
        }
        "snapshot_create" => {
            for n in items {
                println!("{}", s(n));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The volume table of `ferritectl stats` (rates over the interval stats_get reports).
pub fn volume_stats(cur: &Value) -> Result<()> {
    let vols = cur["volumes"].as_array().cloned().unwrap_or_default();
    if vols.is_empty() {
        return Ok(());
    }
    println!();
    table(
        &[
            "VOLUME",
            "READ IOPS",
            "WRITE IOPS",
            "READ MB/s",
            "WRITE MB/s",
            "AVG us",
            "MAX us",
            "TOTAL",
            "USED",
            "FREE",
        ],
        vols.iter()
            .map(|v| {
                vec![
                    s(&v["name"]),
                    s(&v["read_iops"]),
                    s(&v["write_iops"]),
                    s(&v["read_mbps"]),
                    s(&v["write_mbps"]),
                    s(&v["latency_us"]["avg"]),
                    s(&v["latency_us"]["max"]),
                    bytes(&v["size"]["total"]),
                    bytes(&v["size"]["used"]),
                    bytes(&v["size"]["free"]),
                ]
            })
            .collect(),
    )?;
    let pools = cur["pools"].as_array().cloned().unwrap_or_default();
    println!();
    table(
        &["POOL", "TOTAL", "ALLOCATED", "FREE", "USED %", "OVERCOMMIT"],
        pools
            .iter()
            .map(|p| {
                vec![
                    s(&p["name"]),
                    bytes(&p["total_bytes"]),
                    bytes(&p["allocated_bytes"]),
                    bytes(&p["free_bytes"]),
                    s(&p["used_percent"]),
                    format!("{:.2}", p["overcommit_ratio"].as_f64().unwrap_or(0.0)),
                ]
            })
            .collect(),
    )
}
