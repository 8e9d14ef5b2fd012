//! Turns the raw file into a checked [`Config`], or the first problem with its line.
//!
//! Each check names the object and key it is about and says what to change; the line comes
//! from the span serde recorded for the value. Checks that compare objects (unique ids, one
//! object per pin) walk relays and inputs together in file order, so the error lands on the
//! later of the two lines and names the earlier one.

use super::raw::{RawAutomation, RawConfig, RawInput, RawRelay, RawVirtual};
use super::{
    Action, AutomationConfig, BoardConfig, BrokerConfig, Config, ConfigError, InputConfig,
    MeshConfig, RelayConfig, VirtualConfig,
};
use crate::boards::{self, Board};
use crate::hal::Backend;
use crate::model::ObjectId;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// Topic prefix when the file gives none.
const DEFAULT_BASE_TOPIC: &str = "pimesh";
/// Board when the file gives none: the most common Pi in a house today.
const DEFAULT_MODEL: &str = "pi4b";
/// First broker port tried when none is fixed: the standard MQTT port.
const DEFAULT_BASE_PORT: u16 = 1883;
/// Room of an object that does not say.
const DEFAULT_ROOM: &str = "unassigned";
/// Debounce for inputs that do not say: long enough for a typical push button.
const DEFAULT_DEBOUNCE_MS: u64 = 20;
/// Longest accepted debounce; beyond it a press would feel lost.
const MAX_DEBOUNCE_MS: u64 = 1000;
/// Longest accepted instance name.
const MAX_NAME_LEN: usize = 64;

/// The text being checked and where it came from, to turn spans into errors.
struct Source<'a> {
    /// The whole file, to count lines.
    text: &'a str,
    /// The file name to put in errors.
    file: &'a Path,
}

impl Source<'_> {
    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let newlines = self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n');
        newlines.count() + 1
    }

    /// An error at the line holding byte `span.start`.
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.error_at_line(self.line(span.start), message)
    }

    /// An error at a known line (0 for the file as a whole).
    fn error_at_line(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// The syntax, type or unknown-key error serde and toml found.
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let message = err.message().trim_end().replace('\n', ": ");
        match err.span() {
            Some(span) => self.error(span, message),
            None => self.error_at_line(0, message),
        }
    }
}

/// Parses and checks `text`, read from `file`.
pub(super) fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let src = Source { text, file };
    let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;

    let name = raw.name.map(|n| instance_name(&src, n)).transpose()?;
    let data_dir = match raw.data_dir {
        Some(dir) if dir.get_ref().as_os_str().is_empty() => {
            return Err(src.error(
                dir.span(),
                "data-dir is empty; give a directory or leave the key out",
            ));
        }
        dir => dir.map(Spanned::into_inner),
    };
    let base_topic = match raw.base_topic {
        Some(topic) => base_topic(&src, topic)?,
        None => DEFAULT_BASE_TOPIC.to_string(),
    };
    let (model, board) = board_model(&src, raw.board.model)?;
    let mesh = mesh(&src, raw.mesh)?;
    let relays = raw
        .relay
        .iter()
        .map(|r| relay(&src, board, r))
        .collect::<Result<_, _>>()?;
    let inputs = raw
        .input
        .iter()
        .map(|i| input(&src, board, i))
        .collect::<Result<_, _>>()?;
    unique_ids_and_pins(&src, &raw.relay, &raw.input)?;
    let virtuals = raw
        .virtuals
        .iter()
        .map(|v| virtual_object(&src, v))
        .collect::<Result<_, _>>()?;
    unique_virtual_ids(&src, &raw.relay, &raw.input, &raw.virtuals)?;
    let automations = raw
        .automations
        .iter()
        .map(|a| automation(&src, a))
        .collect::<Result<_, _>>()?;

    Ok(Config {
        name,
        data_dir,
        base_topic,
        board: BoardConfig {
            model,
            backend: raw.board.backend.unwrap_or(Backend::Rppal),
        },
        broker: BrokerConfig {
            port: nonzero_port(&src, "port", raw.broker.port)?,
            base_port: nonzero_port(&src, "base-port", raw.broker.base_port)?
                .unwrap_or(DEFAULT_BASE_PORT),
            bind: bind_address(&src, raw.broker.bind)?,
            segment_bytes: at_least(&src, "segment-bytes", raw.broker.segment_bytes, 1024)?
                .unwrap_or(crate::broker::SEGMENT_SIZE),
            segment_count: at_least(&src, "segment-count", raw.broker.segment_count, 1)?
                .unwrap_or(crate::broker::SEGMENT_COUNT),
        },
        mesh,
        relays,
        inputs,
        virtuals,
        automations,
    })
}

/// Checks the instance name: it appears in logs, topics and peer lists.
fn instance_name(src: &Source, name: Spanned<String>) -> Result<String, ConfigError> {
    let ok = !name.get_ref().is_empty()
        && name.get_ref().len() <= MAX_NAME_LEN
        && name
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name.into_inner())
    } else {
        Err(src.error(
            name.span(),
            format!(
                "instance name {:?} must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                name.get_ref()
            ),
        ))
    }
}

/// Checks the topic prefix: it must be a plain topic that can have levels appended.
fn base_topic(src: &Source, topic: Spanned<String>) -> Result<String, ConfigError> {
    let t = topic.get_ref();
    let problem = if t.is_empty() {
        Some("is empty; use a prefix such as \"pimesh\"")
    } else if t.contains(['+', '#']) {
        Some("contains an MQTT wildcard ('+' or '#'); remove it")
    } else if t.starts_with('/') || t.ends_with('/') {
        Some("must not start or end with '/'")
    } else if t.starts_with('$') {
        Some("must not start with '$', which brokers reserve for their own topics")
    } else {
        None
    };
    match problem {
        Some(p) => Err(src.error(topic.span(), format!("base-topic {t:?} {p}"))),
        None => Ok(topic.into_inner()),
    }
}

/// A broker limit with a floor below which rumqttd cannot work (it panics on segments under
/// 1 KiB or a count of 0).
fn at_least(
    src: &Source,
    key: &str,
    value: Option<Spanned<usize>>,
    min: usize,
) -> Result<Option<usize>, ConfigError> {
    match value {
        Some(v) if *v.get_ref() < min => {
            Err(src.error(v.span(), format!("broker {key} must be at least {min}")))
        }
        other => Ok(other.map(Spanned::into_inner)),
    }
}

/// Port 0 would let the OS pick a port that peers and tools could not be told in advance.
fn nonzero_port(
    src: &Source,
    key: &str,
    port: Option<Spanned<u16>>,
) -> Result<Option<u16>, ConfigError> {
    match port {
        Some(p) if *p.get_ref() == 0 => Err(src.error(
            p.span(),
            format!("broker {key} must be from 1 to 65535; leave `port` out to take the first free port"),
        )),
        other => Ok(other.map(Spanned::into_inner)),
    }
}

/// Parses the broker's listening address; a host name is refused because the broker must
/// know exactly which interface it serves.
fn bind_address(src: &Source, bind: Option<Spanned<String>>) -> Result<IpAddr, ConfigError> {
    let Some(bind) = bind else {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    };
    bind.get_ref().parse().map_err(|_| {
        src.error(
            bind.span(),
            format!(
                "broker bind {:?} is not an IP address; use \"0.0.0.0\" for every interface or \"127.0.0.1\" for this host only",
                bind.get_ref()
            ),
        )
    })
}

/// Finds the board the file names, listing the known ones when it is not among them.
fn board_model(
    src: &Source,
    model: Option<Spanned<String>>,
) -> Result<(String, &'static Board), ConfigError> {
    let (id, span) = match &model {
        Some(m) => (m.get_ref().as_str(), Some(m.span())),
        None => (DEFAULT_MODEL, None),
    };
    match boards::board(id) {
        Some(board) => Ok((id.to_string(), board)),
        None => {
            let mut known: Vec<&str> = boards::boards().iter().map(|b| b.id.as_str()).collect();
            known.sort_unstable();
            let message = format!(
                "unknown board model {id:?}; known models: {}",
                known.join(", ")
            );
            Err(match span {
                Some(span) => src.error(span, message),
                None => src.error_at_line(0, message),
            })
        }
    }
}

/// Checks peer addresses and that credentials come in pairs.
fn mesh(src: &Source, raw: super::raw::RawMesh) -> Result<MeshConfig, ConfigError> {
    for peer in &raw.peers {
        if let Err(why) = peer_address(peer.get_ref()) {
            return Err(src.error(peer.span(), format!("mesh peer {:?} {why}", peer.get_ref())));
        }
    }
    for (key, value) in [("username", &raw.username), ("password", &raw.password)] {
        if let Some(v) = value.as_ref().filter(|v| v.get_ref().is_empty()) {
            return Err(src.error(
                v.span(),
                format!("mesh {key} is empty; give one or leave the key out"),
            ));
        }
    }
    match (&raw.username, &raw.password) {
        (Some(user), None) => Err(src.error(
            user.span(),
            "mesh username is set without a password; set both username and password, or neither",
        )),
        (None, Some(pass)) => Err(src.error(
            pass.span(),
            "mesh password is set without a username; set both username and password, or neither",
        )),
        _ => Ok(MeshConfig {
            peers: raw.peers.into_iter().map(Spanned::into_inner).collect(),
            username: raw.username.map(Spanned::into_inner),
            password: raw.password.map(Spanned::into_inner),
        }),
    }
}

/// Why `peer` is not a usable `HOST:PORT`, if it is not.
fn peer_address(peer: &str) -> Result<(), &'static str> {
    let example = "is not HOST:PORT; write it like \"10.0.0.2:1883\" or \"[fd00::2]:1883\"";
    let Some((host, port)) = peer.rsplit_once(':') else {
        return Err(example);
    };
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(example);
    }
    if host.contains(':') && !bracketed {
        return Err("has an IPv6 host without brackets; write it like \"[fd00::2]:1883\"");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("has an invalid port; the port must be a number from 1 to 65535"),
    }
}

/// One object's id and pin as written, for the checks that compare objects.
struct Claim<'a> {
    /// `relay` or `input`, for messages.
    kind: &'static str,
    /// The id as written.
    id: &'a Spanned<String>,
    /// The pin as written.
    pin: &'a Spanned<u8>,
}

/// Checks that no id and no pin is used twice, reporting the later use.
fn unique_ids_and_pins(
    src: &Source,
    relays: &[RawRelay],
    inputs: &[RawInput],
) -> Result<(), ConfigError> {
    let mut claims: Vec<Claim> = relays
        .iter()
        .map(|r| Claim {
            kind: "relay",
            id: &r.id,
            pin: &r.pin,
        })
        .chain(inputs.iter().map(|i| Claim {
            kind: "input",
            id: &i.id,
            pin: &i.pin,
        }))
        .collect();
    claims.sort_by_key(|c| c.id.span().start);

    let mut ids: HashMap<&str, &Claim> = HashMap::new();
    let mut pins: HashMap<u8, &Claim> = HashMap::new();
    for claim in &claims {
        if let Some(first) = ids.insert(claim.id.get_ref(), claim) {
            return Err(src.error(
                claim.id.span(),
                format!(
                    "object id {:?} is already used by the {} on line {}; ids must be unique across relays and inputs",
                    claim.id.get_ref(),
                    first.kind,
                    src.line(first.id.span().start),
                ),
            ));
        }
        if let Some(first) = pins.insert(*claim.pin.get_ref(), claim) {
            return Err(src.error(
                claim.pin.span(),
                format!(
                    "{} {:?}: GPIO {} is already used by {} {:?} on line {}; give each object its own pin",
                    claim.kind,
                    claim.id.get_ref(),
                    claim.pin.get_ref(),
                    first.kind,
                    first.id.get_ref(),
                    src.line(first.pin.span().start),
                ),
            ));
        }
    }
    Ok(())
}

/// Checks an id with the [`ObjectId`] rules.
fn object_id(src: &Source, kind: &str, id: &Spanned<String>) -> Result<ObjectId, ConfigError> {
    ObjectId::new(id.get_ref().as_str())
        .map_err(|e| src.error(id.span(), format!("invalid {kind} id: {e}")))
}

/// Checks that the board has the pin.
fn gpio(
    src: &Source,
    board: &Board,
    kind: &str,
    id: &ObjectId,
    pin: &Spanned<u8>,
) -> Result<u8, ConfigError> {
    let p = *pin.get_ref();
    if board.has_gpio(p) {
        Ok(p)
    } else {
        Err(src.error(
            pin.span(),
            format!(
                "{kind} {:?}: board {} has no GPIO {p}; use a BCM GPIO number in {}",
                id.as_str(),
                board.id,
                pin_ranges(&board.gpio)
            ),
        ))
    }
}

/// Writes a pin list compactly, e.g. `2-27` or `0-1, 4, 6-27`.
fn pin_ranges(pins: &[u8]) -> String {
    let mut sorted = pins.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end.saturating_add(1) {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

/// Room, name and position of an object, checked.
struct Place {
    /// Room, defaulted.
    room: String,
    /// Name, defaulted to the id.
    name: String,
    /// Position across the room.
    x: f64,
    /// Position along the room.
    y: f64,
}

/// Checks and defaults the keys that say where an object is.
fn place(
    src: &Source,
    kind: &str,
    id: &ObjectId,
    room: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    x: Option<Spanned<f64>>,
    y: Option<Spanned<f64>>,
) -> Result<Place, ConfigError> {
    let what = format!("{kind} {:?}", id.as_str());
    let text = |value: Option<Spanned<String>>, key: &str, default: &str, hint: &str| match value {
        Some(v) if v.get_ref().is_empty() => {
            Err(src.error(v.span(), format!("{what}: {key} is empty; {hint}")))
        }
        Some(v) => Ok(v.into_inner()),
        None => Ok(default.to_string()),
    };
    let coordinate = |value: Option<Spanned<f64>>, key: &str| match value {
        Some(v) if !v.get_ref().is_finite() => {
            Err(src.error(v.span(), format!("{what}: {key} must be a finite number")))
        }
        Some(v) => Ok(v.into_inner()),
        None => Ok(0.0),
    };
    Ok(Place {
        room: text(
            room,
            "room",
            DEFAULT_ROOM,
            "leave the key out for \"unassigned\"",
        )?,
        name: text(name, "name", id.as_str(), "leave the key out to use the id")?,
        x: coordinate(x, "x")?,
        y: coordinate(y, "y")?,
    })
}

/// Checks one relay and fills its defaults.
fn relay(src: &Source, board: &Board, raw: &RawRelay) -> Result<RelayConfig, ConfigError> {
    let id = object_id(src, "relay", &raw.id)?;
    let pin = gpio(src, board, "relay", &id, &raw.pin)?;
    let place = place(
        src,
        "relay",
        &id,
        raw.room.clone(),
        raw.name.clone(),
        raw.x.clone(),
        raw.y.clone(),
    )?;
    Ok(RelayConfig {
        id,
        pin,
        active_low: raw.active_low,
        power_on: raw.power_on,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
    })
}

/// Checks one input and fills its defaults.
fn input(src: &Source, board: &Board, raw: &RawInput) -> Result<InputConfig, ConfigError> {
    let id = object_id(src, "input", &raw.id)?;
    let pin = gpio(src, board, "input", &id, &raw.pin)?;
    let debounce_ms = match &raw.debounce_ms {
        Some(d) if *d.get_ref() > MAX_DEBOUNCE_MS => {
            return Err(src.error(
                d.span(),
                format!(
                    "input {:?}: debounce-ms {} is more than the maximum of {MAX_DEBOUNCE_MS}",
                    id.as_str(),
                    d.get_ref()
                ),
            ));
        }
        Some(d) => *d.get_ref(),
        None => DEFAULT_DEBOUNCE_MS,
    };
    let place = place(
        src,
        "input",
        &id,
        raw.room.clone(),
        raw.name.clone(),
        raw.x.clone(),
        raw.y.clone(),
    )?;
    Ok(InputConfig {
        id,
        pin,
        pull: raw.pull,
        debounce_ms,
        active_low: raw.active_low,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
    })
}

/// Checks one virtual object and fills its defaults.
fn virtual_object(src: &Source, raw: &RawVirtual) -> Result<VirtualConfig, ConfigError> {
    let id = object_id(src, "virtual", &raw.id)?;
    let place = place(
        src,
        "virtual",
        &id,
        raw.room.clone(),
        raw.name.clone(),
        raw.x.clone(),
        raw.y.clone(),
    )?;
    Ok(VirtualConfig {
        id,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
    })
}

/// Checks that no virtual object reuses an id of any other object in the file.
fn unique_virtual_ids(
    src: &Source,
    relays: &[RawRelay],
    inputs: &[RawInput],
    virtuals: &[RawVirtual],
) -> Result<(), ConfigError> {
    // Byte offsets, not lines: counting lines for every object would make a file with
    // thousands of objects take seconds to check.
    let mut seen: HashMap<&str, (&str, usize)> = HashMap::new();
    let hardware = relays
        .iter()
        .map(|r| ("relay", &r.id))
        .chain(inputs.iter().map(|i| ("input", &i.id)));
    for (kind, id) in hardware {
        seen.insert(id.get_ref(), (kind, id.span().start));
    }
    for v in virtuals {
        if let Some((kind, offset)) = seen.get(v.id.get_ref().as_str()) {
            return Err(src.error(
                v.id.span(),
                format!(
                    "object id {:?} is already used by the {kind} on line {}; ids must be unique across all objects",
                    v.id.get_ref(),
                    src.line(*offset)
                ),
            ));
        }
        seen.insert(v.id.get_ref(), ("virtual", v.id.span().start));
    }
    Ok(())
}

/// Checks one automation rule.
fn automation(src: &Source, raw: &RawAutomation) -> Result<AutomationConfig, ConfigError> {
    let id = object_id(src, "automation", &raw.id)?;
    let when = object_id(src, "automation", &raw.when)?;
    let then = object_id(src, "automation", &raw.then)?;
    let room = match (&raw.action, &raw.room) {
        (Action::Move, None) => {
            return Err(src.error(
                raw.id.span(),
                format!("automation {:?}: action \"move\" needs a room", id.as_str()),
            ))
        }
        (Action::Move, Some(r)) if r.get_ref().trim().is_empty() => {
            return Err(src.error(
                r.span(),
                format!("automation {:?}: room is empty", id.as_str()),
            ))
        }
        (_, room) => room.as_ref().map(|r| r.get_ref().trim().to_string()),
    };
    Ok(AutomationConfig {
        id,
        when,
        property: raw
            .property
            .clone()
            .unwrap_or_else(|| crate::model::STATE.to_string()),
        to: raw.to.clone(),
        then,
        action: raw.action,
        room,
        x: raw.x.filter(|x| x.is_finite()),
        y: raw.y.filter(|y| y.is_finite()),
    })
}
