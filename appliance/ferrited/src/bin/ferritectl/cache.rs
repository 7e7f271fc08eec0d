//! `ferritectl cache`: cached volumes (bdev_cache_create, _delete, _get, _flush).

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Create a cached volume NAME of BACKING through the local bdev CACHE.
    Create {
        name: String,
        backing: String,
        cache: String,
        /// write_through, immediate, interval:30s or window:02:00-04:00 (UTC).
        #[arg(long)]
        write_policy: Option<String>,
        /// Bytes per cache line (a multiple of the block size, at most 64 blocks).
        #[arg(long)]
        line_size: Option<u32>,
        /// Dirty data allowed, percent of the cache; writers above it are delayed.
        #[arg(long)]
        dirty_limit_percent: Option<u8>,
        /// local: a host Flush makes writes durable on the cache device; backing: it drains.
        #[arg(long)]
        flush: Option<String>,
        /// Discard a cache device that holds another volume's cache (its dirty data is lost).
        #[arg(long)]
        format: bool,
    },
    /// Delete a cached volume (its dirty data stays on the cache device for the next create).
    Delete { name: String },
    /// Cached volumes with hit rate, dirty bytes and write-back lag.
    List { name: Option<String> },
    /// Write every dirty line back now and wait.
    Flush { name: String },
}

/// The method and parameters of a `cache` subcommand.
pub fn request(cmd: CacheCmd) -> Result<(&'static str, Value)> {
    Ok(match cmd {
        CacheCmd::Create {
            name,
            backing,
            cache,
            write_policy,
            line_size,
            dirty_limit_percent,
            flush,
            format,
        } => {
            let mut p = json!({
                "name": name,
                "backing_bdev_name": backing,
                "cache_bdev_name": cache,
                "format": format,
            });
            if let Some(v) = write_policy {
                p["write_policy"] = json!(v);
            }
            if let Some(v) = line_size {
                p["line_size"] = json!(v);
            }
            if let Some(v) = dirty_limit_percent {
                p["dirty_limit_percent"] = json!(v);
            }
            if let Some(v) = flush {
                p["flush"] = json!(v);
            }
            ("bdev_cache_create", p)
        }
        CacheCmd::Delete { name } => ("bdev_cache_delete", json!({ "name": name })),
        CacheCmd::List { name } => (
            "bdev_cache_get",
            name.map_or(Value::Null, |n| json!({ "name": n })),
        ),
        CacheCmd::Flush { name } => ("bdev_cache_flush", json!({ "name": name })),
    })
}

/// Prints `bdev_cache_get` as a table; false for other methods.
pub fn print(method: &str, v: &Value) -> Result<bool> {
    if method != "bdev_cache_get" {
        return Ok(false);
    }
    println!(
        "{:<16} {:<12} {:<12} {:<20} {:>8} {:>12} {:>10} {:>8}",
        "NAME", "BACKING", "CACHE", "POLICY", "HIT %", "DIRTY", "LAG ms", "LINES"
    );
    for c in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let s = &c["stats"];
        println!(
            "{:<16} {:<12} {:<12} {:<20} {:>8.1} {:>12} {:>10} {:>8}",
            c["name"].as_str().unwrap_or("-"),
            c["backing_bdev_name"].as_str().unwrap_or("-"),
            c["cache_bdev_name"].as_str().unwrap_or("-"),
            c["write_policy"].as_str().unwrap_or("-"),
            s["hit_rate"].as_f64().unwrap_or(0.0) * 100.0,
            s["dirty_bytes"],
            s["write_back_lag_ms"],
            format!("{}/{}", s["cached_lines"], s["capacity_lines"]),
        );
    }
    Ok(true)
}
