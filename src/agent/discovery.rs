//! Home Assistant MQTT discovery: every instance announces the whole house on its own broker,
//! retained, from its replica, so Home Assistant pointed at any Pi sees every object.
//!
//! Each pimesh instance is a Home Assistant device with a connectivity sensor on its status
//! topic; each object is a device of its own, `via_device` the instance that holds it, in
//! the area of its room. Entities use the public topics of [`crate::api`]: the retained state
//! JSON for their state and availability (its `available` field), `…/set` with `ON`/`OFF`
//! for commands, `…/event` for an input's press triggers. What each object last announced is
//! kept, so only changes are sent and topics that no longer apply are cleared with an empty
//! retained message (a deleted object, a forgotten instance, a component that changed).
//! Home Assistant's `online` on `<prefix>/status` has everything announced again after a
//! short random delay, so a restarted Home Assistant is not flooded by every Pi at once.

use super::{Agent, Internal};
use crate::api;
use crate::config::{DiscoveryMode, HaComponent, HomeAssistantConfig};
use crate::model::{self, ObjectId};
use crate::mqtt::Qos;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use uuid::Uuid;

/// The replicated property that says what Home Assistant shows a relay or virtual object as,
/// written by its holder from `ha-component`, so every instance announces it alike.
pub const HA_COMPONENT: &str = "ha-component";

/// The longest delay before answering Home Assistant's `online`, in ms.
const JITTER_MS: u128 = 2000;

/// The press words of [`crate::plugins::press`] and the trigger type each is shown as.
const PRESSES: [(&str, &str); 3] = [
    ("single", "button_short_press"),
    ("double", "button_double_press"),
    ("long", "button_long_press"),
];

/// What the agent keeps for discovery.
pub(super) struct Discovery {
    /// The `[homeassistant]` table.
    config: HomeAssistantConfig,
    /// Topic and payload digest of every config each object or instance last announced, by
    /// the node id of its device: the payloads themselves, 10,000 objects' worth, cost
    /// megabytes, and the broker keeps them retained anyway.
    sent: HashMap<String, Vec<(String, Digest)>>,
    /// A digest of what each object's last announcement was made from (see
    /// [`Agent::announcement_inputs`]): a switch changes none of it, so the hundreds of state
    /// changes a second a busy instance publishes cost no announcement at all. One entry per
    /// object of the replica, like the replica's own tombstones.
    made_from: HashMap<ObjectId, u64>,
    /// An announcement of everything is already waiting for its delay, so a burst of
    /// `online` messages costs one.
    pending: bool,
}

impl Discovery {
    /// Discovery as configured, with nothing announced yet.
    pub(super) fn new(config: HomeAssistantConfig) -> Self {
        Discovery {
            config,
            sent: HashMap::new(),
            made_from: HashMap::new(),
            pending: false,
        }
    }
}

/// A discovery payload's SHA-256, cut to 128 bits: tells a changed config from the last one.
type Digest = [u8; 16];

/// The [`Digest`] of `payload`.
fn digest(payload: &[u8]) -> Digest {
    use sha2::{Digest as _, Sha256};
    let mut out = Digest::default();
    out.copy_from_slice(&Sha256::digest(payload)[..16]);
    out
}

/// The node id of an object's device.
fn object_node(id: &ObjectId) -> String {
    format!("pimesh_{id}")
}

/// The node id of an instance's device.
fn instance_node(uuid: Uuid) -> String {
    format!("pimesh-instance_{}", uuid.simple())
}

/// `o`: who made the configs.
fn origin() -> Value {
    json!({ "name": "pimesh", "sw": env!("CARGO_PKG_VERSION") })
}

/// One device's discovery content: the device, its components by key, and what every
/// component shares (availability).
struct Announcement {
    /// `dev`.
    device: Value,
    /// `cmps`, by component key (unique within the device).
    components: BTreeMap<String, Value>,
    /// Keys shared by every component, such as availability.
    shared: Map<String, Value>,
}

impl Announcement {
    /// The retained messages of this announcement in `mode`: one per device, or one per
    /// component.
    fn messages(&self, prefix: &str, node: &str, mode: DiscoveryMode) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        match mode {
            DiscoveryMode::Device => {
                // Shared keys go into each entity rather than the top level, so that the
                // triggers, which take no availability, never get it. So does `qos`: Home
                // Assistant accepts it at the top level but passes only availability and
                // the state and command topics on to the components.
                let mut components = self.components.clone();
                for cmp in components.values_mut() {
                    let Value::Object(fields) = cmp else { continue };
                    if fields.get("p") != Some(&json!("device_automation")) {
                        fields.extend(self.shared.clone());
                    }
                    fields.insert("qos".into(), json!(1));
                }
                let mut body = Map::new();
                body.insert("dev".into(), self.device.clone());
                body.insert("o".into(), origin());
                body.insert("cmps".into(), json!(components));
                let topic = format!("{prefix}/device/{node}/config");
                out.insert(topic, Value::Object(body).to_string().into_bytes());
            }
            DiscoveryMode::Component => {
                for (key, cmp) in &self.components {
                    let mut body = self.shared.clone();
                    let Value::Object(fields) = cmp else { continue };
                    let mut platform = String::new();
                    for (k, v) in fields {
                        if k == "p" {
                            platform = v.as_str().unwrap_or_default().to_string();
                        } else {
                            body.insert(k.clone(), v.clone());
                        }
                    }
                    if platform == "device_automation" {
                        // Triggers take no availability.
                        body.remove("availability");
                        body.remove("availability_mode");
                    }
                    body.insert("dev".into(), self.device.clone());
                    body.insert("o".into(), origin());
                    body.insert("qos".into(), json!(1));
                    let topic = format!("{prefix}/{platform}/{node}/{key}/config");
                    out.insert(topic, Value::Object(body).to_string().into_bytes());
                }
            }
        }
        out
    }
}

impl Agent {
    /// Writes each relay's and virtual object's `ha-component` into the house, so every
    /// instance announces it alike; the default is written only to replace an earlier
    /// `light`, so objects never configured otherwise carry no such property.
    pub(super) fn record_ha_components(&mut self, config: &crate::config::Config) {
        let wanted = config
            .relays
            .iter()
            .map(|r| (&r.id, r.ha_component))
            .chain(config.virtuals.iter().map(|v| (&v.id, v.ha_component)));
        let mut changes = Vec::new();
        for (id, component) in wanted {
            let now = self
                .replica()
                .get(id)
                .and_then(|o| o.text(HA_COMPONENT))
                .map(str::to_string);
            if now.as_deref() != Some(component.as_str())
                && (component != HaComponent::Switch || now.is_some())
            {
                changes.push((id.clone(), component));
            }
        }
        for (id, component) in changes {
            self.record(&id, vec![(HA_COMPONENT.into(), component.as_str().into())]);
        }
    }

    /// Subscribes to Home Assistant's status topic, where its `online` asks for discovery.
    pub(super) fn subscribe_ha_status(&mut self) {
        if !self.ha.config.enabled {
            return;
        }
        let topic = self.ha_status_topic();
        if let Err(e) = self.link.subscribe_many(&[topic]) {
            tracing::error!(error = %e, "cannot subscribe to Home Assistant's status topic");
        }
    }

    /// `<prefix>/status`.
    pub(super) fn ha_status_topic(&self) -> String {
        format!("{}/status", self.ha.config.discovery_prefix)
    }

    /// Whether `topic` is Home Assistant's status topic (and discovery is on).
    pub(super) fn is_ha_status(&self, topic: &str) -> bool {
        self.ha.config.enabled && topic == self.ha_status_topic()
    }

    /// Home Assistant said `online` (it started, or reconnected): everything is announced
    /// again after a random delay of up to two seconds, waited for off the agent task.
    pub(super) fn on_ha_status(&mut self, payload: &[u8]) {
        if payload.trim_ascii() != b"online" || std::mem::replace(&mut self.ha.pending, true) {
            return;
        }
        let delay = Uuid::new_v4().as_u128() % JITTER_MS;
        let tx = self.internal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
            let _ = tx.send(Internal::HaAnnounce);
        });
    }

    /// Announces every object and instance again, also what was announced before.
    pub(super) async fn announce_all(&mut self) {
        self.ha.pending = false;
        if !self.ha.config.enabled {
            return;
        }
        self.ha.sent.clear();
        self.ha.made_from.clear();
        let ids: Vec<ObjectId> = self.replica().objects().map(|(id, _)| id.clone()).collect();
        for id in ids {
            match crate::replica::trust::member_of(&id) {
                Some(member) => self.announce_instance(member).await,
                None if !id.is_system() => self.announce_object(&id).await,
                None => {}
            }
        }
    }

    /// Announces object `id` as it now stands, or clears its configs once it is gone.
    pub(super) async fn announce_object(&mut self, id: &ObjectId) {
        if !self.ha.config.enabled {
            return;
        }
        let inputs = self.announcement_inputs(id);
        if self.ha.made_from.get(id) == Some(&inputs) {
            return;
        }
        self.ha.made_from.insert(id.clone(), inputs);
        let announcement = self.object_announcement(id);
        self.send_announcement(object_node(id), announcement).await;
    }

    /// A digest of everything [`Self::object_announcement`] reads of object `id`: its kind,
    /// name, room, component and holders, and whether it exists.
    fn announcement_inputs(&self, id: &ObjectId) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self.replica().get(id).filter(|o| !o.is_deleted()) {
            None => 0u8.hash(&mut h),
            Some(obj) => {
                1u8.hash(&mut h);
                for prop in [model::KIND, model::NAME, model::ROOM, HA_COMPONENT] {
                    obj.text(prop).hash(&mut h);
                }
                super::state::claimants(self.replica(), obj).hash(&mut h);
            }
        }
        h.finish()
    }

    /// Announces instance `uuid`, or clears its config once it is forgotten.
    pub(super) async fn announce_instance(&mut self, uuid: Uuid) {
        if !self.ha.config.enabled {
            return;
        }
        let announcement = self.instance_announcement(uuid);
        self.send_announcement(instance_node(uuid), announcement)
            .await;
    }

    /// Publishes what changed between the last announcement of `node` and this one.
    async fn send_announcement(&mut self, node: String, announcement: Option<Announcement>) {
        let cfg = &self.ha.config;
        let new = announcement
            .map(|a| a.messages(&cfg.discovery_prefix, &node, cfg.discovery))
            .unwrap_or_default();
        let old = self.ha.sent.remove(&node).unwrap_or_default();
        let sent: Vec<(String, Digest)> = new.iter().map(|(t, p)| (t.clone(), digest(p))).collect();
        for ((topic, payload), (_, d)) in new.iter().zip(&sent) {
            if !old.iter().any(|(t, o)| t == topic && o == d) {
                self.publish_discovery(topic, payload.clone()).await;
            }
        }
        for (topic, _) in old.iter().filter(|(t, _)| !new.contains_key(t)) {
            self.publish_discovery(topic, Vec::new()).await;
        }
        if !sent.is_empty() {
            self.ha.sent.insert(node, sent);
        }
    }

    /// Publishes one retained discovery message on our broker.
    async fn publish_discovery(&self, topic: &str, payload: Vec<u8>) {
        if let Err(e) = self
            .link
            .publish(topic, Qos::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(%topic, error = %e, "could not publish a Home Assistant discovery config");
        }
    }

    /// The device of instance `uuid`, none once it is forgotten or unknown.
    fn instance_announcement(&self, uuid: Uuid) -> Option<Announcement> {
        let record = self.replica().get(&crate::membership::member_id(uuid))?;
        if record.is_deleted() || self.replica().is_retired(uuid) {
            return None;
        }
        let name = record
            .text(model::NAME)
            .map(str::to_string)
            .unwrap_or_else(|| uuid.to_string());
        let node = instance_node(uuid);
        let device = json!({
            "ids": [node],
            "name": format!("pimesh {name}"),
            "mf": "pimesh",
            "mdl": "pimesh instance",
            "sw": env!("CARGO_PKG_VERSION"),
        });
        let key = format!("{node}_status");
        let status = json!({
            "p": "binary_sensor",
            "unique_id": key,
            "name": "Online",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": api::status_topic(&self.base, uuid),
            "payload_on": "online",
            "payload_off": "offline",
        });
        Some(Announcement {
            device,
            components: BTreeMap::from([(key, status)]),
            shared: Map::new(),
        })
    }

    /// The device of object `id` and its entities, none once it is deleted or of a kind
    /// Home Assistant has no entity for (automation rules).
    fn object_announcement(&self, id: &ObjectId) -> Option<Announcement> {
        let obj = self.replica().get(id).filter(|o| !o.is_deleted())?;
        let kind = obj.text(model::KIND)?;
        let node = object_node(id);
        let state = api::state_topic(&self.base, id);
        let command = format!("{state}/set");
        let value = "{{ value_json.state }}";
        let mut components = BTreeMap::new();
        let switchable = |platform: &str| {
            let mut c = json!({
                "p": platform,
                "unique_id": format!("{node}_state"),
                "name": null,
                "command_topic": command,
                "state_topic": state,
                "payload_on": model::ON,
                "payload_off": model::OFF,
            });
            let template_key = if platform == "light" {
                "state_value_template"
            } else {
                "value_template"
            };
            c[template_key] = json!(value);
            c
        };
        match kind {
            "relay" | "virtual" => {
                let platform = match obj.text(HA_COMPONENT) {
                    Some("light") => "light",
                    _ => "switch",
                };
                components.insert(format!("{node}_state"), switchable(platform));
            }
            super::serial::CHANNEL_KIND => {
                components.insert(format!("{node}_state"), switchable("switch"));
            }
            "input" => {
                components.insert(
                    format!("{node}_state"),
                    json!({
                        "p": "binary_sensor",
                        "unique_id": format!("{node}_state"),
                        "name": null,
                        "state_topic": state,
                        "value_template": value,
                        "payload_on": model::ON,
                        "payload_off": model::OFF,
                    }),
                );
                for (word, trigger) in PRESSES {
                    components.insert(
                        format!("{node}_press_{word}"),
                        json!({
                            "p": "device_automation",
                            "automation_type": "trigger",
                            "topic": api::event_topic(&self.base, id),
                            "type": trigger,
                            "subtype": "button_1",
                            "payload": word,
                        }),
                    );
                }
            }
            _ => return None,
        }
        let mut device = Map::new();
        device.insert("ids".into(), json!([node]));
        device.insert(
            "name".into(),
            json!(obj.text(model::NAME).unwrap_or(id.as_str())),
        );
        device.insert("mf".into(), json!("pimesh"));
        device.insert("mdl".into(), json!(kind));
        if let Some(room) = obj.text(model::ROOM) {
            device.insert("sa".into(), json!(room));
        }
        if let [holder] = super::state::claimants(self.replica(), obj).as_slice() {
            device.insert("via_device".into(), json!(instance_node(*holder)));
        }
        let mut shared = Map::new();
        shared.insert(
            "availability".into(),
            json!([{
                "topic": state,
                "value_template": "{{ 'online' if value_json.available | default(false) else 'offline' }}",
            }]),
        );
        shared.insert("availability_mode".into(), json!("all"));
        Some(Announcement {
            device: Value::Object(device),
            components,
            shared,
        })
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
