//! What crosses rumqttd's router beside a message: [`super::DOOR_PROPERTY`], written by the
//! session that takes a publish from a client and read by the sessions that deliver it.

use rumqttd::protocol::PublishProperties;

/// Whether a user property is one the front door sets (never taken from a client, never
/// passed to one).
pub fn is_internal(key: &str) -> bool {
    key == super::SENDER_PROPERTY || key == super::DOOR_PROPERTY
}

/// What [`super::DOOR_PROPERTY`] says about a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorMark {
    /// The QoS it was published with.
    pub qos: u8,
    /// Its payload was empty and it was not retained: it crosses the router with
    /// [`DoorMark::PLACEHOLDER`] instead.
    pub empty: bool,
}

impl DoorMark {
    /// The payload an empty, not retained publish crosses the router with.
    pub const PLACEHOLDER: &'static [u8] = b"\0";

    /// The property's value: the QoS digit, then `e` for an empty publish.
    pub fn encode(self) -> String {
        format!("{}{}", self.qos, if self.empty { "e" } else { "" })
    }

    /// Reads the property's value; `None` for anything the door did not write.
    pub fn decode(value: &str) -> Option<DoorMark> {
        let (qos, rest) = value.split_at_checked(1)?;
        let qos = qos.parse().ok().filter(|q| *q <= 2)?;
        Some(DoorMark {
            qos,
            empty: rest == "e",
        })
    }

    /// Takes the mark and every internal property out of a forwarded publish's properties;
    /// properties left empty become none.
    pub fn take(
        properties: Option<PublishProperties>,
    ) -> (Option<PublishProperties>, Option<DoorMark>) {
        let Some(mut p) = properties else {
            return (None, None);
        };
        let mark = p
            .user_properties
            .iter()
            .rev()
            .find(|(k, _)| k == super::DOOR_PROPERTY)
            .and_then(|(_, v)| DoorMark::decode(v));
        p.topic_alias = None;
        p.subscription_identifiers.clear();
        p.user_properties.retain(|(k, _)| !is_internal(k));
        let p = (p != PublishProperties::default()).then_some(p);
        (p, mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_crosses_the_router_and_is_taken_out_with_the_sender() {
        for mark in [
            DoorMark {
                qos: 0,
                empty: false,
            },
            DoorMark {
                qos: 2,
                empty: true,
            },
        ] {
            assert_eq!(DoorMark::decode(&mark.encode()), Some(mark));
        }
        assert_eq!(DoorMark::decode("3"), None);
        assert_eq!(DoorMark::decode(""), None);
        let props = PublishProperties {
            user_properties: vec![
                (super::super::SENDER_PROPERTY.into(), "user a/b".into()),
                (super::super::DOOR_PROPERTY.into(), "1e".into()),
            ],
            ..Default::default()
        };
        assert_eq!(
            DoorMark::take(Some(props)),
            (
                None,
                Some(DoorMark {
                    qos: 1,
                    empty: true
                })
            )
        );
        let kept = PublishProperties {
            response_topic: Some("r".into()),
            ..Default::default()
        };
        assert_eq!(DoorMark::take(Some(kept.clone())), (Some(kept), None));
    }
}
