//! Paged syncs over a link that loses messages, driven directly (the simulator drives them
//! through every fault: `sim/`).

use super::node::tests::{at, flush, key};
use super::node::{Msg, Node, Send};
use super::proto::PAGE;
use super::sync::{SYNC_RETRIES, SYNC_RETRY};
use crate::membership::{member_id, member_props};
use crate::model::ObjectId;
use crate::replica::Replica;
use uuid::Uuid;

/// Instance `n` (UUID `n`, key `n`), its member record recorded and durable.
fn node(n: u8) -> Node {
    let me = Uuid::from_u128(n.into());
    let mut replica = Replica::new(me);
    replica.set_signer(key(n));
    let mut node = Node::new(me, &format!("pi{n}"), replica);
    let props = member_props(&format!("pi{n}"), &key(n).verifying_key());
    node.record(&member_id(me), props, false, at(0));
    flush(&mut node);
    node
}

/// Instance `n` holding `count` lamps it switched on, all durable and sent.
fn lamps(n: u8, count: usize) -> Node {
    let mut node = node(n);
    for i in 0..count {
        let id = ObjectId::new(format!("lamp-{i}")).unwrap();
        node.record(&id, vec![("state".into(), "ON".into())], false, at(1));
    }
    flush(&mut node);
    node.take_sends();
    node
}

/// The sync requests `node` wants sent, as (round, after).
fn requests(node: &mut Node) -> Vec<(u64, Option<(Uuid, u64)>)> {
    node.take_sends()
        .into_iter()
        .filter_map(|s| match s {
            Send::To(_, Msg::SyncReq(r)) => Some((r.round, r.after)),
            _ => None,
        })
        .collect()
}

/// Hands every message `from` wants sent to `to`; returns how many sync pages there were.
fn pass(from: &mut Node, to: &mut Node, ms: u64) -> usize {
    let mut pages = 0;
    for send in from.take_sends() {
        let msg = match send {
            Send::All(msg) => msg,
            Send::To(peer, msg) if peer == to.uuid() => msg,
            Send::To(..) => continue,
        };
        pages += usize::from(matches!(msg, Msg::SyncPage(_)));
        to.receive(from.uuid(), msg, at(ms));
    }
    pages
}

#[test]
fn a_sync_whose_request_was_lost_asks_again_for_the_page_it_reached() {
    // More than two pages of b's updates.
    let mut b = lamps(2, PAGE + PAGE / 2);
    let mut a = node(1);
    a.link_ready(b.uuid(), at(10));
    assert_eq!(pass(&mut a, &mut b, 10), 0);
    // b may also ask a for what a holds; only its page matters here.
    let first: Vec<Msg> = b
        .take_sends()
        .into_iter()
        .filter_map(|s| match s {
            Send::To(_, msg @ Msg::SyncPage(_)) => Some(msg),
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 1, "the first page");
    a.receive(b.uuid(), first[0].clone(), at(11));
    // The request for the second page is lost.
    let lost = requests(&mut a);
    assert_eq!(lost.len(), 1);
    let (round, after) = lost[0];
    assert!(after.is_some(), "it asks for what follows the first page");

    a.beat(at(11 + SYNC_RETRY.as_millis() as u64));
    let again = requests(&mut a);
    assert_eq!(again, vec![(round, after)], "the same request, sent again");
    a.beat(at(12 + SYNC_RETRY.as_millis() as u64));
    assert_eq!(
        requests(&mut a),
        vec![],
        "not sent again before another second"
    );

    // A late copy of the first page is not applied again, nor asks again.
    a.receive(
        b.uuid(),
        first[0].clone(),
        at(13 + SYNC_RETRY.as_millis() as u64),
    );
    assert_eq!(requests(&mut a), vec![], "a page we had already");

    // This time the request arrives.
    let resend = 12 + 2 * SYNC_RETRY.as_millis() as u64;
    a.beat(at(resend));
    pass(&mut a, &mut b, resend);
    assert_eq!(pass(&mut b, &mut a, resend), 1, "the second page");
    let total = (PAGE + PAGE / 2 + 2) as u64;
    assert_eq!(a.replica().version_vector().get(&b.uuid()), Some(&total));
    assert_eq!(a.footprint().syncs, 0, "the sync finished");
}

#[test]
fn a_page_answering_a_request_made_before_a_restart_is_not_taken_for_this_run() {
    let mut b = lamps(2, 3);
    // The first run asks b, then dies; its request is still on the way.
    let mut before = node(1);
    before.link_ready(b.uuid(), at(10));
    let late: Vec<Send> = before.take_sends();
    // The next run (a lost store: nothing of b's) asks too; b answers the old request first.
    let mut a = Node::new(Uuid::from_u128(1), "pi1", Replica::new(Uuid::from_u128(1)));
    a.link_ready(b.uuid(), at(5_000));
    let ours = requests(&mut a);
    assert_ne!(
        Some(ours[0].0),
        late.iter().find_map(|s| match s {
            Send::To(_, Msg::SyncReq(r)) => Some(r.round),
            _ => None,
        }),
        "a round of this run is never one of the run before"
    );
    for send in late {
        if let Send::To(_, msg) = send {
            b.receive(a.uuid(), msg, at(5_001));
        }
    }
    pass(&mut b, &mut a, 5_002);
    assert_eq!(
        a.replica().version_vector().get(&b.uuid()),
        None,
        "the old run's page claims nothing for this one"
    );
    assert_eq!(
        a.footprint().syncs,
        1,
        "this run's sync still waits for its page"
    );
}

#[test]
fn a_peer_sends_an_instance_back_its_own_updates_it_could_not_verify() {
    // a's updates reached b, its member record never did: b holds them unverified.
    let before = lamps(1, 2);
    let made: Vec<_> = before.replica().delta_since(&Default::default());
    let lamps_only: Vec<_> = made
        .into_iter()
        .filter(|u| u.object != member_id(before.uuid()))
        .collect();
    let mut b = node(2);
    b.take_sends();
    let batch = super::proto::Batch {
        updates: lamps_only.clone(),
    };
    b.receive(before.uuid(), Msg::Updates(batch), at(2));
    assert!(
        b.replica().get(&lamps_only[0].object).is_none(),
        "held, not applied"
    );
    b.take_sends();
    let top = lamps_only.iter().map(|u| u.seq).max();
    b.beat(at(3));
    let above = b.take_sends().into_iter().find_map(|s| match s {
        Send::All(Msg::Beat(beat)) => beat.above.get(&before.uuid()).copied(),
        _ => None,
    });
    assert_eq!(above, top, "its heartbeat says it holds them");

    // a lost its store (and b never had its member record): b's sync sends them back.
    let mut a = Node::new(before.uuid(), "pi1", Replica::new(before.uuid()));
    a.replica_mut().set_signer(key(1));
    a.link_ready(b.uuid(), at(10));
    pass(&mut a, &mut b, 10);
    pass(&mut b, &mut a, 11);
    for u in &lamps_only {
        assert!(
            a.replica().get(&u.object).is_some(),
            "{} came back",
            u.object
        );
    }
}

#[test]
fn a_sync_gives_up_after_its_retries_and_the_timeout() {
    let mut b = node(2);
    b.take_sends();
    let mut a = node(1);
    a.link_ready(b.uuid(), at(10));
    assert_eq!(requests(&mut a).len(), 1, "lost");
    let step = SYNC_RETRY.as_millis() as u64;
    let mut sent = 0;
    for k in 1..=SYNC_RETRIES as u64 + 4 {
        a.beat(at(10 + k * step));
        sent += requests(&mut a).len();
    }
    assert_eq!(sent, SYNC_RETRIES as usize, "sent again at most this often");
    assert_eq!(a.footprint().syncs, 0, "then dropped");
}
