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
    /// Logs written after this snapshot start with a header record.
    log_header: bool,
    /// The generation the header of the log after this snapshot names.
    log_generation: u64,
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
    /// Logs written after this snapshot start with a header (none before the header existed).
    #[serde(default)]
    log_header: bool,
    /// The generation the header of the log after it names (0 before generations existed).
    #[serde(default)]
    log_generation: u64,
}

/// A snapshot as loaded.
pub(super) struct Loaded {
    /// The replica it holds.
    pub(super) replica: Replica,
    /// Whether logs written after it start with a header record.
    pub(super) log_header: bool,
    /// The generation that header names.
    pub(super) log_generation: u64,
}

/// Reads the snapshot at `path` into a replica for `origin`; `None` if there is none yet.
pub(super) fn load(path: &Path, origin: Uuid) -> Result<Option<Loaded>, StoreError> {
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
    decode_with_header(&bytes, path, origin).map(Some)
}

/// What follows the JSON document: `\ncrc32 ` and the crc32 of the document in 8 hex
/// digits. JSON that is still valid after a flipped byte inside a value would otherwise load
/// silently. A snapshot without it (written by an older pimesh) is read as before.
const TRAILER: &[u8] = b"\ncrc32 ";

/// The document of a snapshot file, checked against its trailer.
fn checked_document<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8], StoreError> {
    let Some(at) = bytes
        .windows(TRAILER.len())
        .rposition(|w| w == TRAILER)
        .filter(|at| bytes.len() - at <= TRAILER.len() + 9)
    else {
        return Ok(bytes);
    };
    let (doc, trailer) = bytes.split_at(at);
    let digits = std::str::from_utf8(&trailer[TRAILER.len()..])
        .unwrap_or("")
        .trim();
    let actual = crc32fast::hash(doc);
    match u32::from_str_radix(digits, 16) {
        Ok(expected) if expected == actual => Ok(doc),
        _ => Err(StoreError::SnapshotChecksum {
            path: path.to_path_buf(),
            expected: digits.chars().take(8).collect(),
            actual: format!("{actual:08x}"),
        }),
    }
}

/// Reads the bytes of the snapshot at `path` (named in errors) into a replica for `origin`.
pub(super) fn decode(bytes: &[u8], path: &Path, origin: Uuid) -> Result<Replica, StoreError> {
    decode_with_header(bytes, path, origin).map(|loaded| loaded.replica)
}

/// [`decode`], also saying whether logs after this snapshot start with a header.
fn decode_with_header(bytes: &[u8], path: &Path, origin: Uuid) -> Result<Loaded, StoreError> {
    let bytes = checked_document(bytes, path)?;
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
    let (log_header, log_generation) = (snapshot.log_header, snapshot.log_generation);
    Ok(Loaded {
        replica: into_replica(snapshot, origin),
        log_header,
        log_generation,
    })
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

/// The bytes of the snapshot of `replica` (to be written at `path`, named in errors), followed
/// by the log whose header names `log_generation`: a consistent cut, taken on the agent's
/// thread, that another thread writes.
pub(super) fn encode(
    replica: &Replica,
    log_generation: u64,
    path: &Path,
) -> Result<Vec<u8>, StoreError> {
    let snapshot = SnapshotOut {
        format: FORMAT,
        clock: replica.clock.last(),
        version_vector: &replica.seqs.version_vector,
        ahead: &replica.seqs.ahead,
        objects: &replica.objects,
        log_header: true,
        log_generation,
    };
    let mut bytes = serde_json::to_vec(&snapshot).map_err(|source| StoreError::EncodeSnapshot {
        path: path.to_path_buf(),
        source,
    })?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(TRAILER);
    bytes.extend_from_slice(format!("{crc:08x}\n").as_bytes());
    Ok(bytes)
}

/// Writes `bytes` to the temporary file `tmp` and syncs it; renamed over the snapshot after.
pub(super) fn write_temporary(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
