//! Who the peers are and how they find each other: an instance that dies goes offline, names
//! and object ids that collide are reported, a new or rebuilt instance takes the house as the
//! mesh has it, and peers are followed to a new address, by host name, and past a seed that
//! is down.

use super::converged;
use crate::support::*;

#[test]
fn a_dead_instance_goes_offline_and_its_objects_unavailable() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let mut c = start_node("gamma", &node_config("c"), &["--peer", &a.addr()]);
    converged(&[&a, &c]);
    assert!(c.cli(&["set", "c-light", "on"]).status.success());
    wait_until("alpha sees c-light on", || {
        a.all().get("c-light").is_some_and(|o| o["state"] == "ON")
    });
    c.kill9();
    let t = std::time::Instant::now();
    wait_until("gamma offline on alpha", || {
        a.peer_status("gamma") == "offline"
    });
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "offline after {:?}",
        t.elapsed()
    );
    let o = &a.all()["c-light"];
    assert_eq!(o["available"], false);
    assert_eq!(o["state"], "ON", "the last known state stays readable");
    let lines = mosquitto_sub(a.port, "pimesh/c-light", 1);
    assert!(lines[0].contains("\"available\":false"), "{lines:?}");
    let lines = mosquitto_sub(a.port, "pimesh/instance/+/status", 2);
    assert!(lines.iter().any(|l| l.ends_with(" offline")), "{lines:?}");
}

#[test]
fn two_instances_with_one_name_are_both_told() {
    let a = start_node("twin", &node_config("a"), &[]);
    let b = start_node("twin", &node_config("b"), &["--peer", &a.addr()]);
    for n in [&a, &b] {
        wait_until("name conflict reported", || {
            std::fs::read_to_string(n.dir.join("test-agent.log"))
                .unwrap_or_default()
                .contains("name conflict")
        });
        assert!(n.peers().iter().any(|p| p["name-conflict"] == true));
    }
}

#[test]
fn one_object_id_on_two_instances_is_a_conflict_not_an_overwrite() {
    let shared = "[board]\nbackend = \"sim\"\n[[relay]]\nid = \"garage\"\npin = 17\n";
    let a = start_node("alpha", shared, &[]);
    let b = start_node("beta", shared, &["--peer", &a.addr()]);
    for n in [&a, &b] {
        wait_until("conflict visible", || {
            n.all()
                .get("garage")
                .is_some_and(|o| o.get("conflict").is_some())
        });
        wait_until("conflict logged", || {
            std::fs::read_to_string(n.dir.join("test-agent.log"))
                .unwrap_or_default()
                .contains("object id conflict")
        });
        let out = n.cli(&["set", "garage", "on"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("claimed by more than one instance"));
        assert_eq!(n.pin(17).as_deref(), Some("0"), "no relay moved");
    }
}

#[test]
fn a_new_or_rebuilt_instance_takes_the_house_as_the_mesh_has_it_not_from_its_config() {
    let scene = "[[virtual]]\nid = \"scene\"\nroom = \"hall\"\n";
    let a = start_node("alpha", &format!("{}{scene}", node_config("a")), &[]);
    let b_config = format!("{}{scene}", node_config("b"));
    let b = start_node("beta", &b_config, &["--peer", &a.addr()]);
    wait_until("beta's lamp on alpha", || a.all().contains_key("b-light"));
    for args in [
        ["set", "scene", "on"].as_slice(),
        &["move", "scene", "attic"],
        &["move", "b-light", "cellar"],
    ] {
        let out = a.cli(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    wait_until("beta has the moves", || {
        b.all()
            .get("b-light")
            .is_some_and(|o| o["room"] == "cellar")
    });

    // A third Pi whose config also lists the scene joins: the scene stays as the house has it.
    let c = start_node(
        "gamma",
        &format!("{}{scene}", node_config("c")),
        &["--peer", &a.addr()],
    );
    // beta's SD card dies; it is rebuilt with the same name and config and an empty data dir.
    drop(b);
    // Rebuilt on another port than the old one's (as the test's free ports always are).
    let tls_port = free_port().to_string();
    let rebuilt = start_node(
        "beta",
        &b_config,
        &["--peer", &a.addr(), "--tls-port", &tls_port],
    );
    for n in [&a, &c, &rebuilt] {
        wait_until("every instance knows all three houses", || {
            let all = n.all();
            ["a-light", "b-light", "c-light", "scene"]
                .iter()
                .all(|id| all.contains_key(*id))
        });
    }
    for n in [&a, &c, &rebuilt] {
        let all = n.all();
        assert_eq!(all["scene"]["state"], "ON", "{:?}", all["scene"]);
        assert_eq!(all["scene"]["room"], "attic");
        assert_eq!(all["b-light"]["room"], "cellar");
        assert_eq!(
            all["c-light"]["room"], "room-c",
            "new objects start from the config"
        );
    }
}

#[test]
fn a_peer_that_comes_back_on_another_address_is_followed() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let mut b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("alpha sees beta", || a.peer_status("beta") == "online");
    let dir = b.dir.clone();
    let old = b.addr();
    b.kill9();
    wait_until("alpha sees beta gone", || a.peer_status("beta") != "online");
    // DHCP gave it another address; here, other ports (its TLS port, which peers link to,
    // too: the first free one from 8883 would be the old one again). Same data dir, same
    // identity.
    let tls_port = free_port().to_string();
    let moved = Agent::start_on_free_port(
        &dir,
        &[
            "--name",
            "beta",
            "--config",
            &dir.parent().unwrap().join("pimesh.toml").to_string_lossy(),
            "--peer",
            &a.addr(),
            "--tls-port",
            &tls_port,
        ],
    );
    assert_ne!(moved.addr(), old);
    wait_until("alpha follows beta to its new address", || {
        a.peer_status("beta") == "online"
    });
    let rows = a.peers();
    let beta: Vec<_> = rows.iter().filter(|p| p["name"] == "beta").collect();
    assert_eq!(beta.len(), 1, "one beta, at its new address: {rows:?}");
    // At whichever of beta's interfaces alpha reached first, on beta's new port.
    let addr = beta[0]["addr"].as_str().unwrap_or_default();
    assert!(addr.ends_with(&format!(":{tls_port}")), "{addr}");
    let out = a.cli(&["set", "b-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("beta's pin follows", || {
        moved.pin(17).as_deref() == Some("1")
    });
}

#[test]
fn a_pi_rebuilt_after_its_card_died_gets_its_relays_back_with_one_forget() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let b_config = node_config("b");
    let mut b = start_node("beta", &b_config, &["--peer", &a.addr()]);
    wait_until("alpha sees beta", || a.peer_status("beta") == "online");
    assert!(a.cli(&["move", "b-light", "cellar"]).status.success());
    wait_until("beta has the move", || {
        b.all()
            .get("b-light")
            .is_some_and(|o| o["room"] == "cellar")
    });
    assert!(a.cli(&["set", "b-light", "on"]).status.success());
    wait_until("beta's relay on", || b.pin(17).as_deref() == Some("1"));
    let old_uuid = b.uuid();
    // The card dies; the Pi is rebuilt with the same name and config, and an empty data dir.
    b.kill9();
    // Rebuilt on another port than the old one's (as the test's free ports always are).
    let tls_port = free_port().to_string();
    let rebuilt = start_node(
        "beta",
        &b_config,
        &["--peer", &a.addr(), "--tls-port", &tls_port],
    );
    wait_until("the conflict with its old self is visible", || {
        a.all()
            .get("b-light")
            .is_some_and(|o| o.get("conflict").is_some())
    });
    let out = a.cli(&["set", "b-light", "on"]);
    assert_eq!(out.status.code(), Some(2), "refused while two claim it");

    // One forget by name, on any member: the offline beta is meant.
    let out = a.cli(&["forget", "beta"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&old_uuid),
        "{}",
        text(&out.stderr)
    );
    for n in [&a, &rebuilt] {
        wait_until("the relay is the rebuilt Pi's alone", || {
            n.all()
                .get("b-light")
                .is_some_and(|o| o.get("conflict").is_none() && o["room"] == "cellar")
        });
        assert!(
            n.peers().iter().all(|p| p["uuid"] != old_uuid.as_str()),
            "{:?}",
            n.peers()
        );
        // The house shows what the rebuilt Pi's relay does (off since it started), not the
        // ON the old card left.
        wait_until("the house shows the rebuilt relay's level", || {
            n.all().get("b-light").is_some_and(|o| o["state"] == "OFF")
        });
    }
    assert_eq!(rebuilt.pin(17).as_deref(), Some("0"));
    let out = a.cli(&["set", "b-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("the rebuilt Pi switches", || {
        rebuilt.pin(17).as_deref() == Some("1")
    });

    // Refusals: the running instance, itself, nobody.
    let out = a.cli(&["forget", "beta"]);
    assert!(
        text(&out.stderr).contains("is online; stop it first"),
        "{}",
        text(&out.stderr)
    );
    let out = a.cli(&["forget", "alpha"]);
    assert!(
        text(&out.stderr).contains("cannot forget itself"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&a.cli(&["forget", "nobody"]).stderr).contains("no member"));

    // The old card comes back to life: it is no longer trusted.
    b.restart();
    wait_until("alpha refuses the forgotten instance", || {
        a.log().lines().any(|l| {
            l.contains("client refused")
                && l.contains(&format!("{old_uuid} is not a member of this mesh"))
        })
    });
    assert_eq!(a.all()["b-light"]["room"], "cellar");
}

#[test]
fn a_peer_given_by_host_name_is_linked_both_ways() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let peer = format!("localhost:{}", a.port);
    let b = start_node("beta", &node_config("b"), &["--peer", &peer]);
    // Alpha can only link back to beta through the address beta advertises, which beta
    // found by looking the name up off its main task.
    wait_until("alpha links to beta", || a.peer_status("beta") == "online");
    wait_until("beta links to alpha", || b.peer_status("alpha") == "online");
}

/// An instance restarted while its only configured peer is down still finds the rest of the
/// mesh: it dials the peers it had learnt before, not only `[mesh] peers`.
#[test]
fn a_restarted_instance_whose_seed_is_down_links_to_the_peers_it_knew() {
    let mut a = start_node("alpha", &node_config("a"), &[]);
    let mut b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    let c = start_node("gamma", &node_config("c"), &["--peer", &a.addr()]);
    converged(&[&a, &b, &c]);
    a.kill9();
    b.stop();
    b.restart();
    wait_until("beta links to gamma again without alpha", || {
        b.peer_status("gamma") == "online" && c.peer_status("beta") == "online"
    });
}
