//! Who this instance is: a UUID made on first start and kept in the data dir, and a human name.
//!
//! The UUID tags every change the instance makes, so it must never change for a data dir and
//! never be shared by two data dirs. A damaged id file is an error, not a reason to mint a new
//! identity: a new UUID would make the rest of the mesh see a stranger holding our objects.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// File in the data dir that holds the instance UUID.
pub const ID_FILE: &str = "instance-id";

/// Why the instance identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create data dir {}: {source}; choose another with --data-dir", dir.display())]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read instance id {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("instance id file {} does not hold a UUID ({found:?}); restore it from a backup, or delete it to make this a new instance", file.display())]
    Invalid { file: PathBuf, found: String },
    #[error("cannot write instance id {}: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the instance UUID from `data_dir`, creating the dir and a fresh UUID v4 on first start.
pub fn load_or_create(data_dir: &Path) -> Result<Uuid, IdentityError> {
    fs::create_dir_all(data_dir).map_err(|source| IdentityError::DataDir {
        dir: data_dir.to_path_buf(),
        source,
    })?;
    let file = data_dir.join(ID_FILE);
    match fs::read_to_string(&file) {
        Ok(text) => Uuid::parse_str(text.trim()).map_err(|_| IdentityError::Invalid {
            file: file.clone(),
            found: text.chars().take(60).collect(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            write_atomically(&file, format!("{id}\n").as_bytes())
                .map_err(|source| IdentityError::Write { file, source })?;
            Ok(id)
        }
        Err(source) => Err(IdentityError::Read { file, source }),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one whole:
/// temp file in the same dir, fsync, rename, fsync the dir.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = fs::File::open(dir) {
        // Persisting the rename itself; a failure here only weakens durability, it loses nothing.
        let _ = d.sync_all();
    }
    Ok(())
}

/// The default instance name: the machine's hostname, reduced to characters that are safe in
/// topics and logs. Falls back to `pimesh` when the hostname cannot be read.
pub fn default_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "pimesh".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_and_later_starts_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get_version_num(), 4);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(a, load_or_create(other.path()).unwrap());
    }

    #[test]
    fn damaged_id_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(ID_FILE), "not-a-uuid").unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("does not hold a UUID (\"not-a-uuid\")"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(ID_FILE)).unwrap(),
            "not-a-uuid"
        );
    }

    #[test]
    fn default_name_is_topic_safe() {
        let n = default_name();
        assert!(!n.is_empty());
        assert!(n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    }
}
