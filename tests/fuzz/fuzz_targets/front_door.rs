//! The front door's own decoding of client bytes: the version read from the first CONNECT,
//! then every packet as `door::wire` turns it into pimesh's typed packets, and what comes
//! back from an encode in both versions. Also the other text a stranger can hand an agent:
//! invitation tokens and join requests. A panic here would abort the agent.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pimesh::door::wire::{self, Inbound, Outbound};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pimesh::membership::Token::decode(text);
    }
    let _ = serde_json::from_slice::<pimesh::membership::JoinRequest>(data);
    let Ok(Some(version)) = wire::sniff_version(data) else {
        return;
    };
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = wire::decode(version, &mut buf, 1 << 20) {
        if let Inbound::Publish(m) = packet {
            for v in [wire::Version::V4, wire::Version::V5] {
                let mut out = BytesMut::new();
                if wire::encode(v, &Outbound::Publish(m.clone()), &mut out).is_ok() {
                    let _ = wire::decode(v, &mut out, 1 << 20);
                }
            }
        }
    }
});
