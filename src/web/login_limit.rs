//! Failed logins per address: a browser or script that keeps guessing passwords is told to
//! wait. Every failed check (form or HTTP Basic) counts against the address it came from;
//! after [`MAX_FAILURES`] in one [`WINDOW_MS`], logins from there are refused with `429` until
//! the window ends, even with the right password, so guessing costs a minute per ten tries.
//! The table is bounded: at most [`MAX_ADDRESSES`], the oldest window gives way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failed logins an address may make per window.
pub const MAX_FAILURES: u32 = 10;
/// How long a window lasts.
pub const WINDOW_MS: u64 = 60_000;
/// Addresses tracked at once.
pub const MAX_ADDRESSES: usize = 1024;

/// Failures of one address in its current window.
#[derive(Clone, Copy, Debug)]
struct Window {
    started_ms: u64,
    failures: u32,
}

/// The failed logins of every address lately.
#[derive(Debug, Default)]
pub struct LoginLimit {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl LoginLimit {
    /// Seconds `ip` must still wait before it may try again; none when it may now.
    pub fn blocked(&self, ip: IpAddr, now_ms: u64) -> Option<u64> {
        let windows = self.windows.lock().ok()?;
        let w = windows.get(&ip)?;
        let ends = w.started_ms.saturating_add(WINDOW_MS);
        (w.failures >= MAX_FAILURES && now_ms < ends).then(|| (ends - now_ms).div_ceil(1000))
    }

    /// Counts a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now_ms: u64) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        if !windows.contains_key(&ip) && windows.len() >= MAX_ADDRESSES {
            windows.retain(|_, w| now_ms < w.started_ms.saturating_add(WINDOW_MS));
            if windows.len() >= MAX_ADDRESSES {
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started_ms)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    windows.remove(&oldest);
                }
            }
        }
        let w = windows.entry(ip).or_insert(Window {
            started_ms: now_ms,
            failures: 0,
        });
        if now_ms >= w.started_ms.saturating_add(WINDOW_MS) {
            *w = Window {
                started_ms: now_ms,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// A login from `ip` succeeded: its count starts again.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut windows) = self.windows.lock() {
            windows.remove(&ip);
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn ten_failures_block_an_address_for_the_rest_of_its_minute() {
        let l = LoginLimit::default();
        for i in 0..MAX_FAILURES {
            assert_eq!(l.blocked(ip(1), 1_000 + u64::from(i)), None);
            l.failed(ip(1), 1_000 + u64::from(i));
        }
        assert_eq!(l.blocked(ip(1), 1_010), Some(60));
        assert_eq!(l.blocked(ip(1), 30_500), Some(31));
        assert_eq!(l.blocked(ip(2), 1_010), None, "other addresses go on");
        assert_eq!(l.blocked(ip(1), 61_000), None, "the window ended");
        l.failed(ip(1), 61_000);
        assert_eq!(
            l.blocked(ip(1), 61_001),
            None,
            "a new window counts from one"
        );
    }

    #[test]
    fn a_success_starts_the_count_again() {
        let l = LoginLimit::default();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(ip(1), 0);
        }
        l.succeeded(ip(1));
        l.failed(ip(1), 1);
        assert_eq!(l.blocked(ip(1), 2), None);
    }

    #[test]
    fn the_table_stays_bounded_past_its_size() {
        let l = LoginLimit::default();
        for n in 0..(MAX_ADDRESSES as u32 * 3) {
            l.failed(ip(n), u64::from(n));
        }
        assert_eq!(l.len(), MAX_ADDRESSES);
        // A blocked address among the newest is still blocked.
        let last = ip(MAX_ADDRESSES as u32 * 3 - 1);
        for _ in 0..MAX_FAILURES {
            l.failed(last, 5_000);
        }
        assert!(l.blocked(last, 5_001).is_some());
    }
}
