//! What a client subscribes to: each filter of a SUBSCRIBE checked against its role and
//! given to the router with a subscription identifier of its own (see [`Subscriptions`]),
//! the client's SUBACK sent once the router has them all; and UNSUBSCRIBE.
//!
//! [`Subscriptions`]: crate::door::subscriptions::Subscriptions

use super::{send_now, End, Session};
use crate::door::wire::{Granted, Outbound};
use crate::door::{self, acl};
use rumqttd::protocol::{
    Filter, Packet, QoS, RetainForwardRule, Subscribe, SubscribeProperties, Unsubscribe,
};

impl Session {
    pub(super) fn on_subscribe(&mut self, pkid: u16, filters: Vec<(String, u8)>) -> Option<End> {
        let mut codes = Vec::with_capacity(filters.len());
        // Each filter with its subscription identifier.
        let mut accepted = Vec::new();
        for (filter, qos) in filters {
            let code = if !acl::valid_filter(&filter) || filter.starts_with("$share/") {
                Granted::Invalid
            } else if !acl::may_subscribe(&self.door.base, &self.role, &filter) {
                self.door.log.refused(
                    self.peer,
                    &self.client_id,
                    &format!("{} may not subscribe to {filter:?}", self.role.describe()),
                );
                Granted::NotAuthorized
            } else {
                let granted = qos.min(2);
                let id = self.subscriptions.add(&filter, granted);
                let filter = Filter {
                    path: door::router_name(&filter),
                    qos: QoS::AtMostOnce,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                };
                accepted.push((filter, id));
                Granted::Qos(granted)
            };
            codes.push(code);
        }
        if accepted.is_empty() {
            self.send(Outbound::SubAck { pkid, codes });
            return None;
        }
        // The client hears SUBACK only once the router has every subscription, so whatever
        // is published after it reaches the client. One router SUBSCRIBE per filter: a
        // subscription identifier belongs to a whole SUBSCRIBE, and each filter needs its own.
        self.pending_subacks.insert(pkid, (codes, accepted.len()));
        for (filter, id) in accepted {
            let subscribe = Subscribe {
                pkid,
                filters: vec![filter],
            };
            let properties = SubscribeProperties {
                id: Some(id),
                user_properties: Vec::new(),
            };
            if let Err(e) = send_now(&mut self.tx, Packet::Subscribe(subscribe, Some(properties))) {
                return Some(End::Abnormal(e));
            }
        }
        None
    }

    /// The router has one more filter of SUBSCRIBE `pkid`: the client hears SUBACK once it
    /// has them all.
    pub(super) fn on_router_suback(&mut self, pkid: u16) {
        let done = self
            .pending_subacks
            .get_mut(&pkid)
            .is_some_and(|(_, left)| {
                *left -= 1;
                *left == 0
            });
        if let Some((codes, _)) = done.then(|| self.pending_subacks.remove(&pkid)).flatten() {
            self.send(Outbound::SubAck { pkid, codes });
        }
    }

    pub(super) fn on_unsubscribe(&mut self, pkid: u16, filters: Vec<String>) -> Option<End> {
        for f in &filters {
            self.subscriptions.remove(f);
        }
        let count = filters.len();
        let filters = filters.iter().map(|f| door::router_name(f)).collect();
        let unsub = Unsubscribe { pkid, filters };
        if let Err(e) = send_now(&mut self.tx, Packet::Unsubscribe(unsub, None)) {
            return Some(End::Abnormal(e));
        }
        self.send(Outbound::UnsubAck { pkid, count });
        None
    }
}
