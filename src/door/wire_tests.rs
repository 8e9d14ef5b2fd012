//! The codec against hand-made packets of both versions.

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
    assert!(matches!(back, v4::Packet::Publish(p) if p.topic == "x/a" && &p.payload[..] == b"hi"));
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
