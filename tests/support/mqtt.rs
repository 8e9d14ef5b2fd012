//! MQTT clients against an agent's broker: Debian's `mosquitto_pub` and `mosquitto_sub` with
//! the agent's credentials, a subscriber that is subscribed before it returns, and an MQTT 5
//! request with a response topic and correlation data.

use super::registry::creds;
use super::{free_port, text, DEADLINE};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `-u USER -P PASSWORD` for Debian's mosquitto clients against the agent on `port`.
pub fn mosquitto_auth(port: u16) -> Vec<String> {
    let (u, p) = creds(port);
    vec!["-u".into(), u, "-P".into(), p]
}

/// Runs `mosquitto_pub` against a port.
pub fn mosquitto_pub(port: u16, topic: &str, message: &str) {
    mosquitto_pub_as_client(port, None, topic, message)
}

/// Runs `mosquitto_pub` against a port with a given MQTT client id (a client that sends
/// again, as opposed to another client).
pub fn mosquitto_pub_as_client(port: u16, client: Option<&str>, topic: &str, message: &str) {
    let mut cmd = Command::new("mosquitto_pub");
    if let Some(client) = client {
        cmd.args(["-i", client]);
    }
    let st = cmd
        .args(mosquitto_auth(port))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            message,
        ])
        .status()
        .expect("mosquitto_pub (apt install mosquitto-clients) must be installed");
    assert!(st.success(), "mosquitto_pub failed");
}

/// Runs `mosquitto_sub` until it has `count` messages (or the deadline), returning
/// `topic payload` lines.
pub fn mosquitto_sub(port: u16, topic: &str, count: usize) -> Vec<String> {
    let out = Command::new("mosquitto_sub")
        .args(mosquitto_auth(port))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-v",
            "-C",
            &count.to_string(),
            "-W",
            &DEADLINE.as_secs().to_string(),
        ])
        .output()
        .expect("mosquitto_sub (apt install mosquitto-clients) must be installed");
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// An MQTT subscriber that is subscribed (SubAck received) when `new` returns, so nothing
/// published afterwards can be missed. Collects `topic payload` lines like `mosquitto_sub -v`.
pub struct Subscriber {
    /// Received lines.
    rx: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    /// Connects to the broker on `port` and subscribes to `topic`.
    pub fn new(port: u16, topic: &str) -> Subscriber {
        Subscriber::new_as(port, topic, creds(port))
    }

    /// [`Subscriber::new`] with the given user name and password.
    pub fn new_as(port: u16, topic: &str, login: (String, String)) -> Subscriber {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(format!("test-sub-{}", free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_credentials(login.0, login.1);
        let (client, mut connection) = Client::new(opts, 100);
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .expect("subscribe");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _client = client;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let text = String::from_utf8_lossy(&p.payload);
                        let line = format!("{} {}", p.topic, text.trim_end_matches('\n'));
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        ready_rx
            .recv_timeout(DEADLINE)
            .expect("no SubAck from the broker in time");
        Subscriber { rx }
    }

    /// Every line received so far and not yet taken, without waiting: for tests that
    /// gather messages inside [`wait_until`].
    pub fn drain(&self) -> Vec<String> {
        self.rx.try_iter().collect()
    }

    /// The first `count` lines received, waiting up to the deadline for them.
    pub fn take(&self, count: usize) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        let mut lines = Vec::new();
        while lines.len() < count {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }
}

/// What an MQTT 5 request got back on its response topic.
#[derive(Debug)]
pub struct V5Answer {
    /// The answer's payload, as JSON.
    pub json: serde_json::Value,
    /// The correlation data property the answer carried.
    pub correlation: Option<Vec<u8>>,
}

/// An MQTT 5 request as Home Assistant or any MQTT 5 client makes it: subscribe to
/// `response_topic` (SubAck awaited), publish `payload` on `topic` with the response topic
/// and `correlation` as properties, and return the first message on the response topic.
pub fn mqtt5_request(
    port: u16,
    topic: &str,
    payload: &str,
    response_topic: &str,
    correlation: &[u8],
) -> V5Answer {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Event, MqttOptions};
    let mut opts = MqttOptions::new(format!("test-v5-{}", free_port()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (u, p) = creds(port);
    opts.set_credentials(u, p);
    let (client, mut connection) = Client::new(opts, 100);
    client
        .subscribe(response_topic, QoS::AtLeastOnce)
        .expect("subscribe");
    let end = Instant::now() + DEADLINE;
    let mut published = false;
    for event in connection.iter() {
        assert!(Instant::now() < end, "no MQTT 5 answer on {response_topic}");
        match event.expect("MQTT 5 connection failed") {
            Event::Incoming(Packet::SubAck(_)) if !published => {
                let props = PublishProperties {
                    response_topic: Some(response_topic.to_string()),
                    correlation_data: Some(correlation.to_vec().into()),
                    ..Default::default()
                };
                client
                    .publish_with_properties(
                        topic,
                        QoS::AtLeastOnce,
                        false,
                        payload.to_string(),
                        props,
                    )
                    .expect("publish");
                published = true;
            }
            Event::Incoming(Packet::Publish(p)) => {
                let json = serde_json::from_slice(&p.payload).expect("the answer is JSON");
                let correlation = p
                    .properties
                    .and_then(|props| props.correlation_data)
                    .map(|d| d.to_vec());
                return V5Answer { json, correlation };
            }
            _ => {}
        }
    }
    panic!("the MQTT 5 connection ended before an answer on {response_topic}");
}

/// Publishes `payload` (any size: it goes through stdin) on `topic` at QoS 1, retained if
/// asked, with `mosquitto_pub`: how an outsider on the broker's port would.
pub fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    publish_as(port, creds(port), topic, payload, retain)
}

/// [`publish`] with the given user name and password.
pub fn publish_as(port: u16, login: (String, String), topic: &str, payload: &[u8], retain: bool) {
    use std::io::Write;
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", &login.0, "-P", &login.1])
        .args(["-t", topic, "-s"]);
    if retain {
        cmd.arg("-r");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients) must be installed");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(payload).expect("write payload");
    drop(stdin);
    assert!(child.wait().expect("mosquitto_pub").success());
}

/// Publishes every line of `lines` as one message on `topic` (QoS 1), over one connection.
pub fn publish_lines(port: u16, topic: &str, lines: &[String]) {
    publish_lines_as(port, creds(port), topic, lines)
}

/// [`publish_lines`] with the given user name and password.
pub fn publish_lines_as(port: u16, login: (String, String), topic: &str, lines: &[String]) {
    use std::io::Write;
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-u", &login.0, "-P", &login.1])
        .args(["-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients) must be installed");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write line");
    }
    drop(stdin);
    assert!(child.wait().expect("mosquitto_pub").success());
}
