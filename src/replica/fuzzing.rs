//! The store's file decoders on bytes instead of files, for the fuzz targets in `tests/fuzz/`
//! (see `FUZZING.md`). Hidden from the docs: it is no API, and nothing in pimesh calls it.

use super::log::{LOG_FILE, SNAPSHOT_FILE};
use super::record;
use super::{snapshot, Replica, StoreError};
use std::path::Path;
use uuid::Uuid;

/// Decodes `bytes` as [`Store::open`](super::Store::open) decodes `snapshot.json`.
pub fn load_snapshot(bytes: &[u8], origin: Uuid) -> Result<Replica, StoreError> {
    snapshot::decode(bytes, Path::new(SNAPSHOT_FILE), origin)
}

/// Replays `bytes` onto `replica` as [`Store::open`](super::Store::open) replays
/// `updates.log`; returns the length of its whole records (the rest is a torn tail).
pub fn replay_log(replica: &mut Replica, bytes: &[u8]) -> usize {
    record::replay(replica, bytes, Path::new(LOG_FILE)).valid_len
}
