//! Cached volumes in the daemon: the `[bdev.cache]` section of a `kind = "cache"` bdev
//! (`bdev_cache_create`), opened over two registered bdevs, and the registry the RPC methods
//! read statistics from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Result};
use ferrite_bdev::BlockDevice;
use ferrite_cache::{CacheBdev, CacheOptions};
use serde::{Deserialize, Serialize};

use crate::config::BdevConfig;

/// The `kind` of a cached volume.
pub const KIND: &str = "cache";

/// `[bdev.cache]`: the backing device is the bdev's `base`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The local bdev holding the cached lines and the dirty directory.
    pub device: String,
    /// `write_through`, `immediate`, `interval:30s` or `window:02:00-04:00` (UTC).
    #[serde(default = "default_policy")]
    pub write_policy: String,
    #[serde(default = "default_line_size")]
    pub line_size: u32,
    #[serde(default = "default_dirty_limit")]
    pub dirty_limit_percent: u8,
    /// `local` (a Flush makes writes durable on the cache device) or `backing` (it drains).
    #[serde(default = "default_flush")]
    pub flush: String,
    /// Discard a cache device that holds another volume's cache (never saved as true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub format: bool,
}

fn default_policy() -> String {
    CacheOptions::default().policy.to_string()
}

fn default_line_size() -> u32 {
    CacheOptions::default().line_size
}

fn default_dirty_limit() -> u8 {
    CacheOptions::default().dirty_limit_percent
}

fn default_flush() -> String {
    CacheOptions::default().flush.as_str().into()
}

impl CacheConfig {
    pub fn from_options(device: String, o: CacheOptions) -> CacheConfig {
        CacheConfig {
            device,
            write_policy: o.policy.to_string(),
            line_size: o.line_size,
            dirty_limit_percent: o.dirty_limit_percent,
            flush: o.flush.as_str().into(),
            format: o.format,
        }
    }

    pub fn options(&self) -> Result<CacheOptions, String> {
        CacheOptions::from_text(
            Some(&self.write_policy),
            Some(self.line_size),
            Some(self.dirty_limit_percent),
            Some(&self.flush),
            self.format,
        )
    }
}

pub(crate) type CacheMap = BTreeMap<String, Arc<CacheBdev>>;

#[derive(Debug, Default)]
pub(crate) struct Caches(Mutex<CacheMap>);

impl Caches {
    pub fn lock(&self) -> MutexGuard<'_, CacheMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens the cached volume `b` describes over registered bdevs.
pub(crate) fn open(
    b: &BdevConfig,
    lookup: &dyn Fn(&str) -> Option<Arc<dyn BlockDevice>>,
    caches: &CacheMap,
) -> Result<Arc<CacheBdev>> {
    let name = &b.name;
    let c = b
        .cache
        .as_ref()
        .ok_or_else(|| anyhow!("bdev {name}: a cache bdev needs a [bdev.cache] section"))?;
    if b.size.is_some() || b.path.is_some() || b.block_size.is_some() || b.latency.is_some() {
        bail!("bdev {name}: a cache bdev takes its size from its base (no size, block_size, path or latency)");
    }
    let backing_name = b
        .base
        .as_deref()
        .ok_or_else(|| anyhow!("bdev {name}: base (the backing bdev) is required"))?;
    let backing = lookup(backing_name)
        .ok_or_else(|| anyhow!("bdev {name}: no backing bdev {backing_name}"))?;
    let cache =
        lookup(&c.device).ok_or_else(|| anyhow!("bdev {name}: no cache bdev {}", c.device))?;
    if let Some(other) = caches
        .values()
        .find(|o| o.cache_device().name() == c.device || o.name() == c.device)
    {
        bail!(
            "bdev {name}: bdev {} is already used by cached volume {}",
            c.device,
            other.name()
        );
    }
    let options = c.options().map_err(|e| anyhow!("bdev {name}: {e}"))?;
    let dev =
        CacheBdev::open(name, backing, cache, options).map_err(|e| anyhow!("bdev {name}: {e}"))?;
    Ok(Arc::new(dev))
}
