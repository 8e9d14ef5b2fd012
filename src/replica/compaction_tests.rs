//! Tests of compaction off the caller's thread: a crash after every step of its job, a torn
//! spare, appends after an interrupted compaction, a log lost from outside in the middle of
//! one, and an fsync in flight when appends switch logs.

use super::super::tests::{log_path, persist, reopen};
use super::*;
use crate::model::{X, Y};
use crate::replica::record;
use crate::replica::tests::state;
use std::path::Path;

const T0: u64 = 1_700_000_000_000;

fn spare_path(dir: &Path) -> PathBuf {
    dir.join(SPARE_FILE)
}

/// `n` of our moves of the lamp along `prop`, from `T0 + at`.
fn moves(store: &mut Store, replica: &mut Replica, prop: &str, at: u64, n: u64) {
    for i in 0..n {
        persist(
            store,
            replica,
            "lamp",
            &[(prop, (i as f64).into())],
            T0 + at + i,
        );
    }
}

/// A store compacted once (its snapshot expects a log header), with updates in its log, in
/// the middle of a second compaction: appends switched to the spare, which holds some too.
fn mid_compaction(dir: &Path) -> (Store, Replica, CompactionJob) {
    let (mut store, mut replica) = reopen(dir);
    moves(&mut store, &mut replica, X, 0, 5);
    store.compact(&replica).unwrap();
    moves(&mut store, &mut replica, Y, 10, 5);
    let job = store.begin_compaction(&replica).unwrap();
    assert!(spare_path(dir).exists(), "appends switched to the spare");
    moves(&mut store, &mut replica, X, 20, 3);
    (store, replica, job)
}

#[test]
fn a_crash_after_any_step_of_a_compaction_loses_nothing_and_is_not_reported_lost() {
    for steps in 0..=STEPS {
        let dir = tempfile::tempdir().unwrap();
        let (store, replica, job) = mid_compaction(dir.path());
        job.run_steps(steps).unwrap();
        drop(store);
        let left = |name: &str| dir.path().join(name).exists();
        match steps {
            0 | 1 => assert!(!left(SNAPSHOT_TMP), "{steps}: no temporary snapshot yet"),
            2 => assert!(
                left(SNAPSHOT_TMP),
                "{steps}: the temporary snapshot is left"
            ),
            3 => assert!(
                left(SPARE_FILE),
                "{steps}: the new snapshot beside both logs"
            ),
            _ => assert!(!left(SPARE_FILE), "{steps}: the compaction is whole"),
        }

        let (mut store, mut again) = reopen(dir.path());
        assert_eq!(
            state(&again),
            state(&replica),
            "{steps}: everything is back"
        );
        assert_eq!(store.lost(), None, "{steps}: a crash is not a loss");
        assert!(
            !left(SNAPSHOT_TMP),
            "{steps}: the temporary snapshot is removed"
        );
        assert_eq!(
            store.should_compact(&again),
            steps < STEPS,
            "{steps}: an interrupted compaction is due again"
        );
        let next = persist(&mut store, &mut again, "lamp", &[(Y, 9.0.into())], T0 + 40);
        assert_eq!(next[0].seq, 14, "{steps}: our seqs continue");
        if store.should_compact(&again) {
            store.compact(&again).unwrap();
        }
        drop(store);

        let (store, last) = reopen(dir.path());
        assert_eq!(
            state(&last),
            state(&again),
            "{steps}: and after it is finished"
        );
        assert_eq!(store.lost(), None);
        assert!(!left(SPARE_FILE), "{steps}: one log again");
    }
}

#[test]
fn a_spare_whose_header_a_crash_tore_gets_one_and_is_not_reported_lost() {
    let torn: [(&str, &[u8]); 3] = [
        ("empty", b""),
        ("cut in its header", &[20, 0, 0]),
        ("zeroes", &[0; 512]),
    ];
    for (what, bytes) in torn {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut replica) = reopen(dir.path());
        moves(&mut store, &mut replica, X, 0, 5);
        store.compact(&replica).unwrap();
        moves(&mut store, &mut replica, Y, 10, 5);
        // A crash before the spare's first fsync: nothing in it was durable.
        drop(store.begin_compaction(&replica).unwrap());
        drop(store);
        fs::write(spare_path(dir.path()), bytes).unwrap();

        let (mut store, again) = reopen(dir.path());
        assert_eq!(state(&again), state(&replica), "{what}");
        assert_eq!(
            store.lost(),
            None,
            "{what}: a torn spare is a crash, not a loss"
        );
        let spare = record::scan(&fs::read(spare_path(dir.path())).unwrap());
        assert_eq!(spare.header, Some(2), "{what}: the spare got its header");
        assert!(store.should_compact(&again));
        store.compact(&again).unwrap();
        drop(store);
        let (store, last) = reopen(dir.path());
        assert_eq!(
            (store.lost(), state(&last)),
            (None, state(&replica)),
            "{what}"
        );
    }
}

#[test]
fn after_an_interrupted_compaction_appends_go_to_the_newer_log_and_survive_its_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, job) = mid_compaction(dir.path());
    job.run_steps(3).unwrap();
    drop(store);

    // Both logs are replayed, and the new writes go to the spare: the finish renames the
    // spare over the old log, which would drop anything appended there.
    let (mut store, mut replica) = reopen(dir.path());
    let old = fs::read(log_path(dir.path())).unwrap();
    moves(&mut store, &mut replica, Y, 30, 2);
    assert_eq!(
        fs::read(log_path(dir.path())).unwrap(),
        old,
        "the old log is left alone"
    );
    let spare = record::scan(&fs::read(spare_path(dir.path())).unwrap());
    assert_eq!(spare.updates.len(), 3 + 2, "the spare takes the new writes");
    drop(store);

    // Crashed again before the finish: still everything.
    let (mut store, again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
    store.compact(&again).unwrap();
    drop(store);
    let (store, last) = reopen(dir.path());
    assert_eq!((store.lost(), state(&last)), (None, state(&replica)));
}

#[test]
fn a_log_emptied_from_outside_in_the_middle_of_a_compaction_is_reported_lost() {
    // Before the snapshot is renamed the old log holds our updates since the old snapshot;
    // after, the spare holds those since the new one. Emptying the other is no loss.
    let cases = [
        (1, LOG_FILE, true),
        (1, SPARE_FILE, false),
        (3, SPARE_FILE, true),
        (3, LOG_FILE, false),
    ];
    for (steps, emptied, lost) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, job) = mid_compaction(dir.path());
        job.run_steps(steps).unwrap();
        drop(store);
        fs::write(dir.path().join(emptied), b"").unwrap();
        let (store, _) = reopen(dir.path());
        assert_eq!(
            store.lost().is_some_and(|why| why.contains("header")),
            lost,
            "{emptied} emptied after {steps} steps: {:?}",
            store.lost()
        );
    }
}

#[test]
fn an_fsync_in_flight_when_appends_switch_logs_covers_nothing_and_the_next_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    let prepared = replica.prepare(
        &crate::replica::tests::oid("lamp"),
        vec![(X.into(), 1.0.into())],
        T0,
    );
    store.write(&prepared).unwrap();
    replica.apply(&prepared[0], T0);
    let mut ticket = store.begin_sync().unwrap().expect("written, not synced");

    let job = store.begin_compaction(&replica).unwrap();
    let result = ticket.sync();
    assert!(
        !store.end_sync(ticket, result).unwrap(),
        "the old log's fsync does not count once appends left it"
    );
    assert_eq!(store.pending(), 1, "the update waits for the spare's fsync");
    let mut ticket = store.begin_sync().unwrap().expect("the spare's fsync");
    assert!(ticket.dir.is_some(), "the spare's entry is synced with it");
    let result = ticket.sync();
    assert!(store.end_sync(ticket, result).unwrap());
    assert_eq!(store.pending(), 0);
    let spare = record::scan(&fs::read(spare_path(dir.path())).unwrap());
    assert_eq!(spare.updates, prepared, "written again to the spare");
    store.end_compaction(job.run()).unwrap();
}

#[test]
fn a_failed_job_leaves_both_logs_and_the_next_compaction_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica, job) = mid_compaction(dir.path());
    // A directory where the temporary snapshot goes: its write fails.
    fs::create_dir(dir.path().join(SNAPSHOT_TMP)).unwrap();
    assert!(store.end_compaction(job.run()).is_err());
    assert!(spare_path(dir.path()).exists() && log_path(dir.path()).exists());
    moves(&mut store, &mut replica, Y, 50, 2);
    fs::remove_dir(dir.path().join(SNAPSHOT_TMP)).unwrap();
    store.compact(&replica).unwrap();
    assert!(!spare_path(dir.path()).exists());
    drop(store);
    let (store, again) = reopen(dir.path());
    assert_eq!((store.lost(), state(&again)), (None, state(&replica)));
}

#[test]
fn an_unsynced_tail_written_again_to_the_spare_does_not_call_for_another_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    // A slow disk: 1,500 of our updates written, none synced yet.
    for i in 0..1500 {
        let lamp = crate::replica::tests::oid("lamp");
        let updates = replica.prepare(&lamp, vec![(X.into(), (i as f64).into())], T0 + i);
        store.write(&updates).unwrap();
        replica.apply(&updates[0], T0 + i);
    }
    assert!(store.should_compact(&replica));
    let job = store.begin_compaction(&replica).unwrap();
    store.end_compaction(job.run()).unwrap();
    assert_eq!(store.pending(), 1500, "they wait for the spare's fsync");
    store.flush().unwrap();
    assert!(
        !store.should_compact(&replica),
        "the spare holds nothing the snapshot does not"
    );
    drop(store);
    let (_, again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
}
