//! One instance's side of the replication protocol, as a state machine without I/O.
//!
//! A [`Node`] owns the replica and everything replication needs to remember: our own updates
//! waiting for the disk and then for the live stream, syncs we run and answer, what peers
//! announced, updates held for a signer we do not know yet. It has no clock, no socket and
//! no file: every input comes with [`Now`], and what it wants done comes out as requests to
//! the store ([`Node::take_store`]) and messages to send ([`Node::take_sends`]). The agent
//! (`agent/`) moves those bytes; the simulator (`mesh/sim/`) drives many nodes through lost,
//! duplicated and reordered messages, partitions, crashes and clock jumps in memory.
//!
//! The order of a local change: [`Node::record`] applies it and asks the store to write it;
//! once the store says the write is durable ([`Node::durable`]) it may leave
//! ([`Node::stream`]). A crash before that loses it on this instance only, and a sequence
//! number a peer holds is never reused.

use super::proto::{self, Batch, Beat, SyncPage, SyncReq, BATCH, PAGE};
use crate::model::{ObjectId, Value};
use crate::ratelimit::WarnLimit;
use crate::replica::{Register, Replica, Update, VersionVector, MAX_SEQ};
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;
use uuid::Uuid;

use super::fence::{Deferred, Fence};
pub use super::sync::SYNC_TIMEOUT;
use super::sync::{Serving, SyncState};

/// Updates held until their signer's member record arrives, at most.
pub const MAX_HELD: usize = 16_384;

/// The time of an input: monotonic for timeouts, the wall clock for stamps.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic time (never jumps).
    pub at: Instant,
    /// Wall-clock milliseconds since the Unix epoch (may jump).
    pub wall_ms: u64,
}

impl Now {
    /// The real time of this machine.
    pub fn real() -> Self {
        Now {
            at: Instant::now(),
            wall_ms: crate::clock::now_ms(),
        }
    }
}

/// A replication message between two instances.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    /// "Alive, and this is what I hold."
    Beat(Beat),
    /// Our own updates, on the live stream.
    Updates(Batch),
    /// "Send me what I lack", to one peer.
    SyncReq(SyncReq),
    /// One page of the answer to a sync request, for its requester.
    SyncPage(SyncPage),
}

/// Where a message goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Send {
    /// To every peer (published on our own broker).
    All(Msg),
    /// To one peer: a sync request goes on its broker, a page on ours under its name.
    To(Uuid, Msg),
}

/// Updates to write to the store.
#[derive(Clone, Debug, PartialEq)]
pub struct Persist {
    /// The updates, in order.
    pub updates: Vec<Update>,
    /// Our own: they may leave only once durable ([`Node::durable`]). A peer's are written
    /// with the next fsync; their origin holds them durably meanwhile.
    pub own: bool,
}

/// What applying a peer's updates found.
#[derive(Debug, Default)]
pub struct Received {
    /// Origins with a gap in their sequence, for a sync to repair.
    pub gaps: BTreeSet<Uuid>,
    /// The (origin, seq) of every update refused or still held: a sync must not claim to
    /// hold them.
    pub refused: BTreeSet<(Uuid, u64)>,
}

/// One instance's replication state.
#[derive(Debug)]
pub struct Node {
    /// This instance.
    pub(super) uuid: Uuid,
    /// Its name, on heartbeats.
    name: String,
    /// The replicated house.
    pub(super) replica: Replica,
    /// Our own updates the store has not made durable yet.
    pub(super) unsaved: Vec<Update>,
    /// Our own updates, durable, not yet on the live stream.
    pub(super) outbox: Vec<Update>,
    /// For each register our unsaved updates wrote, the register as it was durable before
    /// (none: there was none), so a sync answered meanwhile sends what is durable.
    pub(super) shadows: HashMap<(ObjectId, String), Option<Register>>,
    /// Syncs in progress, by the peer answering them.
    pub(super) syncs: HashMap<Uuid, SyncState>,
    /// Sync rounds we are answering, by requester.
    pub(super) serving: HashMap<Uuid, Serving>,
    /// Counter giving every sync its own round number.
    pub(super) rounds: u64,
    /// Each peer's count of its own updates, from its heartbeat: how far a sync page may
    /// raise our version vector for that origin.
    pub(super) announced: VersionVector,
    /// Claims of a peer's last sync page we refused, by peer, so its heartbeats showing the
    /// same claims do not start a sync after every beat.
    pub(super) unjustified: HashMap<Uuid, VersionVector>,
    /// Remote updates signed by a member whose record has not arrived yet.
    pub(super) held: Vec<Update>,
    /// Objects whose public state changed since [`Node::take_dirty`].
    pub(super) dirty: BTreeSet<ObjectId>,
    /// Claims by other instances that changed, for the agent's conflict check.
    pub(super) claims: Vec<(ObjectId, Uuid)>,
    /// Requests to the store, in order.
    pub(super) to_store: Vec<Persist>,
    /// Messages to send, in order.
    pub(super) to_send: Vec<Send>,
    /// Rate limits of the warnings peers can trigger.
    pub(super) warns: WarnLimit,
    /// Set while our own updates lost by the store may still be held by peers.
    pub(super) fence: Option<Fence>,
    /// We are connected to the shared broker; our heartbeats say so.
    shared: bool,
}

impl Node {
    /// A node for instance `uuid` over `replica` (loaded from the store, or new).
    pub fn new(uuid: Uuid, name: &str, replica: Replica) -> Self {
        Node {
            uuid,
            name: name.to_string(),
            replica,
            unsaved: Vec::new(),
            outbox: Vec::new(),
            shadows: HashMap::new(),
            syncs: HashMap::new(),
            serving: HashMap::new(),
            rounds: 0,
            announced: VersionVector::new(),
            unjustified: HashMap::new(),
            held: Vec::new(),
            dirty: BTreeSet::new(),
            claims: Vec::new(),
            to_store: Vec::new(),
            to_send: Vec::new(),
            warns: WarnLimit::default(),
            fence: None,
            shared: false,
        }
    }

    /// Whether we are connected to the shared broker, as our heartbeats tell peers.
    pub fn set_shared(&mut self, connected: bool) {
        self.shared = connected;
    }

    /// Whether we are connected to the shared broker.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// This instance.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// The replicated house.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The replica, for set-up (signer, clock bound) and the store's compaction.
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// Requests to the store since the last call, in order.
    pub fn take_store(&mut self) -> Vec<Persist> {
        std::mem::take(&mut self.to_store)
    }

    /// Messages to send since the last call, in order.
    pub fn take_sends(&mut self) -> Vec<Send> {
        std::mem::take(&mut self.to_send)
    }

    /// Objects whose public state changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<ObjectId> {
        std::mem::take(&mut self.dirty)
    }

    /// Marks objects for republishing (an instance came or went: their availability).
    pub fn mark_dirty(&mut self, ids: impl IntoIterator<Item = ObjectId>) {
        self.dirty.extend(ids);
    }

    /// Claims of other instances seen changing since the last call.
    pub fn take_claims(&mut self) -> Vec<(ObjectId, Uuid)> {
        std::mem::take(&mut self.claims)
    }

    /// Some of our own updates wait for the store.
    pub fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Our own durable updates not yet on the live stream (an answer carries them).
    pub fn outbox(&self) -> &[Update] {
        &self.outbox
    }

    /// Remote updates held for a signer not known yet.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Records local changes of one object: applies them and asks the store to write them.
    /// Returns the changes automations should see (none: nothing changed). With `touch`,
    /// unchanged values are written again with a fresh stamp (a command's result: the
    /// instance that sent it is current with the answer), but only real changes are returned.
    pub fn record(
        &mut self,
        id: &ObjectId,
        props: Vec<(String, Value)>,
        touch: bool,
        now: Now,
    ) -> Option<Vec<Update>> {
        if self.fence.is_some() {
            let id = id.clone();
            self.defer(Deferred::Record { id, props, touch });
            return None;
        }
        let updates = if touch {
            self.replica.prepare_touching(id, props, now.wall_ms)
        } else {
            self.replica.prepare(id, props, now.wall_ms)
        };
        if updates.is_empty() {
            return None;
        }
        // Touched updates may change nothing: each is compared with the one before it, which
        // may be earlier in this same call.
        let changes: Vec<Update> = if touch {
            let current = self.replica.get(id);
            updates
                .iter()
                .enumerate()
                .filter(|(i, u)| {
                    let before = updates[..*i]
                        .iter()
                        .rev()
                        .find(|p| p.prop == u.prop)
                        .map(|p| &p.value)
                        .or_else(|| current.and_then(|o| o.value(&u.prop)));
                    before != Some(&u.value)
                })
                .map(|(_, u)| u.clone())
                .collect()
        } else {
            updates.clone()
        };
        self.record_prepared(id, updates, now);
        Some(changes)
    }

    /// Records where an object starts, from the config: only properties it has no value for
    /// yet, and so that any value the mesh holds wins ([`Replica::prepare_initial`]).
    pub fn record_initial(&mut self, id: &ObjectId, props: Vec<(String, Value)>, now: Now) {
        if self.fence.is_some() {
            let id = id.clone();
            self.defer(Deferred::Initial { id, props });
            return;
        }
        let updates = self.replica.prepare_initial(id, props);
        self.record_prepared(id, updates, now);
    }

    /// Writes again, signed, what the store kept from before signatures existed (see
    /// [`crate::replica::trust`]); returns how many registers that was.
    pub fn adopt_unsigned(&mut self, now: Now) -> usize {
        if self.defer(Deferred::Adopt) {
            return 0;
        }
        let updates = self.replica.adopt_unsigned();
        for group in updates.chunk_by(|a, b| a.object == b.object) {
            let id = group[0].object.clone();
            self.record_prepared(&id, group.to_vec(), now);
        }
        updates.len()
    }

    /// Applies prepared local updates of `id` and asks the store for them.
    fn record_prepared(&mut self, id: &ObjectId, updates: Vec<Update>, now: Now) {
        if updates.is_empty() {
            return;
        }
        self.to_store.push(Persist {
            updates: updates.clone(),
            own: true,
        });
        for u in &updates {
            let current = self
                .replica
                .get(&u.object)
                .and_then(|o| o.props.get(&u.prop));
            if !current.is_some_and(|r| self.is_unsaved(r)) {
                self.shadows
                    .insert((u.object.clone(), u.prop.clone()), current.cloned());
            }
            self.replica.apply(u, now.wall_ms);
        }
        self.dirty.insert(id.clone());
        self.unsaved.extend(updates);
    }

    /// A heartbeat is due: say we are alive and what we hold; drop idle syncs.
    pub fn beat(&mut self, now: Now) {
        self.to_send.push(Send::All(Msg::Beat(Beat {
            name: self.name.clone(),
            vv: self.shareable_version_vector(),
            shared: self.shared,
            above: self.shareable_above_gaps(),
        })));
        self.expire_syncs(now);
        self.lift_if_caught_up(now);
        self.expire_fence(now);
    }

    /// A message from peer `from`. The caller checked that it came on `from`'s topics (the
    /// broker's rules make sure only `from` can write them).
    pub fn receive(&mut self, from: Uuid, msg: Msg, now: Now) {
        if from == self.uuid {
            return;
        }
        match msg {
            Msg::Beat(beat) => self.on_beat(from, &beat, now),
            Msg::Updates(batch) => {
                if proto::check_count("an update batch", &batch.updates, BATCH).is_err() {
                    crate::ratelimit::warn_limited!(self.warns, "long-batch", peer = %from, count = batch.updates.len(), "ignoring an update batch over the bound");
                    return;
                }
                let (own, forged): (Vec<_>, Vec<_>) = batch
                    .updates
                    .into_iter()
                    .partition(|u| u.stamp.origin == from);
                if !forged.is_empty() {
                    crate::ratelimit::warn_limited!(self.warns, "foreign-origin", peer = %from, count = forged.len(), "dropping updates a peer sent for another origin");
                }
                if !self.apply_remote(&own, now).gaps.is_empty() && !self.syncs.contains_key(&from)
                {
                    tracing::info!(peer = %from, "gap in the live stream (messages lost); syncing");
                    self.start_sync(from, now);
                }
            }
            Msg::SyncReq(req) if req.to == self.uuid => self.answer_sync(from, req, now),
            Msg::SyncReq(_) => {}
            Msg::SyncPage(page) => {
                if proto::check_count("a sync page", &page.updates, PAGE).is_err() {
                    crate::ratelimit::warn_limited!(self.warns, "long-page", peer = %from, count = page.updates.len(), "ignoring a sync page over the bound");
                    return;
                }
                self.on_sync_page(from, page, now);
            }
        }
    }

    /// A peer's heartbeat: note what it announces of its own, and sync from it when it
    /// holds more than we do (anti-entropy).
    fn on_beat(&mut self, from: Uuid, beat: &Beat, now: Now) {
        if let Some(&own) = beat.vv.get(&from).filter(|s| **s <= MAX_SEQ) {
            if self.announced.len() < crate::replica::MAX_ORIGINS
                || self.announced.contains_key(&from)
            {
                self.announced.insert(from, own);
            }
        }
        let held = |vv: &crate::replica::VersionVector| vv.get(&self.uuid).copied().unwrap_or(0);
        let ours = held(&beat.vv).max(held(&beat.above));
        if self.heard_while_fenced(from, ours, now) {
            self.start_sync(from, now);
        }
        // Claims of this peer we already refused start no new sync.
        let refused = self.unjustified.get(&from);
        let ours = self.replica.version_vector();
        let ahead = beat.vv.iter().any(|(origin, seq)| {
            *seq > ours.get(origin).copied().unwrap_or(0)
                && *seq <= MAX_SEQ
                && refused.and_then(|r| r.get(origin)) != Some(seq)
        });
        if ahead {
            self.start_sync(from, now);
        }
    }

    /// Our link to `peer` is ready to carry a sync: catch up from it.
    pub fn link_ready(&mut self, peer: Uuid, now: Now) {
        self.start_sync(peer, now);
    }

    /// `peer` went offline: its sync will not finish.
    pub fn peer_offline(&mut self, peer: Uuid) {
        self.syncs.remove(&peer);
    }

    /// Forgets everything kept about `peer` (it was retired).
    pub fn forget_peer(&mut self, peer: Uuid) {
        self.syncs.remove(&peer);
        self.serving.remove(&peer);
        self.unjustified.remove(&peer);
    }

    /// Queues a message to send.
    pub(super) fn push_send(&mut self, send: Send) {
        self.to_send.push(send);
    }

    /// Sizes of everything that grows with input, for bound checks.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            syncs: self.syncs.len(),
            serving: self.serving.len(),
            held: self.held.len(),
            announced: self.announced.len(),
            unjustified: self.unjustified.len(),
            unsaved: self.unsaved.len(),
            outbox: self.outbox.len(),
        }
    }
}

/// Sizes of a node's growing parts (see [`Node::footprint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Syncs running.
    pub syncs: usize,
    /// Sync rounds being answered.
    pub serving: usize,
    /// Updates held for an unknown signer.
    pub held: usize,
    /// Peers whose own count we know.
    pub announced: usize,
    /// Peers whose claims we refused.
    pub unjustified: usize,
    /// Own updates waiting for the disk.
    pub unsaved: usize,
    /// Own updates waiting for the live stream.
    pub outbox: usize,
}

#[cfg(test)]
#[path = "node_tests.rs"]
pub(super) mod tests;
