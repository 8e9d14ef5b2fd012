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
