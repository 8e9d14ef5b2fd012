//! The log file as the store sees it: the few operations it needs, so tests can make them
//! fail as a full disk does, and the ticket of an fsync that runs on another thread.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// The operations the store needs from its log file, so a test can make them fail the way a
/// full disk does without being able to fill one.
pub(crate) trait LogFile: Send {
    /// Writes all of `bytes` at `offset`.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes what was written durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts (or extends) the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// A second handle on the file, so its fsync can run on another thread; none: sync here.
    fn sync_handle(&self) -> Option<File> {
        None
    }
}

impl LogFile for File {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.seek(SeekFrom::Start(offset))?;
        self.write_all(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_handle(&self) -> Option<File> {
        self.try_clone().ok()
    }
}

/// An fsync started with [`Store::begin_sync`]: what it makes durable once it succeeds.
#[derive(Debug)]
pub struct SyncTicket {
    /// Log bytes written when it started.
    pub(super) len: u64,
    /// Bytes and updates of `unsynced` it covers.
    pub(super) bytes: usize,
    pub(super) count: usize,
    /// The store's generation then: a flush or compaction since makes the ticket moot.
    pub(super) generation: u64,
    /// The handle to sync on another thread; none: it was synced already (a test's file).
    pub handle: Option<File>,
    /// The result when it was synced already.
    pub done: Option<io::Result<()>>,
    /// The store directory, to sync after the file while the log's own entry in it (a log
    /// started by a compaction) may not be durable yet.
    pub(super) dir: Option<PathBuf>,
}

impl SyncTicket {
    /// The fsync, on whatever thread calls it: the log file, then the directory if the log is
    /// new. Once only; a ticket synced already (see `done`) does nothing here.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(file) = self.handle.take() {
            file.sync_data()?;
            if let Some(dir) = &self.dir {
                crate::replica::snapshot::sync_dir(dir)?;
            }
        }
        Ok(())
    }
}
