//! `ferritectl bdev remote-attach | remote-detach | remote-list`: namespaces of another
//! NVMe-oF/TCP target as bdevs (bdev_nvme_attach_controller, bdev_nvme_detach_controller,
//! bdev_nvme_get_controllers).

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};

use super::{s, table};

/// `bdev remote-attach NAME TRADDR SUBNQN`: bdevs NAMEn1, NAMEn2, ... one per namespace.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Controller name (its bdevs are <name>n<nsid>).
    name: String,
    /// Address of the remote target.
    traddr: String,
    /// Subsystem NQN on the remote.
    subnqn: String,
    /// Port of the remote target.
    #[arg(long, default_value = "4420")]
    trsvcid: String,
    /// Transport type.
    #[arg(long, default_value = "tcp")]
    trtype: String,
    /// Host NQN to connect as (default: the initiator's UUID NQN).
    #[arg(long)]
    hostnqn: Option<String>,
    /// Header digests.
    #[arg(long)]
    hdgst: bool,
    /// Data digests.
    #[arg(long)]
    ddgst: bool,
    /// Seconds I/O is held after a path loss before it fails (-1: forever).
    #[arg(long, allow_hyphen_values = true)]
    ctrlr_loss_timeout_sec: Option<i64>,
    /// Seconds between reconnect attempts.
    #[arg(long)]
    reconnect_delay_sec: Option<u64>,
}

pub fn attach(a: AttachArgs) -> (&'static str, Value) {
    let mut p = json!({
        "name": a.name, "trtype": a.trtype, "traddr": a.traddr, "trsvcid": a.trsvcid,
        "subnqn": a.subnqn, "hdgst": a.hdgst, "ddgst": a.ddgst,
    });
    if let Some(h) = a.hostnqn {
        p["hostnqn"] = json!(h);
    }
    if let Some(t) = a.ctrlr_loss_timeout_sec {
        p["ctrlr_loss_timeout_sec"] = json!(t);
    }
    if let Some(d) = a.reconnect_delay_sec {
        p["reconnect_delay_sec"] = json!(d);
    }
    ("bdev_nvme_attach_controller", p)
}

/// Human output of the bdev_nvme methods; false for other methods.
pub fn print(method: &str, v: &Value) -> Result<bool> {
    let empty = Vec::new();
    match method {
        "bdev_nvme_attach_controller" => {
            for b in v.as_array().unwrap_or(&empty) {
                println!("{}", s(b));
            }
        }
        "bdev_nvme_get_controllers" => {
            let mut rows = Vec::new();
            for c in v.as_array().unwrap_or(&empty) {
                for p in c["ctrlrs"].as_array().unwrap_or(&empty) {
                    let t = &p["trid"];
                    let nss: Vec<String> = p["namespaces"]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .map(|n| match n["failure"].as_str() {
                            Some(f) => format!("{} (FAILED: {f})", s(&n["bdev"])),
                            None => s(&n["bdev"]),
                        })
                        .collect();
                    rows.push(vec![
                        s(&c["name"]),
                        s(&p["state"]),
                        format!("{}:{}", s(&t["traddr"]), s(&t["trsvcid"])),
                        s(&t["subnqn"]),
                        s(&p["resets"]),
                        nss.join(", "),
                        p["last_error"].as_str().unwrap_or("-").to_string(),
                    ]);
                }
            }
            table(
                &[
                    "NAME",
                    "STATE",
                    "ADDRESS",
                    "SUBNQN",
                    "RESETS",
                    "BDEVS",
                    "LAST ERROR",
                ],
                rows,
            )?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}
