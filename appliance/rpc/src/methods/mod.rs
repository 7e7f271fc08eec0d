//! The method table: every RPC method, its handler and whether it changes state. Parameters
//! are typed structs decoded with `deny_unknown_fields`, so a typo or a wrong type is an
//! `INVALID_PARAMS` error naming the field. The reference is docs/rpc.md (a test keeps the two
//! in sync).

mod ana;
pub mod auth;
mod bdev;
pub mod bdev_nvme;
pub(crate) mod cache;
mod journal;
mod nvmf;
mod pool;
pub(crate) mod qos;
mod replication;
mod roles;
mod snapshot_diff;
mod system;
mod volume;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::appliance::Appliance;
use crate::protocol::{RpcError, METHOD_NOT_FOUND};

pub type Handler = fn(&dyn Appliance, Value) -> Result<Value, RpcError>;

/// One entry of the method table.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    pub name: &'static str,
    /// A change the daemon persists (with `--state-dir`) once it succeeded.
    pub mutates: bool,
    pub handler: Handler,
}

const fn m(name: &'static str, mutates: bool, handler: Handler) -> Method {
    Method {
        name,
        mutates,
        handler,
    }
}

/// Every method, in the order of docs/rpc.md.
pub static METHODS: &[Method] = &[
    m("bdev_malloc_create", true, bdev::malloc_create),
    m("bdev_file_create", true, bdev::file_create),
    m("bdev_delete", true, bdev::delete),
    m("bdev_list", false, bdev::list),
    m("bdev_error_create", true, bdev::error_create),
    m("bdev_error_inject_error", false, bdev::error_inject),
    m("bdev_delay_create", true, bdev::delay_create),
    m("bdev_delay_update_latency", true, bdev::delay_update),
    m("bdev_power_cut_create", true, bdev::power_cut_create),
    m("bdev_power_cut", false, bdev::power_cut),
    m(
        "bdev_nvme_attach_controller",
        true,
        bdev_nvme::attach_controller,
    ),
    m(
        "bdev_nvme_detach_controller",
        true,
        bdev_nvme::detach_controller,
    ),
    m(
        "bdev_nvme_get_controllers",
        false,
        bdev_nvme::get_controllers,
    ),
    m("bdev_cache_create", true, cache::create),
    m("bdev_cache_delete", true, cache::delete),
    m("bdev_cache_get", false, cache::get),
    m("bdev_cache_flush", false, cache::flush),
    m("bdev_set_qos_limit", true, qos::set_bdev),
    m("nvmf_set_host_qos_limit", true, qos::set_host),
    m("qos_get_limits", false, qos::get_limits),
    m("nvmf_create_subsystem", true, nvmf::create_subsystem),
    m("nvmf_delete_subsystem", true, nvmf::delete_subsystem),
    m("nvmf_subsystem_add_ns", true, nvmf::add_ns),
    m("nvmf_subsystem_remove_ns", true, nvmf::remove_ns),
    m("nvmf_subsystem_add_host", true, nvmf::add_host),
    m("nvmf_subsystem_remove_host", true, nvmf::remove_host),
    m("nvmf_subsystem_set_keys", true, auth::set_keys),
    m("nvmf_set_config", true, auth::set_config),
    m("keyring_file_add_key", true, auth::keyring_file_add_key),
    m(
        "keyring_file_remove_key",
        true,
        auth::keyring_file_remove_key,
    ),
    m("keyring_get_keys", false, auth::keyring_get_keys),
    m("nvmf_subsystem_allow_any_host", true, nvmf::allow_any_host),
    m("nvmf_subsystem_add_listener", true, nvmf::add_listener),
    m(
        "nvmf_subsystem_remove_listener",
        true,
        nvmf::remove_listener,
    ),
    m(
        "nvmf_subsystem_listener_set_ana_state",
        true,
        ana::set_ana_state,
    ),
    m("nvmf_subsystem_get_listeners", false, ana::get_listeners),
    m("nvmf_ns_get_reservation", false, ana::get_reservation),
    m("nvmf_get_subsystems", false, nvmf::get_subsystems),
    m("nvmf_get_controllers", false, nvmf::get_controllers),
    m("nvmf_get_qpairs", false, nvmf::get_qpairs),
    m("pool_create", true, pool::create),
    m("pool_list", false, pool::list),
    m("pool_info", false, pool::info),
    m("pool_check", false, pool::check),
    m("pool_delete", true, pool::delete),
    m("pool_set_space_warning", true, pool::set_space_warning),
    m("volume_create", true, volume::create),
    m("volume_list", false, volume::list),
    m("volume_info", false, volume::info),
    m("volume_resize", true, volume::resize),
    m("volume_rename", true, volume::rename),
    m("volume_delete", true, volume::delete),
    m("volume_inflate", true, volume::inflate),
    m("volume_revert", true, volume::revert),
    m("snapshot_create", true, volume::snapshot_create),
    m("snapshot_list", false, volume::snapshot_list),
    m("snapshot_delete", true, volume::snapshot_delete),
    m("snapshot_diff", false, snapshot_diff::snapshot_diff),
    m("clone_create", true, volume::clone_create),
    m("journal_create", true, journal::create),
    m("journal_attach", true, journal::attach),
    m("journal_detach", true, journal::detach),
    m("journal_list", false, journal::list),
    m("journal_delete", true, journal::delete),
    m("replication_create", true, replication::create),
    m("replication_set_mode", true, replication::set_mode),
    m("replication_status", false, replication::status),
    m("replication_pause", true, replication::pause),
    m("replication_resume", true, replication::resume),
    m("replication_delete", true, replication::delete),
    m("replication_switchover", true, roles::switchover),
    m("replication_failover", true, roles::failover),
    m("replication_failback", true, roles::failback),
    m("stats_get", false, system::stats_get),
    m("save_config", false, system::save_config),
    m("log_set_level", false, system::log_set_level),
    m("log_get_level", false, system::log_get_level),
    m(
        "framework_get_reactors",
        false,
        system::framework_get_reactors,
    ),
    m("rpc_get_methods", false, system::rpc_get_methods),
];

pub fn find(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

/// Runs one method: decode, execute, persist on success when it changed state.
pub fn dispatch(app: &dyn Appliance, method: &str, params: Value) -> Result<Value, RpcError> {
    let Some(entry) = find(method) else {
        return Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("unknown method {method:?} (rpc_get_methods lists them)"),
        ));
    };
    let result = (entry.handler)(app, params)?;
    if entry.mutates {
        app.persist()?;
    }
    Ok(result)
}

/// Decodes typed parameters; errors name the field and the expected type.
pub(crate) fn params<T: DeserializeOwned>(value: Value) -> Result<T, RpcError> {
    serde_json::from_value(value).map_err(|e| RpcError::invalid_params(e.to_string()))
}

/// A size in bytes: a number, or a string such as "4096", "64K", "10GiB" (binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("a size must be a number of bytes or a string like \"10GiB\"")
        })? {
            Raw::Number(n) => Ok(Size(n)),
            Raw::Text(t) => parse_size(&t).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses "4096", "64K", "1GiB", "10G" (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {text:?}: use bytes or a number with K, M, G, T (KiB, MiB, GiB, TiB)")
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        _ => return Err(bad()),
    };
    value.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Parses a UUID or NGUID: 32 hex digits, dashes allowed anywhere.
pub fn parse_hex16(field: &str, text: &str) -> Result<[u8; 16], RpcError> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let bad = || RpcError::invalid_params(format!("{field} {text:?} is not 32 hex digits"));
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// 8-4-4-4-12 lower-case hex.
pub fn format_uuid(b: &[u8; 16]) -> String {
    ferrite_volume::uuid_string(b)
}

/// 32 upper-case hex digits (SPDK prints NGUIDs this way).
pub fn format_nguid(b: &[u8; 16]) -> String {
    hex(b).to_ascii_uppercase()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_round_trip() {
        let u = parse_hex16("uuid", "00112233-4455-6677-8899-aabbccddeeff").expect("uuid");
        assert_eq!(format_uuid(&u), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(format_nguid(&u), "00112233445566778899AABBCCDDEEFF");
        assert!(parse_hex16("nguid", "0011").is_err());
        assert!(parse_hex16("nguid", "zz112233445566778899aabbccddeeff").is_err());
        assert!(parse_hex16("nguid", "é0112233445566778899aabbccddeef").is_err());
    }

    #[test]
    fn sizes_are_numbers_or_strings() {
        let s: Size = serde_json::from_value(serde_json::json!("10GiB")).expect("text");
        assert_eq!(s, Size(10 << 30));
        let s: Size = serde_json::from_value(serde_json::json!(4096)).expect("number");
        assert_eq!(s, Size(4096));
        let e = serde_json::from_value::<Size>(serde_json::json!("1.5G")).expect_err("bad");
        assert!(e.to_string().contains("1.5G"), "{e}");
        assert!(serde_json::from_value::<Size>(serde_json::json!(-1)).is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    #[test]
    fn method_names_are_unique() {
        for (i, a) in METHODS.iter().enumerate() {
            assert!(
                METHODS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
    }
}

#[cfg(test)]
mod docs {
    use super::METHODS;

    /// docs/rpc.md has a `### \`name\`` section for every method and none for others.
    #[test]
    fn docs_list_every_method() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rpc.md");
        let text = std::fs::read_to_string(path).expect("docs/rpc.md is readable");
        let documented: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("### `"))
            .filter_map(|l| l.strip_suffix('`'))
            .collect();
        let missing: Vec<&str> = METHODS
            .iter()
            .map(|m| m.name)
            .filter(|n| !documented.contains(n))
            .collect();
        assert!(
            missing.is_empty(),
            "undocumented in docs/rpc.md: {missing:?}"
        );
        let unknown: Vec<&&str> = documented
            .iter()
            .filter(|d| !METHODS.iter().any(|m| m.name == **d))
            .collect();
        assert!(
            unknown.is_empty(),
            "docs/rpc.md documents no such method: {unknown:?}"
        );
    }
}
