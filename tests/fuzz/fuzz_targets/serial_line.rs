//! Bytes from a serial device, cut into lines and read by the line protocol as the serial
//! task does, with channel commands and timeouts between the lines.
//!
//! The first input byte steers: its low nibble is the size of the chunks the bytes arrive in
//! (1 to 16, as reads from a tty), its high nibble seeds which command waits before each line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pimesh::config::SerialConfig;
use pimesh::model::ObjectId;
use pimesh::plugins::serial_line::{LineBuffer, LineProtocol};
use std::path::Path;
use std::sync::OnceLock;

/// A line device with two channels, replies and a fail prefix, from a real config.
const CONFIG: &str = include_str!("../seeds/config/serial-line.toml");

fn device() -> &'static SerialConfig {
    static DEVICE: OnceLock<SerialConfig> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let config = pimesh::config::parse(CONFIG, Path::new("serial-line.toml")).unwrap();
        config.serials.into_iter().next().unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&steer, bytes)) = data.split_first() else {
        return;
    };
    let device = device();
    let channels: Vec<&ObjectId> = device.channels.iter().map(|c| &c.id).collect();
    let mut protocol = LineProtocol::new(device);
    let mut buffer = LineBuffer::default();
    let mut turn = usize::from(steer >> 4);
    for chunk in bytes.chunks(usize::from(steer & 0x0f) + 1) {
        for line in buffer.push(chunk) {
            match turn % 4 {
                0 => protocol.timed_out(),
                n => {
                    let on = n % 2 == 1;
                    protocol.command(channels[n % channels.len()], on);
                }
            }
            turn = turn.wrapping_add(line.len());
            protocol.line(&line);
        }
    }
});
