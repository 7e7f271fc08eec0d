//! The replicator's configuration file (TOML).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Which side this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ships the primary's journal.
    Primary,
    /// Receives and applies.
    Secondary,
}

/// `ferrite-replicator --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This side's role.
    pub role: Role,
    /// The consistency group.
    pub group: u32,
    /// Unix socket serving the status as JSON.
    #[serde(default)]
    pub status_socket: Option<PathBuf>,
    /// A file holding the link's pre-shared key (64 hex digits, the same on both sides): the
    /// peers authenticate each other and every frame is encrypted. Without it the link is in
    /// the clear and unauthenticated.
    #[serde(default)]
    pub psk_file: Option<PathBuf>,
    /// Records in flight (the credit the secondary gives).
    #[serde(default = "default_window")]
    pub window: u64,
    /// Primary: the journal stream endpoint of the primary ferrited.
    #[serde(default)]
    pub journal_socket: Option<PathBuf>,
    /// Primary: the secondary replicator.
    #[serde(default)]
    pub secondary: Option<SocketAddr>,
    /// Primary: TCP connections to the secondary.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Primary: pause between pulls when the journal had nothing new, in microseconds (in
    /// sync mode it adds up to this much to a write's latency).
    #[serde(default = "default_idle_pull")]
    pub idle_pull_us: u64,
    /// Primary: copy the group's namespaces to the secondary before shipping the journal
    /// (a new pair; see [`crate::resync`]).
    #[serde(default)]
    pub copy: Option<crate::resync::CopyConfig>,
    /// Primary: retransmit timeout in milliseconds.
    #[serde(default = "default_rto")]
    pub rto_ms: u64,
    /// Secondary: where to accept the primary.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Secondary: the secondary ferrited's NVMe/TCP address.
    #[serde(default)]
    pub target: Option<SocketAddr>,
    /// Secondary: its subsystem.
    #[serde(default)]
    pub nqn: Option<String>,
    /// Secondary: group namespace -> target namespace (default: the same number).
    #[serde(default)]
    pub namespaces: Vec<(u32, u32)>,
    /// Secondary: where the applied point is kept.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
}

fn default_window() -> u64 {
    256
}

fn default_connections() -> usize {
    2
}

fn default_idle_pull() -> u64 {
    1000
}

fn default_rto() -> u64 {
    500
}

/// A configuration that names what its role needs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML error.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A field the role needs is missing or out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses and checks.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text)?;
        let need = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid(format!(
                    "a {:?} replicator needs {what}",
                    c.role
                )))
            }
        };
        if c.group == 0 {
            return Err(ConfigError::Invalid("group must be at least 1".into()));
        }
        if c.window == 0 || c.window > 1 << 20 {
            return Err(ConfigError::Invalid("window must be 1..=1048576".into()));
        }
        match c.role {
            Role::Primary => {
                need(c.journal_socket.is_some(), "journal_socket")?;
                need(c.secondary.is_some(), "secondary")?;
                need((1..=64).contains(&c.connections), "connections in 1..=64")?;
                need(c.rto_ms > 0, "rto_ms > 0")?;
                need(
                    (50..=1_000_000).contains(&c.idle_pull_us),
                    "idle_pull_us in 50..=1000000",
                )?;
                if let Some(copy) = &c.copy {
                    copy.check().map_err(ConfigError::Invalid)?;
                }
            }
            Role::Secondary => {
                need(
                    c.copy.is_none(),
                    "no [copy] (the primary runs the initial copy)",
                )?;
                need(c.listen.is_some(), "listen")?;
                need(c.target.is_some(), "target")?;
                need(c.nqn.is_some(), "nqn")?;
                need(c.state_file.is_some(), "state_file")?;
            }
        }
        Ok(c)
    }

    /// The link key from `psk_file`, if set.
    pub fn psk(&self) -> Result<Option<ferrite_link_crypto::Psk>, ConfigError> {
        let Some(p) = &self.psk_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(p)
            .map_err(|e| ConfigError::Invalid(format!("psk_file {}: {e}", p.display())))?;
        ferrite_link_crypto::Psk::from_hex(&text)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("psk_file {}: {e}", p.display())))
    }

    /// The target namespace of a group namespace.
    pub fn target_nsid(&self, nsid: u32) -> u32 {
        self.namespaces
            .iter()
            .find(|(g, _)| *g == nsid)
            .map_or(nsid, |(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_need_their_fields() {
        let p = Config::parse(
            "role = \"primary\"\ngroup = 1\njournal_socket = \"/j\"\nsecondary = \"127.0.0.1:1\"",
        )
        .expect("primary");
        assert_eq!((p.connections, p.window, p.rto_ms), (2, 256, 500));
        let e = Config::parse("role = \"secondary\"\ngroup = 1").expect_err("missing");
        assert!(e.to_string().contains("needs listen"), "{e}");
        assert!(Config::parse("role = \"primary\"\ngroup = 0").is_err());
        assert!(Config::parse("role = \"tertiary\"\ngroup = 1").is_err());
        let s = Config::parse(
            "role = \"secondary\"\ngroup = 2\nlisten = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\nnqn = \"n\"\nstate_file = \"/s\"\nnamespaces = [[1, 5]]",
        )
        .expect("secondary");
        assert_eq!((s.target_nsid(1), s.target_nsid(2)), (5, 2));
    }
}
