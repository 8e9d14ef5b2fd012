//! A full disk under a running agent: its store is a small tmpfs that the test fills.
//! Commands keep working (the hardware moves and the answer says so), the log says what is
//! wrong and where, peers only get changes once they are on disk, and once there is room
//! again nothing has been lost.

mod support;

use support::*;

#[test]
fn a_full_disk_loses_nothing_and_says_which_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = Tmpfs::mount(&data.join("store"), "256k");
    let cfg = tmp.path().join("a.toml");
    std::fs::write(&cfg, node_config("a")).unwrap();
    let cfg = cfg.to_str().unwrap();
    let mut a = Agent::start_in(&data, free_port(), &["--name", "alpha", "--config", cfg]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("beta has alpha's objects", || {
        b.all().get("a-fan").is_some_and(|o| o["room"] == "room-a")
    });

    let filler = disk.fill("filler");
    let out = a.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(a.pin(17).as_deref(), Some("1"), "the hardware moved");
    // Small appends may still fit in the last page the log already has: move until the disk
    // refuses one. That last move is current here but not on disk.
    let mut moves = 0;
    wait_until("the log names the file and the cause", || {
        moves += 1;
        let out = a.cli(&["move", "a-fan", &format!("attic-{moves}")]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::read_to_string(data.join("test-agent.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("cannot write the replica log") && l.contains("updates.log"))
    });
    // The answer says so: done, not yet durable.
    moves += 1;
    let out = a.cli(&["move", "a-fan", &format!("attic-{moves}"), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["persisted"], false, "{reply}");
    let out = a.cli(&["move", "a-fan", &format!("attic-{moves}")]);
    assert!(
        text(&out.stderr).contains("cannot write it to its disk yet"),
        "{}",
        text(&out.stderr)
    );
    // An admin change says so too: a user added now is in memory only.
    let out = a.cli(&["user", "add", "late-user"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot write it to its disk yet"),
        "{}",
        text(&out.stderr)
    );
    let attic = format!("attic-{moves}");
    assert_eq!(a.get("a-fan")["room"], attic, "the change is current here");
    // Not on disk, so not sent: a crash now must not leave peers holding what we lost.
    assert_ne!(b.all()["a-fan"]["room"], attic);
    // Nor handed out by a sync: an instance joining now gets what is durable (from beta). It
    // is invited by beta: alpha could not vouch for it, since its record of the new member
    // would not be on disk either.
    let c = start_node("gamma", &node_config("c"), &["--peer", &b.addr()]);
    wait_until("gamma synced alpha's objects", || {
        c.all().get("a-fan").is_some_and(|o| o["room"].is_string())
    });
    assert_ne!(c.all()["a-fan"]["room"], attic);

    std::fs::remove_file(filler).unwrap();
    wait_until(
        "the changes reach beta and gamma once they are on disk",
        || {
            [&b, &c].iter().all(|peer| {
                let all = peer.all();
                all["a-fan"]["room"] == attic && all["a-light"]["state"] == "ON"
            })
        },
    );
    let out = a.cli(&["move", "a-light", "hall", "--json"]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(reply.get("persisted").is_none(), "durable again: {reply}");
    a.kill9();
    a.restart();
    assert_eq!(a.get("a-fan")["room"], attic, "kept across a crash");
}

/// A store wiped from outside while the instance keeps its identity: peers hold updates of
/// ours that this disk no longer has. Without the fence, the restarted instance would number
/// the changes it makes at start (here a new name from its config) with sequence numbers the
/// peer already holds, and the peer would drop them as known: beta would never see the name.
#[test]
fn a_store_lost_from_outside_takes_our_changes_back_before_making_new_ones() {
    let mut a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("beta has alpha's objects", || {
        b.all().get("a-fan").is_some_and(|o| o["room"] == "room-a")
    });
    for i in 0..5 {
        let room = format!("attic-{i}");
        let out = a.cli(&["move", "a-fan", &room]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = a.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("beta has alpha's changes", || {
        let all = b.all();
        all.get("a-fan").is_some_and(|o| o["room"] == "attic-4")
            && all.get("a-light").is_some_and(|o| o["state"] == "ON")
    });

    a.stop();
    std::fs::remove_dir_all(a.dir.join("store")).unwrap();
    let config = a.dir.parent().unwrap().join("pimesh.toml");
    let renamed =
        node_config("a").replace("id = \"a-fan\"\n", "id = \"a-fan\"\nname = \"Attic fan\"\n");
    assert_ne!(renamed, node_config("a"));
    std::fs::write(&config, renamed).unwrap();
    a.restart_with(&["--peer", &b.addr()]);
    wait_until("alpha has its own changes back from beta", || {
        a.all().get("a-fan").is_some_and(|o| o["room"] == "attic-4")
    });
    wait_until("beta takes the name alpha's config gave at start", || {
        b.all()
            .get("a-fan")
            .is_some_and(|o| o["name"] == "Attic fan")
    });
    let out = a.cli(&["move", "a-fan", "cellar"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("beta takes alpha's first change after the loss", || {
        b.all().get("a-fan").is_some_and(|o| o["room"] == "cellar")
    });
    let log = a.log();
    assert!(
        log.contains("was missing though this instance's identity was kept"),
        "the loss is reported: {log}"
    );
}

/// The fence outlives a restart: a store lost from outside is seen only by the start that
/// finds it, and an instance restarted again before a peer sent its own changes back would
/// otherwise number new changes after the few it has, reusing numbers the peer holds.
#[test]
fn a_fence_outlives_a_restart_until_a_peer_sent_our_changes_back() {
    let mut a = start_node("alpha", &node_config("a"), &[]);
    let mut b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    let out = a.cli(&["move", "a-fan", "attic"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("beta has alpha's move", || {
        b.all().get("a-fan").is_some_and(|o| o["room"] == "attic")
    });

    b.stop();
    a.stop();
    std::fs::remove_dir_all(a.dir.join("store")).unwrap();
    a.restart_with(&["--peer", &b.addr()]);
    // Fenced, it makes no change of its own, not even the objects of its config (made at
    // start, before it answers).
    let holds_fan = |a: &Agent| a.all().contains_key("a-fan");
    assert!(
        !holds_fan(&a),
        "fenced with no peer to send its changes back"
    );
    assert!(a.dir.join("fenced").exists(), "the fence is on disk");

    a.kill9();
    a.restart();
    assert!(!holds_fan(&a), "still fenced after a restart: {}", a.log());
    assert!(
        a.log()
            .contains("the fence of an earlier start is still up"),
        "{}",
        a.log()
    );

    b.restart();
    wait_until("alpha has its own move back from beta", || {
        a.all().get("a-fan").is_some_and(|o| o["room"] == "attic")
    });
    wait_until("alpha makes changes again", || {
        a.cli(&["move", "a-fan", "cellar"]).status.success()
    });
    wait_until("beta takes alpha's change after the fence", || {
        b.all().get("a-fan").is_some_and(|o| o["room"] == "cellar")
    });
    wait_until("the fence's file is gone", || {
        !a.dir.join("fenced").exists()
    });
}
