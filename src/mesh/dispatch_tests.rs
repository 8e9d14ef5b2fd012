//! The dispatcher driven by hand, with a view whose mesh and clock the test sets.

use super::*;
use crate::mesh::commands::{FORWARD_TIMEOUT, MAX_WAITING};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A mesh as the test describes it.
struct Fake {
    me: Uuid,
    at: Cell<Instant>,
    objects: BTreeMap<String, Seen>,
    alive: Vec<Uuid>,
    fenced: bool,
}

impl View for Fake {
    fn me(&self) -> Uuid {
        self.me
    }
    fn now(&self) -> Instant {
        self.at.get()
    }
    fn object(&self, id: &ObjectId) -> Option<Seen> {
        self.objects.get(id.as_str()).cloned()
    }
    fn alive(&self, u: Uuid) -> bool {
        u == self.me || self.alive.contains(&u)
    }
    fn reachable(&self, u: Uuid) -> bool {
        self.alive.contains(&u)
    }
    fn online(&self) -> Vec<Uuid> {
        self.alive.clone()
    }
    fn name(&self, u: Uuid) -> String {
        u.to_string()[..4].to_string()
    }
    fn fenced(&self) -> Option<String> {
        self.fenced.then(|| "store lost".to_string())
    }
    fn reply(
        &self,
        object: &str,
        id: Option<String>,
        result: Outcome,
        error: Option<String>,
    ) -> Reply {
        Reply {
            id,
            object: object.into(),
            result,
            state: None,
            executed_by: None,
            executed_by_uuid: Some(self.me),
            error,
            persisted: None,
        }
    }
    fn state(&self, id: &ObjectId) -> Option<serde_json::Value> {
        let on = self.objects.get(id.as_str())?.on;
        Some(serde_json::json!({ "state": if on { "ON" } else { "OFF" } }))
    }
}

/// Three instances in UUID order; `me` is the middle one. `lamp` is held by `me`, `pump` by
/// the first, `scene` (virtual) runs on all three.
fn mesh() -> (Fake, [Uuid; 3]) {
    let mut ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    ids.sort();
    let [a, me, c] = ids;
    let obj = |kind: &str, claimants: Vec<Uuid>| Seen {
        kind: kind.into(),
        claimants,
        on: false,
    };
    let objects = BTreeMap::from([
        ("lamp".to_string(), obj("relay", vec![me])),
        ("pump".to_string(), obj("relay", vec![a])),
        ("scene".to_string(), obj("virtual", vec![a, me, c])),
        ("button".to_string(), obj("input", vec![me])),
    ]);
    let fake = Fake {
        me,
        at: Cell::new(Instant::now()),
        objects,
        alive: vec![a, c],
        fenced: false,
    };
    (fake, ids)
}

fn on() -> SetRequest {
    SetRequest {
        state: Some(Switch::On),
        ..Default::default()
    }
}

fn to(topic: &str) -> Option<ResponseTo> {
    Some(ResponseTo::topic(topic.into()))
}

fn ok(key: &str) -> Reply {
    Reply {
        id: Some(key.into()),
        object: String::new(),
        result: Outcome::Ok,
        state: None,
        executed_by: None,
        executed_by_uuid: None,
        error: None,
        persisted: None,
    }
}

/// The answers among `actions`: (reply topic or peer, client id, outcome).
fn answers(actions: &[Action]) -> Vec<(String, Option<String>, Outcome)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer { to, reply } => {
                let who = match to {
                    Recipient::Client(t) => t.as_ref().map(|t| t.topic.clone()).unwrap_or_default(),
                    Recipient::Peer(u) => u.to_string(),
                    Recipient::Automation(rule) => rule.clone(),
                };
                Some((who, reply.id.clone(), reply.result))
            }
            _ => None,
        })
        .collect()
}

/// The key of the one `Run` or `Forward` among `actions`.
fn key_of(actions: &[Action]) -> String {
    let keys: Vec<&String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Run { key, .. } | Action::Forward { key, .. } => Some(key),
            Action::Answer { .. } => None,
        })
        .collect();
    assert_eq!(keys.len(), 1, "{actions:?}");
    keys[0].clone()
}

#[test]
fn two_clients_with_the_same_id_for_two_relays_both_switch() {
    let (view, [a, ..]) = mesh();
    let mut d = Dispatcher::default();
    d.client(
        &view,
        Some("kitchen"),
        "lamp",
        Some("1".into()),
        on(),
        to("k/r"),
    );
    d.client(
        &view,
        Some("hall"),
        "pump",
        Some("1".into()),
        on(),
        to("h/r"),
    );
    let actions = d.take_actions();
    assert!(
        matches!(&actions[0], Action::Run { object, .. } if object.as_str() == "lamp"),
        "{actions:?}"
    );
    assert!(
        matches!(&actions[1], Action::Forward { executor, object, .. } if *executor == a && object == "pump"),
        "{actions:?}"
    );
    // The same id from one client for one object is one command.
    d.client(
        &view,
        Some("kitchen"),
        "lamp",
        Some("1".into()),
        on(),
        to("k/r"),
    );
    assert!(answers(&d.take_actions()).is_empty(), "a duplicate waits");
}

#[test]
fn a_duplicate_of_a_command_in_progress_gets_the_answer_when_it_completes() {
    let (view, _) = mesh();
    let mut d = Dispatcher::default();
    d.client(&view, Some("c"), "lamp", Some("7".into()), on(), to("c/r1"));
    let key = key_of(&d.take_actions());
    d.client(&view, Some("c"), "lamp", Some("7".into()), on(), to("c/r2"));
    assert!(
        d.take_actions().is_empty(),
        "neither run again nor answered yet"
    );
    d.ran(&key, ok(&key));
    let mut got = answers(&d.take_actions());
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        vec![
            ("c/r1".into(), Some("7".into()), Outcome::Ok),
            ("c/r2".into(), Some("7".into()), Outcome::Ok),
        ]
    );
    // Later retries are answered from memory, not run.
    d.client(&view, Some("c"), "lamp", Some("7".into()), on(), to("c/r3"));
    let actions = d.take_actions();
    assert_eq!(
        answers(&actions),
        vec![("c/r3".into(), Some("7".into()), Outcome::Ok)]
    );
    assert!(actions.iter().all(|a| matches!(a, Action::Answer { .. })));
}

#[test]
fn a_timeout_is_not_remembered_so_a_retry_runs() {
    let (view, [a, ..]) = mesh();
    let mut d = Dispatcher::default();
    d.client(&view, Some("c"), "pump", Some("1".into()), on(), to("c/r"));
    let key = key_of(&d.take_actions());
    view.at
        .set(view.at.get() + FORWARD_TIMEOUT + Duration::from_millis(1));
    d.expire(&view);
    assert_eq!(
        answers(&d.take_actions()),
        vec![("c/r".into(), Some("1".into()), Outcome::Timeout)]
    );
    d.client(&view, Some("c"), "pump", Some("1".into()), on(), to("c/r"));
    let actions = d.take_actions();
    assert!(
        matches!(&actions[..], [Action::Forward { executor, key: k, .. }] if *executor == a && *k == key),
        "the retry is sent again: {actions:?}"
    );
}

#[test]
fn a_holder_that_goes_offline_before_answering_gives_unknown_with_the_last_state() {
    let (view, [a, ..]) = mesh();
    let mut d = Dispatcher::default();
    d.client(&view, Some("c"), "pump", Some("1".into()), on(), to("c/r"));
    d.take_actions();
    d.offline(&view, a);
    let actions = d.take_actions();
    match &actions[..] {
        [Action::Answer { reply, .. }] => {
            assert_eq!(reply.result, Outcome::Unknown);
            assert_eq!(reply.state, Some(serde_json::json!({ "state": "OFF" })));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_virtual_command_moves_on_when_its_executor_goes_offline() {
    let (mut view, [a, me, c]) = mesh();
    let mut d = Dispatcher::default();
    // The rotation starts at the first runner in UUID order: a.
    d.client(&view, Some("c"), "scene", Some("1".into()), on(), to("c/r"));
    let first = d.take_actions();
    assert!(matches!(&first[..], [Action::Forward { executor, .. }] if *executor == a));
    view.alive.retain(|u| *u != a);
    d.offline(&view, a);
    let next = d.take_actions();
    match &next[..] {
        [Action::Run { .. }] => {}
        [Action::Forward { executor, .. }] => assert_eq!(*executor, c),
        other => panic!("{other:?}"),
    }
    assert_ne!(me, a);
}

#[test]
fn a_full_waiting_list_answers_the_duplicate_at_once() {
    let (view, _) = mesh();
    let mut d = Dispatcher::default();
    d.client(&view, Some("c"), "lamp", Some("1".into()), on(), to("c/r"));
    d.take_actions();
    for _ in 0..MAX_WAITING {
        d.client(&view, Some("c"), "lamp", Some("1".into()), on(), to("c/r"));
    }
    assert!(d.take_actions().is_empty());
    d.client(
        &view,
        Some("c"),
        "lamp",
        Some("1".into()),
        on(),
        to("c/late"),
    );
    assert_eq!(
        answers(&d.take_actions()),
        vec![("c/late".into(), Some("1".into()), Outcome::Unavailable)]
    );
    assert_eq!(d.sizes().1, MAX_WAITING);
}

#[test]
fn commands_running_here_are_bounded() {
    let (view, _) = mesh();
    let mut d = Dispatcher::default();
    for i in 0..MAX_RUNNING {
        d.client(&view, Some("c"), "lamp", Some(i.to_string()), on(), None);
    }
    assert_eq!(d.take_actions().len(), MAX_RUNNING);
    d.client(&view, Some("c"), "lamp", Some("x".into()), on(), to("c/r"));
    assert_eq!(
        answers(&d.take_actions()),
        vec![("c/r".into(), Some("x".into()), Outcome::Unavailable)]
    );
    assert_eq!(d.sizes().3, MAX_RUNNING);
}

#[test]
fn a_fenced_instance_runs_nothing_but_still_forwards() {
    let (mut view, [a, ..]) = mesh();
    view.fenced = true;
    let mut d = Dispatcher::default();
    d.client(&view, Some("c"), "lamp", Some("1".into()), on(), to("c/r"));
    assert_eq!(
        answers(&d.take_actions()),
        vec![("c/r".into(), Some("1".into()), Outcome::Unavailable)]
    );
    d.client(&view, Some("c"), "pump", Some("1".into()), on(), to("c/r"));
    assert!(matches!(&d.take_actions()[..], [Action::Forward { executor, .. }] if *executor == a));
}

#[test]
fn only_the_executor_can_answer_a_forwarded_command() {
    let (view, [a, _, c]) = mesh();
    let mut d = Dispatcher::default();
    d.client(&view, Some("c"), "pump", Some("1".into()), on(), to("c/r"));
    let key = key_of(&d.take_actions());
    assert!(d.answered(c, ok(&key)).is_err());
    assert!(d.take_actions().is_empty());
    d.answered(a, ok(&key)).unwrap();
    assert_eq!(
        answers(&d.take_actions()),
        vec![("c/r".into(), Some("1".into()), Outcome::Ok)]
    );
}

#[test]
fn a_forwarded_duplicate_waits_and_a_decided_one_is_answered_from_memory() {
    let (view, [a, _, c]) = mesh();
    let mut d = Dispatcher::default();
    d.forwarded(&view, a, "k1".into(), "lamp", on(), false);
    assert!(matches!(&d.take_actions()[..], [Action::Run { .. }]));
    d.forwarded(&view, c, "k1".into(), "lamp", on(), false);
    assert!(d.take_actions().is_empty());
    d.ran("k1", ok("k1"));
    let mut got = answers(&d.take_actions());
    got.sort_by(|x, y| x.0.cmp(&y.0));
    let mut want = vec![
        (a.to_string(), Some("k1".into()), Outcome::Ok),
        (c.to_string(), Some("k1".into()), Outcome::Ok),
    ];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got, want);
    d.forwarded(&view, a, "k1".into(), "lamp", on(), false);
    assert_eq!(
        answers(&d.take_actions()),
        vec![(a.to_string(), Some("k1".into()), Outcome::Ok)]
    );
}

#[test]
fn unknown_objects_and_inputs_are_rejected() {
    let (view, _) = mesh();
    let mut d = Dispatcher::default();
    d.client(
        &view,
        Some("c"),
        "nothing",
        Some("1".into()),
        on(),
        to("c/r"),
    );
    d.client(
        &view,
        Some("c"),
        "button",
        Some("2".into()),
        on(),
        to("c/r"),
    );
    let got = answers(&d.take_actions());
    assert_eq!(
        got,
        vec![
            ("c/r".into(), Some("1".into()), Outcome::Rejected),
            ("c/r".into(), Some("2".into()), Outcome::Rejected),
        ]
    );
}

#[test]
fn automation_jobs_rotate_over_live_instances_and_skip_those_tried() {
    let (view, [a, me, c]) = mesh();
    let mut d = Dispatcher::default();
    let mut runners = Vec::new();
    for i in 0..3 {
        d.job(
            &view,
            "r".into(),
            "scene",
            format!("j{i}"),
            on(),
            Vec::new(),
        );
        runners.push(match &d.take_actions()[0] {
            Action::Forward {
                executor,
                onward: true,
                ..
            } => *executor,
            Action::Run { .. } | Action::Forward { .. } => me,
            other => panic!("{other:?}"),
        });
    }
    runners.sort();
    assert_eq!(runners, vec![a, me, c]);
    d.job(
        &view,
        "r".into(),
        "scene",
        "j9".into(),
        on(),
        vec![a, me, c],
    );
    assert_eq!(
        answers(&d.take_actions()),
        vec![("r".into(), Some("j9".into()), Outcome::Unavailable)]
    );
}
