//! Named secrets (SPDK's keyring with its `file` module): a key is added from a file that holds
//! its `DHHC-1:` text and is referred to by name afterwards, so secrets never travel in RPC
//! parameters or show in saved configurations.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::key::DhchapKey;
use crate::AuthError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringEntry {
    pub name: String,
    pub path: PathBuf,
    pub key: DhchapKey,
}

#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, KeyringEntry>,
}

fn err(why: impl Into<String>) -> AuthError {
    AuthError::Keyring(why.into())
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Reads the key file: absolute path, readable by its owner only (as SPDK requires), one
    /// `DHHC-1:` secret.
    pub fn load_file(path: &Path) -> Result<DhchapKey, AuthError> {
        if !path.is_absolute() {
            return Err(err(format!(
                "{}: the key file path must be absolute",
                path.display()
            )));
        }
        let meta = std::fs::metadata(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "{}: mode {:o} lets group or others read the key; chmod 600 it",
                path.display(),
                mode & 0o777
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        DhchapKey::parse(&text).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// `keyring_file_add_key`: a new name only.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(err("a key needs a name"));
        }
        if self.keys.contains_key(name) {
            return Err(err(format!("key {name:?} already exists")));
        }
        let key = Keyring::load_file(path)?;
        self.keys.insert(
            name.to_string(),
            KeyringEntry {
                name: name.to_string(),
                path: path.to_path_buf(),
                key,
            },
        );
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<KeyringEntry, AuthError> {
        self.keys
            .remove(name)
            .ok_or_else(|| err(format!("no key named {name:?}")))
    }

    pub fn get(&self, name: &str) -> Result<&KeyringEntry, AuthError> {
        self.keys
            .get(name)
            .ok_or_else(|| err(format!("no key named {name:?}")))
    }

    pub fn entries(&self) -> impl Iterator<Item = &KeyringEntry> {
        self.keys.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn keys_load_by_name_and_loose_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("ferrite-auth-keyring-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let key = DhchapKey::generate(32, None).unwrap();
        let path = dir.join("host0");
        fs::write(&path, key.to_text() + "\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut ring = Keyring::new();
        let e = ring.add_file("k0", &path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        ring.add_file("k0", &path).unwrap();
        assert_eq!(ring.get("k0").unwrap().key, key);
        assert!(ring.add_file("k0", &path).is_err());
        assert!(ring.add_file("k1", Path::new("relative")).is_err());
        fs::write(&path, "DHHC-1:00:bad:").unwrap();
        assert!(ring
            .add_file("k2", &path)
            .unwrap_err()
            .to_string()
            .contains("decode"));
        ring.remove("k0").unwrap();
        assert!(ring.get("k0").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
