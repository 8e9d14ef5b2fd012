//! The round trip Home Assistant sees: a default paho-mqtt client (Debian's python3-paho-mqtt,
//! no TCP_NODELAY) publishing at QoS 1 to a topic it is subscribed to, timed from the publish
//! call until the message is back. Without TCP_NODELAY a client may send a packet in two
//! writes and hold the second until the first is acknowledged, so a broker that delays its
//! ACKs costs ~40 ms per message here.

use crate::report::Latency;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Prints one round trip in microseconds per line, the warm-up ones left out.
const SCRIPT: &str = r#"
import sys, threading, time
import paho.mqtt.client as mqtt
port, user, pw, warmup, samples = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
got, subscribed = threading.Event(), threading.Event()
c = mqtt.Client("bench-paho-default")
if user:
    c.username_pw_set(user, pw)
c.on_message = lambda c, u, m: got.set()
c.on_subscribe = lambda *args: subscribed.set()
c.connect("127.0.0.1", port)
c.loop_start()
c.subscribe("bench/paho", 1)
assert subscribed.wait(10), "no SUBACK"
for i in range(warmup + samples):
    got.clear()
    t = time.perf_counter()
    c.publish("bench/paho", "x" * 20, qos=1)
    assert got.wait(5), "no message back"
    if i >= warmup:
        print(int((time.perf_counter() - t) * 1e6))
c.loop_stop()
c.disconnect()
"#;

/// `warmup` + `samples` round trips of a default paho-mqtt client through the broker on
/// `port`; the latency of the last `samples`.
pub fn round_trips(port: u16, warmup: usize, samples: usize) -> Result<Latency> {
    let (user, password) = crate::support::maybe_creds(port).unwrap_or_default();
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, &port.to_string(), &user, &password])
        .args([warmup.to_string(), samples.to_string()])
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
