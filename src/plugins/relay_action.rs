//! The messages of the relay bank: the actions it asks the agent to perform, the timers it
//! hands out, and the reasons it gives for a change.
//!
//! They live apart from [`super::relay_bank::RelayBank`] so the agent's side of the contract
//! (perform these, in order) reads on its own.

use crate::model::ObjectId;
use std::fmt;
use std::time::Duration;

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// The end of a pulse: switch off.
    PulseEnd,
    /// The maximum on-time is over: switch off and say why.
    MaxOn,
    /// The interlock dead time is over: switch on the relay that was waiting.
    DeadTime,
}

impl TimerKind {
    /// Index into a relay's generation counters.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// A timer to hand back to [`RelayBank::timer`] when it fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The relay it is about.
    pub id: ObjectId,
    /// What it does.
    pub kind: TimerKind,
    /// Which switching it belongs to; a later switching makes it stale.
    pub(super) generation: u64,
}

/// Why a relay changed state; the agent records it with the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A command asked for it.
    Command,
    /// Its `pulse-ms` ran out.
    PulseEnd,
    /// Its `max-on-s` ran out: the watchdog switched it off.
    MaxOn,
    /// Another relay of its interlock group was switched on.
    Interlock {
        /// The relay that was switched on.
        by: ObjectId,
    },
    /// The agent is stopping and `on-stop` names this state.
    Stop,
    /// At start, the relay's start state broke a rule (a pulse relay on, two of a group on).
    Start,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Command => write!(f, "command"),
            Reason::PulseEnd => write!(f, "pulse-ms elapsed"),
            Reason::MaxOn => write!(f, "max-on-s exceeded"),
            Reason::Interlock { by } => write!(f, "interlock: {by} switched on"),
            Reason::Stop => write!(f, "on-stop"),
            Reason::Start => write!(f, "start rules"),
        }
    }
}

/// One step for the agent. Perform them in order. If a `Drive` fails, stop there and perform
/// the actions of [`RelayBank::drive_failed`] (given the failed drive and the actions after
/// it) instead of the rest.
///
/// Answers: the agent queues each command on its relay before calling
/// [`RelayBank::command`]; every `Reply` or `Fail` answers the oldest queued command on the
/// relay it names, and every command gets exactly one of the two, now or (after a dead time)
/// later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayAction {
    /// Set the relay's output (logical on/off; the plugin applies active-low).
    Drive {
        /// The relay.
        id: ObjectId,
        /// The state to drive.
        on: bool,
    },
    /// Call [`RelayBank::timer`] with `timer` after `after`.
    StartTimer {
        /// What to hand back.
        timer: Timer,
        /// How long to wait.
        after: Duration,
    },
    /// The relay changed state: record and publish it; for a reason other than `Command`,
    /// also emit an event that says why.
    Report {
        /// The relay.
        id: ObjectId,
        /// Its new state.
        on: bool,
        /// Why it changed.
        reason: Reason,
    },
    /// Answer the oldest queued command on this relay `ok` with this state.
    Reply {
        /// The relay.
        id: ObjectId,
        /// Its state when the command completed.
        on: bool,
    },
    /// Answer the oldest queued command on this relay `failed`: a drive it needed failed.
    Fail {
        /// The relay.
        id: ObjectId,
    },
}
