//! Retiring an instance for good, as `pimesh forget` does: in some runs one instance dies
//! and never comes back, and a while later a live one deletes its member record. Its
//! messages still in flight arrive after that, at some instances before the record and at
//! others after; every replica must still end up the same, and every instance drops what it
//! kept for the retired peer (`Node::forget_peer`, as the agent does on the record).
//!
//! The decisions come from a stream of their own, so the other faults a seed draws stay
//! the same.

use super::world::Rng;
use super::Sim;
use uuid::Uuid;

/// The retirement a run makes, if any.
#[derive(Debug)]
pub(super) struct Retirement {
    /// Its own random stream.
    rng: Rng,
    /// The step at which an instance dies for good.
    dies_at: u64,
    /// Steps after that until a live instance forgets it (past the 3 s liveness timeout, as
    /// a person notices a dead Pi).
    forget_after: u64,
    /// The instance that died for good, once it has.
    pub who: Option<usize>,
    /// The member record was deleted.
    forgotten: bool,
    /// Which instances have dropped what they kept for it.
    dropped: Vec<bool>,
}

impl Retirement {
    /// A retirement for one run in three (none in a mesh of three: two would be left to
    /// check).
    pub(super) fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0x5e71_4ef0_46e7_u64);
        let happens = n > 3 && rng.chance(1.0 / 3.0);
        Retirement {
            dies_at: if happens {
                100 + rng.below(500)
            } else {
                u64::MAX
            },
            forget_after: 400 + rng.below(300),
            rng,
            who: None,
            forgotten: false,
            dropped: vec![false; n],
        }
    }
}

impl Sim {
    /// Whether instance `i` was retired (dead for good).
    pub(super) fn is_retired(&self, i: usize) -> bool {
        self.retirement.who == Some(i)
    }

    /// The retired instance's UUID, once there is one.
    fn retired_uuid(&self) -> Option<Uuid> {
        self.retirement.who.map(|i| self.nodes[i].uuid)
    }

    /// Each step: the death (while faults run), then the forget.
    pub(super) fn retire_faults(&mut self, chaos: bool) {
        let r = &mut self.retirement;
        if chaos && r.who.is_none() && self.step >= r.dies_at {
            let i = r.rng.below(self.nodes.len() as u64) as usize;
            r.who = Some(i);
            self.count("retire");
            let inst = &mut self.nodes[i];
            inst.node = None;
            inst.kept.crashes += 1;
            inst.back_at = u64::MAX;
            // What it acknowledged but sent nobody is gone with its disk.
            let gone = inst.uuid;
            self.acked.retain(|u| u.stamp.origin != gone);
            for j in 0..self.nodes.len() {
                if j != i {
                    self.offline(j, i);
                }
            }
            return;
        }
        let Some(dead) = r.who else { return };
        if r.forgotten || self.step < r.dies_at + r.forget_after {
            return;
        }
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|j| *j != dead && self.nodes[*j].node.is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        let j = live[self.retirement.rng.below(live.len() as u64) as usize];
        let now = self.now(j);
        let uuid = self.nodes[dead].uuid;
        if let Some(node) = self.nodes[j].node.as_mut() {
            let deleted = vec![(crate::model::DELETED.into(), true.into())];
            node.record(&crate::membership::member_id(uuid), deleted, false, now);
            self.retirement.forgotten = true;
            self.count("forget");
        }
        self.settle(j);
    }

    /// Once instance `i`'s replica says the retired one is retired, it drops what it kept
    /// for it.
    pub(super) fn follow_retirement(&mut self, i: usize) {
        let Some(uuid) = self.retired_uuid() else {
            return;
        };
        if self.retirement.dropped[i] {
            return;
        }
        if let Some(node) = self.nodes[i].node.as_mut() {
            if node.replica().is_retired(uuid) {
                node.forget_peer(uuid);
                self.retirement.dropped[i] = true;
            }
        }
    }
}
