//! The bytes of `snapshot.json`, loaded as the store loads them on start; a replica that
//! loads must then answer a sync and take a local write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pimesh::model::ObjectId;
use pimesh::replica::fuzzing;
use pimesh::replica::VersionVector;
use uuid::Uuid;

fuzz_target!(|bytes: &[u8]| {
    let Ok(replica) = fuzzing::load_snapshot(bytes, Uuid::from_u128(1)) else {
        return;
    };
    replica.delta_since(&VersionVector::default());
    let lamp = ObjectId::new("lamp").unwrap();
    replica.prepare(
        &lamp,
        vec![("state".into(), "ON".into())],
        1_700_000_000_000,
    );
});
