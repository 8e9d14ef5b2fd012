//! A payload from a peer's broker, decoded as every mesh message the agent reads, and each
//! message that decodes handed to the sans-IO code the agent hands it to: updates applied to
//! a replica, version vectors merged and answered with a delta and a page, a forwarded
//! command's clock observed and its request checked, a hello identified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pimesh::api;
use pimesh::mesh::peers::Peers;
use pimesh::mesh::proto::{self, Batch, Beat, Forward, ForwardReply, Hello, SyncPage, SyncReq};
use pimesh::model::ObjectId;
use pimesh::replica::Replica;
use serde_json::from_slice;
use uuid::Uuid;

/// A wall clock in 2023, as the agent would pass it.
const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|payload: &[u8]| {
    let me = Uuid::from_u128(1);
    let mut replica = Replica::new(me);
    if let Ok(batch) = from_slice::<Batch>(payload) {
        for update in &batch.updates {
            replica.apply(update, NOW_MS);
        }
        proto::touched(&batch.updates);
    }
    if let Ok(page) = from_slice::<SyncPage>(payload) {
        for update in &page.updates {
            replica.apply(update, NOW_MS);
        }
        replica.merge_version_vector(&page.vv);
    }
    if let Ok(reply) = from_slice::<ForwardReply>(payload) {
        for update in &reply.updates {
            replica.apply(update, NOW_MS);
        }
    }
    if let Ok(beat) = from_slice::<Beat>(payload) {
        replica.delta_since(&beat.vv);
        replica.merge_version_vector(&beat.vv);
    }
    if let Ok(req) = from_slice::<SyncReq>(payload) {
        let delta = replica.delta_since(&req.vv);
        proto::page(&delta, req.after);
    }
    if let Ok(forward) = from_slice::<Forward>(payload) {
        if let Some(clock) = &forward.clock {
            let _ = replica.observe(clock, NOW_MS);
        }
        let _ = api::check(&forward.request);
        // Our next change is stamped after the forwarded clock, whatever it holds.
        if let Ok(object) = ObjectId::new(forward.object) {
            replica.prepare(&object, vec![("state".into(), "ON".into())], NOW_MS);
        }
    }
    if let Ok(hello) = from_slice::<Hello>(payload) {
        let mut peers = Peers::new(me, "me");
        peers.add_link("peer:1883");
        peers.identify("peer:1883", &hello);
        peers.known();
    }
});
