//! rumqttc's MQTT 5 codec on arbitrary bytes from a client: read packets until the stream
//! is exhausted or invalid, and write each one back and read it again. A panic here would
//! abort the agent (release builds use `panic = "abort"`).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttc::v5::mqttbytes::v5::Packet;

/// Large enough that the size limit never hides a packet the fuzzer built.
const MAX_PACKET: Option<u32> = Some(1 << 20);

fuzz_target!(|data: &[u8]| {
    let mut stream = BytesMut::from(data);
    while let Ok(packet) = Packet::read(&mut stream, MAX_PACKET) {
        let mut encoded = BytesMut::new();
        if packet.write(&mut encoded, MAX_PACKET).is_ok() {
            let _ = Packet::read(&mut encoded, MAX_PACKET);
        }
    }
});
