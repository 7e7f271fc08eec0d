//! `nvmf_*`: subsystems, namespaces, hosts, listeners, controllers. Names and parameters follow
//! SPDK's so scripts carry over.

use std::net::{IpAddr, SocketAddr};

use ferrite_nvmf::{Listener, NamespaceParams, SubsystemParams, Trtype};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{format_nguid, format_uuid, params, parse_hex16};
use crate::appliance::Appliance;
use crate::protocol::RpcError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubsystem {
    nqn: String,
    #[serde(default)]
    serial_number: Option<String>,
    #[serde(default)]
    model_number: Option<String>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    max_namespaces: Option<u32>,
}

pub(super) fn create_subsystem(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: CreateSubsystem = params(p)?;
    app.target().create_subsystem(SubsystemParams {
        nqn: p.nqn,
        serial: p.serial_number,
        model: p.model_number,
        allow_any_host: p.allow_any_host,
        max_namespaces: p.max_namespaces,
    })?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Nqn {
    nqn: String,
}

pub(super) fn delete_subsystem(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Nqn = params(p)?;
    app.target().delete_subsystem(&p.nqn)?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceSpec {
    bdev_name: String,
    #[serde(default)]
    nsid: Option<u32>,
    #[serde(default)]
    nguid: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
    /// ANA group (default: the NSID).
    #[serde(default)]
    anagrpid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNs {
    nqn: String,
    namespace: NamespaceSpec,
}

pub(super) fn add_ns(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: AddNs = params(p)?;
    let ns = p.namespace;
    let nguid = ns
        .nguid
        .as_deref()
        .map(|t| parse_hex16("nguid", t))
        .transpose()?;
    let uuid = ns
        .uuid
        .as_deref()
        .map(|t| parse_hex16("uuid", t))
        .transpose()?;
    // SPDK treats nsid 0 as "pick one".
    let nsid = ns.nsid.filter(|&n| n != 0);
    // Held so the bdev cannot join a pool between the check and the export.
    let _guard = app.volume_lock();
    if let Some(pool) = app.pool_of_bdev(&ns.bdev_name) {
        return Err(RpcError::new(
            crate::protocol::BUSY,
            format!(
                "bdev {} is a member of pool {pool} and cannot be exported; export its volumes (\"{pool}/<volume>\") instead",
                ns.bdev_name
            ),
        ));
    }
    let nsid = app.target().add_namespace(
        &p.nqn,
        NamespaceParams {
            nsid,
            bdev_name: ns.bdev_name,
            nguid,
            uuid,
            anagrpid: ns.anagrpid,
        },
    )?;
    Ok(json!(nsid))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNs {
    nqn: String,
    nsid: u32,
}

pub(super) fn remove_ns(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: RemoveNs = params(p)?;
    app.target().remove_namespace(&p.nqn, p.nsid)?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Host {
    nqn: String,
    host: String,
    #[serde(default)]
    tgt_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddHost {
    nqn: String,
    host: String,
    #[serde(default)]
    tgt_name: Option<String>,
    /// DH-HMAC-CHAP keys by keyring name (SPDK's parameters).
    #[serde(default)]
    dhchap_key: Option<String>,
    #[serde(default)]
    dhchap_ctrlr_key: Option<String>,
}

pub(super) fn add_host(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: AddHost = params(p)?;
    super::auth::check_tgt_name(p.tgt_name.as_deref())?;
    let t = app.target();
    // Keys first checked against the keyring, so a bad name leaves the host list unchanged.
    if p.dhchap_ctrlr_key.is_some() && p.dhchap_key.is_none() {
        return Err(RpcError::invalid_params(
            "dhchap_ctrlr_key needs dhchap_key (bidirectional authentication starts with the host's key)",
        ));
    }
    for name in [&p.dhchap_key, &p.dhchap_ctrlr_key].into_iter().flatten() {
        if !t.keyring_entries().iter().any(|(n, _)| n == name) {
            return Err(RpcError::invalid_params(format!(
                "no key {name:?} in the keyring (keyring_file_add_key first)"
            )));
        }
    }
    t.add_host(&p.nqn, &p.host)?;
    if p.dhchap_key.is_some() {
        t.set_host_dhchap(
            &p.nqn,
            &p.host,
            p.dhchap_key.as_deref(),
            p.dhchap_ctrlr_key.as_deref(),
        )?;
    }
    Ok(json!(true))
}

pub(super) fn remove_host(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Host = params(p)?;
    super::auth::check_tgt_name(p.tgt_name.as_deref())?;
    app.target().remove_host(&p.nqn, &p.host)?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAny {
    nqn: String,
    allow_any_host: bool,
}

pub(super) fn allow_any_host(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: AllowAny = params(p)?;
    app.target().set_allow_any_host(&p.nqn, p.allow_any_host)?;
    Ok(json!(true))
}

/// SPDK's `listen_address` object. `trsvcid` is a string in SPDK; a number is accepted too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenAddress {
    trtype: String,
    #[serde(default)]
    adrfam: Option<String>,
    traddr: String,
    trsvcid: Svcid,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Svcid {
    Text(String),
    Number(u16),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
}

impl ListenAddress {
    pub(super) fn listener(&self) -> Result<Listener, RpcError> {
        let trtype = match self.trtype.to_ascii_lowercase().as_str() {
            "tcp" => Trtype::Tcp,
            "rdma" => Trtype::Rdma,
            _ => {
                return Err(RpcError::invalid_params(format!(
                    "trtype {:?} is not supported: TCP or RDMA",
                    self.trtype
                )))
            }
        };
        let ip: IpAddr = self.traddr.parse().map_err(|_| {
            RpcError::invalid_params(format!(
                "traddr {:?} is not an IPv4 or IPv6 address",
                self.traddr
            ))
        })?;
        if let Some(fam) = &self.adrfam {
            let ok = match fam.to_ascii_lowercase().as_str() {
                "ipv4" => ip.is_ipv4(),
                "ipv6" => ip.is_ipv6(),
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "adrfam {fam:?} must be IPv4 or IPv6"
                    )))
                }
            };
            if !ok {
                return Err(RpcError::invalid_params(format!(
                    "adrfam {fam} does not match traddr {ip}"
                )));
            }
        }
        let port = match &self.trsvcid {
            Svcid::Number(n) => *n,
            Svcid::Text(t) => t.parse().map_err(|_| {
                RpcError::invalid_params(format!("trsvcid {t:?} is not a port number"))
            })?,
        };
        if port == 0 {
            return Err(RpcError::invalid_params("trsvcid must not be 0"));
        }
        Ok(Listener {
            trtype,
            addr: SocketAddr::new(ip, port),
        })
    }
}

/// Listeners belong to subsystems, as in SPDK: a port is bound when the first subsystem adds it
/// and closed when the last one removes it; a host reaches a subsystem only through its own
/// listeners (the discovery subsystem is on every port).
fn listener_target(app: &dyn Appliance, p: Value) -> Result<(String, Listener), RpcError> {
    let p: ListenerParams = params(p)?;
    let cfg = app.target().config();
    if cfg.subsystem(&p.nqn).is_none() {
        return Err(RpcError::not_found(format!("no subsystem {}", p.nqn)));
    }
    Ok((p.nqn, p.listen_address.listener()?))
}

pub(super) fn add_listener(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let (nqn, listener) = listener_target(app, p)?;
    let target = app.target();
    // Registered before the port opens, so a host connecting at once is not refused.
    target
        .add_subsystem_listener(&nqn, listener.clone())
        .map_err(|e| RpcError::new(crate::protocol::ALREADY_EXISTS, e.to_string()))?;
    let bound = target.config().listeners.contains(&listener);
    if !bound {
        if let Err(e) = app.listen(listener.clone()) {
            let _ = target.remove_subsystem_listener(&nqn, &listener);
            return Err(e);
        }
    }
    Ok(json!(listener.addr.to_string()))
}

pub(super) fn remove_listener(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let (nqn, listener) = listener_target(app, p)?;
    let target = app.target();
    if !target
        .config()
        .subsystem(&nqn)
        .is_some_and(|s| s.listeners.contains(&listener))
    {
        return Err(RpcError::not_found(format!(
            "{nqn} is not listening on {} {}",
            listener.trtype.as_str(),
            listener.addr
        )));
    }
    let still_used = target.remove_subsystem_listener(&nqn, &listener)?;
    if !still_used {
        app.stop_listening(listener)?;
    }
    Ok(json!(true))
}

/// SPDK's `listen_address` rendering.
pub(crate) fn listen_address_json(trtype: Trtype, addr: SocketAddr) -> Value {
    json!({
        "trtype": trtype.as_str().to_ascii_uppercase(),
        "adrfam": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": addr.ip().to_string(),
        "trsvcid": addr.port().to_string(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionalNqn {
    #[serde(default)]
    nqn: Option<String>,
}

fn check_nqn(app: &dyn Appliance, nqn: &Option<String>) -> Result<(), RpcError> {
    match nqn {
        Some(n) if app.target().config().subsystem(n).is_none() => {
            Err(RpcError::not_found(format!("no subsystem {n}")))
        }
        _ => Ok(()),
    }
}

pub(super) fn get_subsystems(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: OptionalNqn = params(p)?;
    check_nqn(app, &p.nqn)?;
    let cfg = app.target().config();
    let listeners: Vec<Value> = cfg
        .listeners
        .iter()
        .map(|l| listen_address_json(l.trtype, l.addr))
        .collect();
    let out = cfg
        .subsystems
        .values()
        .filter(|s| p.nqn.as_ref().is_none_or(|n| *n == s.nqn))
        .map(|s| {
            if s.is_discovery() {
                return json!({
                    "nqn": s.nqn,
                    "subtype": "Discovery",
                    "listen_addresses": listeners,
                    "allow_any_host": true,
                    "hosts": [],
                });
            }
            let namespaces: Vec<Value> = s
                .namespaces
                .values()
                .map(|ns| {
                    json!({
                        "nsid": ns.nsid,
                        "bdev_name": ns.bdev_name,
                        "name": ns.bdev_name,
                        "nguid": format_nguid(&ns.nguid),
                        "uuid": format_uuid(&ns.uuid),
                        "anagrpid": ns.anagrpid,
                    })
                })
                .collect();
            let hosts: Vec<Value> = s
                .hosts
                .iter()
                .map(|h| match s.dhchap.get(h) {
                    Some(d) => json!({
                        "nqn": h,
                        "dhchap_key": d.key_name,
                        "dhchap_ctrlr_key": d.ctrlr_key_name,
                    }),
                    None => json!({ "nqn": h }),
                })
                .collect();
            let own: Vec<Value> = s
                .listeners
                .iter()
                .map(|l| listen_address_json(l.trtype, l.addr))
                .collect();
            json!({
                "nqn": s.nqn,
                "subtype": "NVMe",
                "listen_addresses": own,
                "allow_any_host": s.allow_any_host,
                "hosts": hosts,
                "serial_number": s.serial,
                "model_number": s.model,
                "max_namespaces": s.max_namespaces,
                "namespaces": namespaces,
            })
        })
        .collect();
    Ok(Value::Array(out))
}

pub(super) fn get_controllers(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: OptionalNqn = params(p)?;
    check_nqn(app, &p.nqn)?;
    let out = app
        .target()
        .controllers()
        .into_iter()
        .filter(|c| p.nqn.as_ref().is_none_or(|n| *n == c.subnqn))
        .map(|c| {
            json!({
                "cntlid": c.cntlid,
                "subnqn": c.subnqn,
                "hostnqn": c.hostnqn,
                "hostid": format_uuid(&c.hostid),
                "num_io_qpairs": c.io_queues.len(),
                "kato_ms": c.kato_ms,
                "failed": c.failed,
            })
        })
        .collect();
    Ok(Value::Array(out))
}

pub(super) fn get_qpairs(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: OptionalNqn = params(p)?;
    check_nqn(app, &p.nqn)?;
    let mut out = Vec::new();
    for c in app
        .target()
        .controllers()
        .into_iter()
        .filter(|c| p.nqn.as_ref().is_none_or(|n| *n == c.subnqn))
    {
        for qid in std::iter::once(0).chain(c.io_queues.iter().copied()) {
            let reactor = c
                .queue_reactors
                .iter()
                .find(|&&(q, _)| q == qid)
                .map(|&(_, r)| r);
            out.push(json!({
                "cntlid": c.cntlid,
                "qid": qid,
                "reactor": reactor,
                "subnqn": c.subnqn,
                "hostnqn": c.hostnqn,
                "trtype": "TCP",
                "state": if c.failed { "failed" } else { "active" },
            }));
        }
    }
    Ok(Value::Array(out))
}
