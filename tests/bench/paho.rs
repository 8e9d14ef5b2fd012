//! The round trip Home Assistant sees: default paho-mqtt clients (Debian's python3-paho-mqtt,
//! no TCP_NODELAY) publishing at QoS 1, timed from the publish call until the message is back.
//! Without TCP_NODELAY a client may send a packet in two writes, or a packet after its PUBACK
//! for the message before, and hold the second write until the first is acknowledged; a broker
//! that delays its ACKs then costs ~40 ms per message.
//!
//! Two patterns, since brokers differ on them: [`Pattern::Apart`], one client publishing and
//! another subscribed (a switch's command and its state, as Home Assistant and a device
//! exchange them), and [`Pattern::Own`], one client subscribed to what it publishes, whose
//! PUBACK for each message it gets back is still unacknowledged when it publishes the next.

use crate::report::Latency;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Prints one round trip in microseconds per line, the warm-up ones left out.
const SCRIPT: &str = r#"
import sys, threading, time
import paho.mqtt.client as mqtt
port, user, pw, warmup, samples, apart = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "apart"
got, subscribed = threading.Event(), threading.Event()
def client(name):
    c = mqtt.Client(name)
    if user:
        c.username_pw_set(user, pw)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c
sub = client("bench-paho-sub")
sub.on_message = lambda c, u, m: got.set()
sub.on_subscribe = lambda *args: subscribed.set()
sub.subscribe("bench/paho", 1)
assert subscribed.wait(10), "no SUBACK"
pub = client("bench-paho-pub") if apart else sub
for i in range(warmup + samples):
    got.clear()
    t = time.perf_counter()
    pub.publish("bench/paho", "x" * 20, qos=1)
    assert got.wait(5), "no message back"
    if i >= warmup:
        print(int((time.perf_counter() - t) * 1e6))
for c in {sub, pub}:
    c.loop_stop()
    c.disconnect()
"#;

/// Who publishes and who gets the message back.
#[derive(Clone, Copy, Debug)]
pub enum Pattern {
    /// One client publishes, another is subscribed.
    Apart,
    /// One client is subscribed to what it publishes.
    Own,
}

/// `warmup` + `samples` round trips of default paho-mqtt clients through the broker on
/// `port`; the latency of the last `samples`.
pub fn round_trips(port: u16, pattern: Pattern, warmup: usize, samples: usize) -> Result<Latency> {
    let mode = match pattern {
        Pattern::Apart => "apart",
        Pattern::Own => "own",
    };
    let (user, password) = crate::support::maybe_creds(port).unwrap_or_default();
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, &port.to_string(), &user, &password])
        .args([warmup.to_string(), samples.to_string(), mode.to_string()])
        .output()
        .context("/usr/bin/python3 with python3-paho-mqtt (make deps installs it)")?;
    if !out.status.success() {
        bail!(
            "paho-mqtt round trips on port {port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let samples: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().map(Duration::from_micros))
        .collect::<Result<_, _>>()
        .context("paho-mqtt round trips are numbers")?;
    if samples.is_empty() {
        bail!("no paho-mqtt round trip measured on port {port}");
    }
    Ok(Latency::of(samples))
}
