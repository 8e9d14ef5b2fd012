//! The node's durability bookkeeping: our own updates wait for the store before they leave
//! on the live stream, and while some wait, the version vector and sync answers peers get
//! stop below them ([`Node::durable_upto`], [`Node::durable_delta`]).

use super::node::{Msg, Node, Send};
use super::proto::{Batch, BATCH};
use crate::model::ObjectId;
use crate::replica::{Register, Update, VersionVector};
use std::collections::HashMap;

/// Origins of updates held unverified that a heartbeat's `above` shows, at most.
pub const HELD_ORIGINS_SHOWN: usize = 64;

impl Node {
    /// The store made everything asked of it so far durable: our updates may leave.
    pub fn durable(&mut self) {
        self.durable_upto(u64::MAX);
    }

    /// The store made our updates up to `seq` durable (an fsync that began when that was the
    /// last one; more may have come since): those may leave.
    pub fn durable_upto(&mut self, seq: u64) {
        let n = self.unsaved.iter().take_while(|u| u.seq <= seq).count();
        self.outbox.extend(self.unsaved.drain(..n));
        if self.unsaved.is_empty() {
            // Fresh, not cleared: a burst (the 10,000 objects of a config at start) would
            // otherwise keep its capacity, tens of MiB, for the life of the process.
            self.unsaved = Vec::new();
            self.shadows = HashMap::new();
            return;
        }
        let settled: Vec<(ObjectId, String)> = self
            .shadows
            .keys()
            .filter(|(object, prop)| {
                let current = self.replica.get(object).and_then(|o| o.props.get(prop));
                !current.is_some_and(|r| self.is_unsaved(r))
            })
            .cloned()
            .collect();
        for key in settled {
            self.shadows.remove(&key);
        }
    }

    /// A peer's update `u` that lost to one of our updates not yet durable is what that
    /// register holds durably here, as far as a peer asking for it goes (its origin holds it
    /// durably): when newer than the shadow, it becomes the shadow, so a sync answered
    /// meanwhile carries it. Without this, the sync sent the older shadow and a version
    /// vector covering `u`, and the asking peer never got `u` (the simulator's seed 2871).
    pub(super) fn shadow_remote(&mut self, u: &Update) {
        if self.shadows.is_empty() {
            return;
        }
        let key = (u.object.clone(), u.prop.clone());
        if let Some(shadow) = self.shadows.get_mut(&key) {
            if shadow.as_ref().is_none_or(|r| r.loses_to(u)) {
                *shadow = Some(Register {
                    value: u.value.clone(),
                    stamp: u.stamp,
                    seq: u.seq,
                    sig: u.sig,
                });
            }
        }
    }

    /// The seq of our last update not yet durable, if any.
    pub fn last_unsaved(&self) -> Option<u64> {
        self.unsaved.last().map(|u| u.seq)
    }

    /// Our updates up to this seq are durable.
    pub fn durable_seq(&self) -> u64 {
        match self.unsaved.first() {
            Some(u) => u.seq.saturating_sub(1),
            None => self
                .replica
                .version_vector()
                .get(&self.uuid)
                .copied()
                .unwrap_or(0),
        }
    }

    /// Whether `register` holds one of our own updates not yet durable.
    pub(super) fn is_unsaved(&self, register: &Register) -> bool {
        register.stamp.origin == self.uuid
            && self
                .unsaved
                .first()
                .is_some_and(|first| register.seq >= first.seq)
    }

    /// What a peer with version vector `vv` lacks of what is durable here: the replica's
    /// delta, with each register our unsaved updates wrote as it was before them. A sync
    /// answered while the disk refuses our writes must not carry them: if we crashed, the
    /// value they replaced would come back here, and the peer would never get it.
    pub(super) fn durable_delta(&self, vv: &VersionVector) -> Vec<Update> {
        let mut delta = self.replica.delta_since(vv);
        let Some(first) = self.unsaved.first().map(|u| u.seq) else {
            return delta;
        };
        // Our seqs from the first unsaved one on are all unsaved.
        delta.retain(|u| !(u.stamp.origin == self.uuid && u.seq >= first));
        let signed = self.replica.enforces_signatures();
        for ((object, prop), before) in &self.shadows {
            let current = self.replica.get(object).and_then(|o| o.props.get(prop));
            if !current.is_some_and(|r| self.is_unsaved(r)) {
                continue;
            }
            let Some(r) = before else { continue };
            let lacks = r.seq > vv.get(&r.stamp.origin).copied().unwrap_or(0);
            if lacks && (r.sig.is_some() || !signed) {
                delta.push(Update {
                    object: object.clone(),
                    prop: prop.clone(),
                    value: r.value.clone(),
                    stamp: r.stamp,
                    seq: r.seq,
                    sig: r.sig,
                });
            }
        }
        delta.sort_by_key(|u| (u.stamp.origin, u.seq));
        delta
    }

    /// Sends our durable updates on the live stream.
    pub fn stream(&mut self) {
        let outbox = std::mem::take(&mut self.outbox);
        for chunk in outbox.chunks(BATCH) {
            self.to_send.push(Send::All(Msg::Updates(Batch {
                updates: chunk.to_vec(),
            })));
        }
    }

    /// Per origin whose updates we hold past a gap, the highest held, for our heartbeat;
    /// updates held unverified count too, for at most [`HELD_ORIGINS_SHOWN`] origins (they
    /// may be forged), so an instance whose store was lost learns we hold some of its own
    /// (see `answer_sync`). Our own origin is left out: peers learn ours from our version
    /// vector.
    pub fn shareable_above_gaps(&self) -> VersionVector {
        let mut above = self.replica.above_gaps();
        let vv = self.replica.version_vector();
        for u in &self.held {
            let origin = u.stamp.origin;
            if u.seq <= vv.get(&origin).copied().unwrap_or(0)
                || (!above.contains_key(&origin) && above.len() >= HELD_ORIGINS_SHOWN)
            {
                continue;
            }
            let top = above.entry(origin).or_default();
            *top = (*top).max(u.seq);
        }
        above.remove(&self.uuid);
        above
    }

    /// Our version vector as peers may see it: our own entry stops below the first of our
    /// updates not yet durable.
    pub fn shareable_version_vector(&self) -> VersionVector {
        let mut vv = self.replica.version_vector().clone();
        if let Some(first) = self.unsaved.iter().map(|u| u.seq).min() {
            let durable = first.saturating_sub(1);
            vv.entry(self.uuid).and_modify(|s| *s = (*s).min(durable));
        }
        vv
    }
}
