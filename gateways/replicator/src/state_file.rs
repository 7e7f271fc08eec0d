//! Small JSON state files (the secondary's applied point, the initial copy's checkpoint):
//! read with "missing means nothing done yet", written atomically (temp file, fsync, rename).

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads `path` (`what` names it in errors); a missing file is `T::default()`.
pub fn load<T: DeserializeOwned + Default>(path: &Path, what: &str) -> Result<T> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("{what} {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("{what} {}", path.display())),
    }
}

/// Replaces `path` with `value`, durably: a crash leaves the old or the new content, never a mix.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let f = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&f, value)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
