//! Tests of the store against a log file that fails on demand: the queue that survives a full
//! disk or a failed fsync, the one-fsync-per-append promise, and group commit.

use super::tests::{log_path, persist, reopen};
use super::*;
use crate::model::{Value, ROOM, STATE};
use crate::replica::record;
use crate::replica::tests::{node, oid, state};
use std::fs::{self, File};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;

/// A log file that counts syncs and, while `fail` is set, writes half of what it is given
/// and then reports a full disk — what a real ENOSPC in the middle of a write looks like.
struct Flaky {
    file: File,
    fail: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    syncs: Arc<AtomicUsize>,
}

impl LogFile for Flaky {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            LogFile::write_at(&mut self.file, offset, &bytes[..bytes.len() / 2])?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        LogFile::write_at(&mut self.file, offset, bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        LogFile::sync(&mut self.file)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        LogFile::set_len(&mut self.file, len)
    }
}

fn open_flaky(dir: &Path) -> (Store, Replica, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let (store, replica, fail, _, syncs) = open_faulty(dir);
    (store, replica, fail, syncs)
}

/// Like [`open_flaky`], with a second switch that makes fsync fail.
#[allow(clippy::type_complexity)]
fn open_faulty(
    dir: &Path,
) -> (
    Store,
    Replica,
    Arc<AtomicBool>,
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
) {
    let fail = Arc::new(AtomicBool::new(false));
    let fail_sync = Arc::new(AtomicBool::new(false));
    let syncs = Arc::new(AtomicUsize::new(0));
    let (f, fs, s) = (fail.clone(), fail_sync.clone(), syncs.clone());
    let wrap = move |file| -> Box<dyn LogFile> {
        Box::new(Flaky {
            file,
            fail: f.clone(),
            fail_sync: fs.clone(),
            syncs: s.clone(),
        })
    };
    let (store, replica) = Store::open_with(dir, node(1), Box::new(wrap)).expect("open");
    (store, replica, fail, fail_sync, syncs)
}

#[test]
fn a_failed_append_keeps_its_updates_queued_and_writes_them_first_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica, fail, _) = open_flaky(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );

    fail.store(true, Ordering::SeqCst);
    let queued = replica.prepare(
        &oid("door"),
        vec![(STATE.into(), "OFF".into()), (ROOM.into(), "hall".into())],
        T0 + 1,
    );
    let err = store.append(&queued).unwrap_err();
    assert!(
        matches!(err, StoreError::WriteLog { pending: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("updates.log"), "{err}");
    assert_eq!(store.pending(), 2);
    // Accepted though not yet durable: the agent applies them and carries on.
    for u in &queued {
        replica.apply(u, T0 + 1);
    }
    let more = replica.prepare(&oid("fan"), vec![(STATE.into(), "ON".into())], T0 + 2);
    assert!(store.append(&more).is_err());
    assert_eq!(store.pending(), 3);
    for u in &more {
        replica.apply(u, T0 + 2);
    }

    fail.store(false, Ordering::SeqCst);
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "OFF".into())],
        T0 + 3,
    );
    assert_eq!(store.pending(), 0);
    drop(store);

    let bytes = fs::read(log_path(dir.path())).unwrap();
    let scan = record::scan(&bytes);
    assert!(
        scan.damaged.is_empty(),
        "half-written records must be overwritten"
    );
    assert_eq!(scan.valid_len, bytes.len());
    assert_eq!(
        scan.updates.iter().map(|u| u.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "queued updates go out in order, ahead of the new one"
    );
    let (_store, again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
}

#[test]
fn flush_alone_writes_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, replica, fail, _) = open_flaky(dir.path());
    fail.store(true, Ordering::SeqCst);
    let queued = replica.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0);
    assert!(store.append(&queued).is_err());
    assert!(store.flush().is_err());
    fail.store(false, Ordering::SeqCst);
    store.flush().unwrap();
    assert_eq!(store.pending(), 0);
    drop(store);
    let (_store, again) = reopen(dir.path());
    assert!(again.get(&oid("lamp")).is_some());
}

#[test]
fn ten_thousand_updates_in_one_append_cost_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, replica, _, syncs) = open_flaky(dir.path());
    let props = (0..10_000)
        .map(|i| (format!("p{i}"), Value::from(i as f64)))
        .collect();
    let updates = replica.prepare(&oid("big"), props, T0);
    assert_eq!(updates.len(), 10_000);
    store.append(&updates).unwrap();
    assert_eq!(syncs.load(Ordering::SeqCst), 1);
}

#[test]
fn writes_reach_the_file_at_once_and_one_flush_syncs_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica, _, syncs) = open_flaky(dir.path());
    for i in 0..5 {
        let updates = replica.prepare(
            &oid("lamp"),
            vec![(ROOM.into(), format!("r{i}").into())],
            T0 + i,
        );
        store.write(&updates).unwrap();
        for u in &updates {
            replica.apply(u, T0 + i);
        }
    }
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        0,
        "write never waits for the disk"
    );
    assert_eq!(store.pending(), 5, "written but not yet durable");
    // Already in the file: a killed process loses none of them.
    let scan = record::scan(&fs::read(log_path(dir.path())).unwrap());
    assert_eq!(scan.updates.len(), 5);
    store.flush().unwrap();
    store.flush().unwrap();
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        1,
        "one fsync for the group, none when clean"
    );
    assert_eq!(store.pending(), 0);
}

#[test]
fn a_failed_fsync_writes_the_unsynced_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica, _, fail_sync, _) = open_faulty(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    let updates = replica.prepare(&oid("door"), vec![(STATE.into(), "OFF".into())], T0 + 1);
    store.write(&updates).unwrap();
    for u in &updates {
        replica.apply(u, T0 + 1);
    }
    fail_sync.store(true, Ordering::SeqCst);
    let err = store.flush().unwrap_err();
    assert!(
        matches!(err, StoreError::WriteLog { pending: 1, .. }),
        "{err}"
    );
    // The kernel may have dropped the pages: the file is cut back to what is durable.
    let scan = record::scan(&fs::read(log_path(dir.path())).unwrap());
    assert_eq!(scan.updates.len(), 1);
    assert_eq!(store.pending(), 1);

    fail_sync.store(false, Ordering::SeqCst);
    store.flush().unwrap();
    assert_eq!(store.pending(), 0);
    drop(store);
    let bytes = fs::read(log_path(dir.path())).unwrap();
    let scan = record::scan(&bytes);
    assert_eq!(
        scan.updates.iter().map(|u| u.seq).collect::<Vec<_>>(),
        [1, 2],
        "the unsynced record is written again, once, in order"
    );
    let (_store, again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
}

#[test]
fn an_fsync_off_the_thread_covers_what_was_written_before_it_began_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    let first = replica.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0);
    store.write(&first).unwrap();
    let mut ticket = store.begin_sync().unwrap().expect("something to sync");
    assert!(store.syncing());
    assert!(store.begin_sync().unwrap().is_none(), "one fsync at a time");
    // Written while the fsync runs: the next fsync's.
    for u in &first {
        replica.apply(u, T0);
    }
    let second = replica.prepare(&oid("door"), vec![(STATE.into(), "OFF".into())], T0 + 1);
    store.write(&second).unwrap();
    let handle = ticket
        .handle
        .take()
        .expect("a real file syncs on another thread");
    let result = std::thread::spawn(move || handle.sync_data())
        .join()
        .unwrap();
    store.end_sync(ticket, result).unwrap();
    assert!(!store.syncing());
    assert_eq!(
        store.pending(),
        1,
        "the second write waits for its own fsync"
    );
    let ticket = store.begin_sync().unwrap().expect("the second write");
    store.end_sync(ticket, Ok(())).unwrap();
    assert_eq!(store.pending(), 0);
    assert!(store.begin_sync().unwrap().is_none(), "all durable");
}

#[test]
fn a_failed_fsync_off_the_thread_writes_everything_unsynced_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica, _, _, _) = open_faulty(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    let updates = replica.prepare(&oid("door"), vec![(STATE.into(), "OFF".into())], T0 + 1);
    store.write(&updates).unwrap();
    let ticket = store.begin_sync().unwrap().unwrap();
    let err = store
        .end_sync(ticket, Err(io::Error::from_raw_os_error(5)))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WriteLog { pending: 1, .. }),
        "{err}"
    );
    assert!(store.refusing());
    let ticket = store.begin_sync().unwrap().expect("written again");
    // A test file syncs at once and hands over the result.
    let result = match &ticket.done {
        Some(Ok(())) => Ok(()),
        other => panic!("{other:?}"),
    };
    store.end_sync(ticket, result).unwrap();
    assert!(!store.refusing());
    drop(store);
    let scan = record::scan(&fs::read(log_path(dir.path())).unwrap());
    assert_eq!(
        scan.updates.iter().map(|u| u.seq).collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn a_flush_while_an_fsync_runs_settles_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, replica) = reopen(dir.path());
    let updates = replica.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0);
    store.write(&updates).unwrap();
    let ticket = store.begin_sync().unwrap().unwrap();
    store.flush().unwrap();
    assert!(!store.syncing());
    // The late result of the older fsync changes nothing, even a failure: the flush covered it.
    let covered = store
        .end_sync(ticket, Err(io::Error::from_raw_os_error(5)))
        .unwrap();
    assert!(covered);
    assert_eq!(store.pending(), 0);
    assert!(!store.refusing());
}

#[test]
fn a_flush_that_fails_while_an_fsync_runs_does_not_cover_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, replica, _, fail_sync, _) = open_faulty(dir.path());
    let updates = replica.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0);
    store.write(&updates).unwrap();
    let ticket = store.begin_sync().unwrap().unwrap();
    fail_sync.store(true, Ordering::SeqCst);
    assert!(store.flush().is_err());
    fail_sync.store(false, Ordering::SeqCst);
    assert!(
        !store.end_sync(ticket, Ok(())).unwrap(),
        "its updates are not durable: the agent must not let them leave"
    );
    assert_eq!(store.pending(), 1);
    store.flush().unwrap();
    assert_eq!(store.pending(), 0);
}

#[test]
fn a_full_disk_when_a_compaction_starts_leaves_appends_in_the_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica, fail, _) = open_flaky(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    fail.store(true, Ordering::SeqCst);
    let err = store.begin_compaction(&replica).unwrap_err();
    assert!(err.to_string().contains("updates.next.log"), "{err}");
    assert!(
        !dir.path().join(SPARE_FILE).exists(),
        "no spare left behind"
    );
    fail.store(false, Ordering::SeqCst);
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(ROOM, "attic".into())],
        T0 + 1,
    );
    assert_eq!(
        record::scan(&fs::read(log_path(dir.path())).unwrap())
            .updates
            .len(),
        2
    );
    drop(store);
    let (store, again) = reopen(dir.path());
    assert_eq!((store.lost(), state(&again)), (None, state(&replica)));
}
