//! Why the replica's store could not load or save it ([`super::Store`]): one variant per
//! file and operation, each saying what to do.

use crate::model::ObjectId;
use std::io;
use std::path::PathBuf;

/// Why the store could not load or save the replica; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store directory could not be created: permissions, or a data disk not mounted.
    #[error("cannot create the replica directory {}: {source} (check that its parent exists and is writable by this user)", .dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The snapshot exists but cannot be read.
    #[error("cannot read the replica snapshot {}: {source} (check its permissions)", .path.display())]
    ReadSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The snapshot is not valid JSON of the expected shape; it is only ever replaced by an
    /// atomic rename, so this is damage from outside (bit rot, an edit by hand).
    #[error("the replica snapshot {} is damaged ({source}); move it aside and restart: the log is still loaded and peers send the rest of the house again", .path.display())]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Where parsing failed.
        source: serde_json::Error,
    },
    /// The snapshot's checksum does not match its contents: damage from outside.
    #[error("the replica snapshot {} is damaged: its checksum is {actual} but it says {expected}; move it aside and restart: the log is still loaded and peers send the rest of the house again", .path.display())]
    SnapshotChecksum {
        /// The snapshot file.
        path: PathBuf,
        /// The checksum the file states.
        expected: String,
        /// The checksum of what it holds.
        actual: String,
    },
    /// The snapshot was written by a pimesh with another snapshot format.
    #[error("the replica snapshot {} has format {found} but this pimesh reads format {expected}; run the pimesh version that wrote it, or move the file aside to fetch the house from peers again", .path.display())]
    SnapshotFormat {
        /// The snapshot file.
        path: PathBuf,
        /// The format in the file.
        found: u32,
        /// The format this build reads.
        expected: u32,
    },
    /// The replica could not be encoded for the snapshot; nothing was written.
    #[error("cannot encode the replica for the snapshot {}: {source}", .path.display())]
    EncodeSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// Writing the snapshot failed; the previous snapshot and the log are untouched.
    #[error("cannot write the replica snapshot {}: {source} (disk full or read-only?); the log still holds every update", .path.display())]
    WriteSnapshot {
        /// The file (or directory) being written.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The log cannot be opened or created.
    #[error("cannot open the replica log {}: {source} (check its permissions)", .path.display())]
    OpenLog {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The log cannot be read back.
    #[error("cannot read the replica log {}: {source}", .path.display())]
    ReadLog {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The log could not be shortened: cutting a torn tail on open, or emptying it after a
    /// snapshot.
    #[error("cannot cut the replica log {} to {len} bytes: {source} (disk read-only?)", .path.display())]
    TruncateLog {
        /// The log file.
        path: PathBuf,
        /// The length it should have had.
        len: u64,
        /// What the OS said.
        source: io::Error,
    },
    /// Appending to the log failed; the updates stay queued in memory and are retried first
    /// on the next append or flush.
    /// The log read at start could not be made durable (see `replay_log`).
    #[error("cannot make the replica log {} durable at start: {source} (disk failing?); refusing to serve what a power cut could still take back", .path.display())]
    SyncLog {
        /// The log file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    #[error("cannot write the replica log {}: {source} (disk full?); {pending} updates are kept in memory and written with the next append", .path.display())]
    WriteLog {
        /// The log file.
        path: PathBuf,
        /// How many updates wait in memory.
        pending: usize,
        /// What the OS said.
        source: io::Error,
    },
    /// An update could not be encoded; none of the updates of that call were queued.
    #[error("cannot encode the update of {object}.{prop} for the replica log: {source}")]
    EncodeUpdate {
        /// The object written.
        object: ObjectId,
        /// The property written.
        prop: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
}
