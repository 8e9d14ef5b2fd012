//! Shared test support: real `pimesh` processes on loopback, each with its own data dir and
//! port, their sim pin files, the CLI, and waiting on conditions with a deadline.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// Polls `cond` every 10 ms until it holds or the deadline passes; panics with `what` then.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running agent process.
pub struct Agent {
    /// The child process.
    pub child: Child,
    /// Its data dir (kept alive for the test's duration).
    pub dir: PathBuf,
    /// Its broker port.
    pub port: u16,
    /// Extra arguments it was started with (for restarts).
    args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Agent {
    /// Starts `pimesh run` on a fresh data dir and a free port, with extra args, and waits
    /// until its broker answers.
    pub fn start(extra: &[&str]) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut a = Agent::start_in(&dir, free_port(), extra);
        a._tmp = Some(tmp);
        a
    }

    /// Starts `pimesh run` with a given data dir and port.
    pub fn start_in(dir: &Path, port: u16, extra: &[&str]) -> Agent {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn(dir, port, &args);
        let mut agent = Agent {
            child,
            dir: dir.to_path_buf(),
            port,
            args,
            _tmp: None,
        };
        agent.wait_ready();
        agent
    }

    /// Waits until agent.json names our pid and the broker accepts connections.
    pub fn wait_ready(&mut self) {
        let pid = self.child.id();
        let info = self.dir.join("agent.json");
        let port = self.port;
        let child = &mut self.child;
        wait_until("agent to start", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agent exited during start with {status}");
            }
            let ok = std::fs::read_to_string(&info)
                .map(|t| t.contains(&format!("\"pid\": {pid}")))
                .unwrap_or(false);
            ok && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills the process with SIGKILL (no clean stop) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(Instant::now() < end, "agent did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the same agent again (same data dir, port and args).
    pub fn restart(&mut self) {
        self.child = spawn(&self.dir, self.port, &self.args);
        self.wait_ready();
    }

    /// The sim file of GPIO `n`.
    pub fn pin_path(&self, n: u8) -> PathBuf {
        self.dir.join("sim").join(format!("gpio{n}"))
    }

    /// The level in GPIO `n`'s sim file, if readable.
    pub fn pin(&self, n: u8) -> Option<String> {
        std::fs::read_to_string(self.pin_path(n))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Drives input GPIO `n` like a person would: writes its sim file.
    pub fn set_pin(&self, n: u8, high: bool) {
        let tmp = self.dir.join("sim").join(format!(".gpio{n}.test"));
        std::fs::write(&tmp, if high { "1\n" } else { "0\n" }).expect("write pin");
        std::fs::rename(&tmp, self.pin_path(n)).expect("rename pin");
    }

    /// Runs a CLI command against this agent (through its data dir).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.dir.to_string_lossy().to_string();
        all.extend(["--data-dir", &dir]);
        cli(&all)
    }

    /// `pimesh get OBJECT --json` as parsed JSON.
    pub fn get(&self, object: &str) -> serde_json::Value {
        let out = self.cli(&["get", object, "--json"]);
        assert!(
            out.status.success(),
            "get {object} failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("get --json prints JSON")
    }

    /// The `state` field of an object.
    pub fn state(&self, object: &str) -> String {
        self.get(object)["state"].as_str().unwrap_or("").to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, port: u16, args: &[String]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .arg("--data-dir")
        .arg(dir)
        .arg("--port")
        .arg(port.to_string())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    std::fs::create_dir_all(dir).expect("data dir");
    cmd.stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("test-agent.log"))
            .map(Stdio::from)
            .unwrap_or(Stdio::null()),
    );
    cmd.spawn().expect("start pimesh")
}

/// Runs the CLI with `args`.
pub fn cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pimesh")
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

/// Runs `mosquitto_pub` against a port.
pub fn mosquitto_pub(port: u16, topic: &str, message: &str) {
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            message,
        ])
        .status()
        .expect("mosquitto_pub (apt install mosquitto-clients) must be installed");
    assert!(st.success(), "mosquitto_pub failed");
}

/// Runs `mosquitto_sub` until it has `count` messages (or the deadline), returning
/// `topic payload` lines.
pub fn mosquitto_sub(port: u16, topic: &str, count: usize) -> Vec<String> {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-v",
            "-C",
            &count.to_string(),
            "-W",
            &DEADLINE.as_secs().to_string(),
        ])
        .output()
        .expect("mosquitto_sub (apt install mosquitto-clients) must be installed");
    text(&out.stdout).lines().map(str::to_string).collect()
}
