//! Shared test support: real `pimesh` processes on loopback, each with its own data dir and
//! port ([`agent`], found again by port in [`registry`]), their sim pin files, the CLI, MQTT
//! clients ([`mqtt`]), parts of the host a test borrows ([`host`]), and waiting on conditions
//! with a deadline. Their items are re-exported here, so a test says `use support::*`;
//! [`ha_schema`], [`lan`] and [`raw`] are named by path.
#![allow(dead_code)]

mod agent;
pub mod ha_schema;
mod host;
pub mod lan;
mod mqtt;
pub mod raw;
mod registry;

// Each test crate uses its own part of this support (so `dead_code` is allowed above): a
// re-export one crate does not use is not a mistake.
#[allow(unused_imports)]
pub use {agent::*, host::*, mqtt::*, registry::*};

use registry::{agent_on, creds};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long any condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The built binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pimesh")
}

/// A port that was free a moment ago on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Like [`wait_until`] for a condition that is costly to ask (a whole house of 10,000
/// objects through the CLI): polled every 250 ms, with four times the deadline, so the
/// polling itself does not starve the agents it waits for on a loaded machine.
pub fn wait_until_heavy(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE * 4;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `cond` every 10 ms until it holds or the deadline passes; panics with `what` then.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the CLI with `args`.
///
/// With `--via` to an agent of this test, the CLI gets that agent's own credentials through
/// `PIMESH_USER` and `PIMESH_PASSWORD`, as a user with an account would.
pub fn cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).env("RUST_LOG", "warn");
    let via = args
        .windows(2)
        .find(|w| w[0] == "--via")
        .and_then(|w| w[1].rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .filter(|p| agent_on(*p).is_some());
    if let Some(port) = via {
        let (u, p) = creds(port);
        cmd.env("PIMESH_USER", u).env("PIMESH_PASSWORD", p);
    }
    cmd.output().expect("run pimesh")
}

/// Bytes as text, for assertions and messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes a config file into a fresh temp dir and returns (dir guard, path).
pub fn config_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pimesh.toml");
    std::fs::write(&path, contents).expect("write config");
    (dir, path)
}
