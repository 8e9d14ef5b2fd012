//! Opening the store: the snapshot, then every log on top, and the checks that tell a crash
//! (whose traces are cut or finished) from a log lost from outside (reported by `Store::lost`).
//!
//! Two logs are present only when a compaction was interrupted: `updates.log`, which the
//! new snapshot may already hold, and `updates.next.log`, where appends went since. Both are
//! replayed, the old one first (replay is idempotent, so updates the snapshot holds do no
//! harm), and appends go on in the newer one; the compaction is due again at once.

use super::{record, snapshot, LogFile, Store, StoreError, LOG_FILE, SNAPSHOT_FILE, SPARE_FILE};
use super::{Replica, SNAPSHOT_TMP};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use uuid::Uuid;

/// Wraps the log file the store writes to (tests inject failures there).
pub(super) type Wrap = Box<dyn Fn(File) -> Box<dyn LogFile> + Send>;

/// One log file, replayed.
struct Replayed {
    /// The open file.
    file: File,
    /// Bytes up to the end of its last whole record.
    valid_len: u64,
    /// The generation its header names, if it has one.
    header: Option<u64>,
    /// Records it holds, header aside.
    records: usize,
    /// Why it was kept aside as damage, if it was.
    damaged: Option<String>,
}

impl Store {
    /// [`Store::open`], with the log file wrapped by `wrap` (tests inject failures there).
    pub(super) fn open_with(
        dir: &Path,
        origin: Uuid,
        wrap: Wrap,
    ) -> Result<(Store, Replica), StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let tmp = dir.join(SNAPSHOT_TMP);
        if fs::remove_file(&tmp).is_ok() {
            tracing::info!(file = %tmp.display(), "removed a snapshot left half-written by a crash");
        }
        let (mut replica, header_expected, generation) =
            match snapshot::load(&dir.join(SNAPSHOT_FILE), origin)? {
                Some(loaded) => (loaded.replica, loaded.log_header, loaded.log_generation),
                None => (Replica::new(origin), false, 0),
            };
        let from_snapshot = replica.register_count();

        let main_path = dir.join(LOG_FILE);
        let spare_path = dir.join(SPARE_FILE);
        let interrupted = spare_path.exists();
        let old = if interrupted {
            replay_log(dir, &main_path, &mut replica, false)?
        } else {
            None
        };
        let live_path = if interrupted { &spare_path } else { &main_path };
        let mut live =
            replay_log(dir, live_path, &mut replica, true)?.ok_or_else(|| StoreError::OpenLog {
                path: live_path.clone(),
                source: io::Error::from(io::ErrorKind::NotFound),
            })?;

        let headers = [old.as_ref().and_then(|l| l.header), live.header];
        let lost = match (old.as_ref().and_then(|l| l.damaged.clone())).or(live.damaged.clone()) {
            Some(why) => Some(why),
            None if header_expected && !headers.contains(&Some(generation)) => Some(format!(
                "the log {} lacks the header (generation {generation}) every log after a snapshot starts with: it was emptied, deleted or replaced",
                main_path.display()
            )),
            None => None,
        };
        if let Some(why) = &lost {
            tracing::error!(
                "{why}; this instance's own changes since the snapshot are gone from this disk, and it makes no new change until a peer has sent them back"
            );
        }
        if interrupted {
            tracing::warn!(
                dir = %dir.display(),
                "a compaction was interrupted: both logs were replayed, and it is finished again"
            );
        }
        // The log appends go to: a spare whose header a crash tore gets one after its records.
        let live_generation = match (interrupted, live.header) {
            (_, Some(g)) => g,
            (true, None) => {
                let g = headers[0].unwrap_or(generation).max(generation) + 1;
                let header = record::header(g);
                let failed = |source| StoreError::TruncateLog {
                    path: live_path.clone(),
                    len: live.valid_len,
                    source,
                };
                LogFile::write_at(&mut live.file, live.valid_len, &header).map_err(failed)?;
                live.valid_len += header.len() as u64;
                g
            }
            (false, None) => generation,
        };
        tracing::info!(
            dir = %dir.display(),
            objects = replica.len(),
            snapshot_registers = from_snapshot,
            log_records = live.records + old.as_ref().map_or(0, |l| l.records),
            "replica loaded"
        );

        let mut store = Store {
            lost,
            dir: dir.to_path_buf(),
            log_path: live_path.clone(),
            snapshot_path: dir.join(SNAPSHOT_FILE),
            file: wrap(live.file),
            wrap,
            durable_len: live.valid_len,
            written_len: live.valid_len,
            unsynced: Vec::new(),
            unsynced_count: 0,
            records: live.records,
            pending: Vec::new(),
            pending_count: 0,
            refused: false,
            in_flight: false,
            generation: 0,
            flushed: 0,
            log_generation: live_generation,
            older: interrupted.then_some(main_path),
            entry_synced: !interrupted,
            compacting: false,
            finish_due: interrupted,
        };
        if interrupted {
            // Its entry in the directory, and a header written here, must be durable before
            // anything appended to it counts as such.
            store.flush_entry()?;
        }
        if store.lost.is_some() && store.written_len == 0 {
            // So the next start finds a whole log again.
            store.start_log()?;
        }
        Ok((store, replica))
    }
}

/// Opens the log at `path` (creating it if `create`; none if it is absent and not created)
/// and applies its records to `replica`. A torn tail is cut; a log with no valid record at
/// all that is not merely torn is kept aside as damage.
fn replay_log(
    dir: &Path,
    path: &Path,
    replica: &mut Replica,
    create: bool,
) -> Result<Option<Replayed>, StoreError> {
    let open_failed = |source| StoreError::OpenLog {
        path: path.to_path_buf(),
        source,
    };
    let existed = path.exists();
    if !existed && !create {
        return Ok(None);
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(open_failed)?;
    if !existed {
        snapshot::sync_dir(dir).map_err(open_failed)?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| StoreError::ReadLog {
            path: path.to_path_buf(),
            source,
        })?;

    let scan = record::replay(replica, &bytes, path);
    let valid_len = u64::try_from(scan.valid_len).unwrap_or(u64::MAX);
    let mut damaged = None;
    if scan.valid_len == 0 && !bytes.is_empty() && !record::looks_torn(&bytes) {
        // Not one valid record, and more than an interrupted write leaves: this is
        // damage, not a torn write. Keep it for inspection before starting afresh.
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let aside = dir.join(format!("{name}.damaged-{}", crate::clock::now_ms()));
        let kept = fs::write(&aside, &bytes).and_then(|()| snapshot::sync_dir(dir));
        tracing::error!(
            file = %path.display(),
            bytes = bytes.len(),
            kept_as = %aside.display(),
            kept = kept.is_ok(),
            "the store's log holds no valid record at all: it is damaged, not torn by a crash; it is kept aside and the house comes from the snapshot and from peers"
        );
        if kept.is_err() {
            return Err(StoreError::ReadLog {
                path: path.to_path_buf(),
                source: io::Error::other(
                    "a damaged log could not be kept aside; refusing to cut it",
                ),
            });
        }
        damaged = Some(format!(
            "the log {} held no valid record and was kept aside",
            path.display()
        ));
    }
    if scan.valid_len < bytes.len() {
        tracing::warn!(
            file = %path.display(),
            "torn record at byte {valid_len} (an interrupted write); cutting {} bytes and keeping everything before it",
            bytes.len() - scan.valid_len
        );
        file.set_len(valid_len)
            .map_err(|source| StoreError::TruncateLog {
                path: path.to_path_buf(),
                len: valid_len,
                source,
            })?;
    }
    // A killed process leaves its last records in the page cache, where they read back as
    // if durable. Once served to peers as ours, a power cut must not take them back: our
    // next update would reuse a sequence number a peer already holds for another, and the
    // replicas would differ for good. So what is kept is made durable before it is used.
    if valid_len > 0 {
        file.sync_all().map_err(|source| StoreError::SyncLog {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(Some(Replayed {
        file,
        valid_len,
        header: scan.header,
        records: scan.updates.len() + scan.damaged.len() + scan.unreadable.len(),
        damaged,
    }))
}
