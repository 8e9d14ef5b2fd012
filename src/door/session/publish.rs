//! What a client publishes: each message checked against its role, the command topics'
//! rules, the retained-message quota and the command rate, then handed to the router with
//! the door's mark; and its will, published when the connection ends abnormally.

use super::{send_now, End, Session, MAX_UNACKED};
use crate::door::mark::{is_internal, DoorMark};
use crate::door::wire::{Message, Outbound, Will};
use crate::door::{self, acl};
use bytes::Bytes;
use rumqttd::protocol::{Packet, Publish};
use std::time::Duration;
use tokio::time::Instant;

impl Session {
    pub(super) async fn on_publish(&mut self, m: Message) -> Option<End> {
        let mut allowed = acl::may_publish(&self.door.base, &self.role, &m.topic)
            && acl::may_publish_discovery(self.door.discovery_prefix.as_deref(), &m.topic);
        if !allowed {
            self.door.log.refused(
                self.peer,
                &self.client_id,
                &format!("{} may not publish on {:?}", self.role.describe(), m.topic),
            );
        } else if m.retain && acl::is_request(&self.door.base, &self.role, &m.topic) {
            // A retained command would be kept by the broker and run again for every new
            // subscriber of the command topics: only live commands switch.
            allowed = false;
            if !std::mem::replace(&mut self.warned_retained_command, true) {
                let why = format!(
                    "a retained command on {:?} is ignored and not kept (only live commands switch); publish it without retain",
                    m.topic
                );
                self.door.log.refused(self.peer, &self.client_id, &why);
            }
        } else if let Err(full) = if m.retain && !self.role.is_trusted() {
            self.door.retained.admit(&m.topic, m.payload.len())
        } else {
            Ok(())
        } {
            allowed = false;
            let why = format!("a retained message on {:?} is not kept: {full}", m.topic);
            self.door.log.refused(self.peer, &self.client_id, &why);
        } else if !self.role.is_trusted() && acl::is_request(&self.door.base, &self.role, &m.topic)
        {
            self.take_token().await;
        }
        let duplicate = m.qos == 2 && self.awaiting_rel.contains(&m.pkid);
        if allowed && !duplicate {
            let mark = DoorMark {
                qos: m.qos,
                empty: m.payload.is_empty() && !m.retain,
            };
            let payload = if mark.empty {
                Bytes::from_static(DoorMark::PLACEHOLDER)
            } else {
                m.payload
            };
            let command = acl::is_request(&self.door.base, &self.role, &m.topic);
            let topic = door::router_name(&m.topic);
            let publish = Publish::new(Bytes::from(topic.into_bytes()), payload, m.retain);
            let mut properties = m.properties.unwrap_or_default();
            // Aliases are not offered; a client that sends one anyway gets it ignored.
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
            properties.user_properties.retain(|(k, _)| !is_internal(k));
            if command {
                let sender = format!("{}/{}", self.role.describe(), self.client_id);
                properties
                    .user_properties
                    .push((door::SENDER_PROPERTY.to_string(), sender));
            }
            properties
                .user_properties
                .push((door::DOOR_PROPERTY.to_string(), mark.encode()));
            if let Err(e) = send_now(&mut self.tx, Packet::Publish(publish, Some(properties))) {
                return Some(End::Abnormal(e));
            }
        }
        match m.qos {
            1 => self.send(Outbound::PubAck {
                pkid: m.pkid,
                refused: !allowed,
            }),
            2 => {
                if self.awaiting_rel.len() >= MAX_UNACKED && !duplicate {
                    return Some(End::Abnormal(
                        "too many QoS 2 publishes without PUBREL".into(),
                    ));
                }
                self.awaiting_rel.insert(m.pkid);
                self.send(Outbound::PubRec {
                    pkid: m.pkid,
                    refused: !allowed,
                });
            }
            _ => {}
        }
        None
    }

    /// Waits until the client may send another command (users only).
    async fn take_token(&mut self) {
        let limits = &self.door.limits;
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limits.commands_per_s).min(limits.command_burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / limits.commands_per_s;
            self.door.log.throttled(self.peer, &self.client_id);
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.tokens = 1.0;
            self.refilled = Instant::now();
        }
        self.tokens -= 1.0;
    }

    pub(super) fn publish_will(&mut self, will: Will) {
        if will.retain && !self.role.is_trusted() {
            if let Err(full) = self.door.retained.admit(&will.topic, will.payload.len()) {
                let why = format!("its will on {:?} is not kept: {full}", will.topic);
                self.door.log.refused(self.peer, &self.client_id, &why);
                return;
            }
        }
        let publish = Publish::new(
            Bytes::from(door::router_name(&will.topic).into_bytes()),
            will.payload,
            will.retain,
        );
        let _ = send_now(&mut self.tx, Packet::Publish(publish, None));
    }
}
