//! The hybrid logical clock that stamps every replicated write.
//!
//! A [`Stamp`] is `(wall ms, counter, origin)`, compared in that order. The wall part keeps
//! stamps close to real time, so "last writer wins" means what a person expects; the counter
//! orders events that share a millisecond, or that happen while the wall clock lags; the
//! origin breaks the remaining ties so every instance picks the same winner.
//!
//! # Clock skew
//!
//! With plain wall-clock stamps, an instance whose clock runs an hour ahead would win every
//! conflict for an hour: its stale write would beat everyone's newer ones. An [`Hlc`] never
//! issues a stamp below one it has seen, so once an instance has observed the skewed
//! peer's stamp `(T + 1h, c, peer)`, its own next writes are `(T + 1h, c + 1, me)`,
//! `(T + 1h, c + 2, me)`, ... and still order after the peer's write. Local wall time only
//! takes over again once it passes `T + 1h`. The same rule covers a Pi without a real-time
//! clock that boots with a time in the past: its clock is restored from its own last stamp
//! ([`Hlc::restore`]) and from what it observes, so its writes are not lost either.
//!
//! # Stamps from the future
//!
//! Folding in any stamp, however far ahead, hands every sender the power to freeze everyone
//! else's writes: one forged `(u64::MAX, u32::MAX)` would win every register for good and
//! pin every clock at the end of time. So a remote stamp further ahead of our wall clock
//! than a bound (`[mesh] max-clock-ahead-s`, default [`DEFAULT_MAX_AHEAD_MS`]) is refused
//! ([`check_ahead`], [`Hlc::observe_remote`]): it is never folded in and the update carrying
//! it is never applied. Honest skew within the bound still works as above.
//!
//! The clock is sans-IO: wall time is an argument, so tests inject it; [`now_ms`] reads the
//! system clock for the code that does I/O.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// When one write happened, in an order every instance agrees on.
///
/// The derived order compares `wall_ms`, then `counter`, then `origin`: two distinct
/// instances can never issue equal stamps, so the origin settles every tie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch, as far as the issuing clock knew; the coarse order.
    pub wall_ms: u64,
    /// Orders stamps that share `wall_ms`, so a burst of writes in one millisecond (or while
    /// the wall clock lags behind a stamp already seen) still gets increasing stamps.
    pub counter: u32,
    /// The instance that issued the stamp; breaks ties and names the writer.
    pub origin: Uuid,
}

/// A hybrid logical clock for one instance: issues [`Stamp`]s that are strictly greater
/// than every stamp it issued, observed or restored before, whatever the wall clock does.
#[derive(Clone, Debug)]
pub struct Hlc {
    /// The instance whose stamps this clock issues.
    origin: Uuid,
    /// Wall part of the highest stamp issued or seen so far.
    wall_ms: u64,
    /// Counter part of the highest stamp issued or seen so far.
    counter: u32,
}

impl Hlc {
    /// A clock for `origin` that has seen nothing yet.
    pub fn new(origin: Uuid) -> Self {
        Hlc {
            origin,
            wall_ms: 0,
            counter: 0,
        }
    }

    /// The stamp the next `tick` would return at `wall_ms`, without advancing.
    pub fn peek(&self, wall_ms: u64) -> Stamp {
        let (wall_ms, counter) = if wall_ms > self.wall_ms {
            (wall_ms, 0)
        } else if self.counter < u32::MAX {
            (self.wall_ms, self.counter + 1)
        } else {
            // The counter is spent: borrow the next millisecond instead of overflowing. At
            // `u64::MAX` (only reachable through a forged stamp) the stamp stops growing
            // rather than panic; the origin still tells writers apart.
            (self.wall_ms.saturating_add(1), 0)
        };
        Stamp {
            wall_ms,
            counter,
            origin: self.origin,
        }
    }

    /// A new stamp for a local event, strictly greater than every stamp issued or observed before.
    pub fn tick(&mut self, wall_ms: u64) -> Stamp {
        let stamp = self.peek(wall_ms);
        self.wall_ms = stamp.wall_ms;
        self.counter = stamp.counter;
        stamp
    }

    /// Folds in a remote stamp so later local stamps order after it, if it is at most
    /// `max_ahead_ms` ahead of `wall_ms`; a stamp further ahead is refused and changes nothing.
    pub fn observe_remote(
        &mut self,
        remote: &Stamp,
        wall_ms: u64,
        max_ahead_ms: u64,
    ) -> Result<(), TooFarAhead> {
        check_ahead(remote, wall_ms, max_ahead_ms)?;
        self.observe(remote, wall_ms);
        Ok(())
    }

    /// Folds in a stamp already admitted (checked with [`check_ahead`], or our own read back
    /// from disk) so later local stamps order after it.
    pub fn observe(&mut self, remote: &Stamp, _wall_ms: u64) {
        if (remote.wall_ms, remote.counter) > (self.wall_ms, self.counter) {
            self.wall_ms = remote.wall_ms;
            self.counter = remote.counter;
        }
    }

    /// Same as observe for a stamp that is ours, e.g. read back from disk on start.
    pub fn restore(&mut self, last: &Stamp) {
        self.observe(last, 0);
    }

    /// The highest stamp issued, observed or restored so far, as if this clock had issued it;
    /// persisted so that a restarted instance continues after it.
    pub fn last(&self) -> Stamp {
        Stamp {
            wall_ms: self.wall_ms,
            counter: self.counter,
            origin: self.origin,
        }
    }
}

/// Default bound on how far a remote stamp may be ahead of our wall clock: five minutes,
/// generous for Pis whose clocks NTP keeps within a second, small enough that a forged or
/// broken clock cannot outvote the house for long.
pub const DEFAULT_MAX_AHEAD_MS: u64 = 5 * 60 * 1000;

/// A remote stamp too far ahead of the local wall clock: refused, never folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "stamp of {origin} is {ahead_ms} ms ahead of our wall clock (at most {max_ms} ms allowed; \
     check both clocks, or raise [mesh] max-clock-ahead-s)"
)]
pub struct TooFarAhead {
    /// The origin the stamp claims.
    pub origin: Uuid,
    /// How far ahead of our wall clock it is.
    pub ahead_ms: u64,
    /// The bound it broke.
    pub max_ms: u64,
}

/// Whether `stamp` is at most `max_ms` ahead of `wall_ms`.
pub fn check_ahead(stamp: &Stamp, wall_ms: u64, max_ms: u64) -> Result<(), TooFarAhead> {
    let ahead_ms = stamp.wall_ms.saturating_sub(wall_ms);
    if ahead_ms > max_ms {
        return Err(TooFarAhead {
            origin: stamp.origin,
            ahead_ms,
            max_ms,
        });
    }
    Ok(())
}

/// The system wall clock in milliseconds since the Unix epoch; 0 if it reads before 1970.
pub fn now_ms() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    #[test]
    fn ticks_increase_even_when_the_wall_clock_stalls_or_goes_back() {
        let mut clock = Hlc::new(id(1));
        let a = clock.tick(1_000);
        let b = clock.tick(1_000);
        let c = clock.tick(900);
        let d = clock.tick(2_000);
        assert!(a < b && b < c && c < d, "{a:?} {b:?} {c:?} {d:?}");
        assert_eq!((a.wall_ms, a.counter), (1_000, 0));
        assert_eq!((c.wall_ms, c.counter), (1_000, 2));
        assert_eq!((d.wall_ms, d.counter), (2_000, 0));
    }

    #[test]
    fn peek_returns_the_next_tick_without_advancing() {
        let mut clock = Hlc::new(id(1));
        clock.tick(50);
        let peeked = clock.peek(50);
        assert_eq!(clock.peek(50), peeked);
        assert_eq!(clock.tick(50), peeked);
    }

    #[test]
    fn a_peer_an_hour_ahead_does_not_freeze_local_writes() {
        let now = 10 * HOUR_MS;
        let mut ahead = Hlc::new(id(9));
        let mut local = Hlc::new(id(1));
        let skewed = ahead.tick(now + HOUR_MS);

        // Without the HLC, a write a second later at local wall time would lose to it.
        let plain = Stamp {
            wall_ms: now + 1_000,
            counter: 0,
            origin: id(1),
        };
        assert!(plain < skewed);

        local.observe(&skewed, now);
        let first = local.tick(now + 1_000);
        let second = local.tick(now + 2_000);
        assert!(skewed < first && first < second);
        assert_eq!((first.wall_ms, first.counter), (now + HOUR_MS, 1));
        assert_eq!((second.wall_ms, second.counter), (now + HOUR_MS, 2));

        // Once local time passes the skewed stamp, wall time leads again.
        let later = local.tick(now + HOUR_MS + 5);
        assert_eq!((later.wall_ms, later.counter), (now + HOUR_MS + 5, 0));
    }

    #[test]
    fn observing_an_older_stamp_changes_nothing() {
        let mut clock = Hlc::new(id(1));
        clock.tick(5_000);
        let before = clock.peek(5_000);
        clock.observe(
            &Stamp {
                wall_ms: 10,
                counter: 7,
                origin: id(2),
            },
            5_000,
        );
        assert_eq!(clock.peek(5_000), before);
    }

    #[test]
    fn observed_ties_order_after_the_remote_whatever_the_origins() {
        // Our origin sorts below the remote one, yet our next stamp must still follow it.
        let mut clock = Hlc::new(id(1));
        let remote = Stamp {
            wall_ms: 100,
            counter: 3,
            origin: id(200),
        };
        clock.observe(&remote, 100);
        assert!(clock.tick(100) > remote);
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let mut clock = Hlc::new(id(1));
        let full = Stamp {
            wall_ms: 7,
            counter: u32::MAX,
            origin: id(2),
        };
        clock.observe(&full, 7);
        let next = clock.tick(7);
        assert!(next > full);
        assert_eq!((next.wall_ms, next.counter), (8, 0));
    }

    #[test]
    fn the_end_of_time_saturates_instead_of_panicking() {
        let mut clock = Hlc::new(id(1));
        let forged = Stamp {
            wall_ms: u64::MAX,
            counter: u32::MAX,
            origin: id(2),
        };
        clock.observe(&forged, 0);
        let next = clock.tick(0);
        assert_eq!(next.wall_ms, u64::MAX);
    }

    #[test]
    fn a_stamp_beyond_the_bound_is_refused_and_not_folded_in() {
        let now = 10 * HOUR_MS;
        let mut clock = Hlc::new(id(1));
        clock.tick(now);
        let before = clock.peek(now);
        let forged = Stamp {
            wall_ms: u64::MAX,
            counter: u32::MAX,
            origin: id(2),
        };
        let err = clock
            .observe_remote(&forged, now, DEFAULT_MAX_AHEAD_MS)
            .unwrap_err();
        assert_eq!(err.origin, id(2));
        assert_eq!(clock.peek(now), before, "the refused stamp left no trace");

        let edge = Stamp {
            wall_ms: now + DEFAULT_MAX_AHEAD_MS,
            counter: 3,
            origin: id(2),
        };
        assert!(clock
            .observe_remote(&edge, now, DEFAULT_MAX_AHEAD_MS)
            .is_ok());
        assert!(
            clock.tick(now) > edge,
            "within the bound, skew is folded in"
        );
        let past = Stamp {
            wall_ms: edge.wall_ms + 1,
            ..edge
        };
        assert!(clock
            .observe_remote(&past, now, DEFAULT_MAX_AHEAD_MS)
            .is_err());
    }

    #[test]
    fn restore_continues_after_our_own_last_stamp() {
        let mut before = Hlc::new(id(1));
        before.tick(1_000);
        let last = before.tick(1_000);

        let mut after = Hlc::new(id(1));
        after.restore(&last);
        assert_eq!(after.last(), last);
        // The wall clock went back across the restart; the stamps must not.
        assert!(after.tick(500) > last);
    }

    #[test]
    fn stamps_order_by_wall_then_counter_then_origin() {
        let s = |wall_ms, counter, n| Stamp {
            wall_ms,
            counter,
            origin: id(n),
        };
        assert!(s(1, 9, 9) < s(2, 0, 0));
        assert!(s(1, 1, 9) < s(1, 2, 0));
        assert!(s(1, 1, 1) < s(1, 1, 2));
    }

    #[test]
    fn now_ms_reads_a_time_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
