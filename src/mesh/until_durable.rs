//! What waits for our own updates to be durable before it may leave: automation jobs (their
//! id comes from the triggering update's seq, which a crash must never let us reuse) and
//! answers to forwarded commands that carry our updates. Bounded: while the disk refuses
//! writes nothing becomes durable, and the queue must not grow with every command meanwhile.

use std::collections::VecDeque;

/// Items waiting, at most this many, per queue.
pub const MAX_UNTIL_DURABLE: usize = 4096;

/// Items waiting for our updates up to their seq to be durable, in the order they came.
#[derive(Debug)]
pub struct UntilDurable<T> {
    items: VecDeque<(u64, T)>,
    cap: usize,
}

impl<T> Default for UntilDurable<T> {
    fn default() -> Self {
        Self::with_capacity(MAX_UNTIL_DURABLE)
    }
}

impl<T> UntilDurable<T> {
    /// A queue of at most `cap` items.
    pub fn with_capacity(cap: usize) -> Self {
        UntilDurable {
            items: VecDeque::new(),
            cap,
        }
    }

    /// Queues `item` until our updates up to `seq` are durable; a full queue hands it back.
    pub fn push(&mut self, seq: u64, item: T) -> Result<(), T> {
        if self.items.len() >= self.cap {
            return Err(item);
        }
        self.items.push_back((seq, item));
        Ok(())
    }

    /// The items whose updates are durable now (up to `durable`), in the order they came.
    pub fn ready(&mut self, durable: u64) -> Vec<T> {
        let (ready, waiting): (VecDeque<_>, VecDeque<_>) =
            self.items.drain(..).partition(|(seq, _)| *seq <= durable);
        self.items = waiting;
        ready.into_iter().map(|(_, item)| item).collect()
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_leave_in_order_once_their_seq_is_durable() {
        let mut q = UntilDurable::default();
        for (seq, item) in [(3, "a"), (5, "b"), (3, "c"), (9, "d")] {
            q.push(seq, item).unwrap();
        }
        assert!(q.ready(2).is_empty());
        assert_eq!(q.ready(5), vec!["a", "b", "c"]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.ready(u64::MAX), vec!["d"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_full_queue_hands_the_item_back_and_takes_more_once_some_left() {
        let mut q = UntilDurable::default();
        for i in 0..MAX_UNTIL_DURABLE {
            q.push(10, i).unwrap();
        }
        assert_eq!(q.push(10, usize::MAX), Err(usize::MAX));
        assert_eq!(q.len(), MAX_UNTIL_DURABLE);
        assert_eq!(q.ready(10).len(), MAX_UNTIL_DURABLE);
        assert_eq!(q.push(11, 7), Ok(()));
    }
}
