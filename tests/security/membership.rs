//! Members by invitation only: a stranger learns nothing and is never dialled, a token works
//! once, and a mesh from before authentication upgrades by invitation without losing its house.

use super::log_of;
use crate::support::*;

#[test]
fn an_instance_that_was_not_invited_learns_nothing_and_is_never_dialled() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let stranger_cfg = format!("{}[mesh]\npeers = [\"{}\"]\n", node_config("u"), a.addr());
    let u = start_node("stranger", &stranger_cfg, &[]);
    wait_until("the stranger is told it needs an invitation", || {
        log_of(&u).contains("not (yet) a member")
    });
    assert!(
        !u.all().contains_key("a-light"),
        "the stranger learnt alpha's objects"
    );
    assert!(
        a.peers().iter().all(|p| p["name"] != "stranger"),
        "{:?}",
        a.peers()
    );
    // Its mesh link is TLS: alpha's certificate is not from the stranger's CA (nor the
    // stranger's from alpha's), so it is refused before it can present a proof.
    assert!(
        log_of(&a).contains("TLS handshake failed"),
        "{}",
        log_of(&a)
    );
    // Alpha never connected to the stranger, so it never presented a proof there.
    let a_uuid = std::fs::read_to_string(a.dir.join("instance-id")).unwrap();
    let a_simple = a_uuid.trim().replace('-', "");
    assert!(
        !log_of(&u).contains(&a_simple),
        "alpha dialled the stranger: {}",
        log_of(&u)
    );
}

#[test]
fn an_invitation_works_once() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let token = invite(&a.dir, None);
    let b = start_node(
        "beta",
        &node_config("b"),
        &["--join", &token, "--peer", &a.addr()],
    );
    wait_until("beta joined", || b.peer_status("alpha") == "online");
    let c = start_node(
        "gamma",
        &node_config("c"),
        &["--join", &token, "--peer", &a.addr()],
    );
    wait_until("gamma is told the invitation is used", || {
        log_of(&c).contains("could not join the mesh of the invitation")
    });
    assert!(!c.all().contains_key("a-light"));
    assert!(a.peers().iter().all(|p| p["name"] != "gamma"));
    let bad = cli(&["run", "--join", "hello"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not a pimesh invitation token"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn a_mesh_from_before_authentication_upgrades_without_losing_the_house() {
    // Two instances as an older pimesh left them: an identity and a store of unsigned
    // updates without members or users; no credentials, key or mesh file. Each has state of
    // its own.
    let a = start_node("alpha", &node_config("a"), &[]);
    assert!(a.cli(&["move", "a-light", "attic"]).status.success());
    let b = start_node("beta", &node_config("b"), &[]);
    assert!(b.cli(&["move", "b-fan", "cellar"]).status.success());
    let (mut a, mut b) = (a, b);
    for agent in [&mut a, &mut b] {
        let uuid = agent.uuid().parse().unwrap();
        agent.stop();
        for f in [
            "credentials",
            "instance.key",
            "mesh.json",
            "invitations.json",
        ] {
            let _ = std::fs::remove_file(agent.dir.join(f));
        }
        make_legacy_store(&agent.dir.join("store"), uuid);
    }
    // The upgrade: start the first, invite the other, start it once with --join.
    a.restart();
    assert_eq!(a.get("a-light")["room"], "attic", "kept across the upgrade");
    let token = invite(&a.dir, None);
    b.restart_with(&["--join", &token, "--peer", &a.addr()]);
    wait_until("both houses merged on both", || {
        [&a, &b].iter().all(|n| {
            let all = n.all();
            all.get("a-light").is_some_and(|o| o["room"] == "attic")
                && all.get("b-fan").is_some_and(|o| o["room"] == "cellar")
        })
    });
}

/// Rewrites the store in `dir` as a pimesh from before authentication wrote it: the whole
/// house in the snapshot, no signatures, no member or user records.
fn make_legacy_store(dir: &std::path::Path, origin: uuid::Uuid) {
    let (mut store, replica) = pimesh::replica::Store::open(dir, origin).expect("store opens");
    store.compact(&replica).expect("compaction");
    drop(store);
    let path = dir.join("snapshot.json");
    let bytes = std::fs::read(&path).unwrap();
    // An older pimesh wrote the JSON document alone, without the checksum line after it.
    let text = String::from_utf8(bytes).unwrap();
    let document = text
        .rsplit_once("\ncrc32 ")
        .map_or(text.as_str(), |(d, _)| d);
    let mut snapshot: serde_json::Value = serde_json::from_str(document).unwrap();
    let objects = snapshot["objects"].as_object_mut().unwrap();
    objects.retain(|id, _| !id.starts_with('_'));
    let mut signed = 0;
    for object in objects.values_mut() {
        for register in object["props"].as_object_mut().unwrap().values_mut() {
            signed += usize::from(register.as_object_mut().unwrap().remove("sig").is_some());
        }
    }
    assert!(signed > 0, "the store was signed before the rewrite");
    std::fs::write(&path, serde_json::to_vec(&snapshot).unwrap()).unwrap();
}
