//! `--state-dir`: the running configuration persisted after every accepted change and restored
//! at start. The file is the configuration-file format plus a `version` line, written
//! atomically (temporary file, fsync, rename, fsync of the directory). A file that does not
//! parse or has an unknown version stops the daemon with a message naming it; it is never
//! overwritten.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::Config;

/// Version of the state file format this build reads and writes.
pub const STATE_VERSION: i64 = 1;
pub const STATE_FILE: &str = "state.toml";

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {message} (fix or move it away; ferrited will not overwrite it)")]
    Corrupt { path: PathBuf, message: String },
    #[error("state file {path} has version {found}, this ferrited reads version {STATE_VERSION} (it will not overwrite it)")]
    UnknownVersion { path: PathBuf, found: String },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the state: {0}")]
    Encode(String),
}

/// The state directory and its file.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates the directory if needed.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved configuration; `None` when there is no state file yet.
    pub fn load(&self) -> Result<Option<Config>, StateError> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        parse_state(&text, &path).map(Some)
    }

    /// Writes `config` atomically.
    pub fn save(&self, config: &Config) -> Result<(), StateError> {
        let path = self.file();
        let text = render_state(config)?;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let werr = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Write { path: p, source }
        };
        let mut f = File::create(&tmp).map_err(werr(&tmp))?;
        f.write_all(text.as_bytes()).map_err(werr(&tmp))?;
        f.sync_all().map_err(werr(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(werr(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr(&self.dir))?;
        Ok(())
    }
}

pub fn render_state(config: &Config) -> Result<String, StateError> {
    let body = toml::to_string(config).map_err(|e| StateError::Encode(e.to_string()))?;
    Ok(format!(
        "# ferrited state: written by ferrited after every change; do not edit while it runs\nversion = {STATE_VERSION}\n{body}"
    ))
}

pub fn parse_state(text: &str, path: &Path) -> Result<Config, StateError> {
    let corrupt = |message: String| StateError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| corrupt(e.to_string()))?;
    match table.remove("version") {
        Some(toml::Value::Integer(STATE_VERSION)) => {}
        Some(other) => {
            return Err(StateError::UnknownVersion {
                path: path.to_path_buf(),
                found: other.to_string(),
            })
        }
        None => return Err(corrupt("no version line".into())),
    }
    Config::deserialize_table(table).map_err(|e| corrupt(e.to_string()))
}

impl Config {
    fn deserialize_table(table: toml::Table) -> Result<Config, toml::de::Error> {
        serde::Deserialize::deserialize(toml::Value::Table(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = StateDir::open(dir.path()).expect("open");
        assert!(state.load().expect("empty").is_none());
        let cfg = Config::embedded_default();
        state.save(&cfg).expect("save");
        assert_eq!(state.load().expect("load"), Some(cfg));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(STATE_FILE)]);

        std::fs::write(state.file(), "version = 2\n").expect("write");
        let e = state.load().expect_err("future version");
        assert!(matches!(e, StateError::UnknownVersion { .. }), "{e}");
        assert!(e.to_string().contains(STATE_FILE), "{e}");

        std::fs::write(state.file(), "version = 1\n[[bdev]\n").expect("write");
        let e = state.load().expect_err("corrupt");
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");

        std::fs::write(state.file(), "listen = []\n").expect("write");
        assert!(matches!(state.load(), Err(StateError::Corrupt { .. })));
    }
}
