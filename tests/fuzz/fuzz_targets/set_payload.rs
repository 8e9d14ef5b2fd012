//! A `…/set` payload from any MQTT client, parsed as the agent parses it, and an
//! `agent/get` or `agent/peers` request payload, read for its `reply-to`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pimesh::api;

fuzz_target!(|payload: &[u8]| {
    if let Ok(request) = api::parse_set(payload) {
        // What parse_set accepts must pass the same check again, as forwarded commands do.
        assert_eq!(api::check(&request), Ok(()));
    }
    let _ = serde_json::from_slice::<api::GetRequest>(payload);
});
