//! An SD card that takes seconds per fsync delays only what waits for durability: our
//! updates on their way to peers. The command's answer, the pin, heartbeats and other
//! requests go on meanwhile, because the fsync runs on a thread of its own. Alone in its
//! file: the slow disk is asked for through the environment, which every agent this process
//! starts meanwhile would inherit.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// How much longer each fsync of the slow instance takes.
const SLOW: Duration = Duration::from_millis(2000);

#[test]
fn a_slow_fsync_delays_only_what_waits_for_the_disk() {
    std::env::set_var("PIMESH_TEST_FSYNC_DELAY_MS", SLOW.as_millis().to_string());
    let a = start_node("alpha", &node_config("a"), &[]);
    std::env::remove_var("PIMESH_TEST_FSYNC_DELAY_MS");
    assert!(
        a.log().contains("as on a slow SD card"),
        "alpha runs with the slow disk: {}",
        a.log()
    );
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("beta has alpha's objects", || {
        b.all().contains_key("a-light") && a.all().contains_key("b-light")
    });

    let t = Instant::now();
    let out = a.cli(&["set", "a-light", "on"]);
    let answered = t.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        answered < SLOW,
        "the answer waited for the fsync: {answered:?}"
    );
    assert_eq!(
        a.pin(17).as_deref(),
        Some("1"),
        "the relay switched at once"
    );
    // While the fsync runs, alpha still answers requests and beta still sees it online.
    assert!(a.all().get("a-light").is_some_and(|o| o["state"] == "ON"));
    assert_eq!(b.peer_status("alpha"), "online");
    wait_until("beta sees the switch once it is durable", || {
        b.all().get("a-light").is_some_and(|o| o["state"] == "ON")
    });
    let seen = t.elapsed();
    assert!(
        seen >= SLOW,
        "the change left alpha before its fsync ended: {seen:?}"
    );
}
