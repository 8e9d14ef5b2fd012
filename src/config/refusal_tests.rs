//! Every refusal of the config file, with its exact text: syntax, unknown keys, bad values,
//! ids, pins, peers, tokens, settings, objects and automations.

use super::tests::{accepted, refusal};
use super::*;

#[test]
fn a_syntax_error_names_its_line() {
    assert_eq!(
        refusal(&["base-topic = \"pimesh\"", "[board", "model = \"pi4b\""]),
        "house.toml:2: invalid table header: expected `.`, `]`"
    );
}

#[test]
fn an_unknown_key_lists_the_allowed_ones() {
    assert_eq!(
        refusal(&["[[relay]]", "id = \"r\"", "pin = 17", "colour = \"red\""]),
        "house.toml:4: unknown field `colour`, expected one of `id`, `pin`, `channel`, \
         `active-low`, `power-on`, `on-stop`, `pulse-ms`, `interlock`, `interlock-dead-ms`, \
         `max-on-s`, `room`, `name`, `x`, `y`, `ha-component`"
    );
    assert_eq!(
        refusal(&["[broker]", "ports = 1883"]),
        "house.toml:2: unknown field `ports`, expected one of `port`, `base-port`, `mqtt5-port`, `bind`, `segment-bytes`, `segment-count`, `allow-anonymous`, `tls-port`, `plaintext`, `max-retained`, `websocket`, `ws-port`, `external`, `external-user`, `external-password-file`, `external-ca-file`"
    );
}

#[test]
fn a_bad_value_is_reported_with_what_was_expected() {
    assert_eq!(
        refusal(&[
            "[[relay]]",
            "id = \"r\"",
            "pin = 17",
            "power-on = \"maybe\""
        ]),
        "house.toml:4: unknown variant `maybe`, expected one of `off`, `on`, `restore`"
    );
    assert_eq!(
        refusal(&["[board]", "backend = \"gpio\""]),
        "house.toml:2: unknown variant `gpio`, expected one of `auto`, `rppal`, `cdev`, `sim`"
    );
    assert_eq!(
        refusal(&["[[input]]", "id = \"b\"", "pin = \"5\""]),
        "house.toml:3: invalid type: string \"5\", expected u8"
    );
    assert_eq!(
        refusal(&["[[relay]]", "pin = 17"]),
        "house.toml:1: missing field `id`"
    );
}

#[test]
fn an_invalid_object_id_uses_the_id_rules() {
    assert_eq!(
        refusal(&["[[relay]]", "id = \"Kitchen Light\"", "pin = 17"]),
        "house.toml:2: invalid relay id: object id \"Kitchen Light\" may only contain lowercase \
         letters a-z, digits and '-'"
    );
    assert_eq!(
        refusal(&["[[input]]", "id = \"\"", "pin = 5"]),
        "house.toml:2: invalid input id: object id is empty"
    );
}

#[test]
fn a_duplicate_id_names_both_lines() {
    let lines = [
        "[[input]]",
        "id = \"hall\"",
        "pin = 5",
        "[[relay]]",
        "id = \"hall\"",
        "pin = 17",
    ];
    assert_eq!(
        refusal(&lines),
        "house.toml:5: object id \"hall\" is already used by the input on line 2; ids must be \
         unique across all objects"
    );
}

#[test]
fn a_pin_used_twice_names_its_holder() {
    let lines = [
        "[[relay]]",
        "id = \"light\"",
        "pin = 17",
        "[[input]]",
        "id = \"button\"",
        "pin = 17",
    ];
    assert_eq!(
        refusal(&lines),
        "house.toml:6: input \"button\": GPIO 17 is already an output for relay \"light\" on line \
         3; a pin cannot be both an input and an output, so move one of them to a free pin"
    );
}

#[test]
fn a_pin_the_board_lacks_names_the_board_and_its_pins() {
    assert_eq!(
        refusal(&[
            "[board]",
            "model = \"pi4b\"",
            "[[relay]]",
            "id = \"r\"",
            "pin = 40"
        ]),
        "house.toml:5: relay \"r\": board pi4b has no GPIO 40; use a BCM GPIO number in 2-27"
    );
}

#[test]
fn a_pin_reserved_for_a_bus_is_still_accepted() {
    let config = accepted(&[
        "[[relay]]",
        "id = \"r\"",
        "pin = 2",
        "[[input]]",
        "id = \"b\"",
        "pin = 14",
    ]);
    assert_eq!((config.relays[0].pin, config.inputs[0].pin), (2, 14));
}

#[test]
fn an_unknown_board_lists_the_known_ones() {
    assert_eq!(
        refusal(&["[board]", "model = \"pi9\""]),
        "house.toml:2: unknown board model \"pi9\"; known models: pi3b, pi3b-plus, pi400, pi4b, \
         pi5, pizero2w, pizerow"
    );
}

#[test]
fn a_bad_peer_address_shows_the_expected_form() {
    let peer = |p: &str| refusal(&["[mesh]", &format!("peers = [\"10.0.0.2:1883\", {p:?}]")]);
    assert_eq!(
        peer("10.0.0.3"),
        "house.toml:2: mesh peer \"10.0.0.3\" is not HOST:PORT; write it like \"10.0.0.2:1883\" \
         or \"[fd00::2]:1883\""
    );
    assert_eq!(
        peer(":1883"),
        "house.toml:2: mesh peer \":1883\" is not HOST:PORT; write it like \"10.0.0.2:1883\" or \
         \"[fd00::2]:1883\""
    );
    assert_eq!(
        peer("pi:0"),
        "house.toml:2: mesh peer \"pi:0\" has an invalid port; the port must be a number from 1 to \
         65535"
    );
    assert_eq!(
        peer("pi:70000"),
        "house.toml:2: mesh peer \"pi:70000\" has an invalid port; the port must be a number from 1 \
         to 65535"
    );
    assert_eq!(
        peer("fd00::2:1883"),
        "house.toml:2: mesh peer \"fd00::2:1883\" has an IPv6 host without brackets; write it like \
         \"[fd00::2]:1883\""
    );
}

#[test]
fn a_join_token_must_be_one() {
    assert_eq!(
        refusal(&["[mesh]", "join = \"secret\""]),
        "house.toml:2: mesh join: not a pimesh invitation token (it does not start with \
         pimesh1-); copy the whole line `pimesh invite` printed"
    );
}

#[test]
fn instance_settings_are_checked() {
    assert_eq!(
        refusal(&["name = \"my pi\""]),
        "house.toml:1: instance name \"my pi\" must be 1 to 64 characters of A-Z, a-z, 0-9, '.', \
         '_' and '-'"
    );
    assert_eq!(
        refusal(&["base-topic = \"home/#\""]),
        "house.toml:1: base-topic \"home/#\" contains an MQTT wildcard ('+' or '#'); remove it"
    );
    assert_eq!(
        refusal(&["base-topic = \"home/\""]),
        "house.toml:1: base-topic \"home/\" must not start or end with '/'"
    );
    assert_eq!(
        refusal(&["base-topic = \"$SYS\""]),
        "house.toml:1: base-topic \"$SYS\" must not start with '$', which brokers reserve for their \
         own topics"
    );
    assert_eq!(
        refusal(&["base-topic = \"\""]),
        "house.toml:1: base-topic \"\" is empty; use a prefix such as \"pimesh\""
    );
    assert_eq!(
        refusal(&["[broker]", "bind = \"localhost\""]),
        "house.toml:2: broker bind \"localhost\" is not an IP address; use \"0.0.0.0\" for every \
         interface or \"127.0.0.1\" for this host only"
    );
}

#[test]
fn object_settings_are_checked() {
    assert_eq!(
        refusal(&["[[input]]", "id = \"b\"", "pin = 5", "debounce-ms = 1001"]),
        "house.toml:4: input \"b\": debounce-ms 1001 is more than the maximum of 1000"
    );
    assert_eq!(
        refusal(&["[[relay]]", "id = \"r\"", "pin = 17", "x = nan"]),
        "house.toml:4: relay \"r\": x must be a finite number"
    );
    assert_eq!(
        refusal(&["[[relay]]", "id = \"r\"", "pin = 17", "room = \"\""]),
        "house.toml:4: relay \"r\": room is empty; leave the key out for \"unassigned\""
    );
}

#[test]
fn broker_segments_below_what_rumqttd_accepts_are_refused() {
    assert_eq!(
        refusal(&["[broker]", "port = 1883", "mqtt5-port = 1883"]),
        "house.toml:3: broker mqtt5-port 1883 is also the broker port; MQTT 5 needs a port of its own"
    );
    assert_eq!(
        refusal(&["[broker]", "mqtt5-port = 0"]),
        "house.toml:2: broker mqtt5-port must be from 1 to 65535; leave it out to take the first free port"
    );
    assert_eq!(
        refusal(&["[broker]", "segment-bytes = 512"]),
        "house.toml:2: broker segment-bytes must be at least 1024"
    );
    assert_eq!(
        refusal(&["[broker]", "plaintext = false", "[mesh]", "tls = false"]),
        "house.toml:2: broker plaintext = false leaves mesh links nowhere to go with mesh tls = false; turn one of them on"
    );
    assert_eq!(
        refusal(&["[broker]", "tls-port = 0"]),
        "house.toml:2: broker tls-port must be from 1 to 65535; leave it out to take the first free port"
    );
    assert_eq!(
        refusal(&["[broker]", "segment-count = 0"]),
        "house.toml:2: broker segment-count must be at least 1"
    );
}

#[test]
fn virtual_objects_share_the_id_space() {
    let config = accepted(&["[[virtual]]", "id = \"vacation-mode\"", "room = \"house\""]);
    assert_eq!(config.virtuals[0].id.as_str(), "vacation-mode");
    assert_eq!(config.virtuals[0].room, "house");
    let err = refusal(&[
        "[board]",
        "backend = \"sim\"",
        "[[relay]]",
        "id = \"x\"",
        "pin = 17",
        "[[virtual]]",
        "id = \"x\"",
    ]);
    assert_eq!(
        err,
        "house.toml:7: object id \"x\" is already used by the relay on line 4; ids must be unique across all objects"
    );
}

#[test]
fn automations_name_a_trigger_and_a_command() {
    let config = accepted(&[
        "[[automation]]",
        "id = \"hall-press\"",
        "when = \"button-1\"",
        "to = \"ON\"",
        "then = \"b-light\"",
        "action = \"toggle\"",
    ]);
    let rule = &config.automations[0];
    assert_eq!(
        (
            rule.when.as_str(),
            rule.property.as_str(),
            rule.to.as_deref()
        ),
        ("button-1", "state", Some("ON"))
    );
    assert_eq!(
        (rule.then.as_str(), rule.action),
        ("b-light", Action::Toggle)
    );
    assert_eq!(
        refusal(&[
            "[[automation]]",
            "id = \"m\"",
            "when = \"a\"",
            "then = \"b\"",
            "action = \"move\"",
        ]),
        "house.toml:2: automation \"m\": action \"move\" needs a room"
    );
}
