//! ANA states per subsystem listener (`nvmf_subsystem_listener_set_ana_state`,
//! `nvmf_subsystem_get_listeners`, SPDK's names and parameters) and the reservation state of a
//! namespace (`nvmf_ns_get_reservation`).

use ferrite_nvmf::AnaState;
use serde::Deserialize;
use serde_json::{json, Value};

use super::nvmf::{listen_address_json, ListenAddress};
use super::{format_uuid, params};
use crate::appliance::Appliance;
use crate::protocol::RpcError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAnaState {
    nqn: String,
    listen_address: ListenAddress,
    ana_state: String,
    /// None: every ANA group of the subsystem.
    #[serde(default)]
    anagrpid: Option<u32>,
}

pub(super) fn set_ana_state(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: SetAnaState = params(p)?;
    let state = AnaState::parse(&p.ana_state).ok_or_else(|| {
        let names: Vec<&str> = AnaState::ALL.iter().map(|s| s.as_str()).collect();
        RpcError::invalid_params(format!(
            "ana_state {:?} is not one of {}",
            p.ana_state,
            names.join(", ")
        ))
    })?;
    let listener = p.listen_address.listener()?;
    let target = app.target();
    if target.config().subsystem(&p.nqn).is_none() {
        return Err(RpcError::not_found(format!("no subsystem {}", p.nqn)));
    }
    target.set_ana_state(&p.nqn, &listener, p.anagrpid, state)?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Nqn {
    nqn: String,
}

/// Every listener of a subsystem with the state of each ANA group that has namespaces.
pub(super) fn get_listeners(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: Nqn = params(p)?;
    let cfg = app.target().config();
    let sub = cfg
        .subsystem(&p.nqn)
        .ok_or_else(|| RpcError::not_found(format!("no subsystem {}", p.nqn)))?;
    let groups = sub.ana_groups();
    let out: Vec<Value> = sub
        .listeners
        .iter()
        .map(|l| {
            let states: Vec<Value> = groups
                .keys()
                .map(|g| json!({"ana_group": g, "ana_state": sub.ana.get(l, *g).as_str()}))
                .collect();
            json!({
                "address": listen_address_json(l.trtype, l.addr),
                "ana_states": states,
            })
        })
        .collect();
    Ok(Value::Array(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NsRef {
    nqn: String,
    nsid: u32,
}

/// The reservation state of one namespace: generation, type, holder, registrants.
pub(super) fn get_reservation(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: NsRef = params(p)?;
    let cfg = app.target().config();
    let sub = cfg
        .subsystem(&p.nqn)
        .ok_or_else(|| RpcError::not_found(format!("no subsystem {}", p.nqn)))?;
    let ns = sub.namespace(p.nsid).ok_or_else(|| {
        RpcError::not_found(format!("subsystem {} has no namespace {}", p.nqn, p.nsid))
    })?;
    let st = ns.reservation.lock();
    let registrants: Vec<Value> = st
        .registrants
        .iter()
        .map(|r| {
            json!({
                "hostid": format_uuid(&r.hostid),
                "rkey": r.key,
                "holder": st.holds(&r.hostid),
            })
        })
        .collect();
    Ok(json!({
        "generation": st.generation,
        "rtype": st.rtype.map_or(0, |t| t.code()),
        "ptpl": st.ptpl,
        "holder": st.holder.map(|h| format_uuid(&h)),
        "registrants": registrants,
    }))
}
