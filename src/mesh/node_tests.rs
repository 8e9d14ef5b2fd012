//! The node's bounds and its order of durability, driven directly (the simulator drives it
//! through faults).

use super::*;
use crate::membership::{member_id, member_props};
use crate::replica::Replica;

pub(in crate::mesh) fn key(n: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[n; 32])
}

/// The moment `ms` milliseconds into a test, on both clocks.
pub(in crate::mesh) fn at(ms: u64) -> Now {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    Now {
        at: *START.get_or_init(Instant::now) + std::time::Duration::from_millis(ms),
        wall_ms: 1_800_000_000_000 + ms,
    }
}

fn signed_replica(uuid: Uuid, n: u8) -> Replica {
    let mut r = Replica::new(uuid);
    r.set_signer(key(n));
    r
}

#[test]
fn updates_held_for_an_unknown_signer_stop_at_their_bound_and_apply_once_it_is_known() {
    let (me, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let mut node = Node::new(me, "a", signed_replica(me, 1));
    let mut theirs = signed_replica(other, 2);
    let pump = ObjectId::new("pump").unwrap();
    let mut updates = Vec::new();
    for i in 0..MAX_HELD + 100 {
        let now = at(i as u64);
        let made = theirs.prepare(&pump, vec![("x".into(), (i as f64).into())], now.wall_ms);
        for u in &made {
            theirs.apply(u, now.wall_ms);
        }
        updates.extend(made);
    }
    for chunk in updates.chunks(BATCH) {
        let batch = Batch {
            updates: chunk.to_vec(),
        };
        node.receive(other, Msg::Updates(batch), at(0));
    }
    assert_eq!(node.held(), MAX_HELD, "held up to the bound, no further");
    assert!(
        node.replica().get(&pump).is_none(),
        "nothing unverified applied"
    );
    // The signer's member record arrives: what was held applies.
    let record = theirs.prepare(
        &member_id(other),
        member_props("b", &key(2).verifying_key()),
        at(MAX_HELD as u64 + 200).wall_ms,
    );
    node.receive(other, Msg::Updates(Batch { updates: record }), at(0));
    assert_eq!(node.held(), 0);
    let x = node.replica().get(&pump).and_then(|o| o.number("x"));
    assert_eq!(x, Some((MAX_HELD - 1) as f64), "the newest held value wins");
}

#[test]
fn own_updates_leave_only_once_durable_and_syncs_meanwhile_send_what_is_durable() {
    let me = Uuid::from_u128(1);
    let mut node = Node::new(me, "a", signed_replica(me, 1));
    let pump = ObjectId::new("pump").unwrap();
    node.record(&pump, vec![("state".into(), "OFF".into())], false, at(1));
    node.durable();
    node.stream();
    node.take_sends();
    node.record(&pump, vec![("state".into(), "ON".into())], false, at(2));
    let store = node.take_store();
    assert!(store.len() == 2 && store[1].own, "{store:?}");
    node.stream();
    node.beat(at(3));
    let sends = node.take_sends();
    assert!(
        sends
            .iter()
            .all(|s| !matches!(s, Send::All(Msg::Updates(_)))),
        "nothing streamed before the disk took it: {sends:?}"
    );
    let Some(Send::All(Msg::Beat(beat))) = sends.first() else {
        panic!("a heartbeat: {sends:?}");
    };
    assert_eq!(beat.vv.get(&me), Some(&1), "the heartbeat stops below it");
    // A sync answered meanwhile carries the durable value, not the one waiting for the disk.
    let req = SyncReq {
        to: me,
        round: 1,
        vv: VersionVector::new(),
        after: None,
    };
    node.receive(Uuid::from_u128(2), Msg::SyncReq(req.clone()), at(4));
    let sends = node.take_sends();
    let [Send::To(_, Msg::SyncPage(page))] = &sends[..] else {
        panic!("one page: {sends:?}");
    };
    let state: Vec<_> = page.updates.iter().filter(|u| u.object == pump).collect();
    assert_eq!(state.len(), 1, "{page:?}");
    assert_eq!((state[0].seq, &state[0].value), (1, &Value::from("OFF")));
    assert_eq!(page.vv.get(&me), Some(&1));
    node.durable();
    node.stream();
    let sends = node.take_sends();
    assert!(matches!(&sends[..], [Send::All(Msg::Updates(b))] if b.updates.len() == 1));
    let req = SyncReq { round: 2, ..req };
    node.receive(Uuid::from_u128(2), Msg::SyncReq(req), at(5));
    let sends = node.take_sends();
    let [Send::To(_, Msg::SyncPage(page))] = &sends[..] else {
        panic!("one page: {sends:?}");
    };
    assert!(page.updates.iter().any(|u| u.object == pump && u.seq == 2));
}

/// Hands every message `from` wants sent to `to`, as the network would.
pub(in crate::mesh) fn deliver(from: &mut Node, to: &mut Node, now: Now) {
    for send in from.take_sends() {
        match send {
            Send::All(msg) => to.receive(from.uuid(), msg, now),
            Send::To(peer, msg) if peer == to.uuid() => to.receive(from.uuid(), msg, now),
            Send::To(..) => {}
        }
    }
}

/// Instance `me` that has recorded its member record and `states` switches of a pump, all
/// durable and streamed to `peer`; returns the node and every update it made.
fn switched(me: Uuid, peer: &mut Node, states: &[&str]) -> (Node, Vec<Update>) {
    let mut node = Node::new(me, "a", signed_replica(me, 1));
    let pump = ObjectId::new("pump").unwrap();
    node.record(
        &member_id(me),
        member_props("a", &key(1).verifying_key()),
        false,
        at(0),
    );
    for (i, s) in states.iter().enumerate() {
        node.record(
            &pump,
            vec![("state".into(), (*s).into())],
            false,
            at(i as u64 + 1),
        );
    }
    let made = flush(&mut node);
    deliver(&mut node, peer, at(10));
    (node, made)
}

/// Everything `node` asked the store for is durable and on the live stream; returns it.
pub(in crate::mesh) fn flush(node: &mut Node) -> Vec<Update> {
    let made = node
        .take_store()
        .into_iter()
        .flat_map(|p| p.updates)
        .collect();
    node.durable();
    node.stream();
    made
}

#[test]
fn a_fenced_instance_makes_no_change_until_a_peer_sent_its_own_updates_back() {
    let (me, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let pump = ObjectId::new("pump").unwrap();
    let mut b = Node::new(other, "b", signed_replica(other, 2));
    let (_, made) = switched(me, &mut b, &["ON", "OFF", "ON"]);
    let held = made.len() as u64;
    assert_eq!(b.replica().version_vector().get(&me), Some(&held));

    // The log is emptied: only the member record is left on this disk.
    let record: Vec<&Update> = made.iter().filter(|u| u.object != pump).collect();
    let reopened = || {
        let mut r = signed_replica(me, 1);
        for u in &record {
            r.apply(u, at(20).wall_ms);
        }
        Node::new(me, "a", r)
    };
    // Unfenced, the next change would reuse seq 2, which the peer holds for another update.
    let mut careless = reopened();
    careless.record(&pump, vec![("state".into(), "OFF".into())], false, at(21));
    let reused = careless.take_store().remove(0).updates.remove(0);
    assert_eq!(
        reused.seq,
        record.len() as u64 + 1,
        "the hazard the fence closes: a seq the peer holds for another update"
    );

    let mut a = reopened();
    a.fence("log emptied", at(21));
    let changed = a.record(&pump, vec![("state".into(), "OFF".into())], false, at(21));
    assert!(
        changed.is_none() && a.take_store().is_empty(),
        "no change made"
    );
    assert_eq!(a.deferred(), 1);
    a.beat(at(22));
    assert!(a.fenced().is_some(), "a heartbeat alone does not lift it");

    // b's heartbeat says how many of ours it holds, and starts a sync from it.
    beat_and_sync(&mut b, &mut a, 23);
    a.beat(at(24));
    assert!(
        a.fenced().is_some(),
        "another live peer may not have beaten yet, and may hold more of ours"
    );
    let heard_all = 21 + crate::mesh::peers::OFFLINE_AFTER.as_millis() as u64;
    a.beat(at(heard_all));
    assert_eq!(a.fenced(), None, "the sync and the peers' beats lifted it");
    let kept = own_made(&mut a);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        kept[0].seq,
        held + 1,
        "after the updates the peer sent back"
    );
    a.durable();
    a.stream();
    deliver(&mut a, &mut b, at(heard_all + 1));
    assert_eq!(
        b.replica().get(&pump).and_then(|o| o.text("state")),
        Some("OFF"),
        "the peer took the change made after the fence"
    );
}

#[test]
fn a_fence_waits_for_the_peer_that_holds_the_most_of_our_own_updates() {
    let (me, other, third) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let pump = ObjectId::new("pump").unwrap();
    let mut b = Node::new(other, "b", signed_replica(other, 2));
    let mut c = Node::new(third, "c", signed_replica(third, 3));
    let (mut orig, made) = switched(me, &mut b, &["ON", "OFF"]);
    deliver_updates(me, &made, &mut c);
    // Two more switches reach c only (b was cut off).
    for (i, s) in ["ON", "OFF"].iter().enumerate() {
        orig.record(
            &pump,
            vec![("state".into(), (*s).into())],
            false,
            at(11 + i as u64),
        );
    }
    let later = flush(&mut orig);
    deliver_updates(me, &later, &mut c);
    let most = (made.len() + later.len()) as u64;
    assert_eq!(c.replica().version_vector().get(&me), Some(&most));

    // The log is emptied but for the member record; b answers first.
    let mut a = emptied(me, &made);
    a.fence("log emptied", at(20));
    a.record(&pump, vec![("state".into(), "ON".into())], false, at(20));
    beat_and_sync(&mut b, &mut a, 21);
    let beat_at = 20 + crate::mesh::peers::OFFLINE_AFTER.as_millis() as u64;
    c.beat(at(beat_at));
    deliver(&mut c, &mut a, at(beat_at));
    a.beat(at(beat_at));
    assert!(
        a.fenced().is_some(),
        "c said it holds {most} of ours; lifting now would reuse its sequence numbers"
    );
    // c's heartbeat started a sync from it; its answer lifts the fence.
    deliver(&mut a, &mut c, at(beat_at + 1));
    deliver(&mut c, &mut a, at(beat_at + 2));
    assert_eq!(a.fenced(), None);
    let kept = own_made(&mut a);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].seq, most + 1, "numbered after what c held");
}

#[test]
fn a_fence_waits_for_every_member_it_knows_even_one_not_heard_from() {
    let (me, other, away) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let mut b = Node::new(other, "b", signed_replica(other, 2));
    let mut c = Node::new(away, "c", signed_replica(away, 3));
    c.record(
        &member_id(away),
        member_props("c", &key(3).verifying_key()),
        false,
        at(0),
    );
    flush(&mut c);
    deliver(&mut c, &mut b, at(1));
    let (_, made) = switched(me, &mut b, &["ON"]);
    // c was cut off from a before a's log was emptied; b knows c as a member.
    let mut a = emptied(me, &made);
    a.fence("log emptied", at(20));
    beat_and_sync(&mut b, &mut a, 21);
    let heard_all = 20 + crate::mesh::peers::OFFLINE_AFTER.as_millis() as u64;
    a.beat(at(heard_all));
    assert!(
        a.fenced().is_some(),
        "c, a member not heard from, may hold updates of ours b lacks"
    );
    c.beat(at(heard_all + 1));
    deliver(&mut c, &mut a, at(heard_all + 1));
    deliver(&mut a, &mut c, at(heard_all + 1));
    deliver(&mut c, &mut a, at(heard_all + 2));
    assert_eq!(a.fenced(), None, "synced from every member");
}

#[test]
fn a_fence_waits_for_a_peer_that_said_it_holds_our_updates_and_went_quiet() {
    let (me, other, third) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let mut b = Node::new(other, "b", signed_replica(other, 2));
    let mut c = Node::new(third, "c", signed_replica(third, 3));
    let (_, made) = switched(me, &mut b, &["ON", "OFF", "ON"]);
    let held = made.len() as u64;

    let mut a = emptied(me, &made);
    a.fence("log emptied", at(20));
    // b says it holds our updates, then restarts before it answers the sync.
    b.beat(at(21));
    deliver(&mut b, &mut a, at(21));
    a.take_sends();
    beat_and_sync(&mut c, &mut a, 22);
    let quiet = 22 + 2 * crate::mesh::peers::OFFLINE_AFTER.as_millis() as u64;
    c.beat(at(quiet));
    deliver(&mut c, &mut a, at(quiet));
    a.beat(at(quiet));
    assert!(
        a.fenced().is_some(),
        "b went quiet, but it said it holds updates of ours no other peer sent back"
    );
    // b is back; the request a sends again reaches it.
    beat_and_sync(&mut b, &mut a, quiet + 1);
    assert_eq!(a.fenced(), None, "b is back and sent them");
    assert_eq!(a.replica().version_vector().get(&me), Some(&held));
}

#[test]
fn a_fence_waits_for_a_peer_known_from_before_that_no_member_record_names() {
    let (me, other, away) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let mut b = Node::new(other, "b", signed_replica(other, 2));
    let mut c = Node::new(away, "c", signed_replica(away, 3));
    // Only c ever had our updates, and only our lost store said who c is.
    let (_, made) = switched(me, &mut c, &["ON", "OFF"]);
    let held = made.len() as u64;
    let mut a = emptied(me, &made);
    a.fence("log emptied", at(20));
    a.fence_expects([away, me]);
    beat_and_sync(&mut b, &mut a, 21);
    let heard_all = 20 + crate::mesh::peers::OFFLINE_AFTER.as_millis() as u64;
    a.beat(at(heard_all));
    assert!(
        a.fenced().is_some(),
        "c, known from before, may hold updates of ours b lacks"
    );
    beat_and_sync(&mut c, &mut a, heard_all + 1);
    assert_eq!(a.fenced(), None, "synced from the peer known from before");
    assert_eq!(a.replica().version_vector().get(&me), Some(&held));
}

#[test]
fn a_fence_syncs_again_from_a_peer_that_took_more_of_our_updates_past_a_gap() {
    let (me, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let pump = ObjectId::new("pump").unwrap();
    let mut b = Node::new(other, "b", signed_replica(other, 2));
    let (_, made) = switched(
        me,
        &mut Node::new(Uuid::from_u128(9), "x", Replica::new(Uuid::from_u128(9))),
        &["ON", "OFF", "ON"],
    );
    let (first, rest) = made.split_at(3);
    deliver_updates(me, first, &mut b);

    let mut a = emptied(me, &made);
    a.fence("log emptied", at(20));
    beat_and_sync(&mut b, &mut a, 21);
    // b now takes our last update, past a gap (the one before it never reached b): its
    // version vector still says 3, its heartbeat says it holds ours up to 5.
    deliver_updates(me, &rest[1..], &mut b);
    assert_eq!(b.replica().version_vector().get(&me), Some(&3));
    let heard_all = 20 + crate::mesh::peers::OFFLINE_AFTER.as_millis() as u64;
    b.beat(at(heard_all));
    deliver(&mut b, &mut a, at(heard_all));
    a.beat(at(heard_all));
    assert!(
        a.fenced().is_some(),
        "b holds more of ours than its last sync sent"
    );
    deliver(&mut a, &mut b, at(heard_all + 1));
    deliver(&mut b, &mut a, at(heard_all + 2));
    assert_eq!(a.fenced(), None);
    a.record(
        &pump,
        vec![("state".into(), "OFF".into())],
        false,
        at(heard_all + 3),
    );
    let kept = own_made(&mut a);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        kept[0].seq,
        made.len() as u64 + 1,
        "numbered after what b holds"
    );
}

/// Instance `me` after its log was emptied from outside: only its member record is left
/// of `made`.
fn emptied(me: Uuid, made: &[Update]) -> Node {
    let mut r = signed_replica(me, 1);
    for u in made.iter().filter(|u| u.object == member_id(me)) {
        r.apply(u, at(20).wall_ms);
    }
    Node::new(me, "a", r)
}

/// `peer` beats at `ms`; the sync its heartbeat starts at fenced `a` runs to its end.
pub(in crate::mesh) fn beat_and_sync(peer: &mut Node, a: &mut Node, ms: u64) {
    peer.beat(at(ms));
    deliver(peer, a, at(ms));
    deliver(a, peer, at(ms));
    deliver(peer, a, at(ms + 1));
}

/// The updates of its own `node` asked the store for since the last call.
fn own_made(node: &mut Node) -> Vec<Update> {
    node.take_store()
        .into_iter()
        .filter(|p| p.own)
        .flat_map(|p| p.updates)
        .collect()
}

/// Streams `updates` of origin `from` to `to`, as the live stream would.
fn deliver_updates(from: Uuid, updates: &[Update], to: &mut Node) {
    let batch = proto::Batch {
        updates: updates.to_vec(),
    };
    to.receive(from, Msg::Updates(batch), at(10));
}

#[test]
fn a_fence_no_peer_answers_lifts_after_its_limit_and_keeps_a_bounded_backlog() {
    let me = Uuid::from_u128(1);
    let mut a = Node::new(me, "a", signed_replica(me, 1));
    let start = at(0);
    a.fence("log emptied", start);
    for i in 0..crate::mesh::fence::MAX_DEFERRED + 10 {
        let id = ObjectId::new("pump").unwrap();
        a.record(&id, vec![("x".into(), (i as f64).into())], false, at(1));
    }
    assert_eq!(a.deferred(), crate::mesh::fence::MAX_DEFERRED, "bounded");
    a.beat(Now {
        at: start.at + crate::mesh::fence::FENCE_LIMIT,
        wall_ms: start.wall_ms + 200_000,
    });
    assert_eq!(a.fenced(), None);
    let x = a
        .replica()
        .get(&ObjectId::new("pump").unwrap())
        .and_then(|o| o.number("x"));
    assert_eq!(
        x,
        Some((crate::mesh::fence::MAX_DEFERRED + 9) as f64),
        "the newest kept change was made"
    );
}

#[test]
fn heartbeats_say_whether_we_reach_the_shared_broker_and_older_ones_read_as_not() {
    let me = Uuid::from_u128(1);
    let mut node = Node::new(me, "a", signed_replica(me, 1));
    for connected in [true, false] {
        node.set_shared(connected);
        node.beat(at(1));
        let sends = node.take_sends();
        let Some(Send::All(Msg::Beat(beat))) = sends.first() else {
            panic!("a heartbeat: {sends:?}");
        };
        assert_eq!(beat.shared, connected);
        let json = serde_json::to_string(beat).unwrap();
        assert_eq!(json.contains("shared"), connected, "{json}");
    }
    let older: Beat = serde_json::from_str(r#"{"name":"b","vv":{}}"#).unwrap();
    assert!(!older.shared);
}
