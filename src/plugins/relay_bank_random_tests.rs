//! Random sequences of relay commands, failures and time, checked against the interlock and
//! dead-time invariants by the simulated agent of `relay_bank_tests.rs`.

use super::tests::{blind, id, ms, spec, Harness};
use std::time::Duration;

/// xorshift64: a deterministic pseudo-random sequence for the property test.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_sequences_never_break_the_interlock_and_answer_every_command_once() {
    let names = ["up", "down", "a", "b", "c", "door"];
    for seed in 1..=200u64 {
        let mut specs = blind(150);
        for n in ["a", "b", "c"] {
            let mut s = spec(n);
            s.interlock = Some("pump".into());
            specs.push(s);
        }
        specs[4].pulse = Some(ms(300)); // c
        specs[4].max_on = Some(ms(250));
        let mut door = spec("door");
        door.pulse = Some(ms(100));
        specs.push(door);
        let mut h = Harness::new(specs);
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut commands = 0;
        for _ in 0..300 {
            let r = next(&mut state);
            match r % 4 {
                0 | 1 => {
                    let name = names[(r >> 8) as usize % names.len()];
                    if (r >> 16).is_multiple_of(10) {
                        h.fail_next = Some((
                            id(names[(r >> 20) as usize % names.len()]),
                            (r >> 24).is_multiple_of(2),
                        ));
                    }
                    h.command(name, !(r >> 4).is_multiple_of(3));
                    commands += 1;
                }
                _ => h.advance(ms((r >> 8) % 400)),
            }
        }
        h.advance(Duration::from_secs(10));
        assert_eq!(
            h.answers.len(),
            commands,
            "seed {seed}: one answer per command"
        );
        for (relay, on) in &h.pins {
            assert_eq!(
                h.bank.is_on(relay),
                Some(*on),
                "seed {seed}: bank and pins agree on {relay}"
            );
        }
    }
}
