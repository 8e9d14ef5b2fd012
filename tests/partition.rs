//! A real partition: one agent runs in its own network namespace, joined to the others by a
//! veth pair; taking the link down cuts it off exactly as a pulled cable would (no resets, just
//! silence), and bringing it up heals the mesh.

mod support;

use support::*;

#[test]
fn both_sides_of_a_partition_converge_to_last_writer_wins() {
    let ns = Netns::create();
    let a = start_node("alpha", &node_config("a"), &[]);
    let c = start_node("gamma", &node_config("c"), &["--peer", &a.addr()]);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("b.toml");
    std::fs::write(&cfg, node_config("b")).unwrap();
    let peer = format!("{}:{}", ns.host_ip, a.port);
    let b = Agent::start_in_netns(
        &ns.name,
        &tmp.path().join("data"),
        free_port(),
        &[
            "--name",
            "beta",
            "--config",
            cfg.to_str().unwrap(),
            "--peer",
            &peer,
        ],
    );
    for (n, others) in [
        (&a, ["beta", "gamma"]),
        (&b, ["alpha", "gamma"]),
        (&c, ["alpha", "beta"]),
    ] {
        for other in others {
            wait_until("full mesh before the cut", || {
                n.peer_status(other) == "online"
            });
        }
    }

    ns.cut();
    wait_until("alpha sees beta gone", || {
        a.peer_status("beta") == "offline"
    });
    wait_until("beta sees alpha gone", || {
        b.peer_status("alpha") == "offline"
    });
    wait_until("beta sees gamma gone", || {
        b.peer_status("gamma") == "offline"
    });

    // The same object on both sides: the later write must win everywhere after the heal.
    assert!(a.cli(&["move", "a-light", "side-a"]).status.success());
    assert!(a.cli(&["set", "a-light", "on"]).status.success());
    assert!(b.cli(&["move", "a-light", "side-b"]).status.success());
    // Different objects on each side: both changes survive.
    assert!(c.cli(&["move", "c-fan", "only-gamma"]).status.success());
    assert!(b
        .cli(&["move", "b-fan", "only-beta", "--x", "9"])
        .status
        .success());
    assert!(b.cli(&["set", "b-light", "on"]).status.success());
    assert_eq!(a.get("a-light")["room"], "side-a", "still apart");

    ns.heal();
    let mut views = Vec::new();
    wait_until("the three replicas to agree", || {
        views = [&a, &b, &c].iter().map(|n| n.all()).collect();
        views.iter().all(|v| v.len() == 9 && *v == views[0])
            && views[0]["a-light"]["room"] == "side-b"
    });
    let v = &views[0];
    assert_eq!(v["a-light"]["state"], "ON");
    assert_eq!(v["c-fan"]["room"], "only-gamma");
    assert_eq!(v["b-fan"]["room"], "only-beta");
    assert_eq!(v["b-fan"]["x"], 9.0);
    assert_eq!(v["b-light"]["state"], "ON");
    assert_eq!(v["b-light"]["available"], true);
}
