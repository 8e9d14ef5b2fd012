//! MQTT on the wire, both versions, as one set of typed packets.
//!
//! The front door decodes every client byte here and nowhere else. rumqttc's `mqttbytes`
//! codecs (3.1.1 and 5) return errors for malformed input instead of panicking, and limit a
//! packet's size from its fixed header before its body is read. Everything above this file
//! sees [`Inbound`] and writes [`Outbound`], whatever version the client speaks, so a message
//! published with MQTT 5 properties reaches a 3.1.1 subscriber as a plain 3.1.1 publish.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use rumqttd::protocol::PublishProperties;

mod encode;
pub use encode::encode;

/// The MQTT version a client speaks, fixed by its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// A client's will: published for it if its connection ends without DISCONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    /// Topic of the will message.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// Whether the broker keeps it as the topic's retained message.
    pub retain: bool,
}

/// A publish in either direction.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Topic name (never a filter).
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Packet id (0 for QoS 0).
    pub pkid: u16,
    /// MQTT 5 properties; never sent to a 3.1.1 client.
    pub properties: Option<PublishProperties>,
}

/// What a client sends.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// The first packet of a session.
    Connect {
        client_id: String,
        clean: bool,
        keep_alive: u16,
        login: Option<(String, String)>,
        will: Option<Will>,
    },
    Publish(Message),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    /// Filters with the QoS asked for each.
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// The client says goodbye: its will is dropped, unless (MQTT 5 reason 0x04) it asks
    /// for it to be published.
    Disconnect {
        with_will: bool,
    },
    /// A packet only a server sends (CONNACK, SUBACK, …) or AUTH: a protocol error here.
    Unexpected(&'static str),
}

/// Why a CONNECT is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user, wrong password or no credentials where they are required.
    BadCredentials,
    /// Credentials are right but this client may not connect (e.g. its slots are full).
    NotAuthorized,
    /// The broker cannot take another connection now.
    Busy,
    /// The client id is not acceptable.
    BadClientId,
}

/// A SUBACK code for one filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granted {
    /// Subscribed at this QoS.
    Qos(u8),
    /// Refused: the client may not read there.
    NotAuthorized,
    /// Refused: not a valid filter.
    Invalid,
}

/// What the front door sends to a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    ConnAck {
        refusal: Option<Refusal>,
        /// The id given to a client that connected with an empty one (MQTT 5 tells it).
        assigned_id: Option<String>,
    },
    Publish(Message),
    /// Acknowledges a QoS 1 publish; `refused` tells an MQTT 5 client it was not accepted
    /// (3.1.1 has no way to say so: the publish is acknowledged and dropped).
    PubAck {
        pkid: u16,
        refused: bool,
    },
    PubRec {
        pkid: u16,
        refused: bool,
    },
    PubRel(u16),
    PubComp(u16),
    SubAck {
        pkid: u16,
        codes: Vec<Granted>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
}

/// Why bytes from a client are not a packet.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the first packet is not CONNECT")]
    NotConnect,
    #[error("unsupported protocol level {0} (pimesh speaks MQTT 3.1.1 and 5)")]
    Level(u8),
    #[error("packet of {size} bytes is over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Reads the protocol level of a CONNECT at the start of `buf` without consuming it:
/// `Ok(None)` until enough bytes are there.
pub fn sniff_version(buf: &[u8]) -> Result<Option<Version>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != 1 {
        return Err(WireError::NotConnect);
    }
    // Skip the remaining-length varint (1..4 bytes).
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(WireError::Malformed("remaining length over 4 bytes".into()));
        }
    }
    // Protocol name: u16 length + bytes, then the level byte.
    let (Some(&hi), Some(&lo)) = (buf.get(i), buf.get(i + 1)) else {
        return Ok(None);
    };
    let name_len = u16::from_be_bytes([hi, lo]) as usize;
    let Some(&level) = buf.get(i + 2 + name_len) else {
        return Ok(None);
    };
    if name_len != 4 {
        return Err(WireError::Level(level));
    }
    match level {
        4 => Ok(Some(Version::V4)),
        5 => Ok(Some(Version::V5)),
        other => Err(WireError::Level(other)),
    }
}

/// MQTT 5 DISCONNECT reason code 0x04: "disconnect with will message".
const DISCONNECT_WITH_WILL: u8 = 0x04;

/// Takes the next whole packet from `buf`: `Ok(None)` while it is incomplete. A packet over
/// `max` bytes is refused from its fixed header, before its body arrives.
pub fn decode(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Inbound>, WireError> {
    if buf.is_empty() {
        return Ok(None);
    }
    match version {
        Version::V4 => match v4::Packet::read(buf, max) {
            Ok(p) => Ok(Some(from_v4(p))),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                Err(WireError::TooLarge { size, max })
            }
            Err(e) => Err(WireError::Malformed(e.to_string())),
        },
        Version::V5 => {
            // rumqttc's v5 reader refuses a DISCONNECT without a reason code (what most
            // clients send) and waits forever for the properties of one with a reason code
            // and no properties; either would end the session as abnormal and publish the
            // client's will. Both forms are read here.
            if let [0xE0, len @ (0 | 1), rest @ ..] = &buf[..] {
                let with_will = match (len, rest.first()) {
                    (0, _) => false,
                    (_, Some(&reason)) => reason == DISCONNECT_WITH_WILL,
                    (_, None) => return Ok(None),
                };
                let _ = buf.split_to(2 + usize::from(*len));
                return Ok(Some(Inbound::Disconnect { with_will }));
            }
            let limit = u32::try_from(max).unwrap_or(u32::MAX);
            match v5::Packet::read(buf, Some(limit)) {
                Ok(p) => Ok(Some(from_v5(p))),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
                Err(rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded {
                    pkt_size, ..
                }) => Err(WireError::TooLarge {
                    size: pkt_size,
                    max,
                }),
                Err(e) => Err(WireError::Malformed(e.to_string())),
            }
        }
    }
}

fn qos_v4(q: u8) -> rumqttc::mqttbytes::QoS {
    match q {
        0 => rumqttc::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos_v5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn from_v4(p: v4::Packet) -> Inbound {
    match p {
        v4::Packet::Connect(c) => Inbound::Connect {
            client_id: c.client_id,
            clean: c.clean_session,
            keep_alive: c.keep_alive,
            login: c.login.map(|l| (l.username, l.password)),
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                retain: w.retain,
            }),
        },
        v4::Packet::Publish(p) => Inbound::Publish(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            pkid: p.pkid,
            properties: None,
        }),
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v4::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v4::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect { with_will: false },
        v4::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v4::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Inbound::Unexpected("PINGRESP"),
    }
}

fn from_v5(p: v5::Packet) -> Inbound {
    match p {
        v5::Packet::Connect(c, will, login) => Inbound::Connect {
            client_id: c.client_id,
            clean: c.clean_start,
            keep_alive: c.keep_alive,
            login: login.map(|l| (l.username, l.password)),
            will: will.map(|w| Will {
                topic: String::from_utf8_lossy(&w.topic).into_owned(),
                payload: w.message,
                retain: w.retain,
            }),
        },
        v5::Packet::Publish(p) => Inbound::Publish(Message {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            pkid: p.pkid,
            properties: p.properties.map(|p| PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                topic_alias: p.topic_alias,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                subscription_identifiers: Vec::new(),
                content_type: p.content_type,
            }),
        }),
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v5::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v5::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
        v5::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Inbound::Unexpected("PINGRESP"),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
