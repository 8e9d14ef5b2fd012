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
//! device-based discovery. Each list below names the file under `homeassistant/components/mqtt/` and
//! the Python name it was taken from. Only what can be checked on JSON is kept: keys,
//! whether they are required, and the JSON type of their values (HA's templates, topics and
//! URLs are all strings here).

use serde_json::{Map, Value};

/// The JSON a key's value must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string: `cv.string`, `cv.template`, a topic, `cv.icon`, a URL, `vol.In` of names.
    Text,
    /// A string or null: `vol.Any(cv.string, None)` (`name: null` names an entity after its
    /// device).
    TextOrNull,
    /// `cv.boolean`.
    Bool,
    /// `cv.positive_int` and `vol.Coerce(int)`.
    Int,
    /// `valid_qos_schema`: 0, 1 or 2.
    Qos,
    /// `cv.ensure_list` of strings: one string, or a list of them.
    TextOrList,
    /// A list (`connections`: pairs of strings).
    List,
    /// `device`: a mapping checked against [`DEVICE`].
    Device,
    /// `origin`: a mapping checked against [`ORIGIN`].
    Origin,
    /// `availability`: a list of mappings checked against [`AVAILABILITY_ENTRY`] (one
    /// mapping is taken as a list of one, `cv.ensure_list`).
    Availability,
    /// `components`: component id to a component's config.
    Components,
}

use Kind::*;

/// Keys and the kind of their values; which are required is listed apart.
pub type Keys = &'static [(&'static str, Kind)];

/// config.py, `SCHEMA_BASE` (in `MQTT_BASE_SCHEMA`, under every platform).
pub const MQTT_BASE: Keys = &[("qos", Qos), ("encoding", Text)];

/// config.py, `MQTT_RO_SCHEMA` (sensor-like platforms; `state_topic` required).
pub const MQTT_RO: Keys = &[("state_topic", Text), ("value_template", Text)];

/// config.py, `MQTT_RW_SCHEMA` (switch-like platforms; `command_topic` required).
pub const MQTT_RW: Keys = &[
    ("command_topic", Text),
    ("optimistic", Bool),
    ("retain", Bool),
    ("state_topic", Text),
];

/// schemas.py, `_MQTT_AVAILABILITY_SINGLE_SCHEMA` and `_MQTT_AVAILABILITY_LIST_SCHEMA`
/// (`availability_topic` and `availability` exclude each other).
pub const AVAILABILITY: Keys = &[
    ("availability_topic", Text),
    ("availability_template", Text),
    ("payload_available", Text),
    ("payload_not_available", Text),
    ("availability_mode", Text),
    ("availability", Availability),
];

/// schemas.py, `MQTT_ENTITY_COMMON_SCHEMA` without the availability keys above, which it
/// extends.
pub const ENTITY_COMMON: Keys = &[
    ("device", Device),
    ("entity_picture", Text),
    ("origin", Origin),
    ("enabled_by_default", Bool),
    ("entity_category", Text),
    ("icon", Text),
    ("json_attributes_topic", Text),
    ("json_attributes_template", Text),
    ("default_entity_id", Text),
    ("object_id", Text),
    ("unique_id", Text),
];

/// schemas.py, `_MQTT_AVAILABILITY_LIST_SCHEMA`: one entry of `availability` (`topic`
/// required).
pub const AVAILABILITY_ENTRY: Keys = &[
    ("topic", Text),
    ("payload_available", Text),
    ("payload_not_available", Text),
    ("value_template", Text),
];

/// schemas.py, `MQTT_ENTITY_DEVICE_INFO_SCHEMA` (`via_hub` is the deprecated name of
/// `via_device`); `validate_device_has_at_least_one_identifier` wants `identifiers` or
/// `connections`.
pub const DEVICE: Keys = &[
    ("identifiers", TextOrList),
    ("connections", List),
    ("manufacturer", Text),
    ("model", Text),
    ("model_id", Text),
    ("name", Text),
    ("hw_version", Text),
    ("serial_number", Text),
    ("sw_version", Text),
    ("via_device", Text),
    ("via_hub", Text),
    ("suggested_area", Text),
    ("configuration_url", Text),
];

/// schemas.py, `MQTT_ORIGIN_INFO_SCHEMA` (`name` required).
pub const ORIGIN: Keys = &[("name", Text), ("sw_version", Text), ("support_url", Text)];

/// schemas.py, `DEVICE_DISCOVERY_SCHEMA`: the top level of a device-based config, beside
/// [`AVAILABILITY`] (`device`, `components` and `origin` required).
pub const DEVICE_DISCOVERY: Keys = &[
    ("device", Device),
    ("components", Components),
    ("origin", Origin),
    ("state_topic", Text),
    ("command_topic", Text),
    ("qos", Qos),
    ("encoding", Text),
];

/// schemas.py, `SHARED_OPTIONS`: the only top-level keys of a device-based config that
/// discovery.py (`_merge_common_device_options`) copies into its components. Any other
/// top-level key HA accepts (`qos`, `encoding`) reaches no entity.
pub const SHARED_OPTIONS: &[&str] = &[
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "command_topic",
    "payload_available",
    "payload_not_available",
    "state_topic",
];

/// discovery.py: keys it handles itself on any component's config before the platform
/// sees it: `origin` (`_valid_origin_info`), `device` (given to every component of a
/// device-based config) and the topic base `~` (`_replace_topic_base`).
pub const DISCOVERY_LEVEL: Keys = &[("origin", Origin), ("device", Device), ("~", Text)];

/// switch.py, `PLATFORM_SCHEMA_MODERN` beside [`MQTT_RW`] and the entity keys.
pub const SWITCH: Keys = &[
    ("command_template", Text),
    ("name", TextOrNull),
    ("payload_off", Text),
    ("payload_on", Text),
    ("state_off", Text),
    ("state_on", Text),
    ("value_template", Text),
    ("device_class", TextOrNull),
];

/// light/schema_basic.py, `PLATFORM_SCHEMA_MODERN_BASIC` beside [`MQTT_RW`] and the entity
/// keys, with `schema` from light/schema.py, `MQTT_LIGHT_SCHEMA_SCHEMA`.
pub const LIGHT_BASIC: Keys = &[
    ("brightness_command_template", Text),
    ("brightness_command_topic", Text),
    ("brightness_scale", Int),
    ("brightness_state_topic", Text),
    ("brightness_value_template", Text),
    ("color_mode_state_topic", Text),
    ("color_mode_value_template", Text),
    ("color_temp_command_template", Text),
    ("color_temp_command_topic", Text),
    ("color_temp_state_topic", Text),
    ("color_temp_value_template", Text),
    ("color_temp_kelvin", Bool),
    ("effect_command_template", Text),
    ("effect_command_topic", Text),
    ("effect_list", TextOrList),
    ("effect_state_topic", Text),
    ("effect_value_template", Text),
    ("hs_command_template", Text),
    ("hs_command_topic", Text),
    ("hs_state_topic", Text),
    ("hs_value_template", Text),
    ("max_mireds", Int),
    ("min_mireds", Int),
    ("max_kelvin", Int),
    ("min_kelvin", Int),
    ("name", TextOrNull),
    ("on_command_type", Text),
    ("payload_off", Text),
    ("payload_on", Text),
    ("rgb_command_template", Text),
    ("rgb_command_topic", Text),
    ("rgb_state_topic", Text),
    ("rgb_value_template", Text),
    ("rgbw_command_template", Text),
    ("rgbw_command_topic", Text),
    ("rgbw_state_topic", Text),
    ("rgbw_value_template", Text),
    ("rgbww_command_template", Text),
    ("rgbww_command_topic", Text),
    ("rgbww_state_topic", Text),
    ("rgbww_value_template", Text),
    ("state_value_template", Text),
    ("white_command_topic", Text),
    ("white_scale", Int),
    ("xy_command_template", Text),
    ("xy_command_topic", Text),
    ("xy_state_topic", Text),
    ("xy_value_template", Text),
    ("schema", Text),
];

/// binary_sensor.py, `PLATFORM_SCHEMA_MODERN` beside [`MQTT_RO`] and the entity keys.
pub const BINARY_SENSOR: Keys = &[
    ("device_class", TextOrNull),
    ("expire_after", Int),
    ("force_update", Bool),
    ("name", TextOrNull),
    ("off_delay", Int),
    ("payload_off", Text),
    ("payload_on", Text),
];

/// sensor.py, `_PLATFORM_SCHEMA_BASE` beside [`MQTT_RO`] and the entity keys.
pub const SENSOR: Keys = &[
    ("device_class", TextOrNull),
    ("expire_after", Int),
    ("force_update", Bool),
    ("last_reset_value_template", Text),
    ("name", TextOrNull),
    ("options", TextOrList),
    ("suggested_display_precision", Int),
    ("state_class", TextOrNull),
    ("unit_of_measurement", TextOrNull),
];

/// device_trigger.py, `TRIGGER_DISCOVERY_SCHEMA` beside [`MQTT_BASE`]: a device trigger
/// (`device_automation` with `automation_type: trigger`). It takes no entity keys, so no
/// availability.
pub const DEVICE_TRIGGER: Keys = &[
    ("automation_type", Text),
    ("device", Device),
    ("payload", TextOrNull),
    ("subtype", Text),
    ("topic", Text),
    ("type", Text),
    ("value_template", TextOrNull),
];

/// A discovery platform: the keys its config may hold and those it must.
pub struct Platform {
    /// The component name in topics and in `platform`.
    pub name: &'static str,
    /// In const.py's `ENTITY_PLATFORMS`: in a device-based config it needs a `unique_id`
    /// (schemas.py, `check_unique_id`).
    pub entity: bool,
    /// Every key it takes, in parts as HA's schemas extend one another.
    pub keys: &'static [Keys],
    /// Keys it requires.
    pub required: &'static [&'static str],
}

/// The platforms pimesh announces, and `sensor`.
pub const PLATFORMS: &[Platform] = &[
    Platform {
        name: "switch",
        entity: true,
        keys: &[MQTT_BASE, MQTT_RW, SWITCH, AVAILABILITY, ENTITY_COMMON],
        required: &["command_topic"],
    },
    Platform {
        name: "light",
        entity: true,
        keys: &[MQTT_BASE, MQTT_RW, LIGHT_BASIC, AVAILABILITY, ENTITY_COMMON],
        required: &["command_topic"],
    },
    Platform {
        name: "binary_sensor",
        entity: true,
        keys: &[
            MQTT_BASE,
            MQTT_RO,
            BINARY_SENSOR,
            AVAILABILITY,
            ENTITY_COMMON,
        ],
        required: &["state_topic"],
    },
    Platform {
        name: "sensor",
        entity: true,
        keys: &[MQTT_BASE, MQTT_RO, SENSOR, AVAILABILITY, ENTITY_COMMON],
        required: &["state_topic"],
    },
    Platform {
        name: "device_automation",
        entity: false,
        keys: &[MQTT_BASE, DEVICE_TRIGGER],
        required: &["automation_type", "device", "subtype", "topic", "type"],
    },
];

/// The platform called `name`, if the table has it.
pub fn platform(name: &str) -> Option<&'static Platform> {
    PLATFORMS.iter().find(|p| p.name == name)
}

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

/// Renames abbreviated keys of `map` with `table`; an abbreviation wins over a full key
/// given too, as in discovery.py's `_replace_abbreviations`.
fn expand(map: &mut Map<String, Value>, table: &[(&str, &str)]) {
    for (short, long) in table {
        if let Some(v) = map.remove(*short) {
            map.insert(long.to_string(), v);
        }
    }
}

/// discovery.py, `_replace_all_abbreviations`: the config's own keys and its availability
/// entries; unless `component_only`, its origin, device and each component too.
pub fn expand_all(config: &mut Map<String, Value>, component_only: bool) {
    expand(config, ABBREVIATIONS);
    match config.get_mut("availability") {
        Some(Value::Array(entries)) => {
            for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                expand(entry, ABBREVIATIONS);
            }
        }
        Some(Value::Object(entry)) => expand(entry, ABBREVIATIONS),
        _ => {}
    }
    if component_only {
        return;
    }
    if let Some(Value::Object(origin)) = config.get_mut("origin") {
        expand(origin, ORIGIN_ABBREVIATIONS);
    }
    if let Some(Value::Object(device)) = config.get_mut("device") {
        expand(device, DEVICE_ABBREVIATIONS);
    }
    if let Some(Value::Object(components)) = config.get_mut("components") {
        for component in components.values_mut().filter_map(Value::as_object_mut) {
            expand_all(component, true);
        }
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

// abbreviations.py: `ABBREVIATIONS` (a config's own keys, its availability entries and, in
// a device-based config, each component's), `DEVICE_ABBREVIATIONS` (inside `device`) and
// `ORIGIN_ABBREVIATIONS` (inside `origin`), short name first.

pub const ABBREVIATIONS: &[(&str, &str)] = &[
    ("act_t", "action_topic"),
    ("act_tpl", "action_template"),
    ("act_stat_t", "activity_state_topic"),
    ("act_val_tpl", "activity_value_template"),
    ("atype", "automation_type"),
    ("av_tones", "available_tones"),
    ("avty", "availability"),
    ("avty_mode", "availability_mode"),
    ("avty_t", "availability_topic"),
    ("avty_tpl", "availability_template"),
    ("b_tpl", "blue_template"),
    ("bri_cmd_tpl", "brightness_command_template"),
    ("bri_cmd_t", "brightness_command_topic"),
    ("bri_scl", "brightness_scale"),
    ("bri_stat_t", "brightness_state_topic"),
    ("bri_tpl", "brightness_template"),
    ("bri_val_tpl", "brightness_value_template"),
    ("clr_temp_cmd_tpl", "color_temp_command_template"),
    ("clrm", "color_mode"),
    ("clrm_stat_t", "color_mode_state_topic"),
    ("clrm_val_tpl", "color_mode_value_template"),
    ("clr_temp_cmd_t", "color_temp_command_topic"),
    ("clr_temp_k", "color_temp_kelvin"),
    ("clr_temp_stat_t", "color_temp_state_topic"),
    ("clr_temp_tpl", "color_temp_template"),
    ("clr_temp_val_tpl", "color_temp_value_template"),
    ("cmd_off_tpl", "command_off_template"),
    ("cmd_on_tpl", "command_on_template"),
    ("cmd_t", "command_topic"),
    ("cmd_tpl", "command_template"),
    ("cmps", "components"),
    ("cod_arm_req", "code_arm_required"),
    ("cod_dis_req", "code_disarm_required"),
    ("cod_form", "code_format"),
    ("cod_trig_req", "code_trigger_required"),
    ("cont_type", "content_type"),
    ("curr_hum_t", "current_humidity_topic"),
    ("curr_hum_tpl", "current_humidity_template"),
    ("curr_temp_t", "current_temperature_topic"),
    ("curr_temp_tpl", "current_temperature_template"),
    ("def_ent_id", "default_entity_id"),
    ("dev", "device"),
    ("dev_cla", "device_class"),
    ("dir_cmd_t", "direction_command_topic"),
    ("dir_cmd_tpl", "direction_command_template"),
    ("dir_stat_t", "direction_state_topic"),
    ("dir_val_tpl", "direction_value_template"),
    ("dsp_prc", "display_precision"),
    ("dock_cmd_t", "dock_command_topic"),
    ("dock_cmd_tpl", "dock_command_template"),
    ("e", "encoding"),
    ("en", "enabled_by_default"),
    ("ent_cat", "entity_category"),
    ("ent_pic", "entity_picture"),
    ("evt_typ", "event_types"),
    ("fanspd_lst", "fan_speed_list"),
    ("flsh", "flash"),
    ("flsh_tlng", "flash_time_long"),
    ("flsh_tsht", "flash_time_short"),
    ("fx_cmd_tpl", "effect_command_template"),
    ("fx_cmd_t", "effect_command_topic"),
    ("fx_list", "effect_list"),
    ("fx_stat_t", "effect_state_topic"),
    ("fx_tpl", "effect_template"),
    ("fx_val_tpl", "effect_value_template"),
    ("exp_aft", "expire_after"),
    ("fan_mode_cmd_tpl", "fan_mode_command_template"),
    ("fan_mode_cmd_t", "fan_mode_command_topic"),
    ("fan_mode_stat_tpl", "fan_mode_state_template"),
    ("fan_mode_stat_t", "fan_mode_state_topic"),
    ("frc_upd", "force_update"),
    ("g_tpl", "green_template"),
    ("hs_cmd_t", "hs_command_topic"),
    ("hs_cmd_tpl", "hs_command_template"),
    ("hs_stat_t", "hs_state_topic"),
    ("hs_val_tpl", "hs_value_template"),
    ("ic", "icon"),
    ("img_e", "image_encoding"),
    ("img_t", "image_topic"),
    ("init", "initial"),
    ("hum_cmd_t", "target_humidity_command_topic"),
    ("hum_cmd_tpl", "target_humidity_command_template"),
    ("hum_stat_t", "target_humidity_state_topic"),
    ("hum_state_tpl", "target_humidity_state_template"),
    ("json_attr", "json_attributes"),
    ("json_attr_t", "json_attributes_topic"),
    ("json_attr_tpl", "json_attributes_template"),
    ("lrst_val_tpl", "last_reset_value_template"),
    ("max", "max"),
    ("min", "min"),
    ("max_hum", "max_humidity"),
    ("min_hum", "min_humidity"),
    ("max_mirs", "max_mireds"),
    ("min_mirs", "min_mireds"),
    ("max_k", "max_kelvin"),
    ("min_k", "min_kelvin"),
    ("max_temp", "max_temp"),
    ("min_temp", "min_temp"),
    ("migr_discvry", "migrate_discovery"),
    ("mode", "mode"),
    ("mode_cmd_tpl", "mode_command_template"),
    ("mode_cmd_t", "mode_command_topic"),
    ("mode_stat_t", "mode_state_topic"),
    ("mode_stat_tpl", "mode_state_template"),
    ("modes", "modes"),
    ("name", "name"),
    ("o", "origin"),
    ("obj_id", "object_id"),
    ("off_dly", "off_delay"),
    ("on_cmd_type", "on_command_type"),
    ("ops", "options"),
    ("opt", "optimistic"),
    ("osc_cmd_t", "oscillation_command_topic"),
    ("osc_cmd_tpl", "oscillation_command_template"),
    ("osc_stat_t", "oscillation_state_topic"),
    ("osc_val_tpl", "oscillation_value_template"),
    ("p", "platform"),
    ("pause_cmd_t", "pause_command_topic"),
    ("pause_mw_cmd_tpl", "pause_command_template"),
    ("pct_cmd_t", "percentage_command_topic"),
    ("pct_cmd_tpl", "percentage_command_template"),
    ("pct_stat_t", "percentage_state_topic"),
    ("pct_val_tpl", "percentage_value_template"),
    ("pl", "payload"),
    ("pl_arm_away", "payload_arm_away"),
    ("pl_arm_home", "payload_arm_home"),
    ("pl_arm_nite", "payload_arm_night"),
    ("pl_arm_vacation", "payload_arm_vacation"),
    ("pl_arm_custom_b", "payload_arm_custom_bypass"),
    ("pl_avail", "payload_available"),
    ("pl_cln_sp", "payload_clean_spot"),
    ("pl_cls", "payload_close"),
    ("pl_disarm", "payload_disarm"),
    ("pl_home", "payload_home"),
    ("pl_lock", "payload_lock"),
    ("pl_loc", "payload_locate"),
    ("pl_not_avail", "payload_not_available"),
    ("pl_not_home", "payload_not_home"),
    ("pl_off", "payload_off"),
    ("pl_on", "payload_on"),
    ("pl_open", "payload_open"),
    ("pl_osc_off", "payload_oscillation_off"),
    ("pl_osc_on", "payload_oscillation_on"),
    ("pl_paus", "payload_pause"),
    ("pl_prs", "payload_press"),
    ("pl_rst", "payload_reset"),
    ("pl_rst_hum", "payload_reset_humidity"),
    ("pl_rst_mode", "payload_reset_mode"),
    ("pl_rst_pct", "payload_reset_percentage"),
    ("pl_rst_pr_mode", "payload_reset_preset_mode"),
    ("pl_stop", "payload_stop"),
    ("pl_stop_tilt", "payload_stop_tilt"),
    ("pl_strt", "payload_start"),
    ("pl_ret", "payload_return_to_base"),
    ("pl_toff", "payload_turn_off"),
    ("pl_ton", "payload_turn_on"),
    ("pl_trig", "payload_trigger"),
    ("pl_unlk", "payload_unlock"),
    ("pos", "reports_position"),
    ("pos_clsd", "position_closed"),
    ("pos_open", "position_open"),
    ("pow_cmd_t", "power_command_topic"),
    ("pow_cmd_tpl", "power_command_template"),
    ("pr_mode_cmd_t", "preset_mode_command_topic"),
    ("pr_mode_cmd_tpl", "preset_mode_command_template"),
    ("pr_mode_stat_t", "preset_mode_state_topic"),
    ("pr_mode_val_tpl", "preset_mode_value_template"),
    ("pr_modes", "preset_modes"),
    ("ptrn", "pattern"),
    ("r_tpl", "red_template"),
    ("rel_s", "release_summary"),
    ("rel_u", "release_url"),
    ("ret", "retain"),
    ("rgb_cmd_tpl", "rgb_command_template"),
    ("rgb_cmd_t", "rgb_command_topic"),
    ("rgb_stat_t", "rgb_state_topic"),
    ("rgb_val_tpl", "rgb_value_template"),
    ("rgbw_cmd_tpl", "rgbw_command_template"),
    ("rgbw_cmd_t", "rgbw_command_topic"),
    ("rgbw_stat_t", "rgbw_state_topic"),
    ("rgbw_val_tpl", "rgbw_value_template"),
    ("rgbww_cmd_tpl", "rgbww_command_template"),
    ("rgbww_cmd_t", "rgbww_command_topic"),
    ("rgbww_stat_t", "rgbww_state_topic"),
    ("rgbww_val_tpl", "rgbww_value_template"),
    ("send_cmd_t", "send_command_topic"),
    ("send_if_off", "send_if_off"),
    ("set_fan_spd_t", "set_fan_speed_topic"),
    ("set_pos_tpl", "set_position_template"),
    ("set_pos_t", "set_position_topic"),
    ("pos_t", "position_topic"),
    ("pos_tpl", "position_template"),
    ("spd_rng_min", "speed_range_min"),
    ("spd_rng_max", "speed_range_max"),
    ("src_type", "source_type"),
    ("stat_cla", "state_class"),
    ("stat_clsd", "state_closed"),
    ("stat_closing", "state_closing"),
    ("stat_jam", "state_jammed"),
    ("stat_off", "state_off"),
    ("stat_on", "state_on"),
    ("stat_open", "state_open"),
    ("stat_opening", "state_opening"),
    ("stat_stopped", "state_stopped"),
    ("stat_locked", "state_locked"),
    ("stat_locking", "state_locking"),
    ("stat_unlocked", "state_unlocked"),
    ("stat_unlocking", "state_unlocking"),
    ("stat_t", "state_topic"),
    ("stat_tpl", "state_template"),
    ("stat_val_tpl", "state_value_template"),
    ("step", "step"),
    ("strt_mw_cmd_t", "start_mowing_command_topic"),
    ("strt_mw_cmd_tpl", "start_mowing_command_template"),
    ("stype", "subtype"),
    ("sug_dsp_prc", "suggested_display_precision"),
    ("sup_dur", "support_duration"),
    ("sup_vol", "support_volume_set"),
    ("sup_feat", "supported_features"),
    ("sup_clrm", "supported_color_modes"),
    (
        "swing_h_mode_cmd_tpl",
        "swing_horizontal_mode_command_template",
    ),
    ("swing_h_mode_cmd_t", "swing_horizontal_mode_command_topic"),
    (
        "swing_h_mode_stat_tpl",
        "swing_horizontal_mode_state_template",
    ),
    ("swing_h_mode_stat_t", "swing_horizontal_mode_state_topic"),
    ("swing_h_modes", "swing_horizontal_modes"),
    ("swing_mode_cmd_tpl", "swing_mode_command_template"),
    ("swing_mode_cmd_t", "swing_mode_command_topic"),
    ("swing_mode_stat_tpl", "swing_mode_state_template"),
    ("swing_mode_stat_t", "swing_mode_state_topic"),
    ("swing_modes", "swing_modes"),
    ("temp_cmd_tpl", "temperature_command_template"),
    ("temp_cmd_t", "temperature_command_topic"),
    ("temp_hi_cmd_tpl", "temperature_high_command_template"),
    ("temp_hi_cmd_t", "temperature_high_command_topic"),
    ("temp_hi_stat_tpl", "temperature_high_state_template"),
    ("temp_hi_stat_t", "temperature_high_state_topic"),
    ("temp_lo_cmd_tpl", "temperature_low_command_template"),
    ("temp_lo_cmd_t", "temperature_low_command_topic"),
    ("temp_lo_stat_tpl", "temperature_low_state_template"),
    ("temp_lo_stat_t", "temperature_low_state_topic"),
    ("temp_stat_tpl", "temperature_state_template"),
    ("temp_stat_t", "temperature_state_topic"),
    ("temp_unit", "temperature_unit"),
    ("tilt_clsd_val", "tilt_closed_value"),
    ("tilt_cmd_t", "tilt_command_topic"),
    ("tilt_cmd_tpl", "tilt_command_template"),
    ("tilt_max", "tilt_max"),
    ("tilt_min", "tilt_min"),
    ("tilt_opnd_val", "tilt_opened_value"),
    ("tilt_opt", "tilt_optimistic"),
    ("tilt_status_t", "tilt_status_topic"),
    ("tilt_status_tpl", "tilt_status_template"),
    ("tit", "title"),
    ("t", "topic"),
    ("trns", "transition"),
    ("uniq_id", "unique_id"),
    ("unit_of_meas", "unit_of_measurement"),
    ("url_t", "url_topic"),
    ("url_tpl", "url_template"),
    ("val_tpl", "value_template"),
    ("whit_cmd_t", "white_command_topic"),
    ("whit_scl", "white_scale"),
    ("xy_cmd_t", "xy_command_topic"),
    ("xy_cmd_tpl", "xy_command_template"),
    ("xy_stat_t", "xy_state_topic"),
    ("xy_val_tpl", "xy_value_template"),
    ("l_ver_t", "latest_version_topic"),
    ("l_ver_tpl", "latest_version_template"),
    ("pl_inst", "payload_install"),
];

pub const DEVICE_ABBREVIATIONS: &[(&str, &str)] = &[
    ("cns", "connections"),
    ("cu", "configuration_url"),
    ("ids", "identifiers"),
    ("name", "name"),
    ("mf", "manufacturer"),
    ("mdl", "model"),
    ("mdl_id", "model_id"),
    ("hw", "hw_version"),
    ("sw", "sw_version"),
    ("sa", "suggested_area"),
    ("sn", "serial_number"),
];

pub const ORIGIN_ABBREVIATIONS: &[(&str, &str)] = &[
    ("name", "name"),
    ("sw", "sw_version"),
    ("url", "support_url"),
];
