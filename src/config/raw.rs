//! The config file exactly as written, before it is checked.
//!
//! serde fills these structs straight from the TOML text. Every value that a later check may
//! reject is wrapped in [`Spanned`], so the error can name the line it came from; the checks
//! in `check.rs` then turn these into the clean public types of [`super`].

use super::serial::RawSerial;
use super::{OnStop, PowerOn};
use crate::hal::{Backend, Pull};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

/// The whole file. Unknown keys are errors so that a typo never silently falls back to a
/// default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawConfig {
    /// Instance name; checked for its character set.
    pub name: Option<Spanned<String>>,
    /// Where the instance keeps its state; checked non-empty.
    pub data_dir: Option<Spanned<PathBuf>>,
    /// Prefix of every MQTT topic; checked for wildcard and slash rules.
    pub base_topic: Option<Spanned<String>>,
    /// The `[board]` table.
    #[serde(default)]
    pub board: RawBoard,
    /// The `[broker]` table.
    #[serde(default)]
    pub broker: RawBroker,
    /// The `[mesh]` table.
    #[serde(default)]
    pub mesh: RawMesh,
    /// Each `[[relay]]` table, in file order.
    #[serde(default)]
    pub relay: Vec<RawRelay>,
    /// Each `[[input]]` table, in file order.
    #[serde(default)]
    pub input: Vec<RawInput>,
    /// Each `[[serial]]` table, in file order.
    #[serde(default)]
    pub serial: Vec<RawSerial>,
    /// Each `[[virtual]]` table, in file order.
    #[serde(default, rename = "virtual")]
    pub virtuals: Vec<RawVirtual>,
    /// Each `[[automation]]` table, in file order.
    #[serde(default, rename = "automation")]
    pub automations: Vec<RawAutomation>,
    /// The `[homeassistant]` table.
    #[serde(default)]
    pub homeassistant: RawHomeAssistant,
    /// The `[web]` table.
    #[serde(default)]
    pub web: RawWeb,
}

/// The `[web]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawWeb {
    /// Whether the page is served at all.
    pub enabled: Option<bool>,
    /// A fixed port; checked non-zero and apart from the broker's.
    pub port: Option<Spanned<u16>>,
    /// First port tried when none is fixed; checked non-zero.
    pub base_port: Option<Spanned<u16>>,
    /// HTTPS with the instance's certificate.
    pub tls: Option<bool>,
    /// How long a login lasts; checked against a bound.
    pub session_hours: Option<Spanned<u32>>,
    /// Each `[[web.room]]`: a room's area on the floor plan.
    #[serde(default)]
    pub room: Vec<RawWebRoom>,
}

/// One `[[web.room]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawWebRoom {
    /// The room's name, as objects carry it.
    pub room: Spanned<String>,
    /// Left edge.
    pub x: Spanned<f64>,
    /// Top edge.
    pub y: Spanned<f64>,
    /// Width; checked positive.
    pub width: Spanned<f64>,
    /// Height; checked positive.
    pub height: Spanned<f64>,
}

/// The `[homeassistant]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawHomeAssistant {
    /// Whether discovery is published.
    pub enabled: Option<bool>,
    /// Discovery topic prefix; checked like a topic and against the base topic.
    pub discovery_prefix: Option<Spanned<String>>,
    /// `device` or `component`; checked.
    pub discovery: Option<Spanned<String>>,
}

/// One `[[automation]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAutomation {
    /// Rule id; an object id.
    pub id: Spanned<String>,
    /// The object whose change triggers the rule.
    pub when: Spanned<String>,
    /// The property watched; `state` when not given.
    pub property: Option<String>,
    /// Only a change to this value triggers; any change when not given.
    pub to: Option<String>,
    /// The object the command is for.
    pub then: Spanned<String>,
    /// What to do to it.
    pub action: super::Action,
    /// Room, for `action = "move"`.
    pub room: Option<Spanned<String>>,
    /// Position, for `action = "move"`.
    pub x: Option<f64>,
    /// Position, for `action = "move"`.
    pub y: Option<f64>,
}

/// One `[[virtual]]` table: a software-only object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawVirtual {
    /// Object id; checked with the [`crate::model::ObjectId`] rules and for uniqueness.
    pub id: Spanned<String>,
    /// Room name; checked non-empty.
    pub room: Option<Spanned<String>>,
    /// Human name; checked non-empty.
    pub name: Option<Spanned<String>>,
    /// Position across the room; checked finite.
    pub x: Option<Spanned<f64>>,
    /// Position along the room; checked finite.
    pub y: Option<Spanned<f64>>,
    /// `switch` or `light`; checked.
    pub ha_component: Option<Spanned<String>>,
}

/// The `[board]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawBoard {
    /// Board id; checked against the known boards.
    pub model: Option<Spanned<String>>,
    /// GPIO backend; serde rejects anything but `auto`, `rppal`, `cdev` and `sim`.
    pub backend: Option<Backend>,
    /// Relay HAT id; checked against the known HATs.
    pub hat: Option<Spanned<String>>,
    /// cdev line-name prefix; checked non-empty.
    pub line_prefix: Option<Spanned<String>>,
    /// Default `on-stop` of every relay.
    pub on_stop: Option<OnStop>,
}

/// The `[broker]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawBroker {
    /// Fixed listening port, if any.
    pub port: Option<Spanned<u16>>,
    /// First port tried when no port is fixed.
    pub base_port: Option<Spanned<u16>>,
    /// Fixed MQTT 5 port, if any.
    pub mqtt5_port: Option<Spanned<u16>>,
    /// Address to listen on; checked to be an IP address.
    pub bind: Option<Spanned<String>>,
    /// Bytes per topic log segment in the broker; checked against a minimum.
    pub segment_bytes: Option<Spanned<usize>>,
    /// Segments kept per topic; checked against a minimum.
    pub segment_count: Option<Spanned<usize>>,
    /// Let clients without credentials in.
    pub allow_anonymous: Option<bool>,
    /// Fixed TLS port, if any.
    pub tls_port: Option<Spanned<u16>>,
    /// Whether the plaintext ports listen; checked against the mesh's need of them.
    pub plaintext: Option<Spanned<bool>>,
    /// Retained topics users may leave; checked against a minimum.
    pub max_retained: Option<Spanned<usize>>,
    /// Whether the MQTT over WebSocket listener runs.
    pub websocket: Option<bool>,
    /// Fixed WebSocket port, if any.
    pub ws_port: Option<Spanned<u16>>,
    /// The shared broker's URL; checked for scheme, host and port.
    pub external: Option<Spanned<String>>,
    /// The shared broker's user name.
    pub external_user: Option<Spanned<String>>,
    /// File holding the shared broker's password; checked readable.
    pub external_password_file: Option<Spanned<String>>,
    /// CA of the shared broker's certificate; checked readable, mqtts:// only.
    pub external_ca_file: Option<Spanned<String>>,
}

/// The `[mesh]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawMesh {
    /// Seed peers; each checked for `HOST:PORT` form.
    #[serde(default)]
    pub peers: Vec<Spanned<String>>,
    /// Invitation token to join with; checked to be one.
    pub join: Option<Spanned<String>>,
    /// How far ahead of our wall clock a peer's stamp may be, in seconds; at least 1.
    pub max_clock_ahead_s: Option<Spanned<u64>>,
    /// Whether mesh links use TLS.
    pub tls: Option<bool>,
    /// After how long unheard an offline peer shows as `stale`, in seconds; at least 1.
    pub stale_after_s: Option<Spanned<u64>>,
    /// Whether the instance announces itself on the LAN by mDNS.
    pub mdns: Option<bool>,
}

/// One `[[relay]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRelay {
    /// Object id; checked with the [`crate::model::ObjectId`] rules and for uniqueness.
    pub id: Spanned<String>,
    /// BCM GPIO number; checked against the board and for reuse; exclusive with `channel`.
    pub pin: Option<Spanned<u8>>,
    /// Relay number on the `[board]` HAT; checked against the HAT.
    pub channel: Option<Spanned<u8>>,
    /// Whether the relay closes when the pin is driven low; refused with `channel`.
    pub active_low: Option<Spanned<bool>>,
    /// What the relay does when the agent starts; checked against `pulse-ms` and interlocks.
    pub power_on: Option<Spanned<PowerOn>>,
    /// What the relay does when the agent stops cleanly; defaults to `[board] on-stop`.
    pub on_stop: Option<Spanned<OnStop>>,
    /// Pulse length; checked against its bounds.
    pub pulse_ms: Option<Spanned<u64>>,
    /// Interlock group name; checked for its characters and for a second member.
    pub interlock: Option<Spanned<String>>,
    /// Dead time of the interlock group; needs `interlock`; checked against its bound.
    pub interlock_dead_ms: Option<Spanned<u64>>,
    /// Watchdog time; checked against its bounds.
    pub max_on_s: Option<Spanned<u64>>,
    /// Room name; checked non-empty.
    pub room: Option<Spanned<String>>,
    /// Human name; checked non-empty.
    pub name: Option<Spanned<String>>,
    /// Position across the room; checked finite.
    pub x: Option<Spanned<f64>>,
    /// Position along the room; checked finite.
    pub y: Option<Spanned<f64>>,
    /// `switch` or `light`; checked.
    pub ha_component: Option<Spanned<String>>,
}

/// One `[[input]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawInput {
    /// Object id; checked with the [`crate::model::ObjectId`] rules and for uniqueness.
    pub id: Spanned<String>,
    /// BCM GPIO number; checked against the board and for reuse.
    pub pin: Spanned<u8>,
    /// Internal resistor to enable.
    #[serde(default)]
    pub pull: Pull,
    /// Debounce time; checked against the upper bound.
    pub debounce_ms: Option<Spanned<u64>>,
    /// Longest gap between the presses of a double press; checked against its bound.
    pub double_ms: Option<Spanned<u64>>,
    /// Shortest hold that counts as a long press; checked against its bound.
    pub long_ms: Option<Spanned<u64>>,
    /// Whether a low pin level means ON.
    #[serde(default)]
    pub active_low: bool,
    /// Room name; checked non-empty.
    pub room: Option<Spanned<String>>,
    /// Human name; checked non-empty.
    pub name: Option<Spanned<String>>,
    /// Position across the room; checked finite.
    pub x: Option<Spanned<f64>>,
    /// Position along the room; checked finite.
    pub y: Option<Spanned<f64>>,
}
