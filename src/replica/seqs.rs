//! Which sequence numbers of each origin this replica holds: the version vector and the
//! out-of-order arrivals waiting for a gap to fill.
//!
//! Every origin numbers its updates 1, 2, 3, ... The version vector records, per origin, the
//! highest `s` such that all of `1..=s` are held; anything received beyond a gap waits in a
//! small per-origin set and joins the vector as soon as the gap fills. The state depends only
//! on the set of `(origin, seq)` pairs recorded (plus explicit [`Seqs::raise`] calls), never on
//! their order, so replicas that saw the same updates agree on it.

use super::{Gap, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Seqs kept per origin above a gap: a forger sending distinct seqs cannot grow the set
/// further; a real gap that large is closed by a sync, which raises the vector past it.
const MAX_WAITING: usize = 10_000;

/// Per-origin sequence bookkeeping of one replica.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Seqs {
    /// Per origin, the highest seq with every seq up to it held; what peers are told we have.
    pub(crate) version_vector: VersionVector,
    /// Per origin, seqs held above a gap; they join the vector once the gap fills, and are what
    /// a restart must remember so a filled gap still advances the vector.
    pub(crate) ahead: BTreeMap<Uuid, BTreeSet<u64>>,
}

impl Seqs {
    /// The contiguous high-water mark for `origin`, 0 if nothing is held.
    pub(crate) fn contiguous(&self, origin: &Uuid) -> u64 {
        self.version_vector.get(origin).copied().unwrap_or(0)
    }

    /// The highest seq of `origin` held at all, contiguous or not; our own next seq follows it.
    pub(crate) fn highest(&self, origin: &Uuid) -> u64 {
        let above = self
            .ahead
            .get(origin)
            .and_then(|set| set.last().copied())
            .unwrap_or(0);
        self.contiguous(origin).max(above)
    }

    /// Origins with any seq held.
    pub(crate) fn origins(&self) -> usize {
        let only_ahead = self
            .ahead
            .keys()
            .filter(|o| !self.version_vector.contains_key(o))
            .count();
        self.version_vector.len() + only_ahead
    }

    /// Records that `seq` of `origin` is held; returns the gap still open for that origin.
    /// `seq` must be at least 1 (0 is never issued).
    pub(crate) fn record(&mut self, origin: Uuid, seq: u64) -> Option<Gap> {
        let have = self.contiguous(&origin);
        if seq == have.saturating_add(1) {
            self.version_vector.insert(origin, seq);
            self.advance(origin);
        } else if seq > have {
            let waiting = self.ahead.entry(origin).or_default();
            waiting.insert(seq);
            if waiting.len() > MAX_WAITING {
                // Forget the lowest: the vector then waits for a sync to pass it, but the
                // highest seq held (our next own seq follows it) stays right.
                waiting.pop_first();
            }
        }
        self.gap(origin)
    }

    /// Raises each origin's contiguous mark to at least `peer`'s, then lets waiting seqs join.
    pub(crate) fn raise(&mut self, peer: &VersionVector) {
        for (origin, &seq) in peer {
            if seq > self.contiguous(origin) {
                self.version_vector.insert(*origin, seq);
                self.advance(*origin);
            }
        }
    }

    /// The open gap of `origin`, if any seq waits above its contiguous mark.
    fn gap(&self, origin: Uuid) -> Option<Gap> {
        let got = self.ahead.get(&origin)?.last().copied()?;
        Some(Gap {
            origin,
            have: self.contiguous(&origin),
            got,
        })
    }

    /// Drops waiting seqs the contiguous mark already covers and absorbs those that now follow it.
    fn advance(&mut self, origin: Uuid) {
        let Some(waiting) = self.ahead.get_mut(&origin) else {
            return;
        };
        let mut have = self.version_vector.get(&origin).copied().unwrap_or(0);
        while let Some(&first) = waiting.first() {
            if first <= have {
                waiting.pop_first();
            } else if have.checked_add(1) == Some(first) {
                have = first;
                waiting.pop_first();
            } else {
                break;
            }
        }
        if have > 0 {
            self.version_vector.insert(origin, have);
        }
        if waiting.is_empty() {
            self.ahead.remove(&origin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Uuid {
        Uuid::from_bytes([3; 16])
    }

    #[test]
    fn contiguous_seqs_advance_the_vector_without_a_gap() {
        let mut seqs = Seqs::default();
        assert_eq!(seqs.record(origin(), 1), None);
        assert_eq!(seqs.record(origin(), 2), None);
        assert_eq!(seqs.contiguous(&origin()), 2);
        assert!(seqs.ahead.is_empty());
    }

    #[test]
    fn a_jump_waits_and_reports_the_gap_until_it_fills() {
        let mut seqs = Seqs::default();
        seqs.record(origin(), 1);
        let gap = seqs.record(origin(), 4);
        assert_eq!(
            gap,
            Some(Gap {
                origin: origin(),
                have: 1,
                got: 4
            })
        );
        assert_eq!(seqs.record(origin(), 2).map(|g| g.have), Some(2));
        assert_eq!(seqs.contiguous(&origin()), 2);
        assert_eq!(seqs.highest(&origin()), 4);
        assert_eq!(seqs.record(origin(), 3), None);
        assert_eq!(seqs.contiguous(&origin()), 4);
        assert!(seqs.ahead.is_empty());
    }

    #[test]
    fn duplicates_change_nothing() {
        let mut seqs = Seqs::default();
        seqs.record(origin(), 1);
        seqs.record(origin(), 3);
        let before = seqs.clone();
        seqs.record(origin(), 1);
        seqs.record(origin(), 3);
        assert_eq!(seqs, before);
    }

    #[test]
    fn raising_absorbs_waiting_seqs_it_reaches() {
        let mut seqs = Seqs::default();
        seqs.record(origin(), 3);
        seqs.record(origin(), 6);
        seqs.raise(&BTreeMap::from([(origin(), 5)]));
        assert_eq!(seqs.contiguous(&origin()), 6);
        assert!(seqs.ahead.is_empty());
    }

    #[test]
    fn waiting_seqs_are_bounded_and_keep_the_highest() {
        let mut seqs = Seqs::default();
        for s in 0..(MAX_WAITING as u64 + 50) {
            seqs.record(origin(), 10 + s);
        }
        assert_eq!(seqs.ahead[&origin()].len(), MAX_WAITING);
        assert_eq!(seqs.highest(&origin()), 10 + MAX_WAITING as u64 + 49);
    }

    #[test]
    fn raising_never_lowers() {
        let mut seqs = Seqs::default();
        seqs.record(origin(), 1);
        seqs.record(origin(), 2);
        seqs.raise(&BTreeMap::from([(origin(), 1)]));
        assert_eq!(seqs.contiguous(&origin()), 2);
    }
}
