//! Tests of the hardware keys: HAT channels, the wiring rules, relay features, press timing
//! and serial devices, with the exact text of every refusal.

use super::*;

/// The error text for `lines`, which must be refused.
fn refusal(lines: &[&str]) -> String {
    match parse(&lines.join("\n"), Path::new("house.toml")) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err.to_string(),
    }
}

/// The config for `lines`, which must be accepted.
fn accepted(lines: &[&str]) -> Config {
    match parse(&lines.join("\n"), Path::new("house.toml")) {
        Ok(config) => config,
        Err(err) => panic!("expected the file to be accepted: {err}"),
    }
}

/// `[board]` with a HAT, then `more`.
fn with_hat(more: &[&'static str]) -> Vec<&'static str> {
    let mut lines = vec!["[board]", "hat = \"waveshare-relay-3ch\""];
    lines.extend_from_slice(more);
    lines
}

#[test]
fn a_hat_channel_gives_the_pin_and_the_active_level() {
    let config = accepted(&with_hat(&["[[relay]]", "id = \"pump\"", "channel = 2"]));
    assert_eq!(config.board.hat.as_deref(), Some("waveshare-relay-3ch"));
    let r = &config.relays[0];
    assert_eq!((r.pin, r.channel, r.active_low), (20, Some(2), true));
}

#[test]
fn hat_and_channel_mistakes_say_what_to_do() {
    assert_eq!(
        refusal(&["[board]", "hat = \"relay-board\""]),
        "house.toml:2: unknown HAT \"relay-board\"; known HATs: sbcomponents-pirelay-v2, \
         waveshare-relay-3ch, waveshare-relay-8ch"
    );
    assert_eq!(
        refusal(&["[[relay]]", "id = \"pump\"", "channel = 2"]),
        "house.toml:3: relay \"pump\": channel 2 needs a HAT; name it in the [board] table, e.g. \
         hat = \"waveshare-relay-3ch\" (known HATs: sbcomponents-pirelay-v2, waveshare-relay-3ch, \
         waveshare-relay-8ch), or give the relay a pin instead"
    );
    assert_eq!(
        refusal(&with_hat(&["[[relay]]", "id = \"pump\"", "channel = 4"])),
        "house.toml:5: relay \"pump\": HAT waveshare-relay-3ch has no channel 4; its channels are 1-3"
    );
    assert_eq!(
        refusal(&with_hat(&["[[relay]]", "id = \"pump\"", "pin = 20", "channel = 2"])),
        "house.toml:6: relay \"pump\": give either pin or channel, not both; with a HAT the channel \
         decides the pin"
    );
    assert_eq!(
        refusal(&["[[relay]]", "id = \"pump\""]),
        "house.toml:2: relay \"pump\": needs a pin (a BCM GPIO number) or, with a HAT in [board], a \
         channel"
    );
    assert_eq!(
        refusal(&with_hat(&["[[relay]]", "id = \"pump\"", "channel = 1", "active-low = false"])),
        "house.toml:6: relay \"pump\": the active level comes from HAT waveshare-relay-3ch (channel \
         1 is active low); leave active-low out"
    );
}

#[test]
fn a_channel_and_a_pin_on_the_same_gpio_are_a_pin_used_twice() {
    let lines = with_hat(&[
        "[[relay]]",
        "id = \"a\"",
        "channel = 1",
        "[[relay]]",
        "id = \"b\"",
        "pin = 26",
    ]);
    assert_eq!(
        refusal(&lines),
        "house.toml:8: relay \"b\": GPIO 26 is already used by relay \"a\" on line 5; give each \
         object its own pin"
    );
}

#[test]
fn an_output_pin_reused_as_an_input_has_its_own_message() {
    let lines = [
        "[[input]]",
        "id = \"button\"",
        "pin = 5",
        "[[relay]]",
        "id = \"light\"",
        "pin = 5",
    ];
    assert_eq!(
        refusal(&lines),
        "house.toml:6: relay \"light\": GPIO 5 is already an input for input \"button\" on line 3; a \
         pin cannot be both an input and an output, so move one of them to a free pin"
    );
}

#[test]
fn a_uart_pin_is_refused_only_while_a_serial_device_uses_the_pis_uart() {
    let serial = |path: &'static str| -> Vec<&'static str> {
        vec![
            "[[relay]]",
            "id = \"r\"",
            "pin = 14",
            "[[serial]]",
            "id = \"arduino\"",
            path,
        ]
    };
    assert_eq!(
        refusal(&serial("path = \"/dev/serial0\"")),
        "house.toml:3: relay \"r\": GPIO 14 is the UART TXD pin, and serial \"arduino\" on line 6 \
         uses the Pi's UART through /dev/serial0; move the relay to a free pin, or connect the \
         device by USB (e.g. /dev/ttyUSB0)"
    );
    assert!(refusal(&serial("path = \"/dev/ttyAMA0\"")).contains("through /dev/ttyAMA0"));
    assert!(refusal(&serial("path = \"/dev/ttyS0\"")).contains("GPIO 14 is the UART TXD pin"));
    let usb = accepted(&serial("path = \"/dev/ttyUSB0\""));
    assert_eq!(usb.relays[0].pin, 14);

    let input = [
        "[[serial]]",
        "id = \"gps\"",
        "path = \"/dev/serial0\"",
        "protocol = \"raw\"",
        "[[input]]",
        "id = \"b\"",
        "pin = 15",
    ];
    assert_eq!(
        refusal(&input),
        "house.toml:7: input \"b\": GPIO 15 is the UART RXD pin, and serial \"gps\" on line 3 uses \
         the Pi's UART through /dev/serial0; move the input to a free pin, or connect the device \
         by USB (e.g. /dev/ttyUSB0)"
    );
}

#[test]
fn relay_features_are_read_with_their_defaults() {
    let config = accepted(&[
        "[board]",
        "on-stop = \"off\"",
        "[[relay]]",
        "id = \"up\"",
        "pin = 5",
        "interlock = \"blind\"",
        "interlock-dead-ms = 300",
        "max-on-s = 60",
        "[[relay]]",
        "id = \"down\"",
        "pin = 6",
        "interlock = \"blind\"",
        "on-stop = \"leave\"",
        "[[relay]]",
        "id = \"door\"",
        "pin = 13",
        "pulse-ms = 500",
        "[[relay]]",
        "id = \"pump\"",
        "pin = 19",
        "on-stop = \"on\"",
    ]);
    let r = &config.relays;
    assert_eq!(
        (
            r[0].interlock.as_deref(),
            r[0].interlock_dead_ms,
            r[0].max_on_s
        ),
        (Some("blind"), 300, Some(60))
    );
    assert_eq!((r[1].interlock_dead_ms, r[1].on_stop), (0, OnStop::Leave));
    assert_eq!(
        (r[2].pulse_ms, r[2].on_stop, r[2].max_on_s),
        (Some(500), OnStop::Off, None)
    );
    assert_eq!(r[3].on_stop, OnStop::On);
}

#[test]
fn relay_feature_mistakes_say_what_to_do() {
    let relay = |more: &[&'static str]| {
        let mut lines = vec!["[[relay]]", "id = \"r\"", "pin = 5"];
        lines.extend_from_slice(more);
        refusal(&lines)
    };
    assert_eq!(
        relay(&["pulse-ms = 0"]),
        "house.toml:4: relay \"r\": pulse-ms must be from 1 to 3600000 (an hour); leave the key out \
         for a relay that stays on"
    );
    assert_eq!(
        relay(&["max-on-s = 700000"]),
        "house.toml:4: relay \"r\": max-on-s must be from 1 to 604800 (a week); leave the key out for \
         no limit"
    );
    assert_eq!(
        relay(&["pulse-ms = 500", "power-on = \"restore\""]),
        "house.toml:5: relay \"r\": a pulse relay always starts off; set power-on = \"off\" or leave \
         the key out"
    );
    assert_eq!(
        relay(&["pulse-ms = 500", "on-stop = \"on\""]),
        "house.toml:5: relay \"r\": on-stop = \"on\" cannot be used with pulse-ms or interlock, which \
         switch the relay off by themselves; use \"off\" or \"leave\""
    );
    assert_eq!(
        relay(&["interlock-dead-ms = 100"]),
        "house.toml:4: relay \"r\": interlock-dead-ms needs interlock (a group name); add one or \
         leave the key out"
    );
    assert_eq!(
        relay(&["interlock = \"Blind\""]),
        "house.toml:4: relay \"r\": interlock group \"Blind\" must be 1 to 64 characters of a-z, \
         0-9 and '-'"
    );
    assert_eq!(
        relay(&["interlock = \"blind\""]),
        "house.toml:4: relay \"r\": interlock group \"blind\" has no other relay; give two or more \
         relays the same interlock name"
    );
    let both_on = [
        "[[relay]]",
        "id = \"up\"",
        "pin = 5",
        "interlock = \"blind\"",
        "power-on = \"on\"",
        "[[relay]]",
        "id = \"down\"",
        "pin = 6",
        "interlock = \"blind\"",
        "power-on = \"on\"",
        "interlock-dead-ms = 2001",
    ];
    assert_eq!(
        refusal(&both_on),
        "house.toml:11: relay \"down\": interlock-dead-ms 2001 is more than the maximum of 2000"
    );
    assert_eq!(
        refusal(&both_on[..10]),
        "house.toml:10: relay \"down\": relay \"up\" on line 5 of interlock group \"blind\" already \
         starts on; at most one relay of a group may have power-on = \"on\""
    );
}

#[test]
fn press_timing_is_read_and_bounded() {
    let input = |more: &[&'static str]| {
        let mut lines = vec!["[[input]]", "id = \"b\"", "pin = 5"];
        lines.extend_from_slice(more);
        lines
    };
    let config = accepted(&input(&["double-ms = 0", "long-ms = 1500"]));
    assert_eq!(
        (config.inputs[0].double_ms, config.inputs[0].long_ms),
        (0, 1500)
    );
    assert_eq!(
        refusal(&input(&["double-ms = 2500"])),
        "house.toml:4: input \"b\": double-ms 2500 is more than the maximum of 2000"
    );
    assert_eq!(
        refusal(&input(&["long-ms = 10001"])),
        "house.toml:4: input \"b\": long-ms 10001 is more than the maximum of 10000"
    );
}

#[test]
fn a_serial_device_with_channels_is_read_with_its_defaults() {
    let config = accepted(&[
        "[[serial]]",
        "id = \"arduino\"",
        "path = \"/dev/ttyUSB0\"",
        "room = \"garage\"",
        "x = 2",
        "fail-prefix = \"ERR\"",
        "[[serial.channel]]",
        "id = \"arduino-r1\"",
        "on = \"R1=1\\n\"",
        "off = \"R1=0\\n\"",
        "on-reply = \"OK R1=1\"",
        "off-reply = \"OK R1=0\"",
        "[[serial]]",
        "id = \"meter\"",
        "path = \"/dev/ttyACM0\"",
        "baud = 115200",
        "data-bits = 7",
        "parity = \"even\"",
        "stop-bits = 2",
        "protocol = \"raw\"",
        "timeout-ms = 250",
    ]);
    let a = &config.serials[0];
    assert_eq!(
        (a.baud, a.data_bits, a.parity, a.stop_bits),
        (9600, DataBits::Eight, Parity::None, StopBits::One)
    );
    assert_eq!(
        (a.protocol, a.timeout_ms, a.fail_prefix.as_deref()),
        (Protocol::Line, 1000, Some("ERR"))
    );
    let c = &a.channels[0];
    assert_eq!((c.on.as_str(), c.off.as_str()), ("R1=1\n", "R1=0\n"));
    assert_eq!(
        (c.on_reply.as_deref(), c.off_reply.as_deref()),
        (Some("OK R1=1"), Some("OK R1=0"))
    );
    assert_eq!(
        (c.room.as_str(), c.x, c.name.as_str()),
        ("garage", 2.0, "arduino-r1"),
        "room and place from the device"
    );
    let m = &config.serials[1];
    assert_eq!(
        (m.baud, m.data_bits, m.parity, m.stop_bits),
        (115200, DataBits::Seven, Parity::Even, StopBits::Two)
    );
    assert_eq!(
        (m.protocol, m.timeout_ms, m.channels.len()),
        (Protocol::Raw, 250, 0)
    );
}

#[test]
fn serial_mistakes_say_what_to_do() {
    let serial = |more: &[&'static str]| {
        let mut lines = vec!["[[serial]]", "id = \"s\"", "path = \"/dev/ttyUSB0\""];
        lines.extend_from_slice(more);
        refusal(&lines)
    };
    assert_eq!(
        refusal(&["[[serial]]", "id = \"s\"", "path = \"ttyUSB0\""]),
        "house.toml:3: serial \"s\": path \"ttyUSB0\" must be an absolute tty path such as \"/dev/ttyUSB0\""
    );
    assert_eq!(
        serial(&["data-bits = 9"]),
        "house.toml:4: serial \"s\": data-bits 9 must be 5, 6, 7 or 8"
    );
    assert_eq!(
        serial(&["stop-bits = 3"]),
        "house.toml:4: serial \"s\": stop-bits 3 must be 1 or 2"
    );
    assert_eq!(
        serial(&["baud = 0"]),
        "house.toml:4: serial \"s\": baud must be more than 0, e.g. 9600 or 115200"
    );
    assert_eq!(
        serial(&["timeout-ms = 0"]),
        "house.toml:4: serial \"s\": timeout-ms must be from 1 to 60000"
    );
    assert_eq!(
        serial(&["protocol = \"raw\"", "[[serial.channel]]", "id = \"c\"", "on = \"1\"", "off = \"0\""]),
        "house.toml:6: serial \"s\": channels need protocol = \"line\"; a raw device is a byte bridge"
    );
    assert_eq!(
        serial(&["[[serial.channel]]", "id = \"c\"", "on = \"\"", "off = \"0\""]),
        "house.toml:6: serial channel \"c\": on is empty; give the bytes that switch it on, e.g. \"R1=1\\n\""
    );
    assert_eq!(
        serial(&["[[serial.channel]]", "id = \"c\"", "on = \"1\"", "off = \"0\"", "on-reply = \"OK\"", "off-reply = \"OK\""]),
        "house.toml:9: serial channel \"c\": on-reply and off-reply are the same, so a reply could not \
         say which state the device is in"
    );
    assert_eq!(
        serial(&["[[serial]]", "id = \"t\"", "path = \"/dev/ttyUSB0\""]),
        "house.toml:6: serial \"t\": path /dev/ttyUSB0 is already used by serial \"s\" on line 3; a tty \
         can serve one device"
    );
    assert_eq!(
        serial(&["[[serial.channel]]", "id = \"s\"", "on = \"1\"", "off = \"0\""]),
        "house.toml:5: object id \"s\" is already used by the serial device on line 2; ids must be \
         unique across all objects"
    );
    assert_eq!(
        serial(&[
            "[[serial.channel]]",
            "id = \"c\"",
            "on = \"1\"",
            "off = \"0\"",
            "reply = \"OK\""
        ]),
        "house.toml:8: unknown field `reply`, expected one of `id`, `on`, `off`, `on-reply`, \
         `off-reply`, `room`, `name`, `x`, `y`"
    );
}

#[test]
fn board_keys_are_checked() {
    let config = accepted(&["[board]", "backend = \"cdev\"", "line-prefix = \"PIN_\""]);
    assert_eq!(
        (config.board.backend, config.board.line_prefix.as_str()),
        (Backend::Cdev, "PIN_")
    );
    assert_eq!(
        refusal(&["[board]", "line-prefix = \"\""]),
        "house.toml:2: line-prefix must be a non-empty word such as \"GPIO\"; leave the key out for \
         \"GPIO\""
    );
    assert_eq!(
        refusal(&["[board]", "on-stop = \"later\""]),
        "house.toml:2: unknown variant `later`, expected one of `leave`, `off`, `on`"
    );
}

#[test]
fn the_commented_serial_example_in_default_toml_is_valid() {
    let start = DEFAULT_CONFIG.find("# [[serial]]").unwrap();
    let example: Vec<&str> = DEFAULT_CONFIG[start..]
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .collect();
    let config = accepted(&example);
    assert_eq!(config.serials[0].channels[0].on, "R1=1\n");
}
