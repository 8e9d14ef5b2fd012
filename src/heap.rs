//! Giving freed memory back to the system after a burst of work.
//!
//! glibc's malloc keeps what the process frees for reuse and returns to the kernel only free
//! space at the top of its heap. A sync of the whole house (its delta, every page encoded as
//! JSON) frees tens of MiB that lie between allocations that live on, so an instance that had
//! served one joiner of a 10,000-object house stayed about 25 MiB above what it holds.
//! `malloc_trim` hands those free pages back; [`Trim`] calls it once a burst is over.

/// Whether the last heartbeat saw a burst under way, to trim once when it ends.
#[derive(Debug)]
pub struct Trim {
    /// A burst was under way at the last heartbeat (start-up counts as one).
    busy: bool,
}

impl Default for Trim {
    fn default() -> Self {
        Trim { busy: true }
    }
}

impl Trim {
    /// Called every heartbeat with whether a burst (a sync asked or answered) is under way:
    /// when one has just ended, the free memory it left is released. Returns whether it was.
    pub fn beat(&mut self, busy: bool) -> bool {
        let ended = self.busy && !busy;
        self.busy = busy;
        if ended {
            release_free();
        }
        ended
    }
}

/// Returns the heap's free pages to the kernel (glibc only; elsewhere nothing to do).
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointer of ours; it walks glibc's own free lists under
        // glibc's own locks, and is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_when_a_burst_ends_and_after_start_up() {
        let mut t = Trim::default();
        assert!(t.beat(false), "start-up is a burst");
        assert!(!t.beat(false));
        assert!(!t.beat(true));
        assert!(!t.beat(true));
        assert!(t.beat(false));
        assert!(!t.beat(false));
    }
}
