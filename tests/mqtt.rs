//! The public MQTT interface of one agent, driven by Debian's mosquitto clients, by an MQTT 5
//! client using response topics, and by a request/reply client measuring the round trip
//! through the embedded broker.

mod support;

use std::time::{Duration, Instant};
use support::*;

#[test]
fn mosquitto_pub_switches_and_mosquitto_sub_sees_state() {
    let a = Agent::start(&[]);
    mosquitto_pub(a.port, "pimesh/relay-1/set", "ON");
    wait_until("relay-1 pin high", || a.pin(17).as_deref() == Some("1"));
    let lines = mosquitto_sub(a.port, "pimesh/relay-1", 1);
    assert_eq!(lines.len(), 1, "retained state expected");
    let (topic, json) = lines[0].split_once(' ').unwrap();
    assert_eq!(topic, "pimesh/relay-1");
    let state: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(state["state"], "ON");
    assert_eq!(state["room"], "kitchen");
    assert_eq!(state["x"], 2.0);

    mosquitto_pub(a.port, "pimesh/relay-2/set", r#"{"state":"ON"}"#);
    wait_until("relay-2 pin high", || a.pin(27).as_deref() == Some("1"));
    mosquitto_pub(
        a.port,
        "pimesh/relay-2/set",
        r#"{"room":"hall","x":3,"y":1}"#,
    );
    wait_until("relay-2 moved", || a.get("relay-2")["room"] == "hall");
    let lines = mosquitto_sub(a.port, "pimesh/relay-2", 1);
    assert!(
        lines[0].contains("\"room\":\"hall\"") && lines[0].contains("\"x\":3.0"),
        "{lines:?}"
    );
}

#[test]
fn an_mqtt5_client_gets_its_answer_on_its_response_topic_with_its_correlation_data() {
    let a = Agent::start(&[]);
    let port5 = a.mqtt5_port();
    assert!(
        (a.port + 1000..a.port + 1100).contains(&port5),
        "MQTT 5 port {port5} should be the first free one from {}",
        a.port + 1000
    );
    let answer = mqtt5_request(port5, "pimesh/relay-1/set", "ON", "ha/answers/1", b"req-1");
    assert_eq!(answer.json["result"], "ok", "{:?}", answer.json);
    assert_eq!(answer.json["state"]["state"], "ON");
    assert_eq!(answer.correlation.as_deref(), Some(&b"req-1"[..]));
    assert_eq!(a.pin(17).as_deref(), Some("1"));

    // Bad input is answered there too, with the same correlation, and changes nothing.
    let answer = mqtt5_request(
        port5,
        "pimesh/relay-1/set",
        "BRIGHT",
        "ha/answers/2",
        b"req-2",
    );
    assert_eq!(answer.json["result"], "rejected", "{:?}", answer.json);
    assert!(
        answer.json["error"].as_str().unwrap().contains("BRIGHT"),
        "{:?}",
        answer.json
    );
    assert_eq!(answer.correlation.as_deref(), Some(&b"req-2"[..]));
    let answer = mqtt5_request(port5, "pimesh/no-such/set", "ON", "ha/answers/3", b"req-3");
    assert_eq!(answer.json["result"], "rejected");
    assert_eq!(a.pin(17).as_deref(), Some("1"));

    // A request on the agent's own topics too: `get` answers on the response topic.
    let answer = mqtt5_request(
        port5,
        "$pimesh/pimesh/agent/get",
        "{}",
        "ha/answers/4",
        b"req-4",
    );
    assert!(answer.json["objects"].as_array().unwrap().len() >= 6);
    assert_eq!(answer.correlation.as_deref(), Some(&b"req-4"[..]));

    // MQTT 3.1.1 clients on the other port see the result in the state topic.
    let lines = mosquitto_sub(a.port, "pimesh/relay-1", 1);
    assert!(lines[0].contains("\"state\":\"ON\""), "{lines:?}");
}

#[test]
fn mosquitto_rr_gets_the_answer_to_a_command() {
    let a = Agent::start(&[]);
    let out = std::process::Command::new("mosquitto_rr")
        .args(mosquitto_auth(a.port))
        .args(["-V", "5", "-h", "127.0.0.1", "-p"])
        .arg(a.mqtt5_port().to_string())
        .args([
            "-t",
            "pimesh/relay-2/set",
            "-e",
            "rr/answer",
            "-m",
            "ON",
            "-W",
            "10",
        ])
        .output()
        .expect("mosquitto_rr (Debian package mosquitto-clients)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["result"], "ok", "{answer}");
    assert_eq!(answer["object"], "relay-2");
    assert_eq!(a.pin(27).as_deref(), Some("1"));
}

#[test]
fn instance_status_is_retained_online() {
    let a = Agent::start(&[]);
    let lines = mosquitto_sub(a.port, "pimesh/instance/+/status", 1);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with(" online"), "{lines:?}");
}

#[test]
fn malformed_payloads_change_nothing_and_are_answered() {
    let a = Agent::start(&[]);
    for bad in [
        "",
        "maybe",
        "{",
        r#"{"colour":"red"}"#,
        r#"{"state":"DIM"}"#,
        r#"{"x":"far"}"#,
        r#"{"room":""}"#,
        "\u{1F4A1}",
    ] {
        mosquitto_pub(a.port, "pimesh/relay-1/set", bad);
    }
    mosquitto_pub(a.port, "pimesh/Not_An_Id/set", "ON");
    mosquitto_pub(a.port, "pimesh/ghost/set", "ON");
    mosquitto_pub(a.port, "$pimesh/pimesh/agent/get", "not json");
    // A JSON client with a mistake and a reply-to gets a `rejected` answer naming the mistake.
    let mut sub = std::process::Command::new("mosquitto_sub")
        .args(mosquitto_auth(a.port))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &a.port.to_string(),
            "-t",
            "test/answer",
            "-C",
            "1",
            "-W",
            "15",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The subscriber may not be connected yet: repeat the (harmless) bad command until it
    // has its one answer.
    wait_until("a rejected answer", || {
        mosquitto_pub(
            a.port,
            "pimesh/relay-1/set",
            r#"{"state":"DIM","id":"c1","reply-to":"test/answer"}"#,
        );
        matches!(sub.try_wait(), Ok(Some(_)))
    });
    let out = sub.wait_with_output().unwrap();
    let reply: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(reply["result"], "rejected");
    assert_eq!(reply["id"], "c1");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("unknown variant `DIM`"),
        "{reply}"
    );
    assert!(
        a.cli(&["get", "relay-1"]).status.success(),
        "agent still answers"
    );
    assert_eq!(a.state("relay-1"), "OFF");
    assert_eq!(a.pin(17).as_deref(), Some("0"));
    let log = std::fs::read_to_string(a.dir.join("test-agent.log")).unwrap();
    assert!(
        log.contains("payload \"maybe\" is not ON, OFF, TOGGLE or a JSON object"),
        "{log}"
    );
}

/// rumqttd leaves TCP_NODELAY off on accepted sockets; without our fix every QoS1 hop waits
/// ~40 ms for Nagle + delayed ACK. A request/reply through the embedded broker must be far
/// below that. Median of many round trips, so one slow scheduling blip cannot fail it.
#[test]
fn qos1_request_reply_through_the_embedded_broker_has_no_nagle_stall() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let a = Agent::start(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let median = rt.block_on(async {
        let connect = |id: &str| {
            let mut o = MqttOptions::new(id, "127.0.0.1", a.port);
            o.set_keep_alive(Duration::from_secs(30));
            let (u, p) = a.credentials();
            o.set_credentials(u, p);
            let (c, mut el) = AsyncClient::new(o, 100);
            let mut net = rumqttc::NetworkOptions::new();
            net.set_tcp_nodelay(true);
            el.set_network_options(net);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok(ev) = el.poll().await {
                    let _ = tx.send(ev);
                }
            });
            (c, rx)
        };
        async fn until(
            rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
            want: fn(&Packet) -> bool,
        ) {
            loop {
                match tokio::time::timeout(DEADLINE, rx.recv()).await {
                    Ok(Some(Event::Incoming(p))) if want(&p) => return,
                    Ok(Some(_)) => {}
                    _ => panic!("no expected packet in time"),
                }
            }
        }
        let (req, mut req_rx) = connect("nagle-requester");
        let (rsp, mut rsp_rx) = connect("nagle-responder");
        req.subscribe("nagle/reply", QoS::AtLeastOnce)
            .await
            .unwrap();
        until(&mut req_rx, |p| matches!(p, Packet::SubAck(_))).await;
        rsp.subscribe("nagle/request", QoS::AtLeastOnce)
            .await
            .unwrap();
        until(&mut rsp_rx, |p| matches!(p, Packet::SubAck(_))).await;
        let responder = tokio::spawn(async move {
            loop {
                match rsp_rx.recv().await {
                    Some(Event::Incoming(Packet::Publish(p))) => {
                        rsp.publish("nagle/reply", QoS::AtLeastOnce, false, p.payload.to_vec())
                            .await
                            .unwrap();
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
        let mut times = Vec::new();
        for i in 0..60u32 {
            let t = Instant::now();
            req.publish(
                "nagle/request",
                QoS::AtLeastOnce,
                false,
                i.to_be_bytes().to_vec(),
            )
            .await
            .unwrap();
            until(&mut req_rx, |p| matches!(p, Packet::Publish(_))).await;
            times.push(t.elapsed());
        }
        responder.abort();
        times.sort();
        times[times.len() / 2]
    });
    assert!(
        median < Duration::from_millis(15),
        "median QoS1 round trip {median:?}: Nagle stall is back"
    );
}

/// A default paho-mqtt client, as Home Assistant runs it: no TCP_NODELAY. It may send a
/// packet in two writes, holding the second until the first is acknowledged, and Linux
/// delays that acknowledgement by up to 40 ms unless the broker asks for quick ACKs after
/// each read. Median of many round trips: ~44 ms without quick ACKs, well under 1 ms with.
#[test]
fn a_default_paho_client_gets_its_round_trip_without_a_delayed_ack_stall() {
    let a = Agent::start(&[]);
    let (u, p) = a.credentials();
    let script = r#"
import sys, time, threading
import paho.mqtt.client as mqtt
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
got = threading.Event()
c = mqtt.Client("paho-default")
c.username_pw_set(user, pw)
c.on_message = lambda c, u, m: got.set()
subscribed = threading.Event()
c.on_subscribe = lambda *args: subscribed.set()
c.connect("127.0.0.1", port)
c.loop_start()
c.subscribe("paho/rt", 1)
assert subscribed.wait(10), "no SUBACK"
times = []
for i in range(60):
    got.clear()
    t = time.perf_counter()
    c.publish("paho/rt", "x" * 20, qos=1)
    assert got.wait(5), "no message back"
    times.append(time.perf_counter() - t)
times.sort()
print(int(times[len(times) // 2] * 1e6))
"#;
    // Debian's python3-paho-mqtt (make test installs it), not whatever python is first on PATH.
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, &a.port.to_string(), &u, &p])
        .output()
        .expect("/usr/bin/python3 with python3-paho-mqtt (apt) must be installed");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let median_us: u64 = text(&out.stdout).trim().parse().expect("a number");
    assert!(
        median_us < 15_000,
        "median QoS1 round trip of a default paho client {median_us} µs: delayed-ACK stall"
    );
}

/// A subscriber to a big house gets every retained message, however many arrive before its
/// first acknowledgement (a 10,000-object house sends that many at once to Home Assistant).
#[test]
fn a_subscriber_gets_thousands_of_retained_messages_at_once() {
    use rumqttc::{Client, Event, MqttOptions, Outgoing, QoS};
    let a = Agent::start(&[]);
    let (u, p) = a.credentials();
    let mut opts = MqttOptions::new("retainer", "127.0.0.1", a.port);
    opts.set_credentials(u, p);
    let (client, mut connection) = Client::new(opts, 4000);
    const N: usize = 3000;
    for i in 0..N {
        client
            .publish(format!("home/device-{i}"), QoS::AtMostOnce, true, "x")
            .unwrap();
    }
    client.disconnect().unwrap();
    for event in connection.iter() {
        match event {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let sub = Subscriber::new(a.port, "home/#");
    let got = sub.take(N);
    assert_eq!(
        got.len(),
        N,
        "a subscriber got {} of {N} retained messages",
        got.len()
    );
}

/// A retained command is not a command: the broker would keep it and hand it to every new
/// subscriber of the command topics, so the front door ignores it (logged) and keeps nothing.
/// Only live commands switch.
#[test]
fn a_retained_command_is_ignored_and_not_kept() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let a = Agent::start(&[]);
    let mut opts = MqttOptions::new("retainer", "127.0.0.1", a.port);
    let (u, p) = a.credentials();
    opts.set_credentials(u, p);
    let (client, mut connection) = Client::new(opts, 10);
    // One connection, one topic filter at the agent: the live command arrives after the
    // retained one, so once relay-2 is on, relay-1's command has been dealt with.
    client
        .publish("pimesh/relay-1/set", QoS::AtLeastOnce, true, "ON")
        .unwrap();
    client
        .publish("pimesh/relay-2/set", QoS::AtLeastOnce, false, "ON")
        .unwrap();
    let mut acks = 0;
    for event in connection.iter() {
        if let Event::Incoming(Packet::PubAck(_)) = event.expect("connection") {
            acks += 1;
            if acks == 2 {
                break;
            }
        }
    }
    wait_until("relay-2 switched by the live command", || {
        a.pin(27).as_deref() == Some("1")
    });
    assert_eq!(a.state("relay-1"), "OFF", "a retained command switched");
    assert_ne!(a.pin(17).as_deref(), Some("1"));
    // Nothing is left on the broker for the next subscriber.
    let out = std::process::Command::new("mosquitto_sub")
        .args(mosquitto_auth(a.port))
        .args(["-h", "127.0.0.1", "-p", &a.port.to_string()])
        .args(["-t", "pimesh/relay-1/set", "-C", "1", "-W", "1", "-v"])
        .output()
        .expect("mosquitto_sub");
    assert_eq!(text(&out.stdout), "", "a retained command was kept");
    assert!(
        a.log()
            .contains("a retained command on \"pimesh/relay-1/set\" is ignored"),
        "{}",
        a.log()
    );
}

/// Commands a client sends back to back reach the agent together, and it runs them in
/// bursts (one write and one round of answers for many): each answer must still come in the
/// order its command was sent, and carry the state right after that command, not after the
/// burst.
#[test]
fn toggles_sent_back_to_back_are_answered_in_order_each_with_its_own_state() {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let a = start_node(
        "burst",
        &format!("{}[[virtual]]\nid = \"scene\"\n", node_config("b")),
        &[],
    );
    wait_until("scene known", || a.all().contains_key("scene"));
    let mut opts = MqttOptions::new("test-burst", "127.0.0.1", a.port);
    let (user, password) = maybe_creds(a.port).expect("the agent's login");
    opts.set_credentials(user, password);
    opts.set_inflight(200);
    let (client, mut connection) = Client::new(opts, 500);
    client
        .subscribe("test/answers", QoS::AtLeastOnce)
        .expect("subscribe");
    let mut events = connection.iter();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(events.next(), Some(Ok(Event::Incoming(Packet::SubAck(_))))) {
        assert!(Instant::now() < deadline, "no SubAck");
    }
    const TOGGLES: usize = 101;
    for i in 0..TOGGLES {
        let set = format!(r#"{{"state":"TOGGLE","id":"s{i}","reply-to":"test/answers"}}"#);
        client
            .publish("pimesh/scene/set", QoS::AtLeastOnce, false, set)
            .expect("publish");
    }
    let mut answers = Vec::new();
    for event in events {
        assert!(Instant::now() < deadline, "only {} answers", answers.len());
        let Ok(Event::Incoming(Packet::Publish(p))) = event else {
            continue;
        };
        answers.push(serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap());
        if answers.len() == TOGGLES {
            break;
        }
    }
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer["id"],
            format!("s{i}"),
            "answer {i} out of order: {answer}"
        );
        assert_eq!(answer["result"], "ok", "{answer}");
        let after = if i % 2 == 0 { "ON" } else { "OFF" };
        assert_eq!(
            answer["state"]["state"], after,
            "answer {i} does not carry the state its own toggle left: {answer}"
        );
    }
    wait_until("the last toggle's state retained", || {
        a.get("scene")["state"] == "ON"
    });
}
