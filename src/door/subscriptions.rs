//! One session's subscriptions, and which of the router's copies of a message its client
//! gets.
//!
//! rumqttd's router forwards a message once per matching filter, so a client subscribed to
//! `t/#` and `t/a` is handed two copies of a message on `t/a`. MQTT 5 allows a copy per
//! subscription and Mosquitto sends them, so an MQTT 5 client gets both. An MQTT 3.1.1 client
//! gets one, as from Mosquitto: each filter is given to the router with a subscription
//! identifier of its own, the router stamps it on what it forwards, and only the copy that
//! came through the client's oldest matching filter is sent. Every copy goes at the highest
//! QoS of the matching subscriptions (MQTT-3.3.5-1; MQTT 5: MQTT-3.3.4-2).

use super::acl;
use super::wire::Version;
use std::collections::HashMap;

/// A client's filters, each with its granted QoS and the identifier the router knows it by.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// By filter: the QoS granted and the filter's subscription identifier.
    by_filter: HashMap<String, Sub>,
    /// The identifier given last (none yet: 0, which the router refuses as an identifier).
    /// Identifiers are never reused within a session, so a copy still on its way through a
    /// filter since unsubscribed is not taken for one of another filter.
    last_id: usize,
}

/// One filter of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sub {
    /// The QoS granted.
    qos: u8,
    /// The subscription identifier given to the router with it.
    id: usize,
}

impl Subscriptions {
    /// Records `filter` at `qos` and returns its subscription identifier: a new one for a new
    /// filter, the same one when a filter is subscribed again, so the router's copies in
    /// flight still name it.
    pub fn add(&mut self, filter: &str, qos: u8) -> usize {
        if let Some(sub) = self.by_filter.get_mut(filter) {
            sub.qos = qos;
            return sub.id;
        }
        self.last_id += 1;
        let id = self.last_id;
        self.by_filter.insert(filter.to_string(), Sub { qos, id });
        id
    }

    /// Forgets `filter`.
    pub fn remove(&mut self, filter: &str) {
        self.by_filter.remove(filter);
    }

    /// The QoS at which the router's copy of a message on `topic` goes to a client speaking
    /// `version`, or `None` when this copy is not sent. `via` is the subscription identifier
    /// the copy carries; `retained` says it is a retained message replayed for a new
    /// subscription, which is sent whatever other filter also matches, as Mosquitto does.
    pub fn copy_qos(
        &self,
        version: Version,
        topic: &str,
        via: Option<usize>,
        retained: bool,
    ) -> Option<u8> {
        let matching = || {
            self.by_filter
                .iter()
                .filter(|(f, _)| acl::matches(f, topic))
                .map(|(_, s)| *s)
        };
        let qos = matching().map(|s| s.qos).max()?;
        let one_copy = version == Version::V4 && !retained;
        // A copy through a filter the client has just dropped (or one without an identifier)
        // is sent: a rare duplicate is better than a lost message.
        let known = via.filter(|v| self.by_filter.values().any(|s| s.id == *v));
        match known {
            Some(via) if one_copy => {
                let first = matching().map(|s| s.id).min()?;
                (via == first).then_some(qos)
            }
            _ => Some(qos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `t/#` at QoS 0, then `t/a` at QoS 1: their identifiers.
    fn overlapping() -> (Subscriptions, usize, usize) {
        let mut subs = Subscriptions::default();
        let wide = subs.add("t/#", 0);
        let narrow = subs.add("t/a", 1);
        (subs, wide, narrow)
    }

    #[test]
    fn a_3_1_1_client_gets_one_copy_at_the_highest_qos() {
        let (subs, wide, narrow) = overlapping();
        let copies: Vec<_> = [wide, narrow]
            .into_iter()
            .filter_map(|via| subs.copy_qos(Version::V4, "t/a", Some(via), false))
            .collect();
        assert_eq!(copies, [1]);
        // Only one filter matches: its copy is sent.
        assert_eq!(
            subs.copy_qos(Version::V4, "t/b", Some(wide), false),
            Some(0)
        );
    }

    #[test]
    fn an_mqtt_5_client_gets_a_copy_per_matching_subscription() {
        let (subs, wide, narrow) = overlapping();
        for via in [wide, narrow] {
            assert_eq!(subs.copy_qos(Version::V5, "t/a", Some(via), false), Some(1));
        }
    }

    #[test]
    fn retained_replays_and_unknown_filters_are_always_sent() {
        let (mut subs, wide, narrow) = overlapping();
        // Subscribing to t/a replays its retained message through t/a, though t/# is older.
        assert_eq!(
            subs.copy_qos(Version::V4, "t/a", Some(narrow), true),
            Some(1)
        );
        // A copy through t/# arriving after t/# was dropped still reaches the client once.
        subs.remove("t/#");
        assert_eq!(
            subs.copy_qos(Version::V4, "t/a", Some(wide), false),
            Some(1)
        );
        assert_eq!(
            subs.copy_qos(Version::V4, "t/a", Some(narrow), false),
            Some(1)
        );
        assert_eq!(subs.copy_qos(Version::V4, "t/a", None, false), Some(1));
        // Nothing matches: nothing is sent.
        assert_eq!(subs.copy_qos(Version::V4, "u/a", Some(narrow), false), None);
    }

    #[test]
    fn subscribing_again_keeps_the_identifier_and_takes_the_new_qos() {
        let (mut subs, wide, _) = overlapping();
        assert_eq!(subs.add("t/#", 2), wide);
        assert_eq!(
            subs.copy_qos(Version::V5, "t/b", Some(wide), false),
            Some(2)
        );
        subs.remove("t/#");
        assert_ne!(subs.add("t/#", 0), wide, "identifiers are not reused");
    }
}
