//! Home Assistant MQTT discovery, end to end: real agents, Home Assistant played by a user
//! account (`pimesh user add`) subscribed to `homeassistant/#` on one instance's broker.
//! Every config pimesh publishes, and every retained one at the end of a test, is held
//! against Home Assistant's own schema ([`support::ha_schema`]).

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use support::ha_schema;
use support::*;

/// Home Assistant's discovery prefix, pimesh's default.
const PREFIX: &str = "homeassistant";

/// Panics unless the discovery config `payload` on `topic` passes Home Assistant's schema.
fn assert_valid(topic: &str, payload: &str) {
    if let Err(problems) = ha_schema::check(PREFIX, topic, payload) {
        panic!(
            "Home Assistant would not take {topic} as sent:\n  {}\n{payload}",
            problems.join("\n  ")
        );
    }
}

/// Adds a user on `a`, as one does for Home Assistant, and returns its login.
fn ha_user(a: &Agent) -> (String, String) {
    let out = a.cli(&["user", "add", "homeassistant"]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    ("homeassistant".into(), text(&out.stdout).trim().to_string())
}

/// Retained discovery configs as Home Assistant sees them: the last payload per topic.
struct Configs {
    sub: Subscriber,
    last: BTreeMap<String, String>,
    /// How many messages each topic got.
    count: BTreeMap<String, usize>,
}

impl Configs {
    fn new(port: u16, login: (String, String)) -> Configs {
        Configs {
            sub: Subscriber::new_as(port, "homeassistant/#", login),
            last: BTreeMap::new(),
            count: BTreeMap::new(),
        }
    }

    /// Takes what arrived; every config (not the empty payloads that clear one, nor Home
    /// Assistant's own status) must pass Home Assistant's schema.
    fn update(&mut self) {
        for line in self.sub.drain() {
            let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
            if is_config(topic, payload) {
                assert_valid(topic, payload);
            }
            self.last.insert(topic.to_string(), payload.to_string());
            *self.count.entry(topic.to_string()).or_default() += 1;
        }
    }

    /// Waits until `topic` holds a config for which `cond` holds, and returns it.
    fn wait_for(&mut self, topic: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let mut found = Value::Null;
        wait_until(what, || {
            self.update();
            found = self
                .last
                .get(topic)
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(Value::Null);
            !found.is_null() && cond(&found)
        });
        found
    }
}

/// Whether a message under the prefix is a discovery config, not one clearing a config or
/// Home Assistant's `online`.
fn is_config(topic: &str, payload: &str) -> bool {
    topic.ends_with("/config") && !payload.is_empty()
}

/// Checks every retained config on the broker at `port` against Home Assistant's schema, as
/// Home Assistant reads them when it subscribes; `configs` is what the test's subscriber saw
/// announced, so each of those must be among them. Returns how many were checked.
fn check_every_retained(port: u16, login: (String, String), configs: &mut Configs) -> usize {
    configs.update();
    let announced: Vec<String> = configs
        .last
        .iter()
        .filter(|(t, p)| is_config(t, p))
        .map(|(t, _)| t.clone())
        .collect();
    let fresh = Subscriber::new_as(port, &format!("{PREFIX}/#"), login);
    let mut retained = BTreeMap::new();
    wait_until("every announced config retained", || {
        for line in fresh.drain() {
            let (topic, payload) = line.split_once(' ').unwrap_or((&line, ""));
            retained.insert(topic.to_string(), payload.to_string());
        }
        announced.iter().all(|t| retained.contains_key(t))
    });
    let mut checked = 0;
    for (topic, payload) in retained.iter().filter(|(t, p)| is_config(t, p)) {
        assert_valid(topic, payload);
        checked += 1;
    }
    checked
}

fn device_topic(object: &str) -> String {
    format!("homeassistant/device/pimesh_{object}/config")
}

/// Checks the keys Home Assistant needs in a device config of object `id`.
fn check_object_config(config: &Value, id: &str, platform: &str) {
    let dev = &config["dev"];
    assert_eq!(dev["ids"][0], format!("pimesh_{id}"), "{config}");
    assert!(dev["name"].is_string(), "{config}");
    assert!(
        dev["via_device"]
            .as_str()
            .unwrap()
            .starts_with("pimesh-instance_"),
        "{config}"
    );
    assert_eq!(config["o"]["name"], "pimesh", "{config}");
    let cmp = &config["cmps"][format!("pimesh_{id}_state")];
    assert_eq!(cmp["p"], platform, "{config}");
    assert_eq!(cmp["unique_id"], format!("pimesh_{id}_state"), "{config}");
    assert_eq!(cmp["state_topic"], format!("pimesh/{id}"), "{config}");
    assert_eq!(
        cmp["availability"][0]["topic"],
        format!("pimesh/{id}"),
        "{config}"
    );
    assert_eq!(cmp["availability_mode"], "all", "{config}");
    if platform == "binary_sensor" {
        assert!(cmp.get("command_topic").is_none(), "{config}");
        assert_eq!(cmp["value_template"], "{{ value_json.state }}", "{config}");
    } else {
        assert_eq!(cmp["command_topic"], format!("pimesh/{id}/set"), "{config}");
        assert_eq!(cmp["payload_on"], "ON", "{config}");
    }
}

#[test]
fn every_instance_announces_the_whole_house_and_commands_reach_the_holder() {
    let config_a = format!(
        "{}[[relay]]\nid = \"a-lamp\"\npin = 22\nha-component = \"light\"\n\
         [[virtual]]\nid = \"a-scene\"\nroom = \"hall\"\n",
        node_config("a")
    );
    let mut a = start_node("alpha", &config_a, &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    let login = ha_user(&b);
    let mut ha = Configs::new(b.port, login.clone());

    for (id, platform) in [
        ("a-light", "switch"),
        ("a-fan", "switch"),
        ("a-lamp", "light"),
        ("a-scene", "switch"),
        ("a-button", "binary_sensor"),
        ("b-light", "switch"),
        ("b-button", "binary_sensor"),
    ] {
        let config = ha.wait_for(&device_topic(id), &format!("{id}'s config on B"), |_| true);
        check_object_config(&config, id, platform);
    }
    let light = ha.wait_for(&device_topic("a-light"), "a-light", |_| true);
    assert_eq!(light["dev"]["sa"], "room-a");
    let lamp = ha.wait_for(&device_topic("a-lamp"), "a-lamp", |_| true);
    assert_eq!(
        lamp["cmps"]["pimesh_a-lamp_state"]["state_value_template"],
        "{{ value_json.state }}"
    );
    let button = ha.wait_for(&device_topic("a-button"), "a-button", |_| true);
    for (word, kind) in [
        ("single", "button_short_press"),
        ("double", "button_double_press"),
        ("long", "button_long_press"),
    ] {
        let trigger = &button["cmps"][format!("pimesh_a-button_press_{word}")];
        assert_eq!(trigger["p"], "device_automation", "{button}");
        assert_eq!(trigger["automation_type"], "trigger");
        assert_eq!(trigger["topic"], "pimesh/a-button/event");
        assert_eq!(
            (&trigger["type"], &trigger["payload"]),
            (&kind.into(), &word.into())
        );
    }
    // Both instances are devices, with their connectivity.
    wait_until("both instances announced", || {
        ha.update();
        ha.last
            .keys()
            .filter(|t| t.contains("/pimesh-instance_"))
            .count()
            == 2
    });
    for topic in ha.last.keys().filter(|t| t.contains("/pimesh-instance_")) {
        let config: Value = serde_json::from_str(&ha.last[topic]).unwrap();
        let (_, cmp) = config["cmps"].as_object().unwrap().iter().next().unwrap();
        assert_eq!(cmp["device_class"], "connectivity", "{config}");
        assert!(cmp["state_topic"].as_str().unwrap().ends_with("/status"));
    }

    // Home Assistant on B switches a relay held by A, through the discovered command topic.
    let command = light["cmps"]["pimesh_a-light_state"]["command_topic"]
        .as_str()
        .unwrap()
        .to_string();
    publish_as(b.port, login.clone(), &command, b"ON", false);
    wait_until("A's pin 17 on", || a.pin(17).as_deref() == Some("1"));

    // A move changes the device's area.
    let out = a.cli(&["move", "a-fan", "attic"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    ha.wait_for(&device_topic("a-fan"), "a-fan in the attic", |c| {
        c["dev"]["sa"] == "attic"
    });

    // Home Assistant's birth message has everything announced again.
    ha.update();
    let before = (
        ha.count[&device_topic("b-light")],
        ha.count[&device_topic("a-light")],
    );
    publish_as(
        b.port,
        login.clone(),
        "homeassistant/status",
        b"online",
        false,
    );
    wait_until("configs announced again", || {
        ha.update();
        ha.count[&device_topic("b-light")] > before.0
            && ha.count[&device_topic("a-light")] > before.1
    });

    // A user cannot overwrite a pimesh device's config.
    publish_as(b.port, login.clone(), &device_topic("b-light"), b"{}", true);
    let fresh = Subscriber::new_as(b.port, &device_topic("b-light"), login.clone());
    let got = fresh.take(1);
    assert!(got[0].contains("\"cmps\""), "{got:?}");

    // Every retained config: 8 objects (5 on A, 3 on B) and 2 instances, a device config each.
    let checked = check_every_retained(b.port, login.clone(), &mut ha);
    assert_eq!(checked, 10, "{:?}", ha.last.keys());

    // A virtual object dropped from A's config is removed from Home Assistant on B.
    a.stop();
    let cfg = a.dir.parent().unwrap().join("pimesh.toml");
    std::fs::write(&cfg, node_config("a")).unwrap();
    a.restart();
    wait_until("a-scene's config cleared on B", || {
        ha.update();
        ha.last
            .get(&device_topic("a-scene"))
            .is_some_and(String::is_empty)
    });
    assert!(!ha.last[&device_topic("a-light")].is_empty());
}

#[test]
fn component_mode_has_a_topic_per_entity_and_disabled_publishes_nothing() {
    let config = format!(
        "{}[homeassistant]\ndiscovery = \"component\"\n",
        node_config("c")
    );
    let c = start_node("gamma", &config, &[]);
    let login = ha_user(&c);
    let mut ha = Configs::new(c.port, login.clone());
    let switch = ha.wait_for(
        "homeassistant/switch/pimesh_c-light/pimesh_c-light_state/config",
        "c-light's switch config",
        |_| true,
    );
    assert_eq!(switch["command_topic"], "pimesh/c-light/set");
    assert_eq!(switch["unique_id"], "pimesh_c-light_state");
    assert_eq!(switch["dev"]["ids"][0], "pimesh_c-light");
    assert!(switch["availability"].is_array());
    ha.wait_for(
        "homeassistant/binary_sensor/pimesh_c-button/pimesh_c-button_state/config",
        "c-button's binary sensor",
        |c| c["state_topic"] == "pimesh/c-button",
    );
    let trigger = ha.wait_for(
        "homeassistant/device_automation/pimesh_c-button/pimesh_c-button_press_long/config",
        "c-button's long press trigger",
        |_| true,
    );
    assert_eq!(trigger["payload"], "long");
    assert!(trigger.get("availability").is_none());
    assert!(!ha
        .last
        .keys()
        .any(|t| t.starts_with("homeassistant/device/")));
    // Every retained config: c-light and c-fan's switches, c-button's binary sensor and its
    // three triggers, the instance's connectivity sensor.
    wait_until("every entity announced", || {
        ha.update();
        ha.last.len() == 7
    });
    let checked = check_every_retained(c.port, login, &mut ha);
    assert_eq!(checked, 7, "{:?}", ha.last.keys());

    let config = format!("{}[homeassistant]\nenabled = false\n", node_config("d"));
    let d = start_node("delta", &config, &[]);
    let login = ha_user(&d);
    let all = Subscriber::new_as(d.port, "#", login.clone());
    publish_as(d.port, login, "pimesh/d-light/set", b"ON", false);
    let mut lines = Vec::new();
    wait_until("d-light's new state", || {
        lines.extend(all.drain());
        lines
            .iter()
            .any(|l| l.starts_with("pimesh/d-light ") && l.contains("\"ON\""))
    });
    assert!(
        !lines.iter().any(|l| l.starts_with("homeassistant/")),
        "{lines:?}"
    );
}

/// The schema checker is not vacuous: it takes a config Home Assistant takes, abbreviated or
/// not, and names what is wrong with one it would drop or ignore.
#[test]
fn the_schema_check_rejects_unknown_and_missing_keys() {
    let switch = "homeassistant/switch/pimesh_lamp/pimesh_lamp_state/config";
    let good = r#"{"uniq_id":"pimesh_lamp_state","name":null,"cmd_t":"pimesh/lamp/set",
        "stat_t":"pimesh/lamp","avty":[{"t":"pimesh/lamp","val_tpl":"{{ 1 }}"}],
        "avty_mode":"all","dev":{"ids":["pimesh_lamp"],"name":"Lamp"},
        "o":{"name":"pimesh","sw":"1"},"qos":1}"#;
    assert_eq!(ha_schema::check(PREFIX, switch, good), Ok(()));

    let unknown = good.replace(r#""qos":1"#, r#""qos":1,"brightness":true"#);
    let errors = ha_schema::check(PREFIX, switch, &unknown).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("unknown key `brightness`")),
        "{errors:?}"
    );

    let missing = good.replace(r#""cmd_t":"pimesh/lamp/set","#, "");
    let errors = ha_schema::check(PREFIX, switch, &missing).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required `command_topic`")),
        "{errors:?}"
    );

    let wrong_type = good.replace(r#""avty_mode":"all""#, r#""avty_mode":["all"]"#);
    assert!(ha_schema::check(PREFIX, switch, &wrong_type).is_err());

    // Device-based: the same checks inside a component, and a key HA accepts at the top
    // level but hands to no component.
    let device = "homeassistant/device/pimesh_lamp/config";
    let good = r#"{"dev":{"ids":"pimesh_lamp"},"o":{"name":"pimesh"},"cmps":{
        "lamp":{"p":"switch","uniq_id":"pimesh_lamp_state","cmd_t":"pimesh/lamp/set","qos":1},
        "press":{"p":"device_automation","atype":"trigger","t":"pimesh/lamp/event",
                 "type":"button_short_press","stype":"button_1","pl":"single"}}}"#;
    assert_eq!(ha_schema::check(PREFIX, device, good), Ok(()));
    let unknown = good.replace(r#""pl":"single""#, r#""pl":"single","avty_mode":"all""#);
    let errors = ha_schema::check(PREFIX, device, &unknown).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("component press: unknown key `availability_mode`")),
        "{errors:?}"
    );
    let missing = good.replace(r#""stype":"button_1","#, "");
    let errors = ha_schema::check(PREFIX, device, &missing).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("missing required `subtype`")),
        "{errors:?}"
    );
    let ignored = good.replace(
        r#""o":{"name":"pimesh"},"#,
        r#""o":{"name":"pimesh"},"qos":1,"#,
    );
    let errors = ha_schema::check(PREFIX, device, &ignored).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`qos` is accepted at the device level but given to no component")),
        "{errors:?}"
    );
}
