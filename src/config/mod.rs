//! The instance's configuration: one strict TOML file, checked in full before anything starts.
//!
//! Strict means every unknown key is an error, every value is checked (ids, pins against the
//! board, peer addresses, credentials), and every error names the file, the line and what to
//! change. The defaults are written out once, in `default.toml`, which is also the
//! configuration a first run without a file uses and what `DEFAULT_CONFIG` prints.
//!
//! Parsing happens in two steps: serde reads the text into the private structs of `raw.rs`,
//! which keep the position of every value a check may reject, and `check.rs` validates them
//! and builds the public types below, which carry no positions. `objects.rs` checks relays
//! and inputs, `pins.rs` the wiring rules between them (board, HAT, UART), and `serial.rs`
//! the serial devices.

mod check;
mod external;
mod homeassistant;
#[cfg(test)]
mod hw_tests;
mod objects;
mod pins;
mod raw;
#[cfg(test)]
mod refusal_tests;
mod serial;
mod software;
#[cfg(test)]
mod tests;
mod web;

pub use external::{parse_url as parse_external_url, ExternalBroker};
pub use serial::{DataBits, Parity, Protocol, SerialChannel, SerialConfig, StopBits};

use crate::hal::{Backend, Pull};
use crate::model::ObjectId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The built-in configuration, printable as a starting point for a real file: a simulated
/// Pi 4 B with four relays and two buttons, every key shown with its default.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A checked configuration: every id is valid and unique, every pin exists on the board and
/// is used once, so the parts that start from it need no checks of their own.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Instance name, unique in the mesh; `None` lets the agent use the host name.
    pub name: Option<String>,
    /// Where the instance keeps its identity and store; `None` lets the agent choose.
    pub data_dir: Option<PathBuf>,
    /// Prefix of every MQTT topic this instance publishes, so several houses (or tests) can
    /// share one broker.
    pub base_topic: String,
    /// Which Pi this is and how its pins are driven.
    pub board: BoardConfig,
    /// Where the embedded broker listens.
    pub broker: BrokerConfig,
    /// How this instance finds and joins the other instances.
    pub mesh: MeshConfig,
    /// The relays wired to this Pi (`[[relay]]` tables), in file order.
    pub relays: Vec<RelayConfig>,
    /// The inputs wired to this Pi (`[[input]]` tables), in file order.
    pub inputs: Vec<InputConfig>,
    /// The serial devices attached to this Pi (`[[serial]]` tables), in file order.
    pub serials: Vec<SerialConfig>,
    /// Software-only objects this instance can execute (`[[virtual]]` tables), in file order.
    pub virtuals: Vec<VirtualConfig>,
    /// Rules (`[[automation]]` tables); they replicate to and run on every instance.
    pub automations: Vec<AutomationConfig>,
    /// Home Assistant MQTT discovery on our broker (the `[homeassistant]` table).
    pub homeassistant: HomeAssistantConfig,
    /// The floor-plan page this instance serves (the `[web]` table).
    pub web: WebConfig,
}

/// The `[web]` table: the house on a page, served by this instance.
#[derive(Clone, Debug, PartialEq)]
pub struct WebConfig {
    /// Whether the page is served at all.
    pub enabled: bool,
    /// A fixed port: used or the agent fails to start, naming it.
    pub port: Option<u16>,
    /// With no fixed port, the first free one counting up from here.
    pub base_port: u16,
    /// HTTPS with the instance's certificate from the mesh CA (plain HTTP on the same port
    /// is redirected); `false` serves plain HTTP only.
    pub tls: bool,
    /// How long a login lasts.
    pub session_hours: u32,
    /// Rooms laid out by hand; others get the area around their objects.
    pub rooms: Vec<WebRoom>,
}

/// A room's area on the floor plan, in the units of the objects' x and y.
#[derive(Clone, Debug, PartialEq)]
pub struct WebRoom {
    /// The room's name, as objects carry it.
    pub room: String,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width, more than 0.
    pub width: f64,
    /// Height, more than 0.
    pub height: f64,
}

/// The `[homeassistant]` table: how the house is announced to Home Assistant.
#[derive(Clone, Debug, PartialEq)]
pub struct HomeAssistantConfig {
    /// Whether discovery configs are published at all.
    pub enabled: bool,
    /// The topic prefix Home Assistant listens on for discovery (its `discovery_prefix`).
    pub discovery_prefix: String,
    /// One config per device or one per entity.
    pub discovery: DiscoveryMode,
}

/// How discovery configs are laid out on the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// `<prefix>/device/<node>/config`, one per device (Home Assistant 2024.12 and later).
    Device,
    /// `<prefix>/<component>/<node>/<entity>/config`, one per entity, for older releases.
    Component,
}

/// What Home Assistant shows a relay or virtual object as (`ha-component`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HaComponent {
    /// A switch entity.
    #[default]
    Switch,
    /// A light entity (on/off only).
    Light,
}

impl HaComponent {
    /// The Home Assistant platform name.
    pub fn as_str(self) -> &'static str {
        match self {
            HaComponent::Switch => "switch",
            HaComponent::Light => "light",
        }
    }
}

/// What an automation does to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Switch on.
    On,
    /// Switch off.
    Off,
    /// Switch over.
    Toggle,
    /// Move to `room` (and `x`, `y`).
    Move,
}

/// One `[[automation]]` table: when `when`'s `property` changes (to `to`, if given), do
/// `action` to `then`.
#[derive(Clone, Debug, PartialEq)]
pub struct AutomationConfig {
    /// Rule id; the rule is an object of kind `automation` in the house.
    pub id: ObjectId,
    /// The object whose change triggers the rule (on any instance).
    pub when: ObjectId,
    /// The property watched.
    pub property: String,
    /// Only a change to this value triggers (e.g. `ON`: a press, not the release).
    pub to: Option<String>,
    /// The object the command is for (on any instance).
    pub then: ObjectId,
    /// What to do.
    pub action: Action,
    /// Room for a move.
    pub room: Option<String>,
    /// x for a move.
    pub x: Option<f64>,
    /// y for a move.
    pub y: Option<f64>,
}

/// The `[board]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct BoardConfig {
    /// Known board id (see [`crate::boards::boards`]); decides which pins exist.
    pub model: String,
    /// Real pins or the simulator; defaults to `auto` (real pins, rppal on a Pi and cdev
    /// elsewhere), because a config written on a board is meant to drive it.
    pub backend: Backend,
    /// The relay HAT on the header, if any (see `pimesh boards`); relays may then name a
    /// `channel` instead of a pin.
    pub hat: Option<String>,
    /// Prefix that makes a cdev line name from a BCM number (`GPIO` + `17`); other boards
    /// name their lines differently.
    pub line_prefix: String,
}

/// The `[broker]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerConfig {
    /// A fixed port: the broker uses exactly this one or the agent fails to start, for
    /// setups where clients are configured with the port.
    pub port: Option<u16>,
    /// With no fixed port, the first free port counting up from here is used, so several
    /// instances can share one host.
    pub base_port: u16,
    /// A fixed port for MQTT 5 clients; without it, the first free port from 1000 above the
    /// MQTT 3.1.1 one.
    pub mqtt5_port: Option<u16>,
    /// Address to listen on; `0.0.0.0` serves the whole LAN, `127.0.0.1` only this host.
    pub bind: IpAddr,
    /// Bytes per topic log segment: with `segment_count`, how far a slow subscriber may fall
    /// behind on one topic before the broker drops messages for it (the mesh repairs that).
    pub segment_bytes: usize,
    /// Segments kept per topic.
    pub segment_count: usize,
    /// Clients without credentials are let in as the user `anonymous` (labs only).
    pub allow_anonymous: bool,
    /// A fixed port for MQTT over TLS; without it, the first free one from 8883.
    pub tls_port: Option<u16>,
    /// Whether the plaintext ports (MQTT 3.1.1 and 5 in the clear) listen at all.
    pub plaintext: bool,
    /// Retained topics users may leave on the broker (`max-retained`).
    pub max_retained: usize,
    /// Whether MQTT over WebSocket is served (browsers), with the same credentials and rules.
    pub websocket: bool,
    /// A fixed port for MQTT over WebSocket; without it, the first free one from 9001.
    pub ws_port: Option<u16>,
    /// The shared broker the house is also served on (`external = "mqtt://HOST:PORT"`).
    pub external: Option<ExternalBroker>,
}

/// The `[mesh]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshConfig {
    /// Seed peers as `HOST:PORT`; knowing one live peer is enough to find the rest.
    pub peers: Vec<String>,
    /// An invitation token (from `pimesh invite` on a member) this instance joins with; once
    /// it is a member, the token is not needed any more.
    pub join: Option<String>,
    /// How far ahead of our wall clock a peer's stamp may be before it is refused
    /// (`max-clock-ahead-s`; [`crate::clock::DEFAULT_MAX_AHEAD_MS`] unless set).
    pub max_clock_ahead_ms: u64,
    /// Mesh links use TLS (mutually authenticated by the mesh CA); off, they run in the
    /// clear on the peers' plaintext ports.
    pub tls: bool,
    /// After how long unheard an offline peer shows as `stale` (`stale-after-s`).
    pub stale_after_ms: u64,
    /// Announce this instance on the LAN by mDNS (`_pimesh._tcp`, `_mqtt._tcp`), so an
    /// invitation finds its inviter with no address.
    pub mdns: bool,
}

/// What a relay does when the agent starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerOn {
    /// Open the relay: the safe choice for most loads.
    #[default]
    Off,
    /// Close the relay, for loads that must run unless told otherwise.
    On,
    /// Return to the last state recorded in the store, so a restart is invisible.
    Restore,
}

/// One `[[virtual]]` table: a software-only object (a flag such as `vacation-mode`, a scene)
/// with an ON/OFF state and no hardware. Any instance that lists it can execute its commands.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualConfig {
    /// Object id, unique across all objects of the file.
    pub id: ObjectId,
    /// Room the object belongs to; `unassigned` when not given.
    pub room: String,
    /// Human name; the id when not given.
    pub name: String,
    /// Position across the room, for floor plans.
    pub x: f64,
    /// Position along the room, for floor plans.
    pub y: f64,
    /// What Home Assistant shows it as.
    pub ha_component: HaComponent,
}

/// What a relay does when the agent stops cleanly (SIGTERM, systemd stop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    /// Keep the state it has: an upgrade or restart is invisible to the house.
    #[default]
    Leave,
    /// Switch off: loads that must not run unattended.
    Off,
    /// Switch on: loads that must run when nothing controls them (a fail-safe pump).
    On,
}

/// One `[[relay]]` table: an output pin driving a relay.
#[derive(Clone, Debug, PartialEq)]
pub struct RelayConfig {
    /// Object id, unique across all objects; names the object in topics and commands.
    pub id: ObjectId,
    /// BCM GPIO number driving the relay (from the HAT when `channel` is given).
    pub pin: u8,
    /// The HAT channel the pin came from, for messages and `pimesh doctor`.
    pub channel: Option<u8>,
    /// True when the relay closes on a low pin, as on most opto-isolated relay boards.
    pub active_low: bool,
    /// State to set when the agent starts.
    pub power_on: PowerOn,
    /// State to leave the relay in when the agent stops cleanly.
    pub on_stop: OnStop,
    /// Every switch-on ends by itself after this many ms (garage door, door bell).
    pub pulse_ms: Option<u64>,
    /// Interlock group: relays sharing it are never on together (motor up/down).
    pub interlock: Option<String>,
    /// Pause between one relay of the group going off and another going on, in ms.
    pub interlock_dead_ms: u64,
    /// Watchdog: a relay on for this many seconds is switched off, with an event saying why.
    pub max_on_s: Option<u64>,
    /// Room the relay is in; `unassigned` when not given.
    pub room: String,
    /// Human name; the id when not given.
    pub name: String,
    /// Position across the room, for floor plans.
    pub x: f64,
    /// Position along the room, for floor plans.
    pub y: f64,
    /// What Home Assistant shows it as.
    pub ha_component: HaComponent,
}

/// One `[[input]]` table: an input pin read as a button or contact.
#[derive(Clone, Debug, PartialEq)]
pub struct InputConfig {
    /// Object id, unique across all objects; names the object in topics and commands.
    pub id: ObjectId,
    /// BCM GPIO number read.
    pub pin: u8,
    /// Internal resistor: `up` for a switch to ground, `down` for a switch to 3.3 V.
    pub pull: Pull,
    /// How long the level must stay put before a change counts, to ignore contact bounce.
    pub debounce_ms: u64,
    /// True when a low pin means ON, as for a switch to ground with a pull-up.
    pub active_low: bool,
    /// Longest gap between two presses that makes a double press; 0 reports every press as
    /// single at once.
    pub double_ms: u64,
    /// Shortest hold that makes a long press; 0 turns long presses off.
    pub long_ms: u64,
    /// Room the input is in; `unassigned` when not given.
    pub room: String,
    /// Human name; the id when not given.
    pub name: String,
    /// Position across the room, for floor plans.
    pub x: f64,
    /// Position along the room, for floor plans.
    pub y: f64,
}

/// Why a configuration was refused, with the place to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the text came from.
    pub file: PathBuf,
    /// 1-based line of the offending text; 0 when the problem is the file itself.
    pub line: usize,
    /// What is wrong and, where it helps, what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read the config file: {e}"),
    })?;
    parse(&text, path)
}

/// Parses and checks config `text`; `file` is only used to name the source in errors.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    check::parse(text, file)
}

/// The built-in configuration of [`DEFAULT_CONFIG`], used when no file is given.
pub fn embedded_default() -> Config {
    // The text is compiled in, so it either always parses or never does; the unit test
    // `embedded_default_parses_and_validates` proves it does, and there is nothing sensible to
    // fall back to if it did not. This is the one place a config failure may panic.
    #[allow(clippy::expect_used)]
    parse(DEFAULT_CONFIG, Path::new("<built-in default.toml>"))
        .expect("the built-in default.toml is checked by a unit test")
}
