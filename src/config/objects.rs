//! Checks of the `[[relay]]` and `[[input]]` tables, and of the rules between objects that are
//! not about pins: unique ids and interlock groups.
//!
//! Checks that compare objects walk them in file order, so the error lands on the later of two
//! lines and names the earlier one.

use super::check::Source;
use super::raw::{RawConfig, RawInput, RawRelay};
use super::{pins, ConfigError, InputConfig, OnStop, PowerOn, RelayConfig};
use crate::boards::{Board, Hat};
use crate::model::ObjectId;
use std::collections::HashMap;
use toml::Spanned;

/// Room of an object that does not say.
pub(super) const DEFAULT_ROOM: &str = "unassigned";
/// Debounce for inputs that do not say: long enough for a typical push button.
const DEFAULT_DEBOUNCE_MS: u64 = 20;
/// Longest accepted debounce; beyond it a press would feel lost.
const MAX_DEBOUNCE_MS: u64 = 1000;
/// Default gap for a double press, as in most home-automation firmwares.
const DEFAULT_DOUBLE_MS: u64 = 400;
/// Default hold for a long press.
const DEFAULT_LONG_MS: u64 = 800;
/// Longest accepted double-press gap; beyond it single presses feel slow.
const MAX_DOUBLE_MS: u64 = 2000;
/// Longest accepted long-press hold.
const MAX_LONG_MS: u64 = 10_000;
/// Longest pulse: beyond an hour a pulse is a schedule, not a pulse.
const MAX_PULSE_MS: u64 = 3_600_000;
/// Longest watchdog: a week.
const MAX_ON_S: u64 = 604_800;
/// Longest interlock dead time: a command waits that long for its answer, and the CLI's
/// default timeout is 5 s.
const MAX_DEAD_MS: u64 = 2000;

/// Checks an id with the [`ObjectId`] rules.
pub(super) fn object_id(
    src: &Source,
    kind: &str,
    id: &Spanned<String>,
) -> Result<ObjectId, ConfigError> {
    ObjectId::new(id.get_ref().as_str())
        .map_err(|e| src.error(id.span(), format!("invalid {kind} id: {e}")))
}

/// Room, name and position of an object, checked.
pub(super) struct Place {
    /// Room, defaulted.
    pub room: String,
    /// Name, defaulted to the id.
    pub name: String,
    /// Position across the room.
    pub x: f64,
    /// Position along the room.
    pub y: f64,
}

/// The keys that say where an object is, as written.
pub(super) struct RawPlace<'a> {
    /// `room`.
    pub room: &'a Option<Spanned<String>>,
    /// `name`.
    pub name: &'a Option<Spanned<String>>,
    /// `x`.
    pub x: &'a Option<Spanned<f64>>,
    /// `y`.
    pub y: &'a Option<Spanned<f64>>,
}

/// Checks and defaults the keys that say where an object is; `default_room` and the default
/// position apply when a key is left out.
pub(super) fn place(
    src: &Source,
    what: &str,
    id: &ObjectId,
    raw: RawPlace,
    default_room: &str,
    default_xy: (f64, f64),
) -> Result<Place, ConfigError> {
    let text = |value: &Option<Spanned<String>>, key: &str, default: &str, hint: &str| match value {
        Some(v) if v.get_ref().is_empty() => {
            Err(src.error(v.span(), format!("{what}: {key} is empty; {hint}")))
        }
        Some(v) => Ok(v.get_ref().clone()),
        None => Ok(default.to_string()),
    };
    let coordinate = |value: &Option<Spanned<f64>>, key: &str, default: f64| match value {
        Some(v) if !v.get_ref().is_finite() => {
            Err(src.error(v.span(), format!("{what}: {key} must be a finite number")))
        }
        Some(v) => Ok(*v.get_ref()),
        None => Ok(default),
    };
    let room_hint = format!("leave the key out for {default_room:?}");
    Ok(Place {
        room: text(raw.room, "room", default_room, &room_hint)?,
        name: text(
            raw.name,
            "name",
            id.as_str(),
            "leave the key out to use the id",
        )?,
        x: coordinate(raw.x, "x", default_xy.0)?,
        y: coordinate(raw.y, "y", default_xy.1)?,
    })
}

/// An optional number that must lie in `1..=max` when given.
fn bounded(
    src: &Source,
    what: &str,
    key: &str,
    value: &Option<Spanned<u64>>,
    max: u64,
    hint: &str,
) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(v) if *v.get_ref() == 0 || *v.get_ref() > max => Err(src.error(
            v.span(),
            format!("{what}: {key} must be from 1 to {max}{hint}"),
        )),
        other => Ok(other.as_ref().map(|v| *v.get_ref())),
    }
}

/// An optional number of ms that must be at most `max`, or its default.
fn at_most(
    src: &Source,
    what: &str,
    key: &str,
    value: &Option<Spanned<u64>>,
    max: u64,
    default: u64,
) -> Result<u64, ConfigError> {
    match value {
        Some(v) if *v.get_ref() > max => Err(src.error(
            v.span(),
            format!(
                "{what}: {key} {} is more than the maximum of {max}",
                v.get_ref()
            ),
        )),
        Some(v) => Ok(*v.get_ref()),
        None => Ok(default),
    }
}

/// Interlock group names follow the object id rules, so they can appear in topics later.
fn group_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks one relay and fills its defaults; `on_stop` is the `[board]` default.
pub(super) fn relay(
    src: &Source,
    board: &Board,
    hat: Option<&Hat>,
    on_stop: OnStop,
    raw: &RawRelay,
) -> Result<RelayConfig, ConfigError> {
    let id = object_id(src, "relay", &raw.id)?;
    let what = format!("relay {:?}", id.as_str());
    let (pin, channel, active_low) = pins::relay_pin(src, board, hat, &what, raw)?;
    let pulse_ms = bounded(
        src,
        &what,
        "pulse-ms",
        &raw.pulse_ms,
        MAX_PULSE_MS,
        " (an hour); leave the key out for a relay that stays on",
    )?;
    let max_on_s = bounded(
        src,
        &what,
        "max-on-s",
        &raw.max_on_s,
        MAX_ON_S,
        " (a week); leave the key out for no limit",
    )?;
    let interlock = match &raw.interlock {
        Some(group) if !group_name_ok(group.get_ref()) => {
            return Err(src.error(
                group.span(),
                format!(
                    "{what}: interlock group {:?} must be 1 to 64 characters of a-z, 0-9 and '-'",
                    group.get_ref()
                ),
            ))
        }
        other => other.as_ref().map(|g| g.get_ref().clone()),
    };
    let interlock_dead_ms = match (&raw.interlock_dead_ms, &interlock) {
        (Some(dead), None) => {
            return Err(src.error(
                dead.span(),
                format!("{what}: interlock-dead-ms needs interlock (a group name); add one or leave the key out"),
            ))
        }
        (dead, _) => at_most(src, &what, "interlock-dead-ms", dead, MAX_DEAD_MS, 0)?,
    };
    let power_on = raw.power_on.as_ref().map_or(PowerOn::Off, |p| *p.get_ref());
    if let (Some(p), Some(_)) = (&raw.power_on, pulse_ms) {
        if *p.get_ref() != PowerOn::Off {
            return Err(src.error(
                p.span(),
                format!("{what}: a pulse relay always starts off; set power-on = \"off\" or leave the key out"),
            ));
        }
    }
    let relay_on_stop = raw.on_stop.as_ref().map_or(on_stop, |s| *s.get_ref());
    if relay_on_stop == OnStop::On && (pulse_ms.is_some() || interlock.is_some()) {
        let message = format!("{what}: on-stop = \"on\" cannot be used with pulse-ms or interlock, which switch the relay off by themselves; use \"off\" or \"leave\"");
        return Err(match &raw.on_stop {
            Some(s) => src.error(s.span(), message),
            None => src.error(raw.id.span(), message),
        });
    }
    let place = place(
        src,
        &what,
        &id,
        RawPlace {
            room: &raw.room,
            name: &raw.name,
            x: &raw.x,
            y: &raw.y,
        },
        DEFAULT_ROOM,
        (0.0, 0.0),
    )?;
    Ok(RelayConfig {
        id,
        pin,
        channel,
        active_low,
        power_on,
        on_stop: relay_on_stop,
        pulse_ms,
        interlock,
        interlock_dead_ms,
        max_on_s,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
        ha_component: super::homeassistant::component(src, &what, &raw.ha_component)?,
    })
}

/// Checks one input and fills its defaults.
pub(super) fn input(
    src: &Source,
    board: &Board,
    raw: &RawInput,
) -> Result<InputConfig, ConfigError> {
    let id = object_id(src, "input", &raw.id)?;
    let what = format!("input {:?}", id.as_str());
    let pin = pins::gpio(src, board, &what, &raw.pin)?;
    let debounce_ms = at_most(
        src,
        &what,
        "debounce-ms",
        &raw.debounce_ms,
        MAX_DEBOUNCE_MS,
        DEFAULT_DEBOUNCE_MS,
    )?;
    let double_ms = at_most(
        src,
        &what,
        "double-ms",
        &raw.double_ms,
        MAX_DOUBLE_MS,
        DEFAULT_DOUBLE_MS,
    )?;
    let long_ms = at_most(
        src,
        &what,
        "long-ms",
        &raw.long_ms,
        MAX_LONG_MS,
        DEFAULT_LONG_MS,
    )?;
    let place = place(
        src,
        &what,
        &id,
        RawPlace {
            room: &raw.room,
            name: &raw.name,
            x: &raw.x,
            y: &raw.y,
        },
        DEFAULT_ROOM,
        (0.0, 0.0),
    )?;
    Ok(InputConfig {
        id,
        pin,
        pull: raw.pull,
        debounce_ms,
        active_low: raw.active_low,
        double_ms,
        long_ms,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
    })
}

/// Checks that no object id is used twice among relays, inputs, serial devices and their
/// channels, virtual objects and automations, reporting the later use.
pub(super) fn unique_ids(src: &Source, raw: &RawConfig) -> Result<(), ConfigError> {
    let mut ids: Vec<(&str, &Spanned<String>)> = raw
        .relay
        .iter()
        .map(|r| ("relay", &r.id))
        .chain(raw.input.iter().map(|i| ("input", &i.id)))
        .chain(raw.serial.iter().map(|s| ("serial device", &s.id)))
        .chain(
            raw.serial
                .iter()
                .flat_map(|s| s.channel.iter().map(|c| ("serial channel", &c.id))),
        )
        .chain(raw.virtuals.iter().map(|v| ("virtual object", &v.id)))
        .chain(raw.automations.iter().map(|a| ("automation", &a.id)))
        .collect();
    ids.sort_by_key(|(_, id)| id.span().start);
    let mut seen: HashMap<&str, (&str, &Spanned<String>)> = HashMap::new();
    for (kind, id) in ids {
        if let Some((first_kind, first)) = seen.insert(id.get_ref(), (kind, id)) {
            return Err(src.error(
                id.span(),
                format!(
                    "object id {:?} is already used by the {first_kind} on line {}; ids must be unique across all objects",
                    id.get_ref(),
                    src.line(first.span().start),
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that every interlock group has two relays or more (a group of one is a typo in a
/// group name) and that at most one relay of a group starts on.
pub(super) fn interlock_groups(src: &Source, relays: &[RawRelay]) -> Result<(), ConfigError> {
    let mut groups: HashMap<&str, Vec<&RawRelay>> = HashMap::new();
    for r in relays {
        if let Some(group) = &r.interlock {
            groups.entry(group.get_ref()).or_default().push(r);
        }
    }
    for r in relays {
        let Some(group) = &r.interlock else {
            continue;
        };
        let members = groups.get(group.get_ref().as_str()).map_or(&[][..], |m| m);
        if members.len() < 2 {
            return Err(src.error(
                group.span(),
                format!(
                    "relay {:?}: interlock group {:?} has no other relay; give two or more relays the same interlock name",
                    r.id.get_ref(),
                    group.get_ref()
                ),
            ));
        }
        let starts_on = |m: &&&RawRelay| {
            m.power_on
                .as_ref()
                .is_some_and(|p| *p.get_ref() == PowerOn::On)
        };
        let mut on = members.iter().filter(starts_on);
        if let (Some(first), Some(second)) = (on.next(), on.next()) {
            let Some(power_on) = &second.power_on else {
                continue;
            };
            return Err(src.error(
                power_on.span(),
                format!(
                    "relay {:?}: relay {:?} on line {} of interlock group {:?} already starts on; at most one relay of a group may have power-on = \"on\"",
                    second.id.get_ref(),
                    first.id.get_ref(),
                    src.line(first.power_on.as_ref().map_or(0, |p| p.span().start)),
                    group.get_ref(),
                ),
            ));
        }
    }
    Ok(())
}
