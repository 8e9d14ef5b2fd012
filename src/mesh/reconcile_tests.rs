//! Reconciling a config with the replica, driven directly (the simulator drives it through
//! restarts with changed configs: `sim/config.rs`).

use super::node::tests::{at, beat_and_sync, deliver, flush, key};
use super::node::Node;
use super::reconcile::{claim_prop, Declared};
use crate::membership::{member_id, member_props};
use crate::model::{ObjectId, Value};
use crate::replica::Replica;
use uuid::Uuid;

/// Instance `n` (UUID `n`, key `n`) over `replica`, its member record recorded.
fn node(n: u8, mut replica: Replica) -> Node {
    let me = Uuid::from_u128(n.into());
    replica.set_signer(key(n));
    let mut node = Node::new(me, &format!("pi{n}"), replica);
    let props = member_props(&format!("pi{n}"), &key(n).verifying_key());
    node.record(&member_id(me), props, false, at(0));
    node
}

/// A virtual object `id` starting in `room`.
fn lamp(id: &str, room: &str) -> Declared {
    Declared {
        id: ObjectId::new(id).unwrap(),
        fixed: vec![("kind".into(), "virtual".into())],
        start: vec![("room".into(), room.into())],
    }
}

fn value<'a>(node: &'a Node, id: &str, prop: &str) -> Option<&'a Value> {
    node.replica().get(&ObjectId::new(id).unwrap())?.value(prop)
}

#[test]
fn a_config_reconciled_while_fenced_releases_what_it_claimed_once_the_claim_is_back() {
    let mut b = node(2, Replica::new(Uuid::from_u128(2)));
    let mut a = node(1, Replica::new(Uuid::from_u128(1)));
    a.reconcile(&[lamp("pump", "cellar")], at(1));
    let made = flush(&mut a);
    deliver(&mut a, &mut b, at(2));
    let me = a.uuid();
    assert_eq!(value(&b, "pump", &claim_prop(me)), Some(&true.into()));

    // The log is emptied but for the member record, and the pump left the config.
    let mut kept = Replica::new(me);
    for u in made.iter().filter(|u| u.object == member_id(me)) {
        kept.apply(u, at(3).wall_ms);
    }
    let mut a = Node::new(me, "pi1", kept);
    a.replica_mut().set_signer(key(1));
    a.fence("log emptied", at(3));
    let released = a.reconcile(&[], at(3));
    assert!(released.is_empty(), "decided only once the claim is back");

    beat_and_sync(&mut b, &mut a, 4);
    let heard_all = 3 + crate::mesh::peers::OFFLINE_AFTER.as_millis() as u64;
    a.beat(at(heard_all));
    assert_eq!(
        a.fenced(),
        None,
        "the sync and the peer's beat lifted the fence"
    );
    assert_eq!(
        value(&a, "pump", &claim_prop(me)),
        Some(&false.into()),
        "the claim that came back is released"
    );
    assert_eq!(
        value(&a, "pump", "deleted"),
        Some(&true.into()),
        "nobody else claims it"
    );
}

#[test]
fn an_object_a_peer_deletes_while_this_instance_claims_it_is_restored_everywhere() {
    let mut a = node(1, Replica::new(Uuid::from_u128(1)));
    let mut b = node(2, Replica::new(Uuid::from_u128(2)));
    // Both declared the lamp; b's config dropped it before a's claim reached it.
    b.reconcile(&[lamp("lamp", "hall")], at(1));
    flush(&mut b);
    a.reconcile(&[lamp("lamp", "hall")], at(2));
    flush(&mut a);
    let released = b.reconcile(&[], at(3));
    assert!(released[0].deleted, "b saw no other claim");
    flush(&mut b);

    deliver(&mut b, &mut a, at(4));
    assert_eq!(
        value(&a, "lamp", "deleted"),
        Some(&false.into()),
        "a restored it"
    );
    flush(&mut a);
    deliver(&mut a, &mut b, at(5));
    assert_eq!(value(&b, "lamp", "deleted"), Some(&false.into()));
    assert_eq!(value(&b, "lamp", &claim_prop(a.uuid())), Some(&true.into()));
    assert_eq!(
        value(&b, "lamp", &claim_prop(b.uuid())),
        Some(&false.into())
    );
}

#[test]
fn a_start_value_from_a_config_never_overwrites_what_the_house_holds() {
    let mut a = node(1, Replica::new(Uuid::from_u128(1)));
    a.reconcile(&[lamp("lamp", "hall")], at(1));
    a.record(
        &ObjectId::new("lamp").unwrap(),
        vec![("room".into(), "kitchen".into())],
        false,
        at(2),
    );
    flush(&mut a);
    // A new instance declares the same object starting elsewhere, then syncs.
    let mut b = node(2, Replica::new(Uuid::from_u128(2)));
    b.reconcile(&[lamp("lamp", "attic")], at(3));
    flush(&mut b);
    b.link_ready(a.uuid(), at(4));
    deliver(&mut b, &mut a, at(4));
    deliver(&mut a, &mut b, at(5));
    deliver(&mut b, &mut a, at(6));
    for n in [&a, &b] {
        assert_eq!(
            value(n, "lamp", "room"),
            Some(&"kitchen".into()),
            "{}",
            n.uuid()
        );
    }
    // Restarting with a changed start writes nothing.
    a.take_store();
    a.reconcile(&[lamp("lamp", "garage")], at(7));
    let again = a.take_store();
    assert!(again.is_empty(), "{again:?}");
}
