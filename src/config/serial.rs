//! The `[[serial]]` tables: a device on a tty, its line settings, and its channels.
//!
//! A `line` device speaks a text protocol: each `[[serial.channel]]` is a relay-like object
//! with a command to send for on and off, and the reply that confirms each. A `raw` device is
//! a byte bridge with no channels. Replies are matched exactly (after the line end is cut),
//! because a pattern that matches too much could report a relay on that is off.

use super::check::Source;
use super::objects::{self, RawPlace};
use super::ConfigError;
use crate::model::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use toml::Spanned;

/// Baud rate when the file gives none: what most Arduino sketches use.
const DEFAULT_BAUD: u32 = 9600;
/// Reply timeout when the file gives none: a microcontroller answers in milliseconds, a
/// device that has not answered in a second is not going to.
const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Longest accepted reply timeout.
const MAX_TIMEOUT_MS: u64 = 60_000;
/// tty paths of the Pi's own UART, whose pins (GPIO 14 and 15) are then taken.
const PI_UART_PATHS: [&str; 3] = ["/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0"];

/// Parity bit; config: `parity = "none" | "even" | "odd"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit: almost every device.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// How the device's bytes are read; config: `protocol = "line" | "raw"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Text lines: commands from templates, replies matched against patterns.
    #[default]
    Line,
    /// Bytes in, bytes out, for anything else.
    Raw,
}

/// Data bits per character; config: `data-bits = 5 | 6 | 7 | 8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataBits {
    /// 5 bits.
    Five,
    /// 6 bits.
    Six,
    /// 7 bits: some old devices with parity.
    Seven,
    /// 8 bits: almost every device.
    Eight,
}

/// Stop bits; config: `stop-bits = 1 | 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopBits {
    /// One stop bit: almost every device.
    One,
    /// Two stop bits.
    Two,
}

/// One `[[serial]]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct SerialConfig {
    /// Object id of the device; availability and (raw) the byte topics use it.
    pub id: ObjectId,
    /// The tty, e.g. `/dev/ttyUSB0` or a stable `/dev/serial/by-id/...` link.
    pub path: PathBuf,
    /// Line speed.
    pub baud: u32,
    /// Data bits per character.
    pub data_bits: DataBits,
    /// Parity bit.
    pub parity: Parity,
    /// Stop bits.
    pub stop_bits: StopBits,
    /// Line or raw.
    pub protocol: Protocol,
    /// How long a line command waits for its reply before it fails.
    pub timeout_ms: u64,
    /// A reply starting with this fails the waiting command with the reply as the reason.
    pub fail_prefix: Option<String>,
    /// The relay-like channels of a line device.
    pub channels: Vec<SerialChannel>,
    /// Room of the device; also the default room of its channels.
    pub room: String,
    /// Human name; the id when not given.
    pub name: String,
    /// Position across the room.
    pub x: f64,
    /// Position along the room.
    pub y: f64,
}

/// One `[[serial.channel]]` table: a relay-like object behind a line device.
#[derive(Clone, Debug, PartialEq)]
pub struct SerialChannel {
    /// Object id, unique across all objects.
    pub id: ObjectId,
    /// Bytes sent to switch on, e.g. `"R1=1\n"`.
    pub on: String,
    /// Bytes sent to switch off.
    pub off: String,
    /// The line that confirms on (also read as an unsolicited report); without it a command
    /// succeeds once written.
    pub on_reply: Option<String>,
    /// The line that confirms off.
    pub off_reply: Option<String>,
    /// Room; the device's when not given.
    pub room: String,
    /// Human name; the id when not given.
    pub name: String,
    /// Position across the room; the device's when not given.
    pub x: f64,
    /// Position along the room; the device's when not given.
    pub y: f64,
}

/// One `[[serial]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawSerial {
    /// Object id; checked with the id rules and for uniqueness.
    pub id: Spanned<String>,
    /// tty path; checked absolute and unique.
    pub path: Spanned<String>,
    /// Line speed; checked non-zero.
    pub baud: Option<Spanned<u32>>,
    /// Data bits; checked 5 to 8.
    pub data_bits: Option<Spanned<u8>>,
    /// Parity.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits; checked 1 or 2.
    pub stop_bits: Option<Spanned<u8>>,
    /// Line or raw.
    #[serde(default)]
    pub protocol: Protocol,
    /// Reply timeout; checked against its bounds.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Failure reply prefix; checked non-empty.
    pub fail_prefix: Option<Spanned<String>>,
    /// The channels.
    #[serde(default)]
    pub channel: Vec<RawChannel>,
    /// Room; checked non-empty.
    pub room: Option<Spanned<String>>,
    /// Name; checked non-empty.
    pub name: Option<Spanned<String>>,
    /// Position; checked finite.
    pub x: Option<Spanned<f64>>,
    /// Position; checked finite.
    pub y: Option<Spanned<f64>>,
}

/// One `[[serial.channel]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawChannel {
    /// Object id; checked with the id rules and for uniqueness.
    pub id: Spanned<String>,
    /// On command; checked non-empty.
    pub on: Spanned<String>,
    /// Off command; checked non-empty.
    pub off: Spanned<String>,
    /// On reply; checked non-empty and different from the off reply.
    pub on_reply: Option<Spanned<String>>,
    /// Off reply; checked non-empty.
    pub off_reply: Option<Spanned<String>>,
    /// Room; checked non-empty.
    pub room: Option<Spanned<String>>,
    /// Name; checked non-empty.
    pub name: Option<Spanned<String>>,
    /// Position; checked finite.
    pub x: Option<Spanned<f64>>,
    /// Position; checked finite.
    pub y: Option<Spanned<f64>>,
}

/// True if `path` is the Pi's own UART on GPIO 14 and 15.
pub(super) fn uses_pi_uart(path: &str) -> bool {
    PI_UART_PATHS.contains(&path)
}

/// Checks one serial device and its channels.
pub(super) fn serial(src: &Source, raw: &RawSerial) -> Result<SerialConfig, ConfigError> {
    let id = objects::object_id(src, "serial device", &raw.id)?;
    let what = format!("serial {:?}", id.as_str());
    if !raw.path.get_ref().starts_with('/') {
        return Err(src.error(
            raw.path.span(),
            format!(
                "{what}: path {:?} must be an absolute tty path such as \"/dev/ttyUSB0\"",
                raw.path.get_ref()
            ),
        ));
    }
    let baud = match &raw.baud {
        Some(b) if *b.get_ref() == 0 => {
            return Err(src.error(
                b.span(),
                format!("{what}: baud must be more than 0, e.g. 9600 or 115200"),
            ))
        }
        b => b.as_ref().map_or(DEFAULT_BAUD, |b| *b.get_ref()),
    };
    let data_bits = match raw.data_bits.as_ref().map(|d| (d, *d.get_ref())) {
        None | Some((_, 8)) => DataBits::Eight,
        Some((_, 7)) => DataBits::Seven,
        Some((_, 6)) => DataBits::Six,
        Some((_, 5)) => DataBits::Five,
        Some((d, n)) => {
            return Err(src.error(
                d.span(),
                format!("{what}: data-bits {n} must be 5, 6, 7 or 8"),
            ))
        }
    };
    let stop_bits = match raw.stop_bits.as_ref().map(|s| (s, *s.get_ref())) {
        None | Some((_, 1)) => StopBits::One,
        Some((_, 2)) => StopBits::Two,
        Some((s, n)) => {
            return Err(src.error(s.span(), format!("{what}: stop-bits {n} must be 1 or 2")))
        }
    };
    let timeout_ms = match &raw.timeout_ms {
        Some(t) if *t.get_ref() == 0 || *t.get_ref() > MAX_TIMEOUT_MS => {
            return Err(src.error(
                t.span(),
                format!("{what}: timeout-ms must be from 1 to {MAX_TIMEOUT_MS}"),
            ))
        }
        t => t.as_ref().map_or(DEFAULT_TIMEOUT_MS, |t| *t.get_ref()),
    };
    let fail_prefix = non_empty(src, &what, "fail-prefix", &raw.fail_prefix)?;
    if raw.protocol == Protocol::Raw {
        if let Some(c) = raw.channel.first() {
            return Err(src.error(
                c.id.span(),
                format!("{what}: channels need protocol = \"line\"; a raw device is a byte bridge"),
            ));
        }
    }
    let place = objects::place(
        src,
        &what,
        &id,
        RawPlace {
            room: &raw.room,
            name: &raw.name,
            x: &raw.x,
            y: &raw.y,
        },
        objects::DEFAULT_ROOM,
        (0.0, 0.0),
    )?;
    let channels = raw
        .channel
        .iter()
        .map(|c| channel(src, &place, c))
        .collect::<Result<_, _>>()?;
    Ok(SerialConfig {
        id,
        path: PathBuf::from(raw.path.get_ref()),
        baud,
        data_bits,
        parity: raw.parity,
        stop_bits,
        protocol: raw.protocol,
        timeout_ms,
        fail_prefix,
        channels,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
    })
}

/// An optional text that must not be empty when given.
fn non_empty(
    src: &Source,
    what: &str,
    key: &str,
    value: &Option<Spanned<String>>,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) if v.get_ref().is_empty() => Err(src.error(
            v.span(),
            format!("{what}: {key} is empty; give the text or leave the key out"),
        )),
        other => Ok(other.as_ref().map(|v| v.get_ref().clone())),
    }
}

/// Checks one channel; room and position default to the device's.
fn channel(
    src: &Source,
    device: &objects::Place,
    raw: &RawChannel,
) -> Result<SerialChannel, ConfigError> {
    let id = objects::object_id(src, "serial channel", &raw.id)?;
    let what = format!("serial channel {:?}", id.as_str());
    for (key, value) in [("on", &raw.on), ("off", &raw.off)] {
        if value.get_ref().is_empty() {
            return Err(src.error(
                value.span(),
                format!(
                    "{what}: {key} is empty; give the bytes that switch it {key}, e.g. \"R1=1\\n\""
                ),
            ));
        }
    }
    let on_reply = non_empty(src, &what, "on-reply", &raw.on_reply)?;
    let off_reply = non_empty(src, &what, "off-reply", &raw.off_reply)?;
    if let (Some(on), Some(off)) = (&on_reply, &raw.off_reply) {
        if on == off.get_ref() {
            return Err(src.error(
                off.span(),
                format!("{what}: on-reply and off-reply are the same, so a reply could not say which state the device is in"),
            ));
        }
    }
    let place = objects::place(
        src,
        &what,
        &id,
        RawPlace {
            room: &raw.room,
            name: &raw.name,
            x: &raw.x,
            y: &raw.y,
        },
        &device.room,
        (device.x, device.y),
    )?;
    Ok(SerialChannel {
        id,
        on: raw.on.get_ref().clone(),
        off: raw.off.get_ref().clone(),
        on_reply,
        off_reply,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
    })
}

/// Checks that no two serial devices name the same tty.
pub(super) fn unique_paths(src: &Source, serials: &[RawSerial]) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, &RawSerial> = HashMap::new();
    for s in serials {
        if let Some(first) = seen.insert(s.path.get_ref(), s) {
            return Err(src.error(
                s.path.span(),
                format!(
                    "serial {:?}: path {} is already used by serial {:?} on line {}; a tty can serve one device",
                    s.id.get_ref(),
                    s.path.get_ref(),
                    first.id.get_ref(),
                    src.line(first.path.span().start)
                ),
            ));
        }
    }
    Ok(())
}
