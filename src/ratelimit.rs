//! Rate-limited warnings: input from the network can trigger a warning at any rate, and a
//! log must not grow with it.
//!
//! Each call site names itself with a `&'static str`, so the table is bounded by the number of
//! sites in the code, never by what arrives. A site may log [`PER_WINDOW`] warnings per
//! [`WINDOW`]; later ones are counted, and the next warning shown says how many were
//! suppressed (`suppressed = N`). [`WarnLimit::flush`] reports counts that no later warning
//! carried, so a burst that stops is still accounted for. Time comes in as an argument.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Warnings a site may log per window.
pub const PER_WINDOW: u32 = 5;
/// The window over which [`PER_WINDOW`] applies.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One call site's window.
#[derive(Clone, Copy, Debug)]
struct Site {
    /// When the current window began.
    start: Instant,
    /// Warnings shown in the current window.
    shown: u32,
    /// Warnings not shown since the last one that was.
    suppressed: u64,
}

/// The windows of every call site that warned.
#[derive(Debug, Default)]
pub struct WarnLimit {
    /// By call site name.
    sites: BTreeMap<&'static str, Site>,
}

impl WarnLimit {
    /// Whether a warning of `site` may be logged at `now`: `Some(n)` with the number of its
    /// warnings suppressed since the last one shown, or `None` to stay silent.
    pub fn allow(&mut self, site: &'static str, now: Instant) -> Option<u64> {
        let s = self.sites.entry(site).or_insert(Site {
            start: now,
            shown: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(s.start) >= WINDOW {
            s.start = now;
            s.shown = 0;
        }
        if s.shown < PER_WINDOW {
            s.shown += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed = s.suppressed.saturating_add(1);
            None
        }
    }

    /// Sites whose window has passed with warnings suppressed, with their counts (reset).
    pub fn flush(&mut self, now: Instant) -> Vec<(&'static str, u64)> {
        let mut due = Vec::new();
        for (site, s) in &mut self.sites {
            if s.suppressed > 0 && now.saturating_duration_since(s.start) >= WINDOW {
                due.push((*site, std::mem::take(&mut s.suppressed)));
                s.start = now;
                s.shown = 0;
            }
        }
        due
    }
}

/// `tracing::warn!` through a [`WarnLimit`]: `warn_limited!(limit, "site", fields…, "message")`.
/// Logs with a `suppressed` field when allowed, counts silently otherwise.
macro_rules! warn_limited {
    ($limit:expr, $site:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $limit.allow($site, ::std::time::Instant::now()) {
            ::tracing::warn!(suppressed, $($rest)+);
        }
    };
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_shows_a_few_and_counts_the_rest() {
        let mut limit = WarnLimit::default();
        let t0 = Instant::now();
        let shown = (0..10_000)
            .filter(|_| limit.allow("garbage", t0).is_some())
            .count();
        assert_eq!(shown, PER_WINDOW as usize);
        // The first warning of the next window carries the count.
        assert_eq!(
            limit.allow("garbage", t0 + WINDOW),
            Some(10_000 - u64::from(PER_WINDOW))
        );
        assert_eq!(limit.allow("garbage", t0 + WINDOW), Some(0));
    }

    #[test]
    fn sites_are_limited_apart() {
        let mut limit = WarnLimit::default();
        let t0 = Instant::now();
        for _ in 0..PER_WINDOW {
            assert!(limit.allow("a", t0).is_some());
        }
        assert_eq!(limit.allow("a", t0), None);
        assert_eq!(limit.allow("b", t0), Some(0));
    }

    #[test]
    fn flush_reports_a_burst_that_stopped_once() {
        let mut limit = WarnLimit::default();
        let t0 = Instant::now();
        for _ in 0..(PER_WINDOW + 3) {
            limit.allow("a", t0);
        }
        assert_eq!(limit.flush(t0), vec![], "not before the window ends");
        assert_eq!(limit.flush(t0 + WINDOW), vec![("a", 3)]);
        assert_eq!(limit.flush(t0 + WINDOW * 3), vec![]);
    }
}
