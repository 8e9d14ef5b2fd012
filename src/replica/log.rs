//! Persistence of the replica: a snapshot plus an append-only log of updates since it.
//!
//! The directory holds `snapshot.json` (see `snapshot.rs`) and `updates.log`, a sequence of
//! checksummed records (see `record.rs`). Opening loads the snapshot, then replays the log on
//! top; replay is idempotent, so a crash between writing a snapshot and emptying the log only
//! replays updates the snapshot already holds. A torn tail left by a kill or a power cut is cut
//! off with a warning; a damaged record in the middle is skipped with an error, and the peers
//! supply it again.
//!
//! Appends are durable when they return: one write and one fsync per call, however many
//! updates it carries. [`Store::write`] is the other half of group commit: it hands records
//! to the kernel at once (they survive the process being killed) and [`Store::flush`] makes
//! everything written so far durable with one fsync. When the disk refuses (full, read-only,
//! or an fsync that fails and may have dropped the written pages), the encoded records stay in
//! memory and are written again, in order, ahead of the next write, so nothing is lost while
//! the process lives.

use super::record;
use super::snapshot;
use super::{Replica, Update};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Name of the log file inside the store directory.
pub(super) const LOG_FILE: &str = "updates.log";
/// Name of the snapshot file inside the store directory.
pub(super) const SNAPSHOT_FILE: &str = "snapshot.json";
/// Name of the snapshot being written; only ever renamed over [`SNAPSHOT_FILE`].
const SNAPSHOT_TMP: &str = "snapshot.json.tmp";

/// Below this many records the log is never worth compacting.
const COMPACT_MIN_RECORDS: usize = 1_000;
/// The log is compacted once it holds this many times more records than there are registers.
const COMPACT_RATIO: usize = 4;

#[path = "store_error.rs"]
mod error;
#[path = "log_file.rs"]
mod file;
pub use error::StoreError;
pub(super) use file::LogFile;
pub use file::SyncTicket;

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("durable_len", &self.durable_len)
            .field("written_len", &self.written_len)
            .field("records", &self.records)
            .field("pending", &self.pending_count)
            .finish_non_exhaustive()
    }
}

/// The on-disk home of one replica: its snapshot, its log, and the updates waiting for the disk.
pub struct Store {
    /// The store directory, synced after renames.
    dir: PathBuf,
    /// The log file's path, for error messages.
    log_path: PathBuf,
    /// The snapshot file's path.
    snapshot_path: PathBuf,
    /// The open log.
    file: Box<dyn LogFile>,
    /// Bytes of the log known to be on disk (synced).
    durable_len: u64,
    /// Bytes of the log handed to the kernel, whole records only; the next write starts here,
    /// overwriting whatever a failed write may have left.
    written_len: u64,
    /// The records between `durable_len` and `written_len`, kept until an fsync succeeds:
    /// if it fails, the kernel may have dropped them, so they are written again.
    unsynced: Vec<u8>,
    /// How many updates `unsynced` holds.
    unsynced_count: usize,
    /// Records in the log, to tell when a compaction pays.
    records: usize,
    /// Encoded records not yet written, in order.
    pending: Vec<u8>,
    /// How many updates `pending` holds.
    pending_count: usize,
    /// The last write or fsync failed, and none has succeeded since.
    refused: bool,
    /// An fsync started by [`Store::begin_sync`] has not ended.
    in_flight: bool,
    /// Counts synchronous flushes and compactions, which settle any fsync in flight.
    generation: u64,
    /// Why our own updates since the snapshot may be missing from what was loaded (the log
    /// was emptied, deleted or replaced from outside); none when the log was whole.
    lost: Option<String>,
}

impl Store {
    /// Opens (creating) `<dir>` and loads snapshot + log into a Replica for `origin`.
    pub fn open(dir: &Path, origin: Uuid) -> Result<(Store, Replica), StoreError> {
        Self::open_with(dir, origin, |file| Box::new(file))
    }

    /// [`Store::open`], with the log file wrapped by `wrap` (tests inject failures there).
    pub(super) fn open_with(
        dir: &Path,
        origin: Uuid,
        wrap: impl FnOnce(File) -> Box<dyn LogFile>,
    ) -> Result<(Store, Replica), StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let log_path = dir.join(LOG_FILE);
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(SNAPSHOT_TMP);
        if fs::remove_file(&tmp).is_ok() {
            tracing::info!(file = %tmp.display(), "removed a snapshot left half-written by a crash");
        }

        let (mut replica, header_expected) = match snapshot::load(&snapshot_path, origin)? {
            Some(loaded) => (loaded.replica, loaded.log_header),
            None => (Replica::new(origin), false),
        };
        let mut lost = None;
        let from_snapshot = replica.register_count();

        let open_failed = |source| StoreError::OpenLog {
            path: log_path.clone(),
            source,
        };
        let existed = log_path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(open_failed)?;
        if !existed {
            snapshot::sync_dir(dir).map_err(open_failed)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| StoreError::ReadLog {
                path: log_path.clone(),
                source,
            })?;

        let scan = record::replay(&mut replica, &bytes, &log_path);
        let valid_len = u64::try_from(scan.valid_len).unwrap_or(u64::MAX);
        if scan.valid_len == 0 && !bytes.is_empty() && !record::looks_torn(&bytes) {
            // Not one valid record, and more than an interrupted write leaves: this is
            // damage, not a torn write. Keep it for inspection before starting afresh.
            let aside = dir.join(format!("{LOG_FILE}.damaged-{}", crate::clock::now_ms()));
            let kept = fs::write(&aside, &bytes).and_then(|()| snapshot::sync_dir(dir));
            tracing::error!(
                file = %log_path.display(),
                bytes = bytes.len(),
                kept_as = %aside.display(),
                kept = kept.is_ok(),
                "the store's log holds no valid record at all: it is damaged, not torn by a crash; it is kept aside and the house comes from the snapshot and from peers"
            );
            if kept.is_err() {
                return Err(StoreError::ReadLog {
                    path: log_path.clone(),
                    source: io::Error::other(
                        "a damaged log could not be kept aside; refusing to cut it",
                    ),
                });
            }
            lost = Some(format!(
                "the log {} held no valid record and was kept aside",
                log_path.display()
            ));
        } else if header_expected && !scan.header {
            lost = Some(format!(
                "the log {} lacks the header every log after a snapshot starts with: it was emptied, deleted or replaced",
                log_path.display()
            ));
        }
        if let Some(why) = &lost {
            tracing::error!(
                "{why}; this instance's own changes since the snapshot are gone from this disk, and it makes no new change until a peer has sent them back"
            );
        }
        if scan.valid_len < bytes.len() {
            tracing::warn!(
                file = %log_path.display(),
                "torn record at byte {valid_len} (an interrupted write); cutting {} bytes and keeping everything before it",
                bytes.len() - scan.valid_len
            );
            file.set_len(valid_len)
                .and_then(|()| file.sync_all())
                .map_err(|source| StoreError::TruncateLog {
                    path: log_path.clone(),
                    len: valid_len,
                    source,
                })?;
        }
        tracing::info!(
            dir = %dir.display(),
            objects = replica.len(),
            snapshot_registers = from_snapshot,
            log_records = scan.updates.len(),
            "replica loaded"
        );

        let mut store = Store {
            lost,
            dir: dir.to_path_buf(),
            log_path,
            snapshot_path,
            file: wrap(file),
            durable_len: valid_len,
            written_len: valid_len,
            unsynced: Vec::new(),
            unsynced_count: 0,
            records: scan.updates.len() + scan.damaged.len() + scan.unreadable.len(),
            pending: Vec::new(),
            pending_count: 0,
            refused: false,
            in_flight: false,
            generation: 0,
        };
        if store.lost.is_some() && store.written_len == 0 {
            // So the next start finds a whole log again.
            store.start_log()?;
        }
        Ok((store, replica))
    }

    /// Appends updates durably (write + fsync before returning Ok). On error (e.g. disk full) the updates stay
    /// queued in memory and are written, in order, ahead of the next append or flush, so nothing is lost while the process lives.
    ///
    /// So after a `WriteLog` error the caller should still apply the updates: they are
    /// accepted, only not yet durable. An `EncodeUpdate` error is the exception: nothing of
    /// that call was queued.
    pub fn append(&mut self, updates: &[Update]) -> Result<(), StoreError> {
        self.queue(updates)?;
        self.flush()
    }

    /// Queues updates without writing them: they go to disk with the next `append` or
    /// `flush`. For updates replicated from peers, whose origin already holds them durably
    /// and which a sync fetches again after a crash, so they need not cost an fsync each.
    pub fn queue(&mut self, updates: &[Update]) -> Result<(), StoreError> {
        let mut encoded = Vec::new();
        for u in updates {
            record::encode(u, &mut encoded).map_err(|source| StoreError::EncodeUpdate {
                object: u.object.clone(),
                prop: u.prop.clone(),
                source,
            })?;
        }
        if self.pending.is_empty() {
            self.pending = encoded;
        } else {
            self.pending.extend_from_slice(&encoded);
        }
        self.pending_count += updates.len();
        Ok(())
    }

    /// Queues updates and hands them to the kernel now, without waiting for the disk: they
    /// survive the process being killed, and the next [`Store::flush`] makes them durable.
    /// On a write error they stay queued, as with [`Store::append`].
    pub fn write(&mut self, updates: &[Update]) -> Result<(), StoreError> {
        self.queue(updates)?;
        self.write_pending()
    }

    /// Writes the queued updates after what is already written, without syncing.
    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.file.write_at(self.written_len, &self.pending) {
            Ok(()) => {
                self.written_len += u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
                self.records += self.pending_count;
                // Moved, not appended: `pending` would keep the capacity of the biggest
                // write ever queued (the whole house at a first start) for good.
                let written = std::mem::take(&mut self.pending);
                if self.unsynced.is_empty() {
                    self.unsynced = written;
                } else {
                    self.unsynced.extend_from_slice(&written);
                }
                self.unsynced_count += self.pending_count;
                self.pending_count = 0;
                self.refused = false;
                Ok(())
            }
            Err(source) => {
                // Best effort: leave the file ending on a whole record in case the process dies
                // before the retry. If this fails too, the retry still writes from
                // `written_len`, and a reopen cuts the torn tail.
                let _ = self.file.set_len(self.written_len);
                self.refused = true;
                Err(StoreError::WriteLog {
                    path: self.log_path.clone(),
                    pending: self.pending_count + self.unsynced_count,
                    source,
                })
            }
        }
    }

    /// Writes the queued updates and syncs everything written, if anything is not yet
    /// durable; what `append` does after queueing.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        if self.written_len == self.durable_len {
            return Ok(());
        }
        // Whatever fsync is in flight, this one covers more.
        self.generation += 1;
        self.in_flight = false;
        let result = self.file.sync();
        self.synced(
            self.written_len,
            self.unsynced.len(),
            self.unsynced_count,
            result,
        )
    }

    /// Writes the queued updates and starts an fsync of everything written, to run off the
    /// caller's thread (group commit: the agent goes on meanwhile, and what it writes during
    /// the fsync goes with the next one). None when everything written is durable or an
    /// fsync is already in flight. Ends with [`Store::end_sync`].
    pub fn begin_sync(&mut self) -> Result<Option<SyncTicket>, StoreError> {
        if self.in_flight {
            return Ok(None);
        }
        self.write_pending()?;
        if self.written_len == self.durable_len {
            return Ok(None);
        }
        self.in_flight = true;
        let handle = self.file.sync_handle();
        let done = handle.is_none().then(|| self.file.sync());
        Ok(Some(SyncTicket {
            len: self.written_len,
            bytes: self.unsynced.len(),
            count: self.unsynced_count,
            generation: self.generation,
            handle,
            done,
        }))
    }

    /// Whether an fsync started by [`Store::begin_sync`] has not ended.
    pub fn syncing(&self) -> bool {
        self.in_flight
    }

    /// Ends the fsync of `ticket` with its result: what it covered is durable, or, if it
    /// failed, written again with the next write.
    pub fn end_sync(
        &mut self,
        ticket: SyncTicket,
        result: io::Result<()>,
    ) -> Result<(), StoreError> {
        if ticket.generation != self.generation {
            // A flush or compaction since covered it.
            return Ok(());
        }
        self.in_flight = false;
        self.synced(ticket.len, ticket.bytes, ticket.count, result)
    }

    /// Books the result of an fsync that covered the log up to `len`: the first `bytes` of
    /// `unsynced`, holding `count` updates.
    fn synced(
        &mut self,
        len: u64,
        bytes: usize,
        count: usize,
        result: io::Result<()>,
    ) -> Result<(), StoreError> {
        match result {
            Ok(()) => {
                self.durable_len = len;
                self.unsynced.drain(..bytes.min(self.unsynced.len()));
                if self.unsynced.is_empty() {
                    // Gives back what a burst of writes grew it to.
                    self.unsynced = Vec::new();
                }
                self.unsynced_count = self.unsynced_count.saturating_sub(count);
                self.refused = false;
                Ok(())
            }
            Err(source) => {
                // A failed fsync may have dropped the written pages: write them again next
                // time, from the last durable byte, ahead of anything queued since.
                let count = self.unsynced_count;
                let mut again = std::mem::take(&mut self.unsynced);
                again.append(&mut self.pending);
                self.pending = again;
                self.pending_count += count;
                self.records = self.records.saturating_sub(count);
                self.unsynced_count = 0;
                self.written_len = self.durable_len;
                let _ = self.file.set_len(self.durable_len);
                self.refused = true;
                Err(StoreError::WriteLog {
                    path: self.log_path.clone(),
                    pending: self.pending_count,
                    source,
                })
            }
        }
    }

    /// Whether the disk refuses: the last write or fsync failed and none succeeded since.
    /// Updates merely queued (a peer's, waiting for the next write) or written and waiting for
    /// the event's fsync do not count.
    pub fn refusing(&self) -> bool {
        self.refused
    }

    /// How many updates are not yet durable.
    pub fn pending(&self) -> usize {
        self.pending_count + self.unsynced_count
    }

    /// True when the log holds many more records than the replica has registers.
    pub fn should_compact(&self, replica: &Replica) -> bool {
        self.records >= COMPACT_MIN_RECORDS
            && self.records > replica.register_count().saturating_mul(COMPACT_RATIO)
    }

    /// Writes a snapshot (temp file, fsync, rename, fsync dir) then starts an empty log.
    ///
    /// Updates still queued are written to the new log afterwards, whether or not `replica`
    /// already holds them: replaying one twice is harmless, losing one is not.
    pub fn compact(&mut self, replica: &Replica) -> Result<(), StoreError> {
        snapshot::write(
            &self.dir,
            &self.snapshot_path,
            &self.dir.join(SNAPSHOT_TMP),
            replica,
        )?;
        let log_path = self.log_path.clone();
        let truncate_failed = move |source| StoreError::TruncateLog {
            path: log_path.clone(),
            len: 0,
            source,
        };
        // The snapshot holds every update written so far: none needs writing again.
        self.unsynced.clear();
        self.unsynced_count = 0;
        self.records = 0;
        self.start_log().map_err(|e| match e {
            StoreError::TruncateLog { source, .. } => truncate_failed(source),
            other => other,
        })?;
        self.flush()
    }

    /// Makes the log hold only its header, durably. The header overwrites the start of the
    /// old log before the log is cut after it, so a crash in between never leaves an empty log
    /// (which would read as one emptied from outside), only the header and old records the
    /// snapshot already holds.
    fn start_log(&mut self) -> Result<(), StoreError> {
        let header = record::header();
        let len = header.len() as u64;
        let failed = |source| StoreError::TruncateLog {
            path: self.log_path.clone(),
            len,
            source,
        };
        self.generation += 1;
        self.in_flight = false;
        self.file.write_at(0, &header).map_err(failed)?;
        self.file.set_len(len).map_err(failed)?;
        self.file.sync().map_err(failed)?;
        self.durable_len = len;
        self.written_len = len;
        Ok(())
    }

    /// Why our own updates since the snapshot may be missing: the log was emptied, deleted
    /// or replaced from outside (none when it was whole).
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "log_fault_tests.rs"]
mod fault_tests;
