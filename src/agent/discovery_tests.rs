//! Unit tests of the Home Assistant discovery configs ([`super`]).

use super::*;

fn lamp() -> Announcement {
    Announcement {
        device: json!({ "ids": ["pimesh_lamp"], "name": "Lamp" }),
        components: BTreeMap::from([
            (
                "pimesh_lamp_state".to_string(),
                json!({ "p": "light", "unique_id": "pimesh_lamp_state" }),
            ),
            (
                "pimesh_lamp_press_single".to_string(),
                json!({ "p": "device_automation", "type": "button_short_press" }),
            ),
        ]),
        shared: Map::from_iter([("availability_mode".to_string(), json!("all"))]),
    }
}

fn parse(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap()
}

#[test]
fn device_mode_is_one_config_with_shared_keys_on_entities_only() {
    let messages = lamp().messages("ha", "pimesh_lamp", DiscoveryMode::Device);
    let topics: Vec<&str> = messages.keys().map(String::as_str).collect();
    assert_eq!(topics, ["ha/device/pimesh_lamp/config"]);
    let config = parse(&messages["ha/device/pimesh_lamp/config"]);
    assert_eq!(config["o"]["name"], "pimesh");
    assert_eq!(config["dev"]["ids"][0], "pimesh_lamp");
    assert_eq!(
        config["cmps"]["pimesh_lamp_state"]["availability_mode"],
        "all"
    );
    assert!(config["cmps"]["pimesh_lamp_press_single"]
        .get("availability_mode")
        .is_none());
    assert!(config.get("availability_mode").is_none());
}

#[test]
fn component_mode_is_one_config_per_entity_under_its_platform() {
    let messages = lamp().messages("ha", "pimesh_lamp", DiscoveryMode::Component);
    let topics: Vec<&str> = messages.keys().map(String::as_str).collect();
    assert_eq!(
        topics,
        [
            "ha/device_automation/pimesh_lamp/pimesh_lamp_press_single/config",
            "ha/light/pimesh_lamp/pimesh_lamp_state/config",
        ]
    );
    let light = parse(&messages["ha/light/pimesh_lamp/pimesh_lamp_state/config"]);
    assert_eq!(light["unique_id"], "pimesh_lamp_state");
    assert_eq!(light["availability_mode"], "all");
    assert_eq!(light["dev"]["name"], "Lamp");
    assert!(light.get("p").is_none());
    let trigger =
        parse(&messages["ha/device_automation/pimesh_lamp/pimesh_lamp_press_single/config"]);
    assert!(trigger.get("availability_mode").is_none());
}
