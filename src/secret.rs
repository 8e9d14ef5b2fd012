//! Secrets of an instance and the small tools around them: random bytes, hex, comparisons in
//! constant time, password hashes, and files only the agent's user can read.
//!
//! Two secrets live in the data dir, both created at the first start and never replaced
//! silently: `credentials` (the password of the instance's own tools, user name `local`) and
//! `instance.key` (the ed25519 key that proves this instance is a member of its mesh).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File in the data dir with the local tools' password.
pub const CREDENTIALS_FILE: &str = "credentials";
/// File in the data dir with the instance's signing key (32 bytes, hex).
pub const KEY_FILE: &str = "instance.key";

/// Why a secret could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is damaged: {why}; restore it from a backup, or remove it to make a new one (a new key means this instance must be invited again)", file.display())]
    Damaged { file: PathBuf, why: String },
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// `N` bytes from the operating system's random source.
pub fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The kernel's getrandom does not fail once the pool is initialised, which it is long
    // before a service starts; a failure here is not something to run on with.
    if getrandom::getrandom(&mut buf).is_err() {
        std::process::abort();
    }
    buf
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Bytes of a hex string, or None if it is not one.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Compares two secrets in time that depends only on their lengths.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random password: 24 hex digits (96 random bits).
pub fn new_password() -> String {
    to_hex(&random::<12>())
}

/// The argon2id hash of `password` with a fresh salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt =
        SaltString::encode_b64(&random::<16>()).map_err(|e| SecretError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Writes `contents` to `path` readable by its owner only (temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &str) -> Result<(), SecretError> {
    let io = |source| SecretError::Io {
        file: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a secret file, or None if it does not exist.
fn read(path: &Path) -> Result<Option<String>, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Io {
            file: path.to_path_buf(),
            source,
        }),
    }
}

/// The local tools' password of the instance in `dir`, created on first use.
pub fn local_password(dir: &Path) -> Result<String, SecretError> {
    let path = dir.join(CREDENTIALS_FILE);
    if let Some(p) = read(&path)? {
        if p.is_empty() {
            return Err(SecretError::Damaged {
                file: path,
                why: "it is empty".into(),
            });
        }
        return Ok(p);
    }
    let p = to_hex(&random::<16>());
    write_private(&path, &p)?;
    Ok(p)
}

/// The local tools' password of the instance in `dir`, if it has one (for the CLI, which
/// never creates it).
pub fn read_local_password(dir: &Path) -> Result<Option<String>, SecretError> {
    read(&dir.join(CREDENTIALS_FILE))
}

/// The signing key of the instance in `dir`, created on first use.
pub fn instance_key(dir: &Path) -> Result<ed25519_dalek::SigningKey, SecretError> {
    let path = dir.join(KEY_FILE);
    if let Some(text) = read(&path)? {
        let bytes: [u8; 32] = from_hex(&text)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SecretError::Damaged {
                file: path.clone(),
                why: "not 64 hex digits".into(),
            })?;
        return Ok(ed25519_dalek::SigningKey::from_bytes(&bytes));
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&random::<32>());
    write_private(&path, &to_hex(&key.to_bytes()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
        assert!(from_hex("é1").is_none());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn secrets_are_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let p1 = local_password(dir.path()).unwrap();
        assert_eq!(local_password(dir.path()).unwrap(), p1);
        let k1 = instance_key(dir.path()).unwrap();
        assert_eq!(instance_key(dir.path()).unwrap().to_bytes(), k1.to_bytes());
        for f in [CREDENTIALS_FILE, KEY_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        std::fs::write(dir.path().join(KEY_FILE), "nope").unwrap();
        let err = instance_key(dir.path()).unwrap_err().to_string();
        assert!(err.contains("instance.key is damaged"), "{err}");
    }
}
