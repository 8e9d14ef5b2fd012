//! Turns the raw file into a checked [`Config`], or the first problem with its line.
//!
//! Each check names the object and key it is about and says what to change; the line comes
//! from the span serde recorded for the value. This file checks the instance-wide tables and
//! runs the object checks of `objects.rs`, `serial.rs` and `pins.rs` in a fixed order, so the
//! first problem in the file's logic is the one reported.

use super::raw::RawConfig;
use super::{objects, pins, serial, software};
use super::{BoardConfig, BrokerConfig, Config, ConfigError, MeshConfig};
use crate::boards::{self, Board};
use crate::hal::cdev::DEFAULT_LINE_PREFIX;
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
/// Longest accepted instance name.
const MAX_NAME_LEN: usize = 64;

/// The text being checked and where it came from, to turn spans into errors.
pub(super) struct Source<'a> {
    /// The whole file, to count lines.
    text: &'a str,
    /// The file name to put in errors.
    file: &'a Path,
}

impl Source<'_> {
    /// The 1-based line holding byte `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let newlines = self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n');
        newlines.count() + 1
    }

    /// An error at the line holding byte `span.start`.
    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.error_at_line(self.line(span.start), message)
    }

    /// An error at a known line (0 for the file as a whole).
    pub(super) fn error_at_line(&self, line: usize, message: impl Into<String>) -> ConfigError {
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
    objects::unique_ids(&src, &raw)?;

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
    let hat = pins::hat(&src, raw.board.hat.as_ref())?;
    let line_prefix = match raw.board.line_prefix {
        Some(p) if p.get_ref().is_empty() || p.get_ref().contains(char::is_whitespace) => {
            return Err(src.error(
                p.span(),
                "line-prefix must be a non-empty word such as \"GPIO\"; leave the key out for \"GPIO\"",
            ))
        }
        Some(p) => p.into_inner(),
        None => DEFAULT_LINE_PREFIX.to_string(),
    };
    let mesh = mesh(&src, raw.mesh)?;
    let on_stop = raw.board.on_stop.unwrap_or_default();
    let relays = raw
        .relay
        .iter()
        .map(|r| objects::relay(&src, board, hat, on_stop, r))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = raw
        .input
        .iter()
        .map(|i| objects::input(&src, board, i))
        .collect::<Result<Vec<_>, _>>()?;
    let serials = raw
        .serial
        .iter()
        .map(|s| serial::serial(&src, s))
        .collect::<Result<Vec<_>, _>>()?;
    let virtuals = raw
        .virtuals
        .iter()
        .map(|v| software::virtual_object(&src, v))
        .collect::<Result<Vec<_>, _>>()?;
    let automations = raw
        .automations
        .iter()
        .map(|a| software::automation(&src, a))
        .collect::<Result<Vec<_>, _>>()?;
    serial::unique_paths(&src, &raw.serial)?;
    let claims = pins::claims(&raw.relay, &relays, &raw.input, &inputs);
    pins::one_use_per_pin(&src, &claims)?;
    pins::uart(&src, board, &claims, &raw.serial)?;
    objects::interlock_groups(&src, &raw.relay)?;

    let mqtt5_port = mqtt5_port(&src, &raw.broker)?;
    let plaintext = match &raw.broker.plaintext {
        Some(p) if !*p.get_ref() && !mesh.tls => {
            return Err(src.error(
                p.span(),
                "broker plaintext = false leaves mesh links nowhere to go with mesh tls = false; turn one of them on",
            ))
        }
        Some(p) => *p.get_ref(),
        None => true,
    };
    let homeassistant = super::homeassistant::table(&src, raw.homeassistant, &base_topic)?;
    let broker_ports: Vec<u16> = [
        &raw.broker.port,
        &raw.broker.mqtt5_port,
        &raw.broker.tls_port,
    ]
    .into_iter()
    .filter_map(|p| p.as_ref().map(|p| *p.get_ref()))
    .collect();
    let web = super::web::table(&src, raw.web, &broker_ports)?;
    let external = super::external::table(&src, &raw.broker)?;
    Ok(Config {
        name,
        data_dir,
        base_topic,
        board: BoardConfig {
            model,
            backend: raw.board.backend.unwrap_or_default(),
            hat: hat.map(|h| h.id.clone()),
            line_prefix,
        },
        broker: BrokerConfig {
            port: nonzero_port(&src, "port", raw.broker.port)?,
            base_port: nonzero_port(&src, "base-port", raw.broker.base_port)?
                .unwrap_or(DEFAULT_BASE_PORT),
            mqtt5_port,
            bind: bind_address(&src, raw.broker.bind)?,
            segment_bytes: at_least(&src, "segment-bytes", raw.broker.segment_bytes, 1024)?
                .unwrap_or(crate::broker::SEGMENT_SIZE),
            segment_count: at_least(&src, "segment-count", raw.broker.segment_count, 1)?
                .unwrap_or(crate::broker::SEGMENT_COUNT),
            allow_anonymous: raw.broker.allow_anonymous.unwrap_or(false),
            tls_port: nonzero_port(&src, "tls-port", raw.broker.tls_port)?,
            plaintext,
            max_retained: at_least(&src, "max-retained", raw.broker.max_retained, 1)?
                .unwrap_or(crate::door::Limits::default().max_retained_topics),
            websocket: raw.broker.websocket.unwrap_or(true),
            ws_port: nonzero_port(&src, "ws-port", raw.broker.ws_port)?,
            external,
        },
        mesh,
        relays,
        inputs,
        serials,
        virtuals,
        automations,
        homeassistant,
        web,
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
            format!(
                "broker {key} must be from 1 to 65535; leave it out to take the first free port"
            ),
        )),
        other => Ok(other.map(Spanned::into_inner)),
    }
}

/// The fixed MQTT 5 port: not zero, and not the fixed MQTT 3.1.1 port.
fn mqtt5_port(src: &Source, broker: &super::raw::RawBroker) -> Result<Option<u16>, ConfigError> {
    let port = nonzero_port(src, "mqtt5-port", broker.mqtt5_port.clone())?;
    match (
        &broker.mqtt5_port,
        broker.port.as_ref().map(|p| *p.get_ref()),
    ) {
        (Some(p5), Some(p)) if *p5.get_ref() == p => Err(src.error(
            p5.span(),
            format!(
                "broker mqtt5-port {p} is also the broker port; MQTT 5 needs a port of its own"
            ),
        )),
        _ => Ok(port),
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

/// Checks peer addresses and the invitation token.
fn mesh(src: &Source, raw: super::raw::RawMesh) -> Result<MeshConfig, ConfigError> {
    for peer in &raw.peers {
        if let Err(why) = peer_address(peer.get_ref()) {
            return Err(src.error(peer.span(), format!("mesh peer {:?} {why}", peer.get_ref())));
        }
    }
    if let Some(token) = &raw.join {
        if let Err(e) = crate::membership::Token::decode(token.get_ref()) {
            return Err(src.error(token.span(), format!("mesh join: {e}")));
        }
    }
    let max_clock_ahead_ms = match raw.max_clock_ahead_s {
        None => crate::clock::DEFAULT_MAX_AHEAD_MS,
        Some(s) if *s.get_ref() == 0 || *s.get_ref() > 86_400 => {
            return Err(src.error(
                s.span(),
                format!(
                    "mesh max-clock-ahead-s is {}; give 1 to 86400 seconds",
                    s.get_ref()
                ),
            ))
        }
        Some(s) => s.into_inner() * 1000,
    };
    let stale_after_ms = match raw.stale_after_s {
        None => crate::mesh::peers::STALE_AFTER_MS,
        Some(s) if *s.get_ref() == 0 || *s.get_ref() > 365 * 86_400 => {
            return Err(src.error(
                s.span(),
                format!(
                    "mesh stale-after-s is {}; give 1 second to a year",
                    s.get_ref()
                ),
            ))
        }
        Some(s) => s.into_inner() * 1000,
    };
    Ok(MeshConfig {
        peers: raw.peers.into_iter().map(Spanned::into_inner).collect(),
        join: raw.join.map(Spanned::into_inner),
        max_clock_ahead_ms,
        tls: raw.tls.unwrap_or(true),
        stale_after_ms,
        mdns: raw.mdns.unwrap_or(true),
    })
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
