//! The bytes of `updates.log`, replayed as the store replays them on start; the replica they
//! build must then answer a sync and take a local write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pimesh::model::ObjectId;
use pimesh::replica::fuzzing;
use pimesh::replica::{Replica, VersionVector};
use uuid::Uuid;

fuzz_target!(|bytes: &[u8]| {
    let mut replica = Replica::new(Uuid::from_u128(1));
    let valid_len = fuzzing::replay_log(&mut replica, bytes);
    assert!(valid_len <= bytes.len());
    replica.delta_since(&VersionVector::default());
    let lamp = ObjectId::new("lamp").unwrap();
    replica.prepare(
        &lamp,
        vec![("state".into(), "ON".into())],
        1_700_000_000_000,
    );
});
