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

/// Appends `packet` to `out` in the client's version. Only fails for a packet the client's
/// limit cannot carry, which the caller drops.
pub fn encode(version: Version, packet: &Outbound, out: &mut BytesMut) -> Result<(), WireError> {
    let result = match version {
        Version::V4 => to_v4(packet)
            .write(out, usize::MAX)
            .map_err(|e| e.to_string()),
        Version::V5 => to_v5(packet).write(out, None).map_err(|e| e.to_string()),
    };
    result.map(drop).map_err(WireError::Malformed)
}

fn to_v4(packet: &Outbound) -> v4::Packet {
    use v4::ConnectReturnCode as C;
    match packet {
        Outbound::ConnAck { refusal, .. } => v4::Packet::ConnAck(v4::ConnAck::new(
            match refusal {
                None => C::Success,
                Some(Refusal::BadCredentials) => C::BadUserNamePassword,
                Some(Refusal::NotAuthorized) => C::NotAuthorized,
                Some(Refusal::Busy) => C::ServiceUnavailable,
                Some(Refusal::BadClientId) => C::BadClientId,
            },
            false,
        )),
        Outbound::Publish(m) => v4::Packet::Publish(v4::Publish {
            dup: false,
            qos: qos_v4(m.qos),
            retain: m.retain,
            topic: m.topic.clone(),
            pkid: m.pkid,
            payload: m.payload.clone(),
        }),
        Outbound::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(*pkid)),
        Outbound::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(*pkid)),
        Outbound::PubRel(pkid) => v4::Packet::PubRel(v4::PubRel::new(*pkid)),
        Outbound::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(*pkid)),
        Outbound::SubAck { pkid, codes } => v4::Packet::SubAck(v4::SubAck::new(
            *pkid,
            codes
                .iter()
                .map(|c| match c {
                    Granted::Qos(q) => v4::SubscribeReasonCode::Success(qos_v4(*q)),
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Outbound::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        Outbound::PingResp => v4::Packet::PingResp,
    }
}

fn to_v5(packet: &Outbound) -> v5::Packet {
    use v5::ConnectReturnCode as C;
    match packet {
        Outbound::ConnAck {
            refusal,
            assigned_id,
        } => v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: match refusal {
                None => C::Success,
                Some(Refusal::BadCredentials) => C::BadUserNamePassword,
                Some(Refusal::NotAuthorized) => C::NotAuthorized,
                Some(Refusal::Busy) => C::ServerBusy,
                Some(Refusal::BadClientId) => C::ClientIdentifierNotValid,
            },
            properties: Some(v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: None,
                // No maximum QoS: subscriptions and publishes go up to QoS 2.
                max_qos: None,
                retain_available: None,
                max_packet_size: None,
                assigned_client_identifier: assigned_id.clone(),
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: None,
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }),
        Outbound::Publish(m) => v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: qos_v5(m.qos),
            retain: m.retain,
            topic: Bytes::copy_from_slice(m.topic.as_bytes()),
            pkid: m.pkid,
            payload: m.payload.clone(),
            properties: m.properties.as_ref().map(|p| v5::PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                topic_alias: None,
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
                subscription_identifiers: Vec::new(),
                content_type: p.content_type.clone(),
            }),
        }),
        Outbound::PubAck { pkid, refused } => v5::Packet::PubAck(v5::PubAck {
            pkid: *pkid,
            reason: if *refused {
                v5::PubAckReason::NotAuthorized
            } else {
                v5::PubAckReason::Success
            },
            properties: None,
        }),
        Outbound::PubRec { pkid, refused } => v5::Packet::PubRec(v5::PubRec {
            pkid: *pkid,
            reason: if *refused {
                v5::PubRecReason::NotAuthorized
            } else {
                v5::PubRecReason::Success
            },
            properties: None,
        }),
        Outbound::PubRel(pkid) => v5::Packet::PubRel(v5::PubRel {
            pkid: *pkid,
            reason: v5::PubRelReason::Success,
            properties: None,
        }),
        Outbound::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp {
            pkid: *pkid,
            reason: v5::PubCompReason::Success,
            properties: None,
        }),
        Outbound::SubAck { pkid, codes } => v5::Packet::SubAck(v5::SubAck {
            pkid: *pkid,
            return_codes: codes
                .iter()
                .map(|c| match c {
                    Granted::Qos(q) => v5::SubscribeReasonCode::Success(qos_v5(*q)),
                    Granted::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                    Granted::Invalid => v5::SubscribeReasonCode::TopicFilterInvalid,
                })
                .collect(),
            properties: None,
        }),
        Outbound::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: *pkid,
            reasons: vec![v5::UnsubAckReason::Success; *count],
            properties: None,
        }),
        Outbound::PingResp => v5::Packet::PingResp(v5::PingResp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_connect(version: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        match version {
            Version::V4 => {
                let mut c = v4::Connect::new("dev");
                c.set_login("alice", "pw");
                v4::Packet::Connect(c).write(&mut out, usize::MAX).unwrap();
            }
            Version::V5 => {
                let c = v5::Connect {
                    keep_alive: 0,
                    client_id: "dev".into(),
                    clean_start: true,
                    properties: None,
                };
                v5::Packet::Connect(c, None, None)
                    .write(&mut out, None)
                    .unwrap();
            }
        }
        out.to_vec()
    }

    #[test]
    fn connect_version_is_read_from_the_protocol_level() {
        for v in [Version::V4, Version::V5] {
            let bytes = roundtrip_connect(v);
            assert_eq!(sniff_version(&bytes).unwrap(), Some(v));
            for cut in 0..9 {
                assert_eq!(sniff_version(&bytes[..cut]).unwrap(), None, "cut {cut}");
            }
        }
    }

    #[test]
    fn an_mqtt5_disconnect_without_reason_code_is_a_normal_disconnect() {
        let mut buf = BytesMut::from(&[0xE0u8, 0x00, 0xC0, 0x00][..]);
        assert_eq!(
            decode(Version::V5, &mut buf, 1024).unwrap(),
            Some(Inbound::Disconnect { with_will: false })
        );
        assert_eq!(
            decode(Version::V5, &mut buf, 1024).unwrap(),
            Some(Inbound::PingReq)
        );
        // A reason code without properties: 0x00 normal, 0x04 publish the will.
        let mut buf = BytesMut::from(&[0xE0u8, 0x01][..]);
        assert_eq!(decode(Version::V5, &mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(&[0x00, 0xE0, 0x01, 0x04]);
        assert_eq!(
            decode(Version::V5, &mut buf, 1024).unwrap(),
            Some(Inbound::Disconnect { with_will: false })
        );
        assert_eq!(
            decode(Version::V5, &mut buf, 1024).unwrap(),
            Some(Inbound::Disconnect { with_will: true })
        );
        assert!(buf.is_empty());
        // With properties, rumqttc reads it.
        let mut buf = BytesMut::from(&[0xE0u8, 0x02, 0x04, 0x00][..]);
        assert_eq!(
            decode(Version::V5, &mut buf, 1024).unwrap(),
            Some(Inbound::Disconnect { with_will: true })
        );
    }

    #[test]
    fn mqtt_3_1_and_garbage_are_refused_by_name() {
        let mut v3 = roundtrip_connect(Version::V4);
        v3[8] = 3;
        assert!(matches!(sniff_version(&v3), Err(WireError::Level(3))));
        assert!(matches!(
            sniff_version(&[0x30, 0]),
            Err(WireError::NotConnect)
        ));
    }

    #[test]
    fn a_packet_over_the_limit_is_refused_from_its_header() {
        // PUBLISH with a remaining length of 1 MiB, body not sent.
        let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x40][..]);
        let err = decode(Version::V4, &mut buf, 64 * 1024).unwrap_err();
        assert!(
            matches!(err, WireError::TooLarge { size: 1048576, .. }),
            "{err}"
        );
    }

    #[test]
    fn v5_properties_are_dropped_for_a_v4_client() {
        let msg = Message {
            topic: "x/a".into(),
            payload: Bytes::from_static(b"hi"),
            qos: 0,
            retain: false,
            pkid: 0,
            properties: Some(PublishProperties {
                user_properties: vec![("a".into(), "b".into())],
                ..Default::default()
            }),
        };
        let mut out = BytesMut::new();
        encode(Version::V4, &Outbound::Publish(msg.clone()), &mut out).unwrap();
        let back = v4::Packet::read(&mut out, usize::MAX).unwrap();
        assert!(
            matches!(back, v4::Packet::Publish(p) if p.topic == "x/a" && &p.payload[..] == b"hi")
        );
        let mut out = BytesMut::new();
        encode(Version::V5, &Outbound::Publish(msg), &mut out).unwrap();
        match decode(Version::V5, &mut out, usize::MAX).unwrap() {
            Some(Inbound::Publish(m)) => {
                assert_eq!(
                    m.properties.unwrap().user_properties,
                    vec![("a".into(), "b".into())]
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
