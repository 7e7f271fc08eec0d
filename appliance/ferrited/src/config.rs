//! `ferrited --config FILE`: a TOML description of reactors, listeners, backends, subsystems,
//! namespaces and hosts. Without a file the embedded default serves a 1 GiB RAM namespace.
//!
//! ```toml
//! cores = "0,1"            # or a mask "0x3"
//! idle = "park:1ms:1ms"    # or "poll" (pure polling, for benchmarks)
//! housekeeping_reactor = 1 # optional: runs the pools' metadata owners (default: the last)
//! listen = ["127.0.0.1:4420"]
//!
//! [[listener]]             # a port of any transport: trtype = "tcp" | "rdma"
//! trtype = "rdma"
//! address = "192.0.2.1:4420"
//!
//! [[bdev]]
//! name = "ram0"
//! kind = "malloc"          # malloc | file | null
//! size = "1GiB"
//! block_size = 4096
//!
//! [[bdev]]
//! name = "disk0"
//! kind = "file"
//! path = "/var/lib/ferrite/disk0.img"
//! size = "10GiB"           # created (sparse) when missing
//!
//! [[nvme_controller]]      # a remote NVMe-oF/TCP controller: bdevs "r0n1", "r0n2", ...
//! name = "r0"
//! trtype = "tcp"
//! traddr = "192.0.2.2"
//! trsvcid = "4420"
//! subnqn = "nqn.2026-01.io.ferrite:default"
//! ctrlr_loss_timeout_sec = 30 # optional: I/O held this long after a path loss (-1: forever)
//! reconnect_delay_sec = 1     # optional
//!
//! [[pool]]                 # opened at start (created when the members are blank)
//! name = "tank"
//! bdevs = ["disk0"]
//! cluster_size = "1MiB"    # optional, only used when creating
//! space_warning = 80       # optional, percent allocated that raises a warning
//!
//! [[subsystem]]
//! nqn = "nqn.2026-01.io.ferrite:default"
//! allow_any_host = false
//! hosts = ["nqn.2014-08.org.nvmexpress:uuid:..."]
//! namespaces = [{ nsid = 1, bdev = "ram0" }]   # optional anagrpid (default: the NSID)
//! # ANA states per listener: every group (no anagrpid) or one group; absent = optimized
//! ana = [{ listen = "127.0.0.1:4421", state = "inaccessible" }]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const DEFAULT_NQN: &str = "nqn.2026-01.io.ferrite:default";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4420";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid size {0:?}: use bytes or a number with K, M, G, T (KiB, MiB, GiB, TiB)")]
    Size(String),
    #[error("bdev {name}: {message}")]
    Bdev { name: String, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Listeners of any transport (`listen` entries are NVMe/TCP ones); subsystems without their
    /// own `listen` are reachable through all of them.
    #[serde(default, rename = "listener", skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default, rename = "bdev", skip_serializing_if = "Vec::is_empty")]
    pub bdevs: Vec<BdevConfig>,
    /// Remote NVMe-oF controllers (`bdev_nvme_attach_controller` parameters), attached after
    /// the bdevs and before the pools; their namespaces are bdevs `<name>n<nsid>`.
    #[serde(
        default,
        rename = "nvme_controller",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nvme_controllers: Vec<ferrite_rpc::methods::bdev_nvme::AttachParams>,
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolConfig>,
    #[serde(default, rename = "subsystem", skip_serializing_if = "Vec::is_empty")]
    pub subsystems: Vec<SubsystemConfig>,
    /// Replication journals (opened after the pools, before the subsystems).
    #[serde(default, rename = "journal", skip_serializing_if = "Vec::is_empty")]
    pub journals: Vec<crate::journals::JournalConfig>,
    /// The journal stream endpoint (default: the RPC socket's path with `.journal` appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_socket: Option<std::path::PathBuf>,
    /// The reactor (index into `cores`) that runs the pools' metadata owners; default the
    /// last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub housekeeping_reactor: Option<usize>,
    /// DH-HMAC-CHAP: allowed hashes and groups (`nvmf_set_config`), see auth_config.rs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhchap: Option<crate::auth_config::DhchapConfig>,
    /// The keyring (`keyring_file_add_key`), loaded before the subsystems.
    #[serde(default, rename = "key", skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<crate::auth_config::KeyConfig>,
    /// I/O limits per bdev or host (`crate::qos`), applied after the subsystems.
    #[serde(default, rename = "qos", skip_serializing_if = "Vec::is_empty")]
    pub qos: Vec<crate::qos::QosConfig>,
}

/// `[[listener]] trtype = "rdma" address = "192.0.2.1:4420"`: a port of a given transport.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `tcp` or `rdma`.
    pub trtype: String,
    pub address: SocketAddr,
}

impl ListenerConfig {
    /// The NVMe-oF listener this entry names, or a message naming the bad transport type.
    pub fn listener(&self) -> Result<ferrite_nvmf::Listener, String> {
        let trtype = match self.trtype.to_ascii_lowercase().as_str() {
            "tcp" => ferrite_nvmf::Trtype::Tcp,
            "rdma" => ferrite_nvmf::Trtype::Rdma,
            other => {
                return Err(format!(
                    "listener {}: unknown trtype {other:?} (tcp or rdma)",
                    self.address
                ))
            }
        };
        Ok(ferrite_nvmf::Listener {
            trtype,
            addr: self.address,
        })
    }
}

/// A pool over registered bdevs. Its volumes live in the pool's own metadata, not here; they
/// are registered as bdevs `"<name>/<volume>"` when the pool opens.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub bdevs: Vec<String>,
    /// Only used when the pool is created (blank members); default 1MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<String>,
    /// Percent of clusters allocated above which a warning is raised (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_warning: Option<u8>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BdevConfig {
    pub name: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The device a fault-test bdev (`error`, `delay`, `power-cut`) is stacked on; listed
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `delay` bdevs: the added latencies (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
    /// `cache` bdevs (cached volumes of `base`): the cache device and the write policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::caches::CacheConfig>,
}

/// Latencies of a `delay` bdev, in microseconds.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    #[serde(default)]
    pub avg_read_us: u64,
    #[serde(default)]
    pub p99_read_us: u64,
    #[serde(default)]
    pub avg_write_us: u64,
    #[serde(default)]
    pub p99_write_us: u64,
}

impl From<LatencyConfig> for ferrite_bdev::delay::Latencies {
    fn from(l: LatencyConfig) -> Self {
        ferrite_bdev::delay::Latencies {
            avg_read_us: l.avg_read_us,
            p99_read_us: l.p99_read_us,
            avg_write_us: l.avg_write_us,
            p99_write_us: l.p99_write_us,
        }
    }
}

impl From<ferrite_bdev::delay::Latencies> for LatencyConfig {
    fn from(l: ferrite_bdev::delay::Latencies) -> Self {
        LatencyConfig {
            avg_read_us: l.avg_read_us,
            p99_read_us: l.p99_read_us,
            avg_write_us: l.avg_write_us,
            p99_write_us: l.p99_write_us,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubsystemConfig {
    pub nqn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_number: Option<String>,
    /// Highest NSID (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_namespaces: Option<u32>,
    #[serde(default)]
    pub allow_any_host: bool,
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Addresses hosts reach this subsystem through; absent = every top-level `listen` address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Vec<SocketAddr>>,
    /// This subsystem's listeners of other transports (`[[subsystem.listener]]`); with either
    /// this or `listen` set, the top-level listeners are not added.
    #[serde(default, rename = "listener", skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub namespaces: Vec<NamespaceConfig>,
    /// ANA states that are not `optimized`, applied in order after the listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ana: Vec<AnaConfig>,
    /// DH-HMAC-CHAP keys (keyring names) of hosts on `hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_keys: Vec<crate::auth_config::HostKeyConfig>,
}

/// One ANA state of a subsystem listener (`nvmf_subsystem_listener_set_ana_state`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnaConfig {
    pub listen: SocketAddr,
    /// None: every group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anagrpid: Option<u32>,
    /// optimized, non_optimized, inaccessible, persistent_loss or change.
    pub state: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsid: Option<u32>,
    pub bdev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nguid: Option<String>,
    /// ANA group (default: the NSID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anagrpid: Option<u32>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The embedded default: NVMe/TCP on 127.0.0.1:4420 and subsystem
    /// `nqn.2026-01.io.ferrite:default` allowing any host, NSID 1 = 1 GiB of RAM.
    pub fn embedded_default() -> Config {
        Config {
            cores: None,
            idle: None,
            listen: vec![DEFAULT_LISTEN.parse().expect("constant address parses")],
            listeners: Vec::new(),
            bdevs: vec![BdevConfig {
                name: "ram0".into(),
                kind: "malloc".into(),
                size: Some("1GiB".into()),
                block_size: Some(4096),
                path: None,
                base: None,
                latency: None,
                cache: None,
            }],
            nvme_controllers: Vec::new(),
            pools: Vec::new(),
            journals: Vec::new(),
            journal_socket: None,
            housekeeping_reactor: None,
            dhchap: None,
            keys: Vec::new(),
            qos: Vec::new(),
            subsystems: vec![SubsystemConfig {
                nqn: DEFAULT_NQN.into(),
                serial_number: None,
                model_number: None,
                max_namespaces: None,
                allow_any_host: true,
                hosts: Vec::new(),
                listen: None,
                listeners: Vec::new(),
                host_keys: Vec::new(),
                namespaces: vec![NamespaceConfig {
                    nsid: Some(1),
                    bdev: "ram0".into(),
                    uuid: None,
                    nguid: None,
                    anagrpid: None,
                }],
                ana: Vec::new(),
            }],
        }
    }
}

/// Renders bytes the way [`parse_size`] reads them, in the largest exact binary unit.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Parses "4096", "64K", "1GiB", "10G" (binary units), as the RPC methods do.
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    ferrite_rpc::methods::parse_size(text).map_err(|_| ConfigError::Size(text.to_string()))
}

/// Parses a UUID / NGUID written as 32 hex digits, dashes allowed.
pub fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").expect("bytes"), 4096);
        assert_eq!(parse_size("64K").expect("k"), 65536);
        assert_eq!(parse_size("1GiB").expect("gib"), 1 << 30);
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999999T").is_err());
        for n in [512, 4096, 65536, 3 << 20, 1 << 30, (1 << 40) + 512] {
            assert_eq!(parse_size(&format_size(n)).expect("round trip"), n);
        }
        assert_eq!(format_size(64 << 20), "64MiB");
    }

    #[test]
    fn full_config_parses() {
        let text = r#"
            cores = "0,1"
            idle = "poll"
            listen = ["127.0.0.1:4420", "[::1]:4421"]
            [[bdev]]
            name = "ram0"
            kind = "malloc"
            size = "64MiB"
            [[pool]]
            name = "tank"
            bdevs = ["ram0"]
            cluster_size = "256KiB"
            [[subsystem]]
            nqn = "nqn.2026-01.io.ferrite:a"
            hosts = ["nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"]
            namespaces = [{ nsid = 1, bdev = "ram0", uuid = "00112233-4455-6677-8899-aabbccddeeff" }]
        "#;
        let cfg = Config::parse(text, Path::new("t.toml")).expect("valid config");
        assert_eq!(cfg.listen.len(), 2);
        assert_eq!(cfg.pools[0].bdevs, vec!["ram0".to_string()]);
        assert_eq!(cfg.pools[0].cluster_size.as_deref(), Some("256KiB"));
        assert_eq!(cfg.subsystems[0].namespaces[0].nsid, Some(1));
        let uuid = parse_hex16(
            cfg.subsystems[0].namespaces[0]
                .uuid
                .as_deref()
                .expect("uuid"),
        )
        .expect("hex");
        assert_eq!(uuid[0], 0x00);
        assert_eq!(uuid[15], 0xff);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_file_name() {
        let err = Config::parse("corez = 1", Path::new("/etc/ferrite.toml")).expect_err("typo");
        let msg = err.to_string();
        assert!(
            msg.contains("/etc/ferrite.toml") && msg.contains("corez"),
            "{msg}"
        );
    }
}
