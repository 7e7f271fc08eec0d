//! `ferritectl qos`: QoS limits (bdev_set_qos_limit, nvmf_set_host_qos_limit, qos_get_limits).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

#[derive(Debug, Subcommand)]
pub enum QosCmd {
    /// Limit a bdev (every namespace exporting it): bdev_set_qos_limit.
    Bdev {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Limit everything one host NQN does: nvmf_set_host_qos_limit.
    Host {
        nqn: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Limits in force and the I/Os they delayed (qos_get_limits).
    List,
}

/// Each takes a positive integer, or `none` to remove that limit.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Reads + writes per second.
    #[arg(long, allow_hyphen_values = true, value_name = "N|none")]
    rw_ios_per_sec: Option<String>,
    /// Reads per second.
    #[arg(long, allow_hyphen_values = true, value_name = "N|none")]
    r_ios_per_sec: Option<String>,
    /// Writes per second.
    #[arg(long, allow_hyphen_values = true, value_name = "N|none")]
    w_ios_per_sec: Option<String>,
    /// MiB/s read + written.
    #[arg(long, allow_hyphen_values = true, value_name = "N|none")]
    rw_mbytes_per_sec: Option<String>,
    /// MiB/s read.
    #[arg(long, allow_hyphen_values = true, value_name = "N|none")]
    r_mbytes_per_sec: Option<String>,
    /// MiB/s written.
    #[arg(long, allow_hyphen_values = true, value_name = "N|none")]
    w_mbytes_per_sec: Option<String>,
}

impl LimitArgs {
    fn params(self, key: &str, value: String) -> Result<Value> {
        let mut m = Map::new();
        m.insert(key.into(), Value::String(value));
        let given = [
            ("rw_ios_per_sec", self.rw_ios_per_sec),
            ("r_ios_per_sec", self.r_ios_per_sec),
            ("w_ios_per_sec", self.w_ios_per_sec),
            ("rw_mbytes_per_sec", self.rw_mbytes_per_sec),
            ("r_mbytes_per_sec", self.r_mbytes_per_sec),
            ("w_mbytes_per_sec", self.w_mbytes_per_sec),
        ];
        for (name, v) in given {
            let Some(text) = v else { continue };
            let v = if text == "none" {
                Value::Null
            } else {
                match text.parse::<i64>() {
                    // The daemon judges the range (0 and negatives get its error message).
                    Ok(n) => Value::from(n),
                    Err(_) => bail!(
                        "--{}: {text:?} is not an integer or \"none\"",
                        name.replace('_', "-")
                    ),
                }
            };
            m.insert(name.into(), v);
        }
        if m.len() == 1 {
            bail!("give at least one limit, e.g. --rw-ios-per-sec 10000 (or none to remove it)");
        }
        Ok(Value::Object(m))
    }
}

/// The method and parameters of a `qos` subcommand.
pub fn request(cmd: QosCmd) -> Result<(&'static str, Value)> {
    Ok(match cmd {
        QosCmd::Bdev { name, limits } => ("bdev_set_qos_limit", limits.params("name", name)?),
        QosCmd::Host { nqn, limits } => ("nvmf_set_host_qos_limit", limits.params("host", nqn)?),
        QosCmd::List => ("qos_get_limits", Value::Null),
    })
}
