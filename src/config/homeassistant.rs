//! Checks of the `[homeassistant]` table and of the `ha-component` key of relays and
//! virtual objects.

use super::check::Source;
use super::raw::RawHomeAssistant;
use super::{ConfigError, DiscoveryMode, HaComponent, HomeAssistantConfig};
use toml::Spanned;

/// Home Assistant's own default discovery prefix.
pub const DEFAULT_PREFIX: &str = "homeassistant";

/// Checks the table and fills its defaults. The prefix must be a plain topic outside
/// `base`: the agent's routes under `base` would otherwise take discovery topics for
/// object states.
pub(super) fn table(
    src: &Source,
    raw: RawHomeAssistant,
    base: &str,
) -> Result<HomeAssistantConfig, ConfigError> {
    let discovery_prefix = match raw.discovery_prefix {
        Some(p) => {
            let t = p.get_ref();
            let problem = if t.is_empty() {
                Some("is empty; leave the key out for \"homeassistant\"".to_string())
            } else if t.contains(['+', '#', '\0']) {
                Some("contains an MQTT wildcard ('+' or '#'); remove it".into())
            } else if t.starts_with('/') || t.ends_with('/') {
                Some("must not start or end with '/'".into())
            } else if t.starts_with('$') {
                Some("must not start with '$', which brokers reserve for their own topics".into())
            } else if t == base || t.starts_with(&format!("{base}/")) {
                Some(format!(
                    "lies under base-topic {base:?}, whose topics are the house's own; use a prefix outside it"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(src.error(
                    p.span(),
                    format!("homeassistant discovery-prefix {t:?} {problem}"),
                ));
            }
            p.into_inner()
        }
        None => DEFAULT_PREFIX.to_string(),
    };
    let discovery = match raw.discovery {
        None => DiscoveryMode::Device,
        Some(d) => match d.get_ref().as_str() {
            "device" => DiscoveryMode::Device,
            "component" => DiscoveryMode::Component,
            other => {
                return Err(src.error(
                    d.span(),
                    format!(
                        "homeassistant discovery must be \"device\" (Home Assistant 2024.12 and later) or \"component\" (older releases), not {other:?}"
                    ),
                ))
            }
        },
    };
    Ok(HomeAssistantConfig {
        enabled: raw.enabled.unwrap_or(true),
        discovery_prefix,
        discovery,
    })
}

/// Checks the `ha-component` key of `what` (`relay "r1"`, `virtual "scene"`).
pub(super) fn component(
    src: &Source,
    what: &str,
    raw: &Option<Spanned<String>>,
) -> Result<HaComponent, ConfigError> {
    match raw {
        None => Ok(HaComponent::Switch),
        Some(c) => match c.get_ref().as_str() {
            "switch" => Ok(HaComponent::Switch),
            "light" => Ok(HaComponent::Light),
            other => Err(src.error(
                c.span(),
                format!("{what}: ha-component must be \"switch\" or \"light\", not {other:?}"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn parsed(text: &str) -> Result<Config, String> {
        parse(text, Path::new("house.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_read() {
        let c = parsed(
            "[homeassistant]\nenabled = false\ndiscovery-prefix = \"ha/disc\"\ndiscovery = \"component\"\n\
             [[relay]]\nid = \"lamp\"\npin = 17\nha-component = \"light\"\n\
             [[virtual]]\nid = \"scene\"\nha-component = \"switch\"\n",
        )
        .unwrap();
        assert_eq!(
            c.homeassistant,
            HomeAssistantConfig {
                enabled: false,
                discovery_prefix: "ha/disc".into(),
                discovery: DiscoveryMode::Component,
            }
        );
        assert_eq!(c.relays[0].ha_component, HaComponent::Light);
        assert_eq!(c.virtuals[0].ha_component, HaComponent::Switch);
    }

    #[test]
    fn refusals_name_the_key() {
        let cases = [
            (
                "[homeassistant]\ndiscovery = \"entity\"\n",
                "house.toml:2: homeassistant discovery must be \"device\" (Home Assistant 2024.12 and later) or \"component\" (older releases), not \"entity\"",
            ),
            (
                "[homeassistant]\ndiscovery-prefix = \"ha/#\"\n",
                "house.toml:2: homeassistant discovery-prefix \"ha/#\" contains an MQTT wildcard ('+' or '#'); remove it",
            ),
            (
                "[homeassistant]\ndiscovery-prefix = \"\"\n",
                "house.toml:2: homeassistant discovery-prefix \"\" is empty; leave the key out for \"homeassistant\"",
            ),
            (
                "[homeassistant]\ndiscovery-prefix = \"pimesh/ha\"\n",
                "house.toml:2: homeassistant discovery-prefix \"pimesh/ha\" lies under base-topic \"pimesh\", whose topics are the house's own; use a prefix outside it",
            ),
            (
                "[[relay]]\nid = \"r\"\npin = 17\nha-component = \"lamp\"\n",
                "house.toml:4: relay \"r\": ha-component must be \"switch\" or \"light\", not \"lamp\"",
            ),
            (
                "[homeassistant]\nprefix = \"x\"\n",
                "unknown field `prefix`",
            ),
        ];
        for (text, want) in cases {
            let err = parsed(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
