//! What the web page's server decodes itself, past hyper's parser: the login form, the
//! Cookie and Authorization headers, and the floor plan's rooms from any positions (NaN,
//! infinities, huge values) with a drop anywhere. The first byte picks which.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pimesh::web::{layout, sessions};

fuzz_target!(|data: &[u8]| {
    let Some((&steer, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match steer % 4 {
        0 => {
            for (k, v) in sessions::form_pairs(rest) {
                // Lossy UTF-8: an invalid byte becomes U+FFFD, three bytes.
                assert!(k.len() + v.len() <= 3 * rest.len());
            }
        }
        1 => {
            if let Some(v) = sessions::cookie(&text, "pimesh-x") {
                assert!(!v.contains(';'));
            }
        }
        2 => {
            let _ = sessions::basic(&text);
        }
        _ => {
            let numbers: Vec<f64> = rest
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            let positions: Vec<(String, f64, f64)> = numbers
                .chunks_exact(2)
                .enumerate()
                .map(|(i, p)| (format!("room-{}", i % 3), p[0], p[1]))
                .collect();
            let areas = layout::areas(positions.iter().map(|(r, x, y)| (r.as_str(), *x, *y)), &[]);
            for (_, x, y) in &positions {
                if let Some(room) = layout::room_at(&areas, *x, *y) {
                    assert!(areas.iter().any(|a| a.room == room));
                }
            }
        }
    }
});
