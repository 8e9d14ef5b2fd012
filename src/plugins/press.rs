//! Button press patterns — single, double and long — as a sans-IO core.
//!
//! The input plugin already debounces and applies `active-low`; this reads the resulting
//! pressed/released changes with their times and tells single, double and long presses
//! apart. It never sleeps: it returns timers for the agent to start and hand back, each with
//! a generation so a timer that a later change made pointless is simply ignored.
//!
//! Timing, as in most home-automation firmwares: a press held `long-ms` is a long press,
//! reported while still held (so a dimmer can start at once); a release followed by a new
//! press within `double-ms` makes a double press; a release with no second press within
//! `double-ms` is a single press. With `double-ms = 0` a single press is reported on release
//! without waiting; with `long-ms = 0` there are no long presses.

use crate::config::InputConfig;
use std::time::{Duration, Instant};

/// A recognised press pattern; the agent emits it as an event of the input's object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Press {
    /// One short press.
    Single,
    /// Two short presses in quick succession.
    Double,
    /// One press held for `long-ms`.
    Long,
}

impl Press {
    /// The word used in events and topics.
    pub fn as_str(self) -> &'static str {
        match self {
            Press::Single => "single",
            Press::Double => "double",
            Press::Long => "long",
        }
    }
}

/// What a press timer is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PressTimerKind {
    /// The button has been held long enough for a long press.
    Long,
    /// No second press came: the first was a single press.
    Gap,
}

/// A timer to hand back to [`PressDetector::timer`] when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PressTimer {
    /// What it waits for.
    pub kind: PressTimerKind,
    /// Which state it belongs to; any later change makes it stale.
    generation: u64,
}

/// One step for the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PressAction {
    /// Call [`PressDetector::timer`] with `timer` after `after`.
    StartTimer {
        /// What to hand back.
        timer: PressTimer,
        /// How long to wait.
        after: Duration,
    },
    /// A press pattern was recognised.
    Event(Press),
}

/// Where the detector is in a press sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Released, nothing pending.
    Idle,
    /// Pressed; `taps` short presses came before this one in the sequence (0 or 1).
    Down {
        /// Earlier short presses in this sequence.
        taps: u8,
        /// When this press began.
        since: Instant,
        /// True once this press was reported as long.
        long_sent: bool,
    },
    /// Released after one short press, waiting `double-ms` for a second.
    Gap,
}

/// Recognises press patterns of one input.
#[derive(Clone, Debug)]
pub struct PressDetector {
    /// `double-ms`, or `None` when double presses are off.
    double: Option<Duration>,
    /// `long-ms`, or `None` when long presses are off.
    long: Option<Duration>,
    /// Where the sequence is.
    state: State,
    /// Bumped on every change of state; timers of older generations are stale.
    generation: u64,
}

impl PressDetector {
    /// A detector with the given windows in ms; 0 turns a pattern off.
    pub fn new(double_ms: u64, long_ms: u64) -> PressDetector {
        let window = |ms| (ms > 0).then(|| Duration::from_millis(ms));
        PressDetector {
            double: window(double_ms),
            long: window(long_ms),
            state: State::Idle,
            generation: 0,
        }
    }

    /// A detector with an input's `double-ms` and `long-ms`.
    pub fn for_input(config: &InputConfig) -> PressDetector {
        PressDetector::new(config.double_ms, config.long_ms)
    }

    /// The debounced input became pressed (`true`) or released at `now`.
    pub fn level(&mut self, pressed: bool, now: Instant) -> Vec<PressAction> {
        let mut out = Vec::new();
        match (self.state, pressed) {
            (State::Idle, true) => self.press(0, now, &mut out),
            (State::Gap, true) => self.press(1, now, &mut out),
            (
                State::Down {
                    taps,
                    since,
                    long_sent,
                },
                false,
            ) => {
                let held_long = self.long.is_some_and(|long| now - since >= long);
                if long_sent {
                    self.enter(State::Idle);
                } else if held_long {
                    // The long timer is late (a busy agent): the hold still counts.
                    self.long_press(taps, &mut out);
                    self.enter(State::Idle);
                } else if taps == 1 {
                    out.push(PressAction::Event(Press::Double));
                    self.enter(State::Idle);
                } else if let Some(double) = self.double {
                    self.enter(State::Gap);
                    out.push(self.timer_action(PressTimerKind::Gap, double));
                } else {
                    out.push(PressAction::Event(Press::Single));
                    self.enter(State::Idle);
                }
            }
            _ => {} // a repeated level: nothing changed
        }
        out
    }

    /// A timer started by an earlier action has fired.
    pub fn timer(&mut self, timer: PressTimer) -> Vec<PressAction> {
        let mut out = Vec::new();
        if timer.generation != self.generation {
            return out;
        }
        match (timer.kind, self.state) {
            (PressTimerKind::Long, State::Down { taps, since, .. }) => {
                self.long_press(taps, &mut out);
                self.state = State::Down {
                    taps: 0,
                    since,
                    long_sent: true,
                };
            }
            (PressTimerKind::Gap, State::Gap) => {
                out.push(PressAction::Event(Press::Single));
                self.enter(State::Idle);
            }
            _ => {}
        }
        out
    }

    /// Starts a press with `taps` short presses before it.
    fn press(&mut self, taps: u8, now: Instant, out: &mut Vec<PressAction>) {
        self.enter(State::Down {
            taps,
            since: now,
            long_sent: false,
        });
        if let Some(long) = self.long {
            out.push(self.timer_action(PressTimerKind::Long, long));
        }
    }

    /// Reports a long press; a short press before it in the sequence was a single press.
    fn long_press(&mut self, taps: u8, out: &mut Vec<PressAction>) {
        if taps == 1 {
            out.push(PressAction::Event(Press::Single));
        }
        out.push(PressAction::Event(Press::Long));
    }

    /// Moves to `state`, making every running timer stale.
    fn enter(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
    }

    /// A timer of `kind` for the current state.
    fn timer_action(&self, kind: PressTimerKind, after: Duration) -> PressAction {
        let timer = PressTimer {
            kind,
            generation: self.generation,
        };
        PressAction::StartTimer { timer, after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a detector like the agent would: a fake clock, timers fired when due.
    struct Clock {
        detector: PressDetector,
        start: Instant,
        now: Instant,
        timers: Vec<(Instant, PressTimer)>,
        events: Vec<(u64, Press)>,
    }

    impl Clock {
        fn new(double_ms: u64, long_ms: u64) -> Clock {
            let now = Instant::now();
            Clock {
                detector: PressDetector::new(double_ms, long_ms),
                start: now,
                now,
                timers: Vec::new(),
                events: Vec::new(),
            }
        }

        fn perform(&mut self, actions: Vec<PressAction>) {
            for a in actions {
                match a {
                    PressAction::StartTimer { timer, after } => {
                        self.timers.push((self.now + after, timer))
                    }
                    PressAction::Event(p) => {
                        let at = (self.now - self.start).as_millis() as u64;
                        self.events.push((at, p));
                    }
                }
            }
        }

        /// Advances to `at_ms` after the start, firing due timers, then sets the level.
        fn at(&mut self, at_ms: u64, pressed: bool) {
            self.until(at_ms);
            let actions = self.detector.level(pressed, self.now);
            self.perform(actions);
        }

        fn until(&mut self, at_ms: u64) {
            let end = self.start + Duration::from_millis(at_ms);
            loop {
                self.timers.sort_by_key(|(at, _)| *at);
                match self.timers.first() {
                    Some((at, _)) if *at <= end => {
                        let (at, timer) = self.timers.remove(0);
                        self.now = at;
                        let actions = self.detector.timer(timer);
                        self.perform(actions);
                    }
                    _ => break,
                }
            }
            self.now = end;
        }
    }

    #[test]
    fn a_short_press_is_single_once_the_double_window_has_passed() {
        let mut c = Clock::new(400, 800);
        c.at(0, true);
        c.at(100, false);
        c.until(499);
        assert!(c.events.is_empty(), "still waiting for a second press");
        c.until(500);
        assert_eq!(c.events, [(500, Press::Single)]);
    }

    #[test]
    fn two_short_presses_within_the_window_are_one_double() {
        let mut c = Clock::new(400, 800);
        c.at(0, true);
        c.at(100, false);
        c.at(450, true);
        c.at(550, false);
        c.until(5000);
        assert_eq!(c.events, [(550, Press::Double)]);

        // A second press just after the window is a new single press.
        let mut c = Clock::new(400, 800);
        c.at(0, true);
        c.at(100, false);
        c.at(501, true);
        c.at(600, false);
        c.until(5000);
        assert_eq!(c.events, [(500, Press::Single), (1000, Press::Single)]);
    }

    #[test]
    fn a_held_press_is_long_while_still_held_and_its_release_is_silent() {
        let mut c = Clock::new(400, 800);
        c.at(0, true);
        c.until(799);
        assert!(c.events.is_empty());
        c.until(800);
        assert_eq!(c.events, [(800, Press::Long)]);
        c.at(3000, false);
        c.until(5000);
        assert_eq!(c.events, [(800, Press::Long)]);
    }

    #[test]
    fn a_tap_then_a_hold_is_a_single_then_a_long() {
        let mut c = Clock::new(400, 800);
        c.at(0, true);
        c.at(100, false);
        c.at(300, true);
        c.until(1100);
        assert_eq!(c.events, [(1100, Press::Single), (1100, Press::Long)]);
    }

    #[test]
    fn a_late_long_timer_still_counts_the_hold_on_release() {
        let mut d = PressDetector::new(400, 800);
        let t0 = Instant::now();
        d.level(true, t0);
        let events = d.level(false, t0 + Duration::from_millis(900));
        assert_eq!(events, [PressAction::Event(Press::Long)]);
    }

    #[test]
    fn zero_windows_turn_patterns_off() {
        let mut c = Clock::new(0, 800);
        c.at(0, true);
        c.at(100, false);
        assert_eq!(
            c.events,
            [(100, Press::Single)],
            "no wait without double presses"
        );

        let mut c = Clock::new(400, 0);
        c.at(0, true);
        c.at(5000, false);
        c.until(6000);
        assert_eq!(c.events, [(5400, Press::Single)], "no long presses");
    }

    #[test]
    fn repeated_levels_and_stale_timers_change_nothing() {
        let mut c = Clock::new(400, 800);
        c.at(0, true);
        c.at(10, true);
        c.at(100, false);
        c.at(110, false);
        c.until(5000);
        assert_eq!(c.events, [(500, Press::Single)]);
        let stale = PressTimer {
            kind: PressTimerKind::Gap,
            generation: 0,
        };
        assert!(c.detector.timer(stale).is_empty());
        assert_eq!(Press::Double.as_str(), "double");
    }
}
