//! Checks of the software-only parts of a config: `[[virtual]]` objects and `[[automation]]`
//! rules.

use super::check::Source;
use super::objects::{object_id, place, RawPlace};
use super::raw::{RawAutomation, RawVirtual};
use super::{Action, AutomationConfig, ConfigError, VirtualConfig};

/// Checks one virtual object and fills its defaults.
pub(super) fn virtual_object(src: &Source, raw: &RawVirtual) -> Result<VirtualConfig, ConfigError> {
    let id = object_id(src, "virtual", &raw.id)?;
    let what = format!("virtual {:?}", id.as_str());
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
        "unassigned",
        (0.0, 0.0),
    )?;
    Ok(VirtualConfig {
        id,
        room: place.room,
        name: place.name,
        x: place.x,
        y: place.y,
        ha_component: super::homeassistant::component(src, &what, &raw.ha_component)?,
    })
}

/// Checks one automation rule.
pub(super) fn automation(
    src: &Source,
    raw: &RawAutomation,
) -> Result<AutomationConfig, ConfigError> {
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
        (_, Some(r)) if r.get_ref().trim().is_empty() => {
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
