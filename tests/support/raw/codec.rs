//! The raw client's packets to and from rumqttc's v4 and v5 types, one field at a time, so
//! what the client sends and reads is exactly what the test said.

use super::{In, Msg, Out, R};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

pub fn qos4(q: u8) -> rumqttc::mqttbytes::QoS {
    match q {
        0 => rumqttc::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

pub fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

pub fn to_v4(p: Out) -> v4::Packet {
    match p {
        Out::Publish {
            topic,
            payload,
            qos,
            retain,
            pkid,
        } => {
            let mut publish = v4::Publish::new(topic, qos4(qos), payload.to_vec());
            publish.retain = retain;
            publish.pkid = pkid;
            v4::Packet::Publish(publish)
        }
        Out::PubAck(id) => v4::Packet::PubAck(v4::PubAck::new(id)),
        Out::PubRec(id) => v4::Packet::PubRec(v4::PubRec::new(id)),
        Out::PubRel(id) => v4::Packet::PubRel(v4::PubRel::new(id)),
        Out::PubComp(id) => v4::Packet::PubComp(v4::PubComp::new(id)),
        Out::Subscribe(pkid, filters) => v4::Packet::Subscribe(v4::Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|(f, q)| v4::SubscribeFilter::new(f.to_string(), qos4(*q)))
                .collect(),
        }),
        Out::Unsubscribe(pkid, f) => v4::Packet::Unsubscribe(v4::Unsubscribe {
            pkid,
            topics: vec![f.to_string()],
        }),
        Out::PingReq => v4::Packet::PingReq,
        Out::Disconnect | Out::DisconnectWithWill => v4::Packet::Disconnect,
    }
}

pub fn to_v5(p: Out) -> v5::Packet {
    match p {
        Out::Publish {
            topic,
            payload,
            qos,
            retain,
            pkid,
        } => {
            let mut publish = v5::Publish::new(topic, qos5(qos), payload.to_vec(), None);
            publish.retain = retain;
            publish.pkid = pkid;
            v5::Packet::Publish(publish)
        }
        Out::PubAck(id) => v5::Packet::PubAck(v5::PubAck::new(id, None)),
        Out::PubRec(id) => v5::Packet::PubRec(v5::PubRec::new(id, None)),
        Out::PubRel(id) => v5::Packet::PubRel(v5::PubRel::new(id, None)),
        Out::PubComp(id) => v5::Packet::PubComp(v5::PubComp::new(id, None)),
        Out::Subscribe(pkid, filters) => v5::Packet::Subscribe(v5::Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|(f, q)| v5::Filter::new(f.to_string(), qos5(*q)))
                .collect(),
            properties: None,
        }),
        Out::Unsubscribe(pkid, f) => v5::Packet::Unsubscribe(v5::Unsubscribe {
            pkid,
            filters: vec![f.to_string()],
            properties: None,
        }),
        Out::PingReq => v5::Packet::PingReq(v5::PingReq),
        Out::Disconnect => v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )),
        Out::DisconnectWithWill => v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::DisconnectWithWillMessage,
        )),
    }
}

pub fn from_v4(p: v4::Packet) -> R<In> {
    Ok(match p {
        v4::Packet::ConnAck(a) => In::ConnAck {
            ok: a.code == v4::ConnectReturnCode::Success,
            assigned: None,
        },
        v4::Packet::Publish(p) => In::Publish(
            Msg {
                topic: p.topic,
                payload: p.payload.to_vec(),
                qos: p.qos as u8,
                retain: p.retain,
            },
            p.pkid,
        ),
        v4::Packet::PubAck(a) => In::PubAck(a.pkid),
        v4::Packet::PubRec(a) => In::PubRec(a.pkid),
        v4::Packet::PubRel(a) => In::PubRel(a.pkid),
        v4::Packet::PubComp(a) => In::PubComp(a.pkid),
        v4::Packet::SubAck(s) => In::SubAck(
            s.pkid,
            s.return_codes
                .iter()
                .map(|c| match c {
                    v4::SubscribeReasonCode::Success(q) => Some(*q as u8),
                    v4::SubscribeReasonCode::Failure => None,
                })
                .collect(),
        ),
        v4::Packet::UnsubAck(u) => In::UnsubAck(u.pkid),
        v4::Packet::PingResp => In::PingResp,
        v4::Packet::Disconnect => In::Disconnect,
        other => return Err(format!("a broker sent {other:?}")),
    })
}

pub fn from_v5(p: v5::Packet) -> R<In> {
    Ok(match p {
        v5::Packet::ConnAck(a) => In::ConnAck {
            ok: a.code == v5::ConnectReturnCode::Success,
            assigned: a.properties.and_then(|p| p.assigned_client_identifier),
        },
        v5::Packet::Publish(p) => In::Publish(
            Msg {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.to_vec(),
                qos: p.qos as u8,
                retain: p.retain,
            },
            p.pkid,
        ),
        v5::Packet::PubAck(a) => In::PubAck(a.pkid),
        v5::Packet::PubRec(a) => In::PubRec(a.pkid),
        v5::Packet::PubRel(a) => In::PubRel(a.pkid),
        v5::Packet::PubComp(a) => In::PubComp(a.pkid),
        v5::Packet::SubAck(s) => In::SubAck(
            s.pkid,
            s.return_codes
                .iter()
                .map(|c| match c {
                    v5::SubscribeReasonCode::Success(q) => Some(*q as u8),
                    _ => None,
                })
                .collect(),
        ),
        v5::Packet::UnsubAck(u) => In::UnsubAck(u.pkid),
        v5::Packet::PingResp(_) => In::PingResp,
        v5::Packet::Disconnect(_) => In::Disconnect,
        other => return Err(format!("a broker sent {other:?}")),
    })
}
