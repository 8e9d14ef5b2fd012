//! Bytes from a WebSocket client: its handshake request (the front door's answer, subprotocol
//! choice included) and the frames that follow, decoded with the front door's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    pimesh::door::ws::fuzz(bytes);
});
