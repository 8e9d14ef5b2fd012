//! The agent's side of the replica: recording local changes, applying remote ones, and
//! publishing what changed — public state on our broker, our own updates on the live stream.
//!
//! Holding is recorded per instance: each instance whose config binds an object to its
//! hardware writes its own `claim.<uuid>` property. Claims of different instances never
//! overwrite each other, so two instances configuring the same object id both see the
//! conflict instead of one silently winning.

use super::{Agent, Update};
use crate::api;
use crate::clock;
use crate::config::Config;
use crate::mesh::proto::{Batch, BATCH};
use crate::model::{self, ObjectId, Value};
use crate::mqtt::Qos;
use crate::ratelimit::warn_limited;
use crate::replica::Object;
use std::collections::BTreeSet;
use uuid::Uuid;

/// Updates held until their signer's member record arrives, at most.
const MAX_HELD: usize = 16_384;

/// What applying a peer's updates found.
#[derive(Debug, Default)]
pub(super) struct Received {
    /// Origins with a gap in their sequence, for the mesh to repair.
    pub(super) gaps: BTreeSet<Uuid>,
    /// The (origin, seq) of every update refused or still held: a sync must not claim to hold
    /// them.
    pub(super) refused: BTreeSet<(Uuid, u64)>,
}

/// The claim property of instance `uuid`.
pub fn claim_prop(uuid: Uuid) -> String {
    format!("{}{uuid}", model::CLAIM_PREFIX)
}

/// Instances currently claiming `obj` as their hardware; a retired instance's claims count
/// for nothing (`pimesh forget`), so a replacement Pi takes its objects.
pub fn claimants(replica: &crate::replica::Replica, obj: &Object) -> Vec<Uuid> {
    obj.props
        .iter()
        .filter(|(_, r)| r.value == Value::Bool(true))
        .filter_map(|(p, _)| p.strip_prefix(model::CLAIM_PREFIX))
        .filter_map(|u| Uuid::parse_str(u).ok())
        .filter(|u| !replica.is_retired(*u))
        .collect()
}

/// A hash of a retained message, to recognise our own echoes.
fn echo_hash(topic: &str, payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

impl Agent {
    /// Makes the store agree with the config about which objects this instance holds:
    /// configured objects exist and carry our claim; room, position (and a virtual object's
    /// state) are where an object starts, written so that any value the mesh already holds
    /// wins, also on a new or rebuilt instance whose store is empty; objects we claimed that
    /// left the config lose our claim and, when nobody else claims them, are deleted.
    pub(super) fn reconcile_objects(&mut self, config: &Config) {
        let mut configured = Vec::new();
        let objects = config
            .relays
            .iter()
            .map(|r| (&r.id, "relay", &r.name, &r.room, r.x, r.y))
            .chain(
                config
                    .inputs
                    .iter()
                    .map(|i| (&i.id, "input", &i.name, &i.room, i.x, i.y)),
            );
        let channels = config.serials.iter().flat_map(|s| &s.channels).map(|c| {
            let kind = super::serial::CHANNEL_KIND;
            (&c.id, kind, &c.name, &c.room, c.x, c.y)
        });
        for (id, kind, name, room, x, y) in objects.chain(channels) {
            configured.push(id.clone());
            let props: Vec<(String, Value)> = vec![
                (model::KIND.into(), kind.into()),
                (claim_prop(self.uuid), true.into()),
                (model::NAME.into(), name.as_str().into()),
                (model::DELETED.into(), false.into()),
            ];
            self.record(id, props);
            let start = vec![
                (model::ROOM.into(), room.as_str().into()),
                (model::X.into(), x.into()),
                (model::Y.into(), y.into()),
            ];
            self.record_initial(id, start);
        }
        for v in &config.virtuals {
            configured.push(v.id.clone());
            let props: Vec<(String, Value)> = vec![
                (model::KIND.into(), "virtual".into()),
                (claim_prop(self.uuid), true.into()),
                (model::NAME.into(), v.name.as_str().into()),
                (model::DELETED.into(), false.into()),
            ];
            self.record(&v.id, props);
            let start = vec![
                (model::ROOM.into(), v.room.as_str().into()),
                (model::X.into(), v.x.into()),
                (model::Y.into(), v.y.into()),
                (model::STATE.into(), model::OFF.into()),
            ];
            self.record_initial(&v.id, start);
        }
        for a in &config.automations {
            self.record(&a.id, super::automation::rule_props(a));
        }
        let gone: Vec<(ObjectId, bool)> = self
            .replica
            .objects()
            .filter(|(id, o)| {
                claimants(&self.replica, o).contains(&self.uuid) && !configured.contains(id)
            })
            .map(|(id, o)| (id.clone(), claimants(&self.replica, o).len() == 1))
            .collect();
        for (id, last_claim) in gone {
            tracing::info!(object = %id, "object no longer in the config: releasing it");
            let mut props = vec![(claim_prop(self.uuid), false.into())];
            if last_claim {
                props.push((model::DELETED.into(), true.into()));
            }
            self.record(&id, props);
        }
    }

    /// Records local changes of one object: hand them to the disk, then apply. Returns
    /// whether anything changed. The fsync comes once per event, in [`Agent::commit`]: the
    /// records are in the kernel at once (a killed process loses none), and our updates only
    /// leave for peers once they are durable, so a power cut can never make us reuse a
    /// sequence number a peer already holds. A failed disk write keeps the updates queued in
    /// the store (retried on the next write) and the change still takes effect, since the
    /// hardware already moved.
    pub(super) fn record(&mut self, id: &ObjectId, props: Vec<(String, Value)>) -> bool {
        self.record_with(id, props, false)
    }

    /// Records the result of a command: like [`Agent::record`], but unchanged values are
    /// written again with a fresh stamp. The instance that sent the command gets them with the
    /// answer, so it is current even if it missed the change that set this value before (its
    /// executor may have died right after); automations still fire only on real changes.
    pub(super) fn record_command(&mut self, id: &ObjectId, props: Vec<(String, Value)>) {
        self.record_with(id, props, true);
    }

    /// Records where an object starts, from the config: only properties it has no value for
    /// yet, and so that any value the mesh holds wins ([`crate::replica::Replica::prepare_initial`]).
    fn record_initial(&mut self, id: &ObjectId, props: Vec<(String, Value)>) {
        let updates = self.replica.prepare_initial(id, props);
        self.record_prepared(id, updates, None);
    }

    fn record_with(&mut self, id: &ObjectId, props: Vec<(String, Value)>, touch: bool) -> bool {
        let now = clock::now_ms();
        let updates = if touch {
            self.replica.prepare_touching(id, props, now)
        } else {
            self.replica.prepare(id, props, now)
        };
        if updates.is_empty() {
            return false;
        }
        // What automations see: the updates that change a value. `prepare` left out the
        // others; touched ones may not change anything, each compared with the one before it
        // (which may be earlier in this same call).
        let real_changes: Option<Vec<Update>> = touch.then(|| {
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
        });
        self.record_prepared(id, updates, real_changes)
    }

    /// Persists, applies and publishes prepared local updates of `id`; automations see
    /// `real_changes` when given, else all of them.
    fn record_prepared(
        &mut self,
        id: &ObjectId,
        updates: Vec<Update>,
        real_changes: Option<Vec<Update>>,
    ) -> bool {
        if updates.is_empty() {
            return false;
        }
        let now = clock::now_ms();
        // During start-up nothing is acknowledged yet: queue, and flush once at the end (a
        // config with thousands of objects would otherwise cost thousands of writes).
        let result = if self.running {
            self.store.write(&updates)
        } else {
            self.store.queue(&updates)
        };
        if let Err(e) = result {
            tracing::error!(error = %e, queued = self.store.pending(), "state not saved yet; will retry");
        }
        for u in &updates {
            self.replica.apply(u, now);
        }
        self.dirty.insert(id.clone());
        if self.running {
            self.trigger(real_changes.as_deref().unwrap_or(&updates));
        }
        self.unsaved.extend(updates);
        self.maybe_compact();
        true
    }

    /// Group commit, once per event: one fsync makes every change the event recorded
    /// durable; then those updates may go to peers, with the forwarded answers that waited
    /// to carry them.
    pub(super) async fn commit(&mut self) {
        if !self.unsaved.is_empty() {
            self.flush_store();
        }
        for (sender, reply) in std::mem::take(&mut self.deferred) {
            self.send_forward_reply(sender, reply).await;
        }
    }

    /// Applies updates from a peer (live stream, sync page, answer): admit, check the
    /// signature, persist, apply, mark what changed. An update the replica refuses (a stamp
    /// from the future, a bound passed, a signature that is not its origin's) is logged with
    /// its claimed origin and neither stored nor applied. One signed by a member whose record
    /// has not arrived yet (pages come in origin order, records are written by other origins)
    /// is held, a bounded number, and tried again whenever a member's key becomes known.
    pub(super) fn apply_remote(&mut self, updates: &[Update]) -> Received {
        let mut received = Received::default();
        if updates.is_empty() {
            return received;
        }
        let now = clock::now_ms();
        let known = self.replica.known_members();
        let mut admitted = Vec::with_capacity(updates.len());
        for u in updates {
            self.apply_one(u, now, &mut admitted, &mut received);
        }
        // A member record may vouch for held updates: try them again while that helps.
        let mut learned = self.replica.known_members() > known;
        while learned && !self.held.is_empty() {
            let known = self.replica.known_members();
            for u in std::mem::take(&mut self.held) {
                self.apply_one(&u, now, &mut admitted, &mut received);
            }
            learned = self.replica.known_members() > known;
        }
        // Written with the next local change or heartbeat: the origin holds these durably,
        // and a sync after a crash fetches whatever was not written yet.
        if let Err(e) = self.store.queue(&admitted) {
            tracing::error!(error = %e, "a replicated update cannot be stored; it stays in memory only");
        }
        self.maybe_compact();
        received
    }

    /// [`Agent::apply_remote`] for one update.
    fn apply_one(
        &mut self,
        u: &Update,
        now: u64,
        admitted: &mut Vec<Update>,
        received: &mut Received,
    ) {
        let applied = match self.replica.apply_remote(u, now) {
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
        if applied.changed {
            self.dirty.insert(u.object.clone());
            self.check_claim(u);
        }
        if let Some(gap) = applied.gap {
            received.gaps.insert(gap.origin);
        }
    }

    /// Writes again, signed, what the store kept from before signatures existed (see
    /// [`crate::replica::trust`]); nothing once that is done.
    pub(super) fn adopt_unsigned(&mut self) {
        let updates = self.replica.adopt_unsigned();
        if updates.is_empty() {
            return;
        }
        tracing::info!(
            registers = updates.len(),
            "signing the values kept from before signatures existed, as this instance's own"
        );
        // They come object by object; each object's go the way of any local change.
        for group in updates.chunk_by(|a, b| a.object == b.object) {
            let id = group[0].object.clone();
            self.record_prepared(&id, group.to_vec(), None);
        }
    }

    /// Our version vector as peers may see it: our own entry stops below the first of our
    /// updates not yet on disk (there are some only while the disk refuses writes).
    pub(super) fn shareable_version_vector(&self) -> crate::replica::VersionVector {
        let mut vv = self.replica.version_vector().clone();
        if let Some(first) = self.unsaved.iter().map(|u| u.seq).min() {
            let durable = first.saturating_sub(1);
            vv.entry(self.uuid).and_modify(|s| *s = (*s).min(durable));
        }
        vv
    }

    /// Reports another instance claiming an object whose hardware is ours.
    fn check_claim(&mut self, u: &Update) {
        let Some(other) = u.prop.strip_prefix(model::CLAIM_PREFIX) else {
            return;
        };
        let ours = self.relays.contains_key(&u.object)
            || self.channels.contains_key(&u.object)
            || self.inputs.iter().any(|(id, _)| *id == u.object);
        if ours && u.value == Value::Bool(true) && other != self.uuid.to_string() {
            let name = Uuid::parse_str(other)
                .ok()
                .and_then(|o| self.peers.name_of(o))
                .unwrap_or(other)
                .to_string();
            if let Some(suppressed) = self
                .warns
                .allow("claim-conflict", std::time::Instant::now())
            {
                tracing::error!(suppressed, object = %u.object, other = %name, "object id conflict: {} is configured on this instance ({}) and on {name}; commands for it are refused until one config drops it", u.object, self.name);
            }
        }
    }

    /// Compacts the store's log when it has grown well past the live state.
    fn maybe_compact(&mut self) {
        if self.store.should_compact(&self.replica) {
            if let Err(e) = self.store.compact(&self.replica) {
                tracing::error!(error = %e, "store compaction failed; the log keeps growing until it succeeds");
            }
        }
    }

    /// Retries queued store writes; once they are on disk, our updates may go to peers.
    pub(super) fn flush_store(&mut self) {
        match self.store.flush() {
            Ok(()) => self.outbox.append(&mut self.unsaved),
            Err(e) => {
                tracing::error!(error = %e, queued = self.store.pending(), "state not saved")
            }
        }
    }

    /// Sends what the last event produced: our updates on the live stream, then the retained
    /// public state of every object that changed.
    pub(super) async fn publish_pending(&mut self) {
        self.publish_updates().await;
        self.publish_dirty().await;
    }

    /// Sends our durable updates on the live stream.
    async fn publish_updates(&mut self) {
        if !self.outbox.is_empty() {
            let topic = self.topics.updates(self.uuid);
            let outbox = std::mem::take(&mut self.outbox);
            for chunk in outbox.chunks(BATCH) {
                let batch = Batch {
                    updates: chunk.to_vec(),
                };
                let payload = serde_json::to_vec(&batch).unwrap_or_default();
                if let Err(e) = self
                    .link
                    .publish(&topic, Qos::AtLeastOnce, false, payload)
                    .await
                {
                    tracing::warn!(error = %e, "could not send updates to the mesh; anti-entropy will");
                }
            }
        }
    }

    /// Publishes the retained public state of every object that changed.
    pub(super) async fn publish_dirty(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            if id.is_system() {
                // Members and users are never public; they change who the door lets in.
                self.keys_dirty = true;
                if let Some(member) = crate::replica::trust::member_of(&id) {
                    if self.replica.is_retired(member) && self.peers.name_of(member).is_some() {
                        tracing::info!(%member, "an instance was forgotten by another member");
                        self.member_retired(member);
                    }
                }
            } else {
                self.publish_state(&id).await;
            }
        }
        if std::mem::take(&mut self.keys_dirty) {
            self.refresh_keys();
        }
    }

    /// Publishes the retained public state of one object (an empty retained message clears
    /// a deleted object's topic).
    pub(super) async fn publish_state(&mut self, id: &ObjectId) {
        let topic = api::state_topic(&self.base, id);
        let payload = self.state_payload(id);
        self.publish_retained(&topic, payload).await;
    }

    /// Publishes the retained status of instance `uuid` on our broker.
    pub(super) async fn publish_status(&mut self, uuid: Uuid, online: bool) {
        let topic = api::status_topic(&self.base, uuid);
        let word = if online { "online" } else { "offline" };
        self.publish_retained(&topic, word.as_bytes().to_vec())
            .await;
    }

    /// Publishes a retained message on our broker and remembers it as ours.
    async fn publish_retained(&mut self, topic: &str, payload: Vec<u8>) {
        if self.echoes.is_full() {
            self.echoes.pop_front();
        }
        let _ = self.echoes.push_back(echo_hash(topic, &payload));
        if let Err(e) = self
            .link
            .publish(topic, Qos::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(%topic, error = %e, "could not publish retained state");
        }
    }

    /// What the retained state topic of `id` holds: its JSON, or nothing once deleted.
    fn state_payload(&self, id: &ObjectId) -> Vec<u8> {
        match self.replica.get(id) {
            Some(obj) if !obj.is_deleted() => self.state_json(id).to_string().into_bytes(),
            _ => Vec::new(),
        }
    }

    /// A message on an object's retained state topic of our broker. Only we write it: our
    /// own echo is the current value or one we published lately; anything else was written
    /// by someone else, and ours is put back. Topics of objects we do not know are left to
    /// whoever uses them.
    pub(super) async fn on_state_topic(&mut self, object: &str, payload: &[u8]) {
        let Some(id) = ObjectId::new(object)
            .ok()
            .filter(|id| self.replica.get(id).is_some())
        else {
            return;
        };
        let topic = api::state_topic(&self.base, &id);
        if self.state_payload(&id) == payload || self.is_echo(&topic, payload) {
            return;
        }
        warn_limited!(self.warns, "foreign-state", %topic, "retained state overwritten by someone else; publishing ours again");
        self.publish_state(&id).await;
    }

    /// A message on an instance's retained status topic of our broker: like
    /// [`Agent::on_state_topic`], for ourselves and the peers we know.
    pub(super) async fn on_status_topic(&mut self, uuid: Uuid, payload: &[u8]) {
        if uuid != self.uuid && self.peers.name_of(uuid).is_none() {
            return;
        }
        let online = self.peers.is_alive(uuid);
        let ours: &[u8] = if online { b"online" } else { b"offline" };
        let topic = api::status_topic(&self.base, uuid);
        if payload == ours || self.is_echo(&topic, payload) {
            return;
        }
        warn_limited!(self.warns, "foreign-status", %topic, "retained status overwritten by someone else; publishing ours again");
        self.publish_status(uuid, online).await;
    }

    /// Whether `payload` on `topic` is one we published lately.
    fn is_echo(&self, topic: &str, payload: &[u8]) -> bool {
        let hash = echo_hash(topic, payload);
        self.echoes.iter().any(|h| *h == hash)
    }

    /// The public JSON of one object, with who holds it, whether that instance is alive, and
    /// any claim conflict.
    pub(super) fn state_json(&self, id: &ObjectId) -> serde_json::Value {
        let Some(obj) = self.replica.get(id) else {
            return serde_json::Value::Null;
        };
        let mut json = api::state_json(id, obj);
        let holders = claimants(&self.replica, obj);
        if let serde_json::Value::Object(map) = &mut json {
            match holders.as_slice() {
                [] => {}
                [one] if obj.text(model::KIND) == Some("virtual") => {
                    map.insert("available".into(), self.peers.is_alive(*one).into());
                }
                [one] if obj.text(model::KIND) != Some("virtual") => {
                    map.insert("holder".into(), one.to_string().into());
                    if let Some(name) = self.peers.name_of(*one) {
                        map.insert("holder-name".into(), name.into());
                    }
                    map.insert("available".into(), self.peers.is_alive(*one).into());
                }
                many if obj.text(model::KIND) == Some("virtual") => {
                    let alive = many.iter().any(|u| self.peers.is_alive(*u));
                    map.insert("available".into(), alive.into());
                }
                many => {
                    let names: Vec<String> = many
                        .iter()
                        .map(|u| {
                            self.peers
                                .name_of(*u)
                                .map(str::to_string)
                                .unwrap_or(u.to_string())
                        })
                        .collect();
                    map.insert("conflict".into(), names.into());
                    map.insert("available".into(), false.into());
                }
            }
            if obj.value(super::serial::ONLINE) == Some(&Value::Bool(false)) {
                // The holder is alive but the device behind the object is not.
                map.insert("available".into(), false.into());
            }
        }
        json
    }
}
