//! Chaos with the real binary: a house of 3–5 agents, each in its own network namespace on a
//! bridged LAN, driven through the CLI by a seeded driver while cables are pulled, packets are
//! lost, delayed and reordered, one agent is killed with SIGKILL and restarted over and over,
//! and another one's store runs out of disk. Then everything heals and the invariants are
//! checked from outside, as a person with the CLI and the sim pin files would:
//!
//! - every instance's `pimesh get --json` converges to the same house;
//! - a command answered `ok` is what the house holds for that property, unless a later
//!   command for the same object may have superseded it (the driver sends the commands for
//!   one object one after the other);
//! - each relay's sim pin on its holder matches the house, no other instance has that pin,
//!   and a pin only ever moves to a level some command for its relay asked for;
//! - every command got exactly one answer: the CLI exits with a known code and, when an agent
//!   answered, prints one answer that agrees with the code.
//!
//! `cargo test --test faults` runs a short fixed-seed round. `make chaos` (`CHAOS_SECONDS`,
//! `CHAOS_SEED`) runs a long campaign and `make soak` (`SOAK_SECONDS`) a soak that watches the
//! agents' memory and open files; both are ignored tests.

mod support;

#[path = "faults/driver.rs"]
mod driver;
#[path = "faults/house.rs"]
mod house;
#[path = "faults/invariants.rs"]
mod invariants;
#[path = "faults/soak.rs"]
mod soak;

use driver::{Campaign, Plan};
use std::time::Duration;

#[test]
fn a_short_fixed_seed_round_of_faults_keeps_every_invariant() {
    Campaign::run(&Plan {
        seed: 7,
        instances: 4,
        chaos: Duration::from_secs(14),
        round: Duration::from_secs(14),
        in_flight: 3,
        fault_pct: 30,
        reproduce: "cargo test --test faults a_short_fixed_seed_round".into(),
    });
}

#[test]
#[ignore = "long: make chaos (CHAOS_SECONDS, CHAOS_SEED)"]
fn chaos_campaign() {
    let seed = driver::env_u64("CHAOS_SEED").unwrap_or_else(driver::fresh_seed);
    let seconds = driver::env_u64("CHAOS_SECONDS").unwrap_or(300);
    println!("chaos campaign: seed {seed}, {seconds} s");
    Campaign::run(&Plan {
        seed,
        instances: 5,
        chaos: Duration::from_secs(seconds),
        round: Duration::from_secs(40),
        in_flight: 4,
        fault_pct: 25,
        reproduce: format!("CHAOS_SEED={seed} CHAOS_SECONDS={seconds} make chaos"),
    });
}

#[test]
#[ignore = "long: make soak (SOAK_SECONDS, CHAOS_SEED)"]
fn soak_of_five_instances_keeps_memory_and_open_files_level() {
    let seconds = driver::env_u64("SOAK_SECONDS").unwrap_or(600);
    soak::soak(Duration::from_secs(seconds));
}

/// Replicated updates are handed to the kernel as they arrive, so SIGKILL loses none: an
/// instance killed right after it saw a peer's relay appear comes back knowing it, and with
/// its cable pulled answers a command for it `unavailable` (exit 3, "not now"), never
/// `rejected: unknown object` (exit 2, "bad input"). Before, they waited in memory for the
/// next heartbeat's write, and the object was unknown until the next sync.
#[test]
fn a_killed_instance_keeps_the_objects_it_had_received() {
    use support::lan::Lan;
    use support::*;
    let tmp = tempfile::tempdir().unwrap();
    let lan = Lan::create(3);
    let start = |k: usize, name: &str, peer: Option<&str>| {
        let cfg = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, node_config(&name[..1])).unwrap();
        let cfg = cfg.to_string_lossy().to_string();
        let mut args = vec!["--name", name, "--config", &cfg];
        args.extend(peer.iter().flat_map(|p| ["--peer", p]));
        Agent::start_in_netns(lan.ns(k), &tmp.path().join(name), free_port(), &args)
    };
    let a = start(0, "alpha", None);
    let first = format!("{}:{}", lan.ip(0), a.port);
    let mut b = start(1, "beta", Some(&first));
    wait_until("beta has alpha's objects", || {
        b.all().contains_key("a-light")
    });
    let _c = start(2, "gamma", Some(&first));
    wait_until("beta sees gamma's relay", || {
        b.all().contains_key("g-light")
    });
    b.kill9();
    lan.unplug(1);
    b.restart();
    assert!(
        b.all().contains_key("g-light"),
        "beta lost gamma's relay with the kill"
    );
    let out = b.cli(&["set", "g-light", "on"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "gamma is out of reach: unavailable. {}",
        text(&out.stderr)
    );
}

/// An `ok` answer says `"persisted": false` (and the CLI warns that the executor "cannot write
/// it to its disk yet") only when the disk refused a write. It once said so whenever the
/// executor held replicated updates queued for its next write and the command itself wrote
/// nothing (the relay was already in that state): the soak saw it on 1 ok answer in 5.
#[test]
fn an_ok_answer_on_a_healthy_disk_is_never_marked_unpersisted() {
    use support::*;
    let a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("alpha has beta's objects", || a.all().contains_key("b-fan"));
    assert!(a.cli(&["set", "a-light", "on"]).status.success());
    for round in 0..20 {
        let room = format!("room-{round}");
        assert!(b.cli(&["move", "b-fan", &room]).status.success());
        wait_until("alpha has beta's move", || a.get("b-fan")["room"] == room);
        let out = a.cli(&["set", "a-light", "on", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            reply.get("persisted").is_none(),
            "round {round}: {reply}; the CLI said: {}",
            text(&out.stderr)
        );
    }
}
