//! DH-HMAC-CHAP configuration: SPDK's keyring (`keyring_file_*`), per-host keys
//! (`nvmf_subsystem_set_keys`; `nvmf_subsystem_add_host` takes them too, see nvmf.rs) and the
//! allowed hashes and groups (`nvmf_set_config`'s `dhchap_*`).

use std::path::PathBuf;

use ferrite_auth::{AuthPolicy, DhGroup, HashId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::params;
use crate::appliance::Appliance;
use crate::protocol::RpcError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    name: String,
    path: PathBuf,
}

pub(super) fn keyring_file_add_key(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: AddKey = params(p)?;
    app.target().keyring_add_file(&p.name, &p.path)?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyName {
    name: String,
}

pub(super) fn keyring_file_remove_key(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: KeyName = params(p)?;
    app.target().keyring_remove(&p.name)?;
    Ok(json!(true))
}

pub(super) fn keyring_get_keys(app: &dyn Appliance, _p: Value) -> Result<Value, RpcError> {
    let keys: Vec<Value> = app
        .target()
        .keyring_entries()
        .into_iter()
        .map(|(name, path)| json!({ "name": name, "module": "keyring_file", "path": path }))
        .collect();
    Ok(Value::Array(keys))
}

/// SPDK's name for its default NVMe-oF target; `tgt_name` selects a target there.
const SPDK_DEFAULT_TARGET: &str = "nvmf_tgt";

/// SPDK's optional `tgt_name` parameter: Ferrite has one target, which answers to SPDK's
/// default name, so scripts written for SPDK that pass it keep working; any other name is
/// refused rather than silently applied to this target.
pub(super) fn check_tgt_name(name: Option<&str>) -> Result<(), RpcError> {
    match name {
        None | Some(SPDK_DEFAULT_TARGET) => Ok(()),
        Some(other) => Err(RpcError::invalid_params(format!(
            "tgt_name {other:?}: this daemon has one NVMe-oF target, {SPDK_DEFAULT_TARGET:?}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetKeys {
    nqn: String,
    host: String,
    #[serde(default)]
    tgt_name: Option<String>,
    #[serde(default)]
    dhchap_key: Option<String>,
    #[serde(default)]
    dhchap_ctrlr_key: Option<String>,
}

/// Changes (or, without `dhchap_key`, removes) the keys of an allowed host.
pub(super) fn set_keys(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: SetKeys = params(p)?;
    check_tgt_name(p.tgt_name.as_deref())?;
    app.target().set_host_dhchap(
        &p.nqn,
        &p.host,
        p.dhchap_key.as_deref(),
        p.dhchap_ctrlr_key.as_deref(),
    )?;
    Ok(json!(true))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetConfig {
    #[serde(default)]
    dhchap_digests: Option<Vec<String>>,
    #[serde(default)]
    dhchap_dhgroups: Option<Vec<String>>,
}

/// The DH-HMAC-CHAP part of SPDK's `nvmf_set_config`: which hashes and groups may be
/// negotiated, in order of preference.
pub(super) fn set_config(app: &dyn Appliance, p: Value) -> Result<Value, RpcError> {
    let p: SetConfig = params(p)?;
    let mut policy = AuthPolicy::clone(&app.target().dhchap_policy());
    if let Some(d) = p.dhchap_digests {
        policy.digests = d
            .iter()
            .map(|n| {
                HashId::from_name(n).ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "dhchap_digests: unknown hash {n:?} (sha256, sha384, sha512)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(g) = p.dhchap_dhgroups {
        policy.dhgroups = g
            .iter()
            .map(|n| {
                DhGroup::from_name(n).ok_or_else(|| {
                    RpcError::invalid_params(format!(
                        "dhchap_dhgroups: unknown group {n:?} (null, ffdhe2048 ... ffdhe8192)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
    }
    app.target().set_dhchap_policy(policy)?;
    Ok(json!(true))
}

/// The current `nvmf_set_config` DH-HMAC-CHAP values (for `save_config`).
pub fn policy_json(policy: &AuthPolicy) -> Value {
    json!({
        "dhchap_digests": policy.digests.iter().map(|h| h.name()).collect::<Vec<_>>(),
        "dhchap_dhgroups": policy.dhgroups.iter().map(|g| g.name()).collect::<Vec<_>>(),
    })
}
