//! Shared test support: real `pimesh` processes on loopback, each with its own data dir and
//! port, their sim pin files, the CLI, and waiting on conditions with a deadline.
#![allow(dead_code)]

pub mod ha_schema;
pub mod lan;
pub mod raw;

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

/// Every agent this test process started: its ports (3.1.1 and 5), data dir and network
/// namespace. Clients find credentials by port here, and `--peer` finds whom to ask for an
/// invitation.
static AGENTS: std::sync::Mutex<Vec<Registered>> = std::sync::Mutex::new(Vec::new());

/// An agent in [`AGENTS`]: MQTT 3.1.1 port, MQTT 5 port, data dir, network namespace.
type Registered = (u16, u16, PathBuf, Option<String>);

/// The data dir and namespace of the agent serving `port` (either version), if one does.
fn agent_on(port: u16) -> Option<(PathBuf, Option<String>)> {
    AGENTS
        .lock()
        .ok()?
        .iter()
        .rev()
        .find(|(p, p5, ..)| *p == port || *p5 == port)
        .map(|(_, _, d, ns)| (d.clone(), ns.clone()))
}

/// The instance's own credentials of the agent serving `port`: what its local tools use.
/// Tests use them as "a client that knows the password"; tests of refusals use none.
pub fn creds(port: u16) -> (String, String) {
    let (dir, _) =
        agent_on(port).unwrap_or_else(|| panic!("no agent of this test serves port {port}"));
    let password =
        std::fs::read_to_string(dir.join("credentials")).expect("the agent's credentials file");
    ("local".to_string(), password.trim().to_string())
}

/// [`creds`], or None for a port no agent of this test serves (e.g. a Mosquitto baseline).
pub fn maybe_creds(port: u16) -> Option<(String, String)> {
    agent_on(port).map(|_| creds(port))
}

/// A fresh member login of the instance of `dir` (its key, its mesh): what a compromised
/// member could present. Each call makes a new proof (a proof is accepted once).
pub fn member_login(dir: &Path) -> (String, String) {
    let key = pimesh::secret::instance_key(dir).expect("instance key");
    let mesh = pimesh::membership::MeshFile::load(dir)
        .expect("mesh file")
        .expect("a mesh");
    let uuid: uuid::Uuid = std::fs::read_to_string(dir.join("instance-id"))
        .expect("instance-id")
        .trim()
        .parse()
        .expect("a UUID");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    (
        format!("member:{uuid}"),
        pimesh::door::auth::member_proof(&key, mesh.mesh, uuid, now),
    )
}

/// `-u USER -P PASSWORD` for Debian's mosquitto clients against the agent on `port`.
pub fn mosquitto_auth(port: u16) -> Vec<String> {
    let (u, p) = creds(port);
    vec!["-u".into(), u, "-P".into(), p]
}

/// `pimesh invite` on the agent of `dir`: a token to join its mesh.
pub fn invite(dir: &Path, netns: Option<&str>) -> String {
    let dir_s = dir.to_string_lossy().to_string();
    let args = ["invite", "--data-dir", dir_s.as_str()];
    let run = || match netns {
        None => cli(&args),
        Some(ns) => Command::new("ip")
            .args(["netns", "exec", ns, bin()])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run pimesh in netns"),
    };
    // An instance that was just started with --join refuses to invite until it has joined,
    // as a person would see and try again (and a CLI that read the CA a moment before the
    // join replaced it is refused once).
    let mut out = run();
    wait_until("the inviting instance to have joined its mesh", || {
        let again = ["still joining", "refused the connection"];
        if !again.iter().any(|a| text(&out.stderr).contains(a)) {
            return true;
        }
        out = run();
        false
    });
    assert!(
        out.status.success(),
        "pimesh invite failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// Adds `--join TOKEN` for the first `--peer` that is an agent of this test, as a person
/// does when adding a Pi: invite on a member, then join.
fn with_invitation(args: &[String]) -> Vec<String> {
    let mut args = args.to_vec();
    if args.iter().any(|a| a == "--join") {
        return args;
    }
    let peer_port = args
        .windows(2)
        .filter(|w| w[0] == "--peer")
        .filter_map(|w| {
            w[1].rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
        })
        .find(|p| agent_on(*p).is_some());
    if let Some((dir, ns)) = peer_port.and_then(agent_on) {
        args.push("--join".into());
        args.push(invite(&dir, ns.as_deref()));
    }
    args
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
        if let Ok(mut agents) = AGENTS.lock() {
            agents.retain(|(p, ..)| *p != port && *p != tls_port);
            agents.push((port, port5, self.dir.clone(), self.netns.clone()));
            // Its TLS port serves the same credentials (`--peer` may name it too).
            agents.push((tls_port, tls_port, self.dir.clone(), self.netns.clone()));
        }
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

/// A network namespace joined to the test's own by a veth pair: a second host for partition
/// tests. Removed on drop.
pub struct Netns {
    /// Namespace name.
    pub name: String,
    /// The veth end in the test's namespace; bringing it down cuts the namespace off.
    host_if: String,
    /// Address of the test's end, reachable from inside.
    pub host_ip: String,
    /// Address of the inside end, reachable from the test.
    pub inner_ip: String,
}

impl Netns {
    /// Creates the namespace and its link (needs root, as CI has).
    pub fn create() -> Netns {
        let id = std::process::id() % 10_000;
        let net = 1 + std::process::id() % 250;
        let ns = Netns {
            name: format!("pimesh-test-{id}"),
            host_if: format!("pmh{id}"),
            host_ip: format!("10.213.{net}.1"),
            inner_ip: format!("10.213.{net}.2"),
        };
        let inner_if = format!("pmi{id}");
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &ns.host_if])
            .status();
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &inner_if,
        ]);
        ns.ip(&["link", "set", &inner_if, "netns", &ns.name]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ns.ip(&["link", "set", &ns.host_if, "up"]);
        let inner_cidr = format!("{}/24", ns.inner_ip);
        let inside: [&[&str]; 3] = [
            &["addr", "add", &inner_cidr, "dev", &inner_if],
            &["link", "set", &inner_if, "up"],
            &["link", "set", "lo", "up"],
        ];
        for args in inside {
            let mut all: Vec<&str> = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ns.ip(&all);
        }
        ns
    }

    /// Pulls the cable: nothing crosses until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Plugs the cable back in.
    pub fn heal(&self) {
        self.ip(&["link", "set", &self.host_if, "up"]);
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip")
            .args(args)
            .status()
            .expect("ip (iproute2) must be installed");
        assert!(
            st.success(),
            "ip {} failed (network namespace tests need root)",
            args.join(" ")
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
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

/// Runs `mosquitto_pub` against a port.
pub fn mosquitto_pub(port: u16, topic: &str, message: &str) {
    mosquitto_pub_as_client(port, None, topic, message)
}

/// Runs `mosquitto_pub` against a port with a given MQTT client id (a client that sends
/// again, as opposed to another client).
pub fn mosquitto_pub_as_client(port: u16, client: Option<&str>, topic: &str, message: &str) {
    let mut cmd = Command::new("mosquitto_pub");
    if let Some(client) = client {
        cmd.args(["-i", client]);
    }
    let st = cmd
        .args(mosquitto_auth(port))
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
        .args(mosquitto_auth(port))
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

/// An MQTT subscriber that is subscribed (SubAck received) when `new` returns, so nothing
/// published afterwards can be missed. Collects `topic payload` lines like `mosquitto_sub -v`.
pub struct Subscriber {
    /// Received lines.
    rx: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    /// Connects to the broker on `port` and subscribes to `topic`.
    pub fn new(port: u16, topic: &str) -> Subscriber {
        Subscriber::new_as(port, topic, creds(port))
    }

    /// [`Subscriber::new`] with the given user name and password.
    pub fn new_as(port: u16, topic: &str, login: (String, String)) -> Subscriber {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(format!("test-sub-{}", free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_credentials(login.0, login.1);
        let (client, mut connection) = Client::new(opts, 100);
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .expect("subscribe");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _client = client;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let text = String::from_utf8_lossy(&p.payload);
                        let line = format!("{} {}", p.topic, text.trim_end_matches('\n'));
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        ready_rx
            .recv_timeout(DEADLINE)
            .expect("no SubAck from the broker in time");
        Subscriber { rx }
    }

    /// Every line received so far and not yet taken, without waiting: for tests that
    /// gather messages inside [`wait_until`].
    pub fn drain(&self) -> Vec<String> {
        self.rx.try_iter().collect()
    }

    /// The first `count` lines received, waiting up to the deadline for them.
    pub fn take(&self, count: usize) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        let mut lines = Vec::new();
        while lines.len() < count {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }
}

/// A socat process joining two pseudo-terminals, linked as `<dir>/dev` and `<dir>/fake`:
/// a serial device (`dev`) whose other end a test plays (`fake`).
pub struct Socat {
    /// The socat process.
    child: Child,
    /// Where the links are.
    dir: PathBuf,
}

impl Socat {
    /// Starts socat and waits until both links exist.
    pub fn start(dir: &Path) -> Socat {
        let link = |name: &str| format!("pty,raw,echo=0,link={}", dir.join(name).display());
        let child = Command::new("socat")
            .args([&link("dev"), &link("fake")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed (apt package socat)");
        wait_until("socat's pty links", || {
            dir.join("dev").exists() && dir.join("fake").exists()
        });
        Socat {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Kills socat (the device "unplugged") and removes the links it leaves behind.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for name in ["dev", "fake"] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Agent {
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
}

/// What an MQTT 5 request got back on its response topic.
#[derive(Debug)]
pub struct V5Answer {
    /// The answer's payload, as JSON.
    pub json: serde_json::Value,
    /// The correlation data property the answer carried.
    pub correlation: Option<Vec<u8>>,
}

/// An MQTT 5 request as Home Assistant or any MQTT 5 client makes it: subscribe to
/// `response_topic` (SubAck awaited), publish `payload` on `topic` with the response topic
/// and `correlation` as properties, and return the first message on the response topic.
pub fn mqtt5_request(
    port: u16,
    topic: &str,
    payload: &str,
    response_topic: &str,
    correlation: &[u8],
) -> V5Answer {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Event, MqttOptions};
    let mut opts = MqttOptions::new(format!("test-v5-{}", free_port()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (u, p) = creds(port);
    opts.set_credentials(u, p);
    let (client, mut connection) = Client::new(opts, 100);
    client
        .subscribe(response_topic, QoS::AtLeastOnce)
        .expect("subscribe");
    let end = Instant::now() + DEADLINE;
    let mut published = false;
    for event in connection.iter() {
        assert!(Instant::now() < end, "no MQTT 5 answer on {response_topic}");
        match event.expect("MQTT 5 connection failed") {
            Event::Incoming(Packet::SubAck(_)) if !published => {
                let props = PublishProperties {
                    response_topic: Some(response_topic.to_string()),
                    correlation_data: Some(correlation.to_vec().into()),
                    ..Default::default()
                };
                client
                    .publish_with_properties(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        payload.to_string(),
                        props,
                    )
                    .expect("publish");
                published = true;
            }
            Event::Incoming(Packet::Publish(p)) => {
                let json = serde_json::from_slice(&p.payload).expect("the answer is JSON");
                let correlation = p
                    .properties
                    .and_then(|props| props.correlation_data)
                    .map(|d| d.to_vec());
                return V5Answer { json, correlation };
            }
            _ => {}
        }
    }
    panic!("the MQTT 5 connection ended before an answer on {response_topic}");
}

/// A small tmpfs mounted on a directory, to run a disk out of space (needs root, as CI has).
/// Unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on `path`, created if missing.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mount tmpfs on {} (needs root, as CI has)",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Fills it with `name` until the disk is full; returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

impl Agent {
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

/// Publishes `payload` (any size: it goes through stdin) on `topic` at QoS 1, retained if
/// asked, with `mosquitto_pub`: how an outsider on the broker's port would.
pub fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    publish_as(port, creds(port), topic, payload, retain)
}

/// [`publish`] with the given user name and password.
pub fn publish_as(port: u16, login: (String, String), topic: &str, payload: &[u8], retain: bool) {
    use std::io::Write;
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", &login.0, "-P", &login.1])
        .args(["-t", topic, "-s"]);
    if retain {
        cmd.arg("-r");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients) must be installed");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(payload).expect("write payload");
    drop(stdin);
    assert!(child.wait().expect("mosquitto_pub").success());
}

/// Publishes every line of `lines` as one message on `topic` (QoS 1), over one connection.
pub fn publish_lines(port: u16, topic: &str, lines: &[String]) {
    publish_lines_as(port, creds(port), topic, lines)
}

/// [`publish_lines`] with the given user name and password.
pub fn publish_lines_as(port: u16, login: (String, String), topic: &str, lines: &[String]) {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", &login.0, "-P", &login.1])
        .args(["-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients) must be installed");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write line");
    }
    drop(stdin);
    assert!(child.wait().expect("mosquitto_pub").success());
}
