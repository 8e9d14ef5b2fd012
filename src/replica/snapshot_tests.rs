//! Tests of the store's snapshot on real temporary directories: a damaged one fails the
//! start naming the file, another format is named as such, a leftover temporary one is
//! removed, and a flipped byte is caught by its checksum.

use super::*;
use crate::model::{ROOM, STATE};
use crate::replica::log::tests::{persist, reopen};
use crate::replica::tests::{node, oid, T0};
use std::fs;

#[test]
fn a_damaged_snapshot_fails_loudly_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(STATE, "ON".into())],
        T0,
    );
    store.compact(&replica).unwrap();
    drop(store);
    let path = dir.path().join(SNAPSHOT_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(&path, bytes).unwrap();

    let err = Store::open(dir.path(), node(1)).expect_err("must not load");
    assert!(matches!(err, StoreError::CorruptSnapshot { .. }), "{err}");
    assert!(err.to_string().contains("snapshot.json"), "{err}");
}

#[test]
fn a_snapshot_of_another_format_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(SNAPSHOT_FILE),
        br#"{"format": 99, "whatever": []}"#,
    )
    .unwrap();
    let err = Store::open(dir.path(), node(1)).expect_err("must not load");
    assert!(
        matches!(err, StoreError::SnapshotFormat { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_leftover_temporary_snapshot_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(SNAPSHOT_TMP), b"{\"half").unwrap();
    let (_store, replica) = reopen(dir.path());
    assert!(replica.is_empty());
    assert!(!dir.path().join(SNAPSHOT_TMP).exists());
}

#[test]
fn a_flipped_byte_inside_a_snapshot_value_is_caught_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut replica) = reopen(dir.path());
    persist(
        &mut store,
        &mut replica,
        "lamp",
        &[(ROOM, "attic".into())],
        T0,
    );
    store.compact(&replica).unwrap();
    drop(store);
    let path = dir.path().join(SNAPSHOT_FILE);
    let bytes = fs::read(&path).unwrap();
    // Still valid JSON, another room.
    let flipped: Vec<u8> = String::from_utf8(bytes.clone())
        .unwrap()
        .replacen("attic", "attid", 1)
        .into_bytes();
    assert_ne!(flipped, bytes);
    fs::write(&path, &flipped).unwrap();
    let err = Store::open(dir.path(), node(1)).expect_err("must not load");
    assert!(matches!(err, StoreError::SnapshotChecksum { .. }), "{err}");
    assert!(
        err.to_string().contains("snapshot.json is damaged"),
        "{err}"
    );
    // Back as written, it loads; without the trailer (an older pimesh's), too.
    fs::write(&path, &bytes).unwrap();
    assert_eq!(
        reopen(dir.path()).1.get(&oid("lamp")).unwrap().text(ROOM),
        Some("attic")
    );
    let doc = &bytes[..bytes.len() - b"\ncrc32 00000000\n".len()];
    fs::write(&path, doc).unwrap();
    assert_eq!(
        reopen(dir.path()).1.get(&oid("lamp")).unwrap().text(ROOM),
        Some("attic")
    );
}
