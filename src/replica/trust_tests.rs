//! Signatures, member keys and what a replica admits.

use super::*;
use crate::clock::Stamp;
use crate::model::STATE;
use crate::replica::tests::{node, oid};

const T0: u64 = 1_700_000_000_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// A replica of `node(n)` that signs with `key(n)`.
fn signing(n: u8) -> Replica {
    let mut r = Replica::new(node(n));
    r.set_signer(key(n));
    r
}

fn member_record(writer: &Replica, member: u8) -> Vec<Update> {
    writer.prepare(
        &ObjectId::member(node(member)),
        vec![(
            KEY_PROP.into(),
            crate::secret::to_hex(key(member).verifying_key().as_bytes()).into(),
        )],
        T0,
    )
}

fn local(r: &mut Replica, updates: &[Update]) {
    for u in updates {
        r.apply(u, T0);
    }
}

#[test]
fn a_signed_update_of_a_known_member_is_applied_and_every_forgery_refused() {
    let mut a = signing(1);
    let mut b = signing(2);
    // a learns b from b's own record (self-certifying).
    let rec = member_record(&b, 2);
    local(&mut b, &rec);
    a.apply_remote(&rec[0], T0).unwrap();
    let on = b.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0 + 1);
    local(&mut b, &on);
    assert!(a.apply_remote(&on[0], T0 + 1).unwrap().changed);

    let mut unsigned = on[0].clone();
    unsigned.sig = None;
    unsigned.seq += 1;
    assert!(matches!(
        a.apply_remote(&unsigned, T0),
        Err(Refused::Unsigned { .. })
    ));
    let mut altered = on[0].clone();
    altered.value = "OFF".into();
    altered.stamp.counter += 1;
    assert!(matches!(
        a.apply_remote(&altered, T0),
        Err(Refused::BadSignature { .. })
    ));
    // Signed with a third key but claiming to be b.
    let mut as_b = altered.clone();
    as_b.sig = Some(sign(&key(3), &as_b));
    assert!(matches!(
        a.apply_remote(&as_b, T0),
        Err(Refused::BadSignature { .. })
    ));
    // From a stranger nobody recorded.
    let stranger = signing(9).prepare(&oid("lamp"), vec![(STATE.into(), "OFF".into())], T0);
    assert!(matches!(
        a.apply_remote(&stranger[0], T0),
        Err(Refused::UnknownSigner { .. })
    ));
    assert_eq!(a.get(&oid("lamp")).unwrap().text(STATE), Some("ON"));
}

#[test]
fn a_member_cannot_replace_another_members_key_or_claim_for_it() {
    let mut a = signing(1);
    let mut m = signing(3);
    for n in [2, 3] {
        let rec = member_record(&signing(n), n);
        a.apply_remote(&rec[0], T0).unwrap();
        local(&mut m, &rec);
    }
    // m writes a record giving member 2 m's own key.
    let takeover = m.prepare(
        &ObjectId::member(node(2)),
        vec![(
            KEY_PROP.into(),
            crate::secret::to_hex(key(3).verifying_key().as_bytes()).into(),
        )],
        T0 + 5,
    );
    assert!(matches!(
        a.apply_remote(&takeover[0], T0),
        Err(Refused::KeyChange { .. })
    ));
    let claim = m.prepare(
        &oid("lamp"),
        vec![(format!("{CLAIM_PREFIX}{}", node(2)), true.into())],
        T0 + 6,
    );
    assert!(matches!(
        a.apply_remote(&claim[0], T0),
        Err(Refused::ForeignClaim { .. })
    ));
    assert_eq!(
        a.member_key(&node(2)),
        Some(&key(2).verifying_key()),
        "the first key stays"
    );
}

#[test]
fn a_member_recorded_by_a_known_member_is_trusted_through_it() {
    let mut a = signing(1);
    let founder = signing(2);
    let rec2 = member_record(&founder, 2);
    let rec3 = member_record(&founder, 3);
    // The record of 3 signed by 2 is refused until 2 is known, then taken.
    assert!(matches!(
        a.apply_remote(&rec3[0], T0),
        Err(Refused::UnknownSigner { .. })
    ));
    a.apply_remote(&rec2[0], T0).unwrap();
    a.apply_remote(&rec3[0], T0).unwrap();
    let three = signing(3).prepare(&oid("fan"), vec![(STATE.into(), "ON".into())], T0);
    assert!(a.apply_remote(&three[0], T0).unwrap().changed);
}

#[test]
fn adopted_legacy_registers_keep_their_values_and_lose_to_later_writes() {
    // Two instances from before signatures, converged.
    let mut old_a = Replica::new(node(1));
    let mut old_b = Replica::new(node(2));
    let legacy = old_b.prepare(
        &oid("lamp"),
        vec![(STATE.into(), "ON".into()), ("room".into(), "hall".into())],
        T0,
    );
    local(&mut old_b, &legacy);
    local(&mut old_a, &legacy);
    let b_claim = old_b.prepare(
        &oid("lamp"),
        vec![(format!("{CLAIM_PREFIX}{}", node(2)), true.into())],
        T0,
    );
    local(&mut old_b, &b_claim);
    local(&mut old_a, &b_claim);

    // a upgrades first and adopts; b's claim is left to b.
    old_a.set_signer(key(1));
    let adopted = old_a.adopt_unsigned();
    assert_eq!(adopted.len(), 2, "{adopted:?}");
    assert!(adopted.iter().all(|u| u.stamp.origin == node(1)
        && u.stamp.wall_ms <= T0
        && verify(&key(1).verifying_key(), u)));
    local(&mut old_a, &adopted);
    assert!(old_a.adopt_unsigned().is_empty(), "adoption happens once");
    let lamp = old_a.get(&oid("lamp")).unwrap();
    assert_eq!(lamp.text(STATE), Some("ON"));
    assert!(lamp.props[STATE].sig.is_some());

    // A write after the upgrade beats the adopted copy, wherever it lands.
    let mut fresh = signing(3);
    for rec in [member_record(&old_a, 1), member_record(&fresh, 3)] {
        local(&mut fresh, &rec);
    }
    local(&mut fresh, &adopted);
    let off = fresh.prepare(&oid("lamp"), vec![(STATE.into(), "OFF".into())], T0 + 10);
    local(&mut fresh, &off);
    local(&mut old_a, &off);
    // b upgrades later and adopts its own legacy copy: still loses to the later write.
    old_b.set_signer(key(2));
    let b_adopted = old_b.adopt_unsigned();
    assert_eq!(b_adopted.len(), 3, "b adopts its state, room and claim");
    local(&mut old_a, &b_adopted);
    assert_eq!(old_a.get(&oid("lamp")).unwrap().text(STATE), Some("OFF"));
    let claim = &old_a.get(&oid("lamp")).unwrap().props[&format!("{CLAIM_PREFIX}{}", node(2))];
    assert!(claim.sig.is_some(), "b's claim is now signed by b");
    // Nothing unsigned is left to serve.
    assert!(old_a
        .delta_since(&Default::default())
        .iter()
        .all(|u| u.sig.is_some()));
}

#[test]
fn a_retired_members_history_stays_and_its_later_updates_are_refused() {
    let mut a = signing(1);
    let mut b = signing(2);
    let rec = member_record(&b, 2);
    local(&mut b, &rec);
    a.apply_remote(&rec[0], T0).unwrap();
    let before = b.prepare(&oid("lamp"), vec![(STATE.into(), "ON".into())], T0 + 1);
    local(&mut b, &before);
    let after = b.prepare(&oid("lamp"), vec![(STATE.into(), "OFF".into())], T0 + 100);
    // a forgets b at T0 + 50; b's update from before arrives late, the one after too.
    let forget = a.prepare(
        &ObjectId::member(node(2)),
        vec![(crate::model::DELETED.into(), true.into())],
        T0 + 50,
    );
    local(&mut a, &forget);
    assert!(a.is_retired(node(2)));
    a.apply_remote(&before[0], T0 + 1).unwrap();
    assert!(matches!(
        a.apply_remote(&after[0], T0 + 100),
        Err(Refused::Retired { .. })
    ));
    assert_eq!(a.get(&oid("lamp")).unwrap().text(STATE), Some("ON"));
}

#[test]
fn signed_bytes_differ_in_every_field() {
    let base = Update {
        object: oid("a"),
        prop: "p".into(),
        value: Value::Number(1.0),
        stamp: Stamp {
            wall_ms: 1,
            counter: 2,
            origin: node(1),
        },
        seq: 3,
        sig: None,
    };
    let mut variants = vec![base.clone()];
    let mut v = base.clone();
    v.object = oid("b");
    variants.push(v);
    let mut v = base.clone();
    v.prop = "q".into();
    variants.push(v);
    let mut v = base.clone();
    v.value = Value::Text("1".into());
    variants.push(v);
    let mut v = base.clone();
    v.value = Value::Bool(true);
    variants.push(v);
    let mut v = base.clone();
    v.stamp.counter = 3;
    variants.push(v);
    let mut v = base.clone();
    v.seq = 4;
    variants.push(v);
    let bytes: std::collections::BTreeSet<Vec<u8>> = variants.iter().map(signed_bytes).collect();
    assert_eq!(bytes.len(), variants.len());
}
