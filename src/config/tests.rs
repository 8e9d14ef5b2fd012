//! Tests of the config file: the defaults, a full file, and every refusal with its exact text.

use super::*;

/// Joins `lines` into a file, so a test's line numbers are its indexes plus one.
fn file(lines: &[&str]) -> String {
    lines.join("\n")
}

/// The error text for `lines`, which must be refused.
fn refusal(lines: &[&str]) -> String {
    match parse(&file(lines), Path::new("house.toml")) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err.to_string(),
    }
}

/// The config for `lines`, which must be accepted.
fn accepted(lines: &[&str]) -> Config {
    match parse(&file(lines), Path::new("house.toml")) {
        Ok(config) => config,
        Err(err) => panic!("expected the file to be accepted: {err}"),
    }
}

#[test]
fn embedded_default_parses_and_validates() {
    // embedded_default() relies on this test: it is the only config parse allowed to panic.
    let config = match parse(DEFAULT_CONFIG, Path::new("default.toml")) {
        Ok(config) => config,
        Err(err) => panic!("the built-in default.toml is refused: {err}"),
    };
    assert_eq!(config, embedded_default());
    assert_eq!(config.board.backend, Backend::Sim);
    assert_eq!(config.board.model, "pi4b");
    assert_eq!(config.base_topic, "pimesh");
    let relays: Vec<&str> = config.relays.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(relays, ["relay-1", "relay-2", "relay-3", "relay-4"]);
    let inputs: Vec<&str> = config.inputs.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(inputs, ["button-1", "button-2"]);
    assert!(config
        .inputs
        .iter()
        .all(|i| i.pull == Pull::Up && i.active_low));
    assert!(config.relays.iter().all(|r| r.room != "unassigned"));
}

#[test]
fn an_empty_file_gives_every_default() {
    let config = accepted(&[]);
    assert_eq!(
        config,
        Config {
            name: None,
            data_dir: None,
            base_topic: "pimesh".into(),
            board: BoardConfig {
                model: "pi4b".into(),
                backend: Backend::Auto,
                hat: None,
                line_prefix: "GPIO".into(),
            },
            broker: BrokerConfig {
                port: None,
                base_port: 1883,
                mqtt5_port: None,
                bind: "0.0.0.0".parse().unwrap(),
                segment_bytes: crate::broker::SEGMENT_SIZE,
                segment_count: crate::broker::SEGMENT_COUNT,
                allow_anonymous: false,
                tls_port: None,
                plaintext: true,
                max_retained: 10_000,
                websocket: true,
                ws_port: None,
                external: None,
            },
            mesh: MeshConfig {
                peers: vec![],
                join: None,
                max_clock_ahead_ms: 300_000,
                tls: true,
                stale_after_ms: 3_600_000,
                mdns: true,
            },
            relays: vec![],
            inputs: vec![],
            virtuals: vec![],
            automations: vec![],
            serials: vec![],
            homeassistant: HomeAssistantConfig {
                enabled: true,
                discovery_prefix: "homeassistant".into(),
                discovery: DiscoveryMode::Device,
            },
            web: WebConfig {
                enabled: true,
                port: None,
                base_port: 8080,
                tls: true,
                session_hours: 12,
                rooms: vec![],
            },
        }
    );
}

#[test]
fn objects_with_only_id_and_pin_get_defaults() {
    let config = accepted(&[
        "[[relay]]",
        "id = \"r\"",
        "pin = 17",
        "[[input]]",
        "id = \"b\"",
        "pin = 5",
    ]);
    assert_eq!(
        config.relays,
        [RelayConfig {
            id: ObjectId::new("r").unwrap(),
            pin: 17,
            channel: None,
            active_low: false,
            power_on: PowerOn::Off,
            on_stop: OnStop::Leave,
            pulse_ms: None,
            interlock: None,
            interlock_dead_ms: 0,
            max_on_s: None,
            room: "unassigned".into(),
            name: "r".into(),
            x: 0.0,
            y: 0.0,
            ha_component: HaComponent::Switch,
        }]
    );
    assert_eq!(
        config.inputs,
        [InputConfig {
            id: ObjectId::new("b").unwrap(),
            pin: 5,
            pull: Pull::None,
            debounce_ms: 20,
            active_low: false,
            double_ms: 400,
            long_ms: 800,
            room: "unassigned".into(),
            name: "b".into(),
            x: 0.0,
            y: 0.0,
        }]
    );
}

#[test]
fn every_key_is_read() {
    let config = accepted(&[
        "name = \"kitchen.pi_2\"",
        "data-dir = \"/var/lib/pimesh\"",
        "base-topic = \"house/pimesh\"",
        "[board]",
        "model = \"pizero2w\"",
        "backend = \"sim\"",
        "[broker]",
        "port = 1884",
        "base-port = 2000",
        "mqtt5-port = 1885",
        "bind = \"127.0.0.1\"",
        "allow-anonymous = true",
        "[mesh]",
        "peers = [\"10.0.0.2:1883\", \"pi-hall.local:1884\", \"[fd00::2]:1883\"]",
        "join = \"pimesh1-eyJtZXNoIjoiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAxIiwiYnkiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDIiLCJrZXkiOiJhYiIsImFkZHJzIjpbXSwiaWQiOiJpIiwic2VjcmV0IjoicyJ9\"",
        "[[relay]]",
        "id = \"kitchen-light\"",
        "pin = 2",
        "active-low = true",
        "power-on = \"restore\"",
        "room = \"kitchen\"",
        "name = \"Kitchen light\"",
        "x = 1",
        "y = 2.5",
        "[[input]]",
        "id = \"button-1\"",
        "pin = 27",
        "pull = \"down\"",
        "debounce-ms = 1000",
        "active-low = true",
        "room = \"hall\"",
        "name = \"Hall button\"",
        "x = -1.5",
        "y = 3",
    ]);
    assert_eq!(config.name.as_deref(), Some("kitchen.pi_2"));
    assert_eq!(config.data_dir, Some(PathBuf::from("/var/lib/pimesh")));
    assert_eq!(config.base_topic, "house/pimesh");
    assert_eq!(
        config.board,
        BoardConfig {
            model: "pizero2w".into(),
            backend: Backend::Sim,
            hat: None,
            line_prefix: "GPIO".into(),
        }
    );
    assert_eq!(
        config.broker,
        BrokerConfig {
            port: Some(1884),
            base_port: 2000,
            mqtt5_port: Some(1885),
            bind: "127.0.0.1".parse().unwrap(),
            segment_bytes: crate::broker::SEGMENT_SIZE,
            segment_count: crate::broker::SEGMENT_COUNT,
            allow_anonymous: true,
            tls_port: None,
            plaintext: true,
            max_retained: 10_000,
            websocket: true,
            ws_port: None,
            external: None,
        }
    );
    assert_eq!(
        config.mesh.peers,
        ["10.0.0.2:1883", "pi-hall.local:1884", "[fd00::2]:1883"]
    );
    let token = crate::membership::Token::decode(config.mesh.join.as_deref().unwrap()).unwrap();
    assert_eq!(token.secret, "s");
    let relay = &config.relays[0];
    assert_eq!(
        (relay.id.as_str(), relay.pin, relay.active_low),
        ("kitchen-light", 2, true)
    );
    assert_eq!(relay.power_on, PowerOn::Restore);
    assert_eq!(
        (relay.room.as_str(), relay.name.as_str()),
        ("kitchen", "Kitchen light")
    );
    assert_eq!((relay.x, relay.y), (1.0, 2.5));
    let input = &config.inputs[0];
    assert_eq!(
        (input.id.as_str(), input.pin, input.pull),
        ("button-1", 27, Pull::Down)
    );
    assert_eq!((input.debounce_ms, input.active_low), (1000, true));
    assert_eq!(
        (input.room.as_str(), input.name.as_str()),
        ("hall", "Hall button")
    );
    assert_eq!((input.x, input.y), (-1.5, 3.0));
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pimesh.toml");
    std::fs::write(&path, "[[relay]]\nid = \"r\"\npin = 17\n").unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.relays[0].pin, 17);
}

#[test]
fn an_unreadable_file_is_reported_at_line_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = load(&path).unwrap_err();
    assert_eq!(err.line, 0);
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read the config file: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn max_clock_ahead_is_seconds_within_a_day() {
    let config = accepted(&["[mesh]", "max-clock-ahead-s = 60"]);
    assert_eq!(config.mesh.max_clock_ahead_ms, 60_000);
    assert_eq!(
        refusal(&["[mesh]", "max-clock-ahead-s = 0"]),
        "house.toml:2: mesh max-clock-ahead-s is 0; give 1 to 86400 seconds"
    );
    assert!(refusal(&["[mesh]", "max-clock-ahead = 60"]).contains("unknown field"));
}

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
