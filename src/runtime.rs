//! The running agent's advertisement in its data dir, and the lock that keeps it alone there.
//!
//! `pimesh set`, `get` and `move` find the local agent by reading `agent.json` from the data dir:
//! which ports its broker took (they may be the first free ones: `port`, `mqtt5-port` in the
//! clear, `tls-port`, `ws-port` for WebSocket; the web page's `http-port`), its UUID and name. The lock file makes a second agent on the same data
//! dir fail at start instead of corrupting the store.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// File in the data dir with the running agent's [`RuntimeInfo`].
pub const INFO_FILE: &str = "agent.json";
/// File in the data dir that the running agent holds an exclusive lock on.
pub const LOCK_FILE: &str = "agent.lock";

/// What a running agent tells local tools about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RuntimeInfo {
    /// Process id, so tools can tell a stale file from a live agent.
    pub pid: u32,
    /// The instance UUID.
    pub uuid: Uuid,
    /// The instance name.
    pub name: String,
    /// The TCP port the embedded broker serves MQTT 3.1.1 on in the clear; none when the
    /// plaintext ports are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The TCP port it serves MQTT 5 on in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt5_port: Option<u16>,
    /// The TCP port it serves MQTT over TLS on (certificates from the mesh CA in `ca.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_port: Option<u16>,
    /// The TCP port it serves MQTT over WebSocket on (`ws`, and `wss` with the mesh CA); none
    /// when `[broker] websocket` is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_port: Option<u16>,
    /// The port of the floor-plan page (`[web]`): HTTPS, or plain HTTP with `[web] tls =
    /// false`; none when the page is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// The base topic of the public interface.
    pub base_topic: String,
}

/// Why the runtime file or lock could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("another pimesh agent is already running with data dir {}; stop it or use another --data-dir", dir.display())]
    Locked { dir: PathBuf },
    #[error("no pimesh agent is running with data dir {} (no {INFO_FILE}); start one with `pimesh run`, or name one with --via HOST:PORT", dir.display())]
    NotRunning { dir: PathBuf },
    #[error("the pimesh agent of data dir {} (pid {pid}) is not running any more; start it with `pimesh run`", dir.display())]
    Stale { dir: PathBuf, pid: u32 },
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is damaged ({source}); it is rewritten when the agent starts", file.display())]
    Damaged {
        file: PathBuf,
        source: serde_json::Error,
    },
}

/// Holds the data-dir lock for as long as it lives.
#[derive(Debug)]
pub struct DataDirLock {
    /// The locked file; the OS releases the lock when it is closed, also on kill -9.
    _file: File,
}

/// Takes the exclusive lock on `dir`, failing at once if another agent holds it.
pub fn lock(dir: &Path) -> Result<DataDirLock, RuntimeError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| RuntimeError::Io {
            file: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(RuntimeError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(RuntimeError::Io { file: path, source }),
    }
}

impl RuntimeInfo {
    /// Publishes this info in `dir` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), RuntimeError> {
        let file = dir.join(INFO_FILE);
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::identity::write_atomically(&file, &text)
            .map_err(|source| RuntimeError::Io { file, source })
    }

    /// Reads the info of the agent running on `dir`, checking that its process is alive.
    pub fn read(dir: &Path) -> Result<RuntimeInfo, RuntimeError> {
        let file = dir.join(INFO_FILE);
        let text = match std::fs::read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotRunning {
                    dir: dir.to_path_buf(),
                })
            }
            Err(source) => return Err(RuntimeError::Io { file, source }),
        };
        let info: RuntimeInfo =
            serde_json::from_slice(&text).map_err(|source| RuntimeError::Damaged {
                file: file.clone(),
                source,
            })?;
        if !Path::new(&format!("/proc/{}", info.pid)).exists() {
            return Err(RuntimeError::Stale {
                dir: dir.to_path_buf(),
                pid: info.pid,
            });
        }
        Ok(info)
    }

    /// Removes the advertisement on a clean stop.
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(INFO_FILE));
    }
}

/// File in the data dir with the kernel boot id of the agent's last start.
pub const BOOT_FILE: &str = "boot-id";

/// Whether the machine is still in the boot the agent last started in (then output pins still
/// hold what the agent left on them; after a reboot they hold their power-on defaults), and
/// records the current boot. False when the kernel does not say.
pub fn same_boot(dir: &Path) -> bool {
    let now = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let path = dir.join(BOOT_FILE);
    let before = std::fs::read_to_string(&path).ok();
    let Some(now) = now else {
        return false;
    };
    if let Err(e) = std::fs::write(&path, &now) {
        tracing::warn!(file = %path.display(), error = %e, "cannot record the boot id; after the next restart, restored relays follow the store, not their pins");
    }
    before.is_some_and(|b| b.trim() == now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_a_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err();
        assert!(matches!(err, RuntimeError::Locked { .. }), "{err}");
    }

    #[test]
    fn info_round_trips_and_stale_pid_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            RuntimeInfo::read(dir.path()),
            Err(RuntimeError::NotRunning { .. })
        ));
        let mut info = RuntimeInfo {
            pid: std::process::id(),
            uuid: Uuid::new_v4(),
            name: "a".into(),
            port: Some(1883),
            mqtt5_port: Some(1884),
            tls_port: Some(8883),
            ws_port: Some(9001),
            http_port: Some(8080),
            base_topic: "pimesh".into(),
        };
        info.write(dir.path()).unwrap();
        assert_eq!(RuntimeInfo::read(dir.path()).unwrap(), info);
        info.pid = u32::MAX - 1;
        info.write(dir.path()).unwrap();
        assert!(matches!(
            RuntimeInfo::read(dir.path()),
            Err(RuntimeError::Stale { .. })
        ));
    }
}
