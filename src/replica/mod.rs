//! The replicated store: every instance's complete copy of the house.
//!
//! Each property of each object is a last-writer-wins register stamped by the hybrid logical
//! clock ([`crate::clock`]). Applying the same set of [`Update`]s in any order, with any
//! duplicates, gives every replica the same registers: the winner of a register is the update
//! with the highest stamp, a total order that does not depend on arrival. Deletion is a
//! tombstone (`deleted = true`), never a removal, so a late, older write cannot bring a deleted
//! object back; re-creating it is a newer write of `deleted = false`.
//!
//! This module does no I/O: wall time comes in as an argument and results come back as
//! values, so all of it is tested with plain unit tests. [`log`] persists it.
//!
//! # Sequence numbers and anti-entropy
//!
//! Each origin also numbers its own updates 1, 2, 3, ... (`seq`). The version vector says, per
//! origin, up to which seq this replica holds everything; a jump ahead is still applied (LWW
//! is safe in any order) but reported as a [`Gap`] so the mesh can ask for a resend.
//!
//! A replica that is behind catches up with [`Replica::delta_since`] and
//! [`Replica::merge_version_vector`]. Why that is enough even though overwritten updates are
//! gone for good: call an update `(o, s)` *reflected* in a replica when the replica's register
//! for that update's property holds a stamp at least as high as the update's. The invariant is
//!
//! > (I) every `(o, s)` with `s <= vv[o]` is reflected.
//!
//! `apply` keeps (I): the applied update is reflected afterwards, and a register's stamp never
//! decreases, so what was reflected stays reflected. Now A sends its vector `vv_A`; peer B
//! answers with `D = B.delta_since(vv_A)` and `vv_B`, **both taken at the same moment**. A
//! applies `D`, then calls `merge_version_vector(vv_B)`. Take any `(o, s)` with
//! `s <= vv_B[o]`. By (I) on B, B's register for its property holds a stamp `t >= ` its
//! stamp, written by some update `(o', s')`. If `s' <= vv_A[o']`, then by (I) on A, A's
//! register already holds a stamp `>= t`. Otherwise the register is in `D`, and applying it
//! gives A a stamp `>= t`. Either way `(o, s)` is reflected in A, so raising `vv_A` to `vv_B`
//! keeps (I). An overwritten update needs no copy of its own: the register that beat it
//! carries a larger stamp and is either sent or already held.

mod admit;
#[doc(hidden)]
pub mod fuzzing;
pub mod log;
mod props;
mod record;
mod seqs;
mod snapshot;
#[cfg(test)]
mod tests;
pub mod trust;
#[cfg(test)]
mod vector_tests;

pub use admit::{
    Refused, MAX_OBJECTS, MAX_ORIGINS, MAX_PROPS, MAX_PROP_LEN, MAX_SEQ, MAX_TEXT_LEN,
};
pub use log::{CompactionJob, Store, StoreError, SyncTicket};
pub use props::Props;
pub(crate) use snapshot::sync_dir;
pub use trust::Signature;

use crate::clock::{Hlc, Stamp};
use crate::model::{ObjectId, Value, DELETED};
use seqs::Seqs;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use uuid::Uuid;

/// One write of one property: what replicates between instances and what the log stores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// The object written.
    pub object: ObjectId,
    /// The property written.
    pub prop: String,
    /// The new value.
    pub value: Value,
    /// When it was written; decides which write wins. `stamp.origin` is the writer.
    pub stamp: Stamp,
    /// The origin's own sequence number (1, 2, 3, ... over all updates that origin ever made);
    /// lets every replica notice a lost message.
    pub seq: u64,
    /// The origin's signature over all of the above (see [`trust`]); absent only in stores
    /// written before signatures existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<Signature>,
}

/// The winning write of one property, kept with its stamp and seq so it can be compared with
/// later writes and sent on to peers that lack it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// The current value.
    pub value: Value,
    /// The stamp of the write that set it.
    pub stamp: Stamp,
    /// The seq of that write within its origin, so anti-entropy knows who has it.
    pub seq: u64,
    /// The writer's signature, sent on with the register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<Signature>,
}

impl Register {
    /// Whether `update` beats this register: a higher stamp wins. At an equal wall time and
    /// counter a signed write beats an unsigned one (how a store from before signatures is
    /// adopted, see [`trust`]), then the origin decides as in the stamp's order. Equal stamps
    /// only come from forged or corrupt updates; the value (then the seq) still settles them
    /// so every replica agrees.
    pub fn loses_to(&self, update: &Update) -> bool {
        let key = |s: &Stamp, signed: bool| (s.wall_ms, s.counter, signed, s.origin);
        let theirs = key(&update.stamp, update.sig.is_some());
        match theirs.cmp(&key(&self.stamp, self.sig.is_some())) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => {
                (update.value.tie_break_key(), update.seq) > (self.value.tie_break_key(), self.seq)
            }
        }
    }
}

/// One thing in the house, as the set of its property registers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Every property ever written, by name, including the `deleted` tombstone.
    pub props: Props,
}

impl Object {
    /// The current value of `prop`.
    pub fn value(&self, prop: &str) -> Option<&Value> {
        self.props.get(prop).map(|r| &r.value)
    }

    /// The current value of `prop` if it is text.
    pub fn text(&self, prop: &str) -> Option<&str> {
        self.value(prop).and_then(Value::as_text)
    }

    /// The current value of `prop` if it is a number.
    pub fn number(&self, prop: &str) -> Option<f64> {
        self.value(prop).and_then(Value::as_number)
    }

    /// Whether the object is deleted: its `deleted` property is `true`.
    pub fn is_deleted(&self) -> bool {
        self.value(DELETED).and_then(Value::as_bool) == Some(true)
    }
}

/// Per origin, the highest seq up to which a replica holds every update.
pub type VersionVector = BTreeMap<Uuid, u64>;

/// What applying one update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The winning value of the register changed, so listeners should hear about it.
    pub changed: bool,
    /// Set while the update's origin has seqs missing below the highest one received, so the
    /// mesh can ask for `have + 1 ..= got` again.
    pub gap: Option<Gap>,
}

/// Updates of one origin missing between what is held contiguously and what has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The origin whose updates are missing.
    pub origin: Uuid,
    /// Every seq up to this one is held.
    pub have: u64,
    /// The highest seq received; some seqs between `have` and it are missing.
    pub got: u64,
}

/// One instance's copy of the house: all objects, the clock and the sequence bookkeeping.
///
/// One owner at a time: local writes go `prepare` → persist → `apply`, with nothing else
/// applied in between by another caller that could take the same seqs.
#[derive(Clone, Debug)]
pub struct Replica {
    /// This instance; the origin of the updates `prepare` makes.
    origin: Uuid,
    /// Stamps local writes after everything applied so far.
    clock: Hlc,
    /// Every object ever written, tombstoned ones included.
    objects: BTreeMap<ObjectId, Object>,
    /// Which seqs of which origin are held.
    seqs: Seqs,
    /// Number of registers over all objects, so the store can tell when its log is bloated.
    registers: usize,
    /// How far ahead of our wall clock a remote stamp may be (see [`admit`]).
    max_ahead_ms: u64,
    /// Signs our updates; while set, remote updates must be signed (see [`trust`]).
    signer: Option<trust::Signer>,
    /// Every member key known, from member records applied (and our own).
    keys: std::collections::HashMap<Uuid, ed25519_dalek::VerifyingKey>,
}

impl Replica {
    /// An empty replica for the instance `origin`.
    pub fn new(origin: Uuid) -> Self {
        Replica {
            origin,
            clock: Hlc::new(origin),
            objects: BTreeMap::new(),
            seqs: Seqs::default(),
            registers: 0,
            max_ahead_ms: crate::clock::DEFAULT_MAX_AHEAD_MS,
            signer: None,
            keys: Default::default(),
        }
    }

    /// This instance's id.
    pub fn origin(&self) -> Uuid {
        self.origin
    }

    /// Prepares local writes of several properties of one object as consecutive updates (consecutive seqs,
    /// increasing stamps) WITHOUT applying them; properties whose current value is already equal are skipped
    /// (returns empty Vec if nothing changes). Two-phase on purpose: the agent persists first, then applies,
    /// so a failed disk write never leaves a hole in our own sequence.
    ///
    /// A property named twice is compared against the earlier value in the same call, so the
    /// last one given wins.
    pub fn prepare(
        &self,
        object: &ObjectId,
        props: Vec<(String, Value)>,
        wall_ms: u64,
    ) -> Vec<Update> {
        self.prepare_with(object, props, wall_ms, false)
    }

    /// [`Replica::prepare`] that writes every property even when its value is unchanged: a
    /// command's result then carries a fresh stamp, so an instance that missed an earlier
    /// change of the same value still learns the current state from it.
    pub fn prepare_touching(
        &self,
        object: &ObjectId,
        props: Vec<(String, Value)>,
        wall_ms: u64,
    ) -> Vec<Update> {
        self.prepare_with(object, props, wall_ms, true)
    }

    /// Writes of where an object *starts* (from the config): only the properties that have no
    /// register yet, stamped at the very beginning of time, so every value the mesh holds for
    /// them wins wherever the two meet, and a new or rebuilt instance never overwrites the
    /// house with its config. Between two such writes the stamp's origin decides, as always.
    pub fn prepare_initial(&self, object: &ObjectId, props: Vec<(String, Value)>) -> Vec<Update> {
        let current = self.objects.get(object);
        let mut seq = self.seqs.highest(&self.origin);
        let mut updates: Vec<Update> = Vec::new();
        for (prop, value) in props {
            let held = current.is_some_and(|o| o.props.contains_key(&prop))
                || updates.iter().any(|u| u.prop == prop);
            if held {
                continue;
            }
            seq = seq.saturating_add(1);
            let start = Stamp {
                wall_ms: 0,
                counter: 0,
                origin: self.origin,
            };
            updates.push(self.own_update(object, prop, value, start, seq));
        }
        updates
    }

    /// One of our own updates, signed when a signer is set.
    fn own_update(
        &self,
        object: &ObjectId,
        prop: String,
        value: Value,
        stamp: Stamp,
        seq: u64,
    ) -> Update {
        let mut u = Update {
            object: object.clone(),
            prop,
            value,
            stamp,
            seq,
            sig: None,
        };
        self.sign_own(&mut u);
        u
    }

    fn prepare_with(
        &self,
        object: &ObjectId,
        props: Vec<(String, Value)>,
        wall_ms: u64,
        touch: bool,
    ) -> Vec<Update> {
        let mut clock = self.clock.clone();
        let mut seq = self.seqs.highest(&self.origin);
        let current = self.objects.get(object);
        let mut updates: Vec<Update> = Vec::new();
        for (prop, value) in props {
            let now = updates
                .iter()
                .rev()
                .find(|u| u.prop == prop)
                .map(|u| &u.value)
                .or_else(|| current.and_then(|o| o.value(&prop)));
            if now == Some(&value) && !touch {
                continue;
            }
            seq = seq.saturating_add(1);
            let stamp = clock.tick(wall_ms);
            updates.push(self.own_update(object, prop, value, stamp, seq));
        }
        updates
    }

    /// Applies one update, local (from prepare) or read back from our disk, idempotently; a
    /// remote one goes through [`Replica::apply_remote`]. Observes its stamp into the HLC.
    /// LWW: higher stamp wins; equal stamp (only from a forged/corrupt update) breaks on Value::tie_break_key.
    ///
    /// An update with seq 0 is never issued by `prepare` and would be invisible to
    /// anti-entropy, so it is ignored everywhere alike.
    pub fn apply(&mut self, u: &Update, wall_ms: u64) -> Applied {
        if u.seq == 0 {
            return Applied {
                changed: false,
                gap: None,
            };
        }
        self.clock.observe(&u.stamp, wall_ms);
        let gap = self.seqs.record(u.stamp.origin, u.seq);
        let object = self.objects.entry(u.object.clone()).or_default();
        let fresh = Register {
            value: u.value.clone(),
            stamp: u.stamp,
            seq: u.seq,
            sig: u.sig,
        };
        let changed = match object.props.get_mut(&u.prop) {
            None => {
                object.props.insert(&u.prop, fresh);
                self.registers += 1;
                true
            }
            Some(register) if register.loses_to(u) => {
                let changed = register.value != u.value;
                *register = fresh;
                changed
            }
            Some(_) => false,
        };
        self.learn_key(u);
        Applied { changed, gap }
    }

    /// The object `id`, tombstoned or not.
    /// The newest stamp this replica has issued or seen: what a message it sends carries,
    /// so the receiver's next changes are ordered after it.
    pub fn clock(&self) -> Stamp {
        self.clock.last()
    }

    pub fn get(&self, id: &ObjectId) -> Option<&Object> {
        self.objects.get(id)
    }

    /// All objects including tombstoned ones (callers filter with is_deleted).
    pub fn objects(&self) -> impl Iterator<Item = (&ObjectId, &Object)> {
        self.objects.iter()
    }

    /// Number of objects, tombstoned ones included.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Per origin, the highest seq s such that every update 1..=s of that origin is applied or covered.
    pub fn version_vector(&self) -> &VersionVector {
        &self.seqs.version_vector
    }

    /// Every update a peer with version vector `vv` may lack: each register whose (origin, seq) is not covered by vv.
    /// While signatures are enforced, unsigned registers are left out: no peer would take
    /// them (there are some only in a store from before signatures, until adopted).
    ///
    /// Sorted by origin then seq, so the peer's vector advances as it applies them. Send it
    /// together with this replica's [`version_vector`](Self::version_vector) read at the same
    /// moment (see the module doc for why that pair is enough).
    pub fn delta_since(&self, vv: &VersionVector) -> Vec<Update> {
        let signed = self.enforces_signatures();
        let mut delta: Vec<Update> = self
            .objects
            .iter()
            .flat_map(|(id, object)| {
                object
                    .props
                    .iter()
                    .filter(|(_, r)| r.seq > vv.get(&r.stamp.origin).copied().unwrap_or(0))
                    .filter(move |(_, r)| r.sig.is_some() || !signed)
                    .map(move |(prop, r)| Update {
                        object: id.clone(),
                        prop: prop.to_owned(),
                        value: r.value.clone(),
                        stamp: r.stamp,
                        seq: r.seq,
                        sig: r.sig,
                    })
            })
            .collect();
        delta.sort_by_key(|u| (u.stamp.origin, u.seq));
        delta
    }

    /// After applying a peer's delta_since(our vv), we hold everything that peer's vv covers: raise ours to it.
    pub fn merge_version_vector(&mut self, peer: &VersionVector) {
        self.seqs.raise(peer);
    }

    /// The highest seq of our own held, contiguous or not.
    pub fn own_highest(&self) -> u64 {
        self.seqs.highest(&self.origin)
    }

    /// Per origin whose updates we hold past a gap, the highest held: what a version vector
    /// (contiguous marks) does not show.
    pub fn above_gaps(&self) -> VersionVector {
        self.seqs
            .ahead
            .iter()
            .filter_map(|(origin, set)| {
                let top = set.last().copied()?;
                (top > self.seqs.contiguous(origin)).then_some((*origin, top))
            })
            .collect()
    }

    /// Declares that we hold every seq of our own up to the highest held, and at least up to
    /// `at_least`: what no peer sent back after a lost store is gone or written over
    /// everywhere. Without this our version vector stopped below such a hole for good, and no
    /// peer's anti-entropy looked at our updates past it. Returns the mark.
    pub fn close_own_gaps(&mut self, at_least: u64) -> u64 {
        let mark = self.own_highest().max(at_least);
        self.seqs.raise(&VersionVector::from([(self.origin, mark)]));
        mark
    }

    /// Number of registers over all objects.
    pub(crate) fn register_count(&self) -> usize {
        self.registers
    }
}
