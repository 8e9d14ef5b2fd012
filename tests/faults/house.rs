//! The house under test: agents on a LAN of namespaces, the faults that can be done to them,
//! healing, and the commands the driver sends (as CLI processes that run while faults happen).

use crate::support::lan::{Impairment, Lan};
use crate::support::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Instance names, in the order started; the first one invites the others.
pub const NAMES: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
/// Each instance's relay pins: distinct, so a pin file found on the wrong instance shows.
const PINS: [(u8, u8); 5] = [(17, 27), (22, 23), (24, 25), (5, 6), (12, 13)];
/// Virtual objects every instance lists (run round-robin over the live ones).
pub const VIRTUALS: [&str; 2] = ["scene", "away"];
/// The instance that is killed with SIGKILL and restarted.
pub const CRASH: usize = 1;
/// The instance whose store is a small tmpfs that fills up.
pub const DISK: usize = 2;
/// How long the house may take to agree once healed.
pub const CONVERGE: Duration = Duration::from_secs(60);
/// The CLI's own answer timeout, in seconds.
const CLI_TIMEOUT: &str = "5";
/// A CLI still running this long after it started has given no answer at all.
const CLI_HANG: Duration = Duration::from_secs(40);

/// A relay: its id, the instance holding it and its pin there.
pub struct Relay {
    pub id: String,
    pub host: usize,
    pub pin: u8,
}

/// What a command asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Set(bool),
    Move { room: String, x: f64, y: f64 },
}

/// A command the driver sent, and what came back.
#[derive(Debug)]
pub struct Issued {
    pub object: String,
    pub op: Op,
    /// The instance whose CLI sent it.
    pub via: usize,
    pub started: Instant,
    /// The CLI's exit code; None when it had to be killed (no answer at all).
    pub exit: Option<i32>,
    /// Every answer the CLI printed.
    pub answers: Vec<serde_json::Value>,
    pub stderr: String,
}

/// A command whose CLI is still running.
pub struct InFlight {
    pub index: usize,
    child: Child,
}

impl Drop for InFlight {
    /// A test that fails with commands running does not leave their CLIs behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Agents, their LAN and their faults. Fields drop in order: agents first, the LAN last.
pub struct House {
    pub agents: Vec<Agent>,
    /// Whether each agent runs (only [`CRASH`] is ever stopped).
    pub alive: Vec<bool>,
    disk: Option<Tmpfs>,
    filler: Option<PathBuf>,
    pub lan: Lan,
    pub unplugged: Vec<bool>,
    pub impaired: Vec<bool>,
    pub relays: Vec<Relay>,
    /// Every object the driver commands: relays, then virtual objects.
    pub objects: Vec<String>,
    /// When the house was up: times in reports count from here.
    pub t0: Instant,
    /// Every fault done or undone, with when.
    pub events: Vec<(Instant, String)>,
    /// The data dirs, kept when the test fails (the logs and stores explain it).
    tmp: Option<tempfile::TempDir>,
}

impl Drop for House {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            agent.kill9();
        }
        if let (true, Some(tmp)) = (std::thread::panicking(), self.tmp.take()) {
            eprintln!(
                "faults: data dirs and agent logs kept in {}",
                tmp.keep().display()
            );
        }
    }
}

/// The config of instance `k`: two relays that keep their level across a restart, and the
/// shared virtual objects; `broker` is the `[broker]` table's body.
fn config(k: usize, broker: &str) -> String {
    let p = &NAMES[k][..1];
    let (light, fan) = PINS[k];
    let mut cfg = format!("[board]\nbackend = \"sim\"\n[broker]\n{broker}\n");
    for (id, pin) in [(format!("{p}-light"), light), (format!("{p}-fan"), fan)] {
        cfg += &format!(
            "[[relay]]\nid = \"{id}\"\npin = {pin}\npower-on = \"restore\"\nroom = \"room-{p}\"\n"
        );
    }
    for id in VIRTUALS {
        cfg += &format!("[[virtual]]\nid = \"{id}\"\nroom = \"house\"\n");
    }
    cfg
}

impl House {
    /// Starts `n` agents (3 to 5) on a fresh LAN, the [`DISK`] one's store on a tmpfs of
    /// `disk_size`, and waits until they form a full mesh. `broker` goes into each config's
    /// `[broker]` table.
    pub fn start(n: usize, disk_size: &str, broker: &str) -> House {
        assert!((3..=5).contains(&n), "3 to 5 instances");
        let tmp = tempfile::tempdir().expect("tempdir");
        let lan = Lan::create(n);
        let mut disk = None;
        let mut agents: Vec<Agent> = Vec::new();
        let mut first = String::new();
        let mut relays = Vec::new();
        for (k, name) in NAMES.iter().enumerate().take(n) {
            let dir = tmp.path().join(name);
            if k == DISK {
                disk = Some(Tmpfs::mount(&dir.join("store"), disk_size));
            }
            let cfg = tmp.path().join(format!("{name}.toml"));
            std::fs::write(&cfg, config(k, broker)).expect("write config");
            let cfg = cfg.to_string_lossy().to_string();
            let port = free_port();
            let mut args = vec!["--name", name, "--config", &cfg];
            if k > 0 {
                args.extend(["--peer", &first]);
            }
            agents.push(Agent::start_in_netns(lan.ns(k), &dir, port, &args));
            if k == 0 {
                first = format!("{}:{port}", lan.ip(0));
            }
            let p = &name[..1];
            relays.push(Relay {
                id: format!("{p}-light"),
                host: k,
                pin: PINS[k].0,
            });
            relays.push(Relay {
                id: format!("{p}-fan"),
                host: k,
                pin: PINS[k].1,
            });
        }
        let mut objects: Vec<String> = relays.iter().map(|r| r.id.clone()).collect();
        objects.extend(VIRTUALS.iter().map(|v| v.to_string()));
        let house = House {
            agents,
            alive: vec![true; n],
            disk,
            filler: None,
            lan,
            unplugged: vec![false; n],
            impaired: vec![false; n],
            relays,
            objects,
            t0: Instant::now(),
            events: Vec::new(),
            tmp: Some(tmp),
        };
        wait_until("a full mesh", || house.mesh_formed());
        house
    }

    /// Whether every instance sees every other one online.
    pub fn mesh_formed(&self) -> bool {
        self.agents.iter().enumerate().all(|(k, a)| {
            let peers = a.peers();
            NAMES[..self.agents.len()]
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .all(|(_, name)| {
                    peers
                        .iter()
                        .any(|p| p["name"] == *name && p["status"] == "online")
                })
        })
    }

    /// Pulls or plugs host `k`'s cable.
    pub fn set_plugged(&mut self, k: usize, plugged: bool) {
        if plugged {
            self.lan.plug(k);
        } else {
            self.lan.unplug(k);
        }
        self.unplugged[k] = !plugged;
        let what = if plugged { "plugged in" } else { "unplugged" };
        self.event(format!("{} {what}", NAMES[k]));
    }

    /// Notes a fault in [`events`](Self::events).
    fn event(&mut self, what: String) {
        self.events.push((Instant::now(), what));
    }

    /// Impairs host `k`'s outgoing packets (the default impairment: none).
    pub fn set_impaired(&mut self, k: usize, how: Impairment) {
        self.lan.impair(k, how);
        self.impaired[k] = how != Impairment::default();
        self.event(format!("{} impaired: {how:?}", NAMES[k]));
    }

    /// SIGKILL for the [`CRASH`] instance.
    pub fn crash(&mut self) {
        self.agents[CRASH].kill9();
        self.alive[CRASH] = false;
        self.event(format!("{} killed (SIGKILL)", NAMES[CRASH]));
    }

    /// Starts the [`CRASH`] instance again on its data dir.
    pub fn restart(&mut self) {
        self.event(format!("{} restarting", NAMES[CRASH]));
        self.agents[CRASH].restart();
        self.alive[CRASH] = true;
        self.event(format!("{} restarted", NAMES[CRASH]));
    }

    /// Whether the [`DISK`] instance's store is full.
    pub fn disk_full(&self) -> bool {
        self.filler.is_some()
    }

    /// Fills the [`DISK`] instance's store, or makes room again.
    pub fn set_disk_full(&mut self, full: bool) {
        match (full, self.filler.take(), &self.disk) {
            (true, None, Some(disk)) => {
                self.filler = Some(disk.fill("filler"));
                self.event(format!("{}'s disk filled", NAMES[DISK]));
            }
            (false, Some(filler), _) => {
                std::fs::remove_file(filler).expect("remove the filler");
                self.event(format!("{}'s disk has room again", NAMES[DISK]));
            }
            (_, filler, _) => self.filler = filler,
        }
    }

    /// Undoes every fault: cables in, no impairment, the crashed agent running, disk room.
    pub fn heal(&mut self) {
        for k in 0..self.agents.len() {
            if self.unplugged[k] {
                self.set_plugged(k, true);
            }
            if self.impaired[k] {
                self.set_impaired(k, Impairment::default());
            }
        }
        if !self.alive[CRASH] {
            self.restart();
        }
        self.set_disk_full(false);
    }

    /// Every instance's `get --json`, by object id (empty when it did not answer).
    pub fn views(&self) -> Vec<BTreeMap<String, serde_json::Value>> {
        self.agents.iter().map(|a| a.all()).collect()
    }

    /// Waits until every instance shows the same house with every object available and no
    /// conflict; returns it, or panics with what each instance showed.
    pub fn converged(&self) -> BTreeMap<String, serde_json::Value> {
        let end = Instant::now() + CONVERGE;
        loop {
            let views = self.views();
            let agree = views.iter().all(|v| *v == views[0]);
            let whole = self.objects.iter().all(|id| {
                views[0]
                    .get(id)
                    .is_some_and(|o| o["available"] == true && o.get("conflict").is_none())
            });
            if agree && whole {
                return views.into_iter().next().expect("one view");
            }
            if Instant::now() > end {
                let shown: Vec<String> = views
                    .iter()
                    .zip(NAMES)
                    .map(|(v, name)| format!("{name}: {}", brief(v)))
                    .collect();
                panic!(
                    "the instances did not agree within {CONVERGE:?} of healing:\n{}",
                    shown.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts the CLI on instance `via` for `op` on `object`; the answer is collected by
    /// [`finish`](Self::finish).
    pub fn send(&self, log: &mut Vec<Issued>, object: &str, op: Op, via: usize) -> InFlight {
        let agent = &self.agents[via];
        let dir = agent.dir.to_string_lossy().to_string();
        let mut args: Vec<String> = match &op {
            Op::Set(on) => ["set", object, if *on { "on" } else { "off" }]
                .map(String::from)
                .to_vec(),
            Op::Move { room, x, y } => vec![
                "move".into(),
                object.into(),
                room.clone(),
                "--x".into(),
                x.to_string(),
                "--y".into(),
                y.to_string(),
            ],
        };
        args.extend(["--json", "--timeout", CLI_TIMEOUT, "--data-dir", &dir].map(String::from));
        let ns = agent.netns.as_deref().expect("agents run in namespaces");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, bin()])
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run pimesh");
        log.push(Issued {
            object: object.to_string(),
            op,
            via,
            started: Instant::now(),
            exit: None,
            answers: Vec::new(),
            stderr: String::new(),
        });
        InFlight {
            index: log.len() - 1,
            child,
        }
    }

    /// Whether `flight` is over (its answer recorded in `log`); kills a CLI that hangs.
    pub fn poll(log: &mut [Issued], flight: &mut InFlight) -> bool {
        let issued = &mut log[flight.index];
        let status = match flight.child.try_wait() {
            Ok(None) if issued.started.elapsed() < CLI_HANG => return false,
            Ok(None) | Err(_) => {
                let _ = flight.child.kill();
                let _ = flight.child.wait();
                None
            }
            Ok(Some(status)) => Some(status),
        };
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut o) = flight.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = flight.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        issued.exit = status.and_then(|s| s.code());
        issued.answers = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::String(l.into())))
            .collect();
        issued.stderr = err;
        true
    }

    /// Waits for `flight` to be over.
    pub fn finish(log: &mut [Issued], mut flight: InFlight) {
        while !House::poll(log, &mut flight) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pin file of `relay` on its holder.
    pub fn pin_path(&self, relay: &Relay) -> PathBuf {
        self.agents[relay.host].pin_path(relay.pin)
    }
}

/// One line per object of a view: id, state, room, position, availability.
pub fn brief(view: &BTreeMap<String, serde_json::Value>) -> String {
    if view.is_empty() {
        return "(no answer)".into();
    }
    view.iter()
        .map(|(id, o)| {
            format!(
                "{id}={}/{}@{},{}{}",
                o["state"].as_str().unwrap_or("-"),
                o["room"].as_str().unwrap_or("-"),
                o["x"],
                o["y"],
                if o["available"] == true {
                    ""
                } else {
                    "(unavailable)"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}
