//! `[[qos]]` in the configuration file: the limits of one bdev or one host, applied after the
//! subsystems at start and written back by `save_config` / `--state-dir`.
//!
//! ```toml
//! [[qos]]
//! bdev = "ram0"               # or host = "nqn.2014-08.org.nvmexpress:uuid:..."
//! rw_ios_per_sec = 20000
//! r_mbytes_per_sec = 200      # MiB/s; any of the six bdev_set_qos_limit names
//! ```

use anyhow::{anyhow, bail, Result};
use ferrite_nvmf::Target;
use ferrite_qos::{LimitKind, LimitUpdate, Limits, Table};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QosConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bdev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rw_ios_per_sec: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r_ios_per_sec: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_ios_per_sec: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rw_mbytes_per_sec: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r_mbytes_per_sec: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_mbytes_per_sec: Option<i64>,
}

impl QosConfig {
    fn values(&self) -> [(LimitKind, Option<i64>); 6] {
        [
            (LimitKind::RwIos, self.rw_ios_per_sec),
            (LimitKind::RIos, self.r_ios_per_sec),
            (LimitKind::WIos, self.w_ios_per_sec),
            (LimitKind::RwBytes, self.rw_mbytes_per_sec),
            (LimitKind::RBytes, self.r_mbytes_per_sec),
            (LimitKind::WBytes, self.w_mbytes_per_sec),
        ]
    }

    fn with(mut self, limits: &Limits) -> QosConfig {
        for (kind, v) in limits.iter() {
            let v = Some(v as i64);
            match kind {
                LimitKind::RwIos => self.rw_ios_per_sec = v,
                LimitKind::RIos => self.r_ios_per_sec = v,
                LimitKind::WIos => self.w_ios_per_sec = v,
                LimitKind::RwBytes => self.rw_mbytes_per_sec = v,
                LimitKind::RBytes => self.r_mbytes_per_sec = v,
                LimitKind::WBytes => self.w_mbytes_per_sec = v,
            }
        }
        self
    }
}

/// Applies the `[[qos]]` entries (bdevs must be registered already).
pub(crate) fn apply(target: &Target, entries: &[QosConfig]) -> Result<()> {
    for (i, q) in entries.iter().enumerate() {
        let what = match (&q.bdev, &q.host) {
            (Some(b), None) => format!("bdev {b}"),
            (None, Some(h)) => format!("host {h}"),
            _ => bail!("qos entry {}: set exactly one of bdev and host", i + 1),
        };
        let mut update = LimitUpdate::default();
        for (kind, v) in q.values() {
            if let Some(v) = v {
                update
                    .set(kind, Some(i128::from(v)))
                    .map_err(|e| anyhow!("qos {what}: {e}"))?;
            }
        }
        let result = match (&q.bdev, &q.host) {
            (Some(b), _) => {
                if !target.config().bdevs.contains_key(b) {
                    bail!("qos {what}: no such bdev");
                }
                target.qos().set_bdev(b, &update)
            }
            (_, Some(h)) => target.qos().set_host(h, &update),
            _ => unreachable!("checked above"),
        };
        result.map_err(|e| anyhow!("qos {what}: {e}"))?;
        log::info!("qos {what}: limits set");
    }
    Ok(())
}

/// The limits in force, as configuration entries.
pub(crate) fn configs(table: &Table) -> Vec<QosConfig> {
    let bdevs = table.bdevs.iter().map(|(n, e)| {
        QosConfig {
            bdev: Some(n.clone()),
            ..QosConfig::default()
        }
        .with(&e.limits)
    });
    let hosts = table.hosts.iter().map(|(n, e)| {
        QosConfig {
            host: Some(n.clone()),
            ..QosConfig::default()
        }
        .with(&e.limits)
    });
    bdevs.chain(hosts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn entries_round_trip_and_bad_ones_are_refused() {
        let text = r#"
[[qos]]
host = "nqn.h1"
rw_ios_per_sec = 5000
w_mbytes_per_sec = 10
"#;
        let cfg = Config::parse(text, Path::new("t.toml")).expect("must succeed");
        let target = Target::new(Default::default());
        apply(&target, &cfg.qos).expect("must succeed");
        assert_eq!(configs(&target.qos().table()), cfg.qos);
        let zero = Config::parse(
            "[[qos]]\nhost = \"h\"\nrw_ios_per_sec = 0\n",
            Path::new("t.toml"),
        )
        .expect("must succeed");
        let e = apply(&target, &zero.qos)
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("rw_ios_per_sec must be a positive"), "{e}");
        let both = Config::parse(
            "[[qos]]\nhost = \"h\"\nbdev = \"b\"\nrw_ios_per_sec = 1\n",
            Path::new("t.toml"),
        )
        .expect("must succeed");
        assert!(apply(&target, &both.qos).is_err());
        let missing = Config::parse(
            "[[qos]]\nbdev = \"nope\"\nrw_ios_per_sec = 1\n",
            Path::new("t.toml"),
        )
        .expect("must succeed");
        assert!(apply(&target, &missing.qos)
            .expect_err("must be refused")
            .to_string()
            .contains("no such bdev"));
    }
}
