//! Who speaks for the house on the shared broker: only an instance that reaches it.

use super::*;

/// An instance the shared broker refuses (here a wrong password; in a house, a broker it
/// has no route to) is still alive in the mesh, but it must not be the one that speaks for
/// the house there, even with the lowest UUID: the next instance that reaches the broker
/// does, so a change still reaches the broker's retained state.
#[test]
fn an_instance_that_cannot_reach_the_shared_broker_leaves_speaking_to_one_that_can() {
    let m = Mosquitto::start(false);
    let (mut a, mut b) = pair(&m);
    let (lowest, lowest_name, other, other_name, other_relay) = if a.uuid() < b.uuid() {
        (&mut a, "alpha", &mut b, "beta", "b-light")
    } else {
        (&mut b, "beta", &mut a, "alpha", "a-light")
    };
    // The lowest UUID starts again with a password the broker refuses.
    lowest.stop();
    let config = lowest.dir.parent().expect("config dir").join("pimesh.toml");
    let wrong = m.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").expect("write the wrong password");
    let right = m.dir.path().join("agent-password");
    let text = std::fs::read_to_string(&config).expect("read config");
    assert!(text.contains(&right.display().to_string()), "{text}");
    let text = text.replace(&right.display().to_string(), &wrong.display().to_string());
    std::fs::write(&config, text).expect("write config");
    lowest.restart();
    let (lowest, other) = (&*lowest, &*other);
    wait_until("the two to see each other online again", || {
        lowest.peer_status(other_name) == "online" && other.peer_status(lowest_name) == "online"
    });
    // The other instance chooses the speaker on its heartbeat: wait until it has heard from
    // the restarted one more than two heartbeats after that, so it has chosen since.
    let since = pimesh::clock::now_ms();
    wait_until_heavy(
        "the other to hear the restarted instance two heartbeats on",
        || {
            other.peers().iter().any(|p| {
                p["name"] == lowest_name
                    && p["last-seen-ms"]
                        .as_u64()
                        .is_some_and(|t| t > since + 2 * pimesh::mesh::peers::BEAT_MS)
            })
        },
    );
    assert!(
        lowest.log().contains("shared broker"),
        "the refused login is logged: {}",
        lowest.log()
    );
    // A client of the shared broker switches the other instance's light: that instance
    // runs it, and speaking for the house, leaves the new state retained there.
    let topic = format!("pimesh/{other_relay}");
    m.publish(&format!("{topic}/set"), "ON", false);
    wait_until("the other instance's light on", || {
        other.pin(17).as_deref() == Some("1")
    });
    wait_until("its state retained on the shared broker", || {
        m.retained(&topic)
            .is_some_and(|s| s.contains("\"state\":\"ON\""))
    });
}
