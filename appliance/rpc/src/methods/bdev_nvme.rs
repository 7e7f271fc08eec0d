//! `bdev_nvme_*`: NVMe controllers whose namespaces become bdevs `<name>n<nsid>` (SPDK's
//! names and parameters). Dispatch is on `trtype`: `tcp` attaches a namespace of another NVMe-oF
//! target (the remote backend, `ferrite-bdev-remote`), `pcie` a local controller driven from user
//! space over VFIO (`ferrite_bdev::nvme_pcie`); other transport types are refused by name.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::params;
use ferrite_bdev_remote::{ControllerInfo, RemoteOptions};

use crate::appliance::Appliance;
use crate::protocol::RpcError;
use crate::remote::RemoteHost;

/// The NVMe/TCP well-known port, used when `trsvcid` is absent.
pub const DEFAULT_TRSVCID: u16 = 4420;

/// `bdev_nvme_attach_controller` parameters; also a `[[nvme_controller]]` section of the
/// configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttachParams {
    pub name: String,
    pub trtype: String,
    pub traddr: String,
    /// `ipv4` or `ipv6` (informational: the address says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adrfam: Option<String>,
    /// Port, a string as in SPDK (default 4420).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trsvcid: Option<String>,
    pub subnqn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnqn: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub hdgst: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ddgst: bool,
    /// Seconds I/O is held after a path loss before it fails; -1: forever; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctrlr_loss_timeout_sec: Option<i64>,
    /// Seconds between reconnect attempts; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_delay_sec: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl AttachParams {
    /// The remote backend's options for an NVMe/TCP controller.
    pub fn tcp_options(&self) -> Result<RemoteOptions, RpcError> {
        let port = match &self.trsvcid {
            None => DEFAULT_TRSVCID,
            Some(s) => s.parse().map_err(|_| {
                RpcError::invalid_params(format!("trsvcid {s:?} is not a TCP port number"))
            })?,
        };
        if let Some(f) = &self.adrfam {
            if !matches!(f.to_ascii_lowercase().as_str(), "ipv4" | "ipv6") {
                return Err(RpcError::invalid_params(format!(
                    "adrfam {f:?}: ipv4 or ipv6 for trtype tcp"
                )));
            }
        }
        let addr: SocketAddr = (self.traddr.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "traddr {:?} is not an address or a name that resolves",
                    self.traddr
                ))
            })?;
        let mut o = RemoteOptions::new(&self.name, addr, &self.subnqn);
        o.hostnqn = self.hostnqn.clone();
        o.header_digest = self.hdgst;
        o.data_digest = self.ddgst;
        match self.ctrlr_loss_timeout_sec {
            None => {}
            Some(-1) => o.ctrlr_loss_timeout = Duration::MAX,
            Some(s) if s >= 0 => o.ctrlr_loss_timeout = Duration::from_secs(s as u64),
            Some(s) => {
                return Err(RpcError::invalid_params(format!(
                    "ctrlr_loss_timeout_sec {s}: -1 (forever) or 0 and up"
                )))
            }
        }
        if let Some(s) = self.reconnect_delay_sec {
            o.reconnect_delay = Duration::from_secs(s);
        }
        o.validate()
            .map_err(|e| RpcError::invalid_params(e.to_string()))?;
        Ok(o)
    }
}

fn host(app: &dyn Appliance) -> Result<&dyn RemoteHost, RpcError> {
    app.remotes()
        .ok_or_else(|| RpcError::internal("this process has no remote controllers"))
}

/// `bdev_nvme_attach_controller` parameters for `trtype: "pcie"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PcieAttach {
    name: String,
    #[allow(dead_code)] // dispatched on before decoding
    trtype: String,
    traddr: String,
}

pub(super) fn attach_controller(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    // The transport decides which parameters are valid, so it is read before decoding.
    let trtype = p
        .get("trtype")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("trtype is required (\"tcp\" or \"pcie\")"))?
        .to_ascii_lowercase();
    match trtype.as_str() {
        "tcp" => {
            let p: AttachParams = params(p)?;
            let opts = p.tcp_options()?;
            Ok(json!(host(app)?.attach_remote(opts)?))
        }
        "pcie" => {
            let p: PcieAttach = params(p)?;
            Ok(json!(app.attach_nvme_pcie(&p.name, &p.traddr)?))
        }
        other => Err(RpcError::invalid_params(format!(
            "trtype {other:?} is not supported by bdev_nvme_attach_controller (tcp or pcie)"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Detach {
    name: String,
    #[serde(default)]
    trtype: Option<String>,
    #[serde(default)]
    traddr: Option<String>,
    #[serde(default)]
    trsvcid: Option<String>,
    #[serde(default)]
    subnqn: Option<String>,
}

pub(super) fn detach_controller(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Detach = params(p)?;
    let remote = app.remotes().and_then(|host| {
        host.remote_controllers()
            .into_iter()
            .find(|c| c.options.name == p.name)
            .map(|info| (host, info))
    });
    let Some((host, info)) = remote else {
        // Not a remote controller: a local PCIe one, or none (-19 from the appliance).
        if p.trtype
            .as_ref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("pcie"))
        {
            return Err(RpcError::not_found(format!(
                "no NVMe controller named {} with trtype {:?}",
                p.name,
                p.trtype.as_deref().unwrap_or_default()
            )));
        }
        app.detach_nvme_controller(&p.name)?;
        return Ok(json!(true));
    };
    // SPDK detaches only the path the optional fields name; one path here, so they must match.
    let o = &info.options;
    let mismatch = p
        .trtype
        .as_ref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("tcp"))
        || p.traddr
            .as_ref()
            .is_some_and(|a| *a != o.addr.ip().to_string())
        || p.trsvcid
            .as_ref()
            .is_some_and(|s| *s != o.addr.port().to_string())
        || p.subnqn.as_ref().is_some_and(|n| *n != o.subnqn);
    if mismatch {
        return Err(RpcError::not_found(format!(
            "controller {} has no path matching the given trtype/traddr/trsvcid/subnqn",
            p.name
        )));
    }
    host.detach_remote(&p.name)?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetControllers {
    #[serde(default)]
    name: Option<String>,
}

pub(super) fn get_controllers(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: GetControllers = params(p)?;
    let all = host(app)?.remote_controllers();
    if let Some(n) = &p.name {
        if !all.iter().any(|c| &c.options.name == n) {
            return Err(RpcError::not_found(format!("no NVMe controller named {n}")));
        }
    }
    Ok(Value::Array(
        all.iter()
            .filter(|c| p.name.as_ref().is_none_or(|n| *n == c.options.name))
            .map(controller_json)
            .collect(),
    ))
}

/// SPDK's shape (`name`, `ctrlrs[]` with `state`, `trid`, `cntlid`, `host`) plus Ferrite's
/// namespaces, offloads and reset figures.
pub fn controller_json(c: &ControllerInfo) -> Value {
    let o = &c.options;
    let secs = |d: Duration| {
        if d == Duration::MAX {
            -1
        } else {
            d.as_secs() as i64
        }
    };
    json!({
        "name": o.name,
        "ctrlrs": [{
            "state": c.state.as_str(),
            "trid": {
                "trtype": "TCP",
                "adrfam": if o.addr.is_ipv4() { "IPv4" } else { "IPv6" },
                "traddr": o.addr.ip().to_string(),
                "trsvcid": o.addr.port().to_string(),
                "subnqn": o.subnqn,
            },
            "cntlid": c.cntlid,
            "host": { "nqn": o.hostnqn },
            "hdgst": o.header_digest,
            "ddgst": o.data_digest,
            "ctrlr_loss_timeout_sec": secs(o.ctrlr_loss_timeout),
            "reconnect_delay_sec": o.reconnect_delay.as_secs(),
            "resets": c.resets,
            "last_error": c.last_error,
            "io_queues": c.io_queues,
            "offloads": {
                "write_zeroes": c.offloads.write_zeroes,
                "deallocate": c.offloads.deallocate,
                "copy": c.offloads.copy,
                "volatile_write_cache": c.offloads.volatile_write_cache,
            },
            "namespaces": c.namespaces.iter().map(|n| json!({
                "nsid": n.nsid,
                "bdev": n.bdev,
                "block_size": n.block_size,
                "num_blocks": n.num_blocks,
                "failure": n.failure,
            })).collect::<Vec<_>>(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attach(v: Value) -> Result<RemoteOptions, RpcError> {
        params::<AttachParams>(v)?.tcp_options()
    }

    #[test]
    fn tcp_parameters_map_to_options() {
        let o = attach(json!({
            "name": "r0", "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "4430",
            "subnqn": "nqn.2026-01.io.ferrite:a", "hdgst": true,
            "ctrlr_loss_timeout_sec": 5, "reconnect_delay_sec": 2
        }))
        .expect("valid");
        assert_eq!(o.addr, SocketAddr::from(([127, 0, 0, 1], 4430)));
        assert!(o.header_digest && !o.data_digest);
        assert_eq!(o.ctrlr_loss_timeout, Duration::from_secs(5));
        assert_eq!(o.reconnect_delay, Duration::from_secs(2));
        let o = attach(json!({"name": "r0", "trtype": "TCP", "traddr": "::1",
            "subnqn": "nqn.2026-01.io.ferrite:a", "ctrlr_loss_timeout_sec": -1}))
        .expect("valid");
        assert_eq!(o.addr.port(), DEFAULT_TRSVCID);
        assert_eq!(o.ctrlr_loss_timeout, Duration::MAX);
    }

    #[test]
    fn bad_parameters_are_named() {
        let base = json!({"name": "r0", "trtype": "tcp", "traddr": "127.0.0.1",
            "subnqn": "nqn.2026-01.io.ferrite:a"});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            attach(b).expect_err("refused").message
        };
        assert!(with("trsvcid", json!("http")).contains("trsvcid"));
        assert!(with("traddr", json!("no such host.invalid")).contains("traddr"));
        assert!(with("subnqn", json!("x")).contains("subnqn"));
        assert!(with("ctrlr_loss_timeout_sec", json!(-2)).contains("ctrlr_loss_timeout_sec"));
        assert!(with("adrfam", json!("ib")).contains("adrfam"));
        assert!(with("bogus", json!(1)).contains("bogus"));
    }
}
