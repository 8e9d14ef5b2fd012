//! Outbound packets in the client's version.

use super::{qos_v4, qos_v5, Granted, Outbound, Refusal, Version, WireError};
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

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
