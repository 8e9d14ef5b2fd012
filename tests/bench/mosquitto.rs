//! The baseline broker: Debian's `mosquitto` on a free loopback port with a minimal config,
//! killed when dropped.

use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Mosquitto.
pub struct Mosquitto {
    /// The broker process.
    child: Child,
    /// Its loopback port.
    pub port: u16,
    /// Holds the config file (and the broker's log) for the run.
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto -c <config>` listening on 127.0.0.1 only, anonymous clients allowed,
    /// and waits until it accepts connections. TCP_NODELAY is on at the broker too, as on
    /// pimesh's embedded broker: with Mosquitto's default (off) every QoS 1 hop waits for
    /// Nagle and delayed ACKs (~44 ms round trip measured here), which is no baseline.
    pub fn start() -> Result<Mosquitto> {
        let dir = tempfile::tempdir().context("temp dir for mosquitto")?;
        let port = crate::support::free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"),
        )
        .context("writing mosquitto.conf")?;
        let log = std::fs::File::create(dir.path().join("mosquitto.log"))
            .context("creating mosquitto.log")?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting mosquitto (apt install mosquitto, or make deps)")?;
        let mut m = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                bail!("mosquitto exited during start with {status}");
            }
            if Instant::now() > end {
                bail!("mosquitto did not listen on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(m)
    }

    /// The first line of `mosquitto -h`, e.g. `mosquitto version 2.0.11`.
    pub fn version() -> String {
        Command::new("mosquitto")
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| "mosquitto (version unknown)".into())
    }

    /// The broker's process id, for its memory and for the watchdog.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
