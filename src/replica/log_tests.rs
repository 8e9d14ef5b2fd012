//! Tests of the store on real temporary directories: reopen, torn and damaged logs and
//! snapshots, compaction, and seq continuity across restarts.

use super::compaction::COMPACT_MIN_RECORDS;
use super::*;
use crate::model::{Value, DELETED, ROOM, STATE, X, Y};
use crate::replica::record;
use crate::replica::tests::{node, oid, state, write, Rng};
use std::fs::{self, File};
use std::io::Write;

const T0: u64 = 1_700_000_000_000;

pub(super) fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

/// Writes locally and appends, the way the agent does: prepare, persist, apply.
pub(super) fn persist(
    store: &mut Store,
    replica: &mut Replica,
    object: &str,
    props: &[(&str, Value)],
    wall_ms: u64,
) -> Vec<Update> {
    let props = props
        .iter()
        .map(|(p, v)| (p.to_string(), v.clone()))
        .collect();
    let updates = replica.prepare(&oid(object), props, wall_ms);
    store.append(&updates).expect("append");
    for u in &updates {
        replica.apply(u, wall_ms);
    }
    updates
}

/// `n` local moves of the lamp along x, at T0, T0 + 1, …
fn moves(store: &mut Store, replica: &mut Replica, n: u64) {
    for i in 0..n {
        persist(store, replica, "lamp", &[(X, (i as f64).into())], T0 + i);
    }
}

pub(super) fn reopen(dir: &Path) -> (Store, Replica) {
    Store::open(dir, node(1)).expect("reopen")
}

#[test]
fn a_reopened_store_holds_what_was_appended_and_continues_our_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    assert!(replica.is_empty());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into()), (ROOM, "hall".into())],
        T0,
    );
    let remote =
        Replica::new(node(2)).prepare(&oid("door"), vec![(STATE.into(), "OFF".into())], T0 + 5);
    store.append(&remote).unwrap();
    for u in &remote {
        replica.apply(u, T0 + 6);
    }
    let last = persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "OFF".into())],
        T0 + 10,
    );
    drop(store);

    let (mut store, mut again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
    // Even with the wall clock behind, our next write follows the last one issued.
    let next = persist(
        &mut store,
        &mut again,
        "lamp",
        &[(STATE, "ON".into())],
        T0 - 1_000,
    );
    assert_eq!(next[0].seq, last[0].seq + 1);
    assert!(next[0].stamp > last[0].stamp);
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    let expected = state(&replica);
    let whole = fs::metadata(log_path(dir.path())).unwrap().len();
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(ROOM, "attic".into())],
        T0 + 1,
    );
    drop(store);
    let full = fs::metadata(log_path(dir.path())).unwrap().len();
    File::options()
        .write(true)
        .open(log_path(dir.path()))
        .unwrap()
        .set_len(full - 3)
        .unwrap();

    let (mut store, mut again) = reopen(dir.path());
    assert_eq!(state(&again), expected);
    assert_eq!(fs::metadata(log_path(dir.path())).unwrap().len(), whole);
    // Appending after the cut leaves a clean log.
    let retry = persist(
        &mut store,
        &mut again,
        "lamp",
        &[(ROOM, "attic".into())],
        T0 + 2,
    );
    assert_eq!(
        retry[0].seq, 2,
        "the torn update was never applied, so its seq is free"
    );
    drop(store);
    let scan = record::scan(&fs::read(log_path(dir.path())).unwrap());
    assert!(scan.damaged.is_empty());
    assert_eq!(scan.updates.len(), 2);
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    drop(store);
    let mut file = File::options()
        .append(true)
        .open(log_path(dir.path()))
        .unwrap();
    file.write_all(b"\x17\x00\x00\x00garbage from a bad block")
        .unwrap();
    drop(file);

    let (_store, again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
}

#[test]
fn a_damaged_record_in_the_middle_is_skipped_and_leaves_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    let first_end = fs::metadata(log_path(dir.path())).unwrap().len() as usize;
    persist(
        &mut store,
        &mut replica,
        "door",
        &[(STATE, "OFF".into())],
        T0 + 1,
    );
    persist(
        &mut store,
        &mut replica,
        "fan",
        &[(STATE, "ON".into())],
        T0 + 2,
    );
    drop(store);
    let mut bytes = fs::read(log_path(dir.path())).unwrap();
    bytes[first_end + record::HEADER_LEN + 3] ^= 0x20;
    fs::write(log_path(dir.path()), &bytes).unwrap();

    let (mut store, mut again) = reopen(dir.path());
    assert!(again.get(&oid("lamp")).is_some());
    assert!(again.get(&oid("door")).is_none());
    assert!(again.get(&oid("fan")).is_some());
    assert_eq!(again.version_vector().get(&node(1)), Some(&1));
    // The lost seq 2 is not reused: peers may hold it.
    let next = persist(
        &mut store,
        &mut again,
        "lamp",
        &[(STATE, "OFF".into())],
        T0 + 3,
    );
    assert_eq!(next[0].seq, 4);
}

#[test]
fn compaction_keeps_everything_and_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    moves(&mut store, &mut replica, 20);
    persist(
        &mut store,
        &mut replica,
        "door",
        &[(DELETED, true.into())],
        T0 + 50,
    );
    store.compact(&replica).unwrap();
    assert_eq!(
        fs::read(log_path(dir.path())).unwrap(),
        record::header(1),
        "the log holds only its header, of the first compaction's generation"
    );
    assert!(
        !dir.path().join(SPARE_FILE).exists(),
        "the spare became the log"
    );
    let after = persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(Y, 1.5.into())],
        T0 + 60,
    );
    drop(store);

    let (_store, again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
    assert!(again.get(&oid("door")).is_some_and(|o| o.is_deleted()));
    assert_eq!(after[0].seq, 22);
}

#[test]
fn our_seq_continues_after_compaction_even_when_our_registers_were_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "OFF".into())],
        T0 + 1,
    );
    // A later remote write replaces our only register.
    let mut peer = Replica::new(node(2));
    let remote = write(&mut peer, "lamp", &[(STATE, "ON".into())], T0 + 10);
    store.append(&remote).unwrap();
    replica.apply(&remote[0], T0 + 10);
    store.compact(&replica).unwrap();
    drop(store);

    let (mut store, mut again) = reopen(dir.path());
    let next = persist(&mut store, &mut again, "lamp", &[(STATE, "OFF".into())], T0);
    assert_eq!(next[0].seq, 3);
    assert!(next[0].stamp > remote[0].stamp);
}

#[test]
fn a_crash_between_snapshot_and_log_reset_only_replays_known_updates() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    moves(&mut store, &mut replica, 5);
    let old_log = fs::read(log_path(dir.path())).unwrap();
    store.compact(&replica).unwrap();
    drop(store);
    // The snapshot was renamed, the spare not yet renamed over the old log.
    fs::rename(log_path(dir.path()), dir.path().join(SPARE_FILE)).unwrap();
    fs::write(log_path(dir.path()), old_log).unwrap();

    let (store, again) = reopen(dir.path());
    assert_eq!(state(&again), state(&replica));
    assert_eq!(store.lost(), None);
}

#[test]
fn ten_thousand_objects_survive_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    let mut rng = Rng(2024);
    let mut updates = Vec::new();
    for i in 0..10_000u64 {
        let props = vec![
            (
                STATE.to_string(),
                Value::from(if rng.below(2) == 0 { "ON" } else { "OFF" }),
            ),
            (
                ROOM.to_string(),
                Value::from(format!("room-{}", rng.below(40))),
            ),
            (X.to_string(), Value::from(rng.below(1000) as f64 / 4.0)),
            (Y.to_string(), Value::from(rng.below(1000) as f64 / 8.0)),
        ];
        let batch = replica.prepare(&oid(&format!("object-{i}")), props, T0 + i);
        for u in &batch {
            replica.apply(u, T0 + i);
        }
        updates.extend(batch);
    }
    store.append(&updates).unwrap();
    store.compact(&replica).unwrap();
    drop(store);

    let (_store, again) = reopen(dir.path());
    assert_eq!(again.len(), 10_000);
    assert_eq!(state(&again), state(&replica));
    assert_eq!(again.version_vector().get(&node(1)), Some(&40_000));
}

#[test]
fn compaction_is_due_only_when_the_log_outgrows_the_registers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    let mut due_at = None;
    for i in 0..2_000u64 {
        persist(
            &mut store,
            &mut replica,
            "lamp",
            &[(X, (i as f64).into())],
            T0 + i,
        );
        if due_at.is_none() && store.should_compact(&replica) {
            due_at = Some(i);
        }
    }
    assert_eq!(due_at, Some(COMPACT_MIN_RECORDS as u64 - 1));
    store.compact(&replica).unwrap();
    assert!(!store.should_compact(&replica));
}

#[test]
fn queued_remote_updates_are_written_with_the_next_flush_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = reopen(dir.path());
    let remote =
        Replica::new(node(2)).prepare(&oid("door"), vec![(STATE.into(), "OPEN".into())], T0);
    store.queue(&remote).unwrap();
    assert_eq!(store.pending(), 1);
    let (_, before) = Store::open(dir.path(), node(3)).expect("open a second view");
    assert!(before.is_empty(), "queued means not on disk yet");
    store.flush().unwrap();
    assert_eq!(store.pending(), 0);
    drop(store);
    let (_, after) = reopen(dir.path());
    assert_eq!(
        after.get(&oid("door")).and_then(|o| o.text(STATE)),
        Some("OPEN")
    );
}

#[test]
fn a_log_of_garbage_from_its_first_byte_is_kept_aside_not_cut_as_torn() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    fs::write(log_path(dir.path()), &garbage).unwrap();
    let (_store, replica) = reopen(dir.path());
    assert!(replica.is_empty());
    let kept: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("updates.log.damaged-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "kept aside for inspection");
    assert_eq!(fs::read(kept[0].path()).unwrap(), garbage);
    assert!(_store.lost().is_some_and(|why| why.contains("kept aside")));

    // A crash's leftovers are still just cut: zeroes, or one record cut short.
    for torn in [vec![0u8; 4096], {
        let mut r = Vec::new();
        record::encode(&persist_free_update(), &mut r).unwrap();
        r.truncate(r.len() - 5);
        r
    }] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(log_path(dir.path()), &torn).unwrap();
        let _ = reopen(dir.path());
        assert_eq!(fs::metadata(log_path(dir.path())).unwrap().len(), 0);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing kept aside"
        );
    }
}

/// A store compacted once, with `n` more of our updates logged after the snapshot.
fn compacted_then(dir: &Path, n: u64) -> Replica {
    let (mut store, mut replica) = reopen(dir);
    moves(&mut store, &mut replica, 5);
    store.compact(&replica).unwrap();
    for i in 0..n {
        persist(
            &mut store,
            &mut replica,
            "lamp",
            &[(Y, (i as f64).into())],
            T0 + 10 + i,
        );
    }
    replica
}

#[test]
fn a_log_emptied_or_deleted_beside_a_snapshot_is_reported_lost() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 3] = [
        ("emptied", |log| fs::write(log, b"").unwrap()),
        ("deleted", |log| fs::remove_file(log).unwrap()),
        ("replaced by an older log without header", |log| {
            let mut old = Vec::new();
            record::encode(&persist_free_update(), &mut old).unwrap();
            fs::write(log, old).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let before = compacted_then(dir.path(), 3);
        damage(&log_path(dir.path()));
        let (store, replica) = reopen(dir.path());
        assert!(
            store.lost().is_some_and(|why| why.contains("header")),
            "{what}: reported as lost"
        );
        let vv = |r: &Replica| r.version_vector().get(&node(1)).copied();
        assert!(vv(&replica) < vv(&before), "{what}: our seqs did regress");
        drop(store);
        if what != "replaced by an older log without header" {
            // The log was started again with its header: the next start is clean.
            let (store, _) = reopen(dir.path());
            assert_eq!(store.lost(), None, "{what}: reported once");
        }
    }
}

#[test]
fn a_whole_log_and_a_crash_inside_compaction_are_not_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    compacted_then(dir.path(), 3);
    let (store, _) = reopen(dir.path());
    assert_eq!(store.lost(), None, "a log with its header");
    drop(store);

    // A second compaction stopped by a crash after its snapshot was renamed: the old log
    // (generation 1) and the spare (2) are both there, and the snapshot names 2.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    moves(&mut store, &mut replica, 5);
    store.compact(&replica).unwrap();
    moves(&mut store, &mut replica, 3);
    let job = store.begin_compaction(&replica).unwrap();
    job.run_steps(3).unwrap();
    drop(store);
    assert!(dir.path().join(SPARE_FILE).exists());
    let (store, again) = reopen(dir.path());
    assert_eq!(store.lost(), None);
    assert_eq!(state(&again), state(&replica));

    // A store that was never compacted has no header to miss.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    persist(&mut store, &mut replica, "lamp", &[(X, 1.0.into())], T0);
    drop(store);
    assert_eq!(reopen(dir.path()).0.lost(), None);
}

/// An update, without a store.
fn persist_free_update() -> Update {
    let r = Replica::new(node(1));
    r.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0)
        .remove(0)
}
