//! Persistence of the replica: a snapshot plus an append-only log of updates since it.
//!
//! The directory holds `snapshot.json` (see `snapshot.rs`) and `updates.log`, a sequence of
//! checksummed records (see `record.rs`); during a compaction, also `updates.next.log`, where
//! appends go meanwhile (see `compaction.rs`). Opening (`store_open.rs`) loads the snapshot,
//! then replays the logs on top; replay is idempotent, so a crash inside a compaction only
//! replays updates the snapshot may already hold. A torn tail left by a kill or a power cut is
//! cut off with a warning; a damaged record in the middle is skipped with an error, and the
//! peers supply it again.
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
use std::io;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Name of the log file inside the store directory.
pub(super) const LOG_FILE: &str = "updates.log";
/// Name of the log appends go to while a compaction runs; renamed over [`LOG_FILE`] once the
/// snapshot holds everything in that.
pub(super) const SPARE_FILE: &str = "updates.next.log";
/// Name of the snapshot file inside the store directory.
pub(super) const SNAPSHOT_FILE: &str = "snapshot.json";
/// Name of the snapshot being written; only ever renamed over [`SNAPSHOT_FILE`].
const SNAPSHOT_TMP: &str = "snapshot.json.tmp";

#[path = "compaction.rs"]
mod compaction;
#[path = "store_error.rs"]
mod error;
#[path = "log_file.rs"]
mod file;
#[path = "store_open.rs"]
mod open;
pub use compaction::CompactionJob;
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
            .field("log_generation", &self.log_generation)
            .field("compacting", &self.compacting)
            .finish_non_exhaustive()
    }
}

/// The on-disk home of one replica: its snapshot, its log, and the updates waiting for the disk.
pub struct Store {
    /// The store directory, synced after renames.
    dir: PathBuf,
    /// The path of the log appends go to, for error messages.
    log_path: PathBuf,
    /// The snapshot file's path.
    snapshot_path: PathBuf,
    /// The open log appends go to.
    file: Box<dyn LogFile>,
    /// Wraps a log file the store opens (tests inject failures there): the spare of a
    /// compaction fails as the first log does.
    wrap: open::Wrap,
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
    /// Counts synchronous flushes and log switches, which settle any fsync in flight.
    generation: u64,
    /// The `generation` of the last synchronous flush that succeeded: an fsync that began
    /// before it is covered by it; one settled by a log switch alone is not.
    flushed: u64,
    /// The generation named by the header of the log appends go to; the next compaction's
    /// spare names the next one.
    log_generation: u64,
    /// The old log while appends go to the spare: a compaction started and its snapshot is
    /// not yet known to hold everything in that log.
    older: Option<PathBuf>,
    /// Whether the log's own entry in the directory is durable (not yet for a new spare).
    entry_synced: bool,
    /// A compaction's job is running on another thread.
    compacting: bool,
    /// An interrupted compaction found at open is to be finished at the next chance.
    finish_due: bool,
    /// Why our own updates since the snapshot may be missing from what was loaded (the log
    /// was emptied, deleted or replaced from outside); none when the log was whole.
    lost: Option<String>,
}

impl Store {
    /// Opens (creating) `<dir>` and loads snapshot + logs into a Replica for `origin`.
    pub fn open(dir: &Path, origin: Uuid) -> Result<(Store, Replica), StoreError> {
        Self::open_with(dir, origin, Box::new(|file| Box::new(file)))
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
        let result = self.file.sync().and_then(|()| self.sync_entry());
        let ok = result.is_ok();
        self.synced(
            self.written_len,
            self.unsynced.len(),
            self.unsynced_count,
            result,
        )?;
        if ok {
            self.flushed = self.generation;
            self.entry_synced = true;
        }
        Ok(())
    }

    /// Syncs the directory if the log's own entry in it may not be durable yet.
    fn sync_entry(&self) -> io::Result<()> {
        match self.entry_synced {
            true => Ok(()),
            false => snapshot::sync_dir(&self.dir),
        }
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
        let done = handle
            .is_none()
            .then(|| self.file.sync().and_then(|()| self.sync_entry()));
        Ok(Some(SyncTicket {
            len: self.written_len,
            bytes: self.unsynced.len(),
            count: self.unsynced_count,
            generation: self.generation,
            handle,
            done,
            dir: (!self.entry_synced).then(|| self.dir.clone()),
        }))
    }

    /// Whether an fsync started by [`Store::begin_sync`] has not ended.
    pub fn syncing(&self) -> bool {
        self.in_flight
    }

    /// Ends the fsync of `ticket` with its result: Ok(true) when what it covered is durable,
    /// Ok(false) when a compaction's log switch since made it moot (what it covered is written
    /// again to the new log and made durable by a later fsync), an error when it failed (what
    /// it covered is written again with the next write).
    pub fn end_sync(
        &mut self,
        ticket: SyncTicket,
        result: io::Result<()>,
    ) -> Result<bool, StoreError> {
        if ticket.generation != self.generation {
            // Settled since: by a flush that covered it, or by a log switch that did not.
            return Ok(self.flushed > ticket.generation);
        }
        self.in_flight = false;
        let entry = ticket.dir.is_some() && result.is_ok();
        self.synced(ticket.len, ticket.bytes, ticket.count, result)?;
        self.entry_synced |= entry;
        Ok(true)
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

    /// Makes the log hold only its header, durably: a log found emptied from outside is
    /// started again, so the next start finds it whole.
    fn start_log(&mut self) -> Result<(), StoreError> {
        let header = record::header(self.log_generation);
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
        self.flushed = self.generation;
        Ok(())
    }

    /// Makes the log and its entry in the directory durable (at open, for a spare left by an
    /// interrupted compaction).
    fn flush_entry(&mut self) -> Result<(), StoreError> {
        self.entry_synced = false;
        let result = self.file.sync().and_then(|()| self.sync_entry());
        result.map_err(|source| StoreError::WriteLog {
            path: self.log_path.clone(),
            pending: 0,
            source,
        })?;
        self.entry_synced = true;
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
#[path = "snapshot_tests.rs"]
mod snapshot_tests;

#[cfg(test)]
#[path = "log_fault_tests.rs"]
mod fault_tests;
