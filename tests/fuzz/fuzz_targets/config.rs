//! A config file's text, parsed and validated as `pimesh run` and `pimesh check` do.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &[u8]| {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let _ = pimesh::config::parse(text, Path::new("pimesh.toml"));
});
