//! MQTT conformance of the front door, rule by rule, next to Debian's Mosquitto in the same
//! run.
//!
//! Each rule is a short scenario driven by a raw MQTT client ([`support::raw`]), in
//! `conformance/rules.rs`; this file holds what runs them and compares. A rule runs on
//! both plaintext listeners of pimesh (the MQTT 3.1.1 port and the MQTT 5 port), with an
//! MQTT 3.1.1 and an MQTT 5 client on each, and on Mosquitto with each version. The table
//! printed shows every difference; the test fails when pimesh fails a rule Mosquitto passes,
//! or, for a measured rule, when both pass with a different measurement.

mod support;

#[path = "conformance/rules.rs"]
mod rules;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use support::raw::{Client, Conn, R, V};
use support::{free_port, wait_until, Agent};

/// Where and how one rule runs.
struct Ctx {
    port: u16,
    v: V,
    /// A topic prefix no other rule or variant uses.
    t: String,
}

impl Ctx {
    fn connect(&self, id: &str) -> R<Client> {
        self.connect_with(self.v, &Conn::id(&self.id(id)))
    }

    fn connect_with(&self, v: V, c: &Conn) -> R<Client> {
        Client::connect(self.port, v, c).map(|(c, _)| c)
    }

    /// A client id unique to this rule and variant.
    fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.t.replace('/', "-"))
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.t)
    }
}

fn check(cond: bool, why: impl FnOnce() -> String) -> R<()> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

type Rule = fn(&Ctx) -> R<String>;

/// A rule and how pimesh's outcome is held against Mosquitto's.
struct Spec {
    name: &'static str,
    run: Rule,
    /// The rule's note is a measurement (such as how many copies arrived) that must equal
    /// Mosquitto's, not a remark: passing where Mosquitto passes is not enough.
    measured: bool,
}

/// A rule that pimesh must pass wherever Mosquitto does.
fn rule(name: &'static str, run: Rule) -> Spec {
    Spec {
        name,
        run,
        measured: false,
    }
}

/// A rule whose note must also be the same as Mosquitto's.
fn measured(name: &'static str, run: Rule) -> Spec {
    Spec {
        name,
        run,
        measured: true,
    }
}

/// Debian's Mosquitto on a free loopback port with its own config, killed when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        // `sys_interval 1`: $SYS traffic within the $-topic rule's window.
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n"),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt install mosquitto, or make deps)");
        let m = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        wait_until("mosquitto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pimesh_passes_every_rule_mosquitto_passes() {
    let mosquitto = Mosquitto::start();
    let agent = Agent::start(&["--allow-anonymous"]);
    let targets = [
        ("pimesh 3.1.1 port", agent.port),
        ("pimesh MQTT 5 port", agent.mqtt5_port()),
        ("mosquitto", mosquitto.port),
    ];
    let rules = rules::all();
    // (target, version) -> rule -> outcome; one thread per column.
    let results: BTreeMap<(usize, V), Vec<R<String>>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (ti, (name, port)) in targets.iter().enumerate() {
            for v in [V::V4, V::V5] {
                let rules = &rules;
                handles.push(scope.spawn(move || {
                    let column = rules
                        .iter()
                        .enumerate()
                        .map(|(ri, spec)| {
                            let ctx = Ctx {
                                port: *port,
                                v,
                                t: format!("conf/{}/{v:?}/{ri}", name.replace(' ', "-")),
                            };
                            (spec.run)(&ctx)
                        })
                        .collect();
                    ((ti, v), column)
                }));
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    println!("\nMQTT conformance: pimesh (both listeners) next to mosquitto, per client version");
    for (ri, spec) in rules.iter().enumerate() {
        let rule = spec.name;
        println!("{rule}");
        for v in [V::V4, V::V5] {
            let reference = &results[&(2, v)][ri];
            for (ti, (name, _)) in targets.iter().enumerate() {
                let got = &results[&(ti, v)][ri];
                let cell = match got {
                    Ok(note) if note.is_empty() => "ok".to_string(),
                    Ok(note) => format!("ok ({note})"),
                    Err(e) => format!("FAILS: {e}"),
                };
                println!("  {v:?} {name:<20} {cell}");
                if ti == 2 {
                    continue;
                }
                match (reference, got) {
                    (Ok(_), Err(e)) => {
                        failures.push(format!("{rule} ({v:?} client, {name}): {e}"));
                    }
                    (Ok(theirs), Ok(ours)) if spec.measured && theirs != ours => {
                        failures.push(format!(
                            "{rule} ({v:?} client, {name}): {ours}, where mosquitto gives {theirs}"
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "pimesh differs from mosquitto:\n{}",
        failures.join("\n")
    );
}
