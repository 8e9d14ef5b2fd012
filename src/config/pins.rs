//! The wiring rules: which pin each relay and input uses, and whether the board allows it.
//!
//! A relay names a BCM GPIO `pin`, or a `channel` of the HAT named in `[board]` (which then
//! gives the pin and the active level). Once every object has its pin, the rules that compare
//! them run in file order: a pin the board does not have, a pin used twice (with a message of
//! its own for an input and an output sharing one), and a UART pin used as GPIO while a serial
//! device uses the Pi's UART. Each error names the line and what to change.

use super::check::Source;
use super::raw::{RawInput, RawRelay};
use super::serial::{self, RawSerial};
use super::{ConfigError, InputConfig, RelayConfig};
use crate::boards::{self, Board, Hat};
use std::collections::HashMap;
use std::ops::Range;
use toml::Spanned;

/// Finds the HAT `[board] hat` names, listing the known ones when it is not among them.
pub(super) fn hat(
    src: &Source,
    raw: Option<&Spanned<String>>,
) -> Result<Option<&'static Hat>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    boards::hat(raw.get_ref()).map(Some).ok_or_else(|| {
        src.error(
            raw.span(),
            format!(
                "unknown HAT {:?}; known HATs: {}",
                raw.get_ref(),
                known_hats()
            ),
        )
    })
}

/// The known HAT ids, sorted, for messages.
fn known_hats() -> String {
    let mut known: Vec<&str> = boards::hats().iter().map(|h| h.id.as_str()).collect();
    known.sort_unstable();
    known.join(", ")
}

/// Checks that the board has the pin.
pub(super) fn gpio(
    src: &Source,
    board: &Board,
    what: &str,
    pin: &Spanned<u8>,
) -> Result<u8, ConfigError> {
    let p = *pin.get_ref();
    if board.has_gpio(p) {
        Ok(p)
    } else {
        Err(src.error(
            pin.span(),
            format!(
                "{what}: board {} has no GPIO {p}; use a BCM GPIO number in {}",
                board.id,
                pin_ranges(&board.gpio)
            ),
        ))
    }
}

/// Resolves a relay's pin, HAT channel and active level from `pin` or `channel`.
pub(super) fn relay_pin(
    src: &Source,
    board: &Board,
    hat: Option<&Hat>,
    what: &str,
    raw: &RawRelay,
) -> Result<(u8, Option<u8>, bool), ConfigError> {
    let active_low = raw.active_low.as_ref().map(|a| *a.get_ref());
    let channel = match (&raw.pin, &raw.channel) {
        (Some(pin), None) => {
            return Ok((gpio(src, board, what, pin)?, None, active_low.unwrap_or(false)));
        }
        (None, None) => {
            return Err(src.error(
                raw.id.span(),
                format!("{what}: needs a pin (a BCM GPIO number) or, with a HAT in [board], a channel"),
            ))
        }
        (Some(_), Some(channel)) => {
            return Err(src.error(
                channel.span(),
                format!("{what}: give either pin or channel, not both; with a HAT the channel decides the pin"),
            ))
        }
        (None, Some(channel)) => channel,
    };
    let number = *channel.get_ref();
    let Some(hat) = hat else {
        return Err(src.error(
            channel.span(),
            format!(
                "{what}: channel {number} needs a HAT; name it in the [board] table, e.g. hat = \"waveshare-relay-3ch\" (known HATs: {}), or give the relay a pin instead",
                known_hats()
            ),
        ));
    };
    let Some(c) = hat.channel(number) else {
        let numbers: Vec<u8> = hat.channels.iter().map(|c| c.channel).collect();
        return Err(src.error(
            channel.span(),
            format!(
                "{what}: HAT {} has no channel {number}; its channels are {}",
                hat.id,
                pin_ranges(&numbers)
            ),
        ));
    };
    if let Some(given) = &raw.active_low {
        let level = if c.active_low { "low" } else { "high" };
        return Err(src.error(
            given.span(),
            format!(
                "{what}: the active level comes from HAT {} (channel {number} is active {level}); leave active-low out",
                hat.id
            ),
        ));
    }
    let pin = Spanned::new(channel.span(), c.pin);
    Ok((gpio(src, board, what, &pin)?, Some(number), c.active_low))
}

/// One object's resolved pin with the place it was written, for the rules that compare.
pub(super) struct Claim<'a> {
    /// `relay` or `input`.
    kind: &'static str,
    /// The id as written.
    id: &'a Spanned<String>,
    /// The resolved BCM GPIO number.
    pin: u8,
    /// Where the pin (or channel) was written.
    span: Range<usize>,
}

/// Pairs the raw relays and inputs with their checked pins, in file order.
pub(super) fn claims<'a>(
    raw_relays: &'a [RawRelay],
    relays: &[RelayConfig],
    raw_inputs: &'a [RawInput],
    inputs: &[InputConfig],
) -> Vec<Claim<'a>> {
    let relay_claims = raw_relays.iter().zip(relays).map(|(raw, relay)| Claim {
        kind: "relay",
        id: &raw.id,
        pin: relay.pin,
        span: raw
            .pin
            .as_ref()
            .map(Spanned::span)
            .or_else(|| raw.channel.as_ref().map(Spanned::span))
            .unwrap_or_else(|| raw.id.span()),
    });
    let input_claims = raw_inputs.iter().zip(inputs).map(|(raw, input)| Claim {
        kind: "input",
        id: &raw.id,
        pin: input.pin,
        span: raw.pin.span(),
    });
    let mut claims: Vec<Claim> = relay_claims.chain(input_claims).collect();
    claims.sort_by_key(|c| c.span.start);
    claims
}

/// Checks that no pin is used twice; an input and an output on one pin get their own message,
/// because the fix is different (one of them is wired wrong, not just numbered wrong).
pub(super) fn one_use_per_pin(src: &Source, claims: &[Claim]) -> Result<(), ConfigError> {
    let mut pins: HashMap<u8, &Claim> = HashMap::new();
    for claim in claims {
        let Some(first) = pins.insert(claim.pin, claim) else {
            continue;
        };
        let (what, pin) = (
            format!("{} {:?}", claim.kind, claim.id.get_ref()),
            claim.pin,
        );
        let first_line = src.line(first.span.start);
        let first_id = first.id.get_ref();
        let message = if first.kind == claim.kind {
            format!(
                "{what}: GPIO {pin} is already used by {} {first_id:?} on line {first_line}; give each object its own pin",
                first.kind
            )
        } else {
            let role = if first.kind == "relay" {
                "an output"
            } else {
                "an input"
            };
            format!(
                "{what}: GPIO {pin} is already {role} for {} {first_id:?} on line {first_line}; a pin cannot be both an input and an output, so move one of them to a free pin",
                first.kind
            )
        };
        return Err(src.error(claim.span.clone(), message));
    }
    Ok(())
}

/// Checks that no relay or input uses a UART pin while a serial device uses the Pi's UART.
pub(super) fn uart(
    src: &Source,
    board: &Board,
    claims: &[Claim],
    serials: &[RawSerial],
) -> Result<(), ConfigError> {
    let Some(device) = serials
        .iter()
        .find(|s| serial::uses_pi_uart(s.path.get_ref()))
    else {
        return Ok(());
    };
    for claim in claims {
        let Some(function) = board
            .reserved_for(claim.pin)
            .filter(|f| f.starts_with("UART"))
        else {
            continue;
        };
        return Err(src.error(
            claim.span.clone(),
            format!(
                "{} {:?}: GPIO {} is the {function} pin, and serial {:?} on line {} uses the Pi's UART through {}; move the {} to a free pin, or connect the device by USB (e.g. /dev/ttyUSB0)",
                claim.kind,
                claim.id.get_ref(),
                claim.pin,
                device.id.get_ref(),
                src.line(device.path.span().start),
                device.path.get_ref(),
                claim.kind,
            ),
        ));
    }
    Ok(())
}

/// Writes a number list compactly, e.g. `2-27` or `0-1, 4, 6-27`.
pub(super) fn pin_ranges(pins: &[u8]) -> String {
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
