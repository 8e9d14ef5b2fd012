//! Unit tests of the replica's version vector and anti-entropy: contiguous advance, gaps,
//! our own entry, deltas between diverged replicas and their order.

use super::tests::{node, oid, state, three_origin_history, write, Rng, T0};
use super::*;
use crate::model::{ROOM, STATE};

#[test]
fn the_version_vector_advances_only_contiguously_and_reports_the_gap() {
    let mut source = Replica::new(node(2));
    let updates: Vec<Update> = (0..4)
        .flat_map(|i| {
            write(
                &mut source,
                "lamp",
                &[(STATE, Value::Number(i as f64))],
                T0 + i,
            )
        })
        .collect();
    let mut r = Replica::new(node(1));
    assert_eq!(r.apply(&updates[0], T0).gap, None);
    let jumped = r.apply(&updates[2], T0);
    assert_eq!(
        jumped.gap,
        Some(Gap {
            origin: node(2),
            have: 1,
            got: 3
        })
    );
    assert!(jumped.changed, "a jump ahead is still applied");
    assert_eq!(r.version_vector().get(&node(2)), Some(&1));
    assert!(r.apply(&updates[3], T0).gap.is_some());
    let filled = r.apply(&updates[1], T0);
    assert_eq!(filled.gap, None);
    assert!(
        !filled.changed,
        "the late update is older than what it fills"
    );
    assert_eq!(r.version_vector().get(&node(2)), Some(&4));
}

#[test]
fn our_own_updates_advance_our_entry_in_the_vector() {
    let mut r = Replica::new(node(1));
    write(
        &mut r,
        "lamp",
        &[(STATE, "ON".into()), (ROOM, "hall".into())],
        T0,
    );
    assert_eq!(r.version_vector().get(&node(1)), Some(&2));
}

#[test]
fn two_diverged_replicas_converge_by_delta_and_vector() {
    let mut a = Replica::new(node(1));
    let mut b = Replica::new(node(2));
    let shared = write(&mut a, "lamp", &[(STATE, "OFF".into())], T0);
    for u in &shared {
        b.apply(u, T0);
    }
    // Apart: both write, and each overwrites its own earlier writes.
    for i in 0..5u64 {
        write(
            &mut a,
            "lamp",
            &[(STATE, Value::Number(i as f64))],
            T0 + 10 + i,
        );
        write(
            &mut b,
            "door",
            &[(ROOM, Value::Number(i as f64))],
            T0 + 20 + i,
        );
        write(
            &mut b,
            "lamp",
            &[(ROOM, Value::Number(i as f64))],
            T0 + 30 + i,
        );
    }
    assert_ne!(state(&a), state(&b));

    let (a_vv, b_vv) = (a.version_vector().clone(), b.version_vector().clone());
    let (to_b, to_a) = (a.delta_since(&b_vv), b.delta_since(&a_vv));
    // Of A's six updates B lacks five, but only the last one survives in a register.
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].seq, 6);
    for u in &to_b {
        assert!(b.apply(u, T0 + 100).changed);
    }
    b.merge_version_vector(&a_vv);
    for u in &to_a {
        a.apply(u, T0 + 100);
    }
    a.merge_version_vector(&b_vv);

    assert_eq!(state(&a), state(&b));
    assert_eq!(b.version_vector().get(&node(1)), Some(&6));
    assert!(a.delta_since(b.version_vector()).is_empty());
    assert!(b.delta_since(a.version_vector()).is_empty());
}

#[test]
fn delta_since_sends_registers_in_origin_then_seq_order() {
    let mut rng = Rng(77);
    let mut r = Replica::new(node(9));
    for u in three_origin_history(&mut rng) {
        r.apply(&u, T0);
    }
    let delta = r.delta_since(&VersionVector::new());
    let keys: Vec<_> = delta.iter().map(|u| (u.stamp.origin, u.seq)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(
        delta.len(),
        r.objects().map(|(_, o)| o.props.len()).sum::<usize>()
    );
}

#[test]
fn a_raised_own_entry_moves_our_next_seq_past_it() {
    // A peer remembers more of our updates than we do (we lost our disk): never reuse them.
    let mut r = Replica::new(node(1));
    r.merge_version_vector(&VersionVector::from([(node(1), 41)]));
    let next = r.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0);
    assert_eq!(next[0].seq, 42);
}
