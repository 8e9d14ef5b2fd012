//! Every agent this test process started, by port: the credentials a client or the CLI uses
//! against it, a member's login, and the invitation a new agent's `--peer` needs to join.

use super::{bin, cli, text, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every agent this test process started: its ports (3.1.1 and 5), data dir and network
/// namespace. Clients find credentials by port here, and `--peer` finds whom to ask for an
/// invitation.
static AGENTS: std::sync::Mutex<Vec<Registered>> = std::sync::Mutex::new(Vec::new());

/// An agent in [`AGENTS`]: MQTT 3.1.1 port, MQTT 5 port, data dir, network namespace.
type Registered = (u16, u16, PathBuf, Option<String>);

/// Records an agent that is ready, under its MQTT 3.1.1 and MQTT 5 ports and under its TLS
/// port, which serves the same credentials (`--peer` may name it too).
pub(super) fn register(port: u16, port5: u16, tls_port: u16, dir: &Path, netns: Option<&str>) {
    let netns = netns.map(str::to_string);
    if let Ok(mut agents) = AGENTS.lock() {
        agents.retain(|(p, ..)| *p != port && *p != tls_port);
        agents.push((port, port5, dir.to_path_buf(), netns.clone()));
        agents.push((tls_port, tls_port, dir.to_path_buf(), netns));
    }
}

/// The data dir and namespace of the agent serving `port` (either version), if one does.
pub(super) fn agent_on(port: u16) -> Option<(PathBuf, Option<String>)> {
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
pub(super) fn with_invitation(args: &[String]) -> Vec<String> {
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
