//! Applying a peer's updates: admit, check the signature, hold what waits for a signer,
//! and ask the store for what was taken.

use super::node::{Node, Now, Persist, Received, MAX_HELD};
use super::proto::PAGE;
use super::reconcile::claim_prop;
use crate::model::{self, ObjectId, Value};
use crate::ratelimit::warn_limited;
use crate::replica::Update;
use uuid::Uuid;

impl Node {
    /// The updates an answer to our forwarded command carries: only the executor's own, and
    /// no more than a page (a gap they open is filled by its live stream).
    pub fn receive_answer(&mut self, from: Uuid, updates: Vec<Update>, now: Now) {
        let own: Vec<_> = updates
            .into_iter()
            .filter(|u| u.stamp.origin == from)
            .take(PAGE)
            .collect();
        self.apply_remote(&own, now);
    }

    /// Applies updates from a peer (live stream, sync page, answer): admit, check the
    /// signature, persist, apply, mark what changed. An update the replica refuses is logged
    /// with its claimed origin and neither stored nor applied. One signed by a member whose
    /// record has not arrived yet (pages come in origin order, records are written by other
    /// origins) is held, a bounded number, and tried again whenever a member's key becomes
    /// known.
    pub fn apply_remote(&mut self, updates: &[Update], now: Now) -> Received {
        let mut received = Received::default();
        if updates.is_empty() {
            return received;
        }
        let known = self.replica.known_members();
        let mut admitted = Vec::with_capacity(updates.len());
        for u in updates {
            self.apply_one(u, now, &mut admitted, &mut received);
        }
        let mut learned = self.replica.known_members() > known;
        while learned && !self.held.is_empty() {
            let known = self.replica.known_members();
            for u in std::mem::take(&mut self.held) {
                self.apply_one(&u, now, &mut admitted, &mut received);
            }
            learned = self.replica.known_members() > known;
        }
        let deleted: Vec<ObjectId> = admitted
            .iter()
            .filter(|u| u.prop == model::DELETED && u.value == Value::Bool(true))
            .map(|u| u.object.clone())
            .collect();
        if !admitted.is_empty() {
            self.to_store.push(Persist {
                updates: admitted,
                own: false,
            });
        }
        self.keep_claimed(deleted, now);
        received
    }

    /// An object we claim stays in the house. A peer deletes an object when it leaves that
    /// peer's config and it sees no other claim; ours may not have reached it yet (a
    /// partition, or both configs changed at once). The object is restored at once, with a
    /// newer stamp than the deletion, so every replica ends up holding it.
    fn keep_claimed(&mut self, deleted: Vec<ObjectId>, now: Now) {
        if self.replica.is_retired(self.uuid) {
            return;
        }
        let claim = claim_prop(self.uuid);
        for id in deleted {
            let ours = self
                .replica
                .get(&id)
                .is_some_and(|o| o.is_deleted() && o.value(&claim) == Some(&Value::Bool(true)));
            if ours {
                warn_limited!(self.warns, "claimed-deleted", object = %id, "a peer deleted an object this instance's config declares; restoring it");
                self.record(&id, vec![(model::DELETED.into(), false.into())], false, now);
            }
        }
    }

    /// [`Node::apply_remote`] for one update.
    pub(super) fn apply_one(
        &mut self,
        u: &Update,
        now: Now,
        admitted: &mut Vec<Update>,
        received: &mut Received,
    ) {
        let applied = match self.replica.apply_remote(u, now.wall_ms) {
            Ok(applied) => applied,
            Err(e) => {
                received.refused.insert((u.stamp.origin, u.seq));
                if e.awaits_signer() && self.held.len() < MAX_HELD {
                    self.held.push(u.clone());
                } else {
                    warn_limited!(self.warns, "refused-update", origin = %u.stamp.origin, object = %u.object, seq = u.seq, error = %e, "refusing a replicated update");
                }
                return;
            }
        };
        received.refused.remove(&(u.stamp.origin, u.seq));
        admitted.push(u.clone());
        if !applied.changed {
            self.shadow_remote(u);
        }
        if applied.changed {
            self.dirty.insert(u.object.clone());
            if let Some(by) = u.prop.strip_prefix(model::CLAIM_PREFIX) {
                if u.value == Value::Bool(true) {
                    if let Ok(by) = Uuid::parse_str(by) {
                        self.claims.push((u.object.clone(), by));
                    }
                }
            }
        }
        if let Some(gap) = applied.gap {
            received.gaps.insert(gap.origin);
        }
    }
}
