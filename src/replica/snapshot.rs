//! The snapshot file: the whole replica as one JSON document, replaced atomically.
//!
//! It holds every register, the version vector, the seqs waiting above a gap and the clock's
//! last stamp, so a restarted instance continues its stamps and seqs after what it issued
//! before. It is written to a temporary file, synced, renamed over the old one and the
//! directory synced, so a power cut leaves either the old snapshot or the new one.

use super::log::StoreError;
use super::seqs::Seqs;
use super::{Object, Replica, VersionVector};
use crate::clock::{Hlc, Stamp};
use crate::model::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use uuid::Uuid;

/// The format this code writes and reads; bumped on any incompatible change.
const FORMAT: u32 = 1;

/// The snapshot as written, borrowing from the replica so 10,000 objects are not copied.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    /// [`FORMAT`], checked on load.
    format: u32,
    /// The clock's last stamp.
    clock: Stamp,
    /// The version vector.
    version_vector: &'a VersionVector,
    /// Seqs held above a gap.
    ahead: &'a BTreeMap<Uuid, BTreeSet<u64>>,
    /// Every object with every register.
    objects: &'a BTreeMap<ObjectId, Object>,
}

/// The snapshot as read.
#[derive(Deserialize)]
struct SnapshotIn {
    /// Must equal [`FORMAT`].
    format: u32,
    /// Restored into the clock.
    clock: Stamp,
    /// The version vector.
    version_vector: VersionVector,
    /// Seqs held above a gap.
    #[serde(default)]
    ahead: BTreeMap<Uuid, BTreeSet<u64>>,
    /// Every object with every register.
    objects: BTreeMap<ObjectId, Object>,
}

/// Reads the snapshot at `path` into a replica for `origin`; `None` if there is none yet.
pub(super) fn load(path: &Path, origin: Uuid) -> Result<Option<Replica>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::ReadSnapshot {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    decode(&bytes, path, origin).map(Some)
}

/// Reads the bytes of the snapshot at `path` (named in errors) into a replica for `origin`.
pub(super) fn decode(bytes: &[u8], path: &Path, origin: Uuid) -> Result<Replica, StoreError> {
    let wrong_format = |found| StoreError::SnapshotFormat {
        path: path.to_path_buf(),
        found,
        expected: FORMAT,
    };
    let snapshot: SnapshotIn = match serde_json::from_slice(bytes) {
        Ok(snapshot) => snapshot,
        Err(source) => {
            // Another format is named as such rather than as damage.
            #[derive(Deserialize)]
            struct Format {
                format: u32,
            }
            return Err(match serde_json::from_slice::<Format>(bytes) {
                Ok(other) if other.format != FORMAT => wrong_format(other.format),
                _ => StoreError::CorruptSnapshot {
                    path: path.to_path_buf(),
                    source,
                },
            });
        }
    };
    if snapshot.format != FORMAT {
        return Err(wrong_format(snapshot.format));
    }
    Ok(into_replica(snapshot, origin))
}

/// Rebuilds the replica, restoring the clock past every stamp it holds.
fn into_replica(snapshot: SnapshotIn, origin: Uuid) -> Replica {
    let mut clock = Hlc::new(origin);
    clock.restore(&snapshot.clock);
    let mut registers = 0;
    let mut keys = std::collections::HashMap::new();
    for (id, object) in &snapshot.objects {
        for register in object.props.values() {
            clock.restore(&register.stamp);
            registers += 1;
        }
        if let Some(member) = super::trust::member_of(id) {
            let key = object
                .text(super::trust::KEY_PROP)
                .and_then(super::trust::parse_key);
            if let Some(key) = key {
                keys.insert(member, key);
            }
        }
    }
    Replica {
        origin,
        clock,
        objects: snapshot.objects,
        seqs: Seqs {
            version_vector: snapshot.version_vector,
            ahead: snapshot.ahead,
        },
        registers,
        max_ahead_ms: crate::clock::DEFAULT_MAX_AHEAD_MS,
        signer: None,
        keys,
    }
}

/// Writes `replica` as the snapshot at `path`, atomically: temporary file `tmp`, sync,
/// rename, sync of `dir`.
pub(super) fn write(
    dir: &Path,
    path: &Path,
    tmp: &Path,
    replica: &Replica,
) -> Result<(), StoreError> {
    let snapshot = SnapshotOut {
        format: FORMAT,
        clock: replica.clock.last(),
        version_vector: &replica.seqs.version_vector,
        ahead: &replica.seqs.ahead,
        objects: &replica.objects,
    };
    let bytes = serde_json::to_vec(&snapshot).map_err(|source| StoreError::EncodeSnapshot {
        path: path.to_path_buf(),
        source,
    })?;
    let failed = |at: &Path| {
        let at = at.to_path_buf();
        move |source| StoreError::WriteSnapshot { path: at, source }
    };
    let mut file = File::create(tmp).map_err(failed(tmp))?;
    file.write_all(&bytes).map_err(failed(tmp))?;
    file.sync_all().map_err(failed(tmp))?;
    drop(file);
    fs::rename(tmp, path).map_err(failed(path))?;
    sync_dir(dir).map_err(failed(dir))
}

/// Makes a rename or a new file in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
