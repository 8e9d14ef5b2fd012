//! A topic any MQTT client can publish on, classified as the agent classifies it: the public
//! interface's routes and the mesh's topics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pimesh::api;
use pimesh::mesh::proto::Topics;

fuzz_target!(|topic: &[u8]| {
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    api::route("pimesh", topic);
    let topics = Topics {
        base: "pimesh".into(),
    };
    topics.classify(topic);
});
