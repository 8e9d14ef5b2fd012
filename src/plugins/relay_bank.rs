//! The relays' switching rules as a sans-IO core: pulse, interlock with dead time, maximum
//! on-time, and what to do on a clean stop.
//!
//! [`RelayBank`] never touches a pin or a clock. Each input (a command, a timer firing, a stop)
//! returns a list of [`RelayAction`]s that the agent performs in order: drive a pin, start a
//! timer, record a state change, answer a command. This keeps the safety rules — two relays of
//! an interlock group are never on together, a motor gets its dead time before reversing —
//! in one place that plain unit tests can drive through any sequence of events.
//!
//! Timers are never cancelled: each carries a generation, and a timer whose generation is
//! stale when it fires is ignored. So the agent only has to sleep and call back.

pub use super::relay_action::{Reason, RelayAction, Timer, TimerKind};
use crate::config::{OnStop, RelayConfig};
use crate::model::ObjectId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The switching rules of one relay, from its `[[relay]]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySpec {
    /// The relay's object id.
    pub id: ObjectId,
    /// `pulse-ms`: every switch-on ends by itself after this long (a garage door, a bell).
    pub pulse: Option<Duration>,
    /// `interlock`: the group whose members are never on together (motor up / down).
    pub interlock: Option<String>,
    /// `interlock-dead-ms`: the pause between one member going off and another going on; a
    /// group uses the longest of its members' values.
    pub dead_time: Duration,
    /// `max-on-s`: the watchdog that switches the relay off if left on longer.
    pub max_on: Option<Duration>,
    /// `on-stop`: what the relay does when the agent stops cleanly.
    pub on_stop: OnStop,
}

impl From<&RelayConfig> for RelaySpec {
    fn from(c: &RelayConfig) -> RelaySpec {
        RelaySpec {
            id: c.id.clone(),
            pulse: c.pulse_ms.map(Duration::from_millis),
            interlock: c.interlock.clone(),
            dead_time: Duration::from_millis(c.interlock_dead_ms),
            max_on: c.max_on_s.map(Duration::from_secs),
            on_stop: c.on_stop,
        }
    }
}

/// A command named a relay the bank does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("relay {id} is not held by this instance's relay bank")]
pub struct UnknownRelay {
    /// The id asked for.
    pub id: ObjectId,
}

/// One relay's rules and state.
struct Slot {
    /// Its rules.
    spec: RelaySpec,
    /// Its state as last driven.
    on: bool,
    /// One generation counter per [`TimerKind`]; bumping one makes its timers stale.
    generations: [u64; 3],
}

/// An interlock group.
#[derive(Default)]
struct Group {
    /// Indexes of its relays.
    members: Vec<usize>,
    /// The longest dead time among its members.
    dead_time: Duration,
    /// When a member last went off, to time the dead time from.
    last_off: Option<Instant>,
    /// A switch-on waiting for the dead time to pass.
    pending: Option<Pending>,
}

/// A switch-on waiting out a dead time.
struct Pending {
    /// The relay to switch on.
    slot: usize,
    /// How many commands wait for it (each gets a `Reply`).
    replies: u32,
    /// The generation of its `DeadTime` timer.
    generation: u64,
}

/// Every relay of one instance, with the rules that bind them.
pub struct RelayBank {
    /// The relays, in config order.
    slots: Vec<Slot>,
    /// Index of each relay by id.
    index: BTreeMap<ObjectId, usize>,
    /// Interlock groups by name.
    groups: BTreeMap<String, Group>,
}

impl RelayBank {
    /// A bank of relays, all believed off until [`RelayBank::start`].
    pub fn new(specs: Vec<RelaySpec>) -> RelayBank {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut index = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            index.insert(spec.id.clone(), i);
            if let Some(name) = &spec.interlock {
                let group = groups.entry(name.clone()).or_default();
                group.members.push(i);
                group.dead_time = group.dead_time.max(spec.dead_time);
            }
        }
        let slots = specs
            .into_iter()
            .map(|spec| Slot {
                spec,
                on: false,
                generations: [0; 3],
            })
            .collect();
        RelayBank {
            slots,
            index,
            groups,
        }
    }

    /// Takes the state each relay was claimed in (after its power-on policy) and how long it
    /// has been on already (across the restart, from the recorded state), and returns what
    /// the rules require on top: a pulse relay found on is switched off, only the first relay
    /// of a group found on stays on, and a relay on under `max-on-s` gets what is left of its
    /// watchdog period — or is switched off now if that is used up, so an agent that keeps
    /// restarting cannot keep a heater on for ever.
    pub fn start(
        &mut self,
        states: &[(ObjectId, bool, Duration)],
        now: Instant,
    ) -> Vec<RelayAction> {
        let mut on_for = vec![Duration::ZERO; self.slots.len()];
        for (id, on, already) in states {
            if let Some(&i) = self.index.get(id) {
                self.slots[i].on = *on;
                on_for[i] = *already;
            }
        }
        let mut actions = Vec::new();
        for i in 0..self.slots.len() {
            if self.slots[i].on && self.slots[i].spec.pulse.is_some() {
                self.switch_off(i, Reason::Start, now, &mut actions);
            }
        }
        let groups: Vec<Vec<usize>> = self.groups.values().map(|g| g.members.clone()).collect();
        for members in groups {
            let mut on = members.iter().copied().filter(|&m| self.slots[m].on);
            if let Some(keep) = on.next() {
                let by = self.slots[keep].spec.id.clone();
                for other in on.collect::<Vec<_>>() {
                    let reason = Reason::Interlock { by: by.clone() };
                    self.switch_off(other, reason, now, &mut actions);
                }
            }
        }
        for (i, already) in on_for.into_iter().enumerate() {
            if !self.slots[i].on {
                continue;
            }
            match self.slots[i].spec.max_on {
                Some(max_on) if already >= max_on => {
                    self.switch_off(i, Reason::MaxOn, now, &mut actions);
                }
                Some(max_on) => {
                    self.start_timer(i, TimerKind::MaxOn, max_on - already, &mut actions)
                }
                None => {}
            }
        }
        actions
    }

    /// The relay's state as last driven, `None` for an unknown id. `toggle` is
    /// `command(id, !is_on(id))`.
    pub fn is_on(&self, id: &ObjectId) -> Option<bool> {
        self.index.get(id).map(|&i| self.slots[i].on)
    }

    /// A command to switch `id` on or off, received at `now`.
    pub fn command(
        &mut self,
        id: &ObjectId,
        on: bool,
        now: Instant,
    ) -> Result<Vec<RelayAction>, UnknownRelay> {
        let i = self.slot(id)?;
        let mut actions = Vec::new();
        if on {
            self.command_on(i, now, &mut actions);
        } else {
            if let Some(group) = self.group_mut(i) {
                if group.pending.as_ref().is_some_and(|p| p.slot == i) {
                    let pending = group.pending.take();
                    reply_pending(pending, &self.slots, false, &mut actions);
                }
            }
            if self.slots[i].on {
                self.switch_off(i, Reason::Command, now, &mut actions);
            }
            actions.push(RelayAction::Reply {
                id: id.clone(),
                on: false,
            });
        }
        Ok(actions)
    }

    /// A timer started by an earlier action has fired at `now`.
    pub fn timer(&mut self, timer: &Timer, now: Instant) -> Vec<RelayAction> {
        let mut actions = Vec::new();
        let Some(&i) = self.index.get(&timer.id) else {
            return actions;
        };
        if self.slots[i].generations[timer.kind.index()] != timer.generation {
            return actions;
        }
        match timer.kind {
            TimerKind::PulseEnd | TimerKind::MaxOn if self.slots[i].on => {
                let reason = match timer.kind {
                    TimerKind::PulseEnd => Reason::PulseEnd,
                    _ => Reason::MaxOn,
                };
                self.switch_off(i, reason, now, &mut actions);
            }
            TimerKind::DeadTime => {
                let Some(group) = self.group_mut(i) else {
                    return actions;
                };
                let due = group
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.slot == i && p.generation == timer.generation);
                if due {
                    let replies = group.pending.take().map_or(1, |p| p.replies);
                    self.switch_on(i, replies, &mut actions);
                }
            }
            _ => {}
        }
        actions
    }

    /// A `Drive` of `id` to `attempted_on` failed, and `rest` are the actions after it, which
    /// were not performed. The bank takes every undriven relay back to its old state, re-arms
    /// the pulse and watchdog timers of the relay that failed to go off (so the switch-off is
    /// retried), drops a switch-on that was waiting for this one, and turns every `Reply` that
    /// will not happen into a `Fail`. The interlock rule holds throughout: before any command
    /// at most one relay of a group is on, and a relay that failed to go off keeps every other
    /// relay of its group off, because their switch-on came later in `rest`.
    pub fn drive_failed(
        &mut self,
        id: &ObjectId,
        attempted_on: bool,
        rest: &[RelayAction],
    ) -> Vec<RelayAction> {
        let mut actions = Vec::new();
        let Some(&i) = self.index.get(id) else {
            return actions;
        };
        self.revert(i, attempted_on);
        if !attempted_on {
            if let Some(pulse) = self.slots[i].spec.pulse {
                self.start_timer(i, TimerKind::PulseEnd, pulse, &mut actions);
            }
            self.start_max_on(i, &mut actions);
        }
        for action in rest {
            match action {
                RelayAction::Drive { id, on } => {
                    if let Some(&j) = self.index.get(id) {
                        self.revert(j, *on);
                    }
                }
                RelayAction::Reply { id, .. } => actions.push(RelayAction::Fail { id: id.clone() }),
                RelayAction::StartTimer { timer, .. } if timer.kind == TimerKind::DeadTime => {
                    let Some(&j) = self.index.get(&timer.id) else {
                        continue;
                    };
                    let Some(group) = self.group_mut(j) else {
                        continue;
                    };
                    let waiting = group
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.slot == j && p.generation == timer.generation);
                    if let Some(p) = group.pending.take_if(|_| waiting) {
                        for _ in 0..p.replies {
                            actions.push(RelayAction::Fail {
                                id: timer.id.clone(),
                            });
                        }
                    }
                }
                RelayAction::StartTimer { .. }
                | RelayAction::Report { .. }
                | RelayAction::Fail { .. } => {}
            }
        }
        actions
    }

    /// Takes relay `i` back to the state before an undriven `Drive` to `attempted_on`, making
    /// its timers stale.
    fn revert(&mut self, i: usize, attempted_on: bool) {
        let slot = &mut self.slots[i];
        slot.on = !attempted_on;
        slot.generations[TimerKind::PulseEnd.index()] += 1;
        slot.generations[TimerKind::MaxOn.index()] += 1;
    }

    /// What a clean stop does: relays with `on-stop = "off"` that are on go off, then relays
    /// with `on-stop = "on"` that are off go on (unless another relay of their group is on).
    /// Waiting switch-ons are dropped; the agent answers their queued commands `unavailable`.
    pub fn stop_actions(&mut self) -> Vec<RelayAction> {
        let mut actions = Vec::new();
        for group in self.groups.values_mut() {
            group.pending = None;
        }
        for (wanted, from) in [(OnStop::Off, true), (OnStop::On, false)] {
            for i in 0..self.slots.len() {
                let slot = &self.slots[i];
                if slot.spec.on_stop != wanted || slot.on != from {
                    continue;
                }
                if !from && self.group_has_other_on(i) {
                    continue;
                }
                self.set(i, !from, Reason::Stop, &mut actions);
            }
        }
        actions
    }

    /// The index of `id`.
    fn slot(&self, id: &ObjectId) -> Result<usize, UnknownRelay> {
        self.index
            .get(id)
            .copied()
            .ok_or_else(|| UnknownRelay { id: id.clone() })
    }

    /// The interlock group of relay `i`, if it has one.
    fn group_mut(&mut self, i: usize) -> Option<&mut Group> {
        let name = self.slots[i].spec.interlock.as_ref()?;
        self.groups.get_mut(name)
    }

    /// True if a relay other than `i` in `i`'s group is on.
    fn group_has_other_on(&self, i: usize) -> bool {
        let Some(name) = &self.slots[i].spec.interlock else {
            return false;
        };
        self.groups
            .get(name)
            .is_some_and(|g| g.members.iter().any(|&m| m != i && self.slots[m].on))
    }

    /// Handles a switch-on command for relay `i`.
    fn command_on(&mut self, i: usize, now: Instant, actions: &mut Vec<RelayAction>) {
        let id = self.slots[i].spec.id.clone();
        if self.slots[i].on {
            if let Some(pulse) = self.slots[i].spec.pulse {
                // Pressing the button again during a pulse lengthens it, as a wall switch would.
                self.start_timer(i, TimerKind::PulseEnd, pulse, actions);
            }
            actions.push(RelayAction::Reply { id, on: true });
            return;
        }
        let Some(name) = self.slots[i].spec.interlock.clone() else {
            self.switch_on(i, 1, actions);
            return;
        };
        let Some(group) = self.groups.get_mut(&name) else {
            self.switch_on(i, 1, actions);
            return;
        };
        if let Some(p) = group.pending.as_mut().filter(|p| p.slot == i) {
            p.replies += 1;
            return;
        }
        let superseded = group.pending.take();
        let members = group.members.clone();
        reply_pending(superseded, &self.slots, false, actions);
        for m in members {
            if m != i && self.slots[m].on {
                let reason = Reason::Interlock { by: id.clone() };
                self.switch_off(m, reason, now, actions);
            }
        }
        let Some(group) = self.groups.get_mut(&name) else {
            return;
        };
        let ready = group.last_off.map_or(now, |off| off + group.dead_time);
        if ready > now {
            let generation = self.slots[i].generations[TimerKind::DeadTime.index()] + 1;
            self.slots[i].generations[TimerKind::DeadTime.index()] = generation;
            group.pending = Some(Pending {
                slot: i,
                replies: 1,
                generation,
            });
            let timer = Timer {
                id,
                kind: TimerKind::DeadTime,
                generation,
            };
            let after = ready - now;
            actions.push(RelayAction::StartTimer { timer, after });
        } else {
            self.switch_on(i, 1, actions);
        }
    }

    /// Drives relay `i` on, answers `replies` commands, and starts its pulse and watchdog.
    fn switch_on(&mut self, i: usize, replies: u32, actions: &mut Vec<RelayAction>) {
        self.set(i, true, Reason::Command, actions);
        let id = self.slots[i].spec.id.clone();
        for _ in 0..replies {
            let id = id.clone();
            actions.push(RelayAction::Reply { id, on: true });
        }
        if let Some(pulse) = self.slots[i].spec.pulse {
            self.start_timer(i, TimerKind::PulseEnd, pulse, actions);
        }
        self.start_max_on(i, actions);
    }

    /// Drives relay `i` off for `reason` and notes the time for its group's dead time.
    fn switch_off(&mut self, i: usize, reason: Reason, now: Instant, out: &mut Vec<RelayAction>) {
        self.set(i, false, reason, out);
        if let Some(group) = self.group_mut(i) {
            group.last_off = Some(now);
        }
    }

    /// Drives and reports relay `i`; any change makes its pulse and watchdog timers stale.
    fn set(&mut self, i: usize, on: bool, reason: Reason, actions: &mut Vec<RelayAction>) {
        let slot = &mut self.slots[i];
        slot.on = on;
        slot.generations[TimerKind::PulseEnd.index()] += 1;
        slot.generations[TimerKind::MaxOn.index()] += 1;
        let id = slot.spec.id.clone();
        actions.push(RelayAction::Drive { id: id.clone(), on });
        actions.push(RelayAction::Report { id, on, reason });
    }

    /// Starts relay `i`'s watchdog, if it has one.
    fn start_max_on(&mut self, i: usize, actions: &mut Vec<RelayAction>) {
        if let Some(max_on) = self.slots[i].spec.max_on {
            self.start_timer(i, TimerKind::MaxOn, max_on, actions);
        }
    }

    /// Starts a timer of `kind` for relay `i`, making older ones of that kind stale.
    fn start_timer(
        &mut self,
        i: usize,
        kind: TimerKind,
        after: Duration,
        out: &mut Vec<RelayAction>,
    ) {
        let slot = &mut self.slots[i];
        slot.generations[kind.index()] += 1;
        let timer = Timer {
            id: slot.spec.id.clone(),
            kind,
            generation: slot.generations[kind.index()],
        };
        out.push(RelayAction::StartTimer { timer, after });
    }
}

/// Answers every command that waited on a switch-on that will not happen now.
fn reply_pending(pending: Option<Pending>, slots: &[Slot], on: bool, out: &mut Vec<RelayAction>) {
    if let Some(p) = pending {
        let id = &slots[p.slot].spec.id;
        for _ in 0..p.replies {
            out.push(RelayAction::Reply { id: id.clone(), on });
        }
    }
}

#[cfg(test)]
#[path = "relay_bank_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "relay_bank_random_tests.rs"]
mod random_tests;
