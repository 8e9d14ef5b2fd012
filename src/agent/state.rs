//! The agent's side of the replica: recording local changes, applying remote ones, and
//! publishing what changed — public state on our broker, our own updates on the live stream.
//!
//! Holding is recorded per instance: each instance whose config binds an object to its
//! hardware writes its own `claim.<uuid>` property. Claims of different instances never
//! overwrite each other, so two instances configuring the same object id both see the
//! conflict instead of one silently winning.

use super::Agent;
use crate::api;
use crate::config::Config;
use crate::mesh::node::{Msg, Now, Send};
use crate::mesh::reconcile::Declared;
use crate::model::{self, ObjectId, Value};
use crate::mqtt::Qos;
use crate::ratelimit::warn_limited;
use uuid::Uuid;

/// The objects `config` binds to this instance: its relays, inputs and serial channels,
/// then its virtual objects (which start OFF).
fn declared(config: &Config) -> impl Iterator<Item = Declared> + '_ {
    let relays = config
        .relays
        .iter()
        .map(|r| ("relay", &r.id, &r.name, &r.room, r.x, r.y));
    let inputs = config
        .inputs
        .iter()
        .map(|i| ("input", &i.id, &i.name, &i.room, i.x, i.y));
    let channels = config.serials.iter().flat_map(|s| &s.channels).map(|c| {
        let kind = super::serial::CHANNEL_KIND;
        (kind, &c.id, &c.name, &c.room, c.x, c.y)
    });
    let virtuals = config
        .virtuals
        .iter()
        .map(|v| ("virtual", &v.id, &v.name, &v.room, v.x, v.y));
    relays
        .chain(inputs)
        .chain(channels)
        .chain(virtuals)
        .map(|(kind, id, name, room, x, y)| {
            let mut start: Vec<(String, Value)> = vec![
                (model::ROOM.into(), room.as_str().into()),
                (model::X.into(), x.into()),
                (model::Y.into(), y.into()),
            ];
            if kind == "virtual" {
                start.push((model::STATE.into(), model::OFF.into()));
            }
            Declared {
                id: id.clone(),
                fixed: vec![
                    (model::KIND.into(), kind.into()),
                    (model::NAME.into(), name.as_str().into()),
                ],
                start,
            }
        })
}

pub use crate::mesh::dispatch::claimants;

/// A hash of a retained message, to recognise our own echoes.
fn echo_hash(topic: &str, payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    topic.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

impl Agent {
    /// Makes the replica agree with the config about which objects this instance holds
    /// ([`crate::mesh::reconcile`]), then records the configured automations.
    pub(super) fn reconcile_objects(&mut self, config: &Config) {
        let store = &mut self.store;
        let hand_on = |node: &mut crate::mesh::node::Node| {
            for p in node.take_store() {
                if let Err(e) = store.queue(&p.updates) {
                    tracing::error!(error = %e, "state not saved yet; will retry");
                }
            }
        };
        let released = self
            .node
            .reconcile_with(declared(config), Now::real(), hand_on);
        for r in released {
            if r.deleted {
                tracing::info!(object = %r.id, "object no longer in any config: deleting it");
            } else {
                tracing::info!(object = %r.id, "object no longer in the config: releasing it");
            }
        }
        for a in &config.automations {
            self.node
                .record(&a.id, super::automation::rule_props(a), false, Now::real());
        }
        self.persist();
    }

    /// Records local changes of one object: apply them and hand them to the disk. Returns
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

    fn record_with(&mut self, id: &ObjectId, props: Vec<(String, Value)>, touch: bool) -> bool {
        let Some(changes) = self.node.record(id, props, touch, Now::real()) else {
            return false;
        };
        self.persist();
        if self.running {
            self.trigger(&changes);
        }
        true
    }

    /// Carries out what the node asked of the store: updates are handed to the kernel at once,
    /// so a killed agent keeps them (during start-up only queued, and flushed once at the
    /// end: a config with thousands of objects would otherwise cost thousands of writes). Only
    /// our own make the event wait for an fsync; a peer's are synced with it or the next
    /// heartbeat, since their origin holds them durably and a sync after a power cut fetches
    /// whatever was lost. (Queued in memory instead, a peer's objects were lost with a killed
    /// agent, which then called them unknown until it synced again.)
    pub(super) fn persist(&mut self) {
        let requests = self.node.take_store();
        if requests.is_empty() {
            return;
        }
        for p in requests {
            let result = if self.running {
                self.store.write(&p.updates)
            } else {
                self.store.queue(&p.updates)
            };
            match result {
                Err(e) if p.own => {
                    tracing::error!(error = %e, queued = self.store.pending(), "state not saved yet; will retry")
                }
                Err(e) => {
                    tracing::error!(error = %e, "a replicated update cannot be stored; it stays in memory only")
                }
                Ok(()) => {}
            }
        }
        self.maybe_compact();
    }

    /// Writes again, signed, what the store kept from before signatures existed (see
    /// [`crate::replica::trust`]); nothing once that is done.
    pub(super) fn adopt_unsigned(&mut self) {
        let registers = self.node.adopt_unsigned(Now::real());
        if registers > 0 {
            tracing::info!(
                registers,
                "signing the values kept from before signatures existed, as this instance's own"
            );
        }
        self.persist();
    }

    /// Reports other instances claiming objects whose hardware is ours.
    pub(super) fn check_claims(&mut self) {
        for (object, other) in self.node.take_claims() {
            let ours = self.hw.relays.contains_key(&object)
                || self.hw.channels.contains_key(&object)
                || self.hw.inputs.iter().any(|(id, _)| *id == object);
            if !ours || other == self.uuid {
                continue;
            }
            let name = self
                .peers
                .name_of(other)
                .map(str::to_string)
                .unwrap_or(other.to_string());
            if let Some(suppressed) = self
                .warns
                .allow("claim-conflict", std::time::Instant::now())
            {
                tracing::error!(suppressed, %object, other = %name, "object id conflict: {object} is configured on this instance ({}) and on {name}; commands for it are refused until one config drops it", self.name);
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
        self.node.stream();
        self.send_node_messages().await;
    }

    /// Sends what the node asked to send: heartbeats, the live stream and sync pages on our
    /// own broker, sync requests on the broker of the peer that should answer.
    pub(super) async fn send_node_messages(&mut self) {
        for send in self.node.take_sends() {
            let (topic, payload, qos, link) = match send {
                Send::All(Msg::Beat(beat)) => (
                    self.topics.beat(self.uuid),
                    serde_json::to_vec(&beat),
                    Qos::AtMostOnce,
                    self.link.clone(),
                ),
                Send::All(Msg::Updates(batch)) => (
                    self.topics.updates(self.uuid),
                    serde_json::to_vec(&batch),
                    Qos::AtLeastOnce,
                    self.link.clone(),
                ),
                Send::To(peer, Msg::SyncPage(page)) => (
                    self.topics.sync_page(self.uuid, peer),
                    serde_json::to_vec(&page),
                    Qos::AtLeastOnce,
                    self.link.clone(),
                ),
                Send::To(peer, Msg::SyncReq(req)) => {
                    let Some(link) = self
                        .peers
                        .addr_of(peer)
                        .and_then(|a| self.links.get(a))
                        .map(|pl| pl.link.clone())
                    else {
                        continue;
                    };
                    let topic = self.topics.sync_req(self.uuid);
                    let payload = serde_json::to_vec(&req).unwrap_or_default();
                    if let Err(e) = link.publish(&topic, Qos::AtLeastOnce, false, payload).await {
                        tracing::warn!(error = %e, "cannot send a sync request");
                    }
                    continue;
                }
                other => {
                    tracing::debug!(?other, "no route for a mesh message");
                    continue;
                }
            };
            let payload = payload.unwrap_or_default();
            if let Err(e) = link.publish(&topic, qos, false, payload).await {
                tracing::warn!(%topic, error = %e, "could not send to the mesh; anti-entropy will repair it");
            }
        }
    }

    /// Publishes the retained public state of every object that changed.
    pub(super) async fn publish_dirty(&mut self) {
        for id in self.node.take_dirty() {
            if id.is_system() {
                // Members and users are never public; they change who the door lets in.
                self.members.keys_dirty = true;
                if let Some(member) = crate::replica::trust::member_of(&id) {
                    self.announce_instance(member).await;
                    if self.replica().is_retired(member) && self.peers.name_of(member).is_some() {
                        tracing::info!(%member, "an instance was forgotten by another member");
                        self.member_retired(member);
                    }
                }
            } else {
                self.keep_hardware_state(&id);
                self.publish_state(&id).await;
            }
        }
        if std::mem::take(&mut self.members.keys_dirty) {
            self.refresh_keys();
        }
    }

    /// Publishes the retained public state of one object (an empty retained message clears
    /// a deleted object's topic).
    pub(super) async fn publish_state(&mut self, id: &ObjectId) {
        let topic = api::state_topic(&self.base, id);
        let payload = self.state_payload(id);
        self.publish_retained(&topic, payload).await;
        self.announce_object(id).await;
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
        match self.replica().get(id) {
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
            .filter(|id| self.replica().get(id).is_some())
        else {
            return;
        };
        let topic = api::state_topic(&self.base, &id);
        if self.is_echo(&topic, payload) || self.state_payload(&id) == payload {
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
        let Some(obj) = self.replica().get(id) else {
            return serde_json::Value::Null;
        };
        let mut json = api::state_json(id, obj);
        let holders = claimants(self.replica(), obj);
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
