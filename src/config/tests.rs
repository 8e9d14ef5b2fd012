//! Tests of the config file: the defaults, a full file, reading it (the refusals are in
//! `refusal_tests.rs`).

use super::*;

/// Joins `lines` into a file, so a test's line numbers are its indexes plus one.
fn file(lines: &[&str]) -> String {
    lines.join("\n")
}

/// The error text for `lines`, which must be refused.
pub(super) fn refusal(lines: &[&str]) -> String {
    match parse(&file(lines), Path::new("house.toml")) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err.to_string(),
    }
}

/// The config for `lines`, which must be accepted.
pub(super) fn accepted(lines: &[&str]) -> Config {
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
