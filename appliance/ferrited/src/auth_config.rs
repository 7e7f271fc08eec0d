//! DH-HMAC-CHAP in the configuration file (and so in `--state-dir` and `save_config`):
//!
//! ```toml
//! dhchap = { digests = ["sha512", "sha384", "sha256"], dhgroups = ["ffdhe2048", "null"] }
//!
//! [[key]]                        # keyring_file_add_key: the file holds a DHHC-1: secret, mode 0600
//! name = "host0"
//! path = "/etc/ferrite/keys/host0"
//!
//! [[subsystem]]
//! hosts = ["nqn.2014-08.org.nvmexpress:uuid:..."]
//! host_keys = [{ host = "nqn.2014-08.org.nvmexpress:uuid:...", dhchap_key = "host0", dhchap_ctrlr_key = "ctrl0" }]
//! ```
//!
//! Only key names and paths are stored; the secrets stay in their files.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use ferrite_auth::{AuthPolicy, DhGroup, HashId};
use ferrite_nvmf::{Subsystem, Target};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostKeyConfig {
    pub host: String,
    pub dhchap_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap_ctrlr_key: Option<String>,
}

/// The hashes and DH groups that may be negotiated, in order of preference.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DhchapConfig {
    pub digests: Vec<String>,
    pub dhgroups: Vec<String>,
}

impl DhchapConfig {
    pub fn from_policy(p: &AuthPolicy) -> DhchapConfig {
        DhchapConfig {
            digests: p.digests.iter().map(|h| h.name().to_string()).collect(),
            dhgroups: p.dhgroups.iter().map(|g| g.name().to_string()).collect(),
        }
    }

    pub fn to_policy(&self) -> Result<AuthPolicy> {
        Ok(AuthPolicy {
            digests: self
                .digests
                .iter()
                .map(|n| {
                    HashId::from_name(n).ok_or_else(|| anyhow!("dhchap: unknown digest {n:?}"))
                })
                .collect::<Result<_>>()?,
            dhgroups: self
                .dhgroups
                .iter()
                .map(|n| {
                    DhGroup::from_name(n).ok_or_else(|| anyhow!("dhchap: unknown DH group {n:?}"))
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// Loads the keyring and the policy (before the subsystems).
pub fn apply_keys(
    target: &Target,
    keys: &[KeyConfig],
    dhchap: Option<&DhchapConfig>,
) -> Result<()> {
    for k in keys {
        target
            .keyring_add_file(&k.name, &k.path)
            .with_context(|| format!("key {}", k.name))?;
    }
    if let Some(d) = dhchap {
        target.set_dhchap_policy(d.to_policy()?)?;
    }
    Ok(())
}

/// Sets the keys of a subsystem's hosts (after its hosts are added).
pub fn apply_host_keys(target: &Target, nqn: &str, host_keys: &[HostKeyConfig]) -> Result<()> {
    for h in host_keys {
        target
            .set_host_dhchap(
                nqn,
                &h.host,
                Some(&h.dhchap_key),
                h.dhchap_ctrlr_key.as_deref(),
            )
            .with_context(|| format!("subsystem {nqn} host {} keys", h.host))?;
    }
    Ok(())
}

/// The running keyring, policy (when not the default) and a subsystem's host keys.
pub fn running_keys(target: &Target) -> (Vec<KeyConfig>, Option<DhchapConfig>) {
    let keys = target
        .keyring_entries()
        .into_iter()
        .map(|(name, path)| KeyConfig { name, path })
        .collect();
    let policy = target.dhchap_policy();
    let dhchap = (*policy != AuthPolicy::default()).then(|| DhchapConfig::from_policy(&policy));
    (keys, dhchap)
}

pub fn running_host_keys(sub: &Subsystem) -> Vec<HostKeyConfig> {
    sub.dhchap
        .iter()
        .map(|(host, d)| HostKeyConfig {
            host: host.clone(),
            dhchap_key: d.key_name.clone(),
            dhchap_ctrlr_key: d.ctrlr_key_name.clone(),
        })
        .collect()
}
