//! Home Assistant's MQTT discovery schema as data, and a checker that reads a discovery
//! config the way Home Assistant does: abbreviations expanded, then every key held against
//! the platform's schema. A platform drops a key it does not know without a word
//! (`extra=vol.REMOVE_EXTRA`), an unknown key at the top of a device config makes Home
//! Assistant ignore the whole device, and a missing required key loses the entity: each
//! would leave a pimesh entity broken with nothing but a line in Home Assistant's log, so the
//! checker reports them all.
//!
//! Source: home-assistant/core at release tag 2026.2.3, read from the files of that release
//! as published in the `homeassistant` 2026.2.3 package (the whole repository could not be
//! fetched to name the tag's commit). Older stored copies were read too and differ: at
//! commit 0f5c1b547043f5395608e09de3dcf4b7cfafef3d `abbreviations.py` abbreviates
//! `components` as `cmp` where the release has `cmps` (what pimesh publishes), and
//! `schemas.py` has no device `model_id` nor the `unique_id` check of device-based
//! components; `discovery.py` at 00b08a436e4de6a7be16b25aa0ee10f7b52aff0c predates
//! device-based discovery. Each list (the platforms' keys in `ha_schema/platforms.rs`, the
//! abbreviations in `ha_schema/abbreviations.rs`; the checker is here) names the file under
//! `homeassistant/components/mqtt/` and the Python name it was taken from. Only what can be
//! checked on JSON is kept: keys, whether they are required, and the JSON type of their
//! values (HA's templates, topics and URLs are all strings here).

mod abbreviations;
mod platforms;

pub use abbreviations::*;
pub use platforms::*;

use serde_json::{Map, Value};
use Kind::*;

/// Checks one retained discovery message: `topic` under `prefix`, `payload` its JSON.
/// Returns every problem found, each naming where it is.
pub fn check(prefix: &str, topic: &str, payload: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let parsed: Option<Map<String, Value>> = serde_json::from_str(payload).ok();
    let rest = topic.strip_prefix(prefix).and_then(|t| t.strip_prefix('/'));
    match (rest, parsed) {
        (None, _) => errors.push(format!("{topic}: not under the prefix {prefix:?}")),
        (_, None) => errors.push(format!("{topic}: not a JSON object: {payload}")),
        (Some(rest), Some(mut config)) => {
            let segments: Vec<&str> = rest.split('/').collect();
            // discovery.py, `TOPIC_MATCHER`: <component>/[<node_id>/]<object_id>/config.
            let ids_ok = matches!(segments.len(), 3 | 4)
                && segments.last() == Some(&"config")
                && segments[1..segments.len() - 1].iter().all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                });
            if !ids_ok {
                errors.push(format!("{topic}: not <component>/[<node>/]<object>/config"));
            }
            expand_all(&mut config, false);
            if segments[0] == "device" {
                check_device_config(topic, &config, &mut errors);
            } else {
                check_component(topic, segments[0], &config, &mut errors);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A device-based config (`<prefix>/device/<node>/config`), as discovery.py's
/// `_parse_device_payload` and `async_discovery_message_received` read it: the top level
/// against [`DEVICE_DISCOVERY`], then each component as the platform receives it.
fn check_device_config(at: &str, config: &Map<String, Value>, errors: &mut Vec<String>) {
    check_keys(
        at,
        config,
        &[AVAILABILITY, DEVICE_DISCOVERY],
        &["device", "components", "origin"],
        errors,
    );
    for key in config.keys() {
        let known = DEVICE_DISCOVERY
            .iter()
            .chain(AVAILABILITY)
            .any(|(k, _)| k == key);
        if known && !SHARED_OPTIONS.contains(&key.as_str()) && !is_own(key) {
            errors.push(format!(
                "{at}: `{key}` is accepted at the device level but given to no component"
            ));
        }
    }
    let Some(Value::Object(components)) = config.get("components") else {
        return;
    };
    for (id, component) in components {
        let at = format!("{at} component {id}");
        let Some(fields) = component.as_object() else {
            errors.push(format!("{at}: not a mapping"));
            continue;
        };
        let mut fields = fields.clone();
        let Some(Value::String(name)) = fields.remove("platform") else {
            errors.push(format!("{at}: no `platform` (`p`)"));
            continue;
        };
        let Some(platform) = platform(&name) else {
            errors.push(format!("{at}: platform {name:?} is not in this table"));
            continue;
        };
        if platform.entity && !fields.contains_key("unique_id") {
            errors.push(format!("{at}: an entity without `unique_id`"));
        }
        // What the platform receives: the component's keys, the device and origin, and
        // the shared options it does not set itself.
        for key in ["device", "origin"] {
            if let Some(v) = config.get(key) {
                fields.insert(key.to_string(), v.clone());
            }
        }
        for key in SHARED_OPTIONS {
            if let (Some(v), false) = (config.get(*key), fields.contains_key(*key)) {
                fields.insert(key.to_string(), v.clone());
            }
        }
        check_component(&at, &name, &fields, errors);
    }
}

/// The keys of a device-based config that stay at its top level.
fn is_own(key: &str) -> bool {
    matches!(key, "device" | "components" | "origin")
}

/// One component's config as its platform `name` receives it.
fn check_component(at: &str, name: &str, config: &Map<String, Value>, errors: &mut Vec<String>) {
    let Some(platform) = platform(name) else {
        errors.push(format!("{at}: platform {name:?} is not in this table"));
        return;
    };
    let mut parts = platform.keys.to_vec();
    parts.push(DISCOVERY_LEVEL);
    check_keys(at, config, &parts, platform.required, errors);
    if name == "light" && config.get("schema").is_some_and(|s| s != "basic") {
        errors.push(format!(
            "{at}: only the basic light schema is in this table"
        ));
    }
    if name == "device_automation" && config.get("automation_type") != Some(&"trigger".into()) {
        errors.push(format!("{at}: `automation_type` must be \"trigger\""));
    }
}

/// Holds `map` against the keys of `parts`: unknown keys, missing required ones, and
/// values of the wrong JSON type (nested mappings checked too).
fn check_keys(
    at: &str,
    map: &Map<String, Value>,
    parts: &[Keys],
    required: &[&str],
    errors: &mut Vec<String>,
) {
    for (key, value) in map {
        match parts.iter().flat_map(|p| p.iter()).find(|(k, _)| k == key) {
            None => errors.push(format!("{at}: unknown key `{key}`")),
            Some((_, kind)) => check_value(&format!("{at} `{key}`"), value, *kind, errors),
        }
    }
    for key in required {
        if !map.contains_key(*key) {
            errors.push(format!("{at}: missing required `{key}`"));
        }
    }
    if map.contains_key("availability") && map.contains_key("availability_topic") {
        errors.push(format!(
            "{at}: `availability` and `availability_topic` exclude each other"
        ));
    }
}

fn check_value(at: &str, value: &Value, kind: Kind, errors: &mut Vec<String>) {
    let texts = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    let ok = match kind {
        Text => value.is_string(),
        TextOrNull => value.is_string() || value.is_null(),
        Bool => value.is_boolean(),
        Int => value.as_u64().is_some(),
        Qos => value.as_u64().is_some_and(|q| q <= 2),
        TextOrList => value.is_string() || texts(value),
        List => value.is_array(),
        Device => match value.as_object() {
            Some(device) => {
                check_keys(at, device, &[DEVICE], &[], errors);
                // `cv.ensure_list`: a string counts as a list of one.
                let has = |k: &str| match device.get(k) {
                    Some(Value::String(s)) => !s.is_empty(),
                    Some(Value::Array(a)) => !a.is_empty(),
                    _ => false,
                };
                if !has("identifiers") && !has("connections") {
                    errors.push(format!("{at}: neither `identifiers` nor `connections`"));
                }
                true
            }
            None => false,
        },
        Origin => match value.as_object() {
            Some(origin) => {
                check_keys(at, origin, &[ORIGIN], &["name"], errors);
                true
            }
            None => false,
        },
        Availability => {
            let entries = match value {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for entry in entries {
                match entry.as_object() {
                    Some(e) => check_keys(at, e, &[AVAILABILITY_ENTRY], &["topic"], errors),
                    None => errors.push(format!("{at}: an entry that is not a mapping")),
                }
            }
            true
        }
        Components => value
            .as_object()
            .is_some_and(|c| c.values().all(Value::is_object)),
    };
    if !ok {
        errors.push(format!("{at}: {value} is not {kind:?}"));
    }
}
