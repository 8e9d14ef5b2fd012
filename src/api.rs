//! The public MQTT interface: topic names, what `…/set` accepts, and the JSON we publish.
//!
//! Pure functions only, so every malformed payload can be tested without a broker:
//! - `<base>/<object>`: retained JSON state of the object;
//! - `<base>/<object>/set`: `ON`, `OFF`, `TOGGLE`, or a JSON object with `state`, `room`,
//!   `x`, `y`, and optionally `id` (command id) and `reply-to` (topic for the answer);
//! - `<base>/<object>/event`: events (press patterns, relays switched by their rules);
//! - `<base>/<device>/send`: bytes for a raw serial device;
//! - `<base>/instance/<uuid>/status`: retained `online`/`offline` (MQTT last will).
//!
//! Nothing else lives under `<base>/`, so a `<base>/#` subscriber sees the house and only the
//! house. Everything internal (the mesh, requests to the agent, answers to the CLI, joins)
//! lives under [`internal`]`(base)`, `$pimesh/<base>/…`: a `$` topic is never matched by a
//! leading `#` or `+` (MQTT-4.7.2-1), and the front door keeps users off most of it
//! (`door::acl`). Of it, users may use `$pimesh/<base>/agent/get` (the whole store, as
//! `pimesh get` asks for it) and `agent/peers`, answered on `reply-to`.

use crate::model::{self, ObjectId, Value};
use crate::replica::Object;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use uuid::Uuid;

/// The longest command id and `reply-to` topic accepted, in bytes. Both are kept (recent
/// answers, pending commands) and echoed, so neither may grow with what a client sends.
pub const MAX_ID_BYTES: usize = 128;

/// The largest `…/set` payload accepted, in bytes; a real command is a few hundred.
pub const MAX_SET_PAYLOAD: usize = 4096;

/// A request to change an object, as parsed from a `…/set` payload or built by the CLI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SetRequest {
    /// New switch state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Switch>,
    /// New room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// New x position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<f64>,
    /// New y position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<f64>,
    /// Command id chosen by the sender; echoed in the answer and used to drop duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Topic the answer is published on (QoS 1, not retained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// The three switch commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Switch {
    #[serde(rename = "ON", alias = "on")]
    On,
    #[serde(rename = "OFF", alias = "off")]
    Off,
    #[serde(rename = "TOGGLE", alias = "toggle")]
    Toggle,
}

impl Switch {
    /// The state to switch to, given whether the object is on now.
    pub fn target(self, now_on: bool) -> bool {
        match self {
            Switch::On => true,
            Switch::Off => false,
            Switch::Toggle => !now_on,
        }
    }

    /// Parses `on`, `off` or `toggle` in any case.
    pub fn parse(text: &str) -> Option<Switch> {
        match text.trim().to_ascii_uppercase().as_str() {
            "ON" => Some(Switch::On),
            "OFF" => Some(Switch::Off),
            "TOGGLE" => Some(Switch::Toggle),
            _ => None,
        }
    }
}

/// Why a `…/set` payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not UTF-8 text")]
    NotText,
    #[error("payload is empty; send ON, OFF, TOGGLE or a JSON object")]
    Empty,
    #[error("payload {0:?} is not ON, OFF, TOGGLE or a JSON object")]
    Unknown(String),
    #[error("payload is not a valid command: {0}")]
    BadJson(String),
    #[error("payload changes nothing; give state, room, x or y")]
    NothingToDo,
    #[error("room must be 1 to 64 characters, not {0:?}")]
    BadRoom(String),
    #[error("{0} must be a finite number")]
    BadNumber(&'static str),
    #[error("payload is {0} bytes; a command is at most {MAX_SET_PAYLOAD}")]
    TooLarge(usize),
    #[error("{what} is {len} bytes; at most {MAX_ID_BYTES} are allowed")]
    TooLong { what: &'static str, len: usize },
}

/// Parses a `…/set` payload.
pub fn parse_set(payload: &[u8]) -> Result<SetRequest, PayloadError> {
    if payload.len() > MAX_SET_PAYLOAD {
        return Err(PayloadError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotText)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(PayloadError::Empty);
    }
    let req = if text.starts_with('{') {
        serde_json::from_str::<SetRequest>(text)
            .map_err(|e| PayloadError::BadJson(e.to_string()))?
    } else if let Some(state) = Switch::parse(text) {
        SetRequest {
            state: Some(state),
            ..Default::default()
        }
    } else {
        let shown: String = text.chars().take(40).collect();
        return Err(PayloadError::Unknown(shown));
    };
    check(&req)?;
    Ok(req)
}

/// Checks the values of a request that serde cannot.
pub fn check(req: &SetRequest) -> Result<(), PayloadError> {
    if req.state.is_none() && req.room.is_none() && req.x.is_none() && req.y.is_none() {
        return Err(PayloadError::NothingToDo);
    }
    if let Some(room) = &req.room {
        if room.trim().is_empty() || room.chars().count() > 64 {
            return Err(PayloadError::BadRoom(room.chars().take(80).collect()));
        }
    }
    for (what, field) in [("command id", &req.id), ("reply-to", &req.reply_to)] {
        if let Some(len) = field
            .as_ref()
            .map(String::len)
            .filter(|&l| l > MAX_ID_BYTES)
        {
            return Err(PayloadError::TooLong { what, len });
        }
    }
    if req.x.is_some_and(|x| !x.is_finite()) {
        return Err(PayloadError::BadNumber("x"));
    }
    if req.y.is_some_and(|y| !y.is_finite()) {
        return Err(PayloadError::BadNumber("y"));
    }
    Ok(())
}

/// For a `…/set` payload that failed to parse, the command id and reply-to it may still
/// carry, so that a JSON client with a typo (or a number out of range, `1e400`) gets its
/// `rejected` answer instead of silence. Other fields are skipped without being converted,
/// and an id or reply-to over [`MAX_ID_BYTES`] is not taken.
pub fn salvage_reply_address(payload: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Address {
        id: Option<serde_json::Value>,
        reply_to: Option<serde_json::Value>,
    }
    let Ok(addr) = serde_json::from_slice::<Address>(payload) else {
        return (None, None);
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if s.len() <= MAX_ID_BYTES => Some(s),
        _ => None,
    };
    (text(addr.id), text(addr.reply_to))
}

/// What a topic on our broker means to the agent.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// `<base>/<object>/set`, with the id still unchecked (a bad id gets a `rejected` answer).
    Set(String),
    /// `$pimesh/<base>/agent/get`.
    Get,
    /// `$pimesh/<base>/agent/peers`.
    Peers,
    /// `<base>/<device>/send`: bytes for a raw serial device.
    Send(String),
    /// `<base>/<object>`: an object's retained state, which only the agent may write.
    State(String),
    /// `<base>/instance/<uuid>/status`: an instance's retained status, likewise.
    Status(Uuid),
}

/// Classifies `topic`, or None for topics the agent does not handle.
pub fn route(base: &str, topic: &str) -> Option<Route> {
    if topic == get_topic(base) {
        return Some(Route::Get);
    }
    if topic == peers_topic(base) {
        return Some(Route::Peers);
    }
    let rest = topic.strip_prefix(base)?.strip_prefix('/')?;
    if let Some(uuid) = rest
        .strip_prefix("instance/")
        .and_then(|r| r.strip_suffix("/status"))
    {
        return Uuid::parse_str(uuid).ok().map(Route::Status);
    }
    let Some((object, verb)) = rest.split_once('/') else {
        return (!rest.is_empty()).then(|| Route::State(rest.to_string()));
    };
    if object.is_empty() {
        return None;
    }
    match verb {
        "set" => Some(Route::Set(object.to_string())),
        "send" => Some(Route::Send(object.to_string())),
        _ => None,
    }
}

/// `<base>/<object>`: the retained state topic.
pub fn state_topic(base: &str, id: &ObjectId) -> String {
    format!("{base}/{id}")
}

/// `<base>/<object>/event`: events of an object (a press pattern, a relay switched by its
/// rules), not retained.
pub fn event_topic(base: &str, id: &ObjectId) -> String {
    format!("{base}/{id}/event")
}

/// `<base>/+/send`: bytes for raw serial devices.
pub fn send_filter(base: &str) -> String {
    format!("{base}/+/send")
}

/// `<base>/+/set`: every command topic.
pub fn set_filter(base: &str) -> String {
    format!("{base}/+/set")
}

/// `<base>/+`: every object's retained state, watched so a foreign value is replaced.
pub fn state_filter(base: &str) -> String {
    format!("{base}/+")
}

/// `<base>/instance/+/status`: every instance's retained status, watched likewise.
pub fn status_filter(base: &str) -> String {
    format!("{base}/instance/+/status")
}

/// `<base>/instance/<uuid>/status`: retained `online`/`offline`.
pub fn status_topic(base: &str, uuid: Uuid) -> String {
    format!("{base}/instance/{uuid}/status")
}

/// The first level of every internal topic. A `$` topic is not matched by a filter that
/// starts with a wildcard, so `#` and `<base>/#` subscribers never see the mesh's traffic.
pub const INTERNAL: &str = "$pimesh";

/// `$pimesh/<base>`: the root of the internal topics of the house under `base` (the mesh
/// protocol, requests to the agent, answers to the CLI, joins).
pub fn internal(base: &str) -> String {
    format!("{INTERNAL}/{base}")
}

/// `$pimesh/<base>/agent/get`: the store request topic. Only the agent owning the broker
/// answers it.
pub fn get_topic(base: &str) -> String {
    format!("{}/agent/get", internal(base))
}

/// `$pimesh/<base>/agent/peers`: the mesh view request topic (`pimesh peers`).
pub fn peers_topic(base: &str) -> String {
    format!("{}/agent/peers", internal(base))
}

/// Where CLI invocations wait for their answers: `$pimesh/<base>/client/cli/reply` for the
/// instance's own tools, `$pimesh/<base>/client/user-<name>/reply` for a user's (`--via`),
/// which only that user may read. One topic per user, the invocations told apart by request
/// id: the broker keeps a message log per topic for as long as it runs, so a topic per
/// invocation would grow the agent's memory with every command (a `get` of the whole house
/// each time).
pub fn reply_topic(base: &str, user: Option<&str>) -> String {
    match user {
        Some(name) => format!("{}/client/{USER_REPLIES}{name}/reply", internal(base)),
        None => format!("{}/client/cli/reply", internal(base)),
    }
}

/// The level of a user's own reply topics under `$pimesh/<base>/client/`, before its name.
pub const USER_REPLIES: &str = "user-";

/// The body of a `get` request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GetRequest {
    /// Topic the answer is published on.
    pub reply_to: String,
    /// Echoed in the answer, so clients sharing a reply topic tell their answers apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The answer to a `get` request: every live object's public state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GetReply {
    /// The request's id, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name of the answering instance.
    pub instance: String,
    /// UUID of the answering instance.
    pub uuid: Uuid,
    /// One public state object per live object, sorted by id.
    pub objects: Vec<serde_json::Value>,
}

/// The public JSON state of an object: every public property plus `id` (the agent adds who
/// holds it). Example: `{"id":"relay-1","state":"ON","room":"kitchen","x":1.0,"y":2.0,…}`.
pub fn state_json(id: &ObjectId, obj: &Object) -> serde_json::Value {
    let mut map = Map::new();
    map.insert("id".into(), json!(id.as_str()));
    for (prop, reg) in &obj.props {
        if prop == model::DELETED || prop.starts_with(model::CLAIM_PREFIX) {
            continue;
        }
        let v = match &reg.value {
            Value::Bool(b) => json!(b),
            Value::Number(n) => json!(n),
            Value::Text(t) => json!(t),
        };
        map.insert(prop.to_owned(), v);
    }
    serde_json::Value::Object(map)
}

/// The outcome of a command, as answered on `reply-to` and printed by the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Executed; `state` holds the result.
    Ok,
    /// The hardware or plugin reported an error.
    Failed,
    /// Bad value or unknown object.
    Rejected,
    /// No live instance holds the object.
    Unavailable,
    /// No answer in time.
    Timeout,
    /// The executor went away after it got the command and before it answered: it may or
    /// may not have run it. `state` is the last one known.
    Unknown,
}

/// The answer to one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Reply {
    /// The command id this answers.
    #[serde(default)]
    pub id: Option<String>,
    /// The object the command was for.
    pub object: String,
    /// What happened.
    pub result: Outcome,
    /// The object's state after the command (on `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
    /// Name of the instance that executed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_by: Option<String>,
    /// UUID of the instance that executed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_by_uuid: Option<Uuid>,
    /// Why, for anything but `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `false` when the executor's disk refuses writes: the change is made (on the hardware
    /// and in memory, and is written once the disk takes it) but not yet durable, so a crash
    /// now would lose it. Absent when it is written as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted: Option<bool>,
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
