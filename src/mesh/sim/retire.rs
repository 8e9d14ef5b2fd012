//! Retiring an instance for good, as `pimesh forget` does: in some runs one instance dies
//! and never comes back, and a while later a live one deletes its member record. Its
//! messages still in flight arrive after that, at some instances before the record and at
//! others after; every replica must still end up the same, and every instance drops what it
//! kept for the retired peer (`Node::forget_peer`, as the agent does on the record).
//!
//! In half of those runs the dead Pi is rebuilt, as after an SD card died: the same name,
//! config and relay (its pin keeps its level), a new identity and an empty disk, started
//! before or after the old one is forgotten. It must end up holding its relay alone, with the
//! rooms and positions people set (`Sim::check_configs`).
//!
//! The decisions come from a stream of their own, so the other faults a seed draws stay
//! the same.

use super::world::Rng;
use super::Sim;
use crate::membership::member_id;
use uuid::Uuid;

/// Steps after a forget before a person makes it again, if no running instance holds it.
const FORGET_AGAIN: u64 = 300;

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
    /// The slot of the instance that died for good, once it has.
    pub who: Option<usize>,
    /// Its identity.
    uuid: Option<Uuid>,
    /// Steps after the death until the Pi is rebuilt, in runs where it is.
    rebuild_after: Option<u64>,
    /// A lost forget is made again from this step on.
    forget_again_at: u64,
    /// Which instances have dropped what they kept for it.
    dropped: Vec<bool>,
}

impl Retirement {
    /// A retirement for one run in three (none in a mesh of three: two would be left to
    /// check).
    pub(super) fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0x5e71_4ef0_46e7_u64);
        let happens = n > 3 && rng.chance(1.0 / 3.0);
        let rebuild_after = rng.chance(0.5).then(|| 50 + rng.below(650));
        Retirement {
            uuid: None,
            rebuild_after,
            dies_at: if happens {
                100 + rng.below(500)
            } else {
                u64::MAX
            },
            forget_after: 400 + rng.below(300),
            rng,
            who: None,
            forget_again_at: 0,
            dropped: vec![false; n],
        }
    }
}

impl Sim {
    /// Whether instance `i` was retired (dead for good, and not rebuilt).
    pub(super) fn is_retired(&self, i: usize) -> bool {
        self.retirement
            .uuid
            .is_some_and(|u| u == self.nodes[i].uuid)
    }

    /// The retired instance's UUID, once there is one.
    fn retired_uuid(&self) -> Option<Uuid> {
        self.retirement.uuid
    }

    /// Whether instance `uuid` is or was the one in slot `i` (a rebuilt Pi was another
    /// instance before).
    pub(super) fn was_in_slot(&self, i: usize, uuid: Uuid) -> bool {
        self.nodes[i].uuid == uuid
            || (self.retirement.who == Some(i) && self.retirement.uuid == Some(uuid))
    }

    /// Whether the retirement of this run, if any, is over: every running instance holds
    /// the forget.
    pub(super) fn retirement_done(&self) -> bool {
        let Some(uuid) = self.retirement.uuid else {
            return self.retirement.who.is_none();
        };
        let mut running = self.nodes.iter().filter_map(|n| n.node.as_ref());
        running.all(|n| n.replica().is_retired(uuid))
    }

    /// The dead Pi in slot `i` is rebuilt: a new identity, a new key, an empty disk; the
    /// same name, config and pins.
    fn rebuild(&mut self, i: usize) {
        let r = &mut self.retirement;
        r.rebuild_after = None;
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&r.rng.next().to_le_bytes());
        }
        let inst = &mut self.nodes[i];
        inst.uuid = Uuid::from_u64_pair(r.rng.next(), r.rng.next());
        inst.key = ed25519_dalek::SigningKey::from_bytes(&key);
        inst.disk = Default::default();
        inst.awaiting.clear();
        inst.kept.new_disk();
        inst.back_at = self.step + 1;
        self.traffic.retry_from = self.traffic.sent.len();
        self.count("rebuild");
    }

    /// Each step: the death (while faults run), then the forget.
    pub(super) fn retire_faults(&mut self, chaos: bool) {
        let r = &mut self.retirement;
        if chaos && r.who.is_none() && self.step >= r.dies_at {
            let i = r.rng.below(self.nodes.len() as u64) as usize;
            r.who = Some(i);
            r.uuid = Some(self.nodes[i].uuid);
            self.count("retire");
            let inst = &mut self.nodes[i];
            inst.node = None;
            inst.kept.crashes += 1;
            inst.back_at = u64::MAX;
            // What it acknowledged but sent nobody is gone with its disk.
            let gone = inst.uuid;
            self.acked.retain(|u| u.stamp.origin != gone);
            self.lose_acked_only_on(i);
            for j in 0..self.nodes.len() {
                if j != i {
                    self.offline(j, i);
                }
            }
            return;
        }
        let (Some(dead), Some(uuid)) = (r.who, r.uuid) else {
            return;
        };
        if r.rebuild_after
            .is_some_and(|after| self.step >= r.dies_at + after)
        {
            self.rebuild(dead);
        }
        let r = &self.retirement;
        if self.step < r.dies_at + r.forget_after || self.step < r.forget_again_at {
            return;
        }
        let running = || self.nodes.iter().filter_map(|n| n.node.as_ref());
        if running().any(|n| n.replica().is_retired(uuid)) {
            return;
        }
        // A person forgets it on a member that knows it (`pimesh forget` requires that), and
        // again a while later if that forget was lost (a power cut before it was durable).
        let record = member_id(uuid);
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|j| !self.is_retired(*j))
            .filter(|j| {
                let node = self.nodes[*j].node.as_ref();
                node.is_some_and(|n| n.replica().get(&record).is_some())
            })
            .collect();
        if live.is_empty() {
            return;
        }
        let j = live[self.retirement.rng.below(live.len() as u64) as usize];
        let now = self.now(j);
        if let Some(node) = self.nodes[j].node.as_mut() {
            let deleted = vec![(crate::model::DELETED.into(), true.into())];
            node.record(&record, deleted, false, now);
            self.retirement.forget_again_at = self.step + FORGET_AGAIN;
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
