//! A `pimesh run` process under test: started on a fresh data dir and a free port (or in a
//! network namespace), waited for until ready, stopped, killed and restarted; its sim pins,
//! its CLI and what it reports (objects, peers, ports, UUID, log). Its log is printed when a
//! test fails.

use super::registry::{creds, register, with_invitation};
use super::{bin, cli, free_port, text, wait_until, DEADLINE};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    /// Network namespace it runs in, if not the test's own.
    pub netns: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Agent {
    /// Starts `pimesh run` on a fresh data dir and a free port, with extra args, and waits
    /// until its broker answers.
    pub fn start(extra: &[&str]) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut a = Agent::start_on_free_port(&dir, extra);
        a._tmp = Some(tmp);
        a
    }

    /// Starts `pimesh run` on `dir` with a free port. A port that was free when chosen can be
    /// taken by another test's agent before ours binds it (its MQTT 5 port is searched for
    /// from 1000 above its own): then it tries again with another port.
    pub fn start_on_free_port(dir: &Path, extra: &[&str]) -> Agent {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let args = with_invitation(&args);
        for _ in 0..4 {
            let mut agent = Agent::spawned(dir, free_port(), args.clone());
            let port_taken = agent.try_wait_ready().is_err()
                && std::fs::read_to_string(dir.join("test-agent.log"))
                    .is_ok_and(|l| l.contains("already in use"));
            if !port_taken {
                agent.wait_ready();
                return agent;
            }
            let _ = std::fs::remove_file(dir.join("test-agent.log"));
        }
        panic!("no free port for an agent after 4 tries");
    }

    /// Starts `pimesh run` with a given data dir and port.
    pub fn start_in(dir: &Path, port: u16, extra: &[&str]) -> Agent {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut agent = Agent::spawned(dir, port, with_invitation(&args));
        agent.wait_ready();
        agent
    }

    /// The process started, not yet ready.
    fn spawned(dir: &Path, port: u16, args: Vec<String>) -> Agent {
        Agent {
            child: spawn(dir, port, &args, None),
            dir: dir.to_path_buf(),
            port,
            args,
            netns: None,
            _tmp: None,
        }
    }

    /// Starts `pimesh run` inside network namespace `netns`.
    pub fn start_in_netns(netns: &str, dir: &Path, port: u16, extra: &[&str]) -> Agent {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let args = with_invitation(&args);
        let child = spawn(dir, port, &args, Some(netns));
        let mut agent = Agent {
            child,
            dir: dir.to_path_buf(),
            port,
            args,
            netns: Some(netns.to_string()),
            _tmp: None,
        };
        agent.wait_ready();
        agent
    }

    /// Waits until the agent is ready; Err if it exited during start.
    fn try_wait_ready(&mut self) -> Result<(), ()> {
        let pid = self.child.id();
        let info = self.dir.join("agent.json");
        let port = self.port;
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(());
            }
            let ok = std::fs::read_to_string(&info)
                .map(|t| t.contains(&format!("\"pid\": {pid}")))
                .unwrap_or(false);
            if ok
                && (self.netns.is_some()
                    || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Waits until agent.json names our pid and the broker accepts connections.
    pub fn wait_ready(&mut self) {
        let pid = self.child.id();
        let info = self.dir.join("agent.json");
        let port = self.port;
        let netns = self.netns.clone();
        let child = &mut self.child;
        wait_until("agent to start", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agent exited during start with {status}");
            }
            let ok = std::fs::read_to_string(&info)
                .map(|t| t.contains(&format!("\"pid\": {pid}")))
                .unwrap_or(false);
            ok && (netns.is_some() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        });
        let port5 = std::fs::read_to_string(&info)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["mqtt5-port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        let tls_port = std::fs::read_to_string(&info)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["tls-port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        register(port, port5, tls_port, &self.dir, self.netns.as_deref());
    }

    /// This agent's own credentials (user `local`), as its CLI uses them.
    pub fn credentials(&self) -> (String, String) {
        creds(self.port)
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

    /// Starts the same agent again with `extra` arguments added to its own.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self.restart();
    }

    /// Starts the same agent again (same data dir, port and args).
    pub fn restart(&mut self) {
        self.child = spawn(&self.dir, self.port, &self.args, self.netns.as_deref());
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
        match &self.netns {
            None => cli(&all),
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns, bin()])
                .args(&all)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run pimesh in netns"),
        }
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
        if std::thread::panicking() {
            // What the agent saw is what explains a failed test, in CI most of all.
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- last {} log lines of the agent in {} ---\n{}",
                tail.len(),
                self.dir.display(),
                tail.join("\n")
            );
        }
    }
}

impl Agent {
    /// `127.0.0.1:<port>`, for `--peer` and `--via`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every object as `pimesh get --json` returns it, by id.
    pub fn all(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let out = self.cli(&["get", "--json", "--timeout", "10"]);
        if !out.status.success() {
            return Default::default();
        }
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.into_iter()
            .filter_map(|o| Some((o["id"].as_str()?.to_string(), o)))
            .collect()
    }

    /// `pimesh peers --json`.
    pub fn peers(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["peers", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Status of the peer called `name` in this agent's view (`online`, `offline`, …).
    pub fn peer_status(&self, name: &str) -> String {
        self.peers()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The port the agent serves MQTT over TLS on, as its runtime file advertises it.
    pub fn tls_port(&self) -> u16 {
        let text = std::fs::read_to_string(self.dir.join("agent.json")).expect("agent.json");
        let info: serde_json::Value = serde_json::from_str(&text).expect("agent.json is JSON");
        info["tls-port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("agent.json names the TLS port")
    }

    /// The port the agent serves MQTT 5 on, as its runtime file advertises it.
    pub fn mqtt5_port(&self) -> u16 {
        let text = std::fs::read_to_string(self.dir.join("agent.json")).expect("agent.json");
        let info: serde_json::Value = serde_json::from_str(&text).expect("agent.json is JSON");
        info["mqtt5-port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("agent.json names the MQTT 5 port")
    }

    /// The agent's instance UUID, as its runtime file advertises it.
    pub fn uuid(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("agent.json")).expect("agent.json");
        let info: serde_json::Value = serde_json::from_str(&text).expect("agent.json is JSON");
        info["uuid"]
            .as_str()
            .expect("agent.json names the UUID")
            .to_string()
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("test-agent.log")).unwrap_or_default()
    }
}

fn spawn(dir: &Path, port: u16, args: &[String], netns: Option<&str>) -> Child {
    let mut cmd = match netns {
        None => Command::new(bin()),
        Some(ns) => {
            // `ip netns exec` execs the program, so the child's pid is the agent's.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, bin()]);
            c
        }
    };
    // An agent without plaintext ports gets the test's port as its TLS port.
    let port_flag = if args.iter().any(|a| a == "--no-plaintext") {
        "--tls-port"
    } else {
        "--port"
    };
    cmd.arg("run")
        .arg("--data-dir")
        .arg(dir)
        .arg(port_flag)
        .arg(port.to_string())
        .args(args)
        // Tests use loopback and namespaces they make, never the host's LAN: no mDNS
        // multicast outside a namespace.
        .args(netns.is_none().then_some("--no-mdns"))
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

/// A config for a sim board holding `<p>-light` (GPIO 17), `<p>-fan` (GPIO 27) and
/// `<p>-button` (GPIO 5, pull-up, active low), so instances of one mesh have distinct objects.
pub fn node_config(p: &str) -> String {
    format!(
        "[board]\nbackend = \"sim\"\n\
         [[relay]]\nid = \"{p}-light\"\npin = 17\nroom = \"room-{p}\"\n\
         [[relay]]\nid = \"{p}-fan\"\npin = 27\nroom = \"room-{p}\"\n\
         [[input]]\nid = \"{p}-button\"\npin = 5\npull = \"up\"\nactive-low = true\n"
    )
}

/// Starts an agent named `name` with `config` (written into its data dir) and extra args.
pub fn start_node(name: &str, config: &str, extra: &[&str]) -> Agent {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("pimesh.toml");
    std::fs::write(&cfg, config).expect("write config");
    let mut args: Vec<String> = vec![
        "--name".into(),
        name.into(),
        "--config".into(),
        cfg.to_string_lossy().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = tmp.path().join("data");
    let mut a = Agent::start_on_free_port(&dir, &args);
    a._tmp = Some(tmp);
    a
}
