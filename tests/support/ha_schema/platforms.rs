//! The schema as data: the kinds of value a key takes, the key lists of config.py, schemas.py
//! and each platform's module, and the platforms pimesh announces with the keys each
//! requires.

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
