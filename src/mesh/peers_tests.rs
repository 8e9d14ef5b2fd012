//! Tests of the peer table: liveness, identification, moves, links.
use super::*;

fn hello(uuid: Uuid, name: &str) -> Hello {
    Hello {
        uuid,
        name: name.into(),
        addrs: vec![],
        peers: vec![],
    }
}

#[test]
fn a_peer_is_online_while_linked_and_beating() {
    let me = Uuid::new_v4();
    let b = Uuid::new_v4();
    let mut p = Peers::new(me, "a");
    let t0 = Instant::now();
    assert!(p.want_link("h:1"));
    p.add_link("h:1");
    assert!(!p.want_link("h:1"));
    p.link_up("h:1");
    assert_eq!(p.identify("h:1", &hello(b, "b")), Identified::Peer(b));
    assert_eq!(p.heard(b, None, t0, 1), vec![Change::Online(b)]);
    assert!(p.is_alive(b));
    assert_eq!(p.expire(t0 + OFFLINE_AFTER), vec![]);
    assert_eq!(
        p.expire(t0 + OFFLINE_AFTER + Duration::from_millis(1)),
        vec![Change::Offline(b)]
    );
    assert_eq!(
        p.heard(b, None, t0 + Duration::from_secs(5), 2),
        vec![Change::Online(b)]
    );
    assert_eq!(p.link_down("h:1"), vec![Change::Offline(b)]);
    assert_eq!(
        p.heard(b, None, t0 + Duration::from_secs(6), 3),
        vec![],
        "no link, not online"
    );
}

#[test]
fn own_and_duplicate_brokers_are_dropped() {
    let me = Uuid::new_v4();
    let b = Uuid::new_v4();
    let mut p = Peers::new(me, "a");
    p.add_link("self:1");
    assert_eq!(p.identify("self:1", &hello(me, "a")), Identified::Myself);
    assert!(!p.want_link("self:1"), "never link to ourselves again");
    p.add_link("h:1");
    p.add_link("10.0.0.2:1");
    assert_eq!(p.identify("h:1", &hello(b, "b")), Identified::Peer(b));
    p.link_up("h:1");
    assert_eq!(
        p.identify("10.0.0.2:1", &hello(b, "b")),
        Identified::Duplicate
    );
    assert_eq!(p.known().len(), 1);
    assert!(
        !p.want_link("10.0.0.2:1"),
        "a second address is not dialled again while the first link is up"
    );
    p.link_down("h:1");
    assert!(p.want_link("10.0.0.2:1"), "but is once it is down");
}

#[test]
fn forgetting_a_pi_leaves_the_link_its_replacement_took_over() {
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    let mut p = Peers::new(Uuid::new_v4(), "a");
    p.add_link("h:1");
    p.identify("h:1", &hello(old, "b"));
    // The rebuilt Pi answers at the same address.
    p.identify("h:1", &hello(new, "b"));
    assert_eq!(p.forget(old), None, "no link of the old one to drop");
    assert_eq!(p.uuid_at("h:1"), Some(new));
}

#[test]
fn a_long_silent_peer_is_stale_and_a_forgotten_one_gone() {
    let b = Uuid::new_v4();
    let mut p = Peers::new(Uuid::new_v4(), "a");
    p.set_stale_after(60_000);
    p.add_link("h:1");
    p.identify("h:1", &hello(b, "b"));
    p.link_up("h:1");
    p.heard(b, None, Instant::now(), 1_000);
    p.link_down("h:1");
    let status = |p: &Peers, now_ms| p.rows(&[], now_ms)[1].status.clone();
    assert_eq!(status(&p, 60_000), "offline");
    assert_eq!(status(&p, 61_001), "stale");
    assert_eq!(p.forget(b).as_deref(), Some("h:1"));
    assert_eq!(p.rows(&[], 0).len(), 1, "only this instance is left");
    assert!(!p.want_link("h:1"), "not dialled again for a while");
}

#[test]
fn a_peer_is_followed_to_a_new_address_once_its_old_link_is_down() {
    let b = Uuid::new_v4();
    let mut p = Peers::new(Uuid::new_v4(), "a");
    p.add_link("10.0.0.2:1883");
    assert_eq!(
        p.identify("10.0.0.2:1883", &hello(b, "b")),
        Identified::Peer(b)
    );
    p.link_up("10.0.0.2:1883");
    p.link_down("10.0.0.2:1883");
    p.add_learnt_link("10.0.0.9:1883", Instant::now());
    assert_eq!(
        p.identify("10.0.0.9:1883", &hello(b, "b")),
        Identified::Moved {
            uuid: b,
            from: "10.0.0.2:1883".into()
        }
    );
    assert_eq!(p.addr_of(b), Some("10.0.0.9:1883"));
    assert!(
        p.want_link("10.0.0.2:1883"),
        "the old address is no longer linked"
    );
}

#[test]
fn learnt_addresses_are_bounded_and_given_up_when_silent() {
    let mut p = Peers::new(Uuid::new_v4(), "a");
    let t0 = Instant::now();
    p.add_link("seed:1");
    let mut dialled = 0;
    for i in 0..499 {
        let addr = format!("10.0.0.1:{}", 2000 + i);
        if p.want_link(&addr) {
            p.add_learnt_link(&addr, t0);
            dialled += 1;
        }
    }
    assert_eq!(dialled, MAX_LINKS - 1);
    let b = Uuid::new_v4();
    p.identify("10.0.0.1:2000", &hello(b, "b"));

    assert!(p.give_up_links(t0 + Duration::from_secs(1)).is_empty());
    let gone = p.give_up_links(t0 + LINK_GIVE_UP);
    assert_eq!(
        gone.len(),
        MAX_LINKS - 2,
        "all but the seed and the identified one"
    );
    assert_eq!(p.known().len(), 2);
    assert!(!p.want_link("10.0.0.1:2001"), "not dialled again soon");
    p.give_up_links(t0 + LINK_GIVE_UP + RETRY_AFTER);
    assert!(p.want_link("10.0.0.1:2001"), "dialled again later");
    assert!(p.given_up.len() <= MAX_GIVEN_UP);
}

#[test]
fn same_name_is_a_conflict() {
    let mut p = Peers::new(Uuid::new_v4(), "kitchen");
    p.add_link("h:1");
    let other = Uuid::new_v4();
    p.identify("h:1", &hello(other, "kitchen"));
    assert_eq!(p.name_conflicts(), vec![other]);
    let rows = p.rows(&[], 0);
    assert!(rows.iter().all(|r| r.name_conflict));
}

#[test]
fn only_live_peers_whose_heartbeat_says_so_count_as_on_the_shared_broker() {
    let me = Uuid::new_v4();
    let b = Uuid::new_v4();
    let mut p = Peers::new(me, "a");
    let t0 = Instant::now();
    p.add_link("h:1");
    p.link_up("h:1");
    p.identify("h:1", &hello(b, "b"));
    p.heard(b, None, t0, 1);
    assert!(
        p.online_on_shared().is_empty(),
        "not until its heartbeat says so"
    );
    p.set_shared(b, true);
    assert_eq!(p.online_on_shared(), vec![b]);
    p.link_down("h:1");
    assert!(
        p.online_on_shared().is_empty(),
        "an offline peer speaks for nobody"
    );
    p.link_up("h:1");
    p.heard(b, None, t0 + Duration::from_secs(1), 2);
    assert_eq!(p.online_on_shared(), vec![b]);
    p.set_shared(b, false);
    assert!(p.online_on_shared().is_empty(), "it lost the shared broker");
    p.set_shared(Uuid::new_v4(), true);
    assert!(
        p.online_on_shared().is_empty(),
        "an unknown instance is not added"
    );
}
