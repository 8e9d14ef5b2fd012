//! An SD card that takes seconds per fsync delays only what waits for durability: our
//! updates on their way to peers. The command's answer, the pin, heartbeats and other
//! requests go on meanwhile, because the fsync and the store's compaction run on threads of
//! their own. The slow disk is asked for through the environment, which every agent this
//! process starts meanwhile would inherit: agents here start under one lock.

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

/// How much longer each fsync (and each compaction) of the slow instance takes.
const SLOW: Duration = Duration::from_millis(2000);

/// Held while an agent starts, so only the slow one sees the slow disk's variable.
static STARTING: Mutex<()> = Mutex::new(());

/// Starts an agent as [`start_node`] does, on a slow disk if `slow`.
fn start(name: &str, config: &str, extra: &[&str], slow: bool) -> Agent {
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if slow {
        std::env::set_var("PIMESH_TEST_FSYNC_DELAY_MS", SLOW.as_millis().to_string());
    }
    let agent = start_node(name, config, extra);
    std::env::remove_var("PIMESH_TEST_FSYNC_DELAY_MS");
    if slow {
        assert!(
            agent.log().contains("as on a slow SD card"),
            "{name} runs with the slow disk: {}",
            agent.log()
        );
    }
    agent
}

#[test]
fn a_slow_fsync_delays_only_what_waits_for_the_disk() {
    let a = start("alpha", &node_config("a"), &[], true);
    let b = start("beta", &node_config("b"), &["--peer", &a.addr()], false);
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

#[test]
fn a_compaction_on_a_slow_disk_does_not_hold_up_commands() {
    let mut a = start("alpha", &node_config("a"), &[], true);
    let replies = Subscriber::new(a.port, "test/answers");
    let out = a.cli(&["move", "a-fan", "cellar"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Enough commands of our own for the log to outgrow the live state many times over.
    let flood: Vec<String> = (0..1500)
        .map(|i| format!(r#"{{"state":"{}","id":"flood-{i}"}}"#, ["ON", "OFF"][i % 2]))
        .collect();
    publish_lines(a.port, "pimesh/a-light/set", &flood);
    wait_until("alpha starts compacting its store", || {
        a.log().contains("compacting the store")
    });

    let t = Instant::now();
    let command = r#"{"state":"OFF","id":"during","reply-to":"test/answers"}"#;
    publish(a.port, "pimesh/a-light/set", command.as_bytes(), false);
    let answer = replies.take(1);
    let answered = t.elapsed();
    assert!(
        answer.first().is_some_and(|a| a.contains("during")),
        "answered: {answer:?}"
    );
    assert!(
        !a.log().contains("store compacted"),
        "the answer waited until the compaction had ended: {answered:?}"
    );
    assert!(
        answered < SLOW,
        "the answer waited for the compaction: {answered:?}"
    );
    assert_eq!(
        a.pin(17).as_deref(),
        Some("0"),
        "the relay switched at once"
    );
    let out = a.cli(&["move", "a-light", "attic"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Killed in the middle of the compaction: the next start replays both logs (the move
    // before it and the one during it), does not take the crash for a loss, and finishes it.
    assert!(!a.log().contains("store compacted"), "still compacting");
    a.kill9();
    a.restart();
    assert!(a.log().contains("a compaction was interrupted"));
    assert_eq!(a.get("a-fan")["room"], "cellar");
    assert_eq!(a.get("a-light")["room"], "attic");
    assert!(
        !a.log().contains("are gone from this disk"),
        "a crash is not a loss"
    );
    wait_until("the compaction ends", || {
        a.log().contains("store compacted")
    });
    assert_eq!(
        a.log().matches("compacting the store").count(),
        2,
        "the interrupted compaction and the one that finished it: what it wrote again to \
         the new log does not call for another"
    );
    let store = a.dir.join("store");
    assert!(
        !store.join("updates.next.log").exists(),
        "one log once the compaction ended"
    );
    assert!(store.join("snapshot.json").exists());
}
