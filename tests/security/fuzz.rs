//! Random and mutated packets of both MQTT versions, from a printed seed, against a running
//! agent: the front door never dies and its subscribers stay connected.

use super::{connect_packet, raw_connect};
use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A small deterministic generator, so a failing run can be repeated from its seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid packets of both versions to mutate: SUBSCRIBE, PUBLISH with and without MQTT 5
/// properties, PINGREQ, UNSUBSCRIBE, PUBREL.
fn seed_packets(v5: bool) -> Vec<Vec<u8>> {
    use bytes::BytesMut;
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    if v5 {
        use rumqttc::v5::mqttbytes::v5::*;
        use rumqttc::v5::mqttbytes::QoS;
        let props = PublishProperties {
            user_properties: vec![("a".into(), "b".into())],
            response_topic: Some("x/r".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"c")),
            ..Default::default()
        };
        let mut p = Publish::new("x/a", QoS::AtLeastOnce, "hi", Some(props));
        p.pkid = 1;
        let packets = [
            Packet::Publish(p),
            Packet::Subscribe(Subscribe::new(Filter::new("x/#", QoS::AtLeastOnce), None)),
            Packet::PingReq(PingReq),
            Packet::Unsubscribe(Unsubscribe::new("x/#", None)),
        ];
        for p in packets {
            buf.clear();
            p.write(&mut buf, None).unwrap();
            out.push(buf.to_vec());
        }
    } else {
        use rumqttc::mqttbytes::v4::*;
        use rumqttc::mqttbytes::QoS;
        let mut p = Publish::new("x/b", QoS::ExactlyOnce, "hey");
        p.pkid = 2;
        let packets = [
            Packet::Publish(p),
            Packet::Subscribe(Subscribe::new("x/+", QoS::AtLeastOnce)),
            Packet::PubRel(PubRel::new(2)),
            Packet::PingReq,
        ];
        for p in packets {
            buf.clear();
            p.write(&mut buf, usize::MAX).unwrap();
            out.push(buf.to_vec());
        }
    }
    out
}

/// An MQTT 5 CONNECT with a login.
fn connect_v5(client_id: &str, user: &str, password: &str) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5::*;
    let mut buf = bytes::BytesMut::new();
    let c = Connect {
        keep_alive: 60,
        client_id: client_id.into(),
        clean_start: true,
        properties: None,
    };
    let login = Login::new(user, password);
    Packet::Connect(c, None, Some(login))
        .write(&mut buf, None)
        .unwrap();
    buf.to_vec()
}

#[test]
fn random_and_mutated_packets_of_both_versions_never_kill_the_front_door() {
    let a = Agent::start(&[]);
    let (u, p) = a.credentials();
    // Two subscribers that must stay connected through all of it: 3.1.1 and 5.
    let v4_sub = Subscriber::new(a.port, "fuzz/#");
    let (v5_tx, v5_rx) = std::sync::mpsc::channel();
    {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{Client, Event, MqttOptions};
        let mut opts = MqttOptions::new("fuzz-v5-sub", "127.0.0.1", a.mqtt5_port());
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_credentials(u.clone(), p.clone());
        let (client, mut connection) = Client::new(opts, 100);
        client.subscribe("fuzz/#", QoS::AtLeastOnce).unwrap();
        std::thread::spawn(move || {
            let _client = client;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = v5_tx.send("subscribed".to_string());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = v5_tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
    assert_eq!(v5_rx.recv_timeout(DEADLINE).unwrap(), "subscribed");

    let seed = 0x5eed_1234_u64;
    let mut rng = XorShift(seed);
    let ports = [a.port, a.mqtt5_port()];
    for round in 0..300 {
        let v5 = rng.below(2) == 1;
        let mut bytes = if rng.below(8) == 0 {
            Vec::new() // no CONNECT at all: garbage from the first byte
        } else if v5 {
            connect_v5(&format!("fz-{round}"), &u, &p)
        } else {
            connect_packet(&format!("fz-{round}"), Some((&u, &p)))
        };
        let seeds = seed_packets(v5);
        for _ in 0..1 + rng.below(4) {
            let mut packet = seeds[rng.below(seeds.len())].clone();
            for _ in 0..rng.below(6) {
                let i = rng.below(packet.len());
                match rng.below(3) {
                    0 => packet[i] = rng.next() as u8,
                    1 => packet.truncate(i.max(1)),
                    _ => packet.insert(i, rng.next() as u8),
                }
            }
            bytes.extend(packet);
        }
        if rng.below(10) == 0 {
            bytes.extend((0..rng.below(300)).map(|_| rng.next() as u8));
        }
        let port = ports[rng.below(2)];
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            panic!("round {round} (seed {seed:#x}): the listener on {port} is gone");
        };
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Both listeners answer, both subscribers are still there, the agent still works.
    mosquitto_pub(a.port, "fuzz/end", "still-here");
    let end = Instant::now() + DEADLINE;
    let got_v5 = loop {
        match v5_rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(m) if m == "still-here" => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(
        got_v5,
        "the MQTT 5 subscriber lost its connection (seed {seed:#x})"
    );
    assert!(
        v4_sub.take(1) == ["fuzz/end still-here"],
        "the MQTT 3.1.1 subscriber lost its connection (seed {seed:#x})"
    );
    assert_eq!(a.state("relay-1"), "OFF");
    for port in ports {
        assert_eq!(
            raw_connect("127.0.0.1", port, "after", Some((&u, &p))).1,
            Some(0)
        );
    }
}
