//! Unit tests of the sans-IO replica: convergence, idempotence, tombstones, skew, seqs and
//! anti-entropy (the version vector and deltas are in `vector_tests.rs`). No I/O; wall time
//! is injected.

use super::*;
use crate::model::{ROOM, STATE};

const HOUR_MS: u64 = 3_600_000;
pub(super) const T0: u64 = 1_700_000_000_000;

/// A fixed instance id, `n` in every byte.
pub(super) fn node(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

/// An object id from a literal known to be valid.
pub(super) fn oid(id: &str) -> ObjectId {
    ObjectId::new(id).expect("test ids are valid")
}

/// Prepares and applies a local write, returning the updates to deliver elsewhere.
pub(super) fn write(
    replica: &mut Replica,
    object: &str,
    props: &[(&str, Value)],
    wall_ms: u64,
) -> Vec<Update> {
    let props = props
        .iter()
        .map(|(p, v)| (p.to_string(), v.clone()))
        .collect();
    let updates = replica.prepare(&oid(object), props, wall_ms);
    for u in &updates {
        replica.apply(u, wall_ms);
    }
    updates
}

/// What must be equal between converged replicas: every register and the version vector.
pub(super) fn state(replica: &Replica) -> (Vec<(ObjectId, Object)>, VersionVector) {
    (
        replica
            .objects()
            .map(|(id, o)| (id.clone(), o.clone()))
            .collect(),
        replica.version_vector().clone(),
    )
}

/// xorshift64: a tiny deterministic generator, enough to shuffle.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A history from three instances writing the same few registers, with partial delivery
/// between them (so stamps depend on what each had seen) and clocks that disagree.
pub(super) fn three_origin_history(rng: &mut Rng) -> Vec<Update> {
    let mut replicas = [
        Replica::new(node(1)),
        Replica::new(node(2)),
        Replica::new(node(3)),
    ];
    let skew = [0, 40, HOUR_MS];
    let objects = ["lamp", "door", "fan"];
    let props = [STATE, ROOM, DELETED];
    let mut all = Vec::new();
    for step in 0..120u64 {
        let who = rng.below(3);
        let value = match rng.below(3) {
            0 => Value::Bool(rng.below(2) == 0),
            1 => Value::Number(rng.below(5) as f64),
            _ => Value::from(["ON", "OFF"][rng.below(2)]),
        };
        let updates = write(
            &mut replicas[who],
            objects[rng.below(3)],
            &[(props[rng.below(3)], value)],
            T0 + step * 10 + skew[who],
        );
        for u in &updates {
            for (other, replica) in replicas.iter_mut().enumerate() {
                if other != who && rng.below(2) == 0 {
                    replica.apply(u, T0 + step * 10 + skew[other]);
                }
            }
        }
        all.extend(updates);
    }
    all
}

#[test]
fn any_order_of_the_same_updates_gives_the_same_replica() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let history = three_origin_history(&mut rng);
    assert!(
        history.len() > 60,
        "the history should not be mostly no-ops"
    );

    let mut reference = Replica::new(node(7));
    for u in &history {
        reference.apply(u, T0);
    }
    // Each register holds the update with the highest stamp among those written to it.
    for (id, object) in reference.objects() {
        for (prop, register) in &object.props {
            let best = history
                .iter()
                .filter(|u| &u.object == id && u.prop == prop)
                .map(|u| u.stamp)
                .max();
            assert_eq!(Some(register.stamp), best, "{id}.{prop}");
        }
    }
    assert_eq!(reference.version_vector().len(), 3);

    for round in 0..60 {
        let mut order = history.clone();
        rng.shuffle(&mut order);
        let mut replica = Replica::new(node(8));
        for u in &order {
            replica.apply(u, T0 + round);
        }
        assert_eq!(state(&replica), state(&reference), "order #{round}");
    }
}

#[test]
fn duplicates_change_nothing() {
    let mut rng = Rng(12345);
    let history = three_origin_history(&mut rng);
    let mut once = Replica::new(node(7));
    for u in &history {
        once.apply(u, T0);
    }
    let mut twice = once.clone();
    let mut shuffled = history.clone();
    rng.shuffle(&mut shuffled);
    for u in &shuffled {
        let applied = twice.apply(u, T0);
        assert!(
            !applied.changed,
            "a duplicate changed {}.{}",
            u.object, u.prop
        );
        assert_eq!(applied.gap, None);
    }
    assert_eq!(state(&twice), state(&once));
}

#[test]
fn an_older_concurrent_write_does_not_undelete() {
    let mut a = Replica::new(node(1));
    let mut b = Replica::new(node(2));
    let created = write(&mut a, "lamp", &[(STATE, "OFF".into())], T0);
    for u in &created {
        b.apply(u, T0);
    }
    // A writes without having seen B's delete, but earlier; B deletes.
    let concurrent_on = write(&mut a, "lamp", &[(STATE, "ON".into())], T0 + 10);
    let concurrent_undelete = write(&mut a, "lamp", &[(DELETED, false.into())], T0 + 11);
    let deleted = write(&mut b, "lamp", &[(DELETED, true.into())], T0 + 20);
    for u in &deleted {
        a.apply(u, T0 + 21);
    }
    for u in concurrent_on.iter().chain(&concurrent_undelete) {
        b.apply(u, T0 + 22);
    }
    for replica in [&a, &b] {
        let lamp = replica.get(&oid("lamp")).expect("tombstones stay");
        assert!(lamp.is_deleted());
        assert_eq!(lamp.text(STATE), Some("ON"));
    }
    assert_eq!(state(&a).0, state(&b).0);
}

#[test]
fn recreating_with_a_newer_stamp_wins_over_the_tombstone() {
    let mut a = Replica::new(node(1));
    write(&mut a, "lamp", &[(STATE, "ON".into())], T0);
    let deleted = write(&mut a, "lamp", &[(DELETED, true.into())], T0 + 5);
    assert!(a.get(&oid("lamp")).is_some_and(Object::is_deleted));
    let recreated = write(&mut a, "lamp", &[(DELETED, false.into())], T0 + 6);
    assert!(a.get(&oid("lamp")).is_some_and(|o| !o.is_deleted()));

    // Delivered in reverse elsewhere, the re-creation still wins.
    let mut b = Replica::new(node(2));
    for u in recreated.iter().chain(&deleted) {
        b.apply(u, T0);
    }
    assert!(b.get(&oid("lamp")).is_some_and(|o| !o.is_deleted()));
}

#[test]
fn a_peer_an_hour_ahead_does_not_freeze_everyone_elses_writes() {
    let mut ahead = Replica::new(node(9));
    let mut local = Replica::new(node(1));
    let skewed = write(&mut ahead, "lamp", &[(STATE, "ON".into())], T0 + HOUR_MS);
    for u in &skewed {
        local.apply(u, T0);
    }
    // A minute later by the local clock, someone turns the lamp off here.
    let newer = write(&mut local, "lamp", &[(STATE, "OFF".into())], T0 + 60_000);
    assert!(newer[0].stamp > skewed[0].stamp);
    assert_eq!(newer[0].stamp.wall_ms, T0 + HOUR_MS);
    for u in &newer {
        ahead.apply(u, T0 + HOUR_MS + 60_000);
    }
    for replica in [&local, &ahead] {
        assert_eq!(
            replica.get(&oid("lamp")).and_then(|o| o.text(STATE)),
            Some("OFF")
        );
    }
}

#[test]
fn prepare_skips_unchanged_values_and_numbers_the_rest_consecutively() {
    let mut r = Replica::new(node(1));
    let first = write(
        &mut r,
        "lamp",
        &[(STATE, "ON".into()), (ROOM, "kitchen".into())],
        T0,
    );
    assert_eq!(first.iter().map(|u| u.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(first[0].stamp < first[1].stamp);
    assert!(first.iter().all(|u| u.stamp.origin == node(1)));

    let props = vec![
        (STATE.to_string(), "ON".into()),
        (ROOM.to_string(), "hall".into()),
    ];
    let second = r.prepare(&oid("lamp"), props.clone(), T0);
    assert_eq!(
        second,
        r.prepare(&oid("lamp"), props, T0),
        "prepare must not advance"
    );
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].prop.as_str(), second[0].seq), (ROOM, 3));
    assert!(second[0].stamp > first[1].stamp);

    let same = vec![(STATE.to_string(), "ON".into())];
    assert!(r.prepare(&oid("lamp"), same, T0).is_empty());
}

#[test]
fn prepare_compares_a_repeated_property_with_its_earlier_value_in_the_call() {
    let mut r = Replica::new(node(1));
    write(&mut r, "lamp", &[(STATE, "OFF".into())], T0);
    let updates = write(
        &mut r,
        "lamp",
        &[(STATE, "ON".into()), (STATE, "OFF".into())],
        T0,
    );
    assert_eq!(updates.len(), 2);
    assert_eq!(r.get(&oid("lamp")).and_then(|o| o.text(STATE)), Some("OFF"));
}

#[test]
fn equal_stamps_settle_the_same_way_in_either_order() {
    let stamp = Stamp {
        wall_ms: T0,
        counter: 0,
        origin: node(5),
    };
    let forged = |value: &str| Update {
        object: oid("lamp"),
        prop: STATE.into(),
        value: value.into(),
        stamp,
        seq: 1,
        sig: None,
    };
    let (on, off) = (forged("ON"), forged("OFF"));
    let mut x = Replica::new(node(1));
    let mut y = Replica::new(node(2));
    x.apply(&on, T0);
    x.apply(&off, T0);
    y.apply(&off, T0);
    y.apply(&on, T0);
    assert_eq!(state(&x), state(&y));
}

#[test]
fn an_update_with_seq_zero_is_ignored() {
    let mut r = Replica::new(node(1));
    let update = Update {
        object: oid("lamp"),
        prop: STATE.into(),
        value: "ON".into(),
        stamp: Stamp {
            wall_ms: T0,
            counter: 0,
            origin: node(2),
        },
        seq: 0,
        sig: None,
    };
    assert!(!r.apply(&update, T0).changed);
    assert!(r.is_empty());
}

#[test]
fn object_accessors_read_typed_values() {
    let mut r = Replica::new(node(1));
    write(
        &mut r,
        "lamp",
        &[(ROOM, "hall".into()), ("level", 40.0.into())],
        T0,
    );
    let lamp = r.get(&oid("lamp")).expect("written");
    assert_eq!(lamp.text(ROOM), Some("hall"));
    assert_eq!(lamp.number("level"), Some(40.0));
    assert_eq!(lamp.number(ROOM), None);
    assert!(!lamp.is_deleted());
    assert_eq!((r.len(), r.register_count()), (1, 2));
}

#[test]
fn a_write_made_after_observing_a_senders_clock_wins_over_the_senders_last_write() {
    // Node 9 (the higher id, so it wins ties) switched the scene three times within one
    // millisecond; node 1 runs the next command before those updates reach it.
    let mut sender = Replica::new(node(9));
    for v in ["ON", "OFF", "ON"] {
        write(&mut sender, "scene", &[(STATE, v.into())], T0);
    }
    let blind = Replica::new(node(1));
    let unaware = blind.prepare(&oid("scene"), vec![(STATE.into(), "OFF".into())], T0);
    let mut probe = sender.clone();
    probe.apply(&unaware[0], T0);
    assert_eq!(
        probe.get(&oid("scene")).unwrap().text(STATE),
        Some("ON"),
        "without the sender's clock the later command loses: the bug this guards against"
    );

    let mut executor = Replica::new(node(1));
    executor.observe(&sender.clock(), T0).unwrap();
    let later = write(&mut executor, "scene", &[(STATE, "OFF".into())], T0);
    for u in &later {
        sender.apply(u, T0);
    }
    assert_eq!(sender.get(&oid("scene")).unwrap().text(STATE), Some("OFF"));
}

#[test]
fn prepare_touching_restamps_an_unchanged_value() {
    let mut r = Replica::new(node(1));
    let first = write(&mut r, "scene", &[(STATE, "ON".into())], T0);
    let props = vec![(STATE.to_string(), Value::from("ON"))];
    assert!(r.prepare(&oid("scene"), props.clone(), T0 + 1).is_empty());
    let again = r.prepare_touching(&oid("scene"), props, T0 + 1);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].value, Value::from("ON"));
    assert!(again[0].stamp > first[0].stamp);
    assert_eq!(again[0].seq, first[0].seq + 1);
}

#[test]
fn where_an_object_starts_never_beats_what_the_house_holds() {
    let mut house = Replica::new(node(1));
    let moved = write(&mut house, "lamp", &[(ROOM, "attic".into())], T0);
    // A new instance writes the config's start before it syncs; either order, the move wins.
    let fresh = Replica::new(node(9));
    let start = fresh.prepare_initial(
        &oid("lamp"),
        vec![(ROOM.into(), "hall".into()), (STATE.into(), "OFF".into())],
    );
    assert_eq!(start.len(), 2);
    assert!(start.iter().all(|u| u.stamp.wall_ms == 0));
    let mut joiner = fresh.clone();
    for u in start.iter().chain(&moved) {
        joiner.apply(u, T0);
    }
    for u in &start {
        house.apply(u, T0);
    }
    for r in [&house, &joiner] {
        assert_eq!(r.get(&oid("lamp")).unwrap().text(ROOM), Some("attic"));
        assert_eq!(
            r.get(&oid("lamp")).unwrap().text(STATE),
            Some("OFF"),
            "new to the house"
        );
    }
    // Properties that have a value are not written again.
    assert!(house
        .prepare_initial(&oid("lamp"), vec![(ROOM.into(), "hall".into())])
        .is_empty());
}
