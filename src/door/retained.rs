//! The budget for retained messages clients leave on the broker: how many topics and how many
//! bytes. The router keeps every retained message until it is deleted, so without a bound a
//! client could fill the Pi's memory one topic at a time. The agent's own retained states
//! (one per object, bounded by the store's object limit) do not pass the front door, and
//! members and the local CLI leave a few each: only users' (and anonymous clients') retained
//! messages are counted, so a full budget never keeps a member's hello off the broker.

use std::collections::HashMap;
use std::sync::Mutex;

/// Why a retained message was not kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// A new topic would pass the topic limit.
    #[error("{0} retained topics are held, the most allowed; delete some (an empty retained message) first")]
    Topics(usize),
    /// The message would pass the byte limit.
    #[error("retained messages hold {held} bytes; {len} more would pass the {max} allowed")]
    Bytes { held: usize, len: usize, max: usize },
}

/// Retained topics and their payload sizes, as clients set them through the front door.
#[derive(Debug)]
pub struct RetainedBudget {
    max_topics: usize,
    max_bytes: usize,
    held: Mutex<(HashMap<String, usize>, usize)>,
}

impl RetainedBudget {
    /// A budget of `max_topics` topics and `max_bytes` payload bytes in all.
    pub fn new(max_topics: usize, max_bytes: usize) -> Self {
        RetainedBudget {
            max_topics,
            max_bytes,
            held: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// Accounts a retained publish of `len` bytes on `topic` (0 deletes it), or says why it
    /// may not be kept.
    pub fn admit(&self, topic: &str, len: usize) -> Result<(), Full> {
        let Ok(mut guard) = self.held.lock() else {
            return Ok(());
        };
        let (topics, total) = &mut *guard;
        let old = topics.get(topic).copied();
        if len == 0 {
            *total -= old.unwrap_or(0);
            topics.remove(topic);
            return Ok(());
        }
        if old.is_none() && topics.len() >= self.max_topics {
            return Err(Full::Topics(self.max_topics));
        }
        let after = *total - old.unwrap_or(0) + len;
        if after > self.max_bytes {
            return Err(Full::Bytes {
                held: *total,
                len,
                max: self.max_bytes,
            });
        }
        *total = after;
        topics.insert(topic.to_string(), len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_bytes_are_bounded_and_deleting_makes_room() {
        let b = RetainedBudget::new(2, 100);
        b.admit("a", 10).unwrap();
        b.admit("b", 10).unwrap();
        assert_eq!(b.admit("c", 10), Err(Full::Topics(2)));
        b.admit("a", 50).unwrap();
        assert!(matches!(
            b.admit("b", 60),
            Err(Full::Bytes { held: 60, .. })
        ));
        b.admit("a", 0).unwrap();
        b.admit("c", 80).unwrap();
        assert!(b.admit("d", 1).is_err(), "two topics again");
        b.admit("never-set", 0).unwrap();
        let err = b.admit("d", 1).unwrap_err().to_string();
        assert!(err.contains("2 retained topics"), "{err}");
    }
}
