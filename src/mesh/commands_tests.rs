//! The command bookkeeping's bounds, its memory of answers, and who may answer.

use super::*;

fn reply(key: &str, result: Outcome) -> Reply {
    Reply {
        persisted: None,
        id: Some(key.to_string()),
        object: "pump".into(),
        result,
        state: None,
        executed_by: None,
        executed_by_uuid: None,
        error: None,
    }
}

fn pending(executor: Uuid, sent: Instant) -> Pending {
    Pending {
        object: "pump".into(),
        req: SetRequest::default(),
        origin: Origin::Peer { sender: executor },
        executor,
        onward: false,
        sent,
    }
}

#[test]
fn pending_commands_stop_at_their_bound_and_leave_when_answered_or_late() {
    let mut c = Commands::default();
    let (a, now) = (Uuid::from_u128(1), Instant::now());
    for i in 0..MAX_PENDING {
        c.send(&format!("k{i}"), pending(a, now)).unwrap();
    }
    assert_eq!(c.send("one-more", pending(a, now)), Err(Full::Pending));
    // The same key again replaces, it does not grow.
    assert!(c.send("k0", pending(a, now)).is_ok());
    assert_eq!(c.sizes().0, MAX_PENDING);
    // Only the executor answers.
    assert!(c.answered(Uuid::from_u128(2), "k1").is_err());
    assert!(c.answered(a, "k1").unwrap().is_some());
    assert!(c.answered(a, "k1").unwrap().is_none(), "answered once");
    let late = c.late(now + FORWARD_TIMEOUT + Duration::from_millis(1));
    assert_eq!(late.len(), MAX_PENDING - 1);
    assert_eq!(c.sizes().0, 0);
    assert!(c.send("one-more", pending(a, now)).is_ok());
}

#[test]
fn waiting_duplicates_stop_at_their_bound_and_get_the_answer() {
    let mut c = Commands::default();
    for i in 0..MAX_WAITING {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        c.wait(key, Waiter::Peer(Uuid::from_u128(i as u128)))
            .unwrap();
    }
    assert_eq!(
        c.wait("even", Waiter::Peer(Uuid::nil())),
        Err(Full::Waiting)
    );
    let waiters = c.complete("even", &reply("even", Outcome::Ok));
    assert_eq!(waiters.len(), MAX_WAITING / 2);
    assert_eq!(c.sizes().1, MAX_WAITING / 2);
    assert!(c.wait("even", Waiter::Peer(Uuid::nil())).is_ok());
}

#[test]
fn only_decided_answers_are_remembered_and_the_window_is_bounded() {
    let mut c = Commands::default();
    for result in [Outcome::Timeout, Outcome::Unavailable, Outcome::Unknown] {
        c.complete("retry-me", &reply("retry-me", result));
    }
    assert!(c.recall("retry-me").is_none(), "a retry must run");
    for i in 0..RECENT + 10 {
        c.complete(&format!("k{i}"), &reply(&format!("k{i}"), Outcome::Ok));
    }
    assert_eq!(c.sizes().2, RECENT);
    assert!(c.recall("k0").is_none(), "the oldest left the window");
    assert!(c.recall(&format!("k{}", RECENT + 9)).is_some());
}

#[test]
fn remembered_answers_survive_a_restart_through_their_lines() {
    let mut c = Commands::default();
    c.complete("toggle-1", &reply("toggle-1", Outcome::Ok));
    c.complete("late", &reply("late", Outcome::Timeout));
    let saved = Commands::encode(&c.take_unsaved());
    assert!(c.take_unsaved().is_empty());
    let text = format!("{saved}not json\n{{\"key\":1}}\n");
    let (again, bad) = Commands::load(&text);
    assert_eq!(bad, 2);
    assert_eq!(
        again.recall("toggle-1").map(|r| r.result),
        Some(Outcome::Ok)
    );
    assert!(again.recall("late").is_none());
}
