//! Tests of the relay bank, each rule on its own, with a small simulated agent (random
//! sequences are in `relay_bank_random_tests.rs`).

use super::*;
use crate::config::OnStop;

pub(super) fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

pub(super) fn spec(name: &str) -> RelaySpec {
    RelaySpec {
        id: id(name),
        pulse: None,
        interlock: None,
        dead_time: Duration::ZERO,
        max_on: None,
        on_stop: OnStop::Leave,
    }
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A tiny agent: performs actions, keeps pins, timers, answers and reports, and checks the
/// interlock invariants on every drive.
pub(super) struct Harness {
    pub(super) bank: RelayBank,
    start: Instant,
    now: Instant,
    timers: Vec<(Instant, Timer)>,
    pub(super) pins: BTreeMap<ObjectId, bool>,
    /// When each relay last went off, for the dead-time check.
    off_at: BTreeMap<ObjectId, Instant>,
    /// (relay, answer): Ok(state) for Reply, Err for Fail.
    pub(super) answers: Vec<(ObjectId, Result<bool, ()>)>,
    reports: Vec<(ObjectId, bool, Reason)>,
    drives: Vec<(Duration, ObjectId, bool)>,
    /// The next drive of this relay to this state fails.
    pub(super) fail_next: Option<(ObjectId, bool)>,
    groups: Vec<(Vec<ObjectId>, Duration)>,
}

impl Harness {
    pub(super) fn new(specs: Vec<RelaySpec>) -> Harness {
        let mut groups: BTreeMap<String, (Vec<ObjectId>, Duration)> = BTreeMap::new();
        for s in &specs {
            if let Some(g) = &s.interlock {
                let e = groups.entry(g.clone()).or_default();
                e.0.push(s.id.clone());
                e.1 = e.1.max(s.dead_time);
            }
        }
        let pins = specs.iter().map(|s| (s.id.clone(), false)).collect();
        let now = Instant::now();
        Harness {
            bank: RelayBank::new(specs),
            start: now,
            now,
            timers: Vec::new(),
            pins,
            off_at: BTreeMap::new(),
            answers: Vec::new(),
            reports: Vec::new(),
            drives: Vec::new(),
            fail_next: None,
            groups: groups.into_values().collect(),
        }
    }

    pub(super) fn command(&mut self, name: &str, on: bool) {
        let actions = self.bank.command(&id(name), on, self.now).unwrap();
        self.perform(&actions);
    }

    fn perform(&mut self, actions: &[RelayAction]) {
        for (k, action) in actions.iter().enumerate() {
            match action {
                RelayAction::Drive { id, on } => {
                    if self.fail_next.as_ref() == Some(&(id.clone(), *on)) {
                        self.fail_next = None;
                        let more = self.bank.drive_failed(id, *on, &actions[k + 1..]);
                        self.perform(&more);
                        return;
                    }
                    self.drive(id, *on);
                }
                RelayAction::StartTimer { timer, after } => {
                    self.timers.push((self.now + *after, timer.clone()))
                }
                RelayAction::Report { id, on, reason } => {
                    self.reports.push((id.clone(), *on, reason.clone()))
                }
                RelayAction::Reply { id, on } => self.answers.push((id.clone(), Ok(*on))),
                RelayAction::Fail { id } => self.answers.push((id.clone(), Err(()))),
            }
        }
    }

    fn drive(&mut self, relay: &ObjectId, on: bool) {
        self.pins.insert(relay.clone(), on);
        self.drives.push((self.now - self.start, relay.clone(), on));
        if !on {
            self.off_at.insert(relay.clone(), self.now);
            return;
        }
        for (members, dead) in &self.groups {
            if !members.contains(relay) {
                continue;
            }
            let on_now: Vec<_> = members.iter().filter(|m| self.pins[*m]).collect();
            assert_eq!(
                on_now.len(),
                1,
                "two of a group on: {on_now:?} at {:?}",
                self.now - self.start
            );
            for m in members.iter().filter(|m| *m != relay) {
                if let Some(off) = self.off_at.get(m) {
                    assert!(
                        self.now >= *off + *dead,
                        "{relay} on {:?} after {m} went off",
                        self.now - *off
                    );
                }
            }
        }
    }

    /// Moves the clock forward by `d`, firing due timers in order.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.timers.sort_by_key(|(at, _)| *at);
            match self.timers.first() {
                Some((at, _)) if *at <= end => {
                    let (at, timer) = self.timers.remove(0);
                    self.now = at;
                    let actions = self.bank.timer(&timer, self.now);
                    self.perform(&actions);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn take_drives(&mut self) -> Vec<(u64, String, bool)> {
        let d = self.drives.drain(..);
        d.map(|(t, id, on)| (t.as_millis() as u64, id.to_string(), on))
            .collect()
    }

    fn take_answers(&mut self) -> Vec<(String, Result<bool, ()>)> {
        self.answers
            .drain(..)
            .map(|(id, a)| (id.to_string(), a))
            .collect()
    }
}

#[test]
fn a_pulse_switches_off_by_itself_and_a_second_press_lengthens_it() {
    let mut door = spec("door");
    door.pulse = Some(ms(500));
    let mut h = Harness::new(vec![door]);
    h.command("door", true);
    assert_eq!(h.take_answers(), [("door".into(), Ok(true))]);
    h.advance(ms(499));
    assert_eq!(h.take_drives(), [(0, "door".into(), true)]);
    h.advance(ms(1));
    assert_eq!(h.take_drives(), [(500, "door".into(), false)]);
    assert_eq!(h.reports.last().unwrap().2, Reason::PulseEnd);

    h.command("door", true);
    h.advance(ms(300));
    h.command("door", true);
    h.advance(ms(499));
    assert_eq!(
        h.take_drives(),
        [(500, "door".into(), true)],
        "still on 799 ms in"
    );
    h.advance(ms(1));
    assert_eq!(h.take_drives(), [(1300, "door".into(), false)]);
    assert_eq!(h.bank.is_on(&id("door")), Some(false));
}

#[test]
fn the_watchdog_switches_off_after_max_on_and_says_why() {
    let mut heater = spec("heater");
    heater.max_on = Some(Duration::from_secs(10));
    let mut h = Harness::new(vec![heater]);
    h.command("heater", true);
    h.advance(Duration::from_secs(4));
    h.command("heater", true);
    h.advance(Duration::from_secs(6));
    assert_eq!(
        h.take_drives(),
        [(0, "heater".into(), true), (10_000, "heater".into(), false)],
        "a repeated on does not extend it"
    );
    let (_, on, reason) = h.reports.last().unwrap();
    assert!(!on);
    assert_eq!(reason.to_string(), "max-on-s exceeded");

    h.command("heater", true);
    h.advance(Duration::from_secs(5));
    h.command("heater", false);
    h.command("heater", true);
    h.advance(Duration::from_secs(9));
    assert_eq!(
        h.bank.is_on(&id("heater")),
        Some(true),
        "the old watchdog is stale"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.bank.is_on(&id("heater")), Some(false));
}

pub(super) fn blind(dead: u64) -> Vec<RelaySpec> {
    ["up", "down"]
        .into_iter()
        .map(|n| {
            let mut s = spec(n);
            s.interlock = Some("blind".into());
            s.dead_time = ms(dead);
            s
        })
        .collect()
}

#[test]
fn switching_one_of_a_group_on_first_switches_the_other_off() {
    let mut h = Harness::new(blind(0));
    h.command("up", true);
    let actions = h.bank.command(&id("down"), true, h.now).unwrap();
    assert_eq!(
        actions[..4],
        [
            RelayAction::Drive {
                id: id("up"),
                on: false
            },
            RelayAction::Report {
                id: id("up"),
                on: false,
                reason: Reason::Interlock { by: id("down") }
            },
            RelayAction::Drive {
                id: id("down"),
                on: true
            },
            RelayAction::Report {
                id: id("down"),
                on: true,
                reason: Reason::Command
            },
        ]
    );
    assert_eq!(
        actions[4],
        RelayAction::Reply {
            id: id("down"),
            on: true
        }
    );
}

#[test]
fn the_dead_time_delays_the_switch_on_and_its_answer() {
    let mut h = Harness::new(blind(200));
    h.command("up", true);
    h.advance(Duration::from_secs(1));
    h.command("down", true);
    assert_eq!(h.take_answers(), [("up".into(), Ok(true))], "down waits");
    h.advance(ms(199));
    assert_eq!(
        h.take_drives(),
        [(0, "up".into(), true), (1000, "up".into(), false)]
    );
    h.command("down", true);
    h.advance(ms(1));
    assert_eq!(h.take_drives(), [(1200, "down".into(), true)]);
    assert_eq!(
        h.take_answers(),
        [("down".into(), Ok(true)), ("down".into(), Ok(true))]
    );

    // Reversing again: the later command wins and the earlier one is answered with "off".
    h.command("up", true);
    h.advance(ms(50));
    h.command("down", true);
    assert_eq!(h.take_answers(), [("up".into(), Ok(false))]);
    h.advance(ms(150));
    assert_eq!(h.take_answers(), [("down".into(), Ok(true))]);
    assert_eq!(
        h.take_drives(),
        [(1200, "down".into(), false), (1400, "down".into(), true)]
    );

    // Cancelling a waiting switch-on answers it with "off" and drives nothing.
    h.command("up", true);
    h.command("up", false);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take_answers(),
        [("up".into(), Ok(false)), ("up".into(), Ok(false))]
    );
    assert_eq!(h.take_drives(), [(1400, "down".into(), false)]);
}

#[test]
fn a_failed_interlock_switch_off_keeps_the_other_relay_off_and_fails_its_command() {
    let mut specs = blind(0);
    specs[0].max_on = Some(Duration::from_secs(60));
    let mut h = Harness::new(specs);
    h.command("up", true);
    h.take_answers();
    h.fail_next = Some((id("up"), false));
    h.command("down", true);
    assert_eq!(h.take_answers(), [("down".into(), Err(()))]);
    assert_eq!(h.bank.is_on(&id("up")), Some(true));
    assert_eq!(h.bank.is_on(&id("down")), Some(false));
    h.advance(Duration::from_secs(60));
    assert_eq!(
        h.bank.is_on(&id("up")),
        Some(false),
        "the watchdog retries the switch-off"
    );

    let mut h = Harness::new(blind(100));
    h.command("up", true);
    h.take_answers();
    h.fail_next = Some((id("up"), false));
    h.command("down", true);
    assert_eq!(
        h.take_answers(),
        [("down".into(), Err(()))],
        "the waiting switch-on is dropped"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.bank.is_on(&id("down")), Some(false));

    h.fail_next = Some((id("down"), true));
    h.command("up", false);
    h.advance(Duration::from_secs(1));
    h.command("down", true);
    assert_eq!(
        h.take_answers(),
        [("up".into(), Ok(false)), ("down".into(), Err(()))]
    );
    assert_eq!(h.bank.is_on(&id("down")), Some(false));
}

#[test]
fn start_applies_the_rules_to_the_power_on_states() {
    let mut specs = blind(0);
    let mut door = spec("door");
    door.pulse = Some(ms(500));
    let mut heater = spec("heater");
    heater.max_on = Some(Duration::from_secs(30));
    specs.extend([door, heater]);
    let mut h = Harness::new(specs);
    let states: Vec<(ObjectId, bool, Duration)> = ["up", "down", "door", "heater"]
        .iter()
        .map(|n| (id(n), true, Duration::ZERO))
        .collect();
    let actions = h.bank.start(&states, h.now);
    for (n, on) in [
        ("up", true),
        ("down", true),
        ("door", true),
        ("heater", true),
    ] {
        h.pins.insert(id(n), on);
    }
    h.perform(&actions);
    assert_eq!(
        h.take_drives(),
        [(0, "door".into(), false), (0, "down".into(), false)]
    );
    assert_eq!(h.reports[0].2, Reason::Start);
    assert_eq!(h.reports[1].2, Reason::Interlock { by: id("up") });
    h.advance(Duration::from_secs(30));
    assert_eq!(h.take_drives(), [(30_000, "heater".into(), false)]);
}

#[test]
fn the_watchdog_counts_the_time_a_relay_was_on_before_a_restart() {
    let mut heater = spec("heater");
    heater.max_on = Some(Duration::from_secs(30));
    let mut pump = spec("pump");
    pump.max_on = Some(Duration::from_secs(30));
    let mut h = Harness::new(vec![heater, pump]);
    let states = [
        (id("heater"), true, Duration::from_secs(20)),
        (id("pump"), true, Duration::from_secs(45)),
    ];
    let actions = h.bank.start(&states, h.now);
    h.pins.insert(id("heater"), true);
    h.pins.insert(id("pump"), true);
    h.perform(&actions);
    assert_eq!(
        h.take_drives(),
        [(0, "pump".into(), false)],
        "on longer than max-on-s before the restart: off at once"
    );
    assert_eq!(h.reports[0].2, Reason::MaxOn);
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.take_drives(),
        [(10_000, "heater".into(), false)],
        "only what was left of the period"
    );
}

#[test]
fn a_clean_stop_leaves_or_sets_each_relay_as_configured() {
    let mut off = spec("off");
    off.on_stop = OnStop::Off;
    let mut on = spec("on");
    on.on_stop = OnStop::On;
    let leave = spec("leave");
    let mut h = Harness::new(vec![off, on, leave]);
    h.command("off", true);
    h.command("leave", true);
    h.take_drives();
    let actions = h.bank.stop_actions();
    h.perform(&actions);
    assert_eq!(
        h.take_drives(),
        [(0, "off".into(), false), (0, "on".into(), true)]
    );
    assert!(h.reports.iter().rev().take(2).all(|r| r.2 == Reason::Stop));
    assert_eq!(h.bank.is_on(&id("leave")), Some(true));
}

#[test]
fn unknown_relays_and_stale_timers_change_nothing() {
    let mut h = Harness::new(vec![spec("a")]);
    let err = h.bank.command(&id("b"), true, h.now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "relay b is not held by this instance's relay bank"
    );
    let stale = Timer {
        id: id("a"),
        kind: TimerKind::MaxOn,
        generation: 7,
    };
    assert!(h.bank.timer(&stale, h.now).is_empty());
    assert_eq!(h.bank.is_on(&id("b")), None);
}
