//! Compaction off the caller's thread: the log is replaced by a snapshot without the agent
//! waiting for a single fsync of it.
//!
//! [`Store::begin_compaction`] runs on the agent's thread and costs no fsync: appends switch
//! to a spare log, `updates.next.log`, started with a header naming the next generation, and
//! the replica is serialised (a consistent cut: it holds every update written to the old log).
//! The returned [`CompactionJob`] runs on another thread: it syncs the spare (its header),
//! writes the snapshot to a temporary file, syncs it, renames it over `snapshot.json`, syncs
//! the directory, then renames the spare over `updates.log` and syncs the directory again.
//! [`Store::end_compaction`] books its result.
//!
//! A crash at any step loses nothing: until the snapshot is renamed, the old snapshot and
//! the old log are whole and the spare holds everything since; after, the new snapshot holds
//! everything in the old log. Opening replays every log present, old first, and finishes the
//! compaction. The snapshot names the spare's generation, and the spare's header is durable
//! before the snapshot is renamed, so a log missing that header is still told from a crash.

use super::{record, snapshot, Store, StoreError, LOG_FILE, SNAPSHOT_TMP, SPARE_FILE};
use super::{Replica, SNAPSHOT_FILE};
use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;

/// Below this many records the log is never worth compacting.
pub(super) const COMPACT_MIN_RECORDS: usize = 1_000;
/// The log is compacted once it holds this many times more records than there are registers.
const COMPACT_RATIO: usize = 4;

/// The disk's part of a compaction, for a thread other than the agent's: see the module doc.
#[derive(Debug)]
pub struct CompactionJob {
    /// The store directory, synced after each rename.
    dir: PathBuf,
    /// The snapshot, serialised.
    snapshot: Vec<u8>,
}

/// The steps of [`CompactionJob::run`], in order; a crash may stop it after any of them.
const STEPS: usize = 4;

impl CompactionJob {
    /// Carries out the job: every fsync and rename a compaction needs.
    pub fn run(self) -> Result<(), StoreError> {
        self.run_steps(STEPS)
    }

    /// The first `steps` steps of the job: a crash after them, for tests.
    pub(super) fn run_steps(self, steps: usize) -> Result<(), StoreError> {
        let dir = &self.dir;
        let (spare, log) = (dir.join(SPARE_FILE), dir.join(LOG_FILE));
        let (tmp, snapshot_path) = (dir.join(SNAPSHOT_TMP), dir.join(SNAPSHOT_FILE));
        let log_failed = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::WriteLog {
                path,
                pending: 0,
                source,
            }
        };
        let snapshot_failed = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::WriteSnapshot { path, source }
        };
        for step in 0..steps.min(STEPS) {
            match step {
                // The spare's header: durable before a snapshot names its generation.
                0 => File::open(&spare)
                    .and_then(|f| f.sync_data())
                    .map_err(log_failed(&spare))?,
                1 => snapshot::write_temporary(&tmp, &self.snapshot)
                    .map_err(snapshot_failed(&tmp))?,
                2 => fs::rename(&tmp, &snapshot_path)
                    .and_then(|()| snapshot::sync_dir(dir))
                    .map_err(snapshot_failed(&snapshot_path))?,
                _ => fs::rename(&spare, &log)
                    .and_then(|()| snapshot::sync_dir(dir))
                    .map_err(log_failed(&log))?,
            }
        }
        Ok(())
    }
}

impl Store {
    /// Whether to compact now: the log holds many more records than the replica has
    /// registers, or an interrupted compaction was found at open. Never while one runs.
    pub fn should_compact(&self, replica: &Replica) -> bool {
        !self.compacting
            && (self.finish_due
                || self.records >= COMPACT_MIN_RECORDS
                    && self.records > replica.register_count().saturating_mul(COMPACT_RATIO))
    }

    /// Starts a compaction without touching the disk beyond a write to the kernel: appends
    /// switch to the spare log (unless a compaction that failed or was interrupted left them
    /// there already) and `replica`, which must hold every update handed to this store, is
    /// serialised. Run the job on any thread, then hand its result to
    /// [`Store::end_compaction`].
    ///
    /// Updates written to the old log but not yet synced are written again to the spare
    /// (replaying one twice is harmless, losing one is not) and wait for the spare's fsync.
    /// An fsync in flight for the old log is settled: [`Store::end_sync`] says it did not
    /// cover them.
    pub fn begin_compaction(&mut self, replica: &Replica) -> Result<CompactionJob, StoreError> {
        if self.older.is_none() {
            self.switch()?;
        }
        let snapshot = snapshot::encode(replica, self.log_generation, &self.snapshot_path)?;
        self.finish_due = false;
        self.compacting = true;
        Ok(CompactionJob {
            dir: self.dir.clone(),
            snapshot,
        })
    }

    /// Books the result of a compaction's job. On success the spare is the log; on failure
    /// appends stay in the spare and the old log stays beside it, both replayed at open, and
    /// the next compaction finishes the job.
    pub fn end_compaction(&mut self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        self.compacting = false;
        if result.is_err() && !self.dir.join(SPARE_FILE).exists() {
            // The spare was renamed over the log and a sync after it failed: it is the log.
            self.older = None;
            self.log_path = self.dir.join(LOG_FILE);
        }
        result?;
        self.older = None;
        self.log_path = self.dir.join(LOG_FILE);
        Ok(())
    }

    /// Whether a compaction's job is running.
    pub fn compacting(&self) -> bool {
        self.compacting
    }

    /// Compacts on the caller's thread: the job run in place, then everything queued synced.
    pub fn compact(&mut self, replica: &Replica) -> Result<(), StoreError> {
        let job = self.begin_compaction(replica)?;
        let result = job.run();
        self.end_compaction(result)?;
        self.flush()
    }

    /// Makes the spare, started with its header, the log appends go to.
    fn switch(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join(SPARE_FILE);
        let generation = self.log_generation + 1;
        let header = record::header(generation);
        let failed = |source| StoreError::OpenLog {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(failed)?;
        // The spare starts with its header, then what the old log holds unsynced: written
        // again (the snapshot holds it too, but is not durable yet), and not counted as the
        // spare's growth, so a slow disk's large unsynced tail does not call for another
        // compaction right after this one.
        let mut unsynced = header;
        unsynced.extend_from_slice(&self.unsynced);
        let mut file = (self.wrap)(file);
        if let Err(e) = file.write_at(0, &unsynced) {
            // Appends stay in the old log; a spare left behind would only be replayed for
            // nothing at the next start.
            let _ = fs::remove_file(&path);
            return Err(failed(e));
        }
        self.written_len = unsynced.len() as u64;
        self.unsynced = unsynced;
        self.generation += 1;
        self.in_flight = false;
        self.file = file;
        self.older = Some(std::mem::replace(&mut self.log_path, path));
        self.log_generation = generation;
        self.durable_len = 0;
        self.records = 0;
        self.entry_synced = false;
        Ok(())
    }
}

#[cfg(test)]
#[path = "compaction_tests.rs"]
mod tests;
